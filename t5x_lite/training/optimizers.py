"""Learning-rate schedules, optimizers and microbatched gradient accumulation.

Everything here is a plain keyword-only typed function returning an optax
``Schedule`` / ``GradientTransformation``; gin configures them in the CLI.

* Schedules: T5's constant-then-rsqrt (``rsqrt``), ``linear_decay``,
  ``cosine`` (nanoT5), ``constant`` (T5 fine-tuning at 1e-3); ``make_schedule``.
* Optimizers: ``adafactor_t5`` (T5 paper / t5x settings), ``adamw``,
  ``adamw_scaled`` (nanoT5's AdamW with per-matrix RMS scaling);
  ``make_optimizer`` adds global-norm gradient clipping in front.
* ``decay_mask``: which leaves get weight decay (matrices, not biases or norms).
* ``accumulate_gradients``: token-weighted gradient accumulation over
  microbatches with ``lax.scan``, holding only the running gradient sum.

Scanned layers. With ``scan_layers=True`` (models/stacking.py) every leaf under
a ``layers`` subtree carries a leading layer axis. Adafactor's update clipping
and parameter scale and nanoT5's RMS scale are defined *per weight matrix*;
optax's ``clip_by_block_rms`` / ``scale_by_param_block_rms`` would treat the
whole [layers, ...] stack as one block, so the loop and scan layouts would train
differently. The two small transforms below compute the RMS per layer for those
leaves (t5x does the same with its ``FactorDim.BATCH`` factor rules); on
unstacked leaves they equal optax's own.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from t5x_lite.errors import ConfigError
from t5x_lite.training import layer_stacks
from t5x_lite.training.losses import FIXED_NORMALIZER_METRICS

Array = jax.Array
PyTree = Any
LossFn = Callable[[PyTree, Mapping[str, Array], Optional[Array]], tuple[Array, Mapping[str, Array]]]
MaskFn = Callable[[PyTree], PyTree]

# Name of the nn.scan subtree in models/stacking.py: its leaves have a leading layer axis.
SCANNED_LAYERS_KEY = "layers"
# Adafactor factors the second moments of matrices whose two largest dims are at least this (t5x, optax).
MIN_DIM_TO_FACTOR = 128


# --------------------------------------------------------------------------- schedules


def rsqrt_schedule(
    *,
    base_learning_rate: float = 1.0,
    warmup_steps: int = 10_000,
    linear_warmup_steps: int = 0,
) -> optax.Schedule:
    """T5's ``base / sqrt(max(step, warmup_steps))``: constant 0.01 for 10k steps, then rsqrt decay.

    ``warmup_steps`` here is T5's name for the constant phase, not a ramp; set
    ``linear_warmup_steps`` to also ramp linearly from 0 (multiplying by
    ``min(step / linear_warmup_steps, 1)``). Written by hand: optax has no
    inverse-square-root schedule.
    """
    if warmup_steps < 1:
        raise ConfigError(f"rsqrt_schedule: warmup_steps must be >= 1 (1/sqrt(0) at step 0), got {warmup_steps}")
    if linear_warmup_steps < 0:
        raise ConfigError(f"rsqrt_schedule: linear_warmup_steps must be >= 0, got {linear_warmup_steps}")

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        lr = base_learning_rate * jax.lax.rsqrt(jnp.maximum(step, jnp.float32(warmup_steps)))
        if linear_warmup_steps > 0:
            lr = lr * jnp.minimum(step / linear_warmup_steps, 1.0)
        return lr

    return schedule


def _check_decay_args(name: str, warmup_steps: int, total_steps: int) -> None:
    if warmup_steps < 0 or total_steps <= warmup_steps:
        raise ConfigError(f"{name}: warmup_steps ({warmup_steps}) must be >= 0 and below total_steps "
                          f"({total_steps}); in gin, optimizers.make_schedule.warmup_steps and .total_steps (a run config "
                          f"may set them from macros such as WARMUP_STEPS and TRAIN_STEPS)")


def linear_decay_schedule(
    *,
    peak_learning_rate: float,
    total_steps: int,
    warmup_steps: int = 0,
    init_fraction: float = 0.0,
    final_fraction: float = 0.0,
) -> optax.Schedule:
    """Linear warmup from ``init_fraction * peak`` to ``peak``, then linear decay to ``final_fraction * peak``
    at ``total_steps`` (warmup included), constant after."""
    _check_decay_args("linear_decay_schedule", warmup_steps, total_steps)
    decay = optax.linear_schedule(
        init_value=peak_learning_rate,
        end_value=final_fraction * peak_learning_rate,
        transition_steps=total_steps - warmup_steps,
    )
    if warmup_steps == 0:
        return decay
    warmup = optax.linear_schedule(
        init_value=init_fraction * peak_learning_rate, end_value=peak_learning_rate, transition_steps=warmup_steps
    )
    return optax.join_schedules([warmup, decay], [warmup_steps])


def cosine_schedule(
    *,
    peak_learning_rate: float,
    total_steps: int,
    warmup_steps: int = 0,
    init_fraction: float = 0.0,
    final_fraction: float = 0.0,
) -> optax.Schedule:
    """Linear warmup to ``peak``, then cosine decay to ``final_fraction * peak`` at ``total_steps``
    (warmup included), constant after. nanoT5: peak 2e-2, 10k warmup, init_fraction 0.5, final 1e-5/2e-2."""
    _check_decay_args("cosine_schedule", warmup_steps, total_steps)
    if warmup_steps == 0:
        return optax.cosine_decay_schedule(
            init_value=peak_learning_rate, decay_steps=total_steps, alpha=final_fraction
        )
    return optax.warmup_cosine_decay_schedule(
        init_value=init_fraction * peak_learning_rate,
        peak_value=peak_learning_rate,
        warmup_steps=warmup_steps,
        decay_steps=total_steps,
        end_value=final_fraction * peak_learning_rate,
    )


def constant_schedule(*, learning_rate: float = 1e-3) -> optax.Schedule:
    """A constant learning rate (T5 fine-tunes at 1e-3)."""
    return optax.constant_schedule(learning_rate)


SCHEDULES: dict[str, Callable[..., optax.Schedule]] = {
    "rsqrt": rsqrt_schedule,
    "linear_decay": linear_decay_schedule,
    "cosine": cosine_schedule,
    "constant": constant_schedule,
}


def _is_number(x: Any) -> bool:
    if isinstance(x, (np.ndarray, jax.Array)):
        return x.ndim == 0 and np.issubdtype(x.dtype, np.number)
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def make_schedule(name: str, **kwargs) -> optax.Schedule:
    """``SCHEDULES[name](**kwargs)``; an unknown name raises ValueError listing the valid ones."""
    if name not in SCHEDULES:
        raise ConfigError(f"Unknown schedule {name!r}; valid names: {', '.join(sorted(SCHEDULES))}")
    for key, value in kwargs.items():  # every schedule takes numbers only
        if not _is_number(value):
            raise ConfigError(f"make_schedule({name!r}): {key} must be a number, got {value!r}")
    return SCHEDULES[name](**kwargs)


# --------------------------------------------------------------------------- masks


def _key_name(entry) -> str:
    if isinstance(entry, (jax.tree_util.DictKey, jax.tree_util.FlattenedIndexKey)):
        return str(entry.key)
    if isinstance(entry, jax.tree_util.GetAttrKey):
        return entry.name
    if isinstance(entry, jax.tree_util.SequenceKey):
        return str(entry.idx)
    return str(entry)


def _path_names(path) -> tuple[str, ...]:
    """Key names along a leaf's path; a flax ``Partitioned`` box's ``.value`` is skipped."""
    return tuple(
        _key_name(entry)
        for entry in path
        if not (isinstance(entry, jax.tree_util.GetAttrKey) and entry.name == "value")
    )


def scanned_layers_mask(params: PyTree) -> PyTree:
    """True for leaves under a ``layers`` subtree (the nn.scan layout): their axis 0 indexes layers."""
    return jax.tree_util.tree_map_with_path(lambda path, _: SCANNED_LAYERS_KEY in _path_names(path), params)


_NO_DECAY_NAMES = ("bias", "scale")  # Dense/LayerNorm bias, RMSNorm/LayerNorm scale
_EMBEDDING_NAMES = ("embedding", "rel_embedding")  # token/position embeddings, T5's relative position bias


def decay_mask(params: PyTree, *, exclude_embeddings: bool = False) -> PyTree:
    """Weight-decay mask (True = decay): matrices yes; biases, norm scales and 1-D leaves no.

    A leaf is not decayed when its own name is ``bias``/``scale``, when any key on
    its path names a norm (contains ``norm`` or is ``ln``/``ln_*``), or when it has
    fewer than 2 dimensions not counting a scanned layer axis. With
    ``exclude_embeddings`` the ``embedding``/``rel_embedding`` tables are not
    decayed either. Use as optax's ``mask`` (a callable of params).
    """

    def decide(path, leaf) -> bool:
        names = _path_names(path)
        leaf_name = names[-1] if names else ""
        ndim = len(leaf.shape) - (1 if SCANNED_LAYERS_KEY in names else 0)
        if ndim < 2 or leaf_name in _NO_DECAY_NAMES:
            return False
        if any("norm" in n.lower() or n.lower() == "ln" or n.lower().startswith("ln_") for n in names):
            return False
        if exclude_embeddings and leaf_name in _EMBEDDING_NAMES:
            return False
        return True

    return jax.tree_util.tree_map_with_path(decide, params)


# --------------------------------------------------------------------------- per-matrix RMS transforms


def _rms(x: Array, per_layer: bool) -> Array:
    """RMS of a block, keepdims; with ``per_layer`` one RMS per index of axis 0."""
    axes = tuple(range(1, x.ndim)) if per_layer else tuple(range(x.ndim))
    return jnp.sqrt(jnp.mean(jnp.square(jnp.abs(x)), axis=axes, keepdims=True))


def _per_layer(mask_fn: Optional[MaskFn], tree: PyTree) -> PyTree:
    if mask_fn is None:
        return jax.tree.map(lambda _: False, tree)
    return mask_fn(tree)


def clip_by_rms(
    threshold: float, *, layer_axis_mask: Optional[MaskFn] = scanned_layers_mask
) -> optax.GradientTransformation:
    """``u / max(1, rms(u) / threshold)`` per weight matrix: optax's ``clip_by_block_rms``, but per
    layer for scanned leaves (custom for that reason only)."""

    def update_fn(updates, state, params=None):
        del params
        per_layer = _per_layer(layer_axis_mask, updates)
        updates = jax.tree.map(
            lambda u, pl: u / jnp.maximum(1.0, _rms(u, pl) / threshold).astype(u.dtype), updates, per_layer
        )
        return updates, state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def scale_by_param_rms(
    min_scale: float = 1e-3, *, layer_axis_mask: Optional[MaskFn] = scanned_layers_mask
) -> optax.GradientTransformation:
    """Multiply each matrix's update by ``max(min_scale, rms(param))``: optax's
    ``scale_by_param_block_rms``, but per layer for scanned leaves (custom for that reason only)."""

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_param_rms needs params: call update(grads, state, params)")
        per_layer = _per_layer(layer_axis_mask, params)
        updates = jax.tree.map(
            lambda u, p, pl: u * jnp.maximum(_rms(p, pl), min_scale).astype(u.dtype), updates, params, per_layer
        )
        return updates, state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


# --------------------------------------------------------------------------- t5x's matrix view


def t5x_matrix_shape(names: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape t5x stores a leaf in: an attention kernel as one 2-D matrix, everything else as is.

    ``models/layers.py``'s attention keeps its kernels 3-D: ``query``/``key``/``value``
    as [embed, heads, kv] and ``out`` as [heads, kv, embed]. t5x (and flaxformer's
    ``reshape_kernel``) store them as [embed, heads * kv] and [heads * kv, embed],
    and that is the matrix its Adafactor factors. Optax's rule, applied to the
    3-D kernel, would see head_dim (64) as the second-largest dim and keep a full,
    unfactored second moment instead. ``names`` is the leaf's key path (a scanned
    layer axis in front is kept).
    """
    lead = 1 if SCANNED_LAYERS_KEY in names else 0
    if len(names) < 2 or names[-1] != "kernel" or len(shape) - lead != 3:
        return tuple(shape)
    a, b, c = shape[lead:]
    merged = (a * b, c) if names[-2] == "out" else (a, b * c)
    return tuple(shape[:lead]) + merged


