"""Where t5x_lite's train step spends its time, per XLA op, from a JAX profiler trace.

    python benchmarks/train_step_profile.py [--shape tiny|small] [--steps 3] [--top 25]

Runs the real ``Trainer`` step (as ``train_step.py``'s t5x_lite arm, malloc
settings included), traces ``--steps`` steps with ``jax.profiler``, and sums
each XLA op's time from the Perfetto trace. Every op is named back to the model
code through the compiled HLO's ``op_name`` metadata, and grouped by part of
the model (attention, MLP, output layer, loss, optimizer) and by direction
(forward, backward). On XLA:CPU, independent ops can run concurrently, so the
per-op sum may exceed the step's wall time; the shares still say which ops
matter. Prints two tables; writes nothing unless ``--hlo-out`` is given.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step  # noqa: E402  (shapes and batches shared with the A/B benchmark)

PARTS = ("logits_dense", "relpos_bias", "attention", "mlp", "layer_norm", "token_embedder")
NOT_OPS = ("$", "Thunk", "Pjit", "Slinky")  # Python frames and runtime bookkeeping in the trace


def op_metadata(hlo_text: str) -> dict:
    """HLO instruction name -> (result shape, op_name metadata)."""
    out = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+)", line)
        if m and m.group(1) not in out:
            name = re.search(r'op_name="([^"]*)"', line)
            out[m.group(1)] = (m.group(2), name.group(1) if name else "")
    return out


def traced_events(run_steps) -> list:
    """Run ``run_steps()`` under ``jax.profiler`` and return the Perfetto trace's events."""
    import jax

    with tempfile.TemporaryDirectory() as log_dir:
        with jax.profiler.trace(log_dir, create_perfetto_trace=True):
            run_steps()
        trace_file = glob.glob(os.path.join(log_dir, "**", "perfetto_trace.json.gz"), recursive=True)[0]
        with gzip.open(trace_file) as f:
            trace = json.load(f)
    return trace["traceEvents"] if isinstance(trace, dict) else trace


def compiled_step_hlo(trainer, state, global_batch) -> str:
    """The train step's optimized HLO text: the program ``Trainer.init`` compiled, else compiled again."""
    if trainer._precompiled is not None:
        return trainer._precompiled[1].result().as_text()
    return trainer._step_fn.lower(state, global_batch).compile().as_text()


def part_of(op_name: str) -> str:
    direction = "backward" if "transpose(jvp" in op_name else "forward"
    for part in PARTS:
        if part in op_name:
            return f"{part} {direction}"
    if "jvp(" not in op_name:
        return "optimizer and metrics"
    return f"loss {direction}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="tiny", choices=sorted(train_step.SHAPES))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--binding", action="append", default=[], help="extra gin binding for the model")
    p.add_argument("--hlo-out", default="", help="also write the compiled step's HLO text here")
    args = p.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from t5x_lite import startup

    startup.tune_malloc()

    shape = train_step.SHAPES[args.shape]
    _, trainer, batch, tokens = train_step.t5x_lite_trainer(shape["gin"], shape, args.binding)
    box = {"state": trainer.init(0, batch)}
    global_batch = trainer.global_batch(batch)

    def step():
        box["state"], metrics = trainer.step(box["state"], global_batch)
        metrics["loss"].block_until_ready()

    for _ in range(2):
        step()
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    step_ms = (time.perf_counter() - t) / args.steps * 1e3
    events = traced_events(lambda: [step() for _ in range(args.steps)])
    op_us = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and not e["name"].startswith(NOT_OPS):
            op_us[e["name"]] += e["dur"]
    hlo = compiled_step_hlo(trainer, box["state"], global_batch)
    if args.hlo_out:
        with open(args.hlo_out, "w") as f:
            f.write(hlo)
    meta = op_metadata(hlo)
    per_step = {name: us / args.steps / 1e3 for name, us in op_us.items()}
    total = sum(per_step.values())
    print(f"{args.shape}: {step_ms:.1f} ms per step untraced ({tokens / step_ms * 1e3:,.0f} tokens/s); "
          f"XLA ops sum to {total:.1f} ms per step")
    parts, counts = collections.Counter(), collections.Counter()
    for name, ms in per_step.items():
        part = part_of(meta.get(name, ("", ""))[1])
        parts[part] += ms
        counts[part] += 1
    print(f"\n{'part of the model':<28} {'ms/step':>9} {'share':>6} {'ops':>5}")
    for part, ms in parts.most_common():
        print(f"{part:<28} {ms:9.1f} {ms / total:6.1%} {counts[part]:5d}")
    print(f"\n{'op':<28} {'ms/step':>9} {'result':<28} model code (op_name)")
    for name, ms in sorted(per_step.items(), key=lambda kv: -kv[1])[:args.top]:
        result, op_name = meta.get(name, ("?", "?"))
        print(f"{name[:28]:<28} {ms:9.2f} {result[:28]:<28} {op_name.removeprefix('jit(_train_step)/')[-70:]}")


if __name__ == "__main__":
    main()
