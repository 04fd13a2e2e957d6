"""Evaluation metrics: thin, robust wrappers around maintained libraries.

Every metric is ``fn(targets, predictions) -> dict[str, float]`` and reports values in percent, as
T5's metrics do (accuracy 0..100, MCC and correlations -100..100, BLEU and ROUGE 0..100). The
libraries (scikit-learn, SciPy, sacrebleu, rouge-score) are imported inside the functions, so
``import t5x_lite.evaluation.metrics`` stays light.

Unparseable predictions. A task's postprocessor maps text it cannot read to ``INVALID_LABEL`` (-1)
for classification or NaN for regression (see ``t5x_lite/tasks``); text metrics may get ``None``.
Such a prediction is always scored as wrong and never raises; every result also carries
``"invalid_predictions"``, the number of them, so a model that emits garbage is visible in the logs:

- accuracy, macro-F1, MCC: the prediction becomes a sentinel label outside the label set (a wrong
  class of its own; macro-F1 averages only over the real labels, via ``labels=``).
- binary F1: as T5's ``f1_score_with_invalid``, the prediction counts as the opposite of the
  target: a false negative when the target is positive, a false positive when it is negative.
  (A sentinel alone would let garbage pass as a free "negative" answer.)
- Pearson/Spearman: see ``_scores_with_invalid``: the prediction is replaced by the end of the
  model's own prediction range that is opposite the target (the lowest prediction for a target at
  or above the target median, the highest otherwise). The mean of the targets, the obvious choice,
  can be right by accident: targets [1, 2, 3] with predictions [1, NaN, 3] would score 100.
- exact match and SQuAD: ``None`` scores 0. BLEU and ROUGE: ``None`` becomes the empty string.
"""

from __future__ import annotations

import collections
import collections.abc
import difflib
import math
import numbers
import re
import string
from typing import Any, Callable, Sequence

INVALID_LABEL = -1
"""What the classification postprocessors return for text they cannot map to a label."""

Metric = Callable[[Sequence, Sequence], "dict[str, float]"]


# ----------------------------------------------------------------------------- shared helpers


def _as_lists(targets: Sequence, predictions: Sequence) -> tuple[list, list]:
    targets, predictions = list(targets), list(predictions)
    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")
    if not targets:
        raise ValueError("no examples to evaluate")
    return targets, predictions


def _is_invalid_label(x: Any) -> bool:
    if x is None:
        return True
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        return math.isnan(x) or x == INVALID_LABEL
    return False


def _sentinel(labels: list) -> Any:
    """A label equal to none of ``labels``, of the same kind (str or number) so sklearn accepts it."""
    if any(isinstance(x, str) for x in labels):
        sentinel = "<invalid>"
        while sentinel in labels:
            sentinel += "_"
        return sentinel
    return min(labels) - 1


def _labels_with_invalid(targets: Sequence, predictions: Sequence) -> tuple[list, list, list, Any, int]:
    """(targets, predictions with invalid ones set to a sentinel, real labels, sentinel, #invalid)."""
    targets, predictions = _as_lists(targets, predictions)
    invalid = [_is_invalid_label(p) for p in predictions]
    labels = list(dict.fromkeys([*targets, *(p for p, bad in zip(predictions, invalid) if not bad)]))
    sentinel = _sentinel(labels)
    cleaned = [sentinel if bad else p for p, bad in zip(predictions, invalid)]
    return targets, cleaned, labels, sentinel, sum(invalid)


def _result(n_invalid: int, **values: float) -> dict[str, float]:
    return {**{k: float(v) for k, v in values.items()}, "invalid_predictions": float(n_invalid)}


# ----------------------------------------------------------------------------- classification


def accuracy(targets: Sequence, predictions: Sequence) -> dict[str, float]:
    """Percent of predictions equal to their target (sklearn ``accuracy_score``)."""
    from sklearn.metrics import accuracy_score

    targets, predictions, _, _, n_invalid = _labels_with_invalid(targets, predictions)
    return _result(n_invalid, accuracy=100.0 * accuracy_score(targets, predictions))


