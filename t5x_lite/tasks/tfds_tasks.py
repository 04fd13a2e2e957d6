"""TFDS tasks: C4 span corruption, GLUE, SuperGLUE and WMT translation in T5's text-to-text format.

TensorFlow is imported only when one of these tasks is read (``TfdsSource`` is
lazy). The datasets must already be prepared in ``data_dir`` (``tfds build``);
nothing is downloaded here. The inputs follow T5's ``glue`` / ``super_glue``
preprocessors: ``"<task> <field>: <value> ..."`` -> the label's name; SuperGLUE's
MultiRC, ReCoRD and WSC follow T5's ``multirc``, ``record`` and ``wsc_simple``
(see below), and ``glue_wnli_simple`` reads WNLI as WSC, as T5 evaluated it. The
diagnostic sets are cast as T5 casts them (``DIAGNOSTICS``).
A test split's hidden labels give T5's ``"<unk>"`` target: the rows are predicted,
and evaluation leaves them out.

Each GLUE and SuperGLUE task also comes as ``<task>_classification`` for a BERT
classifier: the same input text, the label as a class id (STS-B: its 0-5 score as a
float, for a regression head; MultiRC: is this answer option right; ReCoRD: is this
candidate entity the answer, the likeliest candidate then predicted per query; WSC: is
this candidate the pronoun's referent), scored by the same metrics, a test split's rows
predicted with their ``idx``; so do the diagnostic sets.

These tasks use the bundled vocabulary by default. To use your own (T5's
``spiece.model``), call :func:`register` with it before the first lookup.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import string
from typing import Callable, Optional, Sequence

import numpy as np

from t5x_lite.data.features import Feature
from t5x_lite.data.objectives import make_objective
from t5x_lite.data.tasks import UNLABELLED_TARGET, Mixture, MixtureRegistry, Task, TaskRegistry, split_names

log = logging.getLogger(__name__)

# name -> (TFDS features, written sorted by name as T5's glue() does; label names, None for regression)
GLUE = {
    "cola": (("sentence",), ("unacceptable", "acceptable")),
    "sst2": (("sentence",), ("negative", "positive")),
    "mrpc": (("sentence1", "sentence2"), ("not_equivalent", "equivalent")),
    "qqp": (("question1", "question2"), ("not_duplicate", "duplicate")),
    "stsb": (("sentence1", "sentence2"), None),
    "mnli": (("premise", "hypothesis"), ("entailment", "neutral", "contradiction")),
    "qnli": (("question", "sentence"), ("entailment", "not_entailment")),
    "rte": (("sentence1", "sentence2"), ("entailment", "not_entailment")),
    "wnli": (("sentence1", "sentence2"), ("not_entailment", "entailment")),
}
SUPER_GLUE = {
    "boolq": (("question", "passage"), ("False", "True")),
    "cb": (("premise", "hypothesis"), ("entailment", "contradiction", "neutral")),
    "copa": (("choice1", "choice2", "premise", "question"), ("choice1", "choice2")),
    "rte": (("premise", "hypothesis"), ("entailment", "not_entailment")),
    "wic": (("sentence1", "sentence2", "word"), ("False", "True")),
}
GLUE_VALIDATION = {"mnli": "validation_matched"}
# T5's translation tasks: (TFDS name, source language, target language).
TRANSLATION = {
    "wmt14_ende": ("wmt14_translate/de-en", "en", "de"),
    "wmt14_enfr": ("wmt14_translate/fr-en", "en", "fr"),
    "wmt16_enro": ("wmt16_translate/ro-en", "en", "ro"),
}
LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "ro": "Romanian"}


def text_to_text(benchmark: str, fields: Sequence[str], labels: Optional[Sequence[str]], sort: bool = True
                 ) -> Callable:
    """T5's format: ``"mnli hypothesis: ... premise: ..."`` -> ``"entailment"``, the fields sorted by name
    (T5's ``glue`` preprocessor; the checkpoints it trained read them so) unless ``sort`` is off (MultiRC's
    are in T5's own order). STS-B scores round to 0.2 as T5's ``stsb`` does: ``round(label * 5) / 5`` in
    float32, halves to even. A hidden test label (-1) becomes T5's ``"<unk>"`` (``UNLABELLED_TARGET``; T5
    writes STS-B's as ``"-1.0"``): the example stays, for predictions, and evaluation leaves it out. The
    record's ``idx`` is kept: the leaderboards' submission files are keyed by it."""
    ordered = sorted(fields) if sort else list(fields)

    def preprocess(ex: dict) -> Optional[dict]:
        label = ex["label"]
        if float(label) < 0:  # a test split's hidden label (STS-B's is -1 too)
            target = UNLABELLED_TARGET
        elif labels is None:
            target = f"{np.round(np.float32(label) * np.float32(5)) / np.float32(5):.1f}"
        else:
            target = labels[int(label)]
        inputs = " ".join([benchmark] + [f"{f}: {ex[f]}" for f in ordered])
        out = {"inputs": inputs, "targets": target, "label": label}
        if "idx" in ex:
            out["idx"] = ex["idx"]
        return out

    return preprocess


def to_class(benchmark: str, fields: Sequence[str], labels: Optional[Sequence[str]], pairs: bool = False
             ) -> Callable:
    """For a BERT classifier: T5's input text and the label as a class id, or STS-B's score as a float,
    unrounded, for a regression head (num_labels = 1). A test split's hidden label gives ``label_weight`` 0 (and
    a stand-in label 0): the row is predicted, keyed by its ``idx``, and left out of metrics and loss. With
    ``pairs`` (a vocabulary that joins two texts, as BERT reads them), the inputs are what Hugging Face's
    ``run_glue`` gives: a one-field task's bare text, a two-field task's two texts in GLUE's order (premise
    before hypothesis); tasks with more fields (WiC, COPA) keep T5's text."""
    text = text_to_text(benchmark, fields, labels)

    def preprocess(ex: dict) -> Optional[dict]:
        if pairs and len(fields) <= 2:  # as run_glue: the bare sentence, or the two texts
            inputs = ex[fields[0]] if len(fields) == 1 else (ex[fields[0]], ex[fields[1]])
        else:
            inputs = text(ex)["inputs"]
        out = {"inputs": inputs, **_class_label(ex["label"], regression=labels is None)}
        if "idx" in ex:
            out["idx"] = ex["idx"]
        return out

    return preprocess


