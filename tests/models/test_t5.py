"""T5 encoder-decoder and decoder-only: layouts, packing, KV cache, dtypes."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t5x_lite.models.config import T5Config
from t5x_lite.models.model import DecoderOnlyModel, EncoderDecoderModel
from t5x_lite.models.stacking import stack_layer_params, unstack_layer_params

TINY = T5Config(
    vocab_size=50, d_model=32, d_ff=48, num_heads=4, d_kv=8, num_encoder_layers=2, num_decoder_layers=3,
    mlp_activations=("gelu", "linear"), logits_via_embedding=False, dropout_rate=0.0,
    relative_attention_num_buckets=8, relative_attention_max_distance=16,
)
TINY_V10 = TINY.replace(mlp_activations=("relu",), logits_via_embedding=True)


@functools.partial(jax.jit, static_argnums=0)
def _logits(model, params, batch):
    return model.logits(params, batch)


@functools.partial(jax.jit, static_argnums=0)
def _loss_and_grads(model, params, batch):
    return jax.value_and_grad(model.loss_fn, has_aux=True)(params, batch)


def _jit_apply(module, **static):
    """module.apply with static keyword options (decode, method ...) under one jit."""
    return jax.jit(functools.partial(module.apply, **static))


def _tokens(rng, shape, low=3, high=50):
    return jnp.asarray(np.random.default_rng(rng).integers(low, high, shape), jnp.int32)


def _encdec_batch(seed=0, b=2, s=7, t=5):
    enc = _tokens(seed, (b, s))
    tgt = _tokens(seed + 1, (b, t))
    dec_in = jnp.concatenate([jnp.zeros((b, 1), jnp.int32), tgt[:, :-1]], axis=1)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in, "decoder_target_tokens": tgt}


def _lm_batch(seed=0, b=2, t=9):
    tgt = _tokens(seed, (b, t))
    dec_in = jnp.concatenate([jnp.zeros((b, 1), jnp.int32), tgt[:, :-1]], axis=1)
    return {"decoder_input_tokens": dec_in, "decoder_target_tokens": tgt}


@pytest.mark.parametrize("cfg", [TINY, TINY_V10], ids=["v1_1", "v1_0"])
def test_scan_matches_loop(cfg):
    model = EncoderDecoderModel(config=cfg)
    batch = _encdec_batch()
    params = model.init(jax.random.key(0), batch)
    scanned = EncoderDecoderModel(config=cfg.replace(scan_layers=True))
    stacked = stack_layer_params(params)
    assert "layers" in stacked["encoder"] and "layers_0" not in stacked["encoder"]
    np.testing.assert_allclose(_logits(model, params, batch), _logits(scanned, stacked, batch), atol=1e-5)
    # scan's own init has the layout that stack_layer_params produces
    own = scanned.init(jax.random.key(0), batch)
    assert jax.tree_util.tree_structure(own) == jax.tree_util.tree_structure(stacked)
    back = unstack_layer_params(stacked)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: bool(jnp.array_equal(a, b)), params, back))


def test_init_draws_layers_in_scan_layout_then_unstacks():
    """A loop-layout model's init is the scan layout's, unstacked (one draw per weight: a smaller init program)."""
    model = EncoderDecoderModel(config=TINY)
    batch = _encdec_batch()
    params = jax.device_get(model.init(jax.random.key(0), batch))
    scanned = jax.device_get(model.replace(config=TINY.replace(scan_layers=True)).init(jax.random.key(0), batch))
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, params, unstack_layer_params(scanned)))
    # The layout and shapes are the loop module's own; each layer has its own draw, distributed as
    # the loop module draws it (per-leaf std within 10% over leaves of >= 1,000 values).
    own = jax.device_get(jax.jit(
        lambda r: nn.unbox(model.module.init({"params": r}, **model._apply_kwargs(batch))["params"]))(jax.random.key(3)))
    assert jax.tree_util.tree_structure(own) == jax.tree_util.tree_structure(params)
    for (path, got), ref in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(own)):
        assert got.shape == ref.shape, path
        if got.size >= 1000:
            assert abs(np.std(got) / np.std(ref) - 1) < 0.1, path
    enc = params["encoder"]
    assert not np.array_equal(enc["layers_0"]["mlp"]["wi_0"]["kernel"], enc["layers_1"]["mlp"]["wi_0"]["kernel"])


def test_decoder_only_scan_matches_loop():
    model = DecoderOnlyModel(config=TINY)
    batch = _lm_batch()
    params = model.init(jax.random.key(1), batch)
    scanned = DecoderOnlyModel(config=TINY.replace(scan_layers=True))
    np.testing.assert_allclose(_logits(model, params, batch), _logits(scanned, stack_layer_params(params), batch),
                               atol=1e-5)


@pytest.mark.parametrize("policy", ["full", "dots"])
@pytest.mark.parametrize("scan", [False, True])
def test_remat_gives_same_loss_and_grads(policy, scan):
    base = EncoderDecoderModel(config=TINY.replace(scan_layers=scan))
    remat = EncoderDecoderModel(config=TINY.replace(scan_layers=scan, remat_policy=policy))
    batch = _encdec_batch()
    params = base.init(jax.random.key(0), batch)
    (l1, _), g1 = _loss_and_grads(base, params, batch)
    (l2, _), g2 = _loss_and_grads(remat, params, batch)
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_einsum_attention_matches_xla():
    batch = _encdec_batch()
    model = EncoderDecoderModel(config=TINY)
    params = model.init(jax.random.key(0), batch)
    ref = EncoderDecoderModel(config=TINY.replace(attention_impl="einsum"))
    np.testing.assert_allclose(_logits(model, params, batch), _logits(ref, params, batch), atol=1e-5)


def _pack(rows, length):
    """Concatenate examples into one row with segment ids and per-example positions."""
    tokens, seg, pos = [], [], []
    for i, r in enumerate(rows, start=1):
        tokens += list(r)
        seg += [i] * len(r)
        pos += list(range(len(r)))
    pad = length - len(tokens)
    return (np.array(tokens + [0] * pad)[None], np.array(seg + [0] * pad)[None], np.array(pos + [0] * pad)[None])


def test_packed_encoder_decoder_equals_separate():
    model = EncoderDecoderModel(config=TINY)
    rng = np.random.default_rng(3)
    inputs = [rng.integers(3, 50, n) for n in (5, 3, 6)]
    targets = [rng.integers(3, 50, n) for n in (4, 2, 3)]
    dec_inputs = [np.concatenate([[0], t[:-1]]) for t in targets]
    enc, enc_seg, enc_pos = _pack(inputs, 16)
    dec, dec_seg, dec_pos = _pack(dec_inputs, 12)
    packed = {"encoder_input_tokens": enc, "decoder_input_tokens": dec, "encoder_segment_ids": enc_seg,
              "decoder_segment_ids": dec_seg, "encoder_positions": enc_pos, "decoder_positions": dec_pos}
    packed = {k: jnp.asarray(v, jnp.int32) for k, v in packed.items()}
    params = model.init(jax.random.key(0), packed)
    packed_logits = np.asarray(_logits(model, params, packed))[0]
    offset = 0
    for x, d in zip(inputs, dec_inputs):
        single = {"encoder_input_tokens": jnp.asarray(x[None], jnp.int32),
                  "decoder_input_tokens": jnp.asarray(d[None], jnp.int32)}
        alone = np.asarray(_logits(model, params, single))[0]
        np.testing.assert_allclose(packed_logits[offset: offset + len(d)], alone, atol=1e-5)
        offset += len(d)


def _scatter_adds(jaxpr):
    """(operand shape, operand dtype, update count) of every scatter-add in a jaxpr, nested jaxprs included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scatter-add":
            found.append((eqn.invars[0].aval.shape, eqn.invars[0].aval.dtype, eqn.invars[2].aval.size))
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else (value,):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    found.extend(_scatter_adds(sub))
    return found


