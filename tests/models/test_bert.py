"""BERT encoder and heads: scan/remat equivalence, packing, padding, dtypes, dropout, axis names.

Compiles dominate the run time on CPU, so every forward goes through a few
cached jitted functions on batches of one shape, and params are drawn in NumPy
from ``eval_shape`` instead of running ``init``.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t5x_lite.models.bert import BertEncoder, BertForClassification, BertForMLM
from t5x_lite.models.config import BertConfig
from t5x_lite.models.stacking import stack_layer_params, unstack_layer_params

TINY = BertConfig(
    vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48,
    max_position_embeddings=24, num_labels=3,
)
LENGTH = 16


def _shapes(model_cls, cfg):
    tokens = jax.ShapeDtypeStruct((1, 4), jnp.int32)
    return jax.eval_shape(model_cls(cfg).init, jax.random.PRNGKey(0), tokens)["params"]


def _random_params(model_cls, cfg, seed):
    """Random values everywhere (biases and LN parameters included) so every parameter matters."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.normal(0.0, 0.2, s.shape), s.dtype), nn.unbox(_shapes(model_cls, cfg))
    )


@functools.lru_cache(maxsize=None)
def _forward(model_cls, cfg, packed=True, dropout=False):
    """Jitted apply; ``packed`` passes segment_ids/positions, otherwise an HF-style attention mask."""

    def f(params, batch, rng=None):
        model = model_cls(cfg)
        rngs = {"dropout": rng} if dropout else None
        if packed:
            args = (batch["tokens"], batch["types"], batch["segments"], batch["positions"])
        else:
            args = (batch["tokens"], batch["types"], None, None, batch["segments"] > 0)
        return model.apply({"params": params}, *args, enable_dropout=dropout, rngs=rngs)

    return jax.jit(f)


def _row(pieces):
    """Concatenate (tokens, types, segment, positions) pieces and right-pad to LENGTH."""
    cols = [np.concatenate([p[i] for p in pieces]) for i in range(4)]
    return [np.pad(c, (0, LENGTH - len(c))) for c in cols]


def _batch(rows):
    keys = ("tokens", "types", "segments", "positions")
    return {k: jnp.asarray(np.stack([r[i] for r in rows]), jnp.int32) for i, k in enumerate(keys)}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    examples = []
    for n in (5, 7, 9):
        tokens = rng.integers(1, TINY.vocab_size, n)
        types = (np.arange(n) >= n // 2).astype(np.int32)
        examples.append((tokens, types, np.ones(n, np.int32), np.arange(n)))
    a, b, c = examples

    def seg(example, s):
        return (example[0], example[1], example[2] * s, example[3])

    return {
        "mlm": _random_params(BertForMLM, TINY, 1),
        "cls": _random_params(BertForClassification, TINY, 2),
        "examples": examples,
        # Row 0 packs a and b, row 1 holds c alone; the rest is padding (segment 0).
        "packed": _batch([_row([seg(a, 1), seg(b, 2)]), _row([c])]),
        "separate": [_batch([_row([a]), _row([b])]), _batch([_row([c]), _row([a])])],
    }


def test_scan_matches_loop(data):
    loop = _forward(BertForMLM, TINY)(data["mlm"], data["packed"])
    scan_cfg = TINY.replace(scan_layers=True)
    stacked = stack_layer_params(data["mlm"])
    # The stacked tree is exactly what a scanned model initializes.
    assert jax.tree_util.tree_map(jnp.shape, nn.unbox(_shapes(BertForMLM, scan_cfg))) == jax.tree_util.tree_map(
        jnp.shape, stacked
    )
    scanned = _forward(BertForMLM, scan_cfg)(stacked, data["packed"])
    np.testing.assert_allclose(scanned, loop, atol=1e-5, rtol=0)


@functools.lru_cache(maxsize=None)
def _loss_and_grad(cfg):
    def loss(params, batch):
        seq, _ = BertEncoder(cfg, add_pooling_layer=False).apply(
            {"params": params}, batch["tokens"], batch["types"], batch["segments"], batch["positions"]
        )
        return jnp.mean(jnp.sin(seq))

    return jax.jit(jax.value_and_grad(loss))


# One combination keeps the file fast; every policy x layout of stacking.run_layers is covered by test_t5.py.
@pytest.mark.parametrize("policy,scan", [("dots", True)])
def test_remat_matches_plain(data, policy, scan):
    params = stack_layer_params(data["mlm"]["bert"])
    # The baseline is the plain scan: its backward pass compiles faster than the plain loop's.
    v0, g0 = _loss_and_grad(TINY.replace(scan_layers=True))(params, data["packed"])
    cfg = TINY.replace(scan_layers=scan, remat_policy=policy)
    v1, g1 = _loss_and_grad(cfg)(params if scan else unstack_layer_params(params), data["packed"])
    if not scan:
        g1 = stack_layer_params(g1)
    np.testing.assert_allclose(v1, v0, atol=1e-6, rtol=0)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), g1, g0)


