"""``train(...)``: the training loop as a plain keyword-only function (gin wraps it in the CLI).

Usable from a notebook without gin::

    from t5x_lite.training.train import train
    train(model=model, task="bundled_corpus_span_3_15_u_u", feature_lengths={"inputs": 128, "targets": 32},
          batch_size=32, train_steps=1000, model_dir="/tmp/run", optimizer=make_optimizer("adafactor_t5", ...))

A ``model_dir`` that already holds checkpoints resumes from the newest readable
one: train state and data iterator state, so no batch is replayed or skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
from collections import abc
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import jax
import numpy as np
import optax

from t5x_lite.data.sources import DataError
from t5x_lite.errors import ConfigError, check_at_least, check_types
from t5x_lite.training import checkpoints, partitioning
from t5x_lite.training.run_lock import LOCK_FILE, run_lock
from t5x_lite.training.trainer import Trainer

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, a checkpoint that does not fit); says what and where."""


@dataclasses.dataclass
class TrainResult:
    step: int
    metrics: dict
    model_dir: str


def _all_hosts(count: int, slices: int) -> int:
    """``count`` summed over the ``slices`` of the batch (each process counts its own rows; processes that
    share a slice, tensor parallelism over hosts, count the same rows)."""
    if jax.process_count() == 1:
        return count
    from jax.experimental import multihost_utils

    total = int(np.sum(multihost_utils.process_allgather(np.asarray(count, np.int64))))
    return total * slices // jax.process_count()


def _token_count(batch: Mapping[str, np.ndarray]) -> int:
    """Non-padding tokens the model reads in this host batch (inputs + targets)."""
    total = 0
    for key in ("encoder_input_tokens", "decoder_target_tokens", "input_tokens"):
        if key in batch:
            total += int(np.count_nonzero(np.asarray(batch[key])))
    return total


def _restore_params_only(path: str, model: Any, abstract_params: Any, initialized: Any,
                         allow_missing: tuple = ()) -> tuple[Any, list[str], list[str]]:
    """Params from a checkpoint (ours or converted), in ``model``'s layout, shape-checked against it; the
    ``allow_missing`` prefixes it kept fresh; and the checkpoint's params the model has no place for.

    A model param absent from the checkpoint is an error unless its path starts
    with one of ``allow_missing`` (a new head, e.g. ``classifier``): those keep
    their fresh initialization.
    """
    saved_by, params = checkpoints.load_params(path)
    # Another family would fail on a missing parameter at best, or (a decoder-only model from an encoder-decoder
    # checkpoint, whose decoder has every param it needs) silently drop half the checkpoint.
    if _family(saved_by.kind) != _family(model.kind):
        raise TrainingError(f"{path}: holds a model of kind {saved_by.kind!r}, and this run builds one of kind "
                            f"{model.kind!r}: give a checkpoint of the same kind of model")
    if saved_by.config.scan_layers != model.config.scan_layers:  # same weights, other tree: loop <-> scan
        params = model.from_loop_layout(saved_by.to_loop_layout(params))
    have_leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    flat_have = {jax.tree_util.keystr(k): v for k, v in have_leaves}
    flat_want, treedef = jax.tree_util.tree_flatten_with_path(abstract_params)
    flat_init = jax.tree_util.tree_leaves(initialized)
    leaves, fresh = [], []
    for (key, want), init in zip(flat_want, flat_init):
        name = jax.tree_util.keystr(key)
        plain = jax.tree_util.keystr(key, simple=True, separator="/")
        if name not in flat_have:
            prefix = next((p for p in allow_missing if plain.startswith(p)), None)
            if prefix is not None:
                if prefix not in fresh:
                    fresh.append(prefix)
                leaves.append(init)
                continue
            raise TrainingError(f"{path}: parameter {plain} is missing (the checkpoint is for another model; "
                                "a new head can be listed in train.init_checkpoint_allow_missing)")
        have = flat_have[name]
        if tuple(have.shape) != tuple(want.shape):
            raise TrainingError(f"{path}: parameter {plain} has shape {tuple(have.shape)}, "
                                f"the model needs {tuple(want.shape)}")
        leaves.append(jax.device_put(np.asarray(have, want.dtype), init.sharding))
    # What the checkpoint has and this model does not (an MLM head, a deeper model's extra layers): said, not
    # silently dropped.
    wanted = {jax.tree_util.keystr(key) for key, _ in flat_want}
    unused = []
    for key, _ in have_leaves:
        if jax.tree_util.keystr(key) not in wanted:
            module = jax.tree_util.keystr(key[:2 if len(key) > 2 else 1], simple=True, separator="/")
            if module not in unused:
                unused.append(module)
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(abstract_params), leaves), fresh, unused