def test_gradient_scatters_stay_small_and_in_float32():
    # A gather at [B, Q, K] bucket indices made the relative-position gradient a scatter-add of B*Q*K*heads updates
    # into the heads x buckets table: GPU atomics colliding on a few addresses, over 20 s per T5-small step on
    # an H100. Embedding gradients accumulate in the float32 parameter dtype, whatever the compute dtype.
    cfg = TINY.replace(dtype="bfloat16")
    model = EncoderDecoderModel(config=cfg)
    batch = _encdec_batch(b=4, s=12, t=6)
    params = model.init(jax.random.key(0), batch)
    scatters = _scatter_adds(jax.make_jaxpr(jax.grad(lambda p: model.loss_fn(p, batch)[0]))(params).jaxpr)
    assert scatters and all(dtype == jnp.float32 for _, dtype, _ in scatters), scatters
    relpos = [size for shape, _, size in scatters if shape == (cfg.num_heads, cfg.relative_attention_num_buckets)]
    assert len(relpos) == 2  # one table per stack
    assert max(relpos) <= cfg.num_heads * (12 + 12)  # heads x (Q + K) distances, whatever the batch


@pytest.mark.parametrize("prefix_lm", [False, True])
def test_packed_decoder_only_equals_separate(prefix_lm):
    model = DecoderOnlyModel(config=TINY)
    rng = np.random.default_rng(4)
    rows = [rng.integers(3, 50, n) for n in (5, 4, 6)]
    prefix_lens = [2, 1, 3]
    dec, seg, pos = _pack(rows, 18)
    causal = np.zeros_like(dec)
    if prefix_lm:
        offset = 0
        for r, p in zip(rows, prefix_lens):
            causal[0, offset: offset + p] = 1
            offset += len(r)
    batch = {"decoder_input_tokens": dec, "decoder_segment_ids": seg, "decoder_positions": pos}
    if prefix_lm:
        batch["decoder_causal_attention"] = causal
    batch = {k: jnp.asarray(v, jnp.int32) for k, v in batch.items()}
    params = model.init(jax.random.key(0), batch)
    packed = np.asarray(_logits(model, params, batch))[0]
    offset = 0
    for r, p in zip(rows, prefix_lens):
        single = {"decoder_input_tokens": jnp.asarray(r[None], jnp.int32)}
        if prefix_lm:
            single["decoder_causal_attention"] = jnp.asarray((np.arange(len(r)) < p)[None], jnp.int32)
        np.testing.assert_allclose(packed[offset: offset + len(r)], np.asarray(_logits(model, params, single))[0],
                                   atol=1e-5)
        offset += len(r)


