"""Gin at the edge: registration of configurables, search paths and parsing.

Gin files are found relative to the working directory, then any
``--gin_search_paths``, then this repository's ``gin_configs/``. Model files set
the ``MODEL`` macro (``MODEL = @models.EncoderDecoderModel()``) and size files
override only ``models.T5Config`` / ``models.BertConfig`` fields.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Iterable, Sequence

import gin

from t5x_lite.models import config as model_config
from t5x_lite.models import model as model_lib

PACKAGE_ROOT = Path(__file__).resolve().parent
GIN_CONFIGS = PACKAGE_ROOT.parent / "gin_configs"

_REGISTERED = False


def register_configurables() -> None:
    """Expose the model configs and wrappers to gin under the ``models.`` namespace (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    for cls in (model_config.T5Config, model_config.BertConfig, model_lib.EncoderDecoderModel,
                model_lib.DecoderOnlyModel, model_lib.EncoderOnlyModel, model_lib.EncoderOnlyMLMModel,
                model_lib.EncoderOnlyClassificationModel):
        gin.external_configurable(cls, module="models")
    _REGISTERED = True


@gin.configurable(module="t5x_lite")
def selected_model(model=gin.REQUIRED):
    """Gin hook whose ``model`` argument is bound to the ``MODEL`` macro."""
    return model


def search_paths(extra: Iterable[str] = ()) -> list[str]:
    return [str(Path.cwd()), *[str(Path(p)) for p in extra], str(GIN_CONFIGS)]


def parse(
    gin_files: Sequence[str],
    bindings: Sequence[str] = (),
    extra_search_paths: Sequence[str] = (),
    *,
    finalize: bool = True,
) -> None:
    """Clear gin, then parse files (resolved on the search paths) and bindings."""
    register_configurables()
    gin.clear_config()
    for path in search_paths(extra_search_paths):
        gin.add_config_file_search_path(path)
    resolved = [resolve_gin_file(f, extra_search_paths) for f in gin_files]
    with _quiet_include_probing():
        gin.parse_config_files_and_bindings(resolved, list(bindings), finalize_config=finalize)


class _DropPathNotFound(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Path not found")


@contextlib.contextmanager
def _quiet_include_probing():
    """gin logs an ERROR for every search path an ``include`` misses before it hits; drop those."""
    root = logging.getLogger()
    flt = _DropPathNotFound()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def resolve_gin_file(name: str, extra_search_paths: Sequence[str] = ()) -> str:
    candidate = Path(name)
    if candidate.is_absolute():
        if candidate.is_file():
            return str(candidate)
        raise FileNotFoundError(f"gin file not found: {name}")
    for root in search_paths(extra_search_paths):
        full = Path(root) / name
        if full.is_file():
            return str(full)
    raise FileNotFoundError(f"gin file not found: {name} (searched {', '.join(search_paths(extra_search_paths))})")


def model_from_gin(gin_files: Sequence[str], bindings: Sequence[str] = (), extra_search_paths: Sequence[str] = ()):
    """Parse model gin files and build the ``MODEL`` they define."""
    parse(gin_files, [*bindings, "t5x_lite.selected_model.model = %MODEL"], extra_search_paths, finalize=False)
    return selected_model()


def _gin_value(v) -> str:
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, tuple):
        inner = ", ".join(_gin_value(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    return repr(v)


def model_to_gin(model) -> str:
    """Gin text that rebuilds ``model`` exactly (written beside converted checkpoints)."""
    cfg = model.config
    cfg_name = type(cfg).__name__
    lines = [
        f"# {type(model).__name__} written by t5x_lite; include it like any model gin file.",
        f"MODEL = @models.{type(model).__name__}()",
        f"models.{type(model).__name__}.config = @models.{cfg_name}()",
    ]
    for field in dataclasses.fields(cfg):
        lines.append(f"models.{cfg_name}.{field.name} = {_gin_value(getattr(cfg, field.name))}")
    return "\n".join(lines) + "\n"