def _remove_if_refused_at_start(model_dir: Path, found: Optional[set], exc_type, *unused) -> None:
    """A run refused before it wrote anything takes back the lock file and the empty ``checkpoints/`` it
    made (and ``model_dir``, if it made that too), so a mistyped setting leaves no run-like directory.
    Runs while the lock is still held (run_lock relocks a file deleted under it); removes nothing but empty
    directories and the lock file."""
    if exc_type is None:
        return
    with contextlib.suppress(OSError):
        made = set(os.listdir(model_dir)) - (found or set())
        if not made <= {"checkpoints", LOCK_FILE}:
            return  # it got further than the start: keep everything for the post-mortem
        if "checkpoints" in made:
            (model_dir / "checkpoints").rmdir()  # only if empty
        if LOCK_FILE in made:
            (model_dir / LOCK_FILE).unlink()
        if found is None:
            model_dir.rmdir()  # only if empty


def _family(kind: str) -> str:
    """Kinds whose params one can start from another's: a BERT classifier from an MLM-pretrained encoder."""
    return "encoder_only" if kind.startswith("encoder_only") else kind


def train(
    *,
    model: Any,
    task: str,
    feature_lengths: Mapping[str, int],
    batch_size: int,
    train_steps: int,
    model_dir: str,
    optimizer: optax.GradientTransformation,
    learning_rate_fn: Optional[Callable[[Any], Any]] = None,
    seed: int = 0,
    pack: bool = False,
    num_microbatches: Optional[int] = None,
    mesh: partitioning.MeshConfig = partitioning.MeshConfig(),
    partitioning_strategy: str = "data_parallel",
    logical_axis_rules: Optional[tuple] = None,
    checkpoint_every: int = 1000,
    keep_checkpoints: int = 3,
    async_checkpointing: bool = True,
    log_every: int = 100,
    init_checkpoint: Optional[str] = None,
    init_checkpoint_allow_missing: tuple = (),
    use_dropout: bool = True,
    progress: bool = True,
    step_callback: Optional[Callable[[int, dict], None]] = None,
    eval_task: Optional[str] = None,
    eval_every: int = 0,
    eval_split: str = "validation",
    eval_max_examples: Optional[int] = None,
    eval_decode: Optional[Any] = None,
    config_text: Optional[str] = None,
) -> TrainResult:
    """Train ``model`` on ``task`` for ``train_steps`` steps of ``batch_size`` (global) examples.

    ``init_checkpoint`` (fine-tuning) restores params only from a params checkpoint
    (``t5x_lite convert`` output or a training MODEL_DIR) and starts a fresh optimizer;
    it is ignored when ``model_dir`` already holds a checkpoint to resume from.

    ``eval_task`` with ``eval_every`` > 0 evaluates every N steps and at the end:
    validation loss plus the task's decode-based metrics (``eval_decode``, an
    ``evaluation.DecodeOptions``), logged as ``eval/...`` beside the training metrics.

    ``config_text`` (the CLI passes its gin config) is written to
    ``model_dir/config.gin``, and ``model.gin`` beside it, only once the state is
    restored or initialized: a run refused for a bad setting or a checkpoint
    that does not fit leaves an existing run's files as they were.
    """
    from t5x_lite.data.pipeline import check_vocabulary_fits, checked_feature_lengths, describe_tokenizer, get_dataset
    from t5x_lite.training.flops import train_flops_per_example
    from t5x_lite.training.metrics import MetricsWriter, ProgressBar, StepTimer, summarize_metrics

    import t5x_lite.tasks  # noqa: F401  (registers the task providers)

    check_types("train", batch_size=(batch_size, int), train_steps=(train_steps, int), model_dir=(model_dir, str),
                task=(task, str), seed=(seed, int), checkpoint_every=(checkpoint_every, int),
                keep_checkpoints=(keep_checkpoints, int), log_every=(log_every, int), pack=(pack, bool),
                eval_every=(eval_every, int), num_microbatches=(num_microbatches, (int, type(None))),
                feature_lengths=(feature_lengths, abc.Mapping))
    check_at_least("train", 1, batch_size=batch_size, train_steps=train_steps, checkpoint_every=checkpoint_every,
                   keep_checkpoints=keep_checkpoints, log_every=log_every, num_microbatches=num_microbatches or 1)
    check_at_least("train", 0, eval_every=eval_every)
    if not model_dir.strip():
        raise ConfigError("train.model_dir is empty; give the directory for checkpoints and metrics")
    if Path(model_dir).exists() and not Path(model_dir).is_dir():
        raise ConfigError(f"train.model_dir {model_dir} exists and is not a directory")
    if init_checkpoint is not None and not str(init_checkpoint).strip():
        raise ConfigError("train.init_checkpoint is empty; give the checkpoint to fine-tune from, or None")
    model_dir = str(Path(model_dir).absolute())
    rules = tuple(logical_axis_rules) if logical_axis_rules else partitioning.rules_for(partitioning_strategy)
    device_mesh = partitioning.make_mesh(mesh)
    _check_batch_divides(batch_size, num_microbatches or 1, partitioning.batch_shards(device_mesh, rules))
    trainer = Trainer(model=model, optimizer=optimizer, mesh=device_mesh, rules=rules,
                      base_rng=jax.random.key(seed), learning_rate_fn=learning_rate_fn,
                      num_microbatches=num_microbatches, use_dropout=use_dropout)
    shard = trainer.data_shard  # which rows this process feeds; an irregular mesh is refused here

    converter = model.feature_converter(pack)
    feature_lengths = checked_feature_lengths(feature_lengths, converter)
    check_vocabulary_fits(task, model.config.vocab_size)
    if eval_task and eval_every > 0:
        _check_eval_task(model, eval_task, feature_lengths)
    # Rows of padding would cost real steps: refused, unless the eval_task needs the length (said, then).
    absent = "warn" if eval_task and eval_every > 0 else "error"
    dataset, truncation = get_dataset(task, split="train", feature_lengths=feature_lengths, batch_size=batch_size,
                                      converter=converter, seed=seed, pack=pack, absent=absent, shard=shard)
    data_iter = iter(dataset)
    first_batch = next(data_iter)  # also tells the step its shapes
    _check_shared_rows(first_batch, shard)
    shardings = trainer.state_shardings(first_batch)
    trainer.precompile_step(first_batch)  # compiles while the checkpoint restores or init runs

    # What the checkpoint must agree with to continue this run's data and rng streams exactly.
    run_info = {"seed": seed, "rng": np.asarray(jax.random.key_data(trainer.base_rng)).ravel().tolist(),
                "task": task, "tokenizer": describe_tokenizer(task), "pack": pack, "batch_size": batch_size,
                "feature_lengths": feature_lengths, "processes": jax.process_count(), "data_slices": shard[1]}
    found = set(os.listdir(model_dir)) if os.path.isdir(model_dir) else None
    with contextlib.ExitStack() as cleanup:
        # One run per MODEL_DIR, released however this ends. Only the lock's holder may tidy up after a refusal:
        # without a lock (a file system without flock), ``found`` may predate another run's start.
        if cleanup.enter_context(run_lock(model_dir)):
            cleanup.push(functools.partial(_remove_if_refused_at_start, Path(model_dir), found))
        ckpt = checkpoints.TrainCheckpointer(model_dir, keep=keep_checkpoints, async_save=async_checkpointing)
        cleanup.callback(ckpt.close)
        abstract = trainer.sharded_abstract_state(first_batch)
        restored = ckpt.restore(abstract)
        unused_batch = first_batch  # a fresh run trains on it; a resumed one reads on from its saved position
        if restored is not None:
            state, saved, start = restored
            _check_same_model(Path(model_dir), model)
            data_iter, unused_batch = iter(dataset), None
            _restore_data_position(data_iter, _resumable_data_state(saved, run_info, ckpt.directory / str(start),
                                                                    shard), ckpt.directory / str(start))
            start_note = f"resumed from {ckpt.directory / str(start)}"
        else:
            state = trainer.init(seed, first_batch)
            start_note = f"initialized from scratch (seed {seed})"
            if init_checkpoint:
                _warn_if_other_tokenizer(init_checkpoint, run_info["tokenizer"])
                params, fresh, unused = _restore_params_only(init_checkpoint, model, abstract.params, state.params,
                                                     tuple(init_checkpoint_allow_missing))
                state = jax.device_put(trainer.fresh_state(params), shardings)
                start_note = (f"initialized from {init_checkpoint}"
                              + (f"; new, from scratch: {', '.join(fresh)}" if fresh else "")
                              + (f"; not used from the checkpoint: {', '.join(unused)}" if unused else ""))
            start = 0
        if start > train_steps:
            raise TrainingError(f"{ckpt.directory} holds step {start}, past train_steps={train_steps}; "
                                f"give train_steps > {start} to train further")
        if jax.process_index() == 0:
            checkpoints.write_model_description(model_dir, model, run_info["tokenizer"])
            if config_text is not None:
                (Path(model_dir) / "config.gin").write_text(config_text)

        flops = _flops(train_flops_per_example, model, converter, feature_lengths)
        writer = MetricsWriter(Path(model_dir) / "train", every_n_steps=log_every, resume_step=start,
                               enabled=jax.process_index() == 0)
        bar = ProgressBar(train_steps, initial_step=start, print_every=log_every,
                          disable=None if progress else True)
        log.info(start_note)
        if progress and jax.process_index() == 0 and start < train_steps:
            bar.write(start_note)
        # Rates over the steps since the previous log line; the clock starts once this process's first step
        # (which waits for its compile) is done, so no logged rate includes compiling.
        timer = StepTimer(window=1)
        window: list = []
        window_tokens = 0
        counted = {"truncated_tokens": 0, "dropped_examples": 0, "skipped_examples": 0}
        truncation_noted = False  # said once on the console; metrics.jsonl counts it at every log step
        last_good = ckpt.latest_step()
        pending = None
        metrics_out: dict = {}
        step = start
        try:
            while step < train_steps:
                host_batch, unused_batch = (next(data_iter) if unused_batch is None else unused_batch), None
                window_tokens += _token_count(host_batch)
                state, metrics = trainer.step(state, trainer.global_batch(host_batch))
                step += 1
                if step == start + 1:
                    jax.block_until_ready(metrics)
                    timer.mark(step)
                    window_tokens = 0
                # Check the previous step's loss while this one runs (keeps dispatch asynchronous).
                if pending is not None:
                    _check_finite(pending, step - 1, last_good, model_dir)
                pending = metrics
                window.append(metrics)
                timer_due = step % log_every == 0 or step == train_steps
                if timer_due:
                    jax.block_until_ready(metrics)
                    _check_finite(metrics, step, last_good, model_dir)
                    timer.mark(step, _all_hosts(window_tokens, shard[1]))
                    window_tokens = 0
                    metrics_out = summarize_metrics(window)
                    window = []
                    metrics_out.update(_throughput(timer.summary(), flops, batch_size, model.config.dtype))
                    # Since the previous log line, as the pipeline read them (it reads a few batches ahead).
                    counts = truncation.as_dict()
                    for name in counted:
                        total = int(sum(counts[name].values()))
                        metrics_out[name], counted[name] = float(total - counted[name]), total
                    if counted["truncated_tokens"] and not truncation_noted:
                        truncation_noted = True
                        note = _truncation_note(counts)
                        if jax.process_index() != 0:  # each host counts its own rows; the console is process 0's
                            log.info(note)
                        elif progress:
                            log.info(note)
                            bar.write(note)
                        else:
                            log.warning(note)
                    writer.write(step, {f"train/{k}": v for k, v in metrics_out.items()}, force=True)
                    bar.update(step, metrics_out)
                    if step_callback is not None:
                        step_callback(step, metrics_out)
                if eval_task and eval_every > 0 and (step % eval_every == 0 or step == train_steps):
                    eval_metrics = _run_eval(model, state.params, eval_task, eval_split, feature_lengths, batch_size,
                                             eval_max_examples, eval_decode, trainer.mesh, trainer.rules)
                    writer.write(step, {f"eval/{k}": v for k, v in eval_metrics.items()}, force=True)
                    metrics_out.update({f"eval_{k}": v for k, v in eval_metrics.items()})
                    bar.write(f"eval at step {step}: " + ", ".join(
                        f"{k} {v:.4g}" for k, v in eval_metrics.items() if isinstance(v, (int, float))))
                    timer.reset()  # the next interval starts when the evaluation ends
                    timer.mark(step)
                    window_tokens = 0
                if step % checkpoint_every == 0 or step == train_steps:
                    jax.block_until_ready(metrics)
                    _check_finite(metrics, step, last_good, model_dir)
                    ckpt.save(step, state, {"iterators": _every_process({"shard": list(shard),
                                                                         "iterator": data_iter.get_state()}),
                                            "run": run_info})
                    last_good = step
        finally:
            writer.close()
            bar.close()
    return TrainResult(step=step, metrics=metrics_out, model_dir=model_dir)


