"""Greedy decoding and temperature / top-k / top-p sampling with a KV cache, in one ``lax.while_loop``.

Both take a t5x-style closure ``tokens_to_logits(tokens [N, 1], cache) ->
(logits [N, vocab], new_cache)`` that runs one cached decoder step, and return
only the generated tokens: a row stops at EOS (which is kept) or after
``max_decode_length`` tokens, and every position after its end holds ``pad_id``.
A sequence's score is its log-likelihood under the model: the sum of
``log_softmax(logits)`` at the chosen tokens, EOS included, computed from the
raw logits (before temperature and filtering), so it equals what
``score_batch`` gives for the same tokens.

Rows may start late (``delays``): a decoder-only batch whose prompts have
different lengths shares one cache index, so a row with a longer prompt waits;
while it waits its cache rows are kept as they were (see ``decoding.predict``).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp

from t5x_lite.decoding import cache as cache_lib

Array = jax.Array
TokensToLogits = Callable[[Array, Any], Tuple[Array, Any]]

NEG_INF = -1.0e9


def filter_logits(logits: Array, *, top_k: int = 0, top_p: float = 1.0) -> Array:
    """Keep the ``top_k`` largest logits (0: all) and the nucleus of mass ``top_p`` (1.0: all); others -> -inf.

    The nucleus is the smallest set of most likely tokens whose probability
    reaches ``top_p``; the most likely token always stays. Tokens tied with the
    last one kept stay too (for top-k as well), so the result never depends on
    how a sort orders equal logits (Hugging Face's warpers keep one of them).
    ``top_k`` past the vocabulary keeps everything, as in Hugging Face.
    """
    if 0 < top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        sorted_logits = jnp.flip(jnp.sort(logits, axis=-1), axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        keep = mass_before < top_p
        keep = keep.at[..., 0].set(True)
        threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return logits


def _decode_loop(
    tokens_to_logits: TokensToLogits,
    init_tokens: Array,
    cache: Any,
    choose: Callable[[Array, Array], Array],
    *,
    max_decode_length: int,
    eos_id: int,
    pad_id: int,
    delays: Optional[Array],
    cache_axes: Any,
) -> Tuple[Array, Array]:
    n, length = init_tokens.shape[0], max_decode_length
    if length < 1:
        raise ValueError(f"max_decode_length must be >= 1, got {length}")
    wait = jnp.zeros((n,), jnp.int32) if delays is None else delays.astype(jnp.int32)
    state = dict(
        i=jnp.array(0, jnp.int32),
        tokens=init_tokens.astype(jnp.int32),
        seqs=jnp.full((n, length), pad_id, jnp.int32),
        scores=jnp.zeros((n,), jnp.float32),
        finished=jnp.zeros((n,), bool),
        cache=cache,
    )

    def cond(s):
        return ~jnp.all(s["finished"])

    def body(s):
        t = s["i"] - wait  # tokens this row has generated so far (negative: still waiting)
        started = t >= 0
        active = started & ~s["finished"]
        logits, new_cache = tokens_to_logits(s["tokens"][:, None], s["cache"])
        logits = logits.astype(jnp.float32)
        if delays is not None:
            new_cache = cache_lib.select_rows(started, new_cache, s["cache"], cache_axes)
        nxt = choose(logits, s["i"]).astype(jnp.int32)
        logp = jnp.take_along_axis(jax.nn.log_softmax(logits), nxt[:, None], axis=-1)[:, 0]
        write = active[:, None] & (jnp.arange(length)[None, :] == t[:, None])
        return dict(
            i=s["i"] + 1,
            tokens=jnp.where(active, nxt, s["tokens"]),
            seqs=jnp.where(write, nxt[:, None], s["seqs"]),
            scores=s["scores"] + jnp.where(active, logp, 0.0),
            finished=s["finished"] | (active & ((nxt == eos_id) | (t >= length - 1))),
            cache=new_cache,
        )

    out = jax.lax.while_loop(cond, body, state)
    return out["seqs"], out["scores"]


def greedy_decode(
    tokens_to_logits: TokensToLogits,
    init_tokens: Array,
    cache: Any,
    *,
    max_decode_length: int,
    eos_id: int,
    pad_id: int = 0,
    delays: Optional[Array] = None,
    cache_axes: Any = None,
) -> Tuple[Array, Array]:
    """Argmax decoding. ``init_tokens`` [B] is the first token fed (decoder start, or the prompt's last token).

    Returns ``(tokens [B, max_decode_length], log-likelihoods [B])``.
    """
    return _decode_loop(
        tokens_to_logits, init_tokens, cache, lambda logits, i: jnp.argmax(logits, axis=-1),
        max_decode_length=max_decode_length, eos_id=eos_id, pad_id=pad_id, delays=delays, cache_axes=cache_axes,
    )


def temperature_sample(
    tokens_to_logits: TokensToLogits,
    init_tokens: Array,
    cache: Any,
    rng: Array,
    *,
    max_decode_length: int,
    eos_id: int,
    pad_id: int = 0,
    temperature: float | Array = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    num_decodes: int = 1,
    delays: Optional[Array] = None,
    cache_axes: Any = None,
) -> Tuple[Array, Array]:
    """Sample from ``softmax(logits / temperature)`` after top-k / top-p filtering; temperature 0 is argmax.

    ``init_tokens`` [B], ``cache`` and ``delays`` are per input; each row is
    repeated ``num_decodes`` times (the closure sees ``B * num_decodes`` rows,
    batch-major). ``temperature`` may be traced (no recompilation per value);
    ``top_k`` and ``top_p`` are static. Step ``i`` draws with
    ``fold_in(rng, i)``, so a fixed ``rng`` gives fixed samples.

    Returns ``(tokens [B, num_decodes, L], log-likelihoods [B, num_decodes])``,
    each row's samples sorted by log-likelihood, best first.
    """
    b = init_tokens.shape[0]
    temperature = jnp.asarray(temperature, jnp.float32)

    def choose(logits, i):
        scaled = filter_logits(logits / jnp.maximum(temperature, 1e-6), top_k=top_k, top_p=top_p)
        sampled = jax.random.categorical(jax.random.fold_in(rng, i), scaled, axis=-1)
        return jnp.where(temperature > 0.0, sampled, jnp.argmax(logits, axis=-1))

    seqs, scores = _decode_loop(
        tokens_to_logits,
        jnp.repeat(init_tokens, num_decodes, axis=0),
        cache_lib.repeat_rows(cache, num_decodes, cache_axes),
        choose,
        max_decode_length=max_decode_length,
        eos_id=eos_id,
        pad_id=pad_id,
        delays=None if delays is None else jnp.repeat(delays, num_decodes, axis=0),
        cache_axes=cache_axes,
    )
    seqs = seqs.reshape(b, num_decodes, -1)
    scores = scores.reshape(b, num_decodes)
    order = jnp.argsort(-scores, axis=1, stable=True)
    return jnp.take_along_axis(seqs, order[:, :, None], axis=1), jnp.take_along_axis(scores, order, axis=1)
