"""One process of a multi-process CPU training run (``tests/training/test_multihost.py`` starts two).

    python tests/training/multihost_worker.py --coordinator 127.0.0.1:PORT --num-processes 2 \
        --process-id 0 --devices-per-process 2 --out DIR

Each process joins the run through ``t5x_lite.training.distributed.initialize``
(gloo collectives over TCP on CPU), builds the same tiny T5, and trains it for
``--steps`` steps of ``Trainer`` on a mesh over every device of every process,
feeding only its own rows of the fixed global batch of 8 (``Trainer.data_shard``
says which; ``Trainer.global_batch`` -> ``partitioning.host_batch_to_global``).
With ``--model-parallel`` above the devices per process, the ``model`` axis spans
the processes and they feed the same rows. It prints one JSON line (process
index/count, devices, its slice of the batch, per-step losses) and writes the
final params, gathered from all processes, to ``DIR/params_<process>.npz``.

The functions here also serve the single-process reference run (imported by the test).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

GLOBAL_BATCH = 8
STEPS = 3
SEED = 0


def tiny_model(vocab_size: int = 64):
    from t5x_lite.models.config import T5Config
    from t5x_lite.models.model import EncoderDecoderModel

    cfg = T5Config(
        vocab_size=vocab_size, d_model=32, d_ff=48, num_heads=4, d_kv=8, num_encoder_layers=2, num_decoder_layers=2,
        mlp_activations=("gelu", "linear"), logits_via_embedding=False, dropout_rate=0.1,
        relative_attention_num_buckets=8, relative_attention_max_distance=16,
    )
    return EncoderDecoderModel(config=cfg)


def global_batch():
    """The same 8 examples in every process (numpy)."""
    import numpy as np

    rng = np.random.default_rng(123)
    enc = rng.integers(3, 64, (GLOBAL_BATCH, 10)).astype(np.int32)
    tgt = rng.integers(3, 64, (GLOBAL_BATCH, 6)).astype(np.int32)
    enc[1::2, 7:] = 0
    tgt[::3, 4:] = 0
    dec_in = np.concatenate([np.zeros((GLOBAL_BATCH, 1), np.int32), tgt[:, :-1]], axis=1)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in, "decoder_target_tokens": tgt}


def host_rows(batch, index: int, count: int):
    """Slice ``index`` of the ``count`` contiguous slices of the global batch rows."""
    per = GLOBAL_BATCH // count
    return {k: v[index * per:(index + 1) * per] for k, v in batch.items()}


def train_steps(batch, *, mesh_config, strategy: str, steps: int = STEPS, devices=None, evaluate: bool = False):
    """After ``steps`` Trainer steps on the global ``batch`` (same code for 1 or N processes): the losses, the
    final params as numpy, their specs, this process's ``data_shard`` and the rows it fed, and with
    ``evaluate`` the final params' metrics as ``train`` evaluates during training (4 examples of the bundled
    sentiment task, read with the params as training shards them)."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    from t5x_lite.training import partitioning
    from t5x_lite.training.optimizers import make_optimizer
    from t5x_lite.training.trainer import Trainer

    mesh = partitioning.make_mesh(mesh_config, devices=devices)
    # Evaluation reads a bundled task: the model then needs the bundled vocabulary's size.
    trainer = Trainer(model=tiny_model(8000 if evaluate else 64),
                      optimizer=make_optimizer("adafactor_t5", learning_rate=0.01), mesh=mesh,
                      rules=partitioning.rules_for(strategy), base_rng=jax.random.key(7))
    host_batch = host_rows(batch, *trainer.data_shard)
    gathered = None
    if jax.process_count() > 1:  # train()'s collectives on data: the rows check and the saved positions
        from t5x_lite.training.train import _check_shared_rows, _every_process

        _check_shared_rows(host_batch, trainer.data_shard)
        gathered = _every_process({"process": jax.process_index(), "shard": list(trainer.data_shard)})
    state = trainer.init(SEED, host_batch)
    losses = []
    for _ in range(steps):
        state, metrics = trainer.step(state, trainer.global_batch(host_batch))
        losses.append(float(np.asarray(metrics["loss"])))  # replicated: every process holds it
    specs = sorted({str(x.sharding.spec) for x in jax.tree_util.tree_leaves(state.params)})
    if jax.process_count() > 1:
        params = multihost_utils.process_allgather(state.params, tiled=True)
    else:
        params = jax.device_get(state.params)
    flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    eval_metrics = None
    if evaluate:
        eval_metrics = _evaluate_as_train_does(trainer, state.params)
    return {"losses": losses, "params": flat, "param_specs": specs, "data_shard": list(trainer.data_shard),
            "host_rows": int(next(iter(host_batch.values())).shape[0]), "eval_metrics": eval_metrics,
            "gathered_positions": gathered}


