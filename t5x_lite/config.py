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
import importlib.util
import inspect
import logging
import re
import tokenize
from pathlib import Path
from typing import Iterable, Sequence

import gin
from gin import config_parser

from t5x_lite.errors import ConfigError
from t5x_lite.models import config as model_config
from t5x_lite.models import model as model_lib

PACKAGE_ROOT = Path(__file__).resolve().parent
GIN_CONFIGS = PACKAGE_ROOT.parent / "gin_configs"

_REGISTERED = False


class GinConfigError(ConfigError):
    """A gin file or binding that cannot be used; one line naming the file, line and key."""


def register_configurables() -> None:
    """Expose models, optimizers, partitioning, task vocabularies and ``train`` to gin (idempotent).

    Namespaces: ``models.*``, ``optimizers.*``, ``partitioning.*``, ``tasks.*`` and ``train``.
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
    from t5x_lite import tasks
    from t5x_lite.data.wordpiece import WordPieceVocabulary

    gin.external_configurable(WordPieceVocabulary, module="tasks")
    gin.external_configurable(tasks.with_vocabulary, module="tasks")
    CONFIGURED["train"] = gin.external_configurable(train, name="train")
    from t5x_lite.evaluation.evaluate import DecodeOptions
    from t5x_lite.evaluation.run import evaluate_checkpoint, infer_checkpoint

    gin.external_configurable(DecodeOptions, module="evaluation")
    CONFIGURED["eval"] = gin.external_configurable(evaluate_checkpoint, name="evaluate_checkpoint")
    CONFIGURED["infer"] = gin.external_configurable(infer_checkpoint, name="infer_checkpoint")
    from t5x_lite.evaluation.submission import submit_checkpoint

    CONFIGURED["submit"] = gin.external_configurable(submit_checkpoint, name="submit_checkpoint")
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
    bindings: Sequence[str | tuple[str, str]] = (),
    extra_search_paths: Sequence[str] = (),
    *,
    finalize: bool = True,
) -> GinSources:
    """Clear gin, then parse files (resolved on the search paths) and bindings.

    A binding is gin text, or ``(label, text)`` where the label names its origin
    in errors (``--gin.TRAIN_STEPS``). Every file (includes too) and binding is
    syntax-checked on its own first, so an error names the right one; what that
    scan read is returned for ``check_macros``.
    """
    register_configurables()
    gin.clear_config()
    for path in search_paths(extra_search_paths):
        gin.add_config_file_search_path(path)
    resolved = [resolve_gin_file(f, extra_search_paths) for f in gin_files]
    sources = scan_sources(resolved, bindings, extra_search_paths)
    try:
        with _quiet_include_probing():
            gin.parse_config_files_and_bindings(resolved, [_text(b) for b in bindings], finalize_config=finalize)
    except (ValueError, TypeError, SyntaxError, IOError, ImportError) as e:
        raise GinConfigError(explain_gin_error(e, [_label(b) for b in bindings],
                                               [_text(b) for b in bindings])) from e
    return sources


def _text(binding: str | tuple[str, str]) -> str:
    return binding[1] if isinstance(binding, tuple) else binding


def _label(binding: str | tuple[str, str]) -> str:
    return binding[0] if isinstance(binding, tuple) else f"binding {binding!r}"


@dataclasses.dataclass
class GinSource:
    """What one gin file or binding sets and uses, read without binding anything."""

    label: str  # the file's path, or the flag a binding came from
    is_file: bool
    macros_set: dict[str, int] = dataclasses.field(default_factory=dict)  # name -> line
    # (name, line, the binding it is in): a binding set again later leaves its macros unused
    macros_used: list[tuple[str, int, str]] = dataclasses.field(default_factory=list)
    required: list[str] = dataclasses.field(default_factory=list)  # its "# REQUIRED:" header
    # In file order: ("include", resolved path or None, line) or ("bind", key, line), key as "scope/train.task"
    statements: list[tuple] = dataclasses.field(default_factory=list)

    def where(self, line: int) -> str:
        return f"{self.label}:{line}" if self.is_file else self.label


class _MacroRecorder(config_parser.ParserDelegate):
    def __init__(self):
        self.used: list[str] = []

    def configurable_reference(self, scoped_configurable_name, evaluate):
        return None

    def macro(self, macro_name):
        self.used.append(macro_name)
        return None


def _scan(text: str, label: str, is_file: bool) -> GinSource:
    source = GinSource(label, is_file)
    recorder = _MacroRecorder()
    parser = config_parser.ConfigParser(text, recorder)
    last_line = 0
    try:
        for statement in parser:
            line = statement.location.line_num
            if isinstance(statement, config_parser.IncludeStatement):
                source.statements.append(("include", statement.filename, line))
            key = ""
            if isinstance(statement, config_parser.BindingStatement):
                scoped = f"{statement.scope}/{statement.selector}" if statement.scope else statement.selector
                key = f"{scoped}.{statement.arg_name}" if statement.arg_name else scoped
                source.statements.append(("bind", key, line))
                if not statement.arg_name:
                    source.macros_set.setdefault(scoped, line)
            source.macros_used.extend((name, line, key) for name in recorder.used)
            recorder.used.clear()
            last_line = line
    except SyntaxError as e:
        location = e.args[1] if len(e.args) > 1 else None
        line = getattr(location, "line_num", None) or e.lineno or last_line + 1
        # The statement's first line: gin reports the line inside a value written over several.
        before = text.splitlines()[:line]
        statement = next((ln for ln in reversed(before) if "=" in ln), before[-1] if before else "")
        raise GinConfigError(f"{source.where(line)}: {_readable(str(e.args[0]).splitlines()[0], statement)}") from e
    except tokenize.TokenError as e:  # the text ended inside brackets or a string
        raise GinConfigError(f"{source.where(_unclosed_line(text, e))}: a bracket or quote opened on this "
                             "line is never closed") from e
    if is_file:
        for line in text.splitlines():
            m = _REQUIRED.match(line.strip())
            if m:
                source.required += [name for name in re.split(r"[,\s]+", m.group(1).strip()) if name]
    return source


def _unclosed_line(text: str, error: tokenize.TokenError) -> int:
    """The line of the bracket (or string) left open when tokenizing reached the end of ``text``."""
    if "string" in str(error.args[0]):
        return error.args[1][0]  # tokenize reports where an unterminated triple-quoted string starts
    opened: list[int] = []
    try:
        for token in tokenize.generate_tokens(iter(text.splitlines(keepends=True)).__next__):
            if token.type == tokenize.OP and token.string in "([{":
                opened.append(token.start[0])
            elif token.type == tokenize.OP and token.string in ")]}" and opened:
                opened.pop()
    except (tokenize.TokenError, StopIteration):
        pass
    return opened[0] if opened else error.args[1][0]


class GinSources(list):
    """The scanned sources, each once, plus ``applied``: the top-level ones in the order gin applies them (the
    ``--gin_file`` list as given, repeats included, then the bindings)."""

    applied: list[GinSource]


def scan_sources(gin_files: Sequence[str], bindings: Sequence[str | tuple[str, str]] = (),
                 extra_search_paths: Sequence[str] = ()) -> GinSources:
    """Every file (with the files it includes, once each, in the order first met) and binding, scanned.

    Each source's ``statements`` name the files it includes by resolved path, so
    ``applied_order`` can replay the order gin applies them in. A syntax error,
    an unclosed bracket, an include cycle or a file that is not UTF-8 text is a
    ``GinConfigError`` naming the file and line, or the binding's flag. An
    include that cannot be found is left for gin to report.
    """
    sources = GinSources()
    sources.applied = []
    seen: dict[str, GinSource] = {}
    opened: list[str] = []  # the include chain being read, to name a cycle (gin would recurse without end)

    def visit(name: str, by: GinSource | None = None, line: int = 0) -> str | None:
        try:
            path = resolve_gin_file(name, extra_search_paths)
        except FileNotFoundError:
            return None
        if path in opened:
            raise GinConfigError(f"{by.where(line)}: include '{name}' is a cycle ("
                                 + " -> ".join(opened[opened.index(path):] + [path]) + ")")
        if path in seen:
            return path
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise GinConfigError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})") from e
        seen[path] = source = _scan(text, path, is_file=True)
        sources.append(source)
        opened.append(path)
        _resolve_includes(source, visit)
        opened.pop()
        return path

    for f in gin_files:
        path = visit(f)
        if path:
            sources.applied.append(seen[path])
    for binding in bindings:
        source = _scan(_text(binding), _label(binding), is_file=False)
        sources.append(source)
        sources.applied.append(source)
        _resolve_includes(source, visit)  # gin takes ``include`` in a binding too
    return sources


def _resolve_includes(source: GinSource, visit) -> None:
    source.statements = [("include", visit(s[1], source, s[2]), s[2]) if s[0] == "include" else s
                         for s in source.statements]


def applied_order(sources: GinSources) -> list[tuple[GinSource, str, int]]:
    """Every binding as gin applies it: (source, key, line), an ``include`` replayed where it stands, each time.

    gin parses an included file at its ``include`` statement, again at every
    ``include`` of it, so the binding gin keeps for a key is the last in this
    replay, not the last file's.
    """
    by_path = {s.label: s for s in sources if s.is_file}
    applied: list[tuple[GinSource, str, int]] = []

    def apply(source: GinSource) -> None:
        for statement in source.statements:
            if statement[0] == "bind":
                applied.append((source, statement[1], statement[2]))
            elif statement[1] in by_path:  # scan_sources refused cycles
                apply(by_path[statement[1]])

    for source in sources.applied:
        apply(source)
    return applied


def explain_gin_error(error: BaseException, binding_labels: Sequence[str] = (),
                      binding_texts: Sequence[str] = ()) -> str:
    """gin's multi-line message -> one line: what, where (file:line or flag), and a close match if any."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    what = lines[0] if lines else type(error).__name__
    where = ""
    location = error.args[1] if isinstance(error, SyntaxError) and len(error.args) > 1 else None
    if getattr(location, "filename", None):  # the full path, where gin's message has only the base name
        what = re.sub(r"\s*\([^()]*, line \d+\)$", "", str(error.args[0]).splitlines()[0])
        hint = _suggestion(what)
        return f"{location.filename}:{location.line_num}: {what.rstrip('.') if hint else what}{hint}"
    for ln in lines[1:]:
        m = re.match(r'In file "(.+)", line (\d+)', ln)
        if m:
            where = f"{m.group(1)}:{m.group(2)}: "
            break
        m = re.match(r"In bindings string line (\d+)", ln)
        if m:
            where = f"{_binding_at(int(m.group(1)), binding_labels, binding_texts)}: "
    what = _readable(what)
    hint = _suggestion(what)
    missing = re.match(r"No module named '([\w.]+)'", what)  # gin's re-raise drops the error's .name
    if isinstance(error, ModuleNotFoundError) and missing and re.search(
            rf"^\s*(from|import)\s+{re.escape(missing.group(1))}\b", str(error), re.M) \
            and importlib.util.find_spec(missing.group(1).split(".")[0]) is None:  # the gin file's own, not found
        hint = (" (gin imports modules as Python does: run from the directory that holds it, or add that "
                "directory to PYTHONPATH)")
    return f"{where}{what.rstrip('.') if hint else what}{hint}"