def in_t5x_matrix_shapes(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """``inner`` run on every leaf reshaped by ``t5x_matrix_shape``; updates come back in the leaves' shapes."""

    def reshape(path, x):
        names = _path_names(path)
        if SCANNED_LAYERS_KEY in names and jnp.shape(x)[0] >= MIN_DIM_TO_FACTOR:
            # optax factors a leaf's two largest dims: a layer axis this long would be one of them.
            raise ValueError(f"adafactor_t5: {'/'.join(names)} stacks {jnp.shape(x)[0]} layers; factored second "
                             f"moments need fewer than {MIN_DIM_TO_FACTOR} layers per stack")
        return jnp.reshape(x, t5x_matrix_shape(names, jnp.shape(x)))

    def reshaped(tree):
        return jax.tree_util.tree_map_with_path(reshape, tree)

    def init_fn(params):
        return inner.init(reshaped(params))

    def update_fn(updates, state, params=None):
        new, state = inner.update(reshaped(updates), state, None if params is None else reshaped(params))
        return jax.tree.map(lambda n, u: jnp.reshape(n, jnp.shape(u)), new, updates), state

    return optax.GradientTransformation(init_fn, update_fn)


# --------------------------------------------------------------------------- optimizers


def adafactor_t5(
    learning_rate: optax.ScalarOrSchedule,
    *,
    weight_decay: float = 0.0,
    weight_decay_mask: Optional[MaskFn] = None,
    layer_axis_mask: Optional[MaskFn] = scanned_layers_mask,
) -> optax.GradientTransformation:
    """Adafactor as T5 trained with it (Shazeer & Stern 2018; t5x defaults).

    Factored second moments for matrices with both dims >= 128 (attention
    kernels seen as t5x's 2-D matrices, ``t5x_matrix_shape``), decay
    ``1 - (step+1)^-0.8``, eps 1e-30, update clipping at RMS 1.0, updates
    multiplied by ``max(1e-3, rms(param))``, no momentum.

    This is ``optax.adafactor(learning_rate, min_dim_size_to_factor=128,
    decay_rate=0.8, multiply_by_parameter_scale=True, clipping_threshold=1.0,
    momentum=None, eps=1e-30, factored=True)`` rebuilt from the same optax
    pieces in the same order, with the second moments kept for t5x's 2-D view
    of attention kernels and the clipping and parameter scale computed per
    layer on scanned leaves (see the module docstring); on 2-D unstacked params
    it is the same computation (tests check it). ``weight_decay`` follows
    optax/t5x Adafactor: a per-step fraction of the parameter, *not*
    multiplied by the learning rate.
    """
    tx = [
        in_t5x_matrix_shapes(optax.scale_by_factored_rms(
            factored=True, decay_rate=0.8, step_offset=0, min_dim_size_to_factor=MIN_DIM_TO_FACTOR, epsilon=1e-30
        )),
        clip_by_rms(1.0, layer_axis_mask=layer_axis_mask),
        optax.scale_by_learning_rate(learning_rate, flip_sign=False),
        scale_by_param_rms(1e-3, layer_axis_mask=layer_axis_mask),
    ]
    if weight_decay:
        tx.append(optax.add_decayed_weights(weight_decay, mask=weight_decay_mask))
    tx.append(optax.scale(-1.0))
    return optax.chain(*tx)


def adamw(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_decay_mask: Optional[MaskFn] = None,
) -> optax.GradientTransformation:
    """``optax.adamw``: decoupled weight decay ``lr * weight_decay * param`` (mask None = decay all)."""
    return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=weight_decay_mask)


