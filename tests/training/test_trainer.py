"""Trainer: the step compiled in the background during init is the one that runs; on CPU a step waits, then pauses."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import jax
import numpy as np

from t5x_lite.training import partitioning
from t5x_lite.training import trainer as trainer_lib
from t5x_lite.training.optimizers import make_optimizer
from t5x_lite.training.trainer import Trainer
from tests.training.multihost_worker import global_batch, tiny_model


def _trainer(**options) -> Trainer:
    return Trainer(model=tiny_model(), optimizer=make_optimizer("adafactor_t5", learning_rate=0.01),
                   mesh=partitioning.make_mesh(), rules=partitioning.rules_for("data_parallel"),
                   base_rng=jax.random.key(7), **options)


def _run(trainer: Trainer, batches, precompiled: bool):
    state = trainer.init(0, batches[0])
    if not precompiled:
        trainer._precompiled = None  # what step() did before init compiled it ahead
    losses = []
    for batch in batches:
        state, metrics = trainer.step(state, trainer.global_batch(batch))
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state.params)


def test_step_runs_the_program_compiled_during_init_and_matches_jit():
    first = global_batch()
    shorter = {k: v[:, :4] for k, v in first.items()}
    batches = [first, first, shorter, first]
    trainer = _trainer()
    losses, params = _run(trainer, batches, precompiled=True)
    # The full-length steps ran the program compiled during init; jit compiled only the shorter batch's.
    assert trainer._step_fn._cache_size() == 1
    # A daemon thread: at exit only the running compile is waited for, not the queued ones (Ctrl-C during init).
    assert trainer_lib._compile_thread.daemon
    ref_losses, ref_params = _run(_trainer(), batches, precompiled=False)
    assert losses == ref_losses
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, ref_params)


def test_microbatches_of_a_model_with_a_fixed_loss_normalizer_give_the_full_batch_step():
    # The loss is sum / loss_normalizer, so the trainer must add the microbatches up, not
    # average them by tokens (that halved the loss here and tilted the gradient).
    batch = global_batch()
    model = tiny_model().replace(loss_normalizer=40.0)
    results = []
    for num_microbatches in (None, 2):
        trainer = Trainer(model=model, optimizer=make_optimizer("adamw", learning_rate=1e-3),
                          mesh=partitioning.make_mesh(), rules=partitioning.rules_for("data_parallel"),
                          base_rng=jax.random.key(7), num_microbatches=num_microbatches, use_dropout=False)
        state, metrics = trainer.step(trainer.init(0, batch), trainer.global_batch(batch))
        results.append((jax.device_get(metrics), jax.device_get(state.params)))
    (full, full_params), (micro, micro_params) = results
    for name in ("loss", "z_loss", "accuracy", "num_tokens", "grad_norm"):
        np.testing.assert_allclose(micro[name], full[name], rtol=1e-5, err_msg=name)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                           micro_params, full_params)


def test_a_state_on_the_host_gives_the_same_step():
    batch = global_batch()
    trainer = _trainer()
    host_state = jax.device_get(trainer.init(0, batch))  # numpy leaves, not laid out as compiled for
    state, metrics = trainer.step(host_state, trainer.global_batch(batch))
    ref = _trainer()
    ref_state, ref_metrics = ref.step(ref.init(0, batch), ref.global_batch(batch))
    assert float(metrics["loss"]) == float(ref_metrics["loss"])
    jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(state), jax.device_get(ref_state))


def test_an_int64_host_batch_runs_the_precompiled_step():
    batch = {k: v.astype(np.int64) for k, v in global_batch().items()}  # what numpy pipelines often give
    trainer = _trainer()
    state = trainer.init(0, batch)
    state, metrics = trainer.step(state, trainer.global_batch(batch))
    assert np.isfinite(float(metrics["loss"]))
    assert trainer._step_fn._cache_size() == 0


def test_on_cpu_a_step_is_dispatched_only_after_the_previous_one_finished():
    batch = global_batch()
    trainer = _trainer()
    assert trainer.wait_for_previous_step  # the default on a CPU mesh
    state = trainer.init(0, batch)
    global_batch_ = trainer.global_batch(batch)
    state, first = trainer.step(state, global_batch_)
    state, second = trainer.step(state, global_batch_)
    assert first["loss"].is_ready()
    assert not _trainer(wait_for_previous_step=False).wait_for_previous_step
    assert np.isfinite(float(second["loss"]))


def test_after_the_wait_a_step_with_large_temporaries_pauses_before_dispatch(monkeypatch):
    batch = global_batch()
    pauses: list = []
    monkeypatch.setattr(trainer_lib, "time", types.SimpleNamespace(sleep=pauses.append))  # this module's only

    def three_steps(trainer: Trainer) -> None:
        state = trainer.init(0, batch)
        global_batch_ = trainer.global_batch(batch)
        for _ in range(3):
            state, metrics = trainer.step(state, global_batch_)
        assert np.isfinite(float(metrics["loss"]))

    # The tiny test model's step needs far less than the threshold: no pause.
    small = _trainer()
    three_steps(small)
    assert trainer_lib._temporaries_bytes(small._precompiled[1].result()) < trainer_lib._PAUSE_MIN_TEMP_BYTES
    assert pauses == []
    # As if its temporaries were large: a pause before the second and the third dispatch.
    monkeypatch.setattr(trainer_lib, "_PAUSE_MIN_TEMP_BYTES", 0)
    three_steps(_trainer())
    assert pauses == [0.002, 0.002]
    pauses.clear()
    three_steps(_trainer(release_pause_s=0.0))
    assert pauses == []


def test_exiting_while_the_step_compiles_in_the_background_does_not_abort(tmp_path):
    # An error before the first step (say, a checkpoint that does not fit) leaves the process while the
    # background thread is inside XLA's compile; the interpreter's shutdown must not abort (status 134).
    script = tmp_path / "exit_while_compiling.py"
    script.write_text(
        "import os, sys\n"
        "os.environ['JAX_PLATFORMS'] = 'cpu'\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})\n"
        "from tests.training.test_trainer import _trainer, global_batch\n"
        "from t5x_lite.training import trainer as trainer_lib\n"
        "trainer = _trainer()\n"
        "trainer.state_shardings(global_batch())\n"
        "trainer.precompile_step(global_batch())\n"
        "assert not trainer._precompiled[1].done()\n"
        "sys.exit(3)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "FATAL" not in done.stderr