def _readable(message: str, statement: str = "") -> str:
    """``statement``, the gin line at fault where known, picks the hint."""
    if message.startswith("malformed node or string"):  # ast.literal_eval on e.g. [tmp]/run or {inputs: 8}
        if statement.partition("=")[2].strip().startswith("{"):
            return ("not a value gin can read (a dict's string keys and values need quotes: "
                    "{'inputs': 512, 'targets': 114})")
        return "not a value gin can read (a string that starts with a bracket needs quotes: --gin.KEY=\"'[...]'\")"
    return message


def _binding_at(line: int, labels: Sequence[str], texts: Sequence[str]) -> str:
    """gin joins the bindings with newlines: its line number -> the flag that binding came from."""
    first = 1
    for label, text in zip(labels, texts):
        last = first + text.count("\n")
        if first <= line <= last:
            return label
        first = last + 1
    return "binding"


def _suggestion(message: str) -> str:
    registry = gin.config._REGISTRY
    m = re.search(r"No configurable matching (?:reference )?'@?([^'(]+)(?:\(\))?'", message)
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
    for source in scan_sources(gin_files, (), extra_search_paths):
        for macro in source.required:
            out.setdefault(macro, source.label)
    return out


def check_required_macros(gin_files: Sequence[str], extra_search_paths: Sequence[str] = (),
                          bindings: Sequence[str | tuple[str, str]] = ()) -> None:
    """``check_macros`` for these files and bindings (``parse`` returns their scan, saving the re-read)."""
    check_macros(scan_sources(gin_files, bindings, extra_search_paths))


