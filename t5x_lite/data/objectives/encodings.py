"""Turning (tokens, noise mask) into inputs or targets.

T5 paper section 3.3 and the letters of T5's objective gin names
(``t5/models/gin/objectives/README``): ``u`` unique sentinel per span, ``m`` one
mask sentinel per token, ``r`` random token, ``p`` permuted, ``d`` dropped,
``f`` full original text (no function: the objective copies the tokens).

Every encoding has the same signature, that of T5's ``denoise`` callbacks::

    fn(tokens, noise_mask, vocab, rng) -> np.ndarray

so any inputs encoding can be paired with any targets encoding. ``rng`` is only
drawn from by the random encodings.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Protocol

import numpy as np


@dataclasses.dataclass(frozen=True)
class VocabInfo:
    """The token ids an objective needs to know about.

    Attributes:
      vocab_size: size of the tokenizer's vocabulary *including* its extra ids
        (T5: 32100 = 32000 SentencePiece pieces + 100 extra ids; not the model's
        padded embedding size 32128). Sentinels count down from its top:
        ``<extra_id_0> = vocab_size - 1``, ``<extra_id_1> = vocab_size - 2``, ...
      num_extra_ids: how many ids at the top are sentinels (T5: 100).
      num_reserved_ids: ids at the bottom never used as random tokens
        (T5: pad 0, eos 1, unk 2).
      mask_id: the single mask token of the ``m`` encoding and of BERT-style MLM.
        ``None`` means ``<extra_id_0>``, as T5's ``sentinel_id``; a BERT
        vocabulary passes its ``[MASK]`` id (103).
      special_ids: tokens BERT-style MLM never selects and no random replacement
        draws: a WordPiece vocabulary's ``[PAD]``, ``[CLS]``, ``[SEP]`` and
        ``[MASK]``, wherever they sit (Hugging Face's collator selects none of the
        framing tokens; a drawn ``[PAD]`` would read as padding). T5's vocabulary
        has none in its text.
    """

    vocab_size: int
    num_extra_ids: int = 100
    num_reserved_ids: int = 3
    mask_id: Optional[int] = None
    special_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.num_extra_ids < 0 or self.num_reserved_ids < 0:
            raise ValueError(f"negative id counts in {self}")
        low, high = self.random_token_range
        if high - low - len(self._excluded_ordinary_ids) <= 0:
            raise ValueError(f"no ordinary token ids left in {self}")

    @property
    def _excluded_ordinary_ids(self) -> list[int]:
        low, high = self.random_token_range
        return sorted({int(i) for i in self.special_ids if low <= i < high})

    def random_tokens(self, rng: np.random.Generator, shape: tuple, dtype) -> np.ndarray:
        """Token ids drawn uniformly from ``random_token_range`` less the ``special_ids`` in it."""
        low, high = self.random_token_range
        excluded = self._excluded_ordinary_ids
        if not excluded:
            return rng.integers(low, high, size=shape, dtype=dtype)
        draws = rng.integers(low, high - len(excluded), size=shape, dtype=np.int64)
        for skipped in excluded:  # ascending: the k-th draw becomes the k-th id that is not excluded
            draws += draws >= skipped
        return draws.astype(dtype)

    @property
    def mask_token_id(self) -> int:
        return self.vocab_size - 1 if self.mask_id is None else self.mask_id

    @property
    def random_token_range(self) -> tuple[int, int]:
        """``[low, high)`` of ordinary tokens: neither reserved ids nor sentinels.

        T5's ``noise_token_to_random_token`` draws from ``[3, vocab_size)``, which
        includes the sentinels; we leave them out, so a random replacement is
        always a real text token.
        """
        return self.num_reserved_ids, self.vocab_size - self.num_extra_ids

    def sentinel_ids(self, count: int) -> np.ndarray:
        """Ids of ``<extra_id_0>`` ... ``<extra_id_{count-1}>``: vocab_size - 1, - 2, ...

        Spans beyond the last extra id all reuse it. T5 keeps counting down into
        ordinary tokens instead (``iid_50_u_u`` at 512 tokens has ~128 spans for 100
        extra ids), which makes such a "sentinel" look like text.
        """
        if count > 0 and self.num_extra_ids == 0:
            raise ValueError("this objective needs sentinels, but VocabInfo.num_extra_ids is 0")
        return self.vocab_size - 1 - np.minimum(np.arange(count), self.num_extra_ids - 1)


class Encoding(Protocol):
    def __call__(
        self, tokens: np.ndarray, noise_mask: np.ndarray, vocab: VocabInfo, rng: np.random.Generator
    ) -> np.ndarray: ...


def _span_starts(noise_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first token of each noise span, noise token that continues a span)."""
    previous_is_noise = np.concatenate([[False], noise_mask[:-1]])
    return noise_mask & ~previous_is_noise, noise_mask & previous_is_noise


def noise_span_to_unique_sentinel(
    tokens: np.ndarray, noise_mask: np.ndarray, vocab: VocabInfo, rng: Optional[np.random.Generator] = None
) -> np.ndarray:
    """``u`` inputs: each run of noise tokens becomes one sentinel, numbered in order.

    "Thank you <X> me to your party <Y> week." (T5 paper figure 2): the i-th
    noise span is replaced by ``<extra_id_i>``.
    """
    del rng
    first, continuing = _span_starts(noise_mask)
    encoded = tokens.copy()
    encoded[first] = vocab.sentinel_ids(int(first.sum())).astype(tokens.dtype)
    return encoded[~continuing]


