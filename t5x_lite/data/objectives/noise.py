"""Noise masks: which tokens of one example an objective corrupts.

T5 paper (Raffel et al. 2020) section 3.3. A mask is a boolean array as long as
the example; ``True`` marks a noise ("corrupted") token. How the noise tokens
are then encoded into inputs and targets lives in ``encodings.py``.
"""

from __future__ import annotations

import numpy as np


def iid_noise_mask(length: int, noise_density: float, rng: np.random.Generator) -> np.ndarray:
    """Each token is noise independently with probability ``noise_density``.

    T5's ``iid_noise_mask``, used by the ``iid_*`` objectives (section 3.3.2,
    "i.i.d. corruption"). The number of noise tokens is binomial, so it may be 0.
    """
    return rng.random(length) < noise_density


def span_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """``(num_noise_tokens, num_noise_spans)`` of a random-spans mask over ``length`` tokens.

    T5's deterministic counts: ``round(length * density)`` noise tokens, clipped to
    ``[1, length - 1]`` so that there is at least one noise and one non-noise
    token, and ``round(noise / mean_span)`` spans, at least 1. We also cap the
    spans at the number of non-noise tokens (T5 fails there instead), because the
    mask interleaves equally many non-empty non-noise and noise spans.
    Both the mask and the length helper use these counts, so they cannot disagree.
    """
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
    return num_noise, min(num_spans, length - num_noise)


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths of a uniformly random split of ``num_items`` into ``num_segments`` non-empty parts.

    Picking ``num_segments - 1`` distinct cut points among the ``num_items - 1``
    gaps gives every composition the same probability, as T5's shuffled
    "first item of a segment" indicator does.
    """
    cuts = np.sort(rng.choice(num_items - 1, size=num_segments - 1, replace=False)) + 1
    return np.diff(np.concatenate([[0], cuts, [num_items]]))


def random_spans_noise_mask(
    length: int,
    noise_density: float,
    mean_noise_span_length: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Noise made of random spans: T5's ``random_spans_noise_mask`` (section 3.3.4).

    The counts are fixed by :func:`span_counts`; the lengths of the noise spans
    and of the non-noise spans are random segmentations. Spans alternate
    non-noise, noise, non-noise, ..., so a mask always starts with non-noise and
    ends with noise (T5's default, ``random_roll=False``). Subject to that, every
    mask is equally likely.
    """
    if length == 0 or noise_density == 0.0:
        return np.zeros(length, dtype=bool)
    # As T5: a 1-token example is treated as 2 tokens (one of each kind) and the
    # mask truncated, so a single token is never noise.
    padded_length = max(length, 2)
    num_noise, num_spans = span_counts(padded_length, noise_density, mean_noise_span_length)
    noise_lengths = _random_segmentation(num_noise, num_spans, rng)
    nonnoise_lengths = _random_segmentation(padded_length - num_noise, num_spans, rng)
    span_lengths = np.stack([nonnoise_lengths, noise_lengths], axis=1).reshape(-1)
    span_is_noise = np.tile([False, True], num_spans)
    return np.repeat(span_is_noise, span_lengths)[:length]


def random_prefix_length(length: int, target_fraction: float, rng: np.random.Generator) -> int:
    """Number of leading tokens that form the prefix (inputs) of a prefix-LM example.

    T5's ``random_prefix_noise_mask`` (only defined for density 0.5) draws the
    prefix length uniformly from ``[1, length - 1]``, so the continuation is on
    average half the text. We generalize that to any ``target_fraction`` f while
    keeping it the exact T5 rule at f = 0.5: for f <= 0.5 the continuation length
    is uniform on ``[1, round(2 f L) - 1]`` (mean about f L; UL2's S-denoiser uses
    f = 0.25); for f > 0.5 the prefix length is, symmetrically. Both parts are
    non-empty when ``length >= 2``; shorter texts are all continuation, as in T5.
    """
    if length < 2:
        return 0
    if target_fraction <= 0.5:
        max_targets = min(max(int(round(2 * target_fraction * length)) - 1, 1), length - 1)
        return length - int(rng.integers(1, max_targets + 1))
    max_prefix = min(max(int(round(2 * (1 - target_fraction) * length)) - 1, 1), length - 1)
    return int(rng.integers(1, max_prefix + 1))


def span_corruption_input_length(
    inputs_length: int,
    noise_density: float,
    mean_noise_span_length: float,
    *,
    extra_tokens_per_span_inputs: int = 1,
    extra_tokens_per_span_targets: int = 1,
) -> tuple[int, int]:
    """``(raw_tokens_length, targets_length)`` so span corruption fills ``inputs_length`` exactly.

    T5's ``random_spans_helper``: the longest raw text whose inputs (non-noise
    tokens + one sentinel per noise span + EOS) fit in ``inputs_length``, and the
    matching targets length (noise tokens + one sentinel per span + EOS). Both
    lengths count the EOS that the feature converter appends later. Example:
    ``(512, 0.15, 3.0) -> (568, 114)``.

    Two refinements over T5, both invisible at the paper's settings: the counts
    come from :func:`span_counts` (the same clipping as the mask), so short inputs
    are exact too; and T5's density-0.5 tweak (drop one raw token so targets do
    not exceed inputs) recomputes the targets length rather than subtracting 1,
    since the dropped token may be a non-noise one.
    """

    def encoded_lengths(tokens_length: int) -> tuple[int, int]:
        if tokens_length < 2:  # no noise at all (see random_spans_noise_mask)
            return tokens_length + 1, tokens_length + 1
        num_noise, num_spans = span_counts(tokens_length, noise_density, mean_noise_span_length)
        inputs = tokens_length - num_noise + num_spans * extra_tokens_per_span_inputs + 1
        targets = num_noise + num_spans * extra_tokens_per_span_targets + 1
        return inputs, targets

    # Each extra raw token adds at most one input token, so walking up one token
    # at a time stops at an exact fit.
    tokens_length = max(inputs_length - 1, 0)
    while encoded_lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    inputs, targets = encoded_lengths(tokens_length)
    if noise_density == 0.5 and targets > inputs:
        tokens_length -= 1
        targets = encoded_lengths(tokens_length)[1]
    return tokens_length, targets
