"""Evaluate a task: validation loss, decode-based metrics, predictions and scores.

Every function here is plain and keyword-only; the CLI (``t5x_lite eval`` /
``t5x_lite infer``) and the training loop (evaluation every N steps) call them.
Batches are padded to a fixed size (no recompilation for the last one) and the
padding rows are dropped from every result.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import math
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import jax
import numpy as np

from t5x_lite.data.features import BOOKKEEPING_SUFFIXES, EVAL_FIELDS_KEY
from t5x_lite.data.sources import DataError
from t5x_lite.data.tasks import Mixture
from t5x_lite.decoding.predict import METHODS as DECODE_METHODS, decode_option_problems
from t5x_lite.errors import ConfigError, check_types
from t5x_lite.evaluation.metrics import evaluate as compute_metrics
from t5x_lite.models.layers import active_axis_rules

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
    """How to decode: ``greedy``, ``beam`` (num_beams, alpha) or ``sample`` (temperature, top_k, top_p).

    Samples repeat for one ``seed`` and batch size: batch i draws from ``fold_in(seed, i)``.
    """

    method: str = "greedy"
    max_decode_length: int = 32
    num_beams: int = 4
    alpha: float = 0.6
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        check_types("DecodeOptions", method=(self.method, str), max_decode_length=(self.max_decode_length, int),
                    num_beams=(self.num_beams, int), alpha=(self.alpha, (int, float)),
                    temperature=(self.temperature, (int, float)), top_k=(self.top_k, int),
                    top_p=(self.top_p, (int, float)), seed=(self.seed, int))
        if self.method not in DECODE_METHODS:
            raise ConfigError(f"DecodeOptions.method must be one of {', '.join(DECODE_METHODS)}, got {self.method!r}")
        problems = decode_option_problems(method=self.method, max_decode_length=self.max_decode_length,
                                          num_beams=self.num_beams, alpha=self.alpha, num_decodes=1,
                                          temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)
        if problems:
            raise ConfigError(f"DecodeOptions.{problems[0]}")


def _eval_batches(task, *, split: str, feature_lengths, batch_size: int, converter, max_examples: Optional[int],
                  keep_text: bool = False, counts: Optional[dict] = None) -> Iterator[tuple[dict, int]]:
    """(batch padded to batch_size, number of real rows) over the whole split, in order; with
    ``keep_text`` the batch also holds the text features before tokenizing (``*_pretokenized``).
    Once read through, logs the records dropped, skipped or cut, and puts the pipeline's counts
    (``TruncationStats.as_dict``) in ``counts``.
    """
    from t5x_lite.data.features import CUT_SUFFIX
    from t5x_lite.data.pipeline import get_dataset

    ds, stats = get_dataset(task, split=split, feature_lengths=feature_lengths, batch_size=batch_size,
                            converter=converter, shuffle=False, repeat=False, drop_remainder=False, shard=(0, 1),
                            keep_text=keep_text, count_cut=True)
    seen = 0
    cut_examples: dict[str, int] = {}
    cut_tokens: dict[str, int] = {}
    for batch in ds:
        n = len(next(iter(batch.values())))
        if max_examples is not None:
            n = min(n, max_examples - seen)
            if n <= 0:
                break
        seen += n
        # grain reads ahead of max_examples: count the cuts of the rows evaluated, not of every record read
        for key in [k for k in batch if k.endswith(CUT_SUFFIX)]:
            cut = np.asarray(batch.pop(key))[:n]
            feature = key[:-len(CUT_SUFFIX)]
            if cut.any():
                cut_examples[feature] = cut_examples.get(feature, 0) + int((cut > 0).sum())
                cut_tokens[feature] = cut_tokens.get(feature, 0) + int(cut.sum())
        yield {k: _pad_rows(np.asarray(v), batch_size) for k, v in batch.items()}, n
    _report(getattr(task, "name", task), split, stats.as_dict(), max_examples, seen, cut_examples, cut_tokens)
    if counts is not None:
        counts.update(stats.as_dict())


def _report(task: str, split: str, counts: Mapping[str, Any], max_examples: Optional[int], evaluated: int,
            cut_examples: Mapping[str, int], cut_tokens: Mapping[str, int]) -> None:
    # grain reads ahead of max_examples: dropped and skipped records are counted as read, not only as needed
    of = "the records read" if max_examples is None else "the records read (grain reads ahead of max_examples)"
    for name, count in counts["dropped_examples"].items():  # the split's score leaves these out
        log.warning("task %r split %r: its preprocessors dropped %d of %s; those are not evaluated",
                    name, split, count, of)
    for name, count in counts["skipped_examples"].items():
        log.warning("task %r split %r: %d of %s were skipped as bad (on_error='skip'); those are not evaluated",
                    name, split, count, of)
    for feature, count in cut_examples.items():
        log.warning("task %r split %r: %r was cut to its feature length in %d of the %d examples evaluated "
                    "(%d tokens lost)", task, split, feature, count, evaluated, cut_tokens[feature])


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    if x.shape[0] >= rows:
        return x[:rows]
    return np.concatenate([x, np.zeros((rows - x.shape[0],) + x.shape[1:], x.dtype)])


def _host(x) -> np.ndarray:
    """A computed value as host numpy. With params sharded over several processes' devices (evaluation during
    multi-host training) a result may be spread over processes too: every process gathers it (a collective,
    which every process reaches, since each evaluates the same batches)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