def _class_label(label, regression: bool = False) -> dict:
    """A classifier's ``label`` (a class id; a regression head's float) and ``label_weight``: a test split's hidden
    label (-1, STS-B's too) gives weight 0 and a stand-in label 0."""
    labelled = float(label) >= 0
    value = label if labelled else 0
    return {"label": np.float32(value) if regression else int(value), "label_weight": np.float32(labelled)}


def translate(source: str, target: str) -> Callable:
    """T5's format: ``"translate English to German: <en>"`` -> ``<de>``."""
    prefix = f"translate {LANGUAGE_NAMES[source]} to {LANGUAGE_NAMES[target]}: "

    def preprocess(ex: dict) -> dict:
        return {"inputs": prefix + ex[source], "targets": ex[target]}

    return preprocess


def label_postprocessor(labels: Optional[Sequence[str]]) -> Callable[..., object]:
    """Predicted text -> label index (unknown text -> -1, scored wrong) or a float for regression; an unlabelled
    target -> None (left out of evaluation)."""

    def postprocess(text: str, example: Optional[dict] = None, is_target: bool = False):
        text = text.strip()
        if is_target and text == UNLABELLED_TARGET:
            return None
        if labels is None:
            try:
                return float(text)
            except ValueError:
                return float("nan")
        return labels.index(text) if text in labels else -1

    return postprocess


# ----------------------------------------------------------------------------- MultiRC, ReCoRD and WSC
# SuperGLUE's other three tasks, as the T5 paper casts them. Each needs more of its example than the text
# at evaluation (``Task.eval_fields``, read by a postprocessor with seqio's ``example`` argument), and
# ReCoRD and WSC train on other examples than they evaluate (a split-dependent source).

MULTIRC_FIELDS = ("question", "answer", "paragraph")  # T5's order for MultiRC, not sorted
BOOLEAN_LABELS = ("False", "True")


def _without_markup(text: str) -> str:
    """MultiRC's paragraphs carry HTML (``<b>Sent 1: </b>...<br>``), which T5 removes."""
    return re.sub(r"<(/)?b>", "", text.replace("<br>", " "))


def _multirc_question(ex: dict) -> list:
    """The answer option's question, as [paragraph, question]: the metric scores a question's options together."""
    return [int(ex["idx"]["paragraph"]), int(ex["idx"]["question"])]


def multirc_text(ex: dict) -> Optional[dict]:
    """``"multirc question: ... answer: ... paragraph: ..."`` -> ``"True"`` / ``"False"`` (is this answer option
    right?), with the paragraph's HTML markup removed as T5 does; ``group`` is the question, for scoring the
    question's options together."""
    out = text_to_text("multirc", MULTIRC_FIELDS, BOOLEAN_LABELS, sort=False)(ex)
    if out is None:
        return None
    out["inputs"] = _without_markup(out["inputs"])
    out["group"] = _multirc_question(ex)
    return out


