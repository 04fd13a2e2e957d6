"""Parameter checkpoints (orbax) with the model's gin config written beside them.

A params checkpoint directory holds ``params/`` (an orbax PyTree checkpoint, loop
layout), ``model.gin`` (rebuilds the model wrapper) and ``t5x_lite.json`` (kind
and format version). ``t5x_lite convert`` writes this layout; training
checkpoints restore params from it for fine-tuning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

FORMAT_VERSION = 1
META_FILE = "t5x_lite.json"
MODEL_GIN = "model.gin"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the path."""


def save_params(directory: str | Path, params: Any, model) -> Path:
    import orbax.checkpoint as ocp

    from t5x_lite.config import model_to_gin

    directory = Path(directory).absolute()
    target = directory / "params"
    if target.exists():
        raise CheckpointError(f"{target}: already exists; refusing to overwrite a checkpoint")
    directory.mkdir(parents=True, exist_ok=True)
    host_params = jax.tree_util.tree_map(np.asarray, model.to_loop_layout(params))
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(target, host_params)
    checkpointer.wait_until_finished()
    (directory / MODEL_GIN).write_text(model_to_gin(model))
    (directory / META_FILE).write_text(
        json.dumps({"format_version": FORMAT_VERSION, "kind": model.kind}, indent=2) + "\n"
    )
    return directory


def load_params(directory: str | Path):
    """(model, params) from a params checkpoint; params in the model's own layout."""
    import orbax.checkpoint as ocp

    from t5x_lite.config import model_from_gin

    directory = Path(directory).absolute()
    for name in (META_FILE, MODEL_GIN, "params"):
        if not (directory / name).exists():
            raise CheckpointError(f"{directory}: not a t5x_lite params checkpoint ({name} is missing)")
    model = model_from_gin([str(directory / MODEL_GIN)])
    try:
        params = ocp.StandardCheckpointer().restore(directory / "params")
    except Exception as e:  # orbax raises several types for damaged files
        raise CheckpointError(f"{directory / 'params'}: cannot restore ({e})") from e
    params = jax.tree_util.tree_map(np.asarray, params)
    return model, model.from_loop_layout(params)
