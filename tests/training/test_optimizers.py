"""Schedules, optimizers, weight-decay masks and microbatched gradient accumulation (toy models, plain JAX)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from t5x_lite.training import losses
from t5x_lite.training import optimizers as O


def _rms(x):
    return float(np.sqrt(np.mean(np.square(np.asarray(x, np.float64)))))


# --------------------------------------------------------------------------- schedules


def test_rsqrt_schedule_is_t5s():
    lr = O.make_schedule("rsqrt")  # base 1.0, 10k constant steps
    for step in (0, 1, 5_000, 10_000):
        assert float(lr(step)) == pytest.approx(0.01, rel=1e-6)
    assert float(lr(40_000)) == pytest.approx(1 / np.sqrt(40_000), rel=1e-6)
    assert float(lr(90_000)) == pytest.approx(1 / 300, rel=1e-6)

    warm = O.rsqrt_schedule(base_learning_rate=2.0, warmup_steps=100, linear_warmup_steps=10)
    assert [float(warm(s)) for s in (0, 5, 10, 50, 400)] == pytest.approx([0.0, 0.1, 0.2, 0.2, 0.1], rel=1e-6)


def test_linear_cosine_constant_schedules():
    lin = O.make_schedule("linear_decay", peak_learning_rate=1.0, total_steps=110, warmup_steps=10, final_fraction=0.1)
    assert [float(lin(s)) for s in (0, 5, 10, 60, 110, 500)] == pytest.approx([0.0, 0.5, 1.0, 0.55, 0.1, 0.1], abs=1e-6)

    cos = O.make_schedule(
        "cosine", peak_learning_rate=2e-2, total_steps=110, warmup_steps=10, init_fraction=0.5, final_fraction=0.01
    )
    got = [float(cos(s)) for s in (0, 5, 10, 60, 110, 1000)]
    assert got == pytest.approx([1e-2, 1.5e-2, 2e-2, 0.5 * (2e-2 + 2e-4), 2e-4, 2e-4], rel=1e-5)
    no_warmup = O.cosine_schedule(peak_learning_rate=1.0, total_steps=100)
    assert [float(no_warmup(s)) for s in (0, 50, 100)] == pytest.approx([1.0, 0.5, 0.0], abs=1e-6)

    assert float(O.make_schedule("constant")(12345)) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match=r"warmup_steps \(10\) must be >= 0 and below total_steps \(10\); in gin, "
                                         r"optimizers.make_schedule.warmup_steps and .total_steps \(a run config may set them "
                                         r"from macros such as WARMUP_STEPS and TRAIN_STEPS\)"):
        O.cosine_schedule(peak_learning_rate=1.0, total_steps=10, warmup_steps=10)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="constant, cosine, linear_decay, rsqrt"):
        O.make_schedule("cosin")
    with pytest.raises(ValueError, match="adafactor_t5, adamw, adamw_scaled"):
        O.make_optimizer("adam_w", learning_rate=1e-3)


# --------------------------------------------------------------------------- optimizers


def _update(tx, grads_seq, params):
    """Updates of the last of a sequence of gradient steps (params held fixed), as one compiled call:
    cheaper on CPU than optax's many small op-by-op dispatches."""

    def run(grads_seq, params):
        state = tx.init(params)
        for grads in grads_seq:
            updates, state = tx.update(grads, state, params)
        return updates, state

    return jax.jit(run)(grads_seq, params)


