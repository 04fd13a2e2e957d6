"""T5 v1.0 / v1.1 against Hugging Face transformers (PyTorch, CPU, float32)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import T5Config as HFT5Config
from transformers import T5ForConditionalGeneration

from t5x_lite import cli, convert
from t5x_lite.convert import hf_io
from t5x_lite.training import checkpoints

VARIANTS = {"v1_0": ("relu", True), "v1_1": ("gated-gelu", False), "ul2": ("gated-silu", False)}


def _hf_dir(tmp_path, variant):
    """A random-init HF T5 written as config.json + model.safetensors, as a hub download would be."""
    proj, tied = VARIANTS[variant]
    torch.manual_seed(0)
    cfg = HFT5Config(vocab_size=120, d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2, num_decoder_layers=3,
                     feed_forward_proj=proj, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                     decoder_start_token_id=0, tie_word_embeddings=tied)
    model = T5ForConditionalGeneration(cfg).eval()
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    if not tied:
        # HF would initialise the untied head N(0, 1); a realistic scale keeps the tolerance meaningful.
        state["lm_head.weight"] = np.random.default_rng(0).normal(0, 32 ** -0.5, (120, 32)).astype(np.float32)
    hf_json = cfg.to_dict()
    hf_json["tie_word_embeddings"] = tied  # transformers 5 reports True for every T5 config it builds
    d = tmp_path / f"hf_{variant}"
    hf_io.write_directory(d, hf_json, state)
    return d


def _batch():
    rng = np.random.default_rng(1)
    x = rng.integers(3, 120, (3, 11))
    x[1, 7:] = 0
    x[2, 4:] = 0
    y = rng.integers(3, 120, (3, 6))
    y[2, 4:] = 0
    return x, y


def _hf_inputs(x, y):
    return dict(input_ids=torch.tensor(x), attention_mask=torch.tensor(x != 0),
                labels=torch.tensor(np.where(y == 0, -100, y)))


def _hf_outputs(model, x, y):
    with torch.no_grad():
        out = model(**_hf_inputs(x, y))
    return out.logits.numpy(), float(out.loss)


def _our_batch(x, y):
    dec_in = np.concatenate([np.zeros((len(y), 1), int), y[:, :-1]], axis=1)
    return {"encoder_input_tokens": jnp.asarray(x), "decoder_input_tokens": jnp.asarray(dec_in),
            "decoder_target_tokens": jnp.asarray(y)}


def _ours(model, params, x, y):
    batch = _our_batch(x, y)
    logits = np.asarray(model.logits(params, batch))
    loss, _ = model.replace(z_loss=0.0).loss_fn(params, batch)
    return logits, float(loss)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_converted_logits_and_loss_match_hf(tmp_path, variant):
    d = _hf_dir(tmp_path, variant)
    hf = T5ForConditionalGeneration.from_pretrained(d).eval()
    if not VARIANTS[variant][1]:
        assert hf.lm_head.weight.data_ptr() != hf.shared.weight.data_ptr(), "HF must load the head untied"
    model, params = convert.import_hf(d)
    assert model.config.logits_via_embedding == VARIANTS[variant][1]
    x, y = _batch()
    hf_logits, hf_loss = _hf_outputs(hf, x, y)
    logits, loss = _ours(model, params, x, y)
    valid = y != 0  # HF computes logits at padded target positions too; only valid ones count
    assert np.abs(logits[valid] - hf_logits[valid]).max() < 1e-4
    assert abs(loss - hf_loss) < 1e-4


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradients_match_hf_backward(tmp_path, variant):
    """Every parameter's gradient of the loss against PyTorch autograd (covers the hand-written VJPs)."""
    d = _hf_dir(tmp_path, variant)
    hf = T5ForConditionalGeneration.from_pretrained(d).eval()
    model, params = convert.import_hf(d)
    x, y = _batch()
    hf(**_hf_inputs(x, y)).loss.backward()
    hf_grads = {name: p.grad.numpy() for name, p in hf.named_parameters()}
    batch = _our_batch(x, y)
    grads = jax.grad(lambda p: model.replace(z_loss=0.0).loss_fn(p, batch)[0])(params)
    ours = convert.t5_params_to_hf(grads, model.config)  # the converter's map is linear: grads map like params
    for name, g in ours.items():
        if name in hf_grads:  # HF lists a tied head once, as shared.weight
            scale = np.abs(hf_grads[name]).max()
            np.testing.assert_allclose(g, hf_grads[name], atol=1e-5 * max(scale, 1.0), err_msg=name)
    assert set(hf_grads) <= set(ours)


@pytest.mark.parametrize("variant", ["v1_0", "v1_1"])
def test_cli_round_trip_is_identity_and_loads_in_hf(tmp_path, variant, capsys):
    d = _hf_dir(tmp_path, variant)
    ckpt, back = tmp_path / "ckpt", tmp_path / "exported"
    assert cli.main(["convert", "--from_hf", str(d), "--to", str(ckpt)]) == 0
    assert (ckpt / "model.gin").is_file()
    assert cli.main(["convert", "--from", str(ckpt), "--to_hf", str(back)]) == 0
    original, exported = hf_io.read_state_dict(d), hf_io.read_state_dict(back)
    for key, value in exported.items():
        np.testing.assert_array_equal(value, original[key], err_msg=key)
    model, params = checkpoints.load_params(ckpt)
    model2, params2 = convert.import_hf(back)
    assert model2.config == model.config
    x, y = _batch()
    ref_logits, _ = _hf_outputs(T5ForConditionalGeneration.from_pretrained(d).eval(), x, y)
    hf_logits, _ = _hf_outputs(T5ForConditionalGeneration.from_pretrained(back).eval(), x, y)
    np.testing.assert_array_equal(ref_logits, hf_logits)
    assert json.loads((back / "config.json").read_text())["tie_word_embeddings"] == VARIANTS[variant][1]


def test_bad_directories_name_the_file_and_key(tmp_path, capsys):
    assert cli.main(["convert", "--from_hf", str(tmp_path / "nowhere"), "--to", str(tmp_path / "c")]) == 2
    assert "config.json" in capsys.readouterr().err
    d = _hf_dir(tmp_path, "v1_0")
    state = hf_io.read_state_dict(d)
    del state["encoder.block.1.layer.1.DenseReluDense.wo.weight"]
    hf_io.write_directory(d, hf_io.read_config(d), state)
    assert cli.main(["convert", "--from_hf", str(d), "--to", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "encoder.block.1.layer.1.DenseReluDense.wo.weight" in err and str(d) in err
    cfg = hf_io.read_config(d)
    cfg["d_ff"] = 65
    (d / "config.json").write_text(json.dumps(cfg))
    assert cli.main(["convert", "--from_hf", str(d), "--to", str(tmp_path / "c")]) == 2
    assert "shape" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
