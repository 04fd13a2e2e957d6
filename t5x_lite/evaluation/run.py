"""Entry points for ``t5x_lite eval`` and ``t5x_lite infer``: a checkpoint in, files out.

The checkpoint is any t5x_lite checkpoint directory: a training ``MODEL_DIR``
(its newest step) or a ``t5x_lite convert`` output; the model is rebuilt from
the ``model.gin`` beside it, so no model gin file is needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional

from t5x_lite.evaluation.evaluate import DecodeOptions, evaluate, predict, score, write_jsonl


def _output_dir(checkpoint: str, output_dir: Optional[str], sub: str) -> Path:
    out = Path(output_dir) if output_dir else Path(checkpoint) / sub
    out.mkdir(parents=True, exist_ok=True)
    return out


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
) -> dict:
    """Metrics JSON (``metrics-<task>-<split>.json``) and predictions JSONL in ``output_dir``."""
    from t5x_lite.training import checkpoints

    model, params = checkpoints.load_params(checkpoint)
    metrics, rows = evaluate(model=model, params=params, task=task, split=split, feature_lengths=feature_lengths,
                             batch_size=batch_size, decode=decode, max_examples=max_examples)
    out = _output_dir(checkpoint, output_dir, "eval")
    (out / f"metrics-{task}-{split}.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    write_jsonl(out / f"predictions-{task}-{split}.jsonl", rows)
    return {"metrics": metrics, "output_dir": str(out)}


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
) -> dict:
    """Predictions JSONL (inputs, targets, prediction, score), or with ``score_targets`` the
    log-likelihood of each given target (``scores-<task>-<split>.jsonl``)."""
    from t5x_lite.training import checkpoints

    model, params = checkpoints.load_params(checkpoint)
    out = _output_dir(checkpoint, output_dir, "infer")
    if score_targets:
        rows = score(model=model, params=params, task=task, split=split, feature_lengths=feature_lengths,
                     batch_size=batch_size, max_examples=max_examples)
        path = out / f"scores-{task}-{split}.jsonl"
    else:
        rows = predict(model=model, params=params, task=task, split=split, feature_lengths=feature_lengths,
                       batch_size=batch_size, decode=decode, max_examples=max_examples)
        path = out / f"predictions-{task}-{split}.jsonl"
    write_jsonl(path, rows)
    return {"path": str(path), "num_examples": len(rows)}
