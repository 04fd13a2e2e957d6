"""Parameter checkpoints (orbax) with the model's gin config written beside them.

A params checkpoint directory holds ``params/`` (an orbax PyTree checkpoint, loop
layout), ``model.gin`` (rebuilds the model wrapper) and ``t5x_lite.json`` (kind
and format version). ``t5x_lite convert`` writes this layout; training
checkpoints restore params from it for fine-tuning.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import jax
import numpy as np

FORMAT_VERSION = 1
META_FILE = "t5x_lite.json"
MODEL_GIN = "model.gin"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the path."""


def check_new_params_directory(directory: str | Path) -> Path:
    """``directory`` (absolute) if ``save_params`` may write there: never over a checkpoint or a training run."""
    directory = Path(directory).absolute()
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"{directory}: is a file, not a directory")
    held = [name for name in (MODEL_GIN, META_FILE, "params", "checkpoints") if (directory / name).exists()]
    if held:
        # load_params reads params/ ahead of a run's checkpoints/: writing here would hide or replace them.
        raise CheckpointError(f"{directory}: already holds {', '.join(held)} (a checkpoint or training run); "
                              "refusing to overwrite it: give a new or empty directory")
    return directory


def save_params(directory: str | Path, params: Any, model) -> Path:
    import orbax.checkpoint as ocp

    directory = check_new_params_directory(directory)
    directory.mkdir(parents=True, exist_ok=True)
    host_params = jax.tree_util.tree_map(np.asarray, model.to_loop_layout(params))
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory / "params", host_params)
        checkpointer.wait_until_finished()
    write_model_description(directory, model)
    return directory


def write_model_description(directory: str | Path, model, tokenizer: Optional[str] = None) -> None:
    """``model.gin`` + ``t5x_lite.json`` beside a run's checkpoints, so the directory describes itself; with the
    ``tokenizer`` its training text went through (``pipeline.describe_tokenizer``), for eval to check."""
    from t5x_lite.config import model_to_gin

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write_atomically(directory / MODEL_GIN, model_to_gin(model))
    meta = {"format_version": FORMAT_VERSION, "kind": model.kind}
    if tokenizer is not None:
        meta["tokenizer"] = tokenizer
    _write_atomically(directory / META_FILE, json.dumps(meta, indent=2) + "\n")


def recorded_tokenizer(directory: str | Path) -> Optional[str]:
    """The tokenizer a run trained with, as ``write_model_description`` recorded it (None: not recorded, as for a
    converted checkpoint or one written before runs recorded it)."""
    path = _located(directory)[0] / META_FILE
    try:
        return json.loads(path.read_text()).get("tokenizer")
    except (OSError, ValueError):
        return None


def _write_atomically(path: Path, text: str) -> None:
    """Write ``path`` so that a reader (another host resuming the run) sees the old text or the new, never half."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    os.replace(partial, path)


class _DropMissingItemMetadata(logging.Filter):
    """orbax warns on every restore that a checkpoint item (``<step>/state``) has no metadata file of its
    own: the step has it, so this layout is normal, and the warning only hides the messages that matter."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Metadata file does not exist")


def _drop_orbax_layout_noise() -> None:
    from absl import logging as absl_logging  # absl's own logger: a plain getLogger("absl") would pre-empt it

    logger = absl_logging.get_absl_logger()
    if not any(isinstance(f, _DropMissingItemMetadata) for f in logger.filters):
        logger.addFilter(_DropMissingItemMetadata())


def _first_line(error: Exception) -> str:
    """An orbax/tensorstore error without the kilobyte of store spec it appends, with its cause (orbax
    wraps tensorstore's "Error reading <array> ...: <what is wrong>" in a message that says neither)."""
    def short(e: BaseException) -> str:
        text = re.split(r" \[tensorstore_spec=|\.? See full TensorStore details", str(e), maxsplit=1)[0].strip()
        return text.splitlines()[0] if text else type(e).__name__

    cause = error.__cause__
    return f"{short(error)}: {short(cause)}" if cause is not None and str(cause).strip() else short(error)


def _quiet_restore() -> None:
    """Before a restore: keep orbax's expected noise off the console, so real warnings stand out."""
    _drop_orbax_layout_noise()
    _quiet_reads_left_in_flight()