def test_adafactor_t5_factors_matrices_only_and_matches_optax():
    rng = np.random.default_rng(0)
    params = {
        "w": jnp.asarray(rng.normal(size=(256, 384)), jnp.float32),
        "small": jnp.asarray(rng.normal(size=(64, 256)), jnp.float32),  # one dim < 128: not factored
        "b": jnp.asarray(rng.normal(size=(256,)), jnp.float32),
    }
    grads = [jax.tree.map(lambda p, i=i: jnp.asarray(rng.normal(size=p.shape), p.dtype), params) for i in range(2)]
    tx = O.make_optimizer("adafactor_t5", learning_rate=O.make_schedule("rsqrt"))
    updates, state = _update(tx, grads, params)

    v_row, v_col, v = (optax.tree_utils.tree_get(state, k) for k in ("v_row", "v_col", "v"))
    assert v_row["w"].shape == (256,) and v_col["w"].shape == (384,) and v["w"].shape == (1,)
    for name in ("small", "b"):
        assert v[name].shape == params[name].shape and v_row[name].shape == (1,)

    reference = optax.adafactor(
        O.make_schedule("rsqrt"), min_dim_size_to_factor=128, decay_rate=0.8, multiply_by_parameter_scale=True,
        clipping_threshold=1.0, momentum=None, eps=1e-30, factored=True,
    )
    expected, _ = _update(reference, grads, params)
    for name in params:
        np.testing.assert_allclose(updates[name], expected[name], rtol=1e-5, atol=1e-9)


def test_attention_kernels_are_seen_as_t5xs_matrices():
    shape = O.t5x_matrix_shape
    assert shape(("encoder", "layers_0", "attention", "query", "kernel"), (512, 6, 64)) == (512, 384)
    assert shape(("decoder", "layers_0", "self_attention", "out", "kernel"), (6, 64, 512)) == (384, 512)
    assert shape(("encoder", "layers", "attention", "key", "kernel"), (8, 512, 6, 64)) == (8, 512, 384)
    assert shape(("encoder", "layers", "attention", "out", "kernel"), (8, 6, 64, 512)) == (8, 384, 512)
    assert shape(("encoder", "layers_0", "mlp", "wi", "kernel"), (512, 1024)) == (512, 1024)
    assert shape(("encoder", "relpos_bias", "rel_embedding"), (32, 6)) == (32, 6)


def test_adafactor_t5_factors_attention_kernels_as_t5x_does():
    # t5x stores [embed, heads * kv] and [heads * kv, embed] and factors those; optax's own rule on the
    # 3-D kernel would keep a full second moment (head_dim 64 < 128).
    rng = np.random.default_rng(3)
    params = {"attention": {
        "query": {"kernel": jnp.asarray(rng.normal(size=(128, 4, 64)), jnp.float32)},
        "out": {"kernel": jnp.asarray(rng.normal(size=(4, 64, 128)), jnp.float32)},
    }}
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params) for _ in range(2)]
    tx = O.make_optimizer("adafactor_t5", learning_rate=O.make_schedule("rsqrt"))
    updates, state = _update(tx, grads, params)

    v_row, v_col = (optax.tree_utils.tree_get(state, k)["attention"] for k in ("v_row", "v_col"))
    for name in ("query", "out"):  # one statistic per row and one per column of the 128 x 256 matrix
        assert sorted([v_row[name]["kernel"].shape, v_col[name]["kernel"].shape]) == [(128,), (256,)]

    # The same as optax's Adafactor on the 2-D matrices t5x keeps.
    def as_matrices(tree):
        return {"q": tree["attention"]["query"]["kernel"].reshape(128, 256),
                "o": tree["attention"]["out"]["kernel"].reshape(256, 128)}

    reference = optax.adafactor(
        O.make_schedule("rsqrt"), min_dim_size_to_factor=128, decay_rate=0.8, multiply_by_parameter_scale=True,
        clipping_threshold=1.0, momentum=None, eps=1e-30, factored=True,
    )
    expected, _ = _update(reference, [as_matrices(g) for g in grads], as_matrices(params))
    got = as_matrices(updates)
    assert updates["attention"]["query"]["kernel"].shape == (128, 4, 64)
    for name in ("q", "o"):
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-9)