def adamw_scaled(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_decay_mask: Optional[MaskFn] = None,
    min_scale: float = 1e-3,
    layer_axis_mask: Optional[MaskFn] = scanned_layers_mask,
) -> optax.GradientTransformation:
    """AdamW whose update of each weight matrix is multiplied by ``max(min_scale, rms(param))``.

    Source: nanoT5 (Nawrot 2023, "nanoT5: A PyTorch Framework for Pre-training
    and Fine-tuning T5-style Models with Limited Resources"), ``AdamWScale`` in
    ``nanoT5/utils/copied_utils.py``: ``step_size = lr * sqrt(1-b2^t)/(1-b1^t)
    * max(1e-3, rms(p))``; ``p -= step_size * m / (sqrt(v) + eps)``; then
    ``p -= lr * weight_decay * p``. With AdamW + this scaling + cosine, nanoT5
    beat Adafactor + rsqrt on C4 (1.953 vs 1.995 loss).

    Built as optax's bias-corrected ``scale_by_adam`` -> per-matrix param RMS
    scale -> ``add_decayed_weights`` (after the scale: decay is not RMS-scaled,
    as in nanoT5) -> learning rate. Two second-order differences from the
    PyTorch code: optax adds ``eps`` to the bias-corrected ``sqrt(v_hat)``
    (nanoT5 to ``sqrt(v)``) and decays the pre-update parameter (nanoT5 the
    post-update one).
    """
    return optax.chain(
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
        scale_by_param_rms(min_scale, layer_axis_mask=layer_axis_mask),
        optax.add_decayed_weights(weight_decay, mask=weight_decay_mask),
        optax.scale_by_learning_rate(learning_rate),
    )


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "adafactor_t5": adafactor_t5,
    "adamw": adamw,
    "adamw_scaled": adamw_scaled,
}