def check_macros(sources: GinSources) -> None:
    """Every REQUIRED macro set, every macro used set, every macro a binding sets used.

    One ``GinConfigError`` naming the file and line (or flag) at fault, with the
    closest macro name when there is one: a misspelled macro would otherwise be
    an unknown-argument error deep in gin, or an override that silently changes
    nothing.
    """
    applied = applied_order(sources)
    set_at = {key: source.where(line) for source, key, line in applied if key in source.macros_set}
    used = {name for source in sources for name, _, _ in source.macros_used}
    # gin reads a macro only when the binding that holds it is used, and a later statement replaces a binding.
    last = {key: (id(source), line) for source, key, line in applied}

    def live_uses(source: GinSource):
        return [(name, line) for name, line, key in source.macros_used
                if not key or last.get(key, (id(source), line)) == (id(source), line)]

    missing: dict[str, str] = {}
    required = {macro for source in sources for macro in source.required}
    for source in sources:
        for macro in source.required:
            if macro not in set_at and macro not in missing:
                missing[macro] = (f"{macro} (required by {source.label}"
                                  f"{_unused_match(macro, set_at, used, required)})")
    if missing:
        raise GinConfigError("missing REQUIRED macro" + ("s" if len(missing) > 1 else "") + ": "
                             + "; ".join(missing.values())
                             + " -- set it in an experiment file or with --gin.NAME=VALUE")

    def is_set(name: str) -> bool:  # a scoped use (%scope/X) falls back to the unscoped X, as in gin
        return name in set_at or name.rsplit("/", 1)[-1] in set_at

    for source in sources:
        for name, line in live_uses(source):
            if not is_set(name) and not gin.config._CONSTANTS.matching_selectors(name):
                close = difflib.get_close_matches(name, sorted(set(set_at) - {name}), n=1)
                hint = f"; did you mean %{close[0]} (set at {set_at[close[0]]})?" if close else ""
                raise GinConfigError(f"{source.where(line)}: macro %{name} is used but never set{hint}")

    used_base = {name.rsplit("/", 1)[-1] for source in sources for name, _ in live_uses(source)}
    set_by_files = {name: source.where(line) for source in sources if source.is_file
                    for name, line in source.macros_set.items()}
    for source in sources:
        if source.is_file:
            continue
        for name in source.macros_set:
            if name.rsplit("/", 1)[-1] in used_base:
                continue
            if name in set_by_files:  # e.g. an objective file's PRETRAIN_TASK where --gin.TASK is set too
                raise GinConfigError(f"{source.label}: nothing uses the macro {name} (set at {set_by_files[name]}"
                                     + (", used only in bindings set again later" if name in used else "")
                                     + "), so this changes nothing")
            close = difflib.get_close_matches(name, sorted((used | set(set_at)) - {name}), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise GinConfigError(f"{source.label}: no gin file sets or uses the macro {name}, "
                                 f"so this changes nothing{hint}")


def _unused_match(macro: str, set_at: dict, used: set, required: set = frozenset()) -> str:
    unused = sorted(n for n in set_at if n not in used)
    # An objective file's PRETRAIN_TASK is meant for TASK (TASK = %PRETRAIN_TASK), not a misspelling of another.
    meant = [n for n in unused if n.endswith("_" + macro)]
    if meant:
        return f"; {meant[0]} is set at {set_at[meant[0]]} but never used: {macro} = %{meant[0]}?"
    candidates = [n for n in unused if not any(n.endswith("_" + r) for r in required)]
    close = difflib.get_close_matches(macro, candidates, n=1)
    return f"; {close[0]} is set at {set_at[close[0]]} but never used: a misspelling?" if close else ""


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
    raise FileNotFoundError(f"gin file not found: {name} (searched {', '.join(search_paths(extra_search_paths))})"
                            f"{_close_gin_file(name, extra_search_paths)}")


def _close_gin_file(name: str, extra_search_paths: Sequence[str]) -> str:
    if not name.endswith(".gin"):
        try:
            return f"; did you mean {resolve_gin_file(name + '.gin', extra_search_paths)}?"
        except FileNotFoundError:
            pass
    known = set()
    for root in [*extra_search_paths, str(GIN_CONFIGS)]:  # not the working directory: it may be anything
        known.update(str(p.relative_to(root)) for p in Path(root).glob("**/*.gin"))
    if "/" not in name:  # given without its folder
        wanted = name if name.endswith(".gin") else name + ".gin"
        same_name = sorted(k for k in known if Path(k).name == wanted)
        if same_name:
            return f"; did you mean {' or '.join(same_name[:3])}?"
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
    return f"; did you mean {close[0]}?" if close else ""


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
    name = type(model).__name__
    lines = [
        f"# {name} written by t5x_lite; include it like any model gin file.",
        f"MODEL = @models.{name}()",
        f"models.{name}.config = @models.{cfg_name}()",
    ]
    # The wrapper's own settings too: a causal LM (prefix_lm=False) or a training loss's options
    # must come back as they were, or eval would feed it a prefix LM's features.
    for field in dataclasses.fields(model):
        if field.name != "config":
            lines.append(f"models.{name}.{field.name} = {_gin_value(getattr(model, field.name))}")
    for field in dataclasses.fields(cfg):
        lines.append(f"models.{cfg_name}.{field.name} = {_gin_value(getattr(cfg, field.name))}")
    return "\n".join(lines) + "\n"