def f1(targets: Sequence, predictions: Sequence, *, pos_label: Any = 1) -> dict[str, float]:
    """Binary F1 of the positive class in percent (sklearn ``f1_score``).

    An invalid prediction is the opposite of its target (T5's ``f1_score_with_invalid``).
    """
    from sklearn.metrics import f1_score

    targets, predictions, labels, sentinel, n_invalid = _labels_with_invalid(targets, predictions)
    if pos_label not in labels and any(isinstance(x, str) for x in labels):  # would score 0 whatever is right
        raise ValueError(f"f1: the positive label {pos_label!r} is none of the labels {sorted(map(str, labels))[:5]}"
                         "; give the task a postprocessor that maps text to 0/1")
    predictions = [
        (sentinel if t == pos_label else pos_label) if p == sentinel else p for t, p in zip(targets, predictions)
    ]
    # labels=[pos_label] with micro averaging is the positive class's F1, and unlike average="binary"
    # it tolerates the sentinel as a third label.
    score = f1_score(targets, predictions, labels=[pos_label], average="micro", zero_division=0.0)
    return _result(n_invalid, f1=100.0 * score)


def macro_f1(targets: Sequence, predictions: Sequence, *, labels: Sequence | None = None) -> dict[str, float]:
    """Unweighted mean of per-class F1 in percent (sklearn ``f1_score(average="macro")``).

    ``labels`` defaults to every label seen in targets or valid predictions (as T5's
    ``mean_multiclass_f1`` with ``labels=range(num_classes)``, pass them to count unseen classes);
    an invalid prediction is a miss for its target's class and a hit for no class.
    """
    from sklearn.metrics import f1_score

    targets, predictions, seen, _, n_invalid = _labels_with_invalid(targets, predictions)
    labels = list(labels) if labels is not None else seen
    score = f1_score(targets, predictions, labels=labels, average="macro", zero_division=0.0)
    return _result(n_invalid, macro_f1=100.0 * score)


def mean_3class_f1(targets: Sequence, predictions: Sequence) -> dict[str, float]:
    """Macro-F1 over the labels 0, 1, 2 whether seen or not: T5's ``mean_multiclass_f1(num_classes=3)`` for
    SuperGLUE CB, whose small validation split (5 "neutral" examples) may lack a class."""
    result = macro_f1(targets, predictions, labels=(0, 1, 2))
    return _result(int(result["invalid_predictions"]), mean_3class_f1=result["macro_f1"])


def matthews_corrcoef(targets: Sequence, predictions: Sequence) -> dict[str, float]:
    """Matthews correlation coefficient x 100 (sklearn); invalid predictions are a wrong class of their own."""
    from sklearn.metrics import matthews_corrcoef as mcc

    targets, predictions, _, _, n_invalid = _labels_with_invalid(targets, predictions)
    return _result(n_invalid, matthews_corrcoef=100.0 * mcc(targets, predictions))


def multirc(targets: Sequence, predictions: Sequence) -> dict[str, float]:
    """SuperGLUE MultiRC as T5 scores it: ``f1a``, the binary F1 over every answer option (T5's
    ``multirc_f1_over_all_answers``), and ``exact_match``, the percent of questions whose answer options are
    all labelled right (T5's ``mean_group_metric(all_match)``).

    A target is ``{"group": question id, "value": 0 or 1}`` (the task's postprocessor builds it from the
    example), a prediction the class id (or ``{"value": id}``); an invalid prediction is wrong in both.
    """
    targets, predictions = _as_lists(targets, predictions)
    for i, target in enumerate(targets):
        if not (isinstance(target, collections.abc.Mapping) and {"group", "value"} <= set(target)):
            raise ValueError(f"multirc: target {i} is {target!r}, not {{'group': question, 'value': label}}; "
                             "give the task MultiRC's postprocessor (t5x_lite.tasks.tfds_tasks.multirc_postprocessor)")
    values = [t["value"] for t in targets]
    predicted = [p.get("value") if isinstance(p, collections.abc.Mapping) else p for p in predictions]
    f1a = f1(values, predicted)
    all_right: dict[Any, bool] = {}
    for target, value, prediction in zip(targets, values, predicted):
        group = _hashable(target["group"])
        all_right[group] = all_right.get(group, True) and not _is_invalid_label(prediction) and prediction == value
    exact = 100.0 * sum(all_right.values()) / len(all_right)
    return _result(int(f1a["invalid_predictions"]), f1a=f1a["f1"], exact_match=exact)


def _hashable(x: Any) -> Any:
    """A group id read back from JSON (a list) as a dict key."""
    return tuple(_hashable(v) for v in x) if isinstance(x, list) else x


# ----------------------------------------------------------------------------- regression