def multirc_to_class(pairs: bool = False) -> Callable:
    """MultiRC for a BERT classifier, as SuperGLUE's BERT baseline reads it: is this answer option right (1)? The
    inputs are T5's text, or with ``pairs`` (BERT's own tokenizer) the paragraph and ``question answer`` as a pair;
    ``group`` (the question) and ``idx`` are kept for the metric and the leaderboard; a hidden label gives
    ``label_weight`` 0."""

    def preprocess(ex: dict) -> dict:
        if pairs:
            inputs = (_without_markup(ex["paragraph"]), f"{ex['question']} {ex['answer']}")
        else:
            inputs = multirc_text(ex)["inputs"]
        return {"inputs": inputs, **_class_label(ex["label"]), "group": _multirc_question(ex), "idx": ex["idx"]}

    return preprocess


def multirc_postprocessor(text, example: Optional[dict] = None, is_target: bool = False):
    """The option's label (0/1, -1 if unreadable): T5's predicted text, or a classifier's class id as it is; a
    target also carries its question (the ``multirc`` metric), or is None, unlabelled."""
    value = text if isinstance(text, (int, np.integer)) else label_postprocessor(BOOLEAN_LABELS)(text,
                                                                                                   is_target=is_target)
    if not is_target:
        return value
    return None if value is None else {"group": example["group"], "value": int(value)}


def record_per_answer(record: dict) -> list:
    """ReCoRD's training examples: one per answer, as T5 trains (none for a query without answers)."""
    return [dict(record, answer=answer) for answer in record["answers"]]


def record_text(ex: dict) -> Optional[dict]:
    """``"record query: ... entities: a, b passage: ..."`` -> the entity that fills the query's
    ``@placeholder``: the example's ``answer`` (training, see ``record_per_answer``) or its first answer; all
    answers are kept for scoring. The passage's ``@highlight`` lines become sentences, as in T5. Evaluation
    reads each query once, scored against all its answers; T5 repeats it per answer and deduplicates in the
    metric, which scores the same. A query without answers (the test split) is unlabelled."""
    answers = list(ex["answers"])
    answer = ex.get("answer", answers[0] if answers else UNLABELLED_TARGET)
    inputs = f"record query: {ex['query']} entities: {', '.join(ex['entities'])} passage: {_record_passage(ex)}"
    return {"inputs": inputs, "targets": answer, "answers": answers, "idx": ex["idx"]}


def _record_passage(ex: dict) -> str:
    """The passage with its ``@highlight`` lines made sentences, as T5 does."""
    return re.sub(r"([.?!\"'])\n@highlight\n", r"\1 ", ex["passage"]).replace("\n@highlight\n", ". ")


def record_postprocessor(text: str, example: Optional[dict] = None, is_target: bool = False):
    """The predicted entity; a target is all of the query's answers (SQuAD's metric takes the best), None if it
    has none (unlabelled)."""
    if is_target:
        return example["answers"] or None
    return text


def record_per_candidate(record: dict) -> list:
    """ReCoRD for a classifier: one example per candidate entity, each distinct text once, in the order the
    record lists them (TFDS's: sorted), in every split; ``record_best_candidate`` then picks one per query."""
    return [dict(record, entity=entity) for entity in dict.fromkeys(record["entities"])]


def record_to_class(pairs: bool = False) -> Callable:
    """ReCoRD for a BERT classifier, as SuperGLUE's BERT baseline reads it: is this candidate entity
    (``record_per_candidate``) what the query's ``@placeholder`` stands for (1)? The inputs are the query with the
    candidate in the placeholder's place and the passage, ``"record query: ... passage: ..."``, or with ``pairs``
    (BERT's own tokenizer) the passage and the filled query as a pair. ``idx``, the candidate and the answers are
    kept for ``record_best_candidate`` and the leaderboard; a query without answers (the test split) gives
    ``label_weight`` 0."""

    def preprocess(ex: dict) -> dict:
        if "@placeholder" not in ex["query"]:
            raise ValueError(f"the ReCoRD query {ex['query']!r} has no @placeholder for a candidate to fill")
        answers = list(ex["answers"])
        query = ex["query"].replace("@placeholder", ex["entity"])
        passage = _record_passage(ex)
        inputs = (passage, query) if pairs else f"record query: {query} passage: {passage}"
        label = int(ex["entity"] in answers) if answers else -1
        return {"inputs": inputs, **_class_label(label), "idx": ex["idx"], "entity": ex["entity"],
                "answers": answers}

    return preprocess