def test_prefix_lm_mask_sees_the_whole_prefix():
    """Changing a later prefix token changes earlier prefix outputs (bidirectional), not for a causal LM."""
    model = DecoderOnlyModel(config=TINY)
    batch = _lm_batch(t=6)
    params = model.init(jax.random.key(0), batch)
    changed = dict(batch, decoder_input_tokens=batch["decoder_input_tokens"].at[:, 2].set(7))
    causal = jnp.asarray(np.array([[1, 1, 1, 0, 0, 0]] * 2), jnp.int32)
    a = _logits(model, params, dict(batch, decoder_causal_attention=causal))
    b = _logits(model, params, dict(changed, decoder_causal_attention=causal))
    assert not np.allclose(a[:, 0], b[:, 0])
    np.testing.assert_allclose(_logits(model, params, batch)[:, :2], _logits(model, params, changed)[:, :2], atol=1e-6)


@pytest.mark.parametrize("cfg", [TINY, TINY_V10, TINY.replace(scan_layers=True)], ids=["v1_1", "v1_0", "scan"])
def test_kv_cache_decoding_equals_full_forward(cfg):
    model = EncoderDecoderModel(config=cfg)
    batch = _encdec_batch(t=6)
    batch["encoder_input_tokens"] = batch["encoder_input_tokens"].at[1, 5:].set(0)  # padded input
    params = model.init(jax.random.key(0), batch)
    full = np.asarray(_logits(model, params, batch))
    module = model.module
    dec_in = batch["decoder_input_tokens"]
    t = dec_in.shape[1]
    encoded = _jit_apply(module, method=module.encode)({"params": params}, batch["encoder_input_tokens"])
    cache = _jit_apply(module, method=module.decode, decode=True, mutable=["cache"])(
        {"params": params}, encoded, batch["encoder_input_tokens"], dec_in)[1]["cache"]
    step = _jit_apply(module, method=module.decode, decode=True, max_decode_length=t, mutable=["cache"])
    for i in range(t):
        logits, mut = step({"params": params, "cache": cache}, encoded, batch["encoder_input_tokens"],
                           dec_in[:, i: i + 1])
        cache = mut["cache"]
        np.testing.assert_allclose(np.asarray(logits)[:, 0], full[:, i], atol=1e-5)