def _truncation_note(counts: dict) -> str:
    cut = ", ".join(f"{feature} in {n:,} ({counts['truncated_tokens'][feature]:,} tokens)"
                    for feature, n in counts["truncated_examples"].items())
    return (f"truncated so far, of {counts['examples']:,} examples read: {cut}. Longer TASK_FEATURE_LENGTHS keep "
            "them; train/truncated_tokens counts the tokens lost per log step")


_SAME_STREAM = ("seed", "rng", "task", "pack")  # changed, the resumed run would not continue the same run

# Config fields that change how the model runs, regularizes, was initialized or names its classes, not the
# function its params compute.
_HOW_IT_RUNS = ("dtype", "remat_policy", "attention_impl", "scan_layers", "dropout_rate", "attention_dropout_rate",
                "classifier_dropout_rate", "initializer_range", "label_names", "float32_logits", "broadcast_dropout")


def _check_same_model(model_dir: Path, model) -> None:
    """The model resuming a run must be the one ``model.gin`` says trained its checkpoints.

    A changed architecture with unchanged shapes (another activation, another
    relative_attention_max_distance or layer-norm epsilon, a causal LM for a
    prefix LM) restores without any shape error and
    would train on as a different function; it is refused. Dropout, dtype,
    remat, attention kernel and the loss options may change: a warning says so.
    """
    if not (model_dir / checkpoints.MODEL_GIN).exists():
        return
    where = model_dir / checkpoints.MODEL_GIN
    try:
        before = checkpoints.load_model(model_dir)
    except Exception as e:  # noqa: BLE001  (an edited or foreign model.gin: say so, do not guess)
        raise TrainingError(f"{where}: cannot rebuild the model that trained these checkpoints ({e}); restore "
                            "the file, or use a new MODEL_DIR") from e
    if type(before) is not type(model) or type(before.config) is not type(model.config):
        raise TrainingError(f"{where}: these checkpoints were trained by a {type(before).__name__}, and this run "
                            f"builds a {type(model).__name__}; use a new MODEL_DIR (fine-tune from this one with "
                            "INITIAL_CHECKPOINT)")
    changed = {f.name: (getattr(before.config, f.name), getattr(model.config, f.name))
               for f in dataclasses.fields(model.config)
               if getattr(before.config, f.name) != getattr(model.config, f.name)}
    if checkpoints.records_wrapper(model_dir, before):
        changed.update({f.name: (getattr(before, f.name), getattr(model, f.name)) for f in dataclasses.fields(model)
                        if f.name != "config" and getattr(before, f.name) != getattr(model, f.name)})
    shown = lambda names: ", ".join(f"{n} {changed[n][0]!r} -> {changed[n][1]!r}" for n in names)  # noqa: E731
    fatal = [n for n in changed if n not in _HOW_IT_RUNS + ("z_loss", "label_smoothing", "loss_normalizer")]
    if fatal:
        raise TrainingError(f"{where}: this run's model differs from the one that trained these checkpoints "
                            f"({shown(fatal)}); resume with the same model, or use a new MODEL_DIR (fine-tune from "
                            "this one with INITIAL_CHECKPOINT)")
    if changed:
        log.warning("resuming %s with %s", model_dir, shown(changed))


