"""Cross-entropy with z-loss and label smoothing: values and the custom VJP against autodiff."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from t5x_lite.training.losses import cross_entropy_with_logits, weighted_mean_loss


def _reference(logits, targets, z_loss, smoothing):
    """Plain autodiff version: optax's smoothed cross-entropy plus z * logsumexp^2."""
    vocab = logits.shape[-1]
    conf, low = 1.0 - smoothing, smoothing / (vocab - 1)
    soft = jax.nn.one_hot(targets, vocab) * (conf - low) + low
    log_z = jax.nn.logsumexp(logits, axis=-1)
    return optax.softmax_cross_entropy(logits, soft) + z_loss * log_z ** 2


def test_matches_reference_values_and_gradients():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(0, 3, (2, 5, 11)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 11, (2, 5)))
    for z, s in [(0.0, 0.0), (1e-4, 0.0), (1e-2, 0.1)]:
        ours = lambda x: cross_entropy_with_logits(x, targets, z_loss=z, label_smoothing=s)[0].sum()  # noqa: E731
        ref = lambda x: _reference(x, targets, z, s).sum()  # noqa: E731
        const = 0.0
        if s:  # ours subtracts the smoothed distribution's entropy per token
            conf, low = 1 - s, s / 10
            const = -(conf * np.log(conf) + 10 * low * np.log(low)) * targets.size
        np.testing.assert_allclose(ours(logits), ref(logits) - const, rtol=1e-5)
        np.testing.assert_allclose(jax.grad(ours)(logits), jax.grad(ref)(logits), atol=1e-6)


def test_label_smoothing_scores_the_smoothed_distribution_as_zero():
    vocab, s = 7, 0.1
    soft = np.full(vocab, s / (vocab - 1))
    soft[3] = 1 - s
    logits = jnp.asarray(np.log(soft))[None, None]
    loss, _ = cross_entropy_with_logits(logits, jnp.array([[3]]), label_smoothing=s)
    assert abs(float(loss[0, 0])) < 1e-5


def test_weighted_mean_ignores_padding_and_supports_a_fixed_normalizer():
    logits = jnp.zeros((1, 4, 5))
    targets = jnp.array([[1, 2, 0, 0]])
    weights = (targets != 0).astype(jnp.float32)
    loss, metrics = weighted_mean_loss(logits, targets, weights)
    np.testing.assert_allclose(loss, np.log(5), rtol=1e-6)
    assert float(metrics["num_tokens"]) == 2
    fixed, _ = weighted_mean_loss(logits, targets, weights, normalizer=8.0)
    np.testing.assert_allclose(fixed, 2 * np.log(5) / 8, rtol=1e-6)


def test_argmax_equals_matches_argmax_including_ties():
    from t5x_lite.training.losses import argmax_equals

    rng = np.random.default_rng(1)
    # Small integer logits: many rows have tied maxima, where argmax takes the first.
    logits = jnp.asarray(rng.integers(0, 3, (64, 6)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 6, (64,)))
    expected = np.asarray(jnp.argmax(logits, axis=-1) == targets)
    assert 0 < expected.sum() < 64
    np.testing.assert_array_equal(np.asarray(argmax_equals(logits, targets)), expected)


def test_loss_and_gradient_under_jit_with_bfloat16_logits():
    rng = np.random.default_rng(2)
    logits = jnp.asarray(rng.normal(0, 2, (3, 4, 9)), jnp.bfloat16)
    targets = jnp.asarray(rng.integers(0, 9, (3, 4)))
    f = jax.jit(lambda x: weighted_mean_loss(x, targets, z_loss=1e-4, label_smoothing=0.1)[0])
    g = jax.jit(jax.grad(lambda x: _reference(x.astype(jnp.float32), targets, 1e-4, 0.1).mean()))
    assert np.isfinite(float(f(logits)))
    np.testing.assert_allclose(np.asarray(jax.jit(jax.grad(f))(logits), np.float32),
                               np.asarray(g(logits), np.float32), atol=1e-2)
