"""Decoding: greedy / sampling / beam search against full forward passes and Hugging Face ``generate``.

The encoder-decoder tests share one random-init Hugging Face T5 v1.1, imported
with ``convert.import_hf``, whose head is scaled up so that argmax decisions are
far from ties (float32 differences between the two frameworks are ~1e-6) and
whose EOS row is boosted so that sequences do end early. One model, one batch
shape and few option sets keep the number of XLA compilations small.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import T5Config as HFT5Config
from transformers import T5ForConditionalGeneration

from t5x_lite import convert, decoding
from t5x_lite.convert import hf_io
from t5x_lite.decoding import predict as predict_lib
from t5x_lite.models.config import T5Config
from t5x_lite.models.model import DecoderOnlyModel

VOCAB, EOS, L = 120, 1, 10
SCORE_ROWS = 24  # every encoder-decoder score_batch call is padded to this many rows: one compilation


@functools.partial(jax.jit, static_argnums=0)
def _logits(model, params, batch):
    return model.logits(params, batch)


@pytest.fixture(scope="module")
def t5(tmp_path_factory):
    """(HF model, our model, our params, encoder inputs [6, 8]) for a converted random-init T5 v1.1."""
    torch.manual_seed(0)
    cfg = HFT5Config(vocab_size=VOCAB, d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2, num_decoder_layers=2,
                     feed_forward_proj="gated-gelu", relative_attention_num_buckets=8,
                     relative_attention_max_distance=20, decoder_start_token_id=0, tie_word_embeddings=False)
    state = {k: v.detach().numpy() for k, v in T5ForConditionalGeneration(cfg).eval().state_dict().items()}
    head = np.random.default_rng(0).normal(0, 3 * 32 ** -0.5, (VOCAB, 32)).astype(np.float32)  # logits std ~3
    head[EOS] *= 1.5  # EOS wins now and then
    state["lm_head.weight"] = head
    hf_json = cfg.to_dict()
    hf_json["tie_word_embeddings"] = False
    directory = tmp_path_factory.mktemp("hf_t5")
    hf_io.write_directory(directory, hf_json, state)
    hf = T5ForConditionalGeneration.from_pretrained(directory).eval()
    model, params = convert.import_hf(directory)
    x = np.random.default_rng(1).integers(3, VOCAB, (6, 8))
    x[1, 5:] = 0
    x[2, 3:] = 0
    x[4, 6:] = 0
    return hf, model, params, x


def _predict(t5, **kw):
    _, model, params, x = t5
    tokens, scores = decoding.predict_batch(model, params, {"encoder_input_tokens": x}, max_decode_length=L, **kw)
    return np.asarray(tokens), np.asarray(scores)


def _cut_at_eos(tokens, length=L):
    """Everything after the first EOS -> 0, then pad/crop to ``length`` (HF fills beams with EOS, crops batches)."""
    tokens = np.asarray(tokens)
    after = np.cumsum(np.cumsum(tokens == EOS, axis=-1), axis=-1) > 1  # strictly after the first EOS
    tokens = np.where(after, 0, tokens)
    pad = [(0, 0)] * (tokens.ndim - 1) + [(0, max(0, length - tokens.shape[-1]))]
    return np.pad(tokens, pad)[..., :length]


def _through_eos(tokens):
    """1 at generated positions up to and including the first EOS (all positions if there is none)."""
    return (np.cumsum(np.cumsum(tokens == EOS, axis=-1), axis=-1) <= 1).astype(np.float32)


def _score_encdec(t5, x_rows, tokens):
    """score_batch log-likelihoods of ``tokens`` [N, L] (through EOS) given encoder inputs [N, T]."""
    _, model, params, _ = t5
    n = len(tokens)
    fill = lambda a: np.concatenate([a, np.zeros((SCORE_ROWS - n,) + a.shape[1:], a.dtype)])  # noqa: E731
    batch = {"encoder_input_tokens": fill(x_rows), "decoder_target_tokens": fill(tokens),
             "decoder_loss_weights": fill(_through_eos(tokens))}
    total, per_token = decoding.score_batch(model, params, batch)
    return np.asarray(total)[:n], np.asarray(per_token)[:n]


def _hf_generate(hf, x, **kw):
    with torch.no_grad():
        return hf.generate(input_ids=torch.tensor(x), attention_mask=torch.tensor(x != 0), do_sample=False,
                           max_new_tokens=L, **kw)


# --------------------------------------------------------------------------- pure pieces


def test_filter_logits_top_k_and_top_p():
    logits = jnp.log(jnp.array([[0.5, 0.05, 0.3, 0.15], [0.25, 0.25, 0.25, 0.25]]))
    kept = lambda out: np.isfinite(np.asarray(out))  # noqa: E731
    np.testing.assert_array_equal(kept(decoding.filter_logits(logits, top_k=2)),
                                  [[1, 0, 1, 0], [1, 1, 1, 1]])  # ties at the k-th value stay
    np.testing.assert_array_equal(kept(decoding.filter_logits(logits, top_p=0.7)), [[1, 0, 1, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(kept(decoding.filter_logits(logits, top_p=0.79)), [[1, 0, 1, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(kept(decoding.filter_logits(logits, top_p=0.81)), [[1, 0, 1, 1], [1, 1, 1, 1]])
    np.testing.assert_array_equal(kept(decoding.filter_logits(logits, top_p=0.01)), [[1, 0, 0, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(kept(decoding.filter_logits(logits, top_k=1, top_p=0.9)),
                                  [[1, 0, 0, 0], [1, 1, 1, 1]])
    for k in (4, 100_000):  # the whole vocabulary or more keeps everything, as Hugging Face's TopKLogitsWarper
        assert kept(decoding.filter_logits(logits, top_k=k)).all()
    np.testing.assert_allclose(decoding.length_penalty(jnp.array([1, 7]), 0.6), [1.0, 2.0 ** 0.6], rtol=1e-6)


# --------------------------------------------------------------------------- encoder-decoder


def test_cached_greedy_equals_argmax_of_full_forward_passes(t5):
    _, model, params, x = t5
    tokens, scores = _predict(t5)
    dec_in = np.zeros((len(x), L), np.int32)  # decoder_start_id = 0, then the tokens chosen so far
    ref, ref_scores, done = np.zeros_like(dec_in), np.zeros(len(x)), np.zeros(len(x), bool)
    for t in range(L):
        logits = np.asarray(_logits(model, params, {"encoder_input_tokens": x, "decoder_input_tokens": dec_in}))[:, t]
        nxt = logits.argmax(-1)
        logp = jax.nn.log_softmax(logits)[np.arange(len(x)), nxt]
        ref[:, t] = np.where(done, 0, nxt)
        ref_scores += np.where(done, 0.0, logp)
        done |= nxt == EOS
        if t + 1 < L:
            dec_in[:, t + 1] = ref[:, t]
    np.testing.assert_array_equal(tokens[:, 0], ref)
    np.testing.assert_allclose(scores[:, 0], ref_scores, atol=1e-4)


def test_greedy_equals_hf_generate(t5):
    hf, _, _, x = t5
    tokens, _ = _predict(t5)
    hf_tokens = _hf_generate(hf, x).numpy()
    assert (hf_tokens[:, 0] == 0).all()  # HF keeps decoder_start_id in front
    np.testing.assert_array_equal(tokens[:, 0], _cut_at_eos(hf_tokens[:, 1:]))
    assert (tokens == EOS).any(), "the batch should exercise an early EOS"


@pytest.mark.parametrize("early_stopping", [False, "never"])
def test_beam_search_equals_hf_generate(t5, early_stopping):
    """All four beams and their scores equal HF's with length_penalty=0 (and no early stop on a full beam)."""
    hf, _, _, x = t5
    tokens, scores = _predict(t5, method="beam", num_beams=4, num_decodes=4, alpha=0.0)
    out = _hf_generate(hf, x, num_beams=4, num_return_sequences=4, length_penalty=0.0,
                       early_stopping=early_stopping, return_dict_in_generate=True, output_scores=True)
    hf_tokens = _cut_at_eos(out.sequences.numpy()[:, 1:].reshape(len(x), 4, -1))
    np.testing.assert_array_equal(tokens, hf_tokens)
    np.testing.assert_allclose(scores, out.sequences_scores.numpy().reshape(len(x), 4), atol=1e-4)
    assert (tokens == EOS).any() and not (tokens == EOS).all(axis=-1).any()
    greedy, _ = _predict(t5)
    assert (tokens[:, 0] != greedy[:, 0]).any(), "beam search should beat greedy somewhere in the batch"


