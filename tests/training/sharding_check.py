"""Sharded training equals single-device training: DP, FSDP and TP on 8 virtual CPU devices.

Run as a script (``tests/training/test_partitioning.py`` does, in a subprocess,
because the device count must be fixed before JAX starts)::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/training/sharding_check.py [t5 bert prefix_lm]

For each model (tiny T5 encoder-decoder with Adafactor, tiny BERT MLM with
AdamW, tiny prefix LM with AdamW; dropout on, so the per-step dropout masks
must also agree) it runs ``Trainer.init`` + 2 ``Trainer.step`` on a fixed
batch of 8 on one device, then on a data-parallel 8x1 mesh, an FSDP 8x1 mesh
and a tensor-parallel 2x4 mesh, and prints one JSON object with the max
absolute differences to the single-device run (initial params, per-step
losses, updated params, optimizer state), the mesh axes the params
actually use, and the temporaries init's program needs per device.

Almost all the time is XLA:CPU compiling 8 step functions per model (~10-15 s
each for these tiny models, single-threaded), so the models run in parallel
threads (``SHARDING_CHECK_THREADS``, default: the CPU count); compiles release
the GIL, and the mesh / logical-axis-rule contexts are thread-local.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NUM_DEVICES = 8

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={NUM_DEVICES}").strip()
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(ROOT / ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

from t5x_lite.models.config import BertConfig, T5Config  # noqa: E402
from t5x_lite.models.model import DecoderOnlyModel, EncoderDecoderModel, EncoderOnlyMLMModel  # noqa: E402
from t5x_lite.training import partitioning  # noqa: E402
from t5x_lite.training.optimizers import make_optimizer  # noqa: E402
from t5x_lite.training.trainer import Trainer  # noqa: E402

BATCH = 8
STEPS = 2
# Adafactor's first update of an unfactored weight is lr * scale * sign(gradient), so an element
# whose gradient is within float32 rounding of zero can step in opposite directions on two meshes
# (a sharding-independent tie, not a sharding bug). With init seed 0 the tiny T5 draws one such
# element (a value kernel's [40, 2, 15]: max param diff 1.8e-3 after 2 steps); seed 1 draws none.
INIT_SEED = 1
# AdamW amplifies the rounding of gradients near eps: its first update, lr * g / (|g| + eps), moves by
# lr / (4 eps) per unit of g at |g| = eps (25,000 at the default 1e-8), so elements with tiny gradients
# (summed in another order on each mesh) differed by up to 3e-4 after 2 steps for most init seeds
# (1e-6: up to 1.7e-5). At 1e-4 every seed tried (0-4) agrees to float32 rounding (< 5e-7).
ADAMW_EPS = 1e-4

# d_model = vocab = d_ff = 128: the embedding, MLP and logits matrices are big enough for Adafactor
# to factor their second moments (row/column slots, which the trainer replicates), and every
# sharded dimension divides the 4-way model axis.
T5_TINY = T5Config(
    vocab_size=128, d_model=128, d_ff=128, num_heads=4, d_kv=16, num_encoder_layers=2, num_decoder_layers=2,
    mlp_activations=("gelu", "linear"), logits_via_embedding=False, dropout_rate=0.1,
    relative_attention_num_buckets=8, relative_attention_max_distance=16,
)
BERT_TINY = BertConfig(
    vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48, max_position_embeddings=24,
    dropout_rate=0.1, attention_dropout_rate=0.1,
)

MESHES = {
    "single": (partitioning.MeshConfig(data=1, model=1), "data_parallel", 1),
    "dp": (partitioning.MeshConfig(data=8, model=1), "data_parallel", NUM_DEVICES),
    "fsdp": (partitioning.MeshConfig(data=8, model=1), "fsdp", NUM_DEVICES),
    "tp": (partitioning.MeshConfig(data=2, model=4), "data_parallel", NUM_DEVICES),
}


def _tokens(rng: np.random.Generator, shape, vocab: int) -> np.ndarray:
    return rng.integers(3, vocab, shape).astype(np.int32)


def t5_case():
    rng = np.random.default_rng(0)
    enc = _tokens(rng, (BATCH, 12), T5_TINY.vocab_size)
    tgt = _tokens(rng, (BATCH, 6), T5_TINY.vocab_size)
    enc[::3, 9:] = 0  # some padding, so the masks take part
    tgt[1::3, 4:] = 0
    dec_in = np.concatenate([np.zeros((BATCH, 1), np.int32), tgt[:, :-1]], axis=1)
    batch = {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in, "decoder_target_tokens": tgt}
    return EncoderDecoderModel(config=T5_TINY), make_optimizer("adafactor_t5", learning_rate=0.01), batch


def bert_case():
    rng = np.random.default_rng(1)
    length = 16
    tokens = _tokens(rng, (BATCH, length), BERT_TINY.vocab_size)
    tokens[::2, 12:] = BERT_TINY.pad_id
    weights = ((rng.random((BATCH, length)) < 0.2) & (tokens != BERT_TINY.pad_id)).astype(np.float32)
    weights[:, 1] = 1.0  # every row has a prediction
    targets = np.where(weights > 0, _tokens(rng, (BATCH, length), BERT_TINY.vocab_size), 0).astype(np.int32)
    types = (np.arange(length)[None, :] >= 8).astype(np.int32).repeat(BATCH, 0)
    batch = {"input_tokens": tokens, "token_type_ids": types, "mlm_targets": targets, "mlm_weights": weights}
    return EncoderOnlyMLMModel(config=BERT_TINY), make_optimizer("adamw", learning_rate=1e-3, eps=ADAMW_EPS), batch


def prefix_lm_case():
    rng = np.random.default_rng(2)
    length = 14
    tokens = _tokens(rng, (BATCH, length), T5_TINY.vocab_size)
    pos = np.arange(length)[None, :]
    prefix = rng.integers(3, 9, (BATCH, 1))  # inputs length per row; the rest are targets
    tokens[(pos >= prefix + 4) & (np.arange(BATCH)[:, None] % 2 == 0)] = 0  # padded rows
    dec_in = np.concatenate([np.zeros((BATCH, 1), np.int32), tokens[:, :-1]], axis=1)
    batch = {
        "decoder_input_tokens": dec_in,
        "decoder_target_tokens": tokens,
        "decoder_causal_attention": (pos <= prefix).astype(np.int32),  # bidirectional over the prefix
        "decoder_loss_weights": ((pos >= prefix) & (tokens != 0)).astype(np.float32),
    }
    model = DecoderOnlyModel(config=T5_TINY.replace(scan_layers=False), prefix_lm=True)
    return model, make_optimizer("adamw", learning_rate=1e-3, eps=ADAMW_EPS), batch


CASES = {"t5": t5_case, "bert": bert_case, "prefix_lm": prefix_lm_case}


def _specs(tree) -> list[str]:
    return sorted({str(x.sharding.spec) for x in jax.tree_util.tree_leaves(tree)})


def _uses(tree, axis: str) -> int:
    """How many leaves are really split over mesh ``axis`` (named in their spec, and the axis has > 1 device)."""
    def split(x):
        spec, mesh = x.sharding.spec, x.sharding.mesh
        named = any(axis == p or (isinstance(p, tuple) and axis in p) for p in spec)
        return named and mesh.shape[axis] > 1

    return sum(split(x) for x in jax.tree_util.tree_leaves(tree))


def _max_diff(a, b) -> float:
    diffs = jax.tree_util.tree_map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)), initial=0.0)),
                                   a, b)
    return max(jax.tree_util.tree_leaves(diffs), default=0.0)


def run(model, optimizer, batch, mesh_name: str) -> dict:
    mesh_config, strategy, n = MESHES[mesh_name]
    mesh = partitioning.make_mesh(mesh_config, devices=jax.devices()[:n])
    trainer = Trainer(model=model, optimizer=optimizer, mesh=mesh, rules=partitioning.rules_for(strategy),
                      base_rng=jax.random.key(42))
    start = time.perf_counter()
    state = trainer.init(INIT_SEED, batch)
    init_memory = trainer.lower_init(batch).compile().memory_analysis()  # usually from the persistent cache
    init_params = jax.device_get(state.params)
    losses = []
    global_batch = trainer.global_batch(batch)
    for _ in range(STEPS):
        state, metrics = trainer.step(state, global_batch)
        losses.append(float(metrics["loss"]))
    out = {
        "init_params": init_params,
        "losses": losses,
        "params": jax.device_get(state.params),
        "opt_state": jax.device_get(state.opt_state),
        "step": int(state.step),
        "params_on_data": _uses(state.params, "data"),
        "params_on_model": _uses(state.params, "model"),
        "opt_state_on_data": _uses(state.opt_state, "data"),
        "num_params": len(jax.tree_util.tree_leaves(state.params)),
        "param_bytes": sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(state.params)),
        "init_temp_bytes": init_memory.temp_size_in_bytes,
        "batch_spec": str(global_batch[next(iter(global_batch))].sharding.spec),
        "param_specs": _specs(state.params),
        "seconds": round(time.perf_counter() - start, 2),
    }
    return out


def check_model(name: str) -> dict:
    model, optimizer, batch = CASES[name]()
    ref = run(model, optimizer, batch, "single")
    entry = {"single": {k: ref[k] for k in ("losses", "seconds", "param_bytes", "init_temp_bytes")}}
    for mesh_name in ("dp", "fsdp", "tp"):
        got = run(model, optimizer, batch, mesh_name)
        entry[mesh_name] = {
            "losses": got["losses"],
            "loss_diff": max(abs(a - b) for a, b in zip(got["losses"], ref["losses"])),
            "init_param_diff": _max_diff(got["init_params"], ref["init_params"]),
            "param_diff": _max_diff(got["params"], ref["params"]),
            "opt_state_diff": _max_diff(got["opt_state"], ref["opt_state"]),
            "param_update_size": _max_diff(ref["params"], ref["init_params"]),
            **{k: got[k] for k in ("step", "params_on_data", "params_on_model", "opt_state_on_data", "num_params",
                                   "batch_spec", "param_specs", "init_temp_bytes", "seconds")},
        }
    return entry


def main(names, threads: int) -> dict:
    """One model per thread: XLA compiles (most of the time here) release the GIL, so they overlap."""
    assert jax.device_count() == NUM_DEVICES, f"need {NUM_DEVICES} devices, have {jax.device_count()}"
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        entries = dict(zip(names, pool.map(check_model, names)))
    return {"jax": jax.__version__, "devices": jax.device_count(), "threads": threads, "models": entries}


if __name__ == "__main__":
    t0 = time.perf_counter()
    threads = int(os.environ.get("SHARDING_CHECK_THREADS", os.cpu_count() or 1))
    result = main(sys.argv[1:] or list(CASES), threads=threads)
    result["total_seconds"] = round(time.perf_counter() - t0, 2)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 1)
    print(json.dumps(result))
