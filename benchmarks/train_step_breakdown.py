"""Where a T5 train step's time goes, phase by phase, in JAX (t5x_lite) and PyTorch (HF), same shape.

    python benchmarks/train_step_breakdown.py [--shape small|tiny] [--reps 3]

Times, for each framework, in one process each (fresh subprocesses, JAX first):
forward + loss; forward + backward (gradients); the whole step (gradients and
Adafactor update). Differences between rows attribute the time to the backward
pass and to the optimizer. Printed as a table; nothing is written.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step  # noqa: E402  (shapes and batches shared with the A/B benchmark)

REPO = train_step.REPO


def _timeit(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def jax_phases(shape_name: str, reps: int) -> dict:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from t5x_lite import startup

    startup.tune_malloc()  # as the CLI and train_step.py's t5x_lite worker
    import jax

    shape = train_step.SHAPES[shape_name]
    model, trainer, batch, _ = train_step.t5x_lite_trainer(shape["gin"], shape)
    state = trainer.init(0, batch)
    gb = trainer.global_batch(batch)
    loss = jax.jit(lambda p, b: model.loss_fn(p, b, None)[0])
    grads = jax.jit(lambda p, b: jax.grad(lambda q: model.loss_fn(q, b, None)[0])(p))
    out = {"forward + loss": _timeit(lambda: loss(state.params, gb).block_until_ready(), reps),
           "forward + backward": _timeit(lambda: jax.block_until_ready(grads(state.params, gb)), reps)}
    box = {"state": state}

    def step():
        box["state"], m = trainer.step(box["state"], gb)
        m["loss"].block_until_ready()

    out["whole step (+ Adafactor)"] = _timeit(step, reps)
    return out


def hf_phases(shape_name: str, reps: int) -> dict:
    import torch
    from transformers import T5Config
    from transformers.optimization import Adafactor

    import hf_reference

    torch.set_flush_denormal(True)
    shape = train_step.SHAPES[shape_name]
    config = T5Config(vocab_size=shape["vocab_size"], d_model=shape["d_model"], d_ff=shape["d_ff"],
                      d_kv=shape["d_kv"], num_heads=shape["num_heads"], num_layers=shape["num_encoder_layers"],
                      num_decoder_layers=shape["num_decoder_layers"], feed_forward_proj="gated-gelu",
                      tie_word_embeddings=False, dropout_rate=0.0, decoder_start_token_id=0)
    torch.manual_seed(0)
    model = hf_reference.untied_t5(config)[0].train()
    opt = Adafactor(model.parameters(), lr=1e-3, scale_parameter=True, relative_step=False, warmup_init=False)
    inputs, _, targets, _ = train_step.make_batch(shape)
    ids, labels = torch.from_numpy(inputs.astype("int64")), torch.from_numpy(targets.astype("int64"))

    def fwd():
        with torch.no_grad():
            model(input_ids=ids, labels=labels).loss.item()

    def fwd_bwd():
        model(input_ids=ids, labels=labels).loss.backward()
        model.zero_grad(set_to_none=True)

    def step():
        model(input_ids=ids, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return {"forward + loss": _timeit(fwd, reps), "forward + backward": _timeit(fwd_bwd, reps),
            "whole step (+ Adafactor)": _timeit(step, reps)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="small", choices=sorted(train_step.SHAPES))
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--worker", choices=("jax", "hf"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        fn = jax_phases if args.worker == "jax" else hf_phases
        print(json.dumps(fn(args.shape, args.reps)))
        return
    results = {}
    for worker in ("jax", "hf"):
        env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.run([sys.executable, __file__, "--worker", worker, "--shape", args.shape, "--reps",
                               str(args.reps)], cwd=REPO, env=env, capture_output=True, text=True, check=True)
        results[worker] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"shape {args.shape}, median of {args.reps} (seconds)")
    print(f"{'phase':<28} {'t5x_lite':>9} {'HF':>9} {'HF/t5x_lite':>12}")
    for phase in results["jax"]:
        a, b = results["jax"][phase], results["hf"][phase]
        print(f"{phase:<28} {a:9.3f} {b:9.3f} {b / a:12.3f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