def test_decoder_only_cache_prefill_then_step():
    """A prompt prefilled in one call, then token-by-token, equals the full prefix-LM forward."""
    model = DecoderOnlyModel(config=TINY)
    batch = _lm_batch(t=8)
    tokens = batch["decoder_input_tokens"]
    p = 3
    causal = jnp.asarray(np.tile(np.arange(8) < p, (2, 1)), jnp.int32)
    params = model.init(jax.random.key(0), batch)
    full = np.asarray(_logits(model, params, dict(batch, decoder_causal_attention=causal)))
    module = model.module
    cache = _jit_apply(module, decode=True, mutable=["cache"])({"params": params}, tokens)[1]["cache"]
    step = _jit_apply(module, decode=True, max_decode_length=8, mutable=["cache"])
    logits, mut = step({"params": params, "cache": cache}, tokens[:, :p], decoder_causal_attention=causal[:, :p])
    np.testing.assert_allclose(np.asarray(logits), full[:, :p], atol=1e-5)
    cache = mut["cache"]
    for i in range(p, 8):
        logits, mut = step({"params": params, "cache": cache}, tokens[:, i: i + 1])
        cache = mut["cache"]
        np.testing.assert_allclose(np.asarray(logits)[:, 0], full[:, i], atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_logits():
    cfg = TINY.replace(dtype="bfloat16")
    model = EncoderDecoderModel(config=cfg)
    batch = _encdec_batch()
    params = model.init(jax.random.key(0), batch)
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params))
    logits = _logits(model, params, batch)
    assert logits.dtype == jnp.float32
    ref = _logits(EncoderDecoderModel(config=TINY), params, batch)
    assert np.abs(np.asarray(logits) - np.asarray(ref)).max() < 0.1 * np.abs(np.asarray(ref)).max()


def test_every_param_has_logical_axes():
    for cfg in (TINY, TINY.replace(scan_layers=True)):
        model = EncoderDecoderModel(config=cfg)
        abstract = model.abstract_params(_encdec_batch())
        specs = nn.get_partition_spec(abstract)
        leaves = jax.tree_util.tree_leaves(abstract, is_leaf=lambda x: isinstance(x, nn.Partitioned))
        assert all(isinstance(x, nn.Partitioned) for x in leaves)
        for leaf, spec in zip(leaves, jax.tree_util.tree_leaves(specs, is_leaf=lambda x: x is None or
                                                                   isinstance(x, jax.sharding.PartitionSpec))):
            assert len(leaf.names) == leaf.value.ndim
        if cfg.scan_layers:
            assert any("layers" in x.names for x in leaves)


def test_dropout_is_active_only_with_rng():
    model = EncoderDecoderModel(config=TINY.replace(dropout_rate=0.5))
    batch = _encdec_batch()
    params = model.init(jax.random.key(0), batch)
    a = _logits(model, params, batch)
    np.testing.assert_array_equal(a, _logits(model, params, batch))
    b = jax.jit(model.logits)(params, batch, jax.random.key(1))
    assert not np.allclose(a, b)


@pytest.mark.parametrize("model", [EncoderDecoderModel(config=TINY.replace(dropout_rate=0.3)),
                                   DecoderOnlyModel(config=TINY.replace(dropout_rate=0.3, num_encoder_layers=0))])