def record_best_candidate(rows: list) -> list:
    """A classifier's ReCoRD predictions, a row per candidate, as a row per query (rows grouped by the query's
    ``idx``): the prediction is the candidate with the highest probability of class 1, the target all the
    query's answers (None if it has none), scored by SQuAD's metric as T5's predictions are."""
    queries: dict = {}
    for row in rows:
        queries.setdefault(json.dumps(row["example"]["idx"], sort_keys=True), []).append(row)
    combined = []
    for candidates in queries.values():
        best = max(candidates, key=lambda row: row["class_log_probs"][1])
        ex = best["example"]
        combined.append({"inputs": best["inputs"], "targets": ex["answers"] or None, "prediction": ex["entity"],
                         "score": best["class_log_probs"][1], "example": {"idx": ex["idx"], "answers": ex["answers"]}})
    return combined


def wsc_correct_referent_only(record: dict) -> list:
    """WSC's training examples: those whose candidate is the pronoun's referent, as T5 trains."""
    return [record] if int(record["label"]) == 1 else []


def wsc_text(ex: dict) -> dict:
    """``"wsc: ... *pronoun* ..."`` -> the candidate referent (``span1_text``), T5's "simple" WSC; ``label``
    says whether that candidate is the referent (the postprocessor compares the prediction with it)."""
    return {"inputs": "wsc: " + _wsc_marked(ex), "targets": ex["span1_text"], "label": int(ex.get("label", 0)),
            "idx": ex.get("idx", -1)}


def _wsc_marked(ex: dict) -> str:
    """WSC's sentence with its pronoun marked, ``*he*``."""
    words = ex["text"].split(" ")
    pronoun = ex["span2_text"]
    start, end, rest = _pronoun_span(words, pronoun, int(ex["span2_index"]))
    return " ".join(words[:start] + [f"*{pronoun}*" + (f" {rest}" if rest else "")] + words[end:]).rstrip()


def wsc_to_class(pairs: bool = False) -> Callable:
    """WSC for a BERT classifier: is the candidate (``span1_text``) what the marked pronoun refers to (1)? The
    inputs are the sentence marked as T5 marks it and the candidate, ``"wsc: ... *he* ... candidate: ..."``, or
    with ``pairs`` (BERT's own tokenizer) the marked sentence and the candidate as a pair. Every candidate trains,
    right or wrong. SuperGLUE's BERT baseline pooled the two spans' token vectors into its classifier instead, a
    head this model does not have; a hidden label (the test split) gives ``label_weight`` 0."""

    def preprocess(ex: dict) -> dict:
        marked = _wsc_marked(ex)
        inputs = (marked, ex["span1_text"]) if pairs else f"wsc: {marked} candidate: {ex['span1_text']}"
        return {"inputs": inputs, **_class_label(ex["label"]), "idx": ex["idx"]}

    return preprocess


def _pronoun_span(words: list, pronoun: str, index: int) -> tuple[int, int, str]:
    """Where ``pronoun`` is in ``words``: at ``index``, or within 2 words of it (two WSC records are off by one
    or have punctuation glued on, which T5 special-cases: ``him,"`` is marked ``*him* ,"``)."""
    n = len(pronoun.split(" "))
    # the index itself first, exact or with punctuation glued on; then its neighbours, nearest first
    for j in sorted(range(max(index - 2, 0), min(index + 3, len(words))), key=lambda j: (abs(j - index), j)):
        text = " ".join(words[j:j + n])
        if text == pronoun:
            return j, j + n, ""
        if text.startswith(pronoun) and all(c in string.punctuation for c in text[len(pronoun):]):
            return j, j + n, text[len(pronoun):]
    raise ValueError(f"the pronoun {pronoun!r} is not at word {index} (nor within 2 words of it) of "
                     f"{' '.join(words)!r}")


_DETERMINERS = frozenset({"a", "an", "few", "her", "his", "each", "every", "many", "much", "my", "our", "some",
                          "that", "the", "their", "these", "this", "those", "which", "whose", "your"})


def wsc_postprocessor(text: str, example: Optional[dict] = None, is_target: bool = False) -> int:
    """Whether the prediction names the candidate (1) or not (0), to compare with the example's label, as T5's
    ``wsc_simple``: case and determiners ignored, one side's words a subset of the other's ("fuzzy bunny" names
    "bunny"), but a possessive names only a possessive ("Bob" is not "Bob's hat"). An empty prediction is -1,
    wrong whatever the label. A target whose label is hidden (-1, the test split) is None: unlabelled."""
    if is_target:
        return int(example["label"]) if int(example["label"]) >= 0 else None

    def clean(s: str) -> str:
        return " ".join(w for w in s.strip().lower().split(" ") if w not in _DETERMINERS)

    prediction, referent = clean(text), clean(example["targets_pretokenized"])
    if not prediction:
        return -1
    if ("'" in prediction) != ("'" in referent):
        return 0
    said, meant = set(prediction.split(" ")), set(referent.split(" "))
    return int(said <= meant or meant <= said)