def _as_float(x: Any) -> float | None:
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _scores_with_invalid(targets: Sequence, predictions: Sequence) -> tuple[list[float], list[float], int]:
    """Float targets and predictions, each unparseable prediction replaced by a wrong value.

    The replacement is the end of the valid predictions' range opposite the target: the lowest valid
    prediction when the target is at or above the targets' median, the highest otherwise. It pulls
    the correlation toward negative, and it stays on the model's own scale, so a single failure is a
    mistake rather than a huge outlier. With no valid prediction at all the score is 0 (nothing to
    correlate), not the strongly negative value the same rule would give over the targets' range.
    """
    targets, predictions = _as_lists(targets, predictions)
    parsed = [_as_float(t) for t in targets]
    if None in parsed:  # a gold score must be a number; NaN would make the whole correlation NaN
        bad = parsed.index(None)
        raise ValueError(f"target {bad} is {targets[bad]!r}, not a finite number")
    targets = [float(t) for t in parsed]
    values = [_as_float(p) for p in predictions]
    valid = [v for v in values if v is not None]
    if not valid:  # nothing to correlate: a constant, which _correlation scores 0
        return targets, [0.0] * len(targets), len(values)
    low, high = min(valid), max(valid)
    ordered = sorted(targets)
    median = (ordered[(len(ordered) - 1) // 2] + ordered[len(ordered) // 2]) / 2
    filled = [v if v is not None else (low if t >= median else high) for t, v in zip(targets, values)]
    return targets, filled, sum(v is None for v in values)


def _correlation(fn: Callable, targets: list[float], predictions: list[float]) -> float:
    # A constant side (e.g. a model that always predicts the same score) leaves the correlation
    # undefined: SciPy warns and returns NaN. Score it 0, an uninformative predictor.
    if len(set(targets)) < 2 or len(set(predictions)) < 2:
        return 0.0
    return 100.0 * float(fn(targets, predictions)[0])


def pearson(targets: Sequence, predictions: Sequence) -> dict[str, float]:
    """Pearson correlation x 100 (``scipy.stats.pearsonr``)."""
    from scipy.stats import pearsonr

    targets, predictions, n_invalid = _scores_with_invalid(targets, predictions)
    return _result(n_invalid, pearson=_correlation(pearsonr, targets, predictions))


def spearman(targets: Sequence, predictions: Sequence) -> dict[str, float]:
    """Spearman rank correlation x 100 (``scipy.stats.spearmanr``)."""
    from scipy.stats import spearmanr

    targets, predictions, n_invalid = _scores_with_invalid(targets, predictions)
    return _result(n_invalid, spearman=_correlation(spearmanr, targets, predictions))


# ----------------------------------------------------------------------------- text


def _as_text(x: Any) -> str | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    if isinstance(x, bytes):
        return x.decode("utf-8")
    return str(x)


def _texts(predictions: list) -> tuple[list[str], int]:
    texts = [_as_text(p) for p in predictions]
    return ["" if t is None else t for t in texts], sum(t is None for t in texts)


def _references(target: Any) -> list[str]:
    """One target as a list of reference strings (a single string, or a list of alternatives)."""
    if target is None:
        return [""]
    if isinstance(target, (str, bytes)) or not isinstance(target, collections.abc.Iterable):
        return [_as_text(target) or ""]
    refs = [_as_text(t) for t in target]
    return [r for r in refs if r is not None] or [""]


_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, collapse whitespace.

    As ``normalize_answer`` in the official SQuAD v1.1 evaluation script (evaluate-v1.1.py,
    Rajpurkar et al. 2016), which T5's ``squad`` metric also uses.
    """
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _squad_f1(prediction: str, reference: str) -> float:
    """Token-overlap F1 of normalized answers (SQuAD v1.1 ``f1_score``); 0 when nothing overlaps."""
    pred_tokens, ref_tokens = normalize_answer(prediction).split(), normalize_answer(reference).split()
    same = sum((collections.Counter(pred_tokens) & collections.Counter(ref_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def _squad_scores(targets: Sequence, predictions: Sequence) -> tuple[float, float, int]:
    targets, predictions = _as_lists(targets, predictions)
    invalid = [_as_text(p) is None for p in predictions]
    predictions, n_invalid = _texts(predictions)
    em = f1_total = 0.0
    for target, prediction, bad in zip(targets, predictions, invalid):
        if bad:  # "" would match a reference that normalizes to nothing (such as "The")
            continue
        refs = _references(target)
        em += max(float(normalize_answer(prediction) == normalize_answer(r)) for r in refs)
        f1_total += max(_squad_f1(prediction, r) for r in refs)
    n = len(targets)
    return 100.0 * em / n, 100.0 * f1_total / n, n_invalid


def exact_match(targets: Sequence, predictions: Sequence) -> dict[str, float]:
    """Percent of predictions equal to one of their references after SQuAD normalization."""
    em, _, n_invalid = _squad_scores(targets, predictions)
    return _result(n_invalid, exact_match=em)


def squad(targets: Sequence, predictions: Sequence) -> dict[str, float]:
    """SQuAD v1.1 exact match ``em`` and token F1 ``f1``, each the max over an example's references."""
    em, f1_score, n_invalid = _squad_scores(targets, predictions)
    return _result(n_invalid, em=em, f1=f1_score)


def bleu(targets: Sequence, predictions: Sequence, *, tokenize: str = "intl") -> dict[str, float]:
    """Corpus BLEU (``sacrebleu.corpus_bleu``) with T5's settings; a target may be a list of references.

    Examples may have different numbers of references: the missing ones are ``None``, which
    sacrebleu skips.
    """
    import sacrebleu

    targets, predictions = _as_lists(targets, predictions)
    predictions, n_invalid = _texts(predictions)
    refs = [_references(t) for t in targets]
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(max(map(len, refs)))]
    score = sacrebleu.corpus_bleu(
        predictions,
        streams,
        smooth_method="exp",
        smooth_value=0.0,
        force=False,
        lowercase=False,
        tokenize=tokenize,
        use_effective_order=False,
    )
    return _result(n_invalid, bleu=score.score)


def _prepare_summary(summary: str) -> str:
    # As T5: one sentence per line, so that rougeLsum (which splits on newlines) sees sentences.
    return summary.replace(" . ", " .\n")


def rouge(
    targets: Sequence, predictions: Sequence, *, score_keys: Sequence[str] = ("rouge1", "rouge2", "rougeLsum"),
    use_stemmer: bool = False,
) -> dict[str, float]:
    """Mean ROUGE F-measure x 100 (``rouge_score.rouge_scorer``), like T5's ``rouge``: no stemming unless
    ``use_stemmer`` (the Porter stemming many summarization papers use).

    Sentences for rougeLsum are the lines of each text (after T5's " . " -> " .\\n"); with several
    references an example takes the best one per score (``RougeScorer.score_multi``).
    """
    from rouge_score import rouge_scorer

    targets, predictions = _as_lists(targets, predictions)
    predictions, n_invalid = _texts(predictions)
    scorer = rouge_scorer.RougeScorer(list(score_keys), use_stemmer=use_stemmer)
    totals = dict.fromkeys(score_keys, 0.0)
    for target, prediction in zip(targets, predictions):
        refs = [_prepare_summary(r) for r in _references(target)]
        scores = scorer.score_multi(refs, _prepare_summary(prediction))
        for key in score_keys:
            totals[key] += scores[key].fmeasure
    return _result(n_invalid, **{key: 100.0 * total / len(targets) for key, total in totals.items()})


# ----------------------------------------------------------------------------- registry


METRICS: dict[str, Metric] = {
    "accuracy": accuracy,
    "f1": f1,
    "macro_f1": macro_f1,
    "mean_3class_f1": mean_3class_f1,
    "multirc": multirc,
    "matthews_corrcoef": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
    "exact_match": exact_match,
    "squad": squad,
    "bleu": bleu,
    "rouge": rouge,
}


def get_metric(name: str) -> Metric:
    """The metric registered as ``name``; a ValueError that suggests the closest name otherwise."""
    if name in METRICS:
        return METRICS[name]
    lowered = {key.lower(): key for key in METRICS}
    close = difflib.get_close_matches(name.lower(), lowered, n=1, cutoff=0.5)
    hint = f" Did you mean {lowered[close[0]]!r}?" if close else ""
    raise ValueError(f"unknown metric {name!r}.{hint} Known metrics: {', '.join(sorted(METRICS))}")


def evaluate(targets: Sequence, predictions: Sequence, metric_names: Sequence[str]) -> dict[str, float]:
    """Every named metric's results in one dict.

    Names are checked before anything is computed. ``invalid_predictions`` is the largest count any
    metric reported; two metrics reporting the same key with different values (``f1`` and ``squad``
    both report "f1") is a ValueError rather than a silent overwrite.
    """
    if isinstance(metric_names, str):
        metric_names = [metric_names]
    fns = [get_metric(name) for name in dict.fromkeys(metric_names)]
    merged: dict[str, float] = {}
    for name, fn in zip(dict.fromkeys(metric_names), fns):
        for key, value in fn(targets, predictions).items():
            if key == "invalid_predictions":
                merged[key] = max(merged.get(key, 0.0), value)
            elif key in merged and merged[key] != value:
                raise ValueError(
                    f"metric {name!r} reports {key!r}={value}, but an earlier metric reported {merged[key]}"
                )
            else:
                merged[key] = value
    return merged