def test_beam_scores_are_length_penalized_log_likelihoods(t5):
    x = t5[3]
    for alpha in (0.0, 0.6):
        tokens, scores = _predict(t5, method="beam", num_beams=4, num_decodes=4, alpha=alpha)  # one compilation
        flat = tokens.reshape(-1, L)
        loglik, _ = _score_encdec(t5, np.repeat(x, 4, axis=0), flat)
        lengths = _through_eos(flat).sum(-1)
        np.testing.assert_allclose(scores.reshape(-1), loglik / ((5 + lengths) / 6) ** alpha, atol=1e-4)
        assert (np.diff(scores, axis=1) <= 0).all()  # best first


def test_beam_search_with_one_beam_equals_greedy(t5):
    greedy, greedy_scores = _predict(t5)
    tokens, scores = _predict(t5, method="beam", num_beams=1, alpha=0.0)
    np.testing.assert_array_equal(tokens, greedy)
    np.testing.assert_allclose(scores, greedy_scores, atol=1e-5)


def test_sampling_limits_and_determinism(t5):
    x = t5[3]
    greedy, _ = _predict(t5)
    sample = functools.partial(_predict, t5, method="sample", num_decodes=2)  # temperature is traced: one compile
    for temperature in (0.0, 1e-4):
        tokens, _ = sample(temperature=temperature, rng=jax.random.key(0))
        np.testing.assert_array_equal(tokens, np.repeat(greedy, 2, axis=1))
    a, a_scores = sample(temperature=1.0, rng=jax.random.key(7))
    compiled = predict_lib._predict._cache_size()
    b, _ = sample(temperature=1.0, rng=jax.random.key(7))
    assert predict_lib._predict._cache_size() == compiled  # temperature and rng are traced, not static
    c, _ = sample(temperature=1.0, rng=jax.random.key(8))
    np.testing.assert_array_equal(a, b)
    assert (a != c).any() and (a != np.repeat(greedy, 2, axis=1)).any()
    loglik, _ = _score_encdec(t5, np.repeat(x, 2, axis=0), a.reshape(-1, L))
    np.testing.assert_allclose(a_scores.reshape(-1), loglik, atol=1e-4)
    assert (np.diff(a_scores, axis=1) <= 0).all()
    top1, _ = _predict(t5, method="sample", num_decodes=2, top_k=1, temperature=1.0, rng=jax.random.key(1))
    np.testing.assert_array_equal(top1, np.repeat(greedy, 2, axis=1))