def dpr_text(ex: dict) -> dict:
    """The Definite Pronoun Resolution dataset as WSC (T5's ``definite_pronoun_resolution_simple``): the first
    occurrence of the pronoun after a space and before a space, "." or "," marked with asterisks (a sentence
    where there is none stays unmarked, as in T5), -> the right candidate. ``label`` 1: the target is the
    referent, which ``wsc_postprocessor`` compares the prediction with."""
    marked = re.sub(f" ({re.escape(ex['pronoun'])})( |\\.|,)", r" *\1*\2", ex["sentence"], count=1)
    return {"inputs": f"wsc: {marked}", "targets": ex["candidates"][int(ex["label"])], "label": 1}


# ----------------------------------------------------------------------------- WNLI as WSC
# T5 trained no model on WNLI (its GLUE mixture leaves it out): it read WNLI's sentence pairs as WSC examples and
# answered them with the WSC-trained model (T5's ``wnli_simple``, for evaluation only).

WNLI_PRONOUNS = frozenset({"he", "she", "they", "it", "her", "his", "their", "them", "him"})
# The target of a WNLI row whose candidate was not found (T5's is empty, which a target cannot be here): text the
# bundled and T5's vocabularies decode to no word, so no prediction names it.
_NO_CANDIDATE = "<unk>"
_ARTICLES = ("a", "an", "the")


def _bare_words(text: str) -> list:
    """Lower-cased words with a trailing ``.``, ``,``, ``?`` or ``!`` cut, empty ones left out."""
    return [w for w in (re.sub(r"[.,?!]$", "", w) for w in text.strip().lower().split(" ")) if w]


def _leading_words_within(words: list, text: str) -> int:
    """How many of ``words``, from the first, joined by spaces still occur in ``text``."""
    n = 0
    while n < len(words) and " ".join(words[:n + 1]) in text:
        n += 1
    return n


def _pronoun_reading(premise: list, hypothesis: list, i: int) -> tuple:
    """(score, candidate) for the pronoun at word ``i`` of the premise: the hypothesis restates the premise with
    the pronoun replaced, so the words around it that the hypothesis repeats (the score) frame the candidate."""
    before, after = premise[:i], premise[i + 1:]
    # the words just before the pronoun, read backwards against the hypothesis read backwards (as T5 does)
    n_before = _leading_words_within(before[::-1], " ".join(hypothesis[::-1]))
    n_after = _leading_words_within(after, " ".join(hypothesis))
    if not n_before + n_after:
        return 0, ""
    text = " ".join(hypothesis)
    framed = [re.escape(w) for w in before[len(before) - n_before:]], [re.escape(w) for w in after[:n_after]]
    for pattern in (" ".join(framed[0] + ["(.+)"] + framed[1]), " ".join(["^(.+)"] + framed[1]),
                    " ".join(framed[0] + ["(.+)$"])):
        found = re.search(pattern, text)
        if found:
            return n_before + n_after, found.group(1)
    return n_before + n_after, ""