def _quiet_reads_left_in_flight() -> None:
    """Before a restore, drop the "Event loop is closed" tracebacks a failed one's leftover reads would print.

    orbax stops at the first array that fails and closes its event loop while
    tensorstore's reads of the other arrays are still running; each one that
    completes later calls back into the closed loop, and Python prints a
    traceback per read after the real, already reported error. Installed
    before the restore, as those reads may finish before its error is caught.
    Only that exact error is dropped; everything else reaches the previous hook.
    """
    previous = sys.unraisablehook
    if getattr(previous, "drops_closed_loop_callbacks", False):
        return

    def hook(unraisable):
        error = unraisable.exc_value
        if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
            previous(unraisable)

    hook.drops_closed_loop_callbacks = True
    sys.unraisablehook = hook


def _located(directory: str | Path) -> tuple[Path, Optional[int]]:
    """(the checkpoint directory, the step asked for or None) for a params checkpoint, a MODEL_DIR or one
    of its steps (``MODEL_DIR/checkpoints/<step>``)."""
    directory = Path(directory).absolute()
    if not directory.exists():
        raise CheckpointError(f"{directory}: does not exist")
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: is a file, not a checkpoint directory")
    if is_run_step(directory):
        return directory.parent.parent, int(directory.name)
    return directory, None


def is_run_step(directory: str | Path) -> bool:
    """Whether ``directory`` is one step of a training run, ``MODEL_DIR/checkpoints/<step>``: by its place
    beside the run's model.gin, not by its name alone (``exports/checkpoints/2024`` may be anything)."""
    directory = Path(directory).absolute()
    return (directory.name.isdigit() and directory.parent.name == "checkpoints"
            and not (directory / META_FILE).exists() and (directory.parent.parent / MODEL_GIN).exists())


def _model_of(directory: Path):
    from t5x_lite.config import model_from_gin

    for name in (META_FILE, MODEL_GIN):
        if not (directory / name).exists():
            raise CheckpointError(f"{directory}: not a t5x_lite checkpoint ({name} is missing)")
    model = model_from_gin([str(directory / MODEL_GIN)])
    # prefix_lm's default (True) is the dangerous one: a causal LM would be fed a prefix LM's features
    if model.kind == "decoder_only" and ".prefix_lm = " not in (directory / MODEL_GIN).read_text():
        import logging

        logging.getLogger(__name__).warning(
            "%s was written before model.gin recorded prefix_lm; reading it as a prefix LM. For a causal LM add "
            "'models.DecoderOnlyModel.prefix_lm = False' to it", directory / MODEL_GIN)
    return model


def records_wrapper(directory: str | Path, model) -> bool:
    """Whether ``directory``'s model.gin records the wrapper's own fields (``prefix_lm``, the loss options); an
    older one holds only the config, and rebuilding it fills the wrapper's fields with their defaults.

    Every wrapper has ``z_loss``, and model_to_gin writes each field, so its line tells.
    """
    return f"models.{type(model).__name__}.z_loss = " in (Path(directory) / MODEL_GIN).read_text()


def load_model(directory: str | Path):
    """The model a checkpoint's ``model.gin`` rebuilds, without reading its params (to check it first)."""
    return _model_of(_located(directory)[0])


def load_params(directory: str | Path):
    """(model, params) from a params checkpoint, a training MODEL_DIR (its newest readable
    checkpoint) or one of its steps (``MODEL_DIR/checkpoints/<step>``).

    Params come back in the model's own layout (loop or scan, per its config).
    """
    model, params, _ = load_params_and_step(directory)
    return model, params


def load_params_and_step(directory: str | Path):
    """``load_params``, plus the training step the params are from (None for a params checkpoint)."""
    import orbax.checkpoint as ocp

    directory, step = _located(directory)
    model = _model_of(directory)
    if step is not None:
        return (model, *_training_params(directory, [step], model))
    if (directory / "params").exists():
        _quiet_restore()
        try:
            with ocp.StandardCheckpointer() as checkpointer:
                params = checkpointer.restore(directory / "params")
        except Exception as e:  # orbax raises several types for damaged files
            raise CheckpointError(f"{directory / 'params'}: cannot restore ({_first_line(e)})") from e
        params = jax.tree_util.tree_map(np.asarray, params)
        if model.kind == "encoder_only" and "pooler" not in params.get("bert", {}) and model.pooler:
            # converted from a BertModel saved without one, before model.gin recorded `pooler`
            model = model.replace(pooler=False)
        _check_params_fit(directory / "params", directory / MODEL_GIN, model, params, loop_layout=True)
        return model, model.from_loop_layout(params), None
    runs = directory / "checkpoints"
    steps = sorted(int(p.name) for p in runs.iterdir() if p.name.isdigit()) if runs.is_dir() else []
    if not steps:
        raise CheckpointError(f"{directory}: holds no params/ and no checkpoints/<step>/ to read params from")
    return (model, *_training_params(directory, steps[::-1], model))