def make_optimizer(
    name: str,
    *,
    learning_rate: optax.ScalarOrSchedule,
    grad_clip_norm: Optional[float] = None,
    weight_decay: float = 0.0,
    weight_decay_mask: Optional[MaskFn] = decay_mask,
    stack_layers: bool = True,
    **kwargs,
) -> optax.GradientTransformation:
    """``OPTIMIZERS[name]`` with optional ``optax.clip_by_global_norm(grad_clip_norm)`` applied first.

    Unlike the bare optimizers (mask None = decay everything, as in optax), the
    default here decays only what ``decay_mask`` selects. With ``stack_layers``
    (default) the optimizer sees a layer loop's weights stacked per weight
    (``layer_stacks.on_stacked_layers``: the same numbers, a smaller program). Extra ``kwargs`` go to
    the optimizer (e.g. ``b2`` for the AdamWs). An unknown name raises
    ValueError listing the valid ones.
    """
    if name not in OPTIMIZERS:
        raise ConfigError(f"Unknown optimizer {name!r}; valid names: {', '.join(sorted(OPTIMIZERS))}")
    if not callable(learning_rate) and not _is_number(learning_rate):
        raise ConfigError(f"make_optimizer({name!r}): learning_rate must be a number or a schedule, "
                          f"got {learning_rate!r}")
    tx = OPTIMIZERS[name](learning_rate, weight_decay=weight_decay, weight_decay_mask=weight_decay_mask, **kwargs)
    if grad_clip_norm is not None:
        if grad_clip_norm <= 0:
            raise ConfigError(f"grad_clip_norm must be positive or None, got {grad_clip_norm}")
        tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)
    return layer_stacks.on_stacked_layers(tx) if stack_layers else tx


