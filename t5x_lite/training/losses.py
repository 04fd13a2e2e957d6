"""Cross-entropy with z-loss and label smoothing, in float32.

The custom VJP keeps the backward pass to one softmax over the vocabulary:
d(loss)/d(logits) = softmax * (1 + 2 z log Z) - soft_targets, instead of
letting autodiff differentiate through log-softmax and the z-loss separately.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

Array = jax.Array


@jax.custom_vjp
def _xent_with_z_loss(logits: Array, soft_targets: Array, z_loss: float) -> tuple[Array, Array]:
    loss, z, _ = _forward(logits, soft_targets, z_loss)
    return loss, z


def _forward(logits, soft_targets, z_loss):
    logits = logits.astype(jnp.float32)
    max_logit = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    shifted = logits - max_logit
    sum_exp = jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True)
    log_z = jnp.squeeze(jnp.log(sum_exp) + max_logit, axis=-1)
    log_softmax = shifted - jnp.log(sum_exp)
    loss = -jnp.sum(soft_targets * log_softmax, axis=-1)
    z = z_loss * jnp.square(log_z)
    return loss + z, z, (soft_targets, shifted, sum_exp, log_z)


def _fwd(logits, soft_targets, z_loss):
    loss, z, res = _forward(logits, soft_targets, z_loss)
    return (loss, z), (*res, z_loss)


def _bwd(res, g):
    soft_targets, shifted, sum_exp, log_z, z_loss = res
    g_loss = g[0]  # the z output is for logging; its cotangent is ignored
    softmax = jnp.exp(shifted) / sum_exp
    # Soft targets sum to one, so d(-sum t log softmax)/dlogits = softmax - t.
    grad = softmax * (1.0 + 2.0 * z_loss * log_z[..., None]) - soft_targets
    return grad * g_loss[..., None], None, None


_xent_with_z_loss.defvjp(_fwd, _bwd)


def cross_entropy_with_logits(
    logits: Array,
    targets: Array,
    *,
    z_loss: float = 0.0,
    label_smoothing: float = 0.0,
) -> tuple[Array, Array]:
    """Per-token loss and z-loss for integer targets; both [batch, length] float32.

    With label smoothing the constant entropy of the smoothed distribution is
    subtracted, so a perfect model still scores zero (as t5x does).
    """
    vocab = logits.shape[-1]
    confidence = 1.0 - label_smoothing
    low = label_smoothing / (vocab - 1) if vocab > 1 else 0.0
    soft = jax.nn.one_hot(targets, vocab, dtype=jnp.float32) * (confidence - low) + low
    loss, z = _xent_with_z_loss(logits.astype(jnp.float32), soft, jnp.float32(z_loss))
    if label_smoothing > 0.0:
        normalizing = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low + 1e-20))
        loss = loss - normalizing
    return loss, z


def weighted_mean_loss(
    logits: Array,
    targets: Array,
    weights: Optional[Array] = None,
    *,
    z_loss: float = 0.0,
    label_smoothing: float = 0.0,
    normalizer: Optional[float] = None,
) -> tuple[Array, dict[str, Array]]:
    """Total loss divided by the number of weighted tokens (or by a fixed ``normalizer``)."""
    per_token, z = cross_entropy_with_logits(logits, targets, z_loss=z_loss, label_smoothing=label_smoothing)
    if weights is None:
        weights = jnp.ones(targets.shape, jnp.float32)
    weights = weights.astype(jnp.float32)
    num_tokens = jnp.sum(weights)
    denom = jnp.float32(normalizer) if normalizer is not None else jnp.maximum(num_tokens, 1.0)
    loss = jnp.sum(per_token * weights) / denom
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    metrics = {
        "loss": loss,
        "z_loss": jnp.sum(z * weights) / denom,
        "accuracy": jnp.sum(correct * weights) / jnp.maximum(num_tokens, 1.0),
        "num_tokens": num_tokens,
    }
    return loss, metrics
