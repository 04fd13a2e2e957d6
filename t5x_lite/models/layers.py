"""Transformer building blocks shared by the T5, BERT and decoder-only models.

Every parameter carries logical axis names (``nn.with_logical_partitioning``) and
activations are constrained by logical names; a rules table in the run config
maps those names onto a device mesh (see ``t5x_lite.training.partitioning``).
Outside a mesh the constraints are no-ops.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
DType = jnp.dtype

# Large negative instead of -inf so fully-masked rows (padding queries) stay finite.
NEG_INF = -1e10

default_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


def constrain(x: Array, axes: tuple) -> Array:
    """Logical sharding constraint on an activation (no-op without rules)."""
    return nn.with_logical_constraint(x, axes)


def active_axis_rules() -> tuple:
    """The logical-axis rules ``constrain`` reads while tracing (Flax's thread-local context), hashable.

    A module-level ``jax.jit`` keys its cache on the mesh in context but not on these: jits that may trace both
    inside and outside training's rules take them as a static argument, so each set gets its own program.
    """
    return tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in nn.get_logical_axis_rules())


# --------------------------------------------------------------------------- norms


class RMSNorm(nn.Module):
    """T5 layer norm: scale only, no mean, no bias; statistics in float32."""

    epsilon: float = 1e-6
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x32 = x.astype(jnp.float32)
        variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        y = x32 * jax.lax.rsqrt(variance + self.epsilon)
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
            (x.shape[-1],),
            self.param_dtype,
        )
        return (y * scale.astype(jnp.float32)).astype(self.dtype)


class LayerNorm(nn.Module):
    """BERT layer norm (mean and variance, scale and bias), computed in float32."""

    epsilon: float = 1e-12
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        variance = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(variance + self.epsilon)
        features = x.shape[-1]
        scale = self.param(
            "scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)), (features,), self.param_dtype
        )
        bias = self.param(
            "bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), (features,), self.param_dtype
        )
        return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype)


# ----------------------------------------------------------------------- embeddings


class Embed(nn.Module):
    """Token embedding; ``attend`` computes logits against the same table (tied head)."""

    num_embeddings: int
    features: int
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    embedding_init: Callable = nn.initializers.normal(stddev=1.0)
    axes: tuple = ("vocab", "embed")

    def setup(self):
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(self.embedding_init, self.axes),
            (self.num_embeddings, self.features),
            self.param_dtype,
        )

    def __call__(self, ids: Array) -> Array:
        # Gather from the parameter, then cast: the gradient's scatter-add then accumulates in param_dtype
        # (float32), not in a bfloat16 compute dtype, where the updates of a repeated id lose precision.
        return jnp.asarray(jnp.take(self.embedding, ids, axis=0), self.dtype)

    def attend(self, query: Array, dtype: Optional[DType] = None) -> Array:
        """Logits against the table, computed in ``dtype`` (default: the module's)."""
        dtype = self.dtype if dtype is None else dtype
        table = jnp.asarray(self.embedding, dtype)
        return jnp.einsum("...d,vd->...v", query.astype(dtype), table)


def _as_matrices(x: Array, kernel: Array, in_axes: int) -> tuple[Array, Array]:
    fan_in = math.prod(kernel.shape[:in_axes])
    return x.reshape(-1, fan_in), kernel.reshape(fan_in, -1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def dense_dot(x: Array, kernel: Array, in_axes: int) -> Array:
    """Contract the last ``in_axes`` axes of ``x`` with the first of ``kernel``; the
    kernel's gradient is computed as ``x^T g``.

    JAX's own transpose rule computes it as ``(g^T x)^T``: XLA:CPU then lays the
    incoming gradient out transposed and fuses that transpose into the
    element-wise op producing it (the GELU or loss gradient), which writes with
    a stride several times slower. Here the transposed operand is the layer
    input, in a plain copy. The reshapes to matrices happen inside the VJP so
    the saved residual is the kernel itself (under ``nn.scan``, a slice of the
    stacked parameter rather than a per-layer copy). Like any custom VJP this
    supports reverse-mode differentiation only (no ``jax.jvp``/``jacfwd``).
    """
    x2, k2 = _as_matrices(x, kernel, in_axes)
    return (x2 @ k2).reshape(x.shape[: x.ndim - in_axes] + kernel.shape[in_axes:])


def _dense_dot_fwd(x, kernel, in_axes):
    return dense_dot(x, kernel, in_axes), (x, kernel)


def _dense_dot_bwd(in_axes, res, g):
    x, kernel = res
    x2, k2 = _as_matrices(x, kernel, in_axes)
    g2 = g.reshape(-1, k2.shape[1])
    dx = jax.lax.dot_general(g2, k2, (((1,), (1,)), ((), ())))
    dkernel = jax.lax.dot_general(x2, g2, (((0,), (0,)), ((), ())))
    return dx.reshape(x.shape).astype(x.dtype), dkernel.reshape(kernel.shape).astype(kernel.dtype)


dense_dot.defvjp(_dense_dot_fwd, _dense_dot_bwd)


class DenseGeneral(nn.Module):
    """A dense layer over arbitrary in/out axes, with logical axis names for its kernel."""

    features: Sequence[int]
    kernel_axes: tuple
    in_axes: int = 1  # how many trailing input axes are contracted
    use_bias: bool = False
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    kernel_init: Callable = default_kernel_init

    @nn.compact
    def __call__(self, x: Array) -> Array:
        features = tuple(self.features) if isinstance(self.features, Sequence) else (self.features,)
        in_shape = x.shape[x.ndim - self.in_axes :]
        kernel_shape = tuple(in_shape) + features
        fan_in = int(np.prod(in_shape))
        fan_out = int(np.prod(features))

        def init(key, shape, dtype):
            # Initialize as a 2-D matrix so fan-in/fan-out scaling is that of the flat map.
            flat = self.kernel_init(key, (fan_in, fan_out), dtype)
            return jnp.reshape(flat, shape)

        kernel = self.param(
            "kernel", nn.with_logical_partitioning(init, self.kernel_axes), kernel_shape, self.param_dtype
        )
        kernel = jnp.asarray(kernel, self.dtype)
        x = jnp.asarray(x, self.dtype)
        y = dense_dot(x, kernel, self.in_axes)
        if self.use_bias:
            bias_axes = self.kernel_axes[self.in_axes :]
            bias = self.param(
                "bias", nn.with_logical_partitioning(nn.initializers.zeros, bias_axes), features, self.param_dtype
            )
            y = y + jnp.asarray(bias, self.dtype)
        return y


# ------------------------------------------------------------------ position biases


def relative_position_bucket(
    relative_position: Array, bidirectional: bool, num_buckets: int, max_distance: int
) -> Array:
    """T5's bucketing of (key - query) distances: exact for small, log-spaced up to max_distance."""
    ret = jnp.zeros_like(relative_position)
    n = relative_position
    if bidirectional:
        num_buckets //= 2
        ret = ret + (n > 0).astype(jnp.int32) * num_buckets
        n = jnp.abs(n)
    else:
        n = -jnp.minimum(n, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    # Guard log(0); those entries take the `is_small` branch anyway.
    n_safe = jnp.maximum(n, 1).astype(jnp.float32)
    large = max_exact + (
        jnp.log(n_safe / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).astype(jnp.int32)
    large = jnp.minimum(large, num_buckets - 1)
    return ret + jnp.where(is_small, n, large)


def toeplitz(by_distance: Array, query_length: int, key_length: int) -> Array:
    """[..., Q + K] -> [..., Q, K] with ``out[..., q, k] = by_distance[..., (k - q) mod (Q + K)]``.

    Row q of the result is the window at offset ``q * (Q + K - 1)`` of the
    vector tiled Q times, because ``q * (Q + K - 1) = -q (mod Q + K)``: a tile
    and two reshapes. A gather would do the same, but its gradient is a
    scatter-add of Q*K updates into Q + K slots, whose atomics collide on a GPU.
    """
    period = query_length + key_length
    if by_distance.shape[-1] != period:
        raise ValueError(f"expected {period} values along the last axis, got shape {by_distance.shape}")
    tiled = jnp.tile(by_distance, query_length)[..., : query_length * (period - 1)]
    rows = tiled.reshape(*by_distance.shape[:-1], query_length, period - 1)
    return rows[..., :key_length]


class RelativePositionBias(nn.Module):
    """Learned per-head bias indexed by bucketed relative position (one table per stack).

    The relative position of key k to query q is ``k - (q + query_offset)``
    (token indices, as in t5x and HF). In a packed row this equals the
    difference of the two tokens' positions within their segment wherever they
    share one, and attention across segments is masked, so packing needs no
    per-example bias. The bias is computed once per distance (Q + K values) and
    laid out with ``toeplitz``, so neither it nor its gradient scales with the
    batch. (Gathering the table at [B, Q, K] bucket indices made the backward
    pass a scatter-add of B*Q*K*heads updates into heads x num_buckets slots: on
    an H100, T5-small steps at batch 128 took over 20 s.)
    """

    num_buckets: int
    max_distance: int
    num_heads: int
    bidirectional: bool
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, query_length: int, key_length: int, query_offset: Union[int, Array] = 0) -> Array:
        """Bias [1, heads, query_length, key_length] for queries at ``query_offset + arange(query_length)``."""
        period = query_length + key_length
        index = jnp.arange(period, dtype=jnp.int32)
        # Slot j of the by-distance vector holds the distance k - q that toeplitz() reads from it.
        distance = jnp.where(index < key_length, index, index - period) - query_offset
        buckets = relative_position_bucket(distance, self.bidirectional, self.num_buckets, self.max_distance)
        table = self.param(
            "rel_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(stddev=1.0), ("heads", "relpos_buckets")),
            (self.num_heads, self.num_buckets),
            self.param_dtype,
        )
        # Buckets are in range by construction. The default mode ("fill") masks out-of-range ones after
        # the gather; XLA fuses the whole bias into each layer's [B, heads, Q, K] logits, so that mask
        # recomputed the bucket arithmetic for every element of every layer (4.0 -> 1.8 ms per tiny
        # encoder layer with "clip", benchmarks/train_step_profile.py).
        by_distance = jnp.asarray(jnp.take(table, buckets, axis=1, mode="clip"), self.dtype)  # [heads, Q + K]
        return toeplitz(by_distance, query_length, key_length)[None]


# ------------------------------------------------------------------------- masks


def make_attention_mask(query_ok: Array, key_ok: Array) -> Array:
    """[B, Q] and [B, K] booleans -> [B, 1, Q, K]."""
    return (query_ok[:, :, None] & key_ok[:, None, :])[:, None]


def segment_mask(query_segments: Array, key_segments: Array) -> Array:
    """Attend only within the same packed example; segment 0 is padding."""
    same = query_segments[:, :, None] == key_segments[:, None, :]
    return (same & (key_segments[:, None, :] != 0))[:, None]


def causal_mask(query_positions: Array, key_positions: Array) -> Array:
    """Key position <= query position, from explicit positions ([B, Q], [B, K])."""
    return (key_positions[:, None, :] <= query_positions[:, :, None])[:, None]


def combine_masks(*masks: Optional[Array]) -> Optional[Array]:
    masks = [m for m in masks if m is not None]
    if not masks:
        return None
    out = masks[0]
    for m in masks[1:]:
        out = out & m
    return out


# --------------------------------------------------------------------- attention


def _heads_first(x: Array) -> Array:
    """[B, L, N, H] -> [B, N, L, H]."""
    return jnp.swapaxes(x, 1, 2)


# XLA:CPU runs attention's products over the keys (P v, dS k) and over the head
# dimension (q k^T, dO v^T) faster with the heads moved next to the batch axis first;
# the two over the queries (P^T dO, dS^T q) ran slower that way and keep [B, L, N, H].
# Alternated in one process, the quickstart-sized train step ran 2-5% faster (four
# runs) and T5 small's 2-3% (two); one layer at a time: benchmarks/attention_layouts.py.
def _heads_first_pays(num_queries: int) -> bool:
    """Whether to move the heads first for ``num_queries`` queries.

    Not for a single query (incremental decoding). XLA:CPU copies the KV cache
    (and the cross-attention keys and values) into a heads-major layout at every
    decode step either way; written heads-first, those copies took 1.35x as long
    (T5 small, batch 8, benchmarks/RESULTS.md's decoding section).
    """
    return num_queries > 1


def _scores(a: Array, b: Array) -> Array:
    """``bqnh,bknh->bnqk``: the logits ``q k^T``, and ``dO v^T`` in the backward pass."""
    if not _heads_first_pays(a.shape[1]):
        return jnp.einsum("bqnh,bknh->bnqk", a, b)
    return jnp.einsum("bnqh,bnkh->bnqk", _heads_first(a), _heads_first(b))


def _weighted_sum(weights: Array, x: Array) -> Array:
    """``bnqk,bknh->bqnh``: the output ``P v``, and ``dS k`` in the backward pass.

    Written with ``x`` as [B, L, N, H], XLA:CPU computes the transposed product
    ``x^T P^T`` and transposes its result.
    """
    if not _heads_first_pays(weights.shape[2]):
        return jnp.einsum("bnqk,bknh->bqnh", weights, x)
    return jnp.swapaxes(jnp.einsum("bnqk,bnkh->bnqh", weights, _heads_first(x)), 1, 2)


def _attention_probs(logits, bias, mask, scale):
    logits = logits.astype(jnp.float32) * scale
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, NEG_INF)
    return jax.nn.softmax(logits, axis=-1)


def _sum_to_shape(x: Array, shape: tuple) -> Array:
    """Reduce a broadcast result back to an operand's shape (the transpose of broadcasting).

    Leading axes are summed as a product with a vector of ones: XLA:CPU reduces
    a few long rows (the batch of a [B, heads, Q, K] bias gradient) with a
    strided loop, 87 ms for [8, 6, 512, 512] against 1.3 ms as a dot.
    """
    full = (1,) * (x.ndim - len(shape)) + tuple(shape)
    axes = [i for i, (have, want) in enumerate(zip(x.shape, full)) if want == 1 and have != 1]
    lead = 0  # how many of the axes to sum are the leading ones
    while lead < len(axes) and axes[lead] == lead:
        lead += 1
    if lead:
        kept = x.shape[lead:]
        rows = x.reshape(-1, math.prod(kept))
        x = jnp.dot(jnp.ones(rows.shape[0], x.dtype), rows, precision=jax.lax.Precision.HIGHEST).reshape(kept)
    if axes[lead:]:
        x = jnp.sum(x, axis=tuple(a - lead for a in axes[lead:]), keepdims=True)
    return x.reshape(shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _attention(query, key, value, bias, mask, keep, scale, keep_scale):
    """``softmax(q k^T * scale + bias, masked) v`` with a hand-written backward pass; with ``keep`` (a boolean
    mask over the ``[B, heads, Q, K]`` probabilities), dropout: kept probabilities times ``keep_scale``.

    The softmax gradient is FlashAttention's, ``P * (dP - rowsum(dO * O))``:
    its row sums run over the head dimension, not the keys (with dropout too: ``O`` is computed from the
    dropped-out probabilities, so ``rowsum(dO * O)`` is still ``rowsum(dP * P)``). Differentiating
    through max, exp, sum and divide instead gave XLA:CPU one fusion per layer
    that took 3-4x as long as the forward softmax (``benchmarks/train_step_profile.py``).
    Reverse-mode differentiation only, like ``dense_dot``.
    """
    return _attention_fwd(query, key, value, bias, mask, keep, scale, keep_scale)[0]


def _dropped(probs, keep, keep_scale):
    return probs if keep is None else jnp.where(keep, probs * keep_scale, 0.0)


def _attention_fwd(query, key, value, bias, mask, keep, scale, keep_scale):
    probs = _attention_probs(_scores(query, key), bias, mask, scale)
    out = _weighted_sum(_dropped(probs, keep, keep_scale).astype(value.dtype), value)
    return out, (query, key, value, bias, mask, keep, probs, out)


def _attention_bwd(scale, keep_scale, res, d_out):
    query, key, value, bias, mask, keep, probs, out = res
    d_value = jnp.einsum("bnqk,bqnh->bknh", _dropped(probs, keep, keep_scale).astype(d_out.dtype), d_out)
    d_probs = _dropped(_scores(d_out, value).astype(jnp.float32), keep, keep_scale)
    row = jnp.einsum("bqnh,bqnh->bnq", d_out.astype(jnp.float32), out.astype(jnp.float32))
    d_logits = probs * (d_probs - row[..., None])
    if mask is not None:
        d_logits = jnp.where(mask, d_logits, 0.0)
    d_scaled = (d_logits * scale).astype(query.dtype)
    d_query = _weighted_sum(d_scaled, key).astype(query.dtype)
    d_key = jnp.einsum("bnqk,bqnh->bknh", d_scaled, query).astype(key.dtype)
    d_bias = None if bias is None else _sum_to_shape(d_logits, bias.shape).astype(bias.dtype)
    return d_query, d_key, d_value.astype(value.dtype), d_bias, None, None


_attention.defvjp(_attention_fwd, _attention_bwd)


def _dropout_keep(rng, rate: float, shape: tuple, broadcast_dims: Sequence[int]) -> Array:
    """Which of the ``[B, heads, Q, K]`` probabilities dropout keeps; ``broadcast_dims`` share one draw."""
    mask_shape = list(shape)
    for axis in broadcast_dims:
        mask_shape[axis] = 1
    return jax.random.bernoulli(rng, 1.0 - rate, mask_shape)


def dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    *,
    bias: Optional[Array],
    mask: Optional[Array],
    scale: float,
    implementation: str,
    dropout_rate: float = 0.0,
    dropout_rng: Optional[Array] = None,
    dropout_broadcast_dims: Sequence[int] = (),
    deterministic: bool = True,
) -> Array:
    """[B, Q, N, H] x [B, K, N, H] -> [B, Q, N, H]. Softmax is taken in float32.

    ``implementation='xla'`` is plain XLA with a hand-written backward pass
    (``_attention``), attention-probability dropout included; ``'cudnn'`` asks
    ``jax.nn.dot_product_attention`` for cuDNN's fused kernel on GPUs (which has
    no dropout: with dropout it takes the reference path); ``'einsum'`` is the
    reference that JAX differentiates. Both draw the same masks from one rng.
    ``dropout_broadcast_dims`` are axes of the ``[B, heads, Q, K]`` probabilities
    that share one dropout mask (t5x: ``(-2,)``, the queries).
    """
    dropout = dropout_rate > 0.0 and not deterministic
    probs_shape = (query.shape[0], query.shape[2], query.shape[1], key.shape[1])
    if implementation == "xla":
        keep = _dropout_keep(dropout_rng, dropout_rate, probs_shape, dropout_broadcast_dims) if dropout else None
        return _attention(query, key, value, bias, mask, keep, scale, 1.0 / (1.0 - dropout_rate))
    if implementation == "cudnn" and not dropout:
        return jax.nn.dot_product_attention(
            query, key, value, bias=bias, mask=mask, scale=scale, implementation=implementation
        )
    if implementation not in ("cudnn", "einsum"):
        raise ValueError(f"attention implementation must be 'xla', 'cudnn' or 'einsum', got {implementation!r}")
    weights = _attention_probs(jnp.einsum("bqnh,bknh->bnqk", query, key), bias, mask, scale)
    if dropout:
        keep = _dropout_keep(dropout_rng, dropout_rate, weights.shape, dropout_broadcast_dims)
        weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
    return jnp.einsum("bnqk,bknh->bqnh", weights.astype(value.dtype), value)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with an optional KV cache for incremental decoding.

    Kernels are [embed, heads, kv] / [heads, kv, embed] (t5x layout). With
    ``decode=True`` the keys/values of this call are written into a cache at
    ``cache_index`` and the queries attend to everything cached so far; a call
    with several tokens (a prompt) prefills, a call with one token decodes.
    """

    num_heads: int
    head_dim: int
    use_bias: bool = False
    scale: Optional[float] = None  # None: 1/sqrt(head_dim); T5 uses 1.0 (folded into init)
    dropout_rate: float = 0.0
    dropout_broadcast_dims: Sequence[int] = ()  # of the [B, heads, Q, K] probabilities
    implementation: str = "xla"
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    qkv_init: Callable = default_kernel_init
    query_init: Optional[Callable] = None  # defaults to qkv_init
    out_init: Callable = default_kernel_init

    @nn.compact
    def __call__(
        self,
        inputs_q: Array,
        inputs_kv: Array,
        *,
        bias: Optional[Array] = None,
        mask: Optional[Array] = None,
        deterministic: bool = True,
        decode: bool = False,
    ) -> Array:
        # These kernel layouts and names are what optimizers.t5x_matrix_shape maps to t5x's 2-D matrices.
        dense = lambda name, init: DenseGeneral(  # noqa: E731
            features=(self.num_heads, self.head_dim),
            kernel_axes=("embed", "heads", "kv"),
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=init,
            name=name,
        )
        query = dense("query", self.query_init or self.qkv_init)(inputs_q)
        key = dense("key", self.qkv_init)(inputs_kv)
        value = dense("value", self.qkv_init)(inputs_kv)
        query = constrain(query, ("batch", "length", "heads", "kv"))
        key = constrain(key, ("batch", "length", "heads", "kv"))
        value = constrain(value, ("batch", "length", "heads", "kv"))

        if decode:
            key, value = self._update_cache(key, value)

        scale = self.scale if self.scale is not None else self.head_dim**-0.5
        dropout_rng = None
        if self.dropout_rate > 0.0 and not deterministic:
            dropout_rng = self.make_rng("dropout")
        out = dot_product_attention(
            query,
            key,
            value,
            bias=bias,
            mask=mask,
            scale=scale,
            implementation=self.implementation,
            dropout_rate=self.dropout_rate,
            dropout_rng=dropout_rng,
            dropout_broadcast_dims=self.dropout_broadcast_dims,
            deterministic=deterministic,
        )
        out = constrain(out, ("batch", "length", "heads", "kv"))
        return DenseGeneral(
            features=inputs_q.shape[-1],
            kernel_axes=("heads", "kv", "embed"),
            in_axes=2,
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=self.out_init,
            name="out",
        )(out)

    def _update_cache(self, key: Array, value: Array) -> tuple[Array, Array]:
        is_initialized = self.has_variable("cache", "cached_key")
        cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
        cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, dtype=jnp.int32))
        if not is_initialized:
            # First (shape-defining) call: the cache is allocated at the full decode length.
            return key, value
        idx = cache_index.value
        k = jax.lax.dynamic_update_slice(cached_key.value, key.astype(cached_key.value.dtype), (0, idx, 0, 0))
        v = jax.lax.dynamic_update_slice(cached_value.value, value.astype(cached_value.value.dtype), (0, idx, 0, 0))
        cached_key.value, cached_value.value = k, v
        cache_index.value = idx + key.shape[1]
        return k, v


def cache_positions(decode_index: Array, num_new: int, max_length: int) -> tuple[Array, Array]:
    """Query positions of the tokens being decoded and the positions of all cache slots."""
    query = decode_index + jnp.arange(num_new, dtype=jnp.int32)
    keys = jnp.arange(max_length, dtype=jnp.int32)
    return query, keys


# --------------------------------------------------------------------------- MLPs


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=True),  # HF "gelu_new", used by T5 1.1
    "gelu_exact": lambda x: jax.nn.gelu(x, approximate=False),  # BERT
    "silu": jax.nn.silu,
    "linear": lambda x: x,
}


class MlpBlock(nn.Module):
    """Feed-forward block. ``activations=('gelu', 'linear')`` is gated-GELU: act(x W0) * (x W1)."""

    intermediate_dim: int
    activations: Sequence[str] = ("relu",)
    use_bias: bool = False
    intermediate_dropout_rate: float = 0.0
    dropout_broadcast_dims: Sequence[int] = ()  # of the [B, L, d_ff] hidden units
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    kernel_init: Callable = default_kernel_init
    out_init: Optional[Callable] = None

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool = True) -> Array:
        for act in self.activations:
            if act not in ACTIVATIONS:
                raise ValueError(f"unknown MLP activation {act!r}; choose from {sorted(ACTIVATIONS)}")
        hidden = None
        for i, act in enumerate(self.activations):
            name = "wi" if len(self.activations) == 1 else f"wi_{i}"
            h = DenseGeneral(
                self.intermediate_dim,
                kernel_axes=("embed", "mlp"),
                use_bias=self.use_bias,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                kernel_init=self.kernel_init,
                name=name,
            )(x)
            h = ACTIVATIONS[act](h)
            hidden = h if hidden is None else hidden * h
        hidden = constrain(hidden, ("batch", "length", "mlp"))
        hidden = nn.Dropout(self.intermediate_dropout_rate, broadcast_dims=tuple(self.dropout_broadcast_dims))(hidden, deterministic=deterministic)
        return DenseGeneral(
            x.shape[-1],
            kernel_axes=("mlp", "embed"),
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=self.out_init or self.kernel_init,
            name="wo",
        )(hidden)