def _warn_if_other_tokenizer(init_checkpoint: str, tokenizer: str) -> None:
    before = checkpoints.recorded_tokenizer(init_checkpoint)
    if before is not None and before != tokenizer:
        log.warning("%s was trained on text tokenized by %s; this run's task tokenizes with %s, so the same ids "
                    "mean other text (register the task with the same vocabulary: tasks.with_vocabulary)",
                    init_checkpoint, before, tokenizer)


def _resumable_data_state(saved: Mapping[str, Any], run_info: Mapping[str, Any], where: Path,
                          shard: tuple[int, int] = (0, 1)) -> Any:
    """The data iterator's state from a checkpoint, once its run's settings are checked against this run's.

    The checkpoint's rng and data position belong to its seed and task: another
    seed would silently change dropout and the data order, another task would
    read a position in a different dataset. A new batch size or lengths only
    warns: the data continue from the same example.
    """
    if "iterator" not in saved and "iterators" not in saved:  # written before checkpoints held the run's settings
        return saved
    before = saved.get("run", {})
    for key in run_info:
        if key not in before or before[key] == run_info[key]:
            continue
        if key == "rng":  # same seed, other key: jax's PRNG implementation (jax_default_prng_impl) differs
            raise TrainingError(f"{where}: was written with another JAX PRNG implementation (its rng key "
                                f"{before[key]}, this run's {run_info[key]}); resume with the same "
                                "jax_default_prng_impl, or use a new MODEL_DIR")
        if key == "tokenizer":
            raise TrainingError(f"{where}: was trained on text tokenized by {before[key]}, and this run's task "
                                f"{run_info['task']!r} tokenizes with {run_info[key]}; resume with the same "
                                "tokenizer (tasks.with_vocabulary), or use a new MODEL_DIR")
        if key in _SAME_STREAM:
            raise TrainingError(f"{where}: was written by a run with train.{key}={before[key]!r}, and this run "
                                f"has {run_info[key]!r}; resume with the same {key}, or use a new MODEL_DIR "
                                "(fine-tune from this one with INITIAL_CHECKPOINT)")
        setting = {"processes": "the number of processes",
                   "data_slices": "the number of data slices (the mesh changed)"}.get(key, f"train.{key}")
        log.warning("resuming %s with %s=%r (the checkpoint's run had %r); the data continue from the same "
                    "example%s", where, setting, run_info[key], before[key],
                    ", but each host now reads another share of them" if key in ("processes", "data_slices")
                    else "")
    if "iterators" not in saved:  # one position, written before each process's was kept
        return saved["iterator"]
    # The position of the slice this process feeds, as a process that fed it saved it. With other slices (a new
    # mesh or number of processes) every process takes the first one's, so that processes sharing a slice
    # still read the same rows.
    states = saved["iterators"]
    same = [s["iterator"] for s in states if tuple(s["shard"]) == tuple(shard)]
    return same[0] if same else states[0]["iterator"]


