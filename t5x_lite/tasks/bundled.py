"""Tasks on the bundled offline data (t5x_lite/data/bundled, see its LICENSES.md).

- ``bundled_corpus_<objective>``: the prose corpus with each T5-paper objective
  (``span_3_15_u_u``, ``iid_15_r10s90_f``, ``prefix_lm``, ``all_permute``, ``lm`` ...)
  and ``bundled_corpus_ul2`` (UL2's mixture, sized for the run's feature lengths).
- ``bundled_sentiment``: Rotten Tomatoes critic snippets, text to text
  ("sentiment: ..." -> "positive" / "negative").
- ``bundled_sentiment_classification``: the same snippets for an encoder with a
  classification head (label 1 = positive).
"""

from __future__ import annotations

import functools
from typing import Mapping, Optional

from t5x_lite.data.features import Feature
from t5x_lite.data.objectives import OBJECTIVE_NAMES, make_objective
from t5x_lite.data.tasks import Task, TaskRegistry

LABELS = ("negative", "positive")
SENTIMENT_PREFIX = "sentiment: "
# UL2 paradigm tokens: the lowest three sentinels; UL2's span corruption then stops at <extra_id_96>.
UL2_PARADIGMS = {"R": 97, "S": 98, "X": 99}  # sentinel numbers: <extra_id_97> = [NLU], ... [NLG]


@functools.lru_cache(maxsize=None)
def vocabulary():
    from t5x_lite.data.vocab import default_vocabulary

    return default_vocabulary()


def _corpus(split: str):
    from t5x_lite.data.sources import bundled_corpus

    return bundled_corpus(split)


def _sentiment(split: str):
    from t5x_lite.data.sources import bundled_sentiment

    return bundled_sentiment(split)


def sentiment_to_text(example: Mapping) -> dict:
    return {"inputs": SENTIMENT_PREFIX + example["text"], "targets": example["label"]}


def sentiment_to_class(example: Mapping) -> dict:
    return {"inputs": example["text"], "label": LABELS.index(example["label"])}


def postprocess_sentiment(text: str) -> int:
    """"positive" -> 1, "negative" -> 0, anything else -> -1 (scored as wrong, never a crash)."""
    text = text.strip().lower()
    return LABELS.index(text) if text in LABELS else -1


def corpus_task(objective_name: str, objective=None, name: Optional[str] = None, vocab=None) -> Task:
    """The bundled corpus pretrained with ``objective_name``, read with ``vocab`` (default: the bundled one)."""
    vocab = vocab if vocab is not None else vocabulary()
    if objective is None:
        objective = make_objective(objective_name, vocab.vocab_info())
    token = Feature(vocab, add_eos=True)
    if objective_name == "bert_mlm":
        features = {"inputs": Feature(vocab, add_eos=False), "mlm_targets": Feature(vocab, add_eos=False),
                    "mlm_weights": Feature(vocab, add_eos=False)}
    elif objective_name == "lm":
        features = {"inputs": Feature(vocab, add_eos=False, required=False), "targets": token}
    else:
        features = {"inputs": token, "targets": token}
    return Task(name=name or f"bundled_corpus_{objective_name}", source=_corpus, output_features=features,
                objective=objective, splits=("train", "validation"))


class UL2ForLengths:
    """UL2's mixture of denoisers, built for the feature lengths the pipeline asks for."""

    name = "ul2"
    features = ("inputs", "targets")

    def __init__(self, vocab):
        self.vocab_info = vocab.vocab_info()
        self.paradigm_tokens = {mode: vocab.sentinel_id(n) for mode, n in UL2_PARADIGMS.items()}

    @functools.lru_cache(maxsize=8)
    def _build(self, inputs_length: int, targets_length: int):
        return make_objective("ul2", self.vocab_info, paradigm_tokens=self.paradigm_tokens,
                              inputs_length=inputs_length, targets_length=targets_length)

    def for_lengths(self, lengths: Mapping[str, int]):
        return self._build(int(lengths["inputs"]), int(lengths["targets"]))


def register() -> None:
    vocab = vocabulary()
    for name in OBJECTIVE_NAMES:
        objective = UL2ForLengths(vocab) if name == "ul2" else None
        TaskRegistry.add(corpus_task(name, objective), overwrite=True)
    TaskRegistry.add(Task(
        name="bundled_sentiment",
        source=_sentiment,
        preprocessors=(sentiment_to_text,),
        output_features={"inputs": Feature(vocab), "targets": Feature(vocab)},
        metric_names=("accuracy", "f1"),
        postprocess_fn=postprocess_sentiment,
        splits=("train", "validation", "test"),
    ), overwrite=True)
    register_classification(vocab)


def register_mlm(vocabulary) -> None:
    """(Re-)register ``bundled_corpus_bert_mlm`` with ``vocabulary``: a converted BERT's WordPiece tokenizer, to
    pretrain it further with masked LM on the bundled corpus as Hugging Face's run_mlm.py would."""
    TaskRegistry.add(corpus_task("bert_mlm", vocab=vocabulary), overwrite=True)


def register_classification(vocabulary) -> None:
    """(Re-)register ``bundled_sentiment_classification`` with ``vocabulary`` (a converted BERT's WordPiece
    tokenizer, say), which its model reads."""
    TaskRegistry.add(Task(
        name="bundled_sentiment_classification",
        source=_sentiment,
        preprocessors=(sentiment_to_class,),
        output_features={"inputs": Feature(vocabulary)},
        metric_names=("accuracy", "f1"),
        splits=("train", "validation", "test"),
        num_labels=len(LABELS),
    ), overwrite=True)
