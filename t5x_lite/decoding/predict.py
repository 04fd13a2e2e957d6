"""Model-level decoding and scoring: ``predict_batch`` and ``score_batch``.

``predict_batch`` compiles the whole decode (encoder, cache set-up, prompt
prefill, the loop) as one ``jax.jit`` per set of static options; ``jax.jit``
keys its cache on them (the model wrapper is a frozen, hashable dataclass), so
repeated calls with the same shapes and options reuse one executable, while
``temperature`` and ``alpha`` are traced and never recompile.

Encoder-decoder: the encoder runs once per input; the decoder then steps from
``decoder_start_id`` with a KV cache of length ``max_decode_length``.

Decoder-only: the prompt is prefilled into the cache in one call (bidirectional
over the prompt for a prefix LM, causal for a plain LM), then decoding continues
each row right after its own prompt. The prompt comes from either

* ``batch['prompt_tokens']`` [B, P]: raw input ids, right-padded with 0 (no BOS).
  ``decoder_start_id`` is prepended, as the decoder-only feature converter's
  shift does in training, so row ``b``'s prompt is
  ``[start] + prompt_tokens[b, :n_b]`` with ``n_b`` the position after its last
  non-pad token; or
* the converter's own features: the prefix of ``batch['decoder_input_tokens']``
  that ``batch['decoder_causal_attention']`` marks (t5x convention; this already
  starts with the start id), or just the start id when that mask is absent.

Ragged prompts share one cache index, so rows start at different steps: the
cache index is set to the shortest prompt's last position, a row feeds its last
prompt token when the index reaches it (recomputing exactly what the prefill
wrote there, since that token already saw the whole prompt), and until then its
cache rows are restored after every step. Slots past a row's prompt that the
prefill filled with padding are overwritten before anything can attend to them.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from t5x_lite.decoding import cache as cache_lib
from t5x_lite.models import layers
from t5x_lite.decoding.beam import beam_search
from t5x_lite.decoding.sampling import greedy_decode, temperature_sample

Array = jax.Array
Batch = Mapping[str, Array]

METHODS = ("greedy", "sample", "beam")
_COUNTERS = ("cache_index", "decode_position")  # the scalar positions the T5 decoder keeps in its cache


def _zeros_like_abstract(tree):
    return jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), tree)


def _set_cache_position(cache, position: Array):
    """Point every cache counter (attention ``cache_index``, decoder ``decode_position``) at ``position``."""

    def set_leaf(path, leaf):
        name = getattr(path[-1], "key", None)
        return jnp.full_like(leaf, position) if name in _COUNTERS else leaf

    return jax.tree_util.tree_map_with_path(set_leaf, cache)


def _run_search(tokens_to_logits, init_tokens, cache, cache_axes, delays, rng, alpha, temperature, *, eos_id,
                pad_id, max_decode_length, method, num_beams, num_decodes, top_k, top_p):
    common = dict(max_decode_length=max_decode_length, eos_id=eos_id, pad_id=pad_id, delays=delays,
                  cache_axes=cache_axes)
    if method == "greedy":
        seqs, scores = greedy_decode(tokens_to_logits, init_tokens, cache, **common)
        return seqs[:, None], scores[:, None]
    if method == "sample":
        return temperature_sample(tokens_to_logits, init_tokens, cache, rng, temperature=temperature, top_k=top_k,
                                  top_p=top_p, num_decodes=num_decodes, **common)
    return beam_search(tokens_to_logits, init_tokens, cache, num_beams=num_beams, alpha=alpha,
                       num_decodes=num_decodes, **common)


def _expansion(method: str, num_beams: int, num_decodes: int) -> int:
    return {"greedy": 1, "sample": num_decodes, "beam": num_beams}[method]


def _predict_encoder_decoder(model, params, batch, rng, alpha, temperature, *, max_decode_length, **opts):
    module, cfg = model.module, model.config
    enc_tokens = batch["encoder_input_tokens"]
    b = enc_tokens.shape[0]
    encoded = module.apply({"params": params}, enc_tokens, method=module.encode)
    n = _expansion(opts["method"], opts["num_beams"], opts["num_decodes"])
    enc_x, encoded_x = jnp.repeat(enc_tokens, n, axis=0), jnp.repeat(encoded, n, axis=0)

    def abstract_cache(rows):
        def make(p, e, et, dt):
            return module.apply({"params": p}, e, et, dt, method=module.decode, decode=True,
                                mutable=["cache"])[1]["cache"]

        sds = jax.ShapeDtypeStruct
        return jax.eval_shape(make, params, sds((rows,) + encoded.shape[1:], encoded.dtype),
                              sds((rows, enc_tokens.shape[1]), enc_tokens.dtype),
                              sds((rows, max_decode_length), jnp.int32))

    # The shape-defining call leaves an all-zero cache (zero keys/values, index 0): build it without running it.
    cache = _zeros_like_abstract(abstract_cache(b))
    cache_axes = cache_lib.infer_batch_axes(abstract_cache)

    def tokens_to_logits(tokens, cache):
        logits, mutated = module.apply({"params": params, "cache": cache}, encoded_x, enc_x, tokens,
                                       method=module.decode, decode=True, max_decode_length=max_decode_length,
                                       mutable=["cache"])
        return logits[:, -1], mutated["cache"]

    init = jnp.full((b,), cfg.decoder_start_id, jnp.int32)
    return _run_search(tokens_to_logits, init, cache, cache_axes, None, rng, alpha, temperature, eos_id=cfg.eos_id,
                       pad_id=cfg.pad_id, max_decode_length=max_decode_length, **opts)


def decoder_only_prompt(model, batch: Batch) -> Tuple[np.ndarray, np.ndarray]:
    """(prompt [B, P] right-padded, lengths [B] >= 1) in decoder-input space (starting with the start id).

    Host-side NumPy, so both prompt conventions reach the compiled decode as the same two arrays.
    """
    cfg = model.config
    if "prompt_tokens" in batch:
        raw = np.asarray(batch["prompt_tokens"]).astype(np.int32)
        b, p = raw.shape
        n = np.max(np.where(raw != cfg.pad_id, np.arange(1, p + 1)[None, :], 0), axis=1)
        prompt = np.concatenate([np.full((b, 1), cfg.decoder_start_id, np.int32), raw], axis=1)
        lengths = n + 1
    else:
        prompt = np.asarray(batch["decoder_input_tokens"]).astype(np.int32)
        causal = batch.get("decoder_causal_attention")
        if causal is None:
            prompt, lengths = prompt[:, :1], np.ones((prompt.shape[0],), np.int32)
        else:
            lengths = np.maximum(np.sum(np.asarray(causal) > 0, axis=1), 1)
    inside = np.arange(prompt.shape[1])[None, :] < lengths[:, None]
    return np.where(inside, prompt, cfg.pad_id).astype(np.int32), lengths.astype(np.int32)


def _predict_decoder_only(model, params, batch, rng, alpha, temperature, *, max_decode_length, **opts):
    module, cfg = model.module, model.config
    prompt, lengths = batch["prompt"], batch["lengths"]
    b, p = prompt.shape
    # Prompt slots, then generated ones; the last generated token is never fed, so it needs no slot.
    total = p + max_decode_length - 1

    def abstract_cache(rows):
        def make(prm, tokens):
            return module.apply({"params": prm}, tokens, decode=True, mutable=["cache"])[1]["cache"]

        return jax.eval_shape(make, params, jax.ShapeDtypeStruct((rows, total), jnp.int32))

    cache = _zeros_like_abstract(abstract_cache(b))
    cache_axes = cache_lib.infer_batch_axes(abstract_cache)
    causal = (jnp.arange(p)[None, :] < lengths[:, None]).astype(jnp.int32) if model.prefix_lm else None
    _, mutated = module.apply({"params": params, "cache": cache}, prompt, decoder_causal_attention=causal,
                              decode=True, max_decode_length=total, mutable=["cache"])
    first = jnp.min(lengths)
    cache = _set_cache_position(mutated["cache"], first - 1)
    init = jnp.take_along_axis(prompt, (lengths - 1)[:, None], axis=1)[:, 0]

    def tokens_to_logits(tokens, cache):
        logits, mutated = module.apply({"params": params, "cache": cache}, tokens, decode=True,
                                       max_decode_length=total, mutable=["cache"])
        return logits[:, -1], mutated["cache"]

    return _run_search(tokens_to_logits, init, cache, cache_axes, lengths - first, rng, alpha, temperature,
                       eos_id=cfg.eos_id, pad_id=cfg.pad_id, max_decode_length=max_decode_length, **opts)


# axis_rules: the logical-axis rules in context (layers.active_axis_rules), which tracing reads and jit's key lacks
_STATIC = ("model", "max_decode_length", "method", "num_beams", "num_decodes", "top_k", "top_p", "axis_rules")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _predict(params, batch, rng, alpha, temperature, *, model, axis_rules, **opts):
    if model.kind == "encoder_decoder":
        return _predict_encoder_decoder(model, params, batch, rng, alpha, temperature, **opts)
    return _predict_decoder_only(model, params, batch, rng, alpha, temperature, **opts)


_DECODABLE = ("encoder_decoder", "decoder_only")


def decode_option_problems(*, method: str, max_decode_length: int, num_beams: int, alpha: float, num_decodes: int,
                           temperature: float, top_k: int, top_p: float, vocab_size: Optional[int] = None) -> list[str]:
    """What is wrong with these options, each message opening with the option's name (empty: nothing).

    One list for ``check_decode_options`` and ``DecodeOptions``, which word the
    owner differently; the vocabulary check needs the model (``vocab_size``).
    """
    problems = [
        (max_decode_length >= 1, f"max_decode_length must be >= 1, got {max_decode_length}"),
        (num_decodes >= 1, f"num_decodes must be >= 1, got {num_decodes}"),
        (method != "beam" or num_beams >= 1, f"num_beams must be >= 1 for beam search, got {num_beams}"),
        (vocab_size is None or method != "beam" or 2 * num_beams <= vocab_size,
         f"num_beams={num_beams} needs a vocabulary of at least 2 x num_beams tokens; the model has {vocab_size}"),
        (alpha >= 0, f"alpha must be >= 0, got {alpha}"),
        (temperature >= 0, f"temperature must be >= 0 (0: argmax), got {temperature}"),
        (top_k >= 0, f"top_k must be >= 0 (0: all), got {top_k}"),
        (0 < top_p <= 1, f"top_p must be in (0, 1], got {top_p}"),
    ]
    return [message for ok, message in problems if not ok]


def check_decode_options(vocab_size: int, *, method: str, max_decode_length: int, num_beams: int, alpha: float,
                         num_decodes: int, temperature: float, top_k: int, top_p: float) -> None:
    """A ``ConfigError`` naming the first option that cannot work (before tracing, not as an XLA error)."""
    from t5x_lite.errors import ConfigError

    problems = decode_option_problems(method=method, max_decode_length=max_decode_length, num_beams=num_beams,
                                      alpha=alpha, num_decodes=num_decodes, temperature=temperature, top_k=top_k,
                                      top_p=top_p, vocab_size=vocab_size)
    if problems:
        raise ConfigError(f"decoding: {problems[0]}")


def predict_batch(
    model,
    params: Any,
    batch: Batch,
    *,
    max_decode_length: int,
    method: str = "greedy",
    num_beams: int = 4,
    alpha: float = 0.6,
    num_decodes: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    rng: Optional[Array] = None,
    place: Optional[Callable[[Mapping[str, Any]], Mapping[str, Any]]] = None,
) -> Tuple[Array, Array]:
    """Decode a batch: ``(tokens [B, num_decodes, max_decode_length], scores [B, num_decodes])``, best first.

    ``method``: ``'greedy'`` (num_decodes must be 1), ``'sample'`` (needs
    ``rng``; ``temperature`` 0 is argmax), or ``'beam'`` (``num_beams``, length
    penalty ``alpha``, the ``num_decodes`` best beams). Tokens are the generated
    ones only (no start token, no prompt), EOS kept, padded with ``pad_id``
    after it. Scores are log-likelihoods, length-penalized for beam search.
    ``place`` lays out the compiled decode's batch features (evaluation during
    training splits their rows over the data devices) before the call.
    Works for ``EncoderDecoderModel`` and ``DecoderOnlyModel`` (see the module
    docstring for the decoder-only prompt convention).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if model.kind not in _DECODABLE:
        raise ValueError(f"predict_batch decodes encoder-decoder and decoder-only models, not {model.kind!r}")
    if method == "greedy" and num_decodes != 1:
        raise ValueError("greedy decoding gives one decode per input; use method='sample' or 'beam'")
    if method == "sample" and rng is None:
        raise ValueError("method='sample' needs rng")
    if method == "beam" and not 1 <= num_decodes <= num_beams:
        raise ValueError(f"num_decodes must be in [1, num_beams={num_beams}], got {num_decodes}")
    check_decode_options(model.config.vocab_size, method=method, max_decode_length=max_decode_length,
                         num_beams=num_beams, alpha=alpha, num_decodes=num_decodes, temperature=temperature,
                         top_k=top_k, top_p=top_p)
    to_array = jnp.asarray if place is None else np.asarray  # placed from host memory, not via a device
    if model.kind == "encoder_decoder":
        features = {"encoder_input_tokens": to_array(batch["encoder_input_tokens"], jnp.int32)}
    else:
        prompt, lengths = decoder_only_prompt(model, batch)
        features = {"prompt": to_array(prompt), "lengths": to_array(lengths)}
    if place is not None:
        features = place(features)
    return _predict(
        params, features, rng if method == "sample" else None, jnp.float32(alpha), jnp.float32(temperature),
        model=model, axis_rules=layers.active_axis_rules(), max_decode_length=int(max_decode_length), method=method,
        num_beams=int(num_beams) if method == "beam" else 1, num_decodes=int(num_decodes),
        top_k=int(top_k) if method == "sample" else 0, top_p=float(top_p) if method == "sample" else 1.0,
    )