def wnli_text(ex: dict) -> dict:
    """GLUE's WNLI as T5's ``wnli_simple``: the premise with its pronoun marked, -> the candidate the hypothesis
    puts in the pronoun's place; ``label`` 1 (entailment) says the candidate is the referent, which
    ``wsc_postprocessor`` compares the prediction with. The pronoun is the one whose neighbouring words the
    hypothesis repeats most (the first such); the candidate starts at the latest of the articles' first
    occurrences in it, and is read back from the hypothesis with its case and without a possessive ending.

    Where no candidate is found (the hypothesis repeats no word around any pronoun, or nothing between the words
    it repeats), T5's target is empty and the row always scores "not the referent"; here (a target cannot be
    empty) it is ``"<unk>"``, which no prediction names either, and a warning says so. A premise without a
    pronoun is an error, as in T5."""
    premise, hypothesis = ex["sentence1"], ex["sentence2"]
    words = _bare_words(premise)
    readings = [(*_pronoun_reading(words, _bare_words(hypothesis), i), i)
                for i, w in enumerate(words) if w in WNLI_PRONOUNS]
    if not readings:
        raise ValueError(f"no pronoun ({', '.join(sorted(WNLI_PRONOUNS))}) in the premise {premise!r}")
    score, candidate, index = max(readings, key=lambda r: r[0])
    if candidate:
        cut = candidate.split(" ")
        cut = cut[max([cut.index(a) for a in _ARTICLES if a in cut] or [0]):]
        found = re.search("(" + " ".join(re.escape(w) + r"[.,?!]?" for w in cut) + ")", hypothesis, re.IGNORECASE)
        if not found:
            raise ValueError(f"the candidate {' '.join(cut)!r} is not in the hypothesis {hypothesis!r}")
        target = re.sub(r"[.,?!]$", "", found.group(1))
        target = target[:-2] if target.endswith("'s") else target[:-1] if target.endswith("'") else target
    else:
        log.warning("WNLI record idx %s: no candidate found in the hypothesis %r for a pronoun of the premise %r; "
                    "its answer is scored as not naming the referent, as T5's empty target is", ex.get("idx"),
                    hypothesis, premise)
        target = _NO_CANDIDATE
    marked = premise.split(" ")
    word = marked[index]
    marked[index] = f"*{word[:-1]}* {word[-1]}" if word[-1] in ".,!?" else f"*{word}*"
    return {"inputs": "wsc: " + " ".join(marked), "targets": target, "label": int(ex["label"]), "idx": ex["idx"]}


def _split_dependent(make: Callable, train_expand: Callable, what: str, task: str) -> Callable:
    """A source factory whose training split (``train``, or a slice of it) is expanded, or filtered, by
    ``train_expand``; training data joined with another split would be half one, half the other: refused."""
    expanded = _expanded(make, train_expand, what)

    def source(split: str):
        from t5x_lite.data.sources import DataError

        names = set(split_names(split))
        if "train" in names and len(names) > 1:
            raise DataError(f"task {task!r}: split {split!r} joins its training split, whose examples are "
                            f"{what}, with another; read them apart")
        return expanded(split) if names == {"train"} else make(split)

    return source


def _expanded(make: Callable, expand: Callable, what: str) -> Callable:
    """A source factory whose every split is expanded by ``expand`` (``ExpandedSource``)."""

    def source(split: str):
        from t5x_lite.data.sources import ExpandedSource

        return ExpandedSource(make(split), expand, what)

    return source


def _source(tfds_name: str, validation_split: str = "validation", data_dir: Optional[str] = None,
            random_access: str = "auto"):
    def make(split: str):
        from t5x_lite.data.tfds_source import TfdsSource

        return TfdsSource(tfds_name, validation_split if split == "validation" else split, data_dir=data_dir,
                          random_access=random_access)

    return make


# T5's multi-task mixtures, examples-proportional: each task's rate is its number of training examples, the
# numbers T5's glue_utils records (ReCoRD's counted per answer, WSC's correct referents only). As in T5, GLUE's
# leaves WNLI out (T5 trained on WSC instead) and SuperGLUE's trains WSC on DPR's data too.
MIXTURES = {
    "glue_proportional": {"glue_cola": 8_551, "glue_sst2": 67_349, "glue_mrpc": 3_668, "glue_qqp": 363_849,
                          "glue_stsb": 5_749, "glue_mnli": 392_702, "glue_qnli": 104_743, "glue_rte": 2_490},
    "super_glue_proportional": {"super_glue_boolq": 9_427, "super_glue_cb": 250, "super_glue_copa": 400,
                                "super_glue_multirc": 27_243, "super_glue_record": 138_854, "super_glue_rte": 2_490,
                                "super_glue_wic": 5_428, "super_glue_wsc": 259, "dpr_simple": 1_322},
}

TRAIN_ONLY = ("dpr_simple",)  # in a mixture to train on, not in the benchmark's score

# T5's metrics per task (accuracy unless listed).
METRIC_NAMES = {
    "glue_cola": ("matthews_corrcoef",),
    "glue_mrpc": ("accuracy", "f1"),
    "glue_qqp": ("accuracy", "f1"),
    "glue_stsb": ("pearson", "spearman"),
    "super_glue_cb": ("accuracy", "mean_3class_f1"),
}


# The diagnostic sets, read with a model fine-tuned on the task they are cast as (T5's casts): name -> (TFDS name,
# cast as, fields, renamed fields, metric names). Test split only. GLUE's AX has no public labels: predictions
# only, for the leaderboard. SuperGLUE's AX-b and AX-g come labelled in TFDS where the files have labels, scored
# as the leaderboard scores AX-b (Matthews correlation) and by accuracy (AX-g; its gender parity score, which
# pairs the examples, is not computed).
DIAGNOSTICS = {
    "glue_ax": ("glue/ax", "mnli", ("premise", "hypothesis"), {}, ()),
    "super_glue_axb": ("super_glue/axb", "rte", ("premise", "hypothesis"),
                       {"sentence1": "premise", "sentence2": "hypothesis"}, ("matthews_corrcoef", "accuracy")),
    "super_glue_axg": ("super_glue/axg", "rte", ("premise", "hypothesis"), {}, ("accuracy",)),
}