def test_adafactor_t5_update_clipping():
    # Step 2's second moment still remembers step 1's tiny gradient, so the unclipped update
    # has RMS 1/sqrt(1 - decay) = 2^0.4 ~ 1.32 (decay 1 - 2^-0.8); T5's clipping caps it at 1
    # (times lr 1 and param scale rms(ones) = 1).
    params = {"b": jnp.ones((8,), jnp.float32)}
    grads = [{"b": jnp.full((8,), 1e-3)}, {"b": jnp.ones((8,))}]
    clipped, _ = _update(O.adafactor_t5(1.0), grads, params)
    unclipped, _ = _update(optax.adafactor(1.0, clipping_threshold=None), grads, params)
    assert _rms(unclipped["b"]) == pytest.approx(2**0.4, rel=1e-4)
    assert _rms(clipped["b"]) == pytest.approx(1.0, rel=1e-5)
    assert float(clipped["b"][0]) < 0  # descent


def test_adamw_scaled_scales_by_param_rms():
    rng = np.random.default_rng(1)
    params = {
        "big": jnp.asarray(0.5 * rng.normal(size=(16, 8)), jnp.float32),
        "tiny": jnp.asarray(1e-5 * rng.normal(size=(16, 8)), jnp.float32),
    }
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params) for _ in range(2)]
    scaled, _ = _update(O.adamw_scaled(0.1), grads, params)
    plain, _ = _update(O.adamw(0.1), grads, params)
    for name, p in params.items():
        ratio = np.asarray(scaled[name]) / np.asarray(plain[name])
        np.testing.assert_allclose(ratio, max(1e-3, _rms(p)), rtol=1e-5)

    # Decoupled weight decay is lr * wd * p for both (not RMS-scaled); zero grads isolate it.
    zeros = [jax.tree.map(jnp.zeros_like, params)]
    for tx in (O.adamw_scaled(0.1, weight_decay=0.5), O.adamw(0.1, weight_decay=0.5)):
        decayed, _ = _update(tx, zeros, params)
        np.testing.assert_allclose(decayed["big"], -0.05 * params["big"], rtol=1e-6)


def test_scanned_layers_get_per_layer_rms():
    # A [layers, ...] stack must be optimized exactly like its layers one by one.
    rng = np.random.default_rng(2)
    stacked = {"layers": {"w": jnp.asarray(rng.normal(size=(2, 8, 4)) * np.array([1.0, 1e-2])[:, None, None],
                                           jnp.float32)}}
    grads = [{"layers": {"w": jnp.asarray(rng.normal(size=(2, 8, 4)) * s, jnp.float32)}} for s in (1e-3, 1.0)]
    loop = {f"layers_{i}": {"w": stacked["layers"]["w"][i]} for i in range(2)}
    loop_grads = [{f"layers_{i}": {"w": g["layers"]["w"][i]} for i in range(2)} for g in grads]
    for make in (O.adafactor_t5, O.adamw_scaled):
        got, _ = _update(make(0.5), grads, stacked)
        want, _ = _update(make(0.5), loop_grads, loop)
        np.testing.assert_allclose(got["layers"]["w"], np.stack([want[f"layers_{i}"]["w"] for i in range(2)]),
                                   rtol=1e-5)


def test_adafactor_refuses_a_layer_stack_it_would_factor_across():
    # optax factors a leaf's two largest dims; from 128 layers on, the layer axis would be one of them.
    params = {"layers": {"scale": jnp.ones((128, 256))}}
    with pytest.raises(ValueError, match="layers/scale stacks 128 layers"):
        O.adafactor_t5(1e-3).init(params)
    O.adafactor_t5(1e-3).init({"layers": {"scale": jnp.ones((127, 256))}})