def _training_params(model_dir: Path, steps: list[int], model) -> tuple[Any, int]:
    """(params, step) of the first readable step in ``steps``; a damaged one is skipped with a warning, as on
    resume."""
    import logging

    import orbax.checkpoint as ocp

    errors = []
    for step in steps:
        path = model_dir / "checkpoints" / str(step) / "state"
        _quiet_restore()
        try:
            with warnings.catch_warnings():
                # Restoring to host memory on purpose; orbax warns that it reads the saved sharding instead.
                warnings.filterwarnings("ignore", message="Sharding info not provided")
                with ocp.PyTreeCheckpointer() as checkpointer:
                    state = checkpointer.restore(path)
        except Exception as e:  # orbax raises several types for damaged files
            errors.append(f"{path}: cannot restore ({_first_line(e)})")
            if len(steps) > 1:
                logging.getLogger(__name__).warning("%s; trying the previous step", errors[-1])
            continue
        # Training checkpoints store params in the model's own layout already.
        params = jax.tree_util.tree_map(np.asarray, state["params"])
        _check_params_fit(path, model_dir / MODEL_GIN, model, params, loop_layout=False)
        return params, step
    raise CheckpointError(errors[0] if len(errors) == 1 else f"{model_dir}: no readable checkpoint ({errors[0]})")


def _check_params_fit(where: Path, model_gin: Path, model, params, loop_layout: bool) -> None:
    """CheckpointError naming the first parameter whose shape differs from what ``model_gin`` builds.

    Without it an edited model.gin fails much later, as a flax shape error at the first apply.
    Parameters only one side has are left alone: a converted BERT keeps a pooler its MLM
    wrapper does not use, and fine-tuning may initialize a new head
    (``train.init_checkpoint_allow_missing``).
    """
    import flax.linen as nn

    if loop_layout:
        model = model.replace(config=model.config.replace(scan_layers=False))
    abstract = model.abstract_params(model.dummy_batch(1, {"inputs": 1, "targets": 1}))
    stored, wanted = _layout(params), _layout(nn.unbox(abstract))
    reshaped = sorted(k for k in set(stored) & set(wanted) if stored[k] != wanted[k])
    if not reshaped:
        return
    what = f"{reshaped[0]} has shape {stored[reshaped[0]]} there and {wanted[reshaped[0]]} in the model"
    raise CheckpointError(f"{model_gin} does not match the params in {where} ({what}); model.gin must be "
                          "the one written with them")


# ----------------------------------------------------------------- training checkpoints


