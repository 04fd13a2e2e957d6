"""The unsupervised objectives of the T5 paper (Raffel et al. 2020, section 3.3).

Names follow T5's gin files (``t5/models/gin/objectives/``):
``<noise pattern>_<density %>_<inputs encoding>_<targets encoding>``, with the
pattern ``iid`` (i.i.d. tokens) or ``span_<n>`` (random spans of mean length n)
and the encodings of ``encodings.py``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar, Mapping, Optional

import numpy as np

from t5x_lite.data.objectives import encodings as enc
from t5x_lite.data.objectives.base import as_tokens
from t5x_lite.data.objectives.noise import (
    iid_noise_mask,
    random_prefix_length,
    random_spans_noise_mask,
    span_corruption_input_length,
)


@dataclasses.dataclass(frozen=True)
class Denoise:
    """T5's ``denoise``: choose noise, then encode inputs and targets from it.

    Attributes:
      name: the gin name, e.g. ``"span_3_15_u_u"``.
      vocab: sentinel, mask and random-token ids.
      noise_density: fraction of tokens that are noise.
      inputs_fn: how noise appears in the inputs (an ``encodings.Encoding``).
      targets_fn: what the targets are; ``None`` is the full original text (``f``).
      mean_noise_span_length: ``None`` for an i.i.d. mask, else the mean span
        length of a random-spans mask.
    """

    name: str
    vocab: enc.VocabInfo
    noise_density: float
    inputs_fn: enc.Encoding
    targets_fn: Optional[enc.Encoding] = None
    mean_noise_span_length: Optional[float] = None
    features: ClassVar[tuple[str, ...]] = ("inputs", "targets")

    def __post_init__(self) -> None:
        if not 0.0 < self.noise_density <= 1.0:
            raise ValueError(f"{self.name}: noise_density must be in (0, 1], got {self.noise_density}")
        if self.mean_noise_span_length is not None:
            if self.noise_density >= 1.0 or self.mean_noise_span_length < 1.0:
                raise ValueError(f"{self.name}: random spans need density < 1 and mean span length >= 1")

    def noise_mask(self, length: int, rng: np.random.Generator) -> np.ndarray:
        if self.mean_noise_span_length is None:
            return iid_noise_mask(length, self.noise_density, rng)
        return random_spans_noise_mask(length, self.noise_density, self.mean_noise_span_length, rng)

    def required_raw_length(self, feature_lengths: Mapping[str, int]) -> int:
        """Raw tokens per example, as T5 splits the text for each objective.

        Random spans: :func:`span_corruption_input_length`, so the inputs come out
        at exactly ``feature_lengths["inputs"]`` (EOS included); a ``targets``
        length below what that needs is an error rather than silent truncation.
        i.i.d. noise: ``inputs - 1`` (T5's ``split_tokens_to_inputs_length``); the
        inputs can only get shorter, while variable-length targets (``u``, ``d``)
        may exceed the targets length, as in T5 (it chose a 99.9th percentile).
        Full-text targets (``f``) must also fit: at most ``targets - 1``.
        """
        inputs_length = feature_lengths["inputs"]
        targets_length = feature_lengths.get("targets")
        if self.mean_noise_span_length is None:
            raw_length = inputs_length - 1
        else:
            raw_length, needed = span_corruption_input_length(
                inputs_length, self.noise_density, self.mean_noise_span_length
            )
            if self.targets_fn is not None and targets_length is not None and targets_length < needed:
                raise ValueError(
                    f"{self.name}: inputs length {inputs_length} gives targets of {needed} tokens, "
                    f"more than the targets length {targets_length}: make the targets length at least {needed} "
                    f"or the inputs shorter"
                )
        if self.targets_fn is None and targets_length is not None:
            raw_length = min(raw_length, targets_length - 1)
        return max(raw_length, 0)

    def __call__(self, tokens: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        tokens = as_tokens(tokens)
        noise_mask = self.noise_mask(tokens.size, rng)
        inputs = self.inputs_fn(tokens, noise_mask, self.vocab, rng)
        targets = tokens.copy() if self.targets_fn is None else self.targets_fn(tokens, noise_mask, self.vocab, rng)
        return {"inputs": inputs, "targets": targets}


@dataclasses.dataclass(frozen=True)
class PrefixLM:
    """Prefix language modeling (section 3.3.1): a random split, prefix -> continuation.

    ``target_fraction=0.5`` is T5's ``prefix_lm`` (split point uniform over the
    text); UL2's S-denoiser uses 0.25. See :func:`noise.random_prefix_length`.
    """

    name: str = "prefix_lm"
    target_fraction: float = 0.5
    features: ClassVar[tuple[str, ...]] = ("inputs", "targets")

    def __post_init__(self) -> None:
        if not 0.0 < self.target_fraction < 1.0:
            raise ValueError(f"{self.name}: target_fraction must be in (0, 1), got {self.target_fraction}")

    def required_raw_length(self, feature_lengths: Mapping[str, int]) -> int:
        # T5 splits the text to the inputs length; the continuation is shorter.
        return max(feature_lengths["inputs"] - 1, 0)

    def __call__(self, tokens: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        tokens = as_tokens(tokens)
        split = random_prefix_length(tokens.size, self.target_fraction, rng)
        return {"inputs": tokens[:split].copy(), "targets": tokens[split:].copy()}


@dataclasses.dataclass(frozen=True)
class LanguageModel:
    """Plain language modeling for a decoder-only model: no inputs, the text is the target."""

    name: str = "lm"
    features: ClassVar[tuple[str, ...]] = ("targets",)  # its "inputs" is always empty

    def required_raw_length(self, feature_lengths: Mapping[str, int]) -> int:
        # T5's split_tokens_to_targets_length.
        return max(feature_lengths["targets"] - 1, 0)

    def __call__(self, tokens: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        del rng
        tokens = as_tokens(tokens)
        return {"inputs": tokens[:0].copy(), "targets": tokens.copy()}


def span_corruption(
    vocab: enc.VocabInfo, noise_density: float = 0.15, mean_noise_span_length: float = 3.0, name: Optional[str] = None
) -> Denoise:
    """``span_<n>_<d>_u_u``: the T5 baseline "replace corrupted spans" with random spans (section 3.3.4)."""
    return Denoise(
        name=name or f"span_{mean_noise_span_length:g}_{round(noise_density * 100)}_u_u",
        vocab=vocab,
        noise_density=noise_density,
        inputs_fn=enc.noise_span_to_unique_sentinel,
        targets_fn=enc.nonnoise_span_to_unique_sentinel,
        mean_noise_span_length=mean_noise_span_length,
    )


def iid_replace_spans(vocab: enc.VocabInfo, noise_density: float = 0.15) -> Denoise:
    """``iid_<d>_u_u``: i.i.d. noise, each run of noise tokens replaced by one sentinel (section 3.3.2)."""
    return Denoise(
        name=f"iid_{round(noise_density * 100)}_u_u",
        vocab=vocab,
        noise_density=noise_density,
        inputs_fn=enc.noise_span_to_unique_sentinel,
        targets_fn=enc.nonnoise_span_to_unique_sentinel,
    )


def bert_style(
    vocab: enc.VocabInfo, noise_density: float = 0.15, random_prob: float = 0.1, keep_prob: float = 0.0
) -> Denoise:
    """BERT-style denoising for an encoder-decoder (section 3.3.1); targets are the full text.

    The defaults are ``iid_15_r10s90_f``: noise tokens 10% random, 90% mask
    sentinel, none kept, as T5 ran it. ``keep_prob=0.1`` gives BERT's 80/10/10,
    named ``iid_15_s80r10k10_f`` here (``k`` = kept; not a T5 name).
    """
    r, k = round(random_prob * 100), round(keep_prob * 100)
    corruption = f"s{100 - r - k}r{r}k{k}" if k else f"r{r}s{100 - r}"
    return Denoise(
        name=f"iid_{round(noise_density * 100)}_{corruption}_f",
        vocab=vocab,
        noise_density=noise_density,
        inputs_fn=functools.partial(
            enc.noise_token_to_random_token_or_sentinel, random_prob=random_prob, keep_prob=keep_prob
        ),
    )


def mass_style(vocab: enc.VocabInfo, noise_density: float = 0.15) -> Denoise:
    """``iid_15_m_f``: MASS-style (section 3.3.2): noise tokens masked, targets the full text."""
    return Denoise(
        name=f"iid_{round(noise_density * 100)}_m_f",
        vocab=vocab,
        noise_density=noise_density,
        inputs_fn=enc.noise_token_to_sentinel,
    )


def drop_tokens(vocab: enc.VocabInfo, noise_density: float = 0.15) -> Denoise:
    """``iid_15_d_d``: "drop corrupted tokens" (section 3.3.2): the dropped tokens are the targets."""
    return Denoise(
        name=f"iid_{round(noise_density * 100)}_d_d",
        vocab=vocab,
        noise_density=noise_density,
        inputs_fn=enc.drop_noise_tokens,
        targets_fn=enc.drop_nonnoise_tokens,
    )


def deshuffling(vocab: enc.VocabInfo) -> Denoise:
    """``all_permute``: every token is noise and the noise is shuffled (section 3.3.1)."""
    return Denoise(name="all_permute", vocab=vocab, noise_density=1.0, inputs_fn=enc.permute_noise_tokens)