def _check_shared_rows(batch: Mapping[str, Any], shard: tuple[int, int], allgather: Optional[Callable] = None
                       ) -> None:
    """Processes that feed one slice of the batch (a model axis across hosts) must feed the same rows: the
    global array takes each process's word for them, and different rows would train different replicas of one
    model apart, silently. Checked once, on the first batch, by a digest of each process's rows."""
    if allgather is None:
        if shard[1] == jax.process_count():  # a slice per process: nothing is shared
            return
        from jax.experimental import multihost_utils

        allgather = multihost_utils.process_allgather
    digest = hashlib.sha256()
    for key in sorted(batch):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(np.asarray(batch[key])).tobytes())
    mine = int(np.frombuffer(digest.digest()[:4], np.int32)[0])  # 32 bits: JAX gathers int32 without x64
    rows = np.asarray(allgather(np.asarray([jax.process_index(), shard[0], mine], np.int32))).reshape(-1, 3)
    for index in sorted(set(rows[:, 1].tolist())):
        feeders = sorted(int(p) for p, i, _ in rows if i == index)
        if len({int(d) for _, i, d in rows if i == index}) > 1:
            raise DataError(f"processes {feeders} feed the same slice {index} of the batch but read different "
                            "rows: their data differs (a local file that is not the same on every host, or a "
                            "source that is not deterministic); give them the same data")