def test_packed_batch_equals_separate_examples(data):
    fwd = _forward(BertForMLM, TINY)
    packed = fwd(data["mlm"], data["packed"])
    sep0, sep1 = (fwd(data["mlm"], b) for b in data["separate"])
    np.testing.assert_allclose(packed[0, :5], sep0[0, :5], atol=1e-5, rtol=0)
    np.testing.assert_allclose(packed[0, 5:12], sep0[1, :7], atol=1e-5, rtol=0)
    np.testing.assert_allclose(packed[1, :9], sep1[0, :9], atol=1e-5, rtol=0)


def test_attention_mask_path_matches_segments(data):
    """Unpacked rows (HF-style padding mask) agree with the one-segment-per-row packed path on real tokens."""
    batch = data["separate"][0]
    real = np.asarray(batch["segments"]) > 0
    with_segments = _forward(BertForMLM, TINY)(data["mlm"], batch)
    with_mask = _forward(BertForMLM, TINY, packed=False)(data["mlm"], batch)
    np.testing.assert_allclose(np.asarray(with_mask)[real], np.asarray(with_segments)[real], atol=1e-5, rtol=0)


def test_bfloat16_runs(data):
    cfg = TINY.replace(dtype="bfloat16")
    logits = _forward(BertForMLM, cfg)(data["mlm"], data["packed"])
    assert logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all()
    want = np.asarray(_forward(BertForMLM, TINY)(data["mlm"], data["packed"]))
    assert np.abs(np.asarray(logits) - want).max() < 0.1 * np.abs(want).max()


def _on_bfloat16_grid(x) -> bool:
    x = np.asarray(x, np.float32)
    return bool(np.array_equal(x, np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32)))


@pytest.mark.parametrize("head", ["mlm", "cls"])
def test_bfloat16_heads_project_in_float32_unless_told_not_to(data, head):
    model_cls = BertForMLM if head == "mlm" else BertForClassification
    params = dict(data[head])
    if head == "mlm":  # the float32 bias added after the projection would hide the projection's dtype
        params["mlm_bias"] = jnp.zeros_like(params["mlm_bias"])
    cfg = TINY.replace(dtype="bfloat16")
    float32_head = _forward(model_cls, cfg)(params, data["packed"])
    bfloat16_head = _forward(model_cls, cfg.replace(float32_logits=False))(params, data["packed"])
    assert _on_bfloat16_grid(bfloat16_head) and not _on_bfloat16_grid(float32_head)
    np.testing.assert_allclose(float32_head, bfloat16_head, atol=0.02 * float(np.abs(np.asarray(float32_head)).max()))


@pytest.mark.parametrize("param_dtype", ["float32", "bfloat16"])
def test_bfloat16_dtypes(data, param_dtype):
    """Activations stay in the compute dtype, logits are float32, params are created in param_dtype."""
    cfg = TINY.replace(dtype="bfloat16", param_dtype=param_dtype)
    tokens = jax.ShapeDtypeStruct((2, 8), jnp.int32)
    params = jax.tree_util.tree_map(lambda x: x.astype(param_dtype), data["cls"])
    seq, pooled = jax.eval_shape(lambda p, t: BertEncoder(cfg).apply({"params": p}, t), params["bert"], tokens)
    assert seq.dtype == jnp.bfloat16 and pooled.dtype == jnp.bfloat16
    logits = jax.eval_shape(lambda p, t: BertForClassification(cfg).apply({"params": p}, t), params, tokens)
    assert logits.shape == (2, TINY.num_labels) and logits.dtype == jnp.float32
    shapes = nn.unbox(_shapes(BertForClassification, cfg))
    assert {x.dtype for x in jax.tree_util.tree_leaves(shapes)} == {jnp.dtype(param_dtype)}


