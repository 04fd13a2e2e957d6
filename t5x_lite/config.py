"""Gin at the edge: registration of configurables, search paths and parsing.

Gin files are found relative to the working directory, then any
``--gin_search_paths``, then this repository's ``gin_configs/``. Model files set
the ``MODEL`` macro (``MODEL = @models.EncoderDecoderModel()``) and size files
override only ``models.T5Config`` / ``models.BertConfig`` fields.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import inspect
import logging
import re
from pathlib import Path
from typing import Iterable, Sequence

import gin

from t5x_lite.models import config as model_config
from t5x_lite.models import model as model_lib

PACKAGE_ROOT = Path(__file__).resolve().parent
GIN_CONFIGS = PACKAGE_ROOT.parent / "gin_configs"

_REGISTERED = False


class GinConfigError(ValueError):
    """A gin file or binding that cannot be used; one line naming the file, line and key."""


def register_configurables() -> None:
    """Expose models, optimizers, partitioning and ``train`` to gin (idempotent).

    Namespaces: ``models.*``, ``optimizers.*``, ``partitioning.*`` and ``train``.
    """
    global _REGISTERED
    if _REGISTERED:
        return
    from t5x_lite.training import optimizers, partitioning
    from t5x_lite.training.train import train

    for cls in (model_config.T5Config, model_config.BertConfig, model_lib.EncoderDecoderModel,
                model_lib.DecoderOnlyModel, model_lib.EncoderOnlyModel, model_lib.EncoderOnlyMLMModel,
                model_lib.EncoderOnlyClassificationModel):
        gin.external_configurable(cls, module="models")
    for fn in (optimizers.make_optimizer, optimizers.make_schedule):
        gin.external_configurable(fn, module="optimizers")
    gin.external_configurable(partitioning.MeshConfig, module="partitioning")
    CONFIGURED["train"] = gin.external_configurable(train, name="train")
    from t5x_lite.evaluation.evaluate import DecodeOptions
    from t5x_lite.evaluation.run import evaluate_checkpoint, infer_checkpoint

    gin.external_configurable(DecodeOptions, module="evaluation")
    CONFIGURED["eval"] = gin.external_configurable(evaluate_checkpoint, name="evaluate_checkpoint")
    CONFIGURED["infer"] = gin.external_configurable(infer_checkpoint, name="infer_checkpoint")
    _REGISTERED = True


CONFIGURED: dict = {}  # gin-wrapped entry points, filled by register_configurables()


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
    try:
        with _quiet_include_probing():
            gin.parse_config_files_and_bindings(resolved, list(bindings), finalize_config=finalize)
    except (ValueError, TypeError, SyntaxError, IOError) as e:
        raise GinConfigError(explain_gin_error(e)) from e


def explain_gin_error(error: BaseException) -> str:
    """gin's multi-line message -> one line: what, where (file:line), and a close match if any."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    what = lines[0] if lines else type(error).__name__
    where = ""
    for ln in lines[1:]:
        m = re.match(r'In file "(.+)", line (\d+)', ln)
        if m:
            where = f"{m.group(1)}:{m.group(2)}: "
            break
        m = re.match(r"In bindings string line (\d+)", ln)
        if m:
            where = "binding: "
    hint = _suggestion(what)
    return f"{where}{what}{hint}"


def _suggestion(message: str) -> str:
    registry = gin.config._REGISTRY
    m = re.search(r"No configurable matching '([^']+)'", message)
    if m:
        names = {sel.split(".")[-1] for sel in registry._selector_map} | set(registry._selector_map)
        close = difflib.get_close_matches(m.group(1), sorted(names), n=1)
        return f"; did you mean '{close[0]}'?" if close else ""
    m = re.search(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'", message)
    if m:
        try:
            fn = registry.get_match(m.group(1)).wrapped
            params = list(inspect.signature(fn).parameters)
        except Exception:
            return ""
        close = difflib.get_close_matches(m.group(2), params, n=1)
        return f"; did you mean '{close[0]}'?" if close else f"; its parameters: {', '.join(params)}"
    return ""


def evaluate_reference(value):
    """A queried gin value that is a macro reference (``%MODEL_DIR``) -> its value."""
    if isinstance(value, gin.config.ConfigurableReference):
        return value.scoped_configurable_fn()
    return value


def flag_bindings(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """``--gin.KEY=VALUE`` flags as gin bindings; bare strings need no t5x-style escaped quotes."""
    return [f"{key} = {_as_gin_literal(value)}" for key, value in pairs]


_LITERAL = re.compile(r"""^(-?\d+(\.\d*)?([eE][-+]?\d+)?|True|False|None|['"@%(\[{].*)$""", re.S)


def _as_gin_literal(value: str) -> str:
    value = value.strip()
    return value if _LITERAL.match(value) else repr(value)


_REQUIRED = re.compile(r"^#\s*REQUIRED:\s*(.+)$")


def required_macros(gin_files: Sequence[str], extra_search_paths: Sequence[str] = ()) -> dict[str, str]:
    """Macros that the given files (and the files they include) list in a ``# REQUIRED:`` header."""
    out: dict[str, str] = {}
    seen: set[str] = set()

    def visit(name: str) -> None:
        try:
            path = resolve_gin_file(name, extra_search_paths)
        except FileNotFoundError:
            return
        if path in seen:
            return
        seen.add(path)
        for line in Path(path).read_text().splitlines():
            m = _REQUIRED.match(line.strip())
            if m:
                for macro in re.split(r"[,\s]+", m.group(1).strip()):
                    if macro:
                        out.setdefault(macro, path)
            inc = re.match(r"""^include\s+['"](.+)['"]""", line.strip())
            if inc:
                visit(inc.group(1))

    for f in gin_files:
        visit(f)
    return out


def check_required_macros(gin_files: Sequence[str], extra_search_paths: Sequence[str] = ()) -> None:
    """One error listing every REQUIRED macro left unset, with the file that requires it."""
    missing = []
    for macro, path in required_macros(gin_files, extra_search_paths).items():
        try:
            gin.query_parameter(f"%{macro}")
        except ValueError:
            missing.append(f"{macro} (required by {path})")
    if missing:
        raise GinConfigError("missing REQUIRED macro" + ("s" if len(missing) > 1 else "") + ": "
                             + "; ".join(missing) + " -- set it in an experiment file or with --gin.NAME=VALUE")


def _guard_namespace_packages() -> None:
    """Work around gin-config 0.5.0: its package-resource reader crashes (TypeError) when an
    include path's directory is a namespace package, e.g. ``experiments/x.gin`` run from a
    checkout with a top-level ``experiments/`` folder. Report "not found" instead, as gin
    does for any other non-package, so the search paths are tried next.
    """
    from gin import resource_reader

    original = resource_reader._parse_config_path
    if getattr(original, "_t5x_lite_guarded", False):
        return

    def parse_config_path(config_path: str) -> str:
        try:
            return original(config_path)
        except TypeError as e:
            raise ValueError("Package has no file location", config_path) from e

    parse_config_path._t5x_lite_guarded = True
    resource_reader._parse_config_path = parse_config_path


_guard_namespace_packages()


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