def _every_process(state: Any, allgather: Optional[Callable] = None) -> list:
    """``state`` (JSON) of every process: each reads its own shard, and its position (a packed pipeline's, say)
    can differ from the others'; only process 0 writes the checkpoint's JSON."""
    if jax.process_count() == 1 and allgather is None:
        return [state]
    if allgather is None:
        from jax.experimental import multihost_utils

        allgather = multihost_utils.process_allgather
    raw = np.frombuffer(json.dumps(state).encode(), np.uint8)
    lengths = np.asarray(allgather(np.asarray(raw.size, np.int64))).reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[:raw.size] = raw
    rows = np.asarray(allgather(padded))
    return [json.loads(bytes(row[:n]).decode()) for row, n in zip(rows, lengths)]


def _restore_data_position(data_iter, state: Any, where: Path) -> None:
    """Put the input pipeline where the checkpoint's run left it, or say why it cannot be.

    The saved state mirrors the pipeline that wrote it (grain's nested iterator
    states), so a task that changed how it reads (streamed or in memory, other
    mixture members, a t5x_lite version with another pipeline) fails inside grain
    with a bare KeyError or TypeError.
    """
    try:
        data_iter.set_state(state)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise TrainingError(
            f"{where}: its data position does not fit this run's input pipeline ({type(e).__name__}: {e}); the "
            "task must read its data as it did when the checkpoint was written (streamed or in memory, the same "
            "mixture). Train on in a new MODEL_DIR, starting from this one with INITIAL_CHECKPOINT") from e