def test_eos_ends_a_sequence_and_only_padding_follows(t5):
    outputs = [_predict(t5)[0], _predict(t5, method="beam", num_beams=4, num_decodes=4, alpha=0.6)[0],
               _predict(t5, method="sample", num_decodes=2, rng=jax.random.key(7))[0]]
    for tokens in outputs:
        assert (tokens == EOS).any()
        after_eos = np.cumsum(tokens == EOS, axis=-1) - (tokens == EOS) > 0
        assert (tokens[after_eos] == 0).all()


def test_greedy_scores_equal_score_batch(t5):
    x = t5[3]
    tokens, scores = _predict(t5)
    loglik, per_token = _score_encdec(t5, x, tokens[:, 0])
    np.testing.assert_allclose(scores[:, 0], loglik, atol=1e-4)
    assert (per_token[_through_eos(tokens[:, 0]) == 0] == 0).all()
    assert (per_token[_through_eos(tokens[:, 0]) == 1] < 0).all()


def test_predict_batch_rejects_bad_options(t5):
    _, model, params, x = t5
    batch = {"encoder_input_tokens": x}
    with pytest.raises(ValueError, match="method"):
        decoding.predict_batch(model, params, batch, max_decode_length=L, method="nucleus")
    with pytest.raises(ValueError, match="rng"):
        decoding.predict_batch(model, params, batch, max_decode_length=L, method="sample")
    with pytest.raises(ValueError, match="num_decodes"):
        decoding.predict_batch(model, params, batch, max_decode_length=L, method="beam", num_beams=2, num_decodes=3)