# --------------------------------------------------------------------------- gradient accumulation


def _split_microbatches(batch: PyTree, num_microbatches: int) -> PyTree:
    """[B, ...] -> [num_microbatches, B // num_microbatches, ...], microbatch i = examples i, i+k, i+2k, ...

    Strided rather than contiguous: with the batch sharded over devices on axis 0,
    reshaping to [B/k, k] keeps that sharding on the B/k axis, so every
    microbatch still spans all data shards (a contiguous split would put whole
    microbatches on a few devices). The full-batch gradient does not care.
    """

    def split(x):
        x = jnp.asarray(x)
        if x.ndim == 0 or x.shape[0] % num_microbatches:
            raise ConfigError(
                f"accumulate_gradients: batch leading dim {x.shape[:1]} is not divisible by "
                f"num_microbatches={num_microbatches}"
            )
        x = x.reshape(x.shape[0] // num_microbatches, num_microbatches, *x.shape[1:])
        return jnp.swapaxes(x, 0, 1)

    return jax.tree.map(split, batch)


def accumulate_gradients(
    loss_fn: LossFn,
    params: PyTree,
    batch: Mapping[str, Array],
    rng: Optional[Array],
    num_microbatches: Optional[int] = None,
    fixed_normalizer: bool = False,
) -> tuple[Array, dict[str, Array], PyTree]:
    """``(loss, metrics, grads)`` of a per-token mean (or fixed-normalizer) loss, over microbatches if asked.

    ``loss_fn(params, microbatch, rng) -> (loss, metrics)`` must return
    ``metrics["num_tokens"]`` (the microbatch's weighted token count). With
    ``num_microbatches`` None or 1 this is exactly ``jax.value_and_grad``.
    Otherwise a ``lax.scan`` over microbatches (rng ``fold_in(rng, i)``) keeps
    only running sums (in at least float32) and returns
    ``sum_i(x_i * n_i) / sum_i(n_i)`` for the gradient, the loss and every
    metric, which equals the full-batch value of a token-weighted mean; but
    ``num_tokens``, which is summed. Per-microbatch gradients are never
    stacked, so memory is one gradient tree on top of the model's.

    A loss divided by a fixed constant instead of its token count (t5x's
    ``loss_normalizing_factor``, ``fixed_normalizer=True``) is not a
    token-weighted mean: its full-batch value is the plain sum over
    microbatches. Then the gradient, the loss and the metrics divided by that
    constant (``losses.FIXED_NORMALIZER_METRICS``) are summed; the rest
    (accuracy) stay token-weighted.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if num_microbatches is None or num_microbatches == 1:
        (loss, metrics), grads = grad_fn(params, batch, rng)
        return loss, metrics, grads
    if num_microbatches < 1:
        raise ConfigError(f"num_microbatches must be >= 1 or None, got {num_microbatches}")

    microbatches = _split_microbatches(batch, num_microbatches)
    abstract_mb = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), microbatches)
    (loss_shape, metrics_shape), grads_shape = jax.eval_shape(grad_fn, params, abstract_mb, rng)
    if "num_tokens" not in metrics_shape:
        raise KeyError(
            f"accumulate_gradients: loss_fn metrics must include 'num_tokens' to weight microbatches; "
            f"got {sorted(metrics_shape)}"
        )

    def acc_dtype(s):
        return jnp.promote_types(s.dtype, jnp.float32)

    def zeros(s):
        return jnp.zeros(s.shape, acc_dtype(s))

    init = (jax.tree.map(zeros, grads_shape), zeros(loss_shape), jax.tree.map(zeros, dict(metrics_shape)))
    plain_sums = {"num_tokens", *(FIXED_NORMALIZER_METRICS if fixed_normalizer else ())}

    def body(carry, xs):
        grad_sum, loss_sum, metric_sums = carry
        microbatch, index = xs
        mb_rng = None if rng is None else jax.random.fold_in(rng, index)
        (loss, metrics), grads = grad_fn(params, microbatch, mb_rng)
        n = jnp.asarray(metrics["num_tokens"], jnp.float32)
        loss_weight = jnp.float32(1.0) if fixed_normalizer else n
        grad_sum = jax.tree.map(lambda s, g: s + g.astype(s.dtype) * loss_weight.astype(s.dtype), grad_sum, grads)
        loss_sum = loss_sum + loss.astype(loss_sum.dtype) * loss_weight
        metric_sums = {
            k: metric_sums[k] + (v if k in plain_sums else v * n).astype(metric_sums[k].dtype)
            for k, v in metrics.items()
        }
        return (grad_sum, loss_sum, metric_sums), None

    (grad_sum, loss_sum, metric_sums), _ = jax.lax.scan(
        body, init, (microbatches, jnp.arange(num_microbatches, dtype=jnp.int32))
    )
    total = metric_sums["num_tokens"]
    denom = jnp.where(total > 0, total, 1.0)  # all-padding batch: every sum is 0, so 0 / 1

    loss_denom = jnp.float32(1.0) if fixed_normalizer else denom
    grads = jax.tree.map(lambda s, ref: (s / loss_denom.astype(s.dtype)).astype(ref.dtype), grad_sum, grads_shape)
    loss = (loss_sum / loss_denom).astype(loss_shape.dtype)
    metrics = {
        k: (v if k in plain_sums else v / denom).astype(metrics_shape[k].dtype) for k, v in metric_sums.items()
    }
    return loss, metrics, grads