def _check_eval_task(model, eval_task, feature_lengths: Mapping[str, int]) -> None:
    """Say now, not at the first evaluation after ``eval_every`` steps, that it cannot work."""
    import t5x_lite.tasks  # noqa: F401  (registers the task providers)
    from t5x_lite.data.pipeline import check_task_fits, check_vocabulary_fits
    from t5x_lite.data.tasks import DataError, get_task_or_mixture
    from t5x_lite.evaluation.evaluate import check_metrics_can_be_decoded

    item = get_task_or_mixture(eval_task) if isinstance(eval_task, str) else eval_task
    check_metrics_can_be_decoded(model, item, where="train.eval_task: ")
    check_vocabulary_fits(item, model.config.vocab_size)
    try:
        check_task_fits(item, feature_lengths, model.feature_converter())
    except DataError as e:
        raise DataError(f"train.eval_task: {e}") from e


def _run_eval(model, params, task, split, feature_lengths, batch_size, max_examples, decode, mesh=None,
              rules=None) -> dict:
    from t5x_lite.evaluation.evaluate import DecodeOptions, evaluate

    # The params stay as training shards them and evaluation is traced under training's mesh and rules, so its
    # activations are laid out as training's are: a model that needs its model axis to fit is evaluated as it
    # trains. Every process reads the whole split; each batch's rows are split over the data devices.
    on_mesh = mesh is not None
    with partitioning.activate(mesh, rules) if on_mesh else contextlib.nullcontext():
        metrics, _ = evaluate(model=model, params=params, task=task, split=split,
                              feature_lengths=feature_lengths, batch_size=batch_size,
                              decode=decode or DecodeOptions(), max_examples=max_examples,
                              decode_without_metrics=False,  # the predictions are not kept
                              batch_sharding=partitioning.batch_sharding(mesh, rules) if on_mesh else None)
    return {k: float(v) for k, v in metrics.items()}


