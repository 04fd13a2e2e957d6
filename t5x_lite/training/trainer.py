"""The sharded train step: state, initialization under ``eval_shape``, and one jit.

``Trainer`` holds no data and no hidden state; it is the compiled functions and
the shardings for one (model, optimizer, mesh, rules) combination:

- ``init(seed)`` builds the train state directly in its sharded layout
  (``jax.eval_shape`` first, so a model bigger than one host's memory is never
  materialized on a single device);
- ``step(state, batch)`` is ``jax.jit`` with in/out shardings and the state
  donated. The step's rng is ``fold_in(base_rng, step)``, so a restarted run
  draws the same dropout masks as an uninterrupted one.

Start-up overlaps tracing, compiling and running: ``init`` traces the step
while XLA compiles init, and XLA compiles the step while init runs
(``precompile_step``; one background thread, because XLA compiles one program
at a time). The first ``step`` then calls the compiled program. On the 2-core
CPU that brought T5 1.1 small to its first step 2-5 s sooner (benchmarks/RESULTS.md,
"Start-up").
"""

from __future__ import annotations

import atexit
import concurrent.futures
import dataclasses
import functools
import logging
import queue
import threading
import time
from typing import Any, Callable, Mapping, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from t5x_lite.models import stacking
from t5x_lite.training import distributed, partitioning

Array = jax.Array
log = logging.getLogger(__name__)

_compile_queue: "queue.SimpleQueue[tuple[Any, concurrent.futures.Future]]" = queue.SimpleQueue()
_compile_thread: Optional[threading.Thread] = None
_compile_thread_lock = threading.Lock()
_compiling: Optional[concurrent.futures.Future] = None  # the compile running now
_exiting = False


def _compile_worker() -> None:
    global _compiling
    while True:
        lowered, future = _compile_queue.get()
        _compiling = future  # before the check below: _finish_compiles_at_exit reads them in the other order
        if not _exiting and future.set_running_or_notify_cancel():
            try:
                future.set_result(lowered.compile())
            except BaseException as e:  # handed to whoever waits on the future
                future.set_exception(e)
        else:
            future.cancel()
        _compiling = None
        del lowered, future  # the lowered module can be large; do not keep it until the next request


def _finish_compiles_at_exit() -> None:
    """Drop the queued compiles and wait for the running one.

    A daemon thread that the interpreter's shutdown catches inside XLA's compile
    aborts the process ("FATAL: exception not rethrown", exit status 134), which
    turned an error before the first step (a checkpoint that does not fit, say)
    into a crash. atexit runs before that point, so waiting here for at most one
    compile is enough.
    """
    global _exiting
    _exiting = True
    while True:
        try:
            _compile_queue.get_nowait()[1].cancel()
        except queue.Empty:
            break
    running = _compiling
    if running is not None:
        concurrent.futures.wait([running])


def _compile_in_background(lowered) -> concurrent.futures.Future:
    """``lowered.compile()`` on one background thread, in the order asked (XLA compiles one program at a time).

    A daemon thread rather than a ``ThreadPoolExecutor``, whose threads the
    interpreter joins at exit: Ctrl-C during init waits for the compile that is
    running (``_finish_compiles_at_exit``), not for the ones queued behind it.
    """
    global _compile_thread
    with _compile_thread_lock:
        if _compile_thread is None:
            _compile_thread = threading.Thread(target=_compile_worker, name="t5x_lite-compile", daemon=True)
            _compile_thread.start()
            atexit.register(_finish_compiles_at_exit)
    future: concurrent.futures.Future = concurrent.futures.Future()
    _compile_queue.put((lowered, future))
    return future


# Below this much working memory a step's second copy costs little; the pause in step() is skipped.
_PAUSE_MIN_TEMP_BYTES = 16 << 20


def _signature(batch: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, tuple(np.shape(v)), str(getattr(v, "dtype", type(v).__name__)))
                        for k, v in batch.items()))


