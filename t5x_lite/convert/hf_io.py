"""Read and write Hugging Face model directories (config.json + weights) as NumPy.

No hub access: a directory on disk only. Weights come from ``model.safetensors``
(or sharded ``model-*.safetensors`` with an index) or ``pytorch_model.bin``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np


class HFDirectoryError(ValueError):
    """A Hugging Face directory that cannot be read; the message names the file."""


def read_config(directory: str | Path) -> dict:
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise HFDirectoryError(f"{path}: not found (a Hugging Face model directory needs config.json)")
    config = _read_json(path)
    if not isinstance(config, dict):
        raise HFDirectoryError(f"{path}: expected a JSON object of settings, got a {type(config).__name__}")
    return config


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f" at line {e.lineno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else f" ({e})"
        raise HFDirectoryError(f"{path}: invalid JSON{where}") from e


def read_state_dict(directory: str | Path) -> dict[str, np.ndarray]:
    """All tensors of the checkpoint as float32/int NumPy arrays, keyed by HF names."""
    directory = Path(directory)
    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    bin_path = directory / "pytorch_model.bin"
    if single.is_file():
        return _read_safetensors([single])
    if index.is_file():
        return _read_safetensors([directory / s for s in _shards(index)])
    if bin_path.is_file():
        return _read_torch_bin(bin_path)
    raise HFDirectoryError(
        f"{directory}: no weights found (expected model.safetensors, model.safetensors.index.json "
        "or pytorch_model.bin)"
    )


def _shards(index: Path) -> list[str]:
    """The shard files an index's ``weight_map`` (tensor name -> file name) points at."""
    weight_map = _read_json(index)
    weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise HFDirectoryError(f"{index}: no 'weight_map' object (tensor name -> shard file)")
    bad = [f for f in weight_map.values() if not isinstance(f, str) or not f or Path(f).name != f]
    if bad:
        raise HFDirectoryError(f"{index}: 'weight_map' names {bad[0]!r}, not a file name in {index.parent}")
    return sorted(set(weight_map.values()))


def _read_safetensors(paths) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    out: dict[str, np.ndarray] = {}
    for path in paths:
        try:
            # The torch framework reads bfloat16 too; NumPy has no bfloat16.
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    out[key] = _to_numpy(f.get_tensor(key))
        except Exception as e:  # safetensors raises several types for a damaged file
            raise HFDirectoryError(f"{path}: cannot read safetensors file ({e})") from e
    return out


def _read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise HFDirectoryError(f"{path}: cannot read PyTorch checkpoint ({e})") from e
    return {k: _to_numpy(v) for k, v in state.items()}


def _to_numpy(t) -> np.ndarray:
    import torch

    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    return t.detach().cpu().numpy()


# What a Hugging Face directory's model consists of; a second one written beside it would mix with it.
MODEL_FILES = ("config.json", "*.safetensors", "*.bin", "*.index.json")


def check_new_directory(directory: str | Path) -> Path:
    """``directory`` if a model can be written there: refuses a file or a directory that already holds one."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise HFDirectoryError(f"{directory}: is a file, not a directory")
    held = sorted({p.name for pattern in MODEL_FILES for p in directory.glob(pattern)}) if directory.is_dir() else []
    if held:
        raise HFDirectoryError(f"{directory}: already holds a model ({', '.join(held[:3])}); refusing to "
                               "overwrite it: give a new or empty directory")
    return directory


def write_directory(directory: str | Path, config: Mapping, state: Mapping[str, np.ndarray]) -> None:
    """Write config.json and model.safetensors (contiguous float32 tensors) into a new or empty directory."""
    from safetensors.numpy import save_file

    directory = check_new_directory(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: np.ascontiguousarray(np.asarray(v)) for k, v in state.items()}
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(dict(config), indent=2, sort_keys=True) + "\n")