def test_attention_probabilities_get_the_model_dropout(model, monkeypatch):
    # t5x's network and HF's T5Attention drop attention weights at dropout_rate; every attention must see it.
    from t5x_lite.models import layers

    seen = []
    original = layers.dot_product_attention

    def recording(*args, **kwargs):
        seen.append((kwargs.get("dropout_rate"), kwargs.get("deterministic")))
        return original(*args, **kwargs)

    monkeypatch.setattr(layers, "dot_product_attention", recording)
    batch = _encdec_batch() if model.kind == "encoder_decoder" else _lm_batch()
    params = model.init(jax.random.key(0), batch)
    seen.clear()
    model.logits(params, batch, jax.random.key(1))  # eagerly: each attention call is recorded
    expected = 3 if model.kind == "encoder_decoder" else 1  # self (enc), self + cross (dec); causal self
    assert len(seen) >= expected and set(seen) == {(0.3, False)}


def _on_bfloat16_grid(x) -> bool:
    x = np.asarray(x, np.float32)
    return bool(np.array_equal(x, np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32)))


@pytest.mark.parametrize("cfg", [TINY, TINY_V10], ids=["untied", "tied"])
def test_bfloat16_model_computes_logits_in_float32_as_t5x_does(cfg):
    # t5x's output projection (DenseGeneral dtype=float32, Embed attend_dtype=float32) runs in float32 under
    # a bfloat16 activation dtype; float32_logits=False keeps HF's bfloat16 projection.
    batch = _encdec_batch()
    params = EncoderDecoderModel(config=cfg).init(jax.random.key(0), batch)
    f32_head = _logits(EncoderDecoderModel(config=cfg.replace(dtype="bfloat16")), params, batch)
    bf16_head = _logits(EncoderDecoderModel(config=cfg.replace(dtype="bfloat16", float32_logits=False)), params,
                        batch)
    assert _on_bfloat16_grid(bf16_head) and not _on_bfloat16_grid(f32_head)
    # The same bfloat16 network below the head: the two differ by the head's rounding only.
    np.testing.assert_allclose(f32_head, bf16_head, atol=0.02 * float(np.abs(np.asarray(f32_head)).max()))
    # In float32 the flag changes nothing.
    np.testing.assert_array_equal(_logits(EncoderDecoderModel(config=cfg), params, batch),
                                  _logits(EncoderDecoderModel(config=cfg.replace(float32_logits=False)), params,
                                          batch))


@pytest.mark.parametrize("broadcast", [False, True])
@pytest.mark.parametrize("kind", ["encoder_decoder", "decoder_only"])
def test_broadcast_dropout_shares_each_mask_along_the_sequence(kind, broadcast, monkeypatch):
    # flaxformer's T5 configs: Dropout(broadcast_dims=(-2,)) on hidden states and broadcast_dropout=True
    # (dims (-2,)) on attention probabilities. Every mask drawn must then be size 1 on its second-last axis.
    cfg = TINY.replace(dropout_rate=0.3, broadcast_dropout=broadcast)
    model = (EncoderDecoderModel(config=cfg) if kind == "encoder_decoder"
             else DecoderOnlyModel(config=cfg.replace(num_encoder_layers=0)))
    batch = _encdec_batch() if kind == "encoder_decoder" else _lm_batch()
    params = model.init(jax.random.key(0), batch)
    shapes = []
    original = jax.random.bernoulli

    def recording(key, p=0.5, shape=None, **kw):
        shapes.append(tuple(shape))
        return original(key, p, shape, **kw)

    monkeypatch.setattr(jax.random, "bernoulli", recording)
    model.logits(params, batch, jax.random.key(1))  # eagerly, so every draw is recorded
    # embeddings, 2 residuals per encoder layer and 3 per decoder layer, MLP hidden units, attention, outputs
    assert len(shapes) >= 10
    attention = [s for s in shapes if len(s) == 4]
    assert len(attention) == (2 + 2 * 3 if kind == "encoder_decoder" else 3)
    assert all((s[-2] == 1) == broadcast for s in shapes)