def test_dropout_with_scan(data):
    cfg = TINY.replace(scan_layers=True, dropout_rate=0.2, attention_dropout_rate=0.2)
    fwd = _forward(BertForMLM, cfg, dropout=True)
    params = stack_layer_params(data["mlm"])
    # 'rbg' keys compile much faster on CPU than the default threefry.
    a = fwd(params, data["packed"], jax.random.key(0, impl="rbg"))
    b = fwd(params, data["packed"], jax.random.key(0, impl="rbg"))
    c = fwd(params, data["packed"], jax.random.key(1, impl="rbg"))
    np.testing.assert_array_equal(a, b)
    assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-3
    plain = _forward(BertForMLM, TINY)(data["mlm"], data["packed"])
    assert np.abs(np.asarray(a) - np.asarray(plain)).max() > 1e-3


@pytest.mark.parametrize("scan", [False, True])
def test_params_carry_logical_axes(scan):
    boxed = _shapes(BertForMLM, TINY.replace(scan_layers=scan))
    leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
    assert all(len(x.names) == len(x.value.shape) for x in leaves)
    assert boxed["bert"]["word_embeddings"]["embedding"].names == ("vocab", "embed")
    layer = boxed["bert"]["layers"] if scan else boxed["bert"]["layers_0"]
    assert layer["attention"]["query"]["kernel"].names == (("layers",) if scan else ()) + ("embed", "heads", "kv")


@pytest.mark.parametrize("packed", [False, True])
def test_rejects_too_long_rows(data, packed):
    # packed, the positions come with the batch; past the table jnp.take gave NaN rows and a NaN loss
    tokens = jax.ShapeDtypeStruct((1, TINY.max_position_embeddings + 1), jnp.int32)
    extra = (tokens, tokens) if packed else ()  # segment ids, positions
    with pytest.raises(ValueError, match="max_position_embeddings"):
        jax.eval_shape(lambda p, t, *e: BertForMLM(TINY).apply({"params": p}, t, None, *e), data["mlm"], tokens,
                       *extra)


def test_label_names_name_every_class_once():
    from t5x_lite.errors import ConfigError

    assert BertConfig(num_labels=2, label_names=["no", "yes"]).label_names == ("no", "yes")  # gin gives lists
    for bad in (("no",), ("no", "no"), ("no", ""), ("no", 1)):
        with pytest.raises(ConfigError, match=r"label_names must be 2 \(num_labels\) distinct non-empty strings"):
            BertConfig(num_labels=2, label_names=bad)


def test_one_label_is_a_regression_head():
    # Hugging Face's convention: num_labels = 1 trains with mean squared error (its HF parity: tests/convert)
    from t5x_lite.errors import ConfigError
    from t5x_lite.models.model import EncoderOnlyClassificationModel

    model = EncoderOnlyClassificationModel(config=TINY.replace(num_labels=1, dropout_rate=0.0), z_loss=0.0)
    assert model.regression and not EncoderOnlyClassificationModel(config=TINY).regression
    batch = model.dummy_batch(2, {"inputs": 8})
    assert batch["labels"].dtype == jnp.float32
    params = model.init(jax.random.key(0), batch)
    predictions = model.logits(params, batch)[:, 0]
    batch["labels"] = jnp.array([0.5, 4.0], jnp.float32)
    loss, metrics = model.loss_fn(params, batch)
    np.testing.assert_allclose(loss, np.mean((np.asarray(predictions) - [0.5, 4.0]) ** 2), rtol=1e-6)
    assert set(metrics) == {"loss", "num_tokens"} and float(metrics["num_tokens"]) == 2
    fixed, _ = EncoderOnlyClassificationModel(config=model.config, loss_normalizer=10.0).loss_fn(params, batch)
    np.testing.assert_allclose(fixed, loss * 2 / 10, rtol=1e-6)  # the sum over a fixed normalizer
    with pytest.raises(ConfigError, match="label_smoothing=0.1 smooths classes; BertConfig.num_labels = 1 is a "
                                          "regression head"):
        EncoderOnlyClassificationModel(config=model.config, label_smoothing=0.1)