_SCORE_FEATURES = (
    "encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights",
    "encoder_segment_ids", "decoder_segment_ids", "encoder_positions", "decoder_positions",
    "decoder_causal_attention",
)


@functools.partial(jax.jit, static_argnames=("model", "axis_rules"))
def _score(params, batch, *, model, axis_rules):
    logits = model.logits(params, batch)
    targets = batch["decoder_target_tokens"]
    weights = batch.get("decoder_loss_weights")
    keep = (targets != model.config.pad_id) if weights is None else (weights > 0)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits.astype(jnp.float32)), targets[..., None], axis=-1)[..., 0]
    logp = jnp.where(keep, logp, 0.0)
    return jnp.sum(logp, axis=-1), logp


def score_batch(model, params: Any, batch: Batch) -> Tuple[Array, Array]:
    """Log-likelihood of ``decoder_target_tokens``: ``(per example [B], per token [B, L])``, 0 where excluded.

    Positions count where ``decoder_loss_weights`` > 0, or (without weights)
    where the target is not padding; for a decoder-only prefix LM the converter's
    weights exclude the prompt. Rows are single examples (not packed). An
    encoder-decoder batch without ``decoder_input_tokens`` gets them by shifting
    the targets right from ``decoder_start_id``. For rank classification, score
    each candidate as a row and take the argmax per example.
    """
    batch = {k: jnp.asarray(v) for k, v in batch.items() if k in _SCORE_FEATURES}
    if model.kind == "encoder_decoder" and "decoder_input_tokens" not in batch:
        targets = batch["decoder_target_tokens"]
        start = jnp.full(targets.shape[:-1] + (1,), model.config.decoder_start_id, targets.dtype)
        batch["decoder_input_tokens"] = jnp.concatenate([start, targets[..., :-1]], axis=-1)
    return _score(params, batch, model=model, axis_rules=layers.active_axis_rules())