def nonnoise_span_to_unique_sentinel(
    tokens: np.ndarray,
    noise_mask: np.ndarray,
    vocab: VocabInfo,
    rng: Optional[np.random.Generator] = None,
    *,
    align_with_inputs: bool = True,
) -> np.ndarray:
    """``u`` targets: each run of non-noise tokens becomes one sentinel.

    "<X> for inviting <Y> last <Z>" (figure 2): each sentinel of the inputs is
    followed by the span it replaced; a text ending in non-noise gets one more
    sentinel that closes the last span (T5 code; never happens with random-spans
    masks, which end in noise).

    With ``align_with_inputs`` (default), a text that *starts* with noise gets a
    leading ``<extra_id_0>`` as if an empty non-noise span came first, so target
    sentinel i always introduces input span i, as the paper and T5's gin README
    define ``u``. T5's code (``align_with_inputs=False``) numbers non-noise spans
    instead and there emits the first span with no sentinel before it, shifting
    every later sentinel by one; this only concerns ``iid_*_u_u`` (random-spans
    masks start with non-noise, where both agree).
    """
    del rng
    nonnoise = ~noise_mask
    if align_with_inputs and noise_mask.size and noise_mask[0]:
        placeholder = np.zeros(1, dtype=tokens.dtype)
        return noise_span_to_unique_sentinel(
            np.concatenate([placeholder, tokens]), np.concatenate([[True], nonnoise]), vocab
        )
    return noise_span_to_unique_sentinel(tokens, nonnoise, vocab)


def noise_token_to_sentinel(
    tokens: np.ndarray, noise_mask: np.ndarray, vocab: VocabInfo, rng: Optional[np.random.Generator] = None
) -> np.ndarray:
    """``m`` inputs (MASS-style, section 3.3.2): every noise token becomes the mask token.

    T5 uses ``<extra_id_0>`` (its ``sentinel_id``) as the mask; see ``VocabInfo.mask_id``.
    """
    del rng
    return np.where(noise_mask, np.asarray(vocab.mask_token_id, tokens.dtype), tokens)


def noise_token_to_random_token(
    tokens: np.ndarray, noise_mask: np.ndarray, vocab: VocabInfo, rng: np.random.Generator
) -> np.ndarray:
    """``r`` inputs: every noise token becomes a uniformly random ordinary token."""
    return np.where(noise_mask, vocab.random_tokens(rng, tokens.shape, tokens.dtype), tokens)


def noise_token_to_random_token_or_sentinel(
    tokens: np.ndarray,
    noise_mask: np.ndarray,
    vocab: VocabInfo,
    rng: np.random.Generator,
    *,
    random_prob: float = 0.1,
    keep_prob: float = 0.0,
) -> np.ndarray:
    """BERT-style corruption of the noise tokens.

    Each noise token independently becomes a random ordinary token with
    probability ``random_prob``, stays itself with probability ``keep_prob``,
    and otherwise becomes the mask token. The defaults are T5's
    ``noise_token_to_random_token_or_sentinel`` (``iid_15_r10s90_f``: 10% random,
    90% mask, nothing kept, as the T5 paper's "BERT-style" objective, section
    3.3.1); ``random_prob=keep_prob=0.1`` is BERT's own 80/10/10.
    """
    if random_prob < 0 or keep_prob < 0 or random_prob + keep_prob > 1:
        raise ValueError(f"need 0 <= random_prob, keep_prob and their sum <= 1, got {random_prob}, {keep_prob}")
    draw = rng.random(tokens.shape)
    randomized = noise_token_to_random_token(tokens, noise_mask, vocab, rng)
    masked = noise_token_to_sentinel(tokens, noise_mask, vocab)
    kept = tokens
    return np.select([draw < random_prob, draw < random_prob + keep_prob], [randomized, kept], masked)


def drop_noise_tokens(
    tokens: np.ndarray, noise_mask: np.ndarray, vocab: VocabInfo, rng: Optional[np.random.Generator] = None
) -> np.ndarray:
    """``d`` inputs (section 3.3.2, "drop corrupted tokens"): noise tokens are removed."""
    del vocab, rng
    return tokens[~noise_mask]


def drop_nonnoise_tokens(
    tokens: np.ndarray, noise_mask: np.ndarray, vocab: VocabInfo, rng: Optional[np.random.Generator] = None
) -> np.ndarray:
    """``d`` targets: only the noise tokens, concatenated in order."""
    del vocab, rng
    return tokens[noise_mask]


def permute_noise_tokens(
    tokens: np.ndarray, noise_mask: np.ndarray, vocab: VocabInfo, rng: np.random.Generator
) -> np.ndarray:
    """``p`` inputs: the noise tokens are shuffled among their own positions.

    With an all-noise mask this is the deshuffling objective (section 3.3.1).
    """
    del vocab
    shuffled = tokens.copy()
    shuffled[noise_mask] = rng.permutation(tokens[noise_mask])
    return shuffled
