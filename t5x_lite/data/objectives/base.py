"""What every objective is: a pure function of one example's tokens and an RNG."""

from __future__ import annotations

from typing import Mapping, Protocol

import numpy as np


class Objective(Protocol):
    """A pretraining objective applied to one example.

    ``__call__`` maps a 1-D array of token ids (a piece of the concatenated text,
    with no EOS: the feature converter appends EOS later) to a dict of 1-D
    arrays, usually ``{"inputs", "targets"}``. All randomness comes from ``rng``,
    so a pipeline that seeds one generator per example, e.g.
    ``np.random.default_rng([seed, example_index])``, is deterministic and can
    resume anywhere.

    ``required_raw_length`` says how many text tokens to cut per example for
    the given feature lengths (which count the EOS).

    ``features`` names the features it fills, so that a model which reads
    others (span corruption for BERT, an LM's empty inputs for an encoder) is
    refused before any data is read. An objective without it is not checked.
    """

    name: str
    features: tuple[str, ...]

    def required_raw_length(self, feature_lengths: Mapping[str, int]) -> int: ...

    def __call__(self, tokens: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]: ...


def as_tokens(tokens: np.ndarray) -> np.ndarray:
    """Checks that ``tokens`` is a 1-D integer array (not copied)."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"expected a 1-D integer array of token ids, got {tokens.dtype} with shape {tokens.shape}")
    return tokens