class TrainCheckpointer:
    """Orbax checkpoints of the whole run: train state + the data iterator's state, per step.

    Saves are asynchronous (training continues while the files are written) and
    atomic (orbax writes a temporary directory and renames it when complete, so
    a killed save leaves no half checkpoint behind). ``restore`` tries the
    newest step first and falls back to older ones if a checkpoint cannot be
    read, with a warning naming it.
    """

    def __init__(self, directory: str | Path, *, keep: int = 3, async_save: bool = True):
        import orbax.checkpoint as ocp

        if not isinstance(keep, int) or keep < 1:  # orbax's 0 keeps nothing: every checkpoint deleted
            raise CheckpointError(f"keep={keep!r}: keep at least 1 checkpoint")
        self.directory = Path(directory).absolute() / "checkpoints"
        self._ocp = ocp
        self._options = dict(keep=keep, async_save=async_save)
        self.manager = self._open()

    def _open(self):
        ocp = self._ocp
        return ocp.CheckpointManager(
            self.directory,
            item_names=("state", "data"),
            options=ocp.CheckpointManagerOptions(max_to_keep=self._options["keep"], create=True,
                                                 enable_async_checkpointing=self._options["async_save"]),
        )

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self):
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, state: Any, data_state: dict) -> None:
        args = self._ocp.args
        self.manager.save(int(step), args=args.Composite(state=args.StandardSave(state),
                                                         data=args.JsonSave(data_state)), force=True)

    def restore(self, abstract_state: Any):
        """(state, data_state, step) from the newest readable checkpoint, or None if there is none.

        An unreadable checkpoint is moved aside to ``<step>.unreadable`` (kept, never
        deleted) so the run can write that step again. A readable one that holds a
        differently shaped state (the model or optimizer changed since it was
        written) is a ``CheckpointError`` naming the first difference: starting
        over would bury that run under this one's checkpoints.
        """
        import logging

        args = self._ocp.args
        unreadable = []
        result = None
        wanted = _layout(abstract_state)
        _quiet_restore()
        with self._ocp.StandardCheckpointer() as metadata_reader:  # one reader, closed after the loop
            steps = self.steps()
            for step in reversed(steps):
                stored = self._stored_layout(metadata_reader, step)
                if stored is not None:
                    _check_layout(self.directory / str(step), stored, wanted)
                try:
                    restored = self.manager.restore(step, args=args.Composite(
                        state=args.StandardRestore(abstract_state), data=args.JsonRestore()))
                    result = (restored["state"], restored["data"], step)
                    break
                except Exception as e:  # a damaged checkpoint: say which, and use the one before it
                    logging.getLogger(__name__).warning(
                        "checkpoint %s is unreadable (%s: %s); %s", self.directory / str(step), type(e).__name__,
                        _first_line(e),
                        "trying the previous one" if step != steps[0] else "there is no older one")
                    unreadable.append(step)
        if unreadable:
            self.manager.close()
            if jax.process_index() == 0:  # one process renames (a shared file system); the others wait for it
                for step in unreadable:
                    (self.directory / str(step)).rename(_free_name(self.directory / f"{step}.unreadable"))
            if jax.process_count() > 1:
                from jax.experimental import multihost_utils

                multihost_utils.sync_global_devices("t5x_lite: unreadable checkpoints moved aside")
            self.manager = self._open()
        set_aside = sorted(p.name for p in self.directory.glob("*.unreadable*"))
        if result is None and set_aside:
            # Starting over would quietly throw the run's progress away: let the user decide.
            raise CheckpointError(f"{self.directory}: no readable checkpoint left ({', '.join(set_aside)} could not "
                                  "be read and were moved aside); to start this run over, move them out of "
                                  "the directory")
        return result

    def _stored_layout(self, reader, step: int):
        """Path -> shape of the state saved at ``step``, from orbax's metadata; None if that is unreadable."""
        try:
            metadata = reader.metadata(self.directory / str(step) / "state")
            layout = _layout(getattr(metadata, "item_metadata", metadata))
        except Exception:  # damaged metadata: restore() then reports the checkpoint as unreadable
            return None
        return layout or None  # garbage metadata reads as an empty tree

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _free_name(path: Path) -> Path:
    """``path``, or ``path.1``, ``path.2``, ... if a step was found unreadable before (never overwrite one)."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


def _layout(tree: Any) -> dict:
    """Leaf path ("opt_state/0/v_row/...") -> shape; orbax's metadata and the abstract state spell paths alike."""
    return {jax.tree_util.keystr(path, simple=True, separator="/"): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _check_layout(where: Path, stored: dict, wanted: dict) -> None:
    if stored == wanted:
        return
    missing = sorted(set(wanted) - set(stored))
    extra = sorted(set(stored) - set(wanted))
    reshaped = sorted(k for k in set(stored) & set(wanted) if stored[k] != wanted[k])
    if reshaped:
        k = reshaped[0]
        what = f"{k} has shape {stored[k]} there and {wanted[k]} in this run"
    elif missing:
        what = f"it has no {missing[0]}" + (f" ({len(missing)} leaves missing)" if len(missing) > 1 else "")
    else:
        what = f"it has {extra[0]}, which this run does not" + (f" ({len(extra)} such leaves)" if len(extra) > 1 else "")
    raise CheckpointError(
        f"{where}: the checkpoint holds a different train state than this run builds ({what}); the model or "
        "optimizer changed since it was written. Resume with the configuration in MODEL_DIR/config.gin, use "
        "a new MODEL_DIR, or fine-tune from it with INITIAL_CHECKPOINT")