Place = Callable[[Mapping[str, Any]], dict]


def _batch_placer(sharding: Optional[jax.sharding.NamedSharding]) -> Place:
    """Model inputs -> global arrays whose rows are split as ``sharding`` splits a training batch (every process
    holds the whole evaluation batch), so the mesh's data devices share the work. Arrays whose rows do not divide
    over them stay host arrays for jit to lay out (said once per evaluation)."""
    if sharding is None:
        return dict
    from t5x_lite.training.partitioning import host_batch_to_global, leading_axis_split

    split = leading_axis_split(sharding)
    warned = []

    def place(batch: Mapping[str, Any]) -> dict:
        out = {}
        for key, value in batch.items():
            value = np.asarray(value)
            if value.ndim == 0 or value.shape[0] % split:
                if not warned:
                    log.warning("evaluation: %r has %s rows, which do not split over the %d data devices; jit "
                                "lays it out instead", key, value.shape[0] if value.ndim else "no", split)
                    warned.append(key)
                out[key] = value
                continue
            out[key] = host_batch_to_global({key: value}, sharding.mesh, sharding, slices=1)[key]
        return out

    return place


def _text(vocab, tokens) -> str:
    return vocab.decode([int(t) for t in np.asarray(tokens).reshape(-1)])


def _labeller(task) -> Callable[[Mapping[str, Any], bool], Any]:
    """``(row, is_target) -> `` the row's target or prediction through the task's postprocessor. One that takes
    seqio's ``example`` gets the row's eval fields and target (text; a classifier's class id) in it, and
    ``is_target`` if it takes that."""
    fn = task.postprocess_fn
    if fn is None:
        return lambda row, is_target: row["targets"] if is_target else row["prediction"]
    takes = _keyword_parameters(fn)

    def label(row: Mapping[str, Any], is_target: bool):
        if is_target and row["targets"] is None:  # a classifier's row without a label: nothing to postprocess
            return None
        if "example" not in takes:
            return fn(row["targets"] if is_target else row["prediction"])
        kwargs = {"example": {**row.get("example", {}), "targets_pretokenized": row["targets"]}}
        if "is_target" in takes:
            kwargs["is_target"] = is_target
        return fn(row["targets"] if is_target else row["prediction"], **kwargs)

    return label