def _evaluate_as_train_does(trainer, params) -> dict:
    """``train``'s evaluation of ``params``, with what its compiled loss and decode were given: whether the params
    were still spread over every device of the mesh (not gathered to one), and how many of a batch's rows each
    device held."""
    import jax
    import numpy as np

    import importlib

    decoding = importlib.import_module("t5x_lite.decoding.predict")
    evaluation = importlib.import_module("t5x_lite.evaluation.evaluate")  # the package exports a function so named
    from t5x_lite.training import partitioning
    from t5x_lite.training.train import _run_eval

    from t5x_lite.models.layers import active_axis_rules

    trained = [x.sharding for x in jax.tree_util.tree_leaves(params)]
    rules = tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in trainer.rules)
    calls = {"loss": [], "decode": []}

    def layout(params, rows):
        """[params sharded as training left them, traced under training's rules, rows of the batch per device]"""
        leaves = jax.tree_util.tree_leaves(params)
        as_trained = all(isinstance(x, jax.Array) and x.sharding == s for x, s in zip(leaves, trained))
        rows = int(rows.addressable_shards[0].data.shape[0]) if isinstance(rows, jax.Array) else None
        return [as_trained, active_axis_rules() == rules, rows]

    real_loss, real_decode = evaluation._jit_loss, decoding._predict

    def loss(model, params, batch):
        calls["loss"].append(layout(params, batch["decoder_target_tokens"]))
        return real_loss(model, params, batch)

    def decode(params, features, *args, **kwargs):
        calls["decode"].append(layout(params, features["encoder_input_tokens"]))
        return real_decode(params, features, *args, **kwargs)

    evaluation._jit_loss, decoding._predict = loss, decode
    try:
        metrics = _run_eval(trainer.model, params, "bundled_sentiment", "validation", {"inputs": 32, "targets": 4},
                            4, 4, evaluation.DecodeOptions(max_decode_length=2), trainer.mesh, trainer.rules)
    finally:
        evaluation._jit_loss, decoding._predict = real_loss, real_decode
    # a result spread over both processes comes back whole to each; rows that do not split stay on the host
    rows = np.arange(8, dtype=np.int32).reshape(4, 2)
    place = evaluation._batch_placer(partitioning.batch_sharding(trainer.mesh, trainer.rules))
    placed = place({"rows": rows, "odd": rows[:3], "scalar": np.int32(1)})
    return {**metrics, "calls": calls, "gathered_whole": evaluation._host(placed["rows"]).tolist() == rows.tolist(),
            "left_on_host": sorted(k for k, v in placed.items() if isinstance(v, np.ndarray))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coordinator", default=None)
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--devices-per-process", type=int, default=1)
    parser.add_argument("--model-parallel", type=int, default=1)
    parser.add_argument("--strategy", default="data_parallel")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--evaluate", action="store_true", help="evaluate the final params as train does")
    parser.add_argument("--timeout", type=int, default=60, help="seconds to wait for the other processes")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, str(ROOT))
    import jax
    import numpy as np

    jax.config.update("jax_num_cpu_devices", args.devices_per_process)
    jax.config.update("jax_compilation_cache_dir",
                      os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(ROOT / ".jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

    from t5x_lite.training import distributed, partitioning

    start = time.perf_counter()
    bind = None
    if args.coordinator:
        bind = args.coordinator  # loopback only: the coordinator listens on the address it was given
    kwargs = dict(initialization_timeout=args.timeout, heartbeat_timeout_seconds=args.timeout,
                  shutdown_timeout_seconds=args.timeout)
    if bind:
        kwargs["coordinator_bind_address"] = bind
    joined = distributed.initialize(args.coordinator, args.num_processes, args.process_id, **kwargs)
    assert distributed.initialize(args.coordinator, args.num_processes, args.process_id) == joined  # idempotent
    init_seconds = time.perf_counter() - start

    result = train_steps(global_batch(), mesh_config=partitioning.MeshConfig(model=args.model_parallel),
                         strategy=args.strategy, steps=args.steps, evaluate=args.evaluate)
    params = result.pop("params")
    if args.out:
        np.savez(Path(args.out) / f"params_{jax.process_index()}.npz", **params)
    print(json.dumps({
        "joined": joined,
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "local_devices": jax.local_device_count(),
        "global_devices": jax.device_count(),
        "cpu_collectives": jax.config.jax_cpu_collectives_implementation,
        "barriers": sum(distributed._barriers.values()),
        **result,
        "init_seconds": round(init_seconds, 2),
        "seconds": round(time.perf_counter() - start, 2),
    }), flush=True)
    distributed.shutdown()


if __name__ == "__main__":
    main()
