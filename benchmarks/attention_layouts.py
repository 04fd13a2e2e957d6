"""One attention layer's forward + backward, with attention's products in t5x_lite's layouts and as plain einsums.

    python benchmarks/attention_layouts.py [--shapes tiny,small] [--rounds 7]

``layers._scores`` and ``layers._weighted_sum`` move the heads next to the batch
axis before two kinds of product (``q k^T`` / ``dO v^T`` and ``P v`` / ``dS k``);
the plain arm computes all six products as einsums on [B, L, N, H] operands
(``layers._heads_first_pays`` replaced by ``train_step_variants.never``: the
code before). The layer is the
model's: query/key/value/output projections (``layers.dense_dot``) around
``layers._attention`` with a [1, N, Q, K] bias, for the encoder's self-attention,
the decoder's cross-attention and the decoder's self-attention of the
benchmark's shapes (``train_step.SHAPES``). The two arms alternate round by
round (the CPU's speed drifts); the gradients of both must agree before
anything is timed. Prints a table; writes nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step  # noqa: E402  (the benchmark's model shapes)
import train_step_variants  # noqa: E402


def layer_shapes(shape: dict) -> dict:
    """(batch, queries, keys, heads, head_dim, d_model) of each kind of attention layer."""
    b, enc, dec = shape["batch"], shape["inputs"], shape["targets"]
    heads, head_dim, d_model = shape["num_heads"], shape["d_kv"], shape["d_model"]
    return {
        "encoder self": (b, enc, enc, heads, head_dim, d_model),
        "decoder cross": (b, dec, enc, heads, head_dim, d_model),
        "decoder self": (b, dec, dec, heads, head_dim, d_model),
    }


def layer_gradients(batch, queries, keys, heads, head_dim, d_model):
    """A jitted function of nothing -> the layer's gradients, traced with the products ``layers._heads_first_pays`` picks now."""
    import jax

    from t5x_lite.models import layers

    rng = jax.random.split(jax.random.PRNGKey(0), 8)
    args = (
        jax.random.normal(rng[0], (batch, queries, d_model)),
        jax.random.normal(rng[1], (batch, keys, d_model)),
        *(jax.random.normal(rng[i], (d_model, heads, head_dim)) * d_model**-0.5 for i in (2, 3, 4)),
        jax.random.normal(rng[5], (heads, head_dim, d_model)) * (heads * head_dim) ** -0.5,
        jax.random.normal(rng[6], (1, heads, queries, keys)),
    )
    d_out = jax.random.normal(rng[7], (batch, queries, d_model))

    def layer(x, x_kv, wq, wk, wv, wo, bias):
        q, k, v = (layers.dense_dot(inp, w, 1) for inp, w in ((x, wq), (x_kv, wk), (x_kv, wv)))
        return layers.dense_dot(layers._attention(q, k, v, bias, None, None, 1.0, 1.0), wo, 2)

    fn = jax.jit(lambda *a: jax.vjp(layer, *a)[1](d_out))
    jax.block_until_ready(fn(*args))  # trace and compile now, under the caller's products
    return lambda: fn(*args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="tiny,small")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import numpy as np

    from t5x_lite.models import layers

    current = layers._heads_first_pays
    print(f"{'shape':<6} {'layer':<14} {'(B, Q, K, N, H, D)':<28} {'current ms':>10} {'plain ms':>9} {'ratio':>6}")
    for shape_name in args.shapes.split(","):
        for kind, dims in layer_shapes(train_step.SHAPES[shape_name]).items():
            arms = {}
            for arm, rule in (("current", current), ("plain", train_step_variants.never)):
                layers._heads_first_pays = rule
                arms[arm] = layer_gradients(*dims)
            layers._heads_first_pays = current
            for a, b in zip(arms["current"](), arms["plain"]()):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4 * float(np.abs(b).max()))
            once = time.perf_counter()
            jax.block_until_ready(arms["plain"]())
            reps = max(1, min(20, int(0.2 / (time.perf_counter() - once))))
            times = {arm: [] for arm in arms}
            for _ in range(args.rounds):
                for arm, fn in arms.items():
                    t = time.perf_counter()
                    for _ in range(reps):
                        jax.block_until_ready(fn())
                    times[arm].append((time.perf_counter() - t) / reps * 1e3)
            cur, plain = statistics.median(times["current"]), statistics.median(times["plain"])
            print(f"{shape_name:<6} {kind:<14} {str(dims):<28} {cur:10.2f} {plain:9.2f} {cur / plain:6.2f}", flush=True)


if __name__ == "__main__":
    main()