# --------------------------------------------------------------------------- decoder-only

LM = T5Config(vocab_size=50, d_model=32, d_ff=48, num_heads=4, d_kv=8, num_decoder_layers=2,
              mlp_activations=("gelu", "linear"), logits_via_embedding=False, dropout_rate=0.0,
              relative_attention_num_buckets=8, relative_attention_max_distance=16)
PROMPTS = np.array([[5, 6, 7, 8, 9], [11, 12, 0, 0, 0], [13, 14, 15, 0, 0]], np.int32)  # right-padded
LM_L = 6


@pytest.fixture(scope="module")
def lm():
    model = DecoderOnlyModel(config=LM)
    return model, model.init(jax.random.key(3), {"decoder_input_tokens": np.ones((2, 8), np.int32)})


def _lm_rows(prompts, generated):
    """Prefix-LM features for ``[start] + prompt + generated``: inputs, next-token targets, masks."""
    n = (prompts != 0).sum(1) + 1  # prompt length in decoder-input space, start token included
    width = prompts.shape[1] + 1 + generated.shape[1]
    seq = np.zeros((len(prompts), width), np.int32)
    for r, row in enumerate(prompts):
        seq[r, 1: n[r]] = row[: n[r] - 1]
        seq[r, n[r]: n[r] + generated.shape[1]] = generated[r]
    pos = np.arange(width)[None, :]
    weights = (pos >= n[:, None] - 1) & (pos < n[:, None] - 1 + _through_eos(generated).sum(1, keepdims=True))
    return {"decoder_input_tokens": seq, "decoder_target_tokens": np.concatenate([seq[:, 1:], seq[:, :1] * 0], 1),
            "decoder_causal_attention": (pos < n[:, None]).astype(np.int32),
            "decoder_loss_weights": weights.astype(np.float32)}


def _lm_greedy_reference(model, params):
    """Greedy continuation of PROMPTS by full forward passes over [start] + prompt + tokens so far."""
    gen, scores, done = np.zeros((3, LM_L), np.int32), np.zeros(3), np.zeros(3, bool)
    for t in range(LM_L):
        rows = _lm_rows(PROMPTS, gen)
        if not model.prefix_lm:
            del rows["decoder_causal_attention"]
        logits = np.asarray(_logits(model, params, rows))
        at = (PROMPTS != 0).sum(1) + t  # the position whose output predicts generated token t
        step = logits[np.arange(3), at]
        nxt = step.argmax(-1)
        scores += np.where(done, 0.0, jax.nn.log_softmax(step)[np.arange(3), nxt])
        gen[:, t] = np.where(done, 0, nxt)
        done |= nxt == LM.eos_id
    return gen, scores


