"""Entry points for ``t5x_lite eval`` and ``t5x_lite infer``: a checkpoint in, files out.

The checkpoint is any t5x_lite checkpoint directory: a training ``MODEL_DIR``
(its newest step), one of its steps (``MODEL_DIR/checkpoints/<step>``) or a
``t5x_lite convert`` output; the model is rebuilt from the ``model.gin`` beside
it, so no model gin file is needed. Results go to ``CHECKPOINT/eval`` (or
``/infer``); for a training run, to ``MODEL_DIR/eval`` with the step read in the
names (``metrics-<task>-<split>-step<N>.json``). Unless ``overwrite=True``,
results never overwrite earlier ones: a second run with the same task and split
is numbered (``metrics-<task>-<split>-2.json``, ``...-step<N>-2.json``).
"""

from __future__ import annotations

import json
import logging
import os
from collections import abc
from pathlib import Path
from typing import Mapping, Optional

from t5x_lite.errors import ConfigError, check_at_least, check_types
from t5x_lite.evaluation.evaluate import (DECODERS, DecodeOptions, can_decode, check_metrics_can_be_decoded, evaluate,
                                         has_inputs, predict, resolve_task, score, write_jsonl)

log = logging.getLogger(__name__)

# What infer --score can do with each kind of model (decoding: evaluate.can_decode).
SCORES = ("encoder_decoder", "decoder_only")


def _check_settings(owner: str, checkpoint, task, feature_lengths, batch_size, max_examples, output_dir) -> None:
    """Everything a run needs, checked before the checkpoint loads (it can take a while)."""
    check_types(owner, checkpoint=(checkpoint, (str, os.PathLike)), task=(task, str),
                feature_lengths=(feature_lengths, abc.Mapping), batch_size=(batch_size, int),
                max_examples=(max_examples, (int, type(None))), output_dir=(output_dir, (str, os.PathLike, type(None))))
    check_at_least(owner, 1, batch_size=batch_size, max_examples=1 if max_examples is None else max_examples)
    if not os.fspath(checkpoint).strip():
        raise ConfigError(f"{owner}.checkpoint (CHECKPOINT) is empty")
    if output_dir and Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise ConfigError(f"{owner}.output_dir {output_dir} is a file, not a directory")


def _check_model(model, checkpoint: str, task: str, job: str, feature_lengths: Mapping[str, int],
                 decode: Optional[DecodeOptions] = None) -> None:
    """Whether the checkpoint's model can do ``job`` on ``task`` with these lengths: ``"evaluate"`` (decode for
    the task's metrics, or with none, its loss), ``"decode"`` or ``"score"``; checked before any params load."""
    import t5x_lite.tasks  # noqa: F401  (registers the task providers)
    from t5x_lite.data.pipeline import (check_task_fits, check_vocabulary_fits, checked_feature_lengths,
                                        describe_tokenizer)
    from t5x_lite.decoding.predict import check_decode_options
    from t5x_lite.training import checkpoints

    held = f"{checkpoint} holds a model of kind {model.kind}"
    if job == "score" and model.kind not in SCORES:
        raise ConfigError(f"{held}, which cannot score targets (only {', '.join(SCORES)} models can)")
    if job == "decode" and not can_decode(model):
        raise ConfigError(f"{held}, which cannot decode (only {DECODERS} can)")
    if job == "evaluate" and not can_decode(model):
        check_metrics_can_be_decoded(model, task, where=f"{checkpoint}: ")
        if model.kind == "encoder_only":
            raise ConfigError(f"{held}, a bare encoder with neither a loss nor a decoder to evaluate")
    converter = model.feature_converter()
    check_task_fits(task, checked_feature_lengths(feature_lengths, converter), converter, absent="warn")
    check_vocabulary_fits(task, model.config.vocab_size)
    trained_on, reads = checkpoints.recorded_tokenizer(checkpoint), describe_tokenizer(task)
    if trained_on is not None and trained_on != reads:
        raise ConfigError(f"{checkpoint} was trained on text tokenized by {trained_on}, and task {task!r} tokenizes "
                          f"with {reads}: register the task with the training run's vocabulary "
                          "(tasks.with_vocabulary)")
    if job == "decode" and decode is not None and decode.method != "sample" and not has_inputs(resolve_task(task)):
        log.warning("task %r has no inputs, so %s decoding writes the same unprompted text for every example; "
                    "sample (evaluation.DecodeOptions.method = 'sample') for different texts", task, decode.method)
    if decode is not None and can_decode(model) and model.kind != "encoder_only_classification":
        check_decode_options(model.config.vocab_size, method=decode.method, max_decode_length=decode.max_decode_length,
                             num_beams=decode.num_beams, alpha=decode.alpha, num_decodes=1,
                             temperature=decode.temperature, top_k=decode.top_k, top_p=decode.top_p)