def test_decay_mask():
    z = np.zeros
    params = {
        "token_embedder": {"embedding": z((10, 4))},
        "encoder": {
            "relpos_bias": {"rel_embedding": z((2, 8))},
            "layers_0": {"attention": {"query": {"kernel": z((4, 4))}}, "pre_attention_layer_norm": {"scale": z(4)}},
            "encoder_norm": {"scale": z(4)},
        },
        "decoder": {"layers": {"mlp": {"wi": {"kernel": z((3, 4, 8)), "bias": z((3, 8))}},
                               "layer_norm": {"scale": z((3, 4))}}},
        "pooler": {"dense": {"kernel": z((4, 4)), "bias": z(4)}},
        "LayerNorm": {"weight": z((2, 2))},  # a norm found by its module name, whatever the leaf is called
    }
    mask = O.decay_mask(params)
    decayed = {jax.tree_util.keystr(p) for p, m in jax.tree_util.tree_leaves_with_path(mask) if m}
    assert decayed == {
        "['token_embedder']['embedding']", "['encoder']['relpos_bias']['rel_embedding']",
        "['encoder']['layers_0']['attention']['query']['kernel']", "['decoder']['layers']['mlp']['wi']['kernel']",
        "['pooler']['dense']['kernel']",
    }
    no_embed = O.decay_mask(params, exclude_embeddings=True)
    assert not no_embed["token_embedder"]["embedding"] and not no_embed["encoder"]["relpos_bias"]["rel_embedding"]
    assert no_embed["pooler"]["dense"]["kernel"]

    # make_optimizer's default mask: only the kernel decays.
    p = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
    tx = O.make_optimizer("adamw", learning_rate=0.1, weight_decay=0.5)
    updates, _ = _update(tx, [jax.tree.map(jnp.zeros_like, p)], p)
    np.testing.assert_allclose(updates["dense"]["kernel"], -0.05)
    np.testing.assert_allclose(updates["dense"]["bias"], 0.0)


def test_grad_clip_norm_caps_the_global_norm():
    params = {"a": jnp.zeros((3,)), "b": jnp.zeros((2, 2))}
    big = {"a": jnp.array([3.0, 0.0, 0.0]), "b": jnp.full((2, 2), 2.0)}  # global norm 5
    small = jax.tree.map(lambda g: g / 50, big)  # global norm 0.1
    tx = O.make_optimizer("adamw", learning_rate=1e-3, grad_clip_norm=1.0)
    for grads, norm in ((big, 1.0), (small, 0.1)):
        _, state = _update(tx, [grads], params)
        mu = optax.tree_utils.tree_get(state, "mu")  # (1 - b1) * the clipped gradient
        assert float(optax.global_norm(mu)) / 0.1 == pytest.approx(norm, rel=1e-5)
        np.testing.assert_allclose(mu["b"] / mu["a"][0], grads["b"] / grads["a"][0], rtol=1e-6)  # direction kept


# --------------------------------------------------------------------------- gradient accumulation


def _toy_loss(params, batch, rng):
    """Token-weighted mean squared error of a one-hidden-layer MLP over [batch, length, features]."""
    del rng
    h = jnp.tanh(batch["inputs"] @ params["w1"] + params["b1"])
    err = (h @ params["w2"])[..., 0] - batch["targets"]
    w = batch["weights"]
    num_tokens = jnp.sum(w)
    denom = jnp.maximum(num_tokens, 1.0)
    loss = jnp.sum(w * err**2) / denom
    return loss, {"loss": loss, "abs_error": jnp.sum(w * jnp.abs(err)) / denom, "num_tokens": num_tokens}


def _toy_setup():
    rng = np.random.default_rng(3)
    params = {"w1": rng.normal(size=(5, 6)), "b1": rng.normal(size=(6,)), "w2": rng.normal(size=(6, 1))}
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    # Microbatch i holds rows i and i+4: token counts 7+1, 0+0, 3+2, 5+4 (one microbatch is all padding).
    lengths = np.array([7, 0, 3, 5, 1, 0, 2, 4])
    batch = {
        "inputs": jnp.asarray(rng.normal(size=(8, 7, 5)), jnp.float32),
        "targets": jnp.asarray(rng.normal(size=(8, 7)), jnp.float32),
        "weights": jnp.asarray(np.arange(7)[None, :] < lengths[:, None], jnp.float32),
    }
    return params, batch