def label_names(task: str) -> Optional[tuple[str, ...]]:
    """The class names a GLUE or SuperGLUE task's label ids index (a diagnostic set's: those of the task it is cast
    as; ``glue_wnli_simple``'s: WNLI's, 1 = entailment = the candidate is the referent); None for the others and
    for STS-B."""
    if task == "glue_wnli_simple":
        task = "glue_wnli"
    if task in DIAGNOSTICS:
        task = ("glue_" if task.startswith("glue_") else "super_glue_") + DIAGNOSTICS[task][1]
    for prefix, table in (("glue_", GLUE), ("super_glue_", SUPER_GLUE)):
        if task.startswith(prefix) and task[len(prefix):] in table:
            return table[task[len(prefix):]][1]
    return None


def _diagnostic_tasks(data_dir: Optional[str]):
    """(task name, cast as, fields, label names, source, metric names, the preprocessors before the cast) of each
    diagnostic set; AX-b's go first with T5's ``rekey``, its sentence1/sentence2 read as RTE's premise/hypothesis."""
    for task, (tfds_name, cast_as, fields, rename, metrics) in DIAGNOSTICS.items():
        labels = label_names(task)
        rekey = (lambda ex, rename=rename: {rename.get(k, k): v for k, v in ex.items()},) if rename else ()
        yield task, cast_as, fields, labels, _source(tfds_name, data_dir=data_dir), metrics, rekey


def register(vocabulary=None, data_dir: Optional[str] = None) -> None:
    """Register (or re-register) the TFDS tasks with ``vocabulary`` (default: the bundled one).

    A ``WordPieceVocabulary`` (a converted BERT's tokenizer) re-registers only the ``_classification`` tasks,
    with two-text tasks as BERT's pairs; the text-to-text tasks keep the vocabulary they had.
    """
    if vocabulary is None:
        from t5x_lite.tasks.bundled import vocabulary as bundled_vocabulary

        vocabulary = bundled_vocabulary()
    feature = Feature(vocabulary)
    pairs = hasattr(vocabulary, "encode_pair")
    if not pairs:
        _register_text_to_text(feature, vocabulary, data_dir)
    for task, name, fields, labels, source, metrics in _benchmark_tasks(data_dir):
        TaskRegistry.add(Task(name=f"{task}_classification", source=source,
                              preprocessors=(to_class(name, fields, labels, pairs),),
                              output_features={"inputs": feature}, metric_names=metrics, eval_fields=("idx",),
                              num_labels=len(labels) if labels is not None else 1), overwrite=True)
    TaskRegistry.add(Task(name="super_glue_multirc_classification",
                          source=_source("super_glue/multirc", data_dir=data_dir),
                          preprocessors=(multirc_to_class(pairs),), output_features={"inputs": feature},
                          metric_names=("multirc",), postprocess_fn=multirc_postprocessor,
                          eval_fields=("group", "idx"), num_labels=2), overwrite=True)
    TaskRegistry.add(Task(name="super_glue_record_classification",
                          source=_expanded(_source("super_glue/record", data_dir=data_dir), record_per_candidate,
                                           "one example per candidate entity"),
                          preprocessors=(record_to_class(pairs),), output_features={"inputs": feature},
                          metric_names=("squad",), postprocess_fn=record_postprocessor,
                          combine_predictions=record_best_candidate, eval_fields=("idx", "entity", "answers"),
                          num_labels=2), overwrite=True)
    TaskRegistry.add(Task(name="super_glue_wsc_classification",
                          source=_source("super_glue/wsc.fixed", data_dir=data_dir),
                          preprocessors=(wsc_to_class(pairs),), output_features={"inputs": feature},
                          metric_names=("accuracy",), eval_fields=("idx",), num_labels=2), overwrite=True)
    for task, cast_as, fields, labels, source, metrics, rekey in _diagnostic_tasks(data_dir):
        TaskRegistry.add(Task(name=f"{task}_classification", source=source,
                              preprocessors=rekey + (to_class(cast_as, fields, labels, pairs),),
                              output_features={"inputs": feature}, metric_names=metrics, eval_fields=("idx",),
                              num_labels=len(labels), splits=("test",)), overwrite=True)