def _output_paths(checkpoint: str, step: Optional[int], output_dir: Optional[str], overwrite: bool, sub: str,
                  *names: str) -> list[Path]:
    """``<dir>/<name>`` for each name, numbered together (``-2``, ``-3``...) past results already there
    unless ``overwrite``; the files are created empty, so a run beside this one takes the next number.

    The default directory is ``CHECKPOINT/<sub>``; for a training run (``MODEL_DIR``
    or ``MODEL_DIR/checkpoints/<step>``) it is ``MODEL_DIR/<sub>`` with the step in
    the names, since keeping the last K checkpoints deletes old step directories.
    """
    from t5x_lite.training import checkpoints

    path = Path(checkpoint).absolute()
    run_dir = path.parent.parent if checkpoints.is_run_step(path) else path
    tag = f"-step{step}" if step is not None else ""
    out = Path(output_dir) if output_dir else run_dir / sub
    out.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        numbered = tag + (f"-{n}" if n > 1 else "")
        paths = [out / (Path(name).stem + numbered + Path(name).suffix) for name in names]
        if overwrite:
            return paths
        created = []
        try:
            for p in paths:
                p.open("x").close()
                created.append(p)
            return paths
        except FileExistsError:
            for p in created:
                p.unlink()
        n += 1


def evaluate_checkpoint(
    *,
    checkpoint: str,
    task: str,
    feature_lengths: Mapping[str, int],
    split: str = "validation",
    batch_size: int = 16,
    decode: DecodeOptions = DecodeOptions(),
    max_examples: Optional[int] = None,
    output_dir: Optional[str] = None,
    overwrite: bool = False,
) -> dict:
    """Metrics JSON (``metrics-<task>-<split>.json``) and predictions JSONL in ``output_dir``, by default
    ``CHECKPOINT/eval`` (see the module docstring; numbered past earlier results there, unless ``overwrite``)."""
    from t5x_lite.training import checkpoints

    _check_settings("evaluate_checkpoint", checkpoint, task, feature_lengths, batch_size, max_examples, output_dir)
    checkpoint, output_dir = os.fspath(checkpoint), output_dir and os.fspath(output_dir)
    _check_model(checkpoints.load_model(checkpoint), checkpoint, task, "evaluate", feature_lengths, decode)
    model, params, step = checkpoints.load_params_and_step(checkpoint)
    metrics, rows = evaluate(model=model, params=params, task=task, split=split, feature_lengths=feature_lengths,
                             batch_size=batch_size, decode=decode, max_examples=max_examples)
    metrics_path, predictions_path = _output_paths(checkpoint, step, output_dir, overwrite, "eval",
                                                   f"metrics-{task}-{split}.json", f"predictions-{task}-{split}.jsonl")
    metrics_path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    if rows:
        write_jsonl(predictions_path, rows)
    else:  # a task with only the loss to report decodes nothing: no empty file to mistake for output
        predictions_path.unlink(missing_ok=True)
    return {"metrics": metrics, "output_dir": str(metrics_path.parent), "metrics_path": str(metrics_path),
            "predictions_path": str(predictions_path) if rows else None}


def infer_checkpoint(
    *,
    checkpoint: str,
    task: str,
    feature_lengths: Mapping[str, int],
    split: str = "validation",
    batch_size: int = 16,
    decode: DecodeOptions = DecodeOptions(),
    max_examples: Optional[int] = None,
    output_dir: Optional[str] = None,
    score_targets: bool = False,
    overwrite: bool = False,
) -> dict:
    """Predictions JSONL (inputs, targets, prediction, score), or with ``score_targets`` the
    log-likelihood of each given target (``scores-<task>-<split>.jsonl``)."""
    from t5x_lite.training import checkpoints

    _check_settings("infer_checkpoint", checkpoint, task, feature_lengths, batch_size, max_examples, output_dir)
    resolve_task(task)  # one task: a mixture is refused before the checkpoint loads
    checkpoint, output_dir = os.fspath(checkpoint), output_dir and os.fspath(output_dir)
    _check_model(checkpoints.load_model(checkpoint), checkpoint, task, "score" if score_targets else "decode",
                 feature_lengths, None if score_targets else decode)
    model, params, step = checkpoints.load_params_and_step(checkpoint)  # once the model is known to fit the job
    if score_targets:
        rows = score(model=model, params=params, task=task, split=split, feature_lengths=feature_lengths,
                     batch_size=batch_size, max_examples=max_examples)
        kind = "scores"
    else:
        rows = predict(model=model, params=params, task=task, split=split, feature_lengths=feature_lengths,
                       batch_size=batch_size, decode=decode, max_examples=max_examples)
        kind = "predictions"
    (path,) = _output_paths(checkpoint, step, output_dir, overwrite, "infer", f"{kind}-{task}-{split}.jsonl")
    write_jsonl(path, rows)
    return {"path": str(path), "num_examples": len(rows)}