def test_decoder_only_prompt_continuation_equals_full_prefix_lm_forward(lm):
    """Prompt prefilled in one call, ragged rows continued after their own prompt == argmax of full passes."""
    model, params = lm
    tokens, scores = decoding.predict_batch(model, params, {"prompt_tokens": PROMPTS}, max_decode_length=LM_L)
    tokens, scores = np.asarray(tokens)[:, 0], np.asarray(scores)[:, 0]
    ref, ref_scores = _lm_greedy_reference(model, params)
    np.testing.assert_array_equal(tokens, ref)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-4)

    # The feature converter's layout (prompt marked by decoder_causal_attention, targets after it) decodes the same.
    rows = _lm_rows(PROMPTS, np.full((3, 0), 0, np.int32))
    features = {"decoder_input_tokens": np.where(rows["decoder_causal_attention"] > 0, rows["decoder_input_tokens"],
                                                 40),  # stand-in targets past the prompt must be ignored
                "decoder_causal_attention": rows["decoder_causal_attention"]}
    same, _ = decoding.predict_batch(model, params, features, max_decode_length=LM_L)  # same shapes: no compile
    np.testing.assert_array_equal(np.asarray(same)[:, 0], tokens)


def test_plain_causal_lm_prompt_is_prefilled_causally(lm):
    model, params = lm
    causal = model.replace(prefix_lm=False)
    tokens, scores = decoding.predict_batch(causal, params, {"prompt_tokens": PROMPTS}, max_decode_length=LM_L)
    ref, ref_scores = _lm_greedy_reference(causal, params)
    np.testing.assert_array_equal(np.asarray(tokens)[:, 0], ref)
    np.testing.assert_allclose(np.asarray(scores)[:, 0], ref_scores, atol=1e-4)
    prefix, _ = decoding.predict_batch(model, params, {"prompt_tokens": PROMPTS}, max_decode_length=LM_L)
    assert (np.asarray(prefix) != np.asarray(tokens)).any(), "a bidirectional prefix should change the output"


@pytest.mark.slow
def test_decoder_only_beam_search_keeps_cache_per_beam_in_both_layer_layouts(lm):
    """Every returned beam scores as score_batch says (a mixed-up cache would not), scanned layers give the same."""
    model, params = lm
    kw = dict(max_decode_length=LM_L, method="beam", num_beams=3, num_decodes=3, alpha=0.0)
    tokens, scores = decoding.predict_batch(model, params, {"prompt_tokens": PROMPTS}, **kw)
    tokens, scores = np.asarray(tokens), np.asarray(scores)
    rows = _lm_rows(np.repeat(PROMPTS, 3, axis=0), tokens.reshape(9, LM_L))
    loglik, _ = decoding.score_batch(model, params, rows)
    np.testing.assert_allclose(scores.reshape(-1), np.asarray(loglik), atol=1e-4)
    assert len({tuple(t) for t in tokens.reshape(9, LM_L)}) == 9

    scanned = model.replace(config=LM.replace(scan_layers=True))
    tokens_s, scores_s = decoding.predict_batch(scanned, scanned.from_loop_layout(params),
                                                {"prompt_tokens": PROMPTS}, **kw)
    np.testing.assert_array_equal(np.asarray(tokens_s), tokens)
    np.testing.assert_allclose(np.asarray(scores_s), scores, atol=1e-5)


@pytest.mark.parametrize("option, message", [
    (dict(max_decode_length=0), "max_decode_length must be >= 1, got 0"),
    (dict(method="sample", num_decodes=0), "num_decodes must be >= 1, got 0"),
    (dict(method="sample", temperature=-2.0), "temperature must be >= 0 (0: argmax), got -2.0"),
    (dict(method="sample", top_p=1.7), "top_p must be in (0, 1], got 1.7"),
    (dict(method="sample", top_k=-3), "top_k must be >= 0 (0: all), got -3"),
    (dict(method="beam", alpha=-1.0), "alpha must be >= 0, got -1.0"),
    (dict(method="beam", num_beams=61), "num_beams=61 needs a vocabulary of at least 2 x num_beams tokens; the "
                                        "model has 120"),
])
def test_options_that_cannot_work_are_named_before_tracing(t5, option, message):
    from t5x_lite.errors import ConfigError

    _, model, params, x = t5
    with pytest.raises(ConfigError, match=re.escape(f"decoding: {message}")):
        decoding.predict_batch(model, params, {"encoder_input_tokens": x}, rng=jax.random.key(0),
                               **{"max_decode_length": L, **option})
