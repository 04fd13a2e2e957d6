"""Pretraining objectives as pure NumPy functions of one example.

An objective maps a 1-D array of token ids (no EOS) and a
``np.random.Generator`` to a dict of arrays, ``{"inputs", "targets"}`` for the
encoder-decoder objectives. Layout:

- ``noise``: noise masks (i.i.d., random spans, prefix split) and the span
  corruption length helper (T5's ``random_spans_helper``).
- ``encodings``: inputs/targets encodings of noise (sentinels, mask, random,
  drop, permute) and ``VocabInfo`` (which ids are sentinels).
- ``t5``: the T5 paper's objectives (``Denoise``, ``PrefixLM``, ``LanguageModel``).
- ``bert``: encoder-only masked LM. ``ul2``: UL2's mixture of denoisers.
- ``registry``: ``make_objective(name, vocab)`` with T5's gin names.

Example::

    vocab = VocabInfo(vocab_size=32100)
    objective = make_objective("span_3_15_u_u", vocab)
    raw = objective.required_raw_length({"inputs": 512, "targets": 114})  # 568
    example = objective(tokens[:raw], np.random.default_rng([seed, index]))
"""

from t5x_lite.data.objectives.base import Objective, as_tokens
from t5x_lite.data.objectives.bert import BertMLM
from t5x_lite.data.objectives.encodings import (
    Encoding,
    VocabInfo,
    drop_noise_tokens,
    drop_nonnoise_tokens,
    noise_span_to_unique_sentinel,
    noise_token_to_random_token,
    noise_token_to_random_token_or_sentinel,
    noise_token_to_sentinel,
    nonnoise_span_to_unique_sentinel,
    permute_noise_tokens,
)
from t5x_lite.data.objectives.noise import (
    iid_noise_mask,
    random_prefix_length,
    random_spans_noise_mask,
    span_corruption_input_length,
    span_counts,
)
from t5x_lite.data.objectives.registry import OBJECTIVE_NAMES, make_objective
from t5x_lite.data.objectives.t5 import (
    Denoise,
    LanguageModel,
    PrefixLM,
    bert_style,
    deshuffling,
    drop_tokens,
    iid_replace_spans,
    mass_style,
    span_corruption,
)
from t5x_lite.data.objectives.ul2 import UL2_DENOISERS, Denoiser, MixtureOfDenoisers

__all__ = [
    "OBJECTIVE_NAMES",
    "UL2_DENOISERS",
    "BertMLM",
    "Denoise",
    "Denoiser",
    "Encoding",
    "LanguageModel",
    "MixtureOfDenoisers",
    "Objective",
    "PrefixLM",
    "VocabInfo",
    "as_tokens",
    "bert_style",
    "deshuffling",
    "drop_noise_tokens",
    "drop_nonnoise_tokens",
    "drop_tokens",
    "iid_noise_mask",
    "iid_replace_spans",
    "make_objective",
    "mass_style",
    "noise_span_to_unique_sentinel",
    "noise_token_to_random_token",
    "noise_token_to_random_token_or_sentinel",
    "noise_token_to_sentinel",
    "nonnoise_span_to_unique_sentinel",
    "permute_noise_tokens",
    "random_prefix_length",
    "random_spans_noise_mask",
    "span_corruption",
    "span_corruption_input_length",
    "span_counts",
]