def _benchmark_tasks(data_dir: Optional[str]):
    """(task name, TFDS config name, fields, label names, source, metric names) of each GLUE and SuperGLUE task."""
    for benchmark, table in (("glue", GLUE), ("super_glue", SUPER_GLUE)):
        for name, (fields, labels) in table.items():
            validation = GLUE_VALIDATION.get(name, "validation") if benchmark == "glue" else "validation"
            task = f"{benchmark}_{name}"
            yield (task, name, fields, labels, _source(f"{benchmark}/{name}", validation, data_dir),
                   METRIC_NAMES.get(task, ("accuracy",)))


def _register_text_to_text(feature: Feature, vocabulary, data_dir: Optional[str]) -> None:
    TaskRegistry.add(Task(
        name="c4_span_corruption",
        # Read lazily from ArrayRecord files or not at all: loading C4 into memory would never finish.
        source=_source("c4/en:3.1.0", data_dir=data_dir, random_access="data_source"),
        output_features={"inputs": feature, "targets": feature},
        objective=make_objective("span_3_15_u_u", vocabulary.vocab_info()),
        streaming=True,  # 365M documents: tokenized as read, never up front
    ), overwrite=True)
    for name, (tfds_name, source, target) in TRANSLATION.items():
        TaskRegistry.add(Task(
            name=name,
            source=_source(tfds_name, data_dir=data_dir),
            preprocessors=(translate(source, target),),
            output_features={"inputs": feature, "targets": feature},
            metric_names=("bleu",),
        ), overwrite=True)
    for task, name, fields, labels, source, metrics in _benchmark_tasks(data_dir):
        TaskRegistry.add(Task(name=task, source=source, preprocessors=(text_to_text(name, fields, labels),),
                              output_features={"inputs": feature, "targets": feature}, metric_names=metrics,
                              postprocess_fn=label_postprocessor(labels), eval_fields=("idx",)), overwrite=True)
    for task, cast_as, fields, labels, source, metrics, rekey in _diagnostic_tasks(data_dir):
        TaskRegistry.add(Task(name=task, source=source, preprocessors=rekey + (text_to_text(cast_as, fields, labels),),
                              output_features={"inputs": feature, "targets": feature}, metric_names=metrics,
                              postprocess_fn=label_postprocessor(labels), eval_fields=("idx",), splits=("test",)),
                         overwrite=True)
    text_features = {"inputs": feature, "targets": feature}
    TaskRegistry.add(Task(name="super_glue_multirc", source=_source("super_glue/multirc", data_dir=data_dir),
                          preprocessors=(multirc_text,), output_features=text_features, metric_names=("multirc",),
                          postprocess_fn=multirc_postprocessor, eval_fields=("group", "idx")), overwrite=True)
    TaskRegistry.add(Task(name="super_glue_record",
                          source=_split_dependent(_source("super_glue/record", data_dir=data_dir), record_per_answer,
                                                  "one example per answer", "super_glue_record"),
                          preprocessors=(record_text,), output_features=text_features, metric_names=("squad",),
                          postprocess_fn=record_postprocessor, eval_fields=("answers", "idx")), overwrite=True)
    TaskRegistry.add(Task(name="super_glue_wsc",
                          source=_split_dependent(_source("super_glue/wsc.fixed", data_dir=data_dir),
                                                  wsc_correct_referent_only, "correct referents only",
                                                  "super_glue_wsc"),
                          preprocessors=(wsc_text,), output_features=text_features, metric_names=("accuracy",),
                          postprocess_fn=wsc_postprocessor, eval_fields=("label", "idx")), overwrite=True)
    TaskRegistry.add(Task(name="glue_wnli_simple", source=_source("glue/wnli", data_dir=data_dir),
                          preprocessors=(wnli_text,), output_features=text_features, metric_names=("accuracy",),
                          postprocess_fn=wsc_postprocessor, eval_fields=("label", "idx"),
                          splits=("validation", "test")), overwrite=True)
    TaskRegistry.add(Task(name="dpr_simple", source=_source("definite_pronoun_resolution", data_dir=data_dir),
                          preprocessors=(dpr_text,), output_features=text_features, metric_names=("accuracy",),
                          postprocess_fn=wsc_postprocessor, eval_fields=("label",), splits=("train", "test")),
                     overwrite=True)
    for name, rates in MIXTURES.items():
        evaluated = tuple(task for task in rates if task not in TRAIN_ONLY)
        MixtureRegistry.add(Mixture(name=name, tasks=tuple(rates.items()), evaluate_tasks=evaluated), overwrite=True)


register_default = functools.partial(register, None, None)
