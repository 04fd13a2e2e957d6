"""Analytic FLOP counts (t5x_lite.training.flops) and MFU arithmetic."""

import pytest

from t5x_lite.models.config import BertConfig, T5Config
from t5x_lite.training import flops
from t5x_lite.training.flops import PEAK_FLOPS, forward_flops, mfu, peak_flops_for, train_flops_per_example

T5_1_1_SMALL = T5Config(
    d_model=512, d_ff=1024, num_heads=6, d_kv=64, num_encoder_layers=8, num_decoder_layers=8,
    mlp_activations=("gelu", "linear"), logits_via_embedding=False, vocab_size=32128,
)
T5_1_1_BASE = T5_1_1_SMALL.replace(d_model=768, d_ff=2048, num_heads=12, num_encoder_layers=12, num_decoder_layers=12)


def mm(m, k, n):
    """FLOPs of an (m x k) @ (k x n) matmul: 2 per multiply-add."""
    return 2 * m * k * n


def test_t5_1_1_small_reference_number():
    f = train_flops_per_example(T5_1_1_SMALL, {"inputs": 512, "targets": 114})
    assert f == 106_253_402_112  # exact integer arithmetic
    assert round(f / 1e9, 2) == 106.25  # REFERENCES.md, "Peer throughput"
    parts = forward_flops(T5_1_1_SMALL, {"inputs": 512, "targets": 114})
    assert parts == {"encoder": 22_548_578_304, "decoder": 9_118_728_192, "head": 3_750_494_208}


def test_t5_1_1_base_number():
    f = train_flops_per_example(T5_1_1_BASE, {"inputs": 512, "targets": 114})
    assert f == 425_944_203_264


def test_encoder_decoder_matches_matmul_by_matmul_count():
    # Tiny config counted matmul by matmul, independently of the closed form.
    cfg = T5Config(d_model=8, d_ff=16, num_heads=2, d_kv=3, num_encoder_layers=2, num_decoder_layers=3,
                   mlp_activations=("gelu", "linear"), vocab_size=11)
    d, ff, inner, se, sd = 8, 16, 6, 7, 5
    enc_layer = (4 * mm(se, d, inner)  # q k v o
                 + 2 * mm(se, d, ff) + mm(se, ff, d)  # gated MLP: wi_0, wi_1, wo
                 + mm(se, inner, se) + mm(se, se, inner))  # scores, weighted values
    dec_layer = (4 * mm(sd, d, inner) + mm(sd, inner, sd) + mm(sd, sd, inner)  # self-attention
                 + 2 * mm(sd, d, inner) + 2 * mm(se, d, inner)  # cross q, o on decoder; k, v on encoder
                 + mm(sd, inner, se) + mm(sd, se, inner)  # cross scores, weighted values
                 + 2 * mm(sd, d, ff) + mm(sd, ff, d))
    head = mm(sd, d, 11)
    expected = 3 * (2 * enc_layer + 3 * dec_layer + head)
    assert train_flops_per_example(cfg, {"inputs": se, "targets": sd}) == expected


def test_encoder_and_decoder_lengths_counted_separately():
    base = forward_flops(T5_1_1_SMALL, {"inputs": 512, "targets": 114})
    longer_targets = forward_flops(T5_1_1_SMALL, {"inputs": 512, "targets": 228})
    assert longer_targets["encoder"] == base["encoder"]
    assert longer_targets["decoder"] > base["decoder"]
    assert longer_targets["head"] == 2 * base["head"]
    longer_inputs = forward_flops(T5_1_1_SMALL, {"inputs": 1024, "targets": 114})
    assert longer_inputs["head"] == base["head"]
    assert longer_inputs["encoder"] > 2 * base["encoder"]  # linear terms double, attention quadruples
    assert longer_inputs["decoder"] > base["decoder"]  # cross-attention sees the encoder length
    # Not the same as treating 626 tokens alike ("6N per token" style).
    swapped = forward_flops(T5_1_1_SMALL, {"inputs": 114, "targets": 512})
    assert sum(swapped.values()) != sum(base.values())


