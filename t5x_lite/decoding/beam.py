"""Beam search with a per-beam KV cache and the T5 length penalty, in one ``lax.while_loop``.

The closure is the one the samplers take: ``tokens_to_logits(tokens [B*K, 1],
cache) -> (logits [B*K, vocab], new_cache)``, over the batch expanded to
``B * num_beams`` rows (batch-major: row ``b * K + k`` is beam ``k`` of input
``b``). The cache comes in per input and is repeated here; whenever beams
reorder, its rows are gathered by the beam each survivor came from.

One step, per input (this is the rule of Hugging Face ``generate`` since its
2025 beam-search rewrite, and the classic one in outline):

1. extend each live beam by every token; keep the ``2K`` best candidates by
   summed log-probability;
2. among the best ``K`` of those, the ones that end the sequence (EOS, or the
   last step at ``max_decode_length``) join the finished set with score
   ``logprob / length_penalty(len)``; the finished set keeps its ``K`` best;
3. the ``K`` best candidates that did not end become the live beams.

An input is done when its finished set is full and no live beam can still beat
the worst finished score: a live log-probability only falls, so its best
possible final score is ``logprob / max penalty over the remaining lengths``
(exact, like t5x and HF ``early_stopping="never"``; for ``alpha = 0`` it is also
HF's default ``early_stopping=False``). Once done, an input's finished set is
frozen. The length penalty is T5's ``((5 + len) / 6) ** alpha`` with ``len`` the
number of generated tokens including EOS.

Differences from t5x's ``beam_search``: t5x also finishes EOS candidates ranked
``K .. 2K-1``, and at the length limit keeps an earlier finished sequence over
better-scoring unfinished ones; here (as in HF) unfinished beams at the limit
compete on equal terms, and only the top ``K`` candidates may finish.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp

from t5x_lite.decoding import cache as cache_lib
from t5x_lite.decoding.sampling import NEG_INF, TokensToLogits

Array = jax.Array


def length_penalty(length: Array, alpha: float | Array) -> Array:
    """T5 / GNMT brevity penalty ``((5 + length) / 6) ** alpha`` (1 at alpha = 0)."""
    return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def beam_search(
    tokens_to_logits: TokensToLogits,
    init_tokens: Array,
    cache: Any,
    *,
    num_beams: int,
    max_decode_length: int,
    eos_id: int,
    pad_id: int = 0,
    alpha: float | Array = 0.6,
    num_decodes: int = 1,
    delays: Optional[Array] = None,
    cache_axes: Any = None,
) -> Tuple[Array, Array]:
    """Returns ``(tokens [B, num_decodes, L], scores [B, num_decodes])``, best first.

    ``init_tokens`` [B] is the first token fed to every beam; ``cache`` is per
    input (batch B) and ``delays`` [B] (optional) holds each input's start step.
    ``alpha`` may be traced. Scores are length-penalized log-likelihoods.
    """
    b, k, length = init_tokens.shape[0], num_beams, max_decode_length
    if not 1 <= num_decodes <= num_beams:
        raise ValueError(f"num_decodes must be in [1, num_beams={num_beams}], got {num_decodes}")
    if length < 1:
        raise ValueError(f"max_decode_length must be >= 1, got {length}")
    alpha = jnp.asarray(alpha, jnp.float32)
    wait = jnp.zeros((b,), jnp.int32) if delays is None else delays.astype(jnp.int32)
    started_rows = lambda started: jnp.repeat(started, k)  # noqa: E731  [B] -> [B*K]

    state = dict(
        i=jnp.array(0, jnp.int32),
        tokens=jnp.repeat(init_tokens.astype(jnp.int32)[:, None], k, axis=1),
        live_seqs=jnp.full((b, k, length), pad_id, jnp.int32),
        # Only beam 0 is live at first, so the first step does not pick the same token K times.
        live_logp=jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (b, 1)),
        fin_seqs=jnp.full((b, k, length), pad_id, jnp.int32),
        fin_scores=jnp.full((b, k), NEG_INF, jnp.float32),
        fin_flags=jnp.zeros((b, k), bool),
        done=jnp.zeros((b,), bool),
        cache=cache_lib.repeat_rows(cache, k, cache_axes),
    )

    def cond(s):
        return ~jnp.all(s["done"])

    def body(s):
        t = s["i"] - wait  # [B] tokens generated so far by this input's beams
        started = t >= 0
        active = started & ~s["done"]
        logits, new_cache = tokens_to_logits(s["tokens"].reshape(b * k, 1), s["cache"])
        vocab = logits.shape[-1]
        if vocab < 2 * k:
            raise ValueError(f"beam search needs vocab_size >= 2 * num_beams, got {vocab} < {2 * k}")
        if delays is not None:
            new_cache = cache_lib.select_rows(started_rows(started), new_cache, s["cache"], cache_axes)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(b, k, vocab)

        # 1. the 2K best extensions of the live beams
        cand = (s["live_logp"][:, :, None] + logp).reshape(b, k * vocab)
        cand_logp, cand_idx = jax.lax.top_k(cand, 2 * k)
        cand_beam, cand_tok = cand_idx // vocab, cand_idx % vocab
        cand_seqs = jnp.take_along_axis(s["live_seqs"], cand_beam[:, :, None], axis=1)
        at_t = jnp.arange(length)[None, None, :] == t[:, None, None]
        cand_seqs = jnp.where(at_t, cand_tok[:, :, None], cand_seqs)
        last_step = (t >= length - 1)[:, None]
        ends = (cand_tok == eos_id) | last_step

        # 2. the ending ones among the top K join the finished set
        joins = ends & (jnp.arange(2 * k) < k)[None, :]
        gen_len = (t + 1)[:, None]
        joining_scores = jnp.where(joins, cand_logp / length_penalty(gen_len, alpha), NEG_INF)
        merged_scores = jnp.concatenate([s["fin_scores"], joining_scores], axis=1)
        fin_scores, keep = jax.lax.top_k(merged_scores, k)
        fin_flags = jnp.take_along_axis(jnp.concatenate([s["fin_flags"], joins], axis=1), keep, axis=1)
        fin_seqs = jnp.take_along_axis(jnp.concatenate([s["fin_seqs"], cand_seqs], axis=1), keep[:, :, None], axis=1)

        # 3. the K best that did not end stay live
        live_logp, live_idx = jax.lax.top_k(jnp.where(ends, NEG_INF, cand_logp), k)
        live_seqs = jnp.take_along_axis(cand_seqs, live_idx[:, :, None], axis=1)
        origin = jnp.take_along_axis(cand_beam, live_idx, axis=1)
        tokens = jnp.take_along_axis(cand_tok, live_idx, axis=1)

        # Done: the length limit, or a full finished set that no live beam can beat.
        best_penalty = jnp.maximum(length_penalty(t + 2, alpha), length_penalty(length, alpha))
        can_improve = live_logp[:, 0] / best_penalty > jnp.min(fin_scores, axis=1)
        done = last_step[:, 0] | (jnp.all(fin_flags, axis=1) & ~can_improve)

        row = lambda new, old: jnp.where(active.reshape((b,) + (1,) * (new.ndim - 1)), new, old)  # noqa: E731
        source = jnp.where(active[:, None], origin, jnp.arange(k)[None, :])
        flat_source = (jnp.arange(b)[:, None] * k + source).reshape(-1)
        return dict(
            i=s["i"] + 1,
            tokens=row(tokens, s["tokens"]),
            live_seqs=row(live_seqs, s["live_seqs"]),
            live_logp=row(live_logp, s["live_logp"]),
            fin_seqs=row(fin_seqs, s["fin_seqs"]),
            fin_scores=row(fin_scores, s["fin_scores"]),
            fin_flags=row(fin_flags, s["fin_flags"]),
            done=row(done, s["done"]),
            cache=cache_lib.gather_rows(new_cache, flat_source, cache_axes),
        )

    out = jax.lax.while_loop(cond, body, state)
    return out["fin_seqs"][:, :num_decodes], out["fin_scores"][:, :num_decodes]