@flax.struct.dataclass
class TrainState:
    step: Array
    params: Any
    opt_state: Any


def _grad_norm(grads: Any) -> Array:
    # Over each weight's layers stacked: one reduction per weight instead of per layer (see layer_stacks).
    return optax.global_norm(stacking.stack_layer_params(grads))


def compute_grads(loss_fn: Callable, params: Any, batch: Mapping[str, Array], rng: Array,
                  num_microbatches: Optional[int], fixed_normalizer: bool = False) -> tuple[Array, dict, Any]:
    """(loss, metrics, grads), over microbatches when asked (see optimizers.accumulate_gradients).

    ``fixed_normalizer``: the loss is divided by a constant (the model's
    ``loss_normalizer``), so microbatches' losses and gradients add up.
    """
    if num_microbatches and num_microbatches > 1:
        from t5x_lite.training.optimizers import accumulate_gradients

        return accumulate_gradients(loss_fn, params, batch, rng, num_microbatches, fixed_normalizer=fixed_normalizer)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng)
    return loss, metrics, grads


@dataclasses.dataclass
class Trainer:
    """Compiled init/step for a model, an optax optimizer, a mesh and logical-axis rules."""

    model: Any
    optimizer: optax.GradientTransformation
    mesh: jax.sharding.Mesh
    rules: tuple
    base_rng: Array
    learning_rate_fn: Optional[Callable[[Array], Array]] = None
    num_microbatches: Optional[int] = None
    use_dropout: bool = True
    # Dispatch a step only once the previous one has finished; None: on CPU meshes only (see step()).
    wait_for_previous_step: Optional[bool] = None
    # After that wait, sleep this long so the finished step's temporaries are freed first (see step()).
    release_pause_s: float = 0.002

    def __post_init__(self):
        self._state_shardings = None
        self._abstract_state = None
        self._step_fn = None
        self._precompiled = None  # (global batch signature, Future of the compiled step)
        self._precompiled_ran = False
        self._in_flight = None  # the last step's metrics, while wait_for_previous_step
        self._pause_s = None  # release_pause_s or 0, once the compiled step's temporaries are known
        if self.wait_for_previous_step is None:
            self.wait_for_previous_step = all(d.platform == "cpu" for d in self.mesh.devices.flat)

    # ------------------------------------------------------------------ init

    def fresh_state(self, params: Any) -> TrainState:
        """Step 0, ``params`` (boxed or plain) and a new optimizer state for them."""
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=self.optimizer.init(nn.unbox(params)))

    def _boxed_state(self, rng: Array, batch: Mapping[str, Array]) -> TrainState:
        """The state with the params' logical-axis boxes, only for ``eval_shape`` (``init`` draws through ``model.init_params``)."""
        variables = self.model.module.init({"params": rng, "dropout": rng}, **self.model._apply_kwargs(batch))
        return self.fresh_state(variables["params"])

    def abstract_state(self, batch: Mapping[str, Array]) -> TrainState:
        """Shapes, dtypes and logical names of the whole state; nothing is allocated."""
        if self._abstract_state is None:
            with partitioning.activate(self.mesh, self.rules):
                self._abstract_state = jax.eval_shape(self._boxed_state, jax.random.key(0), batch)
        return self._abstract_state

    def state_shardings(self, batch: Mapping[str, Array]) -> TrainState:
        """Params sharded by their logical names; optimizer slots like their params; the rest replicated."""
        if self._state_shardings is None:
            abstract = self.abstract_state(batch)
            params = partitioning.param_shardings(abstract.params, self.mesh, self.rules)
            replicated = partitioning.replicated(self.mesh)
            # Slots shaped like their param (Adam moments) share its sharding; others (Adafactor's
            # factored row/column statistics, counts) are small and replicated.
            opt_state = optax.tree_map_params(
                self.optimizer,
                lambda slot, sharding, param: sharding if slot.shape == param.shape else replicated,
                abstract.opt_state, params, nn.unbox(abstract.params),
                transform_non_params=lambda _: replicated,
                is_leaf=lambda x: isinstance(x, (jax.sharding.Sharding, jax.ShapeDtypeStruct)),
            )
            self._state_shardings = TrainState(step=replicated, params=params, opt_state=opt_state)
        return self._state_shardings

    def sharded_abstract_state(self, batch: Mapping[str, Array]) -> TrainState:
        """``abstract_state`` unboxed, each leaf a ``jax.ShapeDtypeStruct`` with its sharding (for restore and lowering)."""
        return jax.tree_util.tree_map(
            lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
            nn.unbox(self.abstract_state(batch)), self.state_shardings(batch))

    def init(self, seed: int, batch: Mapping[str, Array]) -> TrainState:
        """The initial state, sharded; ``batch`` (this host's rows) gives the shapes.

        Also starts compiling the step for batches of this shape (``precompile_step``).
        """
        compiled_init = _compile_in_background(self.lower_init(batch))
        self.precompile_step(batch)  # traced while init compiles, compiled while init runs
        with partitioning.activate(self.mesh, self.rules):
            return compiled_init.result()(_fast_init_key(seed))

    def lower_init(self, batch: Mapping[str, Array]):
        """``init``'s sharded program, lowered (its ``compile().memory_analysis()`` is what init needs per device)."""
        shardings = self.state_shardings(batch)

        def init(rng):
            return self.fresh_state(self.model.init_params(rng, batch))

        with partitioning.activate(self.mesh, self.rules):
            return jax.jit(init, out_shardings=shardings).lower(_fast_init_key(0))

    def precompile_step(self, batch: Mapping[str, Any]) -> None:
        """Trace the step for batches shaped like ``batch`` (this host's rows) and compile it in the background.

        ``step`` waits for that program when it first gets such a batch. Call it
        before restoring a checkpoint, so the step compiles while the state loads.
        """
        abstract_batch = partitioning.abstract_global_batch(batch, partitioning.batch_sharding(self.mesh, self.rules),
                                                            self.data_shard[1])
        signature = _signature(abstract_batch)
        if self._precompiled is not None and self._precompiled[0] == signature:
            return
        abstract_state = self.sharded_abstract_state(batch)  # unboxed outside the rules: no constraints on shapes
        with partitioning.activate(self.mesh, self.rules):
            lowered = self._jit_step().lower(abstract_state, abstract_batch)
        self._precompiled = (signature, _compile_in_background(lowered))
        self._precompiled_ran = False

    # ------------------------------------------------------------------ step

    def _train_step(self, state: TrainState, batch: Mapping[str, Array]):
        rng = jax.random.fold_in(self.base_rng, state.step)
        loss_fn = functools.partial(_loss_with_rng, self.model, self.use_dropout)
        fixed_normalizer = getattr(self.model, "loss_normalizer", None) is not None
        loss, metrics, grads = compute_grads(loss_fn, state.params, batch, rng, self.num_microbatches,
                                             fixed_normalizer)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics)
        metrics["grad_norm"] = _grad_norm(grads)
        # Finite loss and finite update => finite new params: what a checkpoint needs to be "good".
        metrics["update_norm"] = _grad_norm(updates)
        if self.learning_rate_fn is not None:
            metrics["learning_rate"] = jnp.asarray(self.learning_rate_fn(state.step), jnp.float32)
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    def _jit_step(self):
        if self._step_fn is None:
            shardings = self._state_shardings
            if shardings is None:
                raise RuntimeError("call init() or state_shardings() before step()")
            batch_sharding = partitioning.batch_sharding(self.mesh, self.rules)
            self._step_fn = jax.jit(
                self._train_step,
                in_shardings=(shardings, batch_sharding),
                out_shardings=(shardings, partitioning.replicated(self.mesh)),
                donate_argnums=(0,),
            )
        return self._step_fn

    def step(self, state: TrainState, batch: Mapping[str, Array]):
        """One optimizer step; returns (new state, metrics) without waiting for them (but see below).

        On CPU meshes (``wait_for_previous_step``) it first waits for the previous
        step to finish, then sleeps ``release_pause_s``. XLA:CPU frees a step's
        temporaries on its runtime thread just *after* marking its outputs ready;
        a step that starts in between (queued behind the last one, or dispatched
        the moment the wait returns) allocates its own while the last one's are
        still held, and glibc's heap grows by a whole copy, page-faulted in. T5 1.1
        small at batch 8 (2.9 GB of temporaries) in the train loop's pattern:
        one step ahead 6.3-7.6 s per step, 1.5-3.0M page faults, 9.9-15.6 GB peak
        RSS; waiting without the pause 6.5-7.5 s, 1.5-2.2M, 9.9-12.8 GB; waiting
        and pausing 2 ms 4.8-5.0 s, no faults, 4.2 GB (benchmarks/RESULTS.md).
        A CPU has nothing to overlap the wait with; accelerators keep dispatching
        ahead. The pause is skipped once the compiled step is known to need
        under 16 MiB of temporaries.
        """
        step_fn = self._jit_step()
        if self._in_flight is not None:
            jax.block_until_ready(self._in_flight)
            self._in_flight = None
            pause = self.release_pause_s if self._pause_s is None else self._pause_s
            if pause:
                time.sleep(pause)
        with partitioning.activate(self.mesh, self.rules):
            out = None
            if self._precompiled is not None and self._precompiled[0] == _signature(batch):
                compiled = self._precompiled[1].result()
                if not self._precompiled_ran:  # its first collectives start together in every process
                    distributed.wait_for_every_process("the train step is compiled", self._processes)
                    self._precompiled_ran = True
                if self._pause_s is None and self.wait_for_previous_step:
                    small = _temporaries_bytes(compiled) < _PAUSE_MIN_TEMP_BYTES
                    self._pause_s = 0.0 if small else self.release_pause_s
                try:
                    out = compiled(state, batch)
                except (TypeError, ValueError) as e:
                    # The arguments differ from what it was compiled for (checked before anything
                    # runs or is donated): jit compiles for what was passed instead.
                    log.info("precompiled train step not used (%s); compiling for these arguments", e)
                    self._precompiled = None
            if out is None:
                out = step_fn(state, batch)
        if self.wait_for_previous_step:
            self._in_flight = out[1]
        return out

    @functools.cached_property
    def _processes(self) -> frozenset:
        return frozenset(d.process_index for d in self.mesh.devices.flat)

    @functools.cached_property
    def data_shard(self) -> tuple[int, int]:
        """``(index, count)``: which slice of every global batch this process feeds (``partitioning.data_shard``)."""
        return partitioning.data_shard(self.mesh, self.rules)

    def global_batch(self, host_batch: Mapping[str, Any]) -> dict:
        return partitioning.host_batch_to_global(
            dict(host_batch), self.mesh, partitioning.batch_sharding(self.mesh, self.rules), self.data_shard[1]
        )


def _temporaries_bytes(compiled) -> float:
    analysis = compiled.memory_analysis()  # None or absent on some backends: count it as large
    return getattr(analysis, "temp_size_in_bytes", float("inf"))


def _loss_with_rng(model, use_dropout: bool, params, batch, rng):
    return model.loss_fn(params, batch, rng if use_dropout else None)


def _fast_init_key(seed: int) -> Array:
    """A key for parameter init with the ``unsafe_rbg`` PRNG.

    The default threefry PRNG makes XLA:CPU compile and run init slowly (many
    counter-mode hash calls); init needs statistical quality, not threefry's
    splitting guarantees. Training-step randomness (dropout) keeps the default.
    """
    return jax.random.key(seed, impl="unsafe_rbg")
