"""Decoding: pure search loops over a ``tokens_to_logits`` closure, and model-level helpers.

* ``greedy_decode``, ``temperature_sample`` (temperature, top-k, top-p),
  ``beam_search`` (per-beam KV cache, T5 length penalty): pure functions of a
  closure ``tokens_to_logits(tokens [N, 1], cache) -> (logits [N, V], cache)``,
  each one ``lax.while_loop`` that jits as a whole.
* ``predict_batch`` / ``score_batch``: the same for an ``EncoderDecoderModel`` or
  ``DecoderOnlyModel`` and its params, compiled once per static option set.
"""

from t5x_lite.decoding.beam import beam_search, length_penalty
from t5x_lite.decoding.cache import gather_rows, infer_batch_axes, repeat_rows, select_rows
from t5x_lite.decoding.predict import METHODS, decoder_only_prompt, predict_batch, score_batch
from t5x_lite.decoding.sampling import filter_logits, greedy_decode, temperature_sample

__all__ = [
    "METHODS", "beam_search", "decoder_only_prompt", "filter_logits", "gather_rows", "greedy_decode",
    "infer_batch_axes", "length_penalty", "predict_batch", "repeat_rows", "score_batch", "select_rows",
    "temperature_sample",
]