def test_decoder_only_hand_computed():
    cfg = T5Config(d_model=8, d_ff=16, num_heads=2, d_kv=4, num_encoder_layers=1, num_decoder_layers=2,
                   mlp_activations=("relu",), vocab_size=10)
    # per layer: S*(8*d*inner + 2*(n_in+1)*d*d_ff + 4*S*inner) = 5*(512 + 512 + 160) = 5920
    # 2 layers = 11840; head 2*5*8*10 = 800; forward 12640; train 37920
    assert train_flops_per_example(cfg, {"targets": 5}, decoder_only=True) == 37920
    layer = 4 * mm(5, 8, 8) + mm(5, 8, 16) + mm(5, 16, 8) + mm(5, 8, 5) + mm(5, 5, 8)
    assert 37920 == 3 * (2 * layer + mm(5, 8, 10))
    # no cross-attention, no encoder: less than the encoder-decoder with the same decoder
    assert 37920 < train_flops_per_example(cfg, {"inputs": 5, "targets": 5})


def test_decoder_only_rejects_ambiguous_lengths():
    with pytest.raises(ValueError, match="prefix LM"):
        train_flops_per_example(T5_1_1_SMALL, {"inputs": 512, "targets": 114}, decoder_only=True)
    with pytest.raises(ValueError, match="targets"):
        train_flops_per_example(T5_1_1_SMALL, {"inputs": 512})


def test_bert_hand_computed():
    cfg = BertConfig(hidden_size=8, num_layers=2, num_heads=2, intermediate_size=32, vocab_size=20)
    # per layer: 4*2*6*8*8 + 2*2*6*8*32 + 4*6*6*8 = 3072 + 6144 + 1152 = 10368; x2 = 20736
    # head: 2*6*8*8 + 2*6*8*20 = 768 + 1920 = 2688; forward 23424; train 70272
    assert train_flops_per_example(cfg, {"inputs": 6}) == 70272
    with pytest.raises(ValueError):
        train_flops_per_example(cfg, {"inputs": 6}, decoder_only=True)


def test_bert_base_matches_reference_mfu():
    # REFERENCES.md: BERT-base MLM 32 x 512 at 0.28M tokens/s is 20% of 989 TFLOP/s.
    f = train_flops_per_example(BertConfig(), {"inputs": 512})
    assert mfu(f * 280e3 / 512, 1.0, 989e12, 1) == pytest.approx(0.20, abs=0.005)


def test_mfu_arithmetic():
    assert mfu(989e12, 1.0, 989e12, 1) == pytest.approx(1.0)
    assert mfu(1e15, 2.0, 1e14, 8) == pytest.approx(0.625)
    # T5 1.1 small, torch.compile peer: 0.92M tokens/s of 626-token examples -> ~15.7-15.8% of an H100
    f = train_flops_per_example(T5_1_1_SMALL, {"inputs": 512, "targets": 114})
    assert mfu(f * 0.92e6 / 626, 1.0, PEAK_FLOPS["h100"], 1) == pytest.approx(0.157, abs=0.002)
    assert mfu(1e12, 1.0, None, 1) is None
    with pytest.raises(ValueError):
        mfu(1e12, 0.0, 989e12, 1)


def test_peak_flops_lookup():
    assert peak_flops_for("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
    assert peak_flops_for("NVIDIA H100 80GB HBM3", "float32") == 494.5e12  # TF32 dense
    assert peak_flops_for("NVIDIA H200", "bfloat16") == 989e12
    assert peak_flops_for("NVIDIA A100-SXM4-80GB", "bfloat16") == 312e12
    assert peak_flops_for("h100", "bfloat16") == 989e12
    assert peak_flops_for("cpu", "float32") is None
    assert peak_flops_for("TPU v4", "bfloat16") is None
    assert peak_flops_for("Some New Accelerator", "bfloat16") is None
    assert peak_flops_for("NVIDIA H100 80GB HBM3", "int8") is None
    assert PEAK_FLOPS["cpu"] is None and flops.PEAK_FLOPS["h200"] == 989e12
