"""``models/layers.py``: the hand-written backward passes against JAX's autodiff of the plain formulas, and the
relative position bias against its definition."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t5x_lite.models import layers as L

B, Q, K, N, H = 2, 5, 7, 3, 4


def _normal(seed, shape, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), dtype)


def _assert_trees_close(a, b, atol):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y, np.float32), atol=atol)


@pytest.mark.parametrize("dtype, atol", [(jnp.float32, 1e-5), (jnp.bfloat16, 5e-2)])
def test_dense_dot_gradients_equal_autodiff(dtype, atol):
    x, w = _normal(0, (2, 6, 5), dtype), _normal(1, (5, 3, 4), dtype)

    def loss(dot):
        return lambda x, w: jnp.sum(jnp.sin(dot(x, w).astype(jnp.float32)))

    ours = jax.value_and_grad(loss(lambda x, w: L.dense_dot(x, w, 1)), argnums=(0, 1))(x, w)
    ref = jax.value_and_grad(loss(lambda x, w: jnp.einsum("btd,dnh->btnh", x, w)), argnums=(0, 1))(x, w)
    _assert_trees_close(ours, ref, atol)


def _scan_temp_bytes(dot):
    """Compiled temporary memory of a gradient through 8 scanned layers of a [512, 4, 128] kernel."""
    def loss(kernels, x):
        def layer(h, kernel):
            return jnp.tanh(dot(h, kernel).reshape(h.shape)), None
        return jnp.sum(jax.lax.scan(layer, x, kernels)[0])
    kernels, x = _normal(0, (8, 512, 4, 128)), _normal(1, (16, 512))
    compiled = jax.jit(jax.grad(loss)).lower(kernels, x).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_dense_dot_saves_the_kernel_itself_under_scan():
    """A residual computed from the kernel (e.g. its 2-D reshape) would be stacked per layer: 8 MB here."""
    ours = _scan_temp_bytes(lambda h, k: L.dense_dot(h, k, 1))
    ref = _scan_temp_bytes(lambda h, k: jnp.einsum("bd,dnh->bnh", h, k))
    assert ours <= ref + 1_000_000, (ours, ref)


def test_dense_general_contracts_several_axes_like_dot_general():
    """The out projection contracts (heads, kv): the flattened matmul must equal dot_general, value and grads."""
    x = _normal(0, (B, Q, N, H))
    dense = L.DenseGeneral(features=6, kernel_axes=("heads", "kv", "embed"), in_axes=2)
    params = dense.init(jax.random.key(0), x)

    def ours(params, x):
        return jnp.sum(jnp.cos(dense.apply(params, x)))

    def ref(params, x):
        kernel = params["params"]["kernel"].unbox()
        return jnp.sum(jnp.cos(jax.lax.dot_general(x, kernel, (((2, 3), (0, 1)), ((), ())))))

    _assert_trees_close(jax.value_and_grad(ours, argnums=(0, 1))(params, x),
                        jax.value_and_grad(ref, argnums=(0, 1))(params, x), 1e-5)


def _attention_value_and_grads(implementation, q, k, v, bias, mask, reduce):
    """reduce(attention(q, k, v)) and its gradients with respect to q, k, v and the bias."""
    def f(q, k, v, bias):
        return reduce(L.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=0.7, implementation=implementation))
    return jax.value_and_grad(f, argnums=(0, 1, 2, 3))(q, k, v, bias)


def _cos_weighted(out):
    return jnp.sum(out * jnp.cos(out))


def _squares(out):
    return jnp.sum(out.astype(jnp.float32) ** 2)


def _mask():
    mask = np.random.default_rng(3).random((B, 1, Q, K)) > 0.3
    mask[0, 0, 1, :] = False  # a fully masked query row (a padding position)
    return jnp.asarray(mask)


@pytest.mark.parametrize("bias_shape", [(B, N, Q, K), (1, N, Q, K), (N, 1, K), None],
                         ids=["batched", "broadcast", "unbatched", "none"])
@pytest.mark.parametrize("with_mask", [True, False], ids=["mask", "no_mask"])
def test_attention_gradients_equal_autodiff_of_einsum_reference(bias_shape, with_mask):
    q, k, v = _normal(0, (B, Q, N, H)), _normal(1, (B, K, N, H)), _normal(2, (B, K, N, H))
    bias = None if bias_shape is None else _normal(4, bias_shape)
    mask = _mask() if with_mask else None

    ours, ref = (_attention_value_and_grads(impl, q, k, v, bias, mask, _cos_weighted) for impl in ("xla", "einsum"))
    _assert_trees_close(ours, ref, 2e-6)
    if bias_shape == (B, N, Q, K) and with_mask:
        # Masked scores get no gradient, so a fully masked row leaves its bias untouched.
        d_bias = ours[1][3]
        assert np.all(np.asarray(d_bias)[0, :, 1, :] == 0.0)


@pytest.mark.parametrize("broadcast_dims", [(), (-2,)], ids=["per_element", "shared_along_queries"])
def test_attention_dropout_on_the_hand_written_path_equals_the_reference(broadcast_dims, monkeypatch):
    # Same rng, same mask: the dropped-out probabilities' gradient through FlashAttention's softmax formula
    # (rowsum(dO * O) with O from the dropped probabilities) equals JAX's autodiff of the reference.
    q, k, v = _normal(0, (B, Q, N, H)), _normal(1, (B, K, N, H)), _normal(2, (B, K, N, H))
    bias, mask = _normal(4, (1, N, Q, K)), _mask()

    def value_and_grads(implementation):
        def f(q, k, v, bias):
            out = L.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=0.7, implementation=implementation,
                                          dropout_rate=0.3, dropout_rng=jax.random.key(5), deterministic=False,
                                          dropout_broadcast_dims=broadcast_dims)
            return _cos_weighted(out)
        return jax.value_and_grad(f, argnums=(0, 1, 2, 3))(q, k, v, bias)

    masks = []
    hand_written = L._attention
    monkeypatch.setattr(L, "_attention", lambda *a: masks.append(a[5]) or hand_written(*a))
    ours = value_and_grads("xla")
    assert len(masks) == 1 and masks[0].shape == ((B, N, Q, K) if not broadcast_dims else (B, N, 1, K))
    ref = value_and_grads("einsum")
    _assert_trees_close(ours, ref, 1e-5)
    no_dropout = _attention_value_and_grads("xla", q, k, v, bias, mask, _cos_weighted)
    assert abs(float(ours[0]) - float(no_dropout[0])) > 1e-3  # the dropout took effect


def test_attention_in_bfloat16_follows_the_reference():
    q, k, v = (_normal(i, (B, T, N, H), jnp.bfloat16) for i, T in enumerate((Q, K, K)))
    bias, mask = _normal(4, (B, N, Q, K)), _mask()

    ours, ref = (_attention_value_and_grads(impl, q, k, v, bias, mask, _squares) for impl in ("xla", "einsum"))
    _assert_trees_close(ours, ref, 0.05)  # values reach 2.5-4


def test_attention_cotangents_keep_each_input_dtype():
    q = _normal(0, (B, Q, N, H), jnp.bfloat16)
    k, v = _normal(1, (B, K, N, H)), _normal(2, (B, K, N, H), jnp.bfloat16)

    ours, ref = (_attention_value_and_grads(impl, q, k, v, None, _mask(), _squares)[1] for impl in ("xla", "einsum"))
    _assert_trees_close(ours, ref, 0.05)


@pytest.mark.parametrize("q_len, k_len", [(1, 1), (1, 9), (4, 4), (5, 9), (9, 5)])
def test_toeplitz_reads_each_diagonal_from_its_distance(q_len, k_len):
    period = q_len + k_len
    values = jnp.arange(2 * period, dtype=jnp.float32).reshape(2, period)
    q, k = np.meshgrid(np.arange(q_len), np.arange(k_len), indexing="ij")
    np.testing.assert_array_equal(np.asarray(L.toeplitz(values, q_len, k_len)), np.asarray(values)[:, (k - q) % period])


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("q_len, k_len, offset", [(7, 7, 0), (3, 11, 0), (12, 4, 0), (1, 12, 5), (2, 40, 30)])
def test_relative_position_bias_is_the_table_at_each_pairs_bucket(bidirectional, q_len, k_len, offset):
    module = L.RelativePositionBias(num_buckets=8, max_distance=16, num_heads=3, bidirectional=bidirectional)
    params = nn.unbox(module.init(jax.random.key(0), q_len, k_len))
    # The offset is traced, as the decoding position is.
    bias = jax.jit(lambda p, start: module.apply(p, q_len, k_len, start))(params, jnp.int32(offset))
    rel = np.arange(k_len)[None, :] - (offset + np.arange(q_len))[:, None]
    buckets = np.asarray(L.relative_position_bucket(jnp.asarray(rel), bidirectional, 8, 16))
    assert bias.shape == (1, 3, q_len, k_len)
    np.testing.assert_array_equal(np.asarray(bias)[0], np.asarray(params["params"]["rel_embedding"])[:, buckets])


@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (1, 4, 5, 6), (4, 5, 6), (1, 1, 5, 6), (1, 4, 1, 6), (3, 1, 5, 6),
                                   (4, 1, 6), (6,), (1,)])
def test_sum_to_shape_is_the_transpose_of_broadcasting(shape):
    x = _normal(0, (3, 4, 5, 6))
    ref = jax.grad(lambda b: jnp.sum(jnp.broadcast_to(b, x.shape) * x))(jnp.zeros(shape))
    out = L._sum_to_shape(x, shape)
    assert out.shape == shape
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-6, atol=1e-6)