def _rng_loss(params, batch, rng):
    u = jax.random.uniform(rng)
    return u + 0.0 * jnp.sum(params["w2"]), {"u": u, "num_tokens": jnp.float32(1.0)}


@jax.jit
def _all_paths(params, batch, rng):
    plain = jax.value_and_grad(_toy_loss, has_aux=True)(params, batch, rng)
    one = O.accumulate_gradients(_toy_loss, params, batch, rng, 1)
    four = O.accumulate_gradients(_toy_loss, params, batch, rng, 4)
    rngs = O.accumulate_gradients(_rng_loss, params, batch, rng, 4)[1]["u"]
    expected_rngs = jnp.mean(jnp.stack([jax.random.uniform(jax.random.fold_in(rng, i)) for i in range(4)]))
    return plain, one, four, (rngs, expected_rngs)


def test_accumulate_gradients_equals_full_batch():
    params, batch = _toy_setup()
    ((loss, metrics), grads), one, four, (rngs, expected_rngs) = _all_paths(params, batch, jax.random.key(0))
    assert float(rngs) == pytest.approx(float(expected_rngs), rel=1e-6)  # microbatch i gets fold_in(rng, i)

    # One microbatch is the plain value_and_grad path, bit for bit.
    assert float(one[0]) == float(loss)
    jax.tree.map(np.testing.assert_array_equal, (one[1], one[2]), (metrics, grads))

    # Four uneven microbatches: the token-weighted combination equals the full batch.
    loss4, metrics4, grads4 = four
    assert float(loss4) == pytest.approx(float(loss), abs=1e-6)
    assert float(metrics4["num_tokens"]) == float(metrics["num_tokens"]) == 22.0
    for k in ("loss", "abs_error"):
        assert float(metrics4[k]) == pytest.approx(float(metrics[k]), abs=1e-6)
    jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-6, rtol=1e-6), grads4, grads)
    assert jax.tree.map(lambda g: g.dtype, grads4) == jax.tree.map(lambda g: g.dtype, grads)


def test_accumulate_gradients_sums_a_loss_with_a_fixed_normalizer():
    # t5x's loss_normalizing_factor: the full-batch loss is sum(w * loss) / F, so microbatches add
    # up; weighting them by their token counts (the per-token mean's rule) changed the gradient's
    # direction, not just its scale. Accuracy stays a per-token mean.
    rng = np.random.default_rng(5)
    lengths = np.array([6, 1, 0, 3, 2, 5, 4, 6])
    batch = {"x": jnp.asarray(rng.normal(size=(8, 6, 5)), jnp.float32),
             "targets": jnp.asarray(rng.integers(0, 13, (8, 6)), jnp.int32),
             "weights": jnp.asarray(np.arange(6)[None] < lengths[:, None], jnp.float32)}
    params = {"w": jnp.asarray(rng.normal(size=(5, 13)), jnp.float32)}

    def loss_fn(p, b, r):
        del r
        return losses.weighted_mean_loss(b["x"] @ p["w"], b["targets"], b["weights"], z_loss=1e-2, normalizer=48.0)

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, None)
    for k in (2, 4):
        loss_k, metrics_k, grads_k = jax.jit(functools.partial(
            O.accumulate_gradients, loss_fn, num_microbatches=k, fixed_normalizer=True))(params, batch, None)
        assert float(loss_k) == pytest.approx(float(loss), rel=1e-6)
        for name in ("loss", "z_loss", "accuracy", "num_tokens"):
            assert float(metrics_k[name]) == pytest.approx(float(metrics[name]), rel=1e-6), (k, name)
        np.testing.assert_allclose(grads_k["w"], grads["w"], rtol=1e-5, atol=1e-7)


def test_accumulate_gradients_rejects_indivisible_batch():
    params, batch = _toy_setup()
    with pytest.raises(ValueError, match="not divisible by num_microbatches=3"):
        O.accumulate_gradients(_toy_loss, params, batch, None, 3)
