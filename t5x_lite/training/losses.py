"""Cross-entropy with z-loss and label smoothing, in float32, from integer targets.

Nothing of vocabulary size is built besides the logits themselves: no one-hot
targets, no log-softmax. The forward pass needs two reductions over the
vocabulary (max and sum of exponentials; a third, the sum of logits, only with
label smoothing) and a gather of the target logit. The custom VJP keeps the
backward pass to one element-wise pass:

    d(loss)/d(logits) = softmax * (1 + 2 z log Z) - soft_targets,

with the soft targets (``1 - s`` on the target, ``s / (V - 1)`` elsewhere)
written as a comparison against the target id, never stored. A one-hot
formulation keeps a second float32 ``[tokens, vocab]`` array alive for the
backward pass (1 GB at mT5's 250k vocabulary and 1,024 tokens); on CPU the two
run equally fast.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

Array = jax.Array


def _smoothing(label_smoothing: float, vocab: int) -> tuple[float, float]:
    """(weight on the target, weight on every other id); they sum to one over the vocabulary."""
    low = label_smoothing / (vocab - 1) if vocab > 1 else 0.0
    return 1.0 - label_smoothing, low


def _forward(logits, targets, z_loss, label_smoothing):
    vocab = logits.shape[-1]
    confidence, low = _smoothing(label_smoothing, vocab)
    max_logit = jax.lax.stop_gradient(jnp.max(logits, axis=-1))
    log_z = jnp.log(jnp.sum(jnp.exp(logits - max_logit[..., None]), axis=-1)) + max_logit
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    # -sum_j soft_j * (logit_j - log Z), with soft = low everywhere plus (confidence - low) on the target.
    loss = (confidence - low) * (log_z - target_logit)
    if low:
        loss = loss + low * (vocab * log_z - jnp.sum(logits, axis=-1))
    z = z_loss * jnp.square(log_z)
    return loss + z, z, log_z


# label_smoothing is a Python float that selects code (the sum-of-logits term), not a traced value.
@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _xent_with_z_loss(logits: Array, targets: Array, z_loss: Array, label_smoothing: float):
    loss, z, _ = _forward(logits, targets, z_loss, label_smoothing)
    return loss, z


def _fwd(logits, targets, z_loss, label_smoothing):
    loss, z, log_z = _forward(logits, targets, z_loss, label_smoothing)
    return (loss, z), (logits, targets, log_z, z_loss)


def _bwd(label_smoothing, res, g):
    logits, targets, log_z, z_loss = res
    g_loss = g[0]  # the z output is for logging; its cotangent is ignored
    confidence, low = _smoothing(label_smoothing, logits.shape[-1])
    softmax = jnp.exp(logits - log_z[..., None])
    is_target = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1) == targets[..., None]
    soft_targets = jnp.where(is_target, confidence, low)
    grad = softmax * (1.0 + 2.0 * z_loss * log_z)[..., None] - soft_targets
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
    loss, z = _xent_with_z_loss(logits.astype(jnp.float32), targets.astype(jnp.int32), jnp.float32(z_loss),
                                float(label_smoothing))
    if label_smoothing > 0.0:
        confidence, low = _smoothing(label_smoothing, vocab)
        normalizing = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low + 1e-20))
        loss = loss - normalizing
    return loss, z


def argmax_equals(logits: Array, targets: Array) -> Array:
    """``argmax(logits, -1) == targets`` (first maximum wins, as argmax), without a variadic argmax.

    XLA:CPU runs argmax's (value, index) reduction several times slower than a
    plain max; here it is a max, a gather and one boolean reduction that XLA
    fuses with the loss's own passes over the logits.
    """
    max_logit = jnp.max(logits, axis=-1, keepdims=True)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)
    before_target = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1) < targets[..., None]
    earlier_max = jnp.any((logits == max_logit) & before_target, axis=-1)
    return (target_logit[..., 0] == max_logit[..., 0]) & ~earlier_max


# What ``weighted_mean_loss`` divides by a fixed ``normalizer`` when one is given
# (accuracy is always per token): summed, not averaged, over microbatches.
FIXED_NORMALIZER_METRICS = ("loss", "z_loss")


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
    correct = argmax_equals(jax.lax.stop_gradient(logits.astype(jnp.float32)), targets).astype(jnp.float32)
    metrics = {
        "loss": loss,
        "z_loss": jnp.sum(z * weights) / denom,
        "accuracy": jnp.sum(correct * weights) / jnp.maximum(num_tokens, 1.0),
        "num_tokens": num_tokens,
    }
    return loss, metrics


def squared_error_loss(predictions: Array, labels: Array, weights: Optional[Array] = None, *,
                       normalizer: Optional[float] = None) -> tuple[Array, dict[str, Array]]:
    """A regression head's loss: Hugging Face's ``MSELoss`` (the mean over the batch; with ``weights``, the
    weighted mean), or the (weighted) sum divided by a fixed ``normalizer``; ``num_tokens`` counts the examples
    (sums the weights), which weigh microbatches as tokens do."""
    squared = jnp.square(predictions.astype(jnp.float32) - labels.astype(jnp.float32))
    if weights is None:
        count = jnp.float32(squared.size)
    else:
        weights = weights.astype(jnp.float32)
        squared = squared * weights
        count = jnp.sum(weights)
    denom = jnp.float32(normalizer) if normalizer is not None else jnp.maximum(count, 1.0)  # as weighted_mean_loss
    loss = jnp.sum(squared) / denom
    return loss, {"loss": loss, "num_tokens": count}
