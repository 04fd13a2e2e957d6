"""Train step with dropout 0.1: masks drawn per element (Hugging Face's way, the default) against t5x's masks
shared along the sequence (``T5Config.broadcast_dropout = True``), the step without dropout, and attention on the
``einsum`` reference path (which dropout took before the hand-written path had it).

    python benchmarks/dropout_masks.py [--shape tiny] [--rounds 10] [--steps 5] [--arms per_element,broadcast]

The arms are trainers in one process, their steps alternated round by round (the CPU's speed drifts), each
round timing ``--steps`` steps. Prints each arm's median milliseconds per step and its ratio to the
first arm's (the per-element masks, by default).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ARMS = {  # name -> gin bindings
    "per_element": ["models.T5Config.dropout_rate = 0.1", "models.T5Config.broadcast_dropout = False"],
    "broadcast": ["models.T5Config.dropout_rate = 0.1", "models.T5Config.broadcast_dropout = True"],
    "no_dropout": ["models.T5Config.dropout_rate = 0.0"],
    # the attention path JAX differentiates, which dropout took before the hand-written one had it
    "einsum_attention": ["models.T5Config.dropout_rate = 0.1", "models.T5Config.broadcast_dropout = False",
                         "models.T5Config.attention_impl = 'einsum'"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="tiny")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    args = parser.parse_args()
    names = args.arms.split(",")
    unknown = [name for name in names if name not in ARMS]
    if unknown:
        parser.error(f"unknown arm {unknown[0]!r}; choose from {', '.join(ARMS)}")

    import jax
    import numpy as np

    import train_step

    shape = train_step.SHAPES[args.shape]
    arms = {}
    for name in names:
        _, trainer, batch, _ = train_step.t5x_lite_trainer(shape["gin"], shape, ARMS[name],
                                                          use_dropout=name != "no_dropout")
        state = trainer.init(0, batch)
        global_batch = trainer.global_batch(batch)
        for _ in range(3):  # compile and warm up
            state, metrics = trainer.step(state, global_batch)
        jax.block_until_ready(metrics)
        arms[name] = {"trainer": trainer, "state": state, "batch": global_batch, "seconds": []}
    for _ in range(args.rounds):
        for arm in arms.values():
            start = time.perf_counter()
            for _ in range(args.steps):
                arm["state"], metrics = arm["trainer"].step(arm["state"], arm["batch"])
            jax.block_until_ready(metrics)
            arm["seconds"].append((time.perf_counter() - start) / args.steps)
    base = float(np.median(arms[names[0]]["seconds"]))
    for name, arm in arms.items():
        median = float(np.median(arm["seconds"]))
        print(f"{name:12s} {median * 1000:7.1f} ms/step  {base / median:.2f}x {names[0]}  "
              f"(rounds: {' '.join(f'{s * 1000:.0f}' for s in arm['seconds'])})")


if __name__ == "__main__":
    main()
