"""Decoder-only LM from the T5 blocks: causal, or prefix LM (T5 paper, section 3.2).

A prefix-LM row marks its inputs with ``decoder_causal_attention`` = 1; those
positions attend to each other bidirectionally, the rest causally (t5x names).
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax

from t5x_lite.models.config import T5Config
from t5x_lite.models.t5 import Decoder, shared_embedder

Array = jax.Array


class DecoderOnly(nn.Module):
    config: T5Config

    def setup(self):
        self.token_embedder = shared_embedder(self.config)
        self.decoder = Decoder(self.config, self.token_embedder, cross_attention=False)

    def __call__(
        self,
        decoder_input_tokens: Array,
        decoder_segment_ids: Optional[Array] = None,
        decoder_positions: Optional[Array] = None,
        decoder_causal_attention: Optional[Array] = None,
        *,
        enable_dropout: bool = False,
        decode: bool = False,
        max_decode_length: Optional[int] = None,
    ) -> Array:
        return self.decoder(
            decoder_input_tokens,
            None,
            segment_ids=decoder_segment_ids,
            positions=decoder_positions,
            causal_attention=decoder_causal_attention,
            deterministic=not enable_dropout,
            decode=decode,
            max_decode_length=max_decode_length,
        )