def _keyword_parameters(fn) -> set:
    """Of ``example`` and ``is_target``, those ``fn`` accepts by name (both, with ``**kwargs``)."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature: called with the text alone
        return set()
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return {"example", "is_target"}
    return {name for name in ("example", "is_target") if name in parameters
            and parameters[name].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def resolve_task(task, *, mixture_ok: bool = False):
    """The task (or with ``mixture_ok``, the mixture) a name or object means; a mixture where one task is read
    is a clear error."""
    import t5x_lite.tasks  # noqa: F401
    from t5x_lite.data.tasks import get_task_or_mixture

    if isinstance(task, str):
        task = get_task_or_mixture(task)
    if isinstance(task, Mixture) and not mixture_ok:
        raise ConfigError(f"{task.name!r} is a mixture; this reads one task at a time (evaluation takes a mixture: "
                          f"each of its tasks, {', '.join(name for name, _ in task.tasks)})")
    return task


def predict(*, model, params, task, split: str = "validation", feature_lengths: Mapping[str, int],
            batch_size: int = 16, decode: DecodeOptions = DecodeOptions(), max_examples: Optional[int] = None,
            counts: Optional[dict] = None) -> list[dict]:
    """Decode every example: [{"inputs", "targets", "prediction", "score"}] as text (a classifier's: class ids,
    except where its task combines them, as ReCoRD's candidates into the entity text). ``counts``, a dict,
    receives the pipeline's counts once the split is read (records dropped or skipped)."""
    return _predict(model=model, params=params, task=resolve_task(task), split=split,
                    feature_lengths=feature_lengths, batch_size=batch_size, decode=decode, max_examples=max_examples,
                    counts=counts)


def _predict(*, model, params, task, split, feature_lengths, batch_size, decode, max_examples,
             loss: Optional["_LossTally"] = None, labelled: Callable[[dict], bool] = lambda row: True,
             place: Place = dict, counts: Optional[dict] = None) -> list[dict]:
    """``predict``; with ``loss``, each batch's loss is added to it too (one read of the split for both), over
    the rows ``labelled`` says have a label; ``place`` lays out each batch's model inputs (``_batch_placer``).
    A task whose examples are read as several inputs (``Task.combine_predictions``) gets one row per example."""
    if not can_decode(model):
        raise ConfigError(f"the model (kind {model.kind}) cannot decode predictions (only {DECODERS} can)")
    common = dict(model=model, params=params, task=task, split=split, feature_lengths=feature_lengths,
                  batch_size=batch_size, max_examples=max_examples, loss=loss, place=place, counts=counts)
    if model.kind == "encoder_only_classification":
        rows = _classify(**common)
    else:
        rows = _decode(decode=decode, labelled=labelled, **common)
    if task.combine_predictions is None:
        return rows
    if max_examples is not None and len(rows) == max_examples:
        log.warning("task %r: max_examples=%d counts the model's inputs, of which an example has several; the "
                    "last example may be combined from some of its inputs only", task.name, max_examples)
    return task.combine_predictions(rows)


def _decode(*, model, params, task, split, feature_lengths, batch_size, decode, max_examples, loss, labelled,
            place, counts) -> list[dict]:
    """A decoder's rows (``_predict``)."""
    from t5x_lite.decoding import predict_batch

    vocab = task.vocabulary
    rng = jax.random.key(decode.seed)
    rows: list[dict] = []
    for i, (batch, n) in enumerate(_eval_batches(task, split=split, feature_lengths=feature_lengths,
                                                  batch_size=batch_size, converter=model.feature_converter(),
                                                  max_examples=max_examples, keep_text=True, counts=counts)):
        tokens, scores = predict_batch(
            model, params, _model_inputs(model, batch), place=place, max_decode_length=decode.max_decode_length,
            method=decode.method, num_beams=decode.num_beams, alpha=decode.alpha, temperature=decode.temperature,
            top_k=decode.top_k, top_p=decode.top_p, rng=jax.random.fold_in(rng, i))
        tokens, scores = _host(tokens), _host(scores)
        batch_rows = []
        for r in range(n):
            row = {
                "inputs": _text(vocab, _inputs_of(model, batch, r)),
                "targets": _target_text(model, vocab, batch, r),
                "prediction": _text(vocab, tokens[r, 0]),
                "score": float(scores[r, 0]),
            }
            if EVAL_FIELDS_KEY in batch:
                row["example"] = json.loads(str(batch[EVAL_FIELDS_KEY][r]))
            batch_rows.append(row)
        if loss is not None:
            loss.add(params, {k: v for k, v in batch.items() if not k.endswith(BOOKKEEPING_SUFFIXES)}, n,
                     unlabelled=[r for r, row in enumerate(batch_rows) if not labelled(row)])
        rows.extend(batch_rows)
    return rows


def _target_text(model, vocab, batch, r) -> str:
    """The target as the task wrote it (seqio's ``targets_pretokenized``), which metrics score against:
    decoding the target tokens would give a truncated and NFKC-normalized text. Token-id targets have
    no text, so theirs is decoded."""
    if "targets_pretokenized" in batch:
        return str(batch["targets_pretokenized"][r])
    return _text(vocab, batch["decoder_target_tokens"][r] if model.kind != "decoder_only"
                 else _targets_of_prefix_lm(batch, r))


def _model_inputs(model, batch: Mapping[str, np.ndarray]) -> dict:
    """What the decoder may see: the inputs (enc-dec) or the prompt (decoder-only), never the targets."""
    if model.kind == "decoder_only":
        tokens = batch["decoder_target_tokens"]
        if "decoder_causal_attention" in batch:
            # The prefix the converter marked (inputs + the shifted-in position); keep the inputs only.
            prompt_len = np.maximum(batch["decoder_causal_attention"].sum(axis=1) - 1, 0)
        else:  # a causal LM: the inputs are the positions before the first one with a loss
            scored = np.asarray(batch["decoder_loss_weights"]) > 0
            prompt_len = np.where(scored.any(axis=1), scored.argmax(axis=1), 0)
        prompt = np.where(np.arange(tokens.shape[1])[None] < prompt_len[:, None], tokens, 0)
        return {"prompt_tokens": prompt}
    return {k: v for k, v in batch.items() if k.startswith("encoder_")}


def _inputs_of(model, batch, r) -> np.ndarray:
    if model.kind == "decoder_only":
        return _model_inputs(model, {k: v[r: r + 1] for k, v in batch.items()})["prompt_tokens"][0]
    return batch["encoder_input_tokens"][r]


def _targets_of_prefix_lm(batch, r) -> np.ndarray:
    weights = np.asarray(batch["decoder_loss_weights"][r]) > 0
    return np.asarray(batch["decoder_target_tokens"][r])[weights]


# Jitted once per model (a static, hashable argument): evaluation during training calls these every
# eval period, and a jax.jit made per call would trace and compile the model again each time. The
# logical-axis rules in context (training's, for evaluation during training) key them too: tracing
# reads them, and jit's own key does not hold them.
@functools.partial(jax.jit, static_argnames=("model", "axis_rules"))
def _logits_program(model, params, batch, axis_rules):
    return model.logits(params, batch)


@functools.partial(jax.jit, static_argnames=("model", "axis_rules"))
def _loss_program(model, params, batch, axis_rules):
    return model.loss_fn(params, batch)


def _jit_logits(model, params, batch):
    return _logits_program(model, params, batch, axis_rules=active_axis_rules())


def _jit_loss(model, params, batch):
    return _loss_program(model, params, batch, axis_rules=active_axis_rules())


def _classify(*, model, params, task, split, feature_lengths, batch_size, max_examples,
              loss: Optional["_LossTally"] = None, place: Place = dict, counts: Optional[dict] = None) -> list[dict]:
    """A classifier's rows: the class id (a regression head's value) predicted and the target's, None where the
    row has no label (``label_weight`` 0), every class's log-probability (``class_log_probs``); the task's eval
    fields (a test split's ``idx``) as ``example``."""
    rows = []
    for batch, n in _eval_batches(task, split=split, feature_lengths=feature_lengths, batch_size=batch_size,
                                  converter=model.feature_converter(), max_examples=max_examples,
                                  keep_text=bool(task.eval_fields), counts=counts):
        fields = batch.get(EVAL_FIELDS_KEY)
        batch = {k: v for k, v in batch.items() if not k.endswith(BOOKKEEPING_SUFFIXES)}
        unlabelled = _weightless_rows(batch, n)
        if loss is not None:
            loss.add(params, batch, n, unlabelled)
        logits = _host(_jit_logits(model, params, place(batch))).astype(np.float64)
        # in float64: a confident row's other classes keep their log-probabilities (ReCoRD ranks by them)
        log_probs = None if model.regression else logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
        for r in range(n):
            row = {"inputs": _text(task.vocabulary, batch["input_tokens"][r])}
            if model.regression:  # the head's one output is the prediction; no likelihood scores it
                row.update(targets=float(batch["labels"][r]), prediction=float(logits[r, 0]), score=None)
            else:
                pred = int(np.argmax(logits[r]))
                row.update(targets=int(batch["labels"][r]), prediction=pred, score=float(log_probs[r, pred]),
                           class_log_probs=[float(x) for x in log_probs[r]])
            if r in unlabelled:
                row["targets"] = None
            if fields is not None:
                row["example"] = json.loads(str(fields[r]))
            rows.append(row)
    return rows


def score(*, model, params, task, split: str = "validation", feature_lengths: Mapping[str, int],
          batch_size: int = 16, max_examples: Optional[int] = None) -> list[dict]:
    """Log-likelihood of each example's given targets (sum over tokens), for rank classification."""
    from t5x_lite.decoding import score_batch

    task = resolve_task(task)
    rows = []
    for batch, n in _eval_batches(task, split=split, feature_lengths=feature_lengths, batch_size=batch_size,
                                  converter=model.feature_converter(), max_examples=max_examples):
        total, per_token = score_batch(model, params, batch)
        total, per_token = _host(total), _host(per_token)
        weights = np.asarray(batch.get("decoder_loss_weights", batch["decoder_target_tokens"] != 0)) > 0
        for r in range(n):
            rows.append({"inputs": _text(task.vocabulary, _inputs_of(model, batch, r)),
                         "targets": _text(task.vocabulary, batch["decoder_target_tokens"][r][weights[r]]),
                         "score": float(total[r]), "token_scores": per_token[r][weights[r]].tolist()})
    return rows


def validation_loss(*, model, params, task, split: str = "validation", feature_lengths: Mapping[str, int],
                    batch_size: int = 16, max_examples: Optional[int] = None) -> float:
    """Token-weighted mean loss over the split's labelled examples (z-loss excluded; label smoothing as in
    training)."""
    task = resolve_task(task)
    return _loss_and_examples(model, params, task, split, feature_lengths, batch_size, max_examples,
                              _labelled_rule(model, task)).mean()


def _labelled_rule(model, task) -> Optional[Callable[[dict], bool]]:
    """Whether a row has a label: its target through the task's postprocessor is not None. None where every
    row has one (no postprocessor, a pretraining objective) or the batch says (a classifier's
    ``label_weights``)."""
    if model.kind == "encoder_only_classification" or task.objective is not None or task.postprocess_fn is None:
        return None
    label = _labeller(task)
    return lambda row: label(row, True) is not None


def _loss_and_examples(model, params, task, split, feature_lengths, batch_size, max_examples,
                       labelled: Optional[Callable[[dict], bool]] = None, place: Place = dict) -> "_LossTally":
    """The split's loss, read without decoding; with ``labelled``, over the rows it says have a label (the
    batches then carry their text, for it to read)."""
    tally = _LossTally(model, place)
    for batch, n in _eval_batches(task, split=split, feature_lengths=feature_lengths, batch_size=batch_size,
                                  converter=model.feature_converter(), max_examples=max_examples,
                                  keep_text=labelled is not None):
        unlabelled = _weightless_rows(batch, n)
        if labelled is not None:
            unlabelled = [r for r in range(n) if not labelled(_target_row(model, task, batch, r))]
            batch = {k: v for k, v in batch.items() if not k.endswith(BOOKKEEPING_SUFFIXES)}
        tally.add(params, batch, n, unlabelled)
    return tally


def _weightless_rows(batch: Mapping[str, Any], n: int) -> list[int]:
    """The classifier's rows without a label (``label_weight`` 0) among the first ``n``."""
    if "label_weights" not in batch:
        return []
    return [int(r) for r in np.flatnonzero(np.asarray(batch["label_weights"])[:n] == 0)]


def _target_row(model, task, batch: Mapping[str, Any], r: int) -> dict:
    """Row ``r``'s target text and eval fields, as a postprocessor reads them (``_predict``'s row, undecoded)."""
    row = {"targets": _target_text(model, task.vocabulary, batch, r), "prediction": ""}
    if EVAL_FIELDS_KEY in batch:
        row["example"] = json.loads(str(batch[EVAL_FIELDS_KEY][r]))
    return row


class _LossTally:
    """The split's loss per target token (z-loss excluded), summed batch by batch.

    Per token, whatever the training normalizer: a fixed loss_normalizer divides
    each batch's sum by a constant, which weighted by the batch's token count
    would depend on the batch size.
    """

    def __init__(self, model, place: Place = dict):
        self._model = model.replace(z_loss=0.0, loss_normalizer=None)
        self._place = place
        self._total = self._tokens = 0.0
        self.examples = self.unlabelled = 0

    def add(self, params, batch: dict, n: int, unlabelled: Sequence[int] = ()) -> None:
        """A batch padded to the batch size whose first ``n`` rows are real; the ``unlabelled`` rows among them
        have no loss either."""
        self.examples += n
        self.unlabelled += len(unlabelled)
        if len(unlabelled) == n:
            return
        loss, metrics = _jit_loss(self._model, params, self._place(_mask_rows(batch, n, unlabelled)))
        count = float(_host(metrics["num_tokens"]))
        self._total += float(_host(loss)) * count
        self._tokens += count

    def mean(self) -> float:
        return self._total / self._tokens if self._tokens else math.nan


def _mask_rows(batch: dict, n: int, unlabelled: Sequence[int] = ()) -> dict:
    """``batch`` with no loss on its padding rows (from ``n`` on) nor on the ``unlabelled`` ones."""
    if "labels" in batch and "label_weights" not in batch and n < len(batch["labels"]):
        # a classifier whose converter (one of one's own) gives no weights: drop the padding rows
        return {k: v[:n] for k, v in batch.items()}
    out = dict(batch)
    for key in ("decoder_loss_weights", "mlm_weights", "label_weights"):
        if key in out:
            w = np.asarray(out[key]).copy()
            w[n:] = 0
            w[list(unlabelled)] = 0
            out[key] = w
    return out


def evaluate(*, model, params, task, split: str = "validation", feature_lengths: Mapping[str, int],
             batch_size: int = 16, decode: DecodeOptions = DecodeOptions(), max_examples: Optional[int] = None,
             metric_names: Optional[Sequence[str]] = None, decode_without_metrics: bool = True,
             batch_sharding: Optional[jax.sharding.NamedSharding] = None) -> tuple[dict, list[dict]]:
    """(metrics, predictions): the task's metrics on postprocessed predictions, plus the loss.

    ``batch_sharding`` (a training batch's, ``partitioning.batch_sharding``) splits each batch's rows over the
    mesh's data devices, for params sharded on that mesh (evaluation during training); without it, jit
    replicates the batch over the devices the params are on.

    Without metrics to compute (a pretraining task) ``decode_without_metrics`` says
    whether to decode anyway, for the predictions; a model that cannot decode
    (BERT's MLM), or a task with no inputs to prompt with (an LM objective), then
    reports only its loss.

    A mixture is evaluated task by task (``max_examples`` each): every task's results under
    ``<task>/<name>``, its rows marked ``"task"``, and ``average``, the benchmark score GLUE and SuperGLUE
    define: each task's score metrics (all but loss, counts) averaged, then the tasks averaged. Only the
    mixture's ``evaluate_tasks`` are read, if it names them; a task without the split is left out (logged),
    as seqio's evaluator does.
    """
    task = resolve_task(task, mixture_ok=True)
    if isinstance(task, Mixture):
        return _evaluate_mixture(task, split, model=model, params=params, feature_lengths=feature_lengths,
                                 batch_size=batch_size, decode=decode, max_examples=max_examples,
                                 metric_names=metric_names, decode_without_metrics=decode_without_metrics,
                                 batch_sharding=batch_sharding)
    names = list(metric_names) if metric_names else list(task.metric_names)
    check_metrics_can_be_decoded(model, task, names)
    decodes = can_decode(model)
    rows = []
    predicted = decodes and bool(names or (decode_without_metrics and has_inputs(task)))
    place = _batch_placer(batch_sharding)
    loss = _LossTally(model, place)
    labelled = _labelled_rule(model, task)
    if predicted:
        rows = _predict(model=model, params=params, task=task, split=split, feature_lengths=feature_lengths,
                        batch_size=batch_size, decode=decode, max_examples=max_examples, loss=loss,
                        labelled=labelled or (lambda row: True), place=place)
    else:
        loss = _loss_and_examples(model, params, task, split, feature_lengths, batch_size, max_examples, labelled,
                                  place)
    label = _labeller(task)  # a classifier's class ids too: MultiRC's metric needs its postprocessor's group
    pairs = [(target, label(r, False)) for r in rows if (target := label(r, True)) is not None]
    metrics = compute_metrics([t for t, _ in pairs], [p for _, p in pairs], names) if names and pairs else {}
    if loss.unlabelled:  # a test split's hidden labels (GLUE, SuperGLUE): predictions only
        metrics["unlabelled_examples"] = loss.unlabelled
        if loss.unlabelled == loss.examples and names:
            log.warning("task %r split %r: none of the %d examples has a label, so nothing is scored; the "
                        "predictions are what it gives (t5x_lite infer writes them)", task.name, split,
                        loss.examples)
    if not math.isnan(loss.mean()):  # some rows had labels
        metrics["loss"] = loss.mean()
    metrics["num_examples"] = loss.examples
    return metrics, rows


NOT_SCORES = ("loss", "num_examples", "invalid_predictions", "unlabelled_examples")


def _evaluate_mixture(mixture, split: str, **kwargs) -> tuple[dict, list[dict]]:
    from t5x_lite.data.pipeline import has_split

    metrics: dict = {}
    rows: list[dict] = []
    scores = []
    examples = 0
    for task in mixture.evaluated_tasks():
        if not has_split(task, split):  # as seqio's evaluator: a task without the split is left out
            log.info("mixture %r: task %r has no %r split (it has %s); not evaluated", mixture.name, task.name,
                     split, ", ".join(task.splits))
            continue
        task_metrics, task_rows = evaluate(task=task, split=split, **kwargs)
        metrics.update({f"{task.name}/{k}": v for k, v in task_metrics.items()})
        rows.extend({"task": task.name, **row} for row in task_rows)
        examples += task_metrics["num_examples"]
        values = [v for k, v in task_metrics.items() if k not in NOT_SCORES]
        if values:
            scores.append(sum(values) / len(values))
    if not metrics:
        raise DataError(f"mixture {mixture.name!r}: none of the tasks it evaluates has a {split!r} split")
    if scores:
        metrics["average"] = sum(scores) / len(scores)
    metrics["num_examples"] = examples
    return metrics, rows


def can_decode(model) -> bool:
    """Whether ``predict`` can decode with this model (BERT's MLM has no decoder). A decoder-only model continues
    its inputs: under a bidirectional prefix (``prefix_lm``) or a causal mask, as it was trained."""
    return model.kind in ("encoder_decoder", "decoder_only", "encoder_only_classification")


DECODERS = "encoder_decoder, decoder_only and encoder_only_classification models"


def has_inputs(task) -> bool:
    """Whether examples have inputs to decode from: an LM objective's have none, so every one would decode the
    same unprompted text."""
    return "inputs" in task.output_features and "inputs" in getattr(task.objective, "features", ("inputs",))


def check_metrics_can_be_decoded(model, task, metric_names: Optional[Sequence[str]] = None, where: str = "") -> None:
    """A ``ConfigError`` (opening with ``where``) if the task's metrics need predictions the model cannot decode;
    for a mixture (a name or the object), each task evaluating it reads.

    ``evaluate``, ``t5x_lite eval`` and training's ``eval_task`` check this before
    reading any data; a task without metrics is evaluated by its loss instead.
    """
    if can_decode(model):
        return
    item = resolve_task(task, mixture_ok=True)
    for each in item.evaluated_tasks() if isinstance(item, Mixture) else [item]:
        names = list(metric_names) if metric_names else list(each.metric_names)
        if names:
            raise ConfigError(f"{where}task {each.name!r} is scored by {', '.join(names)}, which need predictions, "
                              f"and the model (kind {model.kind}) cannot decode them (only {DECODERS} can; on a task "
                              "without metrics, its loss is evaluated)")


def write_jsonl(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
