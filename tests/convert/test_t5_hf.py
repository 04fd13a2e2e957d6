"""T5 v1.0 / v1.1 against Hugging Face transformers (PyTorch, CPU, float32)."""

import json
from pathlib import Path

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
    (d / "model.safetensors").unlink()  # write_directory never writes over a model
    (d / "config.json").rename(tmp_path / "config.json")
    hf_io.write_directory(d, hf_io.read_config(tmp_path), state)
    assert cli.main(["convert", "--from_hf", str(d), "--to", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "encoder.block.1.layer.1.DenseReluDense.wo.weight" in err and str(d) in err
    cfg = hf_io.read_config(d)
    cfg["d_ff"] = 65
    (d / "config.json").write_text(json.dumps(cfg))
    assert cli.main(["convert", "--from_hf", str(d), "--to", str(tmp_path / "c")]) == 2
    assert "shape" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def _convert(*flags):
    return cli.main(["convert", *map(str, flags)])


def test_import_refuses_a_run_directory_before_any_work(tmp_path, capsys, monkeypatch):
    d = _hf_dir(tmp_path, "v1_0")
    run = tmp_path / "run"
    (run / "checkpoints" / "2").mkdir(parents=True)
    for name in ("model.gin", "t5x_lite.json"):
        (run / name).write_text(f"{name} of the run\n")
    monkeypatch.setattr(convert, "import_hf", lambda *a: pytest.fail("imported before checking --to"))
    assert _convert("--from_hf", d, "--to", run) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"t5x_lite convert: error: {run}: already holds model.gin") and err.count("\n") == 1
    assert (run / "model.gin").read_text() == "model.gin of the run\n" and not (run / "params").exists()
    (tmp_path / "file").write_text("x")
    assert _convert("--from_hf", d, "--to", tmp_path / "file") == 2
    assert "file: is a file, not a directory" in capsys.readouterr().err
    assert _convert("--from_hf", d, "--to", f"{d}/.") == 2  # the same directory, however spelled
    assert "is the Hugging Face directory itself; give another directory" in capsys.readouterr().err
    assert not (Path(d) / "params").exists()


def test_export_refuses_a_directory_holding_a_model(tmp_path, capsys):
    d = _hf_dir(tmp_path, "v1_0")
    assert _convert("--from_hf", d, "--to", tmp_path / "ckpt") == 0
    taken = tmp_path / "taken"
    taken.mkdir()
    for name in ("config.json", "pytorch_model.bin", "model-00001-of-00002.safetensors", "model.bin.index.json"):
        (taken / name).write_text("kept")
        assert _convert("--from", tmp_path / "ckpt", "--to_hf", taken) == 2
        assert f"{taken}: already holds a model ({name}" in capsys.readouterr().err
        assert (taken / name).read_text() == "kept"
        (taken / name).unlink()
    (taken / "README.md").write_text("not a model")
    assert _convert("--from", tmp_path / "ckpt", "--to_hf", taken) == 0
    assert _convert("--from", tmp_path / "ckpt", "--to_hf", taken) == 2
    assert "already holds a model (config.json, model.safetensors)" in capsys.readouterr().err
    assert _convert("--from", tmp_path / "ckpt", "--to_hf", taken / "README.md") == 2
    assert "README.md: is a file, not a directory" in capsys.readouterr().err
    # nor into a t5x_lite checkpoint, run or run step: its own source included
    step = tmp_path / "run" / "checkpoints" / "300"
    step.mkdir(parents=True)
    (tmp_path / "run" / "model.gin").write_text("# the run's\n")
    for target, message in [(tmp_path / "ckpt", "already holds model.gin, t5x_lite.json, params"),
                            (step, "is a step of a training run")]:
        assert _convert("--from", tmp_path / "ckpt", "--to_hf", target) == 2
        assert message in capsys.readouterr().err
        assert not (target / "config.json").exists()
    # a new directory that only looks like a step by its name is fine
    assert _convert("--from", tmp_path / "ckpt", "--to_hf", tmp_path / "exports" / "checkpoints" / "2024") == 0


def test_flags_that_do_not_apply_are_rejected(tmp_path, capsys):
    assert _convert("--from_hf", tmp_path / "hf", "--to", tmp_path / "a", "--to_hf", tmp_path / "b") == 2
    assert "give --to CKPT_DIR, not --to_hf" in capsys.readouterr().err
    assert _convert("--from", tmp_path / "ckpt", "--to", tmp_path / "a", "--to_hf", tmp_path / "b") == 2
    assert "give --to_hf DIR, not --to" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("num_layers"), "config.json: missing key 'num_layers'"),
    (lambda c: c.update(d_model="abc"), "config.json: d_model='abc' is not an integer"),
    (lambda c: c.update(d_kv=7.5), "config.json: d_kv=7.5 is not an integer"),
    (lambda c: c.update(dropout_rate=[0.1]), r"config.json: dropout_rate=[0.1] is not a number"),
    (lambda c: c.update(tie_word_embeddings="false"),
     "config.json: tie_word_embeddings='false' is not true, false or null"),
])
def test_bad_config_values_name_the_file_and_key(tmp_path, capsys, change, message):
    d = _hf_dir(tmp_path, "v1_1")
    cfg = hf_io.read_config(d)
    change(cfg)
    (d / "config.json").write_text(json.dumps(cfg))
    assert _convert("--from_hf", d, "--to", tmp_path / "c") == 2
    assert capsys.readouterr().err.strip() == f"t5x_lite convert: error: {d / message}"
    assert not (tmp_path / "c").exists()


def test_unreadable_config_or_index_names_the_file(tmp_path, capsys):
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text(json.dumps([{"model_type": "t5"}]))
    assert _convert("--from_hf", d, "--to", tmp_path / "c") == 2
    assert f"{d / 'config.json'}: expected a JSON object of settings, got a list" in capsys.readouterr().err
    (d / "config.json").write_text(json.dumps({"model_type": "t5"}))
    for index, problem in (("{not json", "invalid JSON at line 1"), ('{"weight_map": []}', "no 'weight_map'"),
                           ('{"weight_map": {"a": "../x.safetensors"}}', "'weight_map' names '../x.safetensors'")):
        (d / "model.safetensors.index.json").write_text(index)
        assert _convert("--from_hf", d, "--to", tmp_path / "c") == 2
        assert f"{d / 'model.safetensors.index.json'}: {problem}" in capsys.readouterr().err


def test_unsupported_model_type_is_named_before_the_weights(tmp_path, capsys):
    d = tmp_path / "gpt"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))  # and no weights
    assert _convert("--from_hf", d, "--to", tmp_path / "c") == 2
    assert "model_type='gpt2' is not supported (supported: t5, mt5, bert)" in capsys.readouterr().err


def test_a_null_tie_word_embeddings_means_tied_as_in_transformers(tmp_path):
    from transformers import T5Config as HFConfig

    from t5x_lite.convert.t5 import t5_config_from_hf

    cfg = hf_io.read_config(_hf_dir(tmp_path, "v1_0"))
    cfg["tie_word_embeddings"] = None
    (tmp_path / "null").mkdir()
    (tmp_path / "null" / "config.json").write_text(json.dumps(cfg))
    assert HFConfig.from_pretrained(tmp_path / "null").tie_word_embeddings is True
    assert t5_config_from_hf(cfg, "config.json").logits_via_embedding is True
