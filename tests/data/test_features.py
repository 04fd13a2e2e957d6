"""Feature converters, truncation accounting and shift-right across packed segments."""

import numpy as np

from t5x_lite.data.features import (
    DecoderOnlyFeatureConverter,
    EncDecFeatureConverter,
    TruncationStats,
    concat_for_decoder_only,
    shift_right,
    trim_and_append_eos,
)


def test_trim_counts_truncated_tokens_and_appends_eos():
    stats = TruncationStats()
    ex = {"inputs": np.arange(3, 13), "targets": np.array([5, 6])}
    out = trim_and_append_eos(ex, {"inputs": 6, "targets": 4}, {"inputs": True, "targets": True}, 1, stats)
    np.testing.assert_array_equal(out["inputs"], [3, 4, 5, 6, 7, 1])
    np.testing.assert_array_equal(out["targets"], [5, 6, 1])
    assert stats.as_dict() == {"examples": 1, "truncated_examples": {"inputs": 1}, "truncated_tokens": {"inputs": 5},
                              "dropped_examples": {}, "skipped_examples": {}}


def test_shift_right_restarts_at_each_packed_segment():
    targets = np.array([[7, 8, 1, 9, 1, 0]])
    seg = np.array([[1, 1, 1, 2, 2, 0]])
    np.testing.assert_array_equal(shift_right(targets), [[0, 7, 8, 1, 9, 1]])
    np.testing.assert_array_equal(shift_right(targets, seg), [[0, 7, 8, 0, 9, 0]])


def test_encdec_converter_names_and_weights():
    batch = {"inputs": np.array([[4, 5, 1, 0]]), "targets": np.array([[6, 1, 0]])}
    out = EncDecFeatureConverter()(batch)
    assert set(out) == {"encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
                        "decoder_loss_weights"}
    np.testing.assert_array_equal(out["decoder_input_tokens"], [[0, 6, 1]])
    np.testing.assert_array_equal(out["decoder_loss_weights"], [[1, 1, 0]])


def test_prefix_lm_concat_marks_prefix_and_targets_only_loss():
    ex = concat_for_decoder_only({"inputs": np.array([4, 5, 1]), "targets": np.array([6, 7, 1])})
    np.testing.assert_array_equal(ex["targets"], [4, 5, 1, 6, 7, 1])
    # decoder inputs after the shift are [0, 4, 5, 1, 6, 7]: the first four see each other
    np.testing.assert_array_equal(ex["causal_attention"], [1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(ex["loss_weights"], [0, 0, 0, 1, 1, 1])
    conv = DecoderOnlyFeatureConverter()
    batch = {k: np.pad(v, (0, 2))[None] for k, v in ex.items()}
    out = conv(batch)
    np.testing.assert_array_equal(out["decoder_input_tokens"], [[0, 4, 5, 1, 6, 7, 1, 0]])
    np.testing.assert_array_equal(out["decoder_loss_weights"], [[0, 0, 0, 1, 1, 1, 0, 0]])
