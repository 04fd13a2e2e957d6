"""Masked language modeling for an encoder-only model (Devlin et al. 2019, BERT)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Mapping

import numpy as np

from t5x_lite.data.objectives import encodings as enc
from t5x_lite.data.objectives.base import as_tokens
from t5x_lite.data.objectives.noise import iid_noise_mask


@dataclasses.dataclass(frozen=True)
class BertMLM:
    """BERT's masked LM: 15% of positions selected, of those 80% mask / 10% random / 10% kept.

    Returns ``inputs`` (the corrupted text, same length), ``mlm_targets`` (the
    original token at selected positions, 0 elsewhere) and ``mlm_weights``
    (float32, 1 at selected positions), so the loss is taken only there.
    Positions are selected i.i.d. (as T5's ``iid_noise_mask`` and Hugging Face's
    collator do), not as an exact count per sequence as BERT's original script;
    never at the vocabulary's ``special_ids`` (a WordPiece text's ``[CLS]`` and
    ``[SEP]``, as the collator's special-tokens mask). A WordPiece vocabulary
    gives its own ``vocab_info()``; by hand, ``VocabInfo(mask_id=103,
    num_extra_ids=0, ...)``. Every position holds text: give the task's features
    ``add_eos=False`` (as the bundled ``bert_mlm`` task does), or the EOS cuts one
    token per example.
    """

    vocab: enc.VocabInfo
    noise_density: float = 0.15
    random_prob: float = 0.1
    keep_prob: float = 0.1
    name: str = "bert_mlm"
    features: ClassVar[tuple[str, ...]] = ("inputs", "mlm_targets", "mlm_weights")

    def required_raw_length(self, feature_lengths: Mapping[str, int]) -> int:
        # Every position holds text: the MLM features get no EOS (the bundled bert_mlm task's add_eos=False)
        # and nothing adds [CLS]/[SEP] here.
        return feature_lengths["inputs"]

    def __call__(self, tokens: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        tokens = as_tokens(tokens)
        selected = iid_noise_mask(tokens.size, self.noise_density, rng)
        if self.vocab.special_ids:
            selected &= ~np.isin(tokens, self.vocab.special_ids)
        inputs = enc.noise_token_to_random_token_or_sentinel(
            tokens, selected, self.vocab, rng, random_prob=self.random_prob, keep_prob=self.keep_prob
        )
        return {
            "inputs": inputs,
            "mlm_targets": np.where(selected, tokens, np.zeros_like(tokens)),
            "mlm_weights": selected.astype(np.float32),
        }