def _check_batch_divides(batch_size: int, num_microbatches: int, shards: int) -> None:
    """Every microbatch is split over the batch's devices: say so before init and compile, not in XLA's words."""
    if batch_size % num_microbatches:
        raise ConfigError(f"train.batch_size={batch_size} is not divisible by train.num_microbatches="
                          f"{num_microbatches}")
    if (batch_size // num_microbatches) % shards:
        per = f"a microbatch of {batch_size // num_microbatches}" if num_microbatches > 1 else f"{batch_size}"
        raise ConfigError(f"train.batch_size: {per} examples do not split over the {shards} devices the batch "
                          f"is sharded over; use a multiple of {shards * num_microbatches}")


def _check_finite(metrics: Mapping[str, Any], step: int, last_good: Optional[int], model_dir: str) -> None:
    for name in ("loss", "update_norm"):
        value = float(np.asarray(metrics[name]))
        if not math.isfinite(value):
            where = f"step {last_good} in {model_dir}/checkpoints" if last_good is not None else "none yet"
            raise TrainingError(f"{name} is {value} at step {step}; training stopped, nothing saved after it. "
                                f"Last good checkpoint: {where}")


def _flops(fn, model, converter, feature_lengths) -> Optional[float]:
    try:
        lengths = converter.task_lengths(dict(feature_lengths))
        if model.kind == "decoder_only":
            return fn(model.config, {"targets": lengths["targets"]}, decoder_only=True)
        return fn(model.config, lengths)
    except Exception as e:  # an unknown model kind gets no MFU, never a made-up one
        log.info("no FLOP count for %s: %s", type(model).__name__, e)
        return None


def _throughput(timing: Mapping[str, float], flops_per_example: Optional[float], batch_size: int,
                dtype: str) -> dict:
    from t5x_lite.training.flops import mfu, peak_flops_for

    out = {k: v for k, v in timing.items() if math.isfinite(v)}  # no rates from a window of the first step only
    if flops_per_example is not None and math.isfinite(timing.get("steps_per_s", float("nan"))):
        tflops = flops_per_example * batch_size * timing["steps_per_s"] / 1e12
        out["tflops_per_s"] = tflops
        device = jax.devices()[0]
        peak = peak_flops_for(device.device_kind, dtype)
        if peak:
            out["mfu"] = mfu(flops_per_example * batch_size, 1.0 / timing["steps_per_s"], peak, jax.device_count())
    return out
