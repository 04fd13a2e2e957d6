"""Params checkpoints: never written over a checkpoint or run, and a clear error for one that cannot load."""

import jax
import orbax.checkpoint as ocp
import pytest

from t5x_lite.models.config import T5Config
from t5x_lite.models.model import EncoderDecoderModel
from t5x_lite.training import checkpoints
from t5x_lite.training.checkpoints import CheckpointError

TINY = T5Config(vocab_size=40, d_model=8, d_ff=16, num_heads=2, d_kv=4, num_encoder_layers=1,
                num_decoder_layers=1, mlp_activations=("gelu", "linear"), logits_via_embedding=False,
                dropout_rate=0.0, relative_attention_num_buckets=4, relative_attention_max_distance=8)


@pytest.fixture(scope="module")
def tiny():
    model = EncoderDecoderModel(config=TINY)
    return model, model.init(jax.random.key(0), model.dummy_batch(1, {"inputs": 4, "targets": 4}))


@pytest.mark.parametrize("held", ["model.gin", "t5x_lite.json", "params", "checkpoints"])
def test_save_params_refuses_a_checkpoint_or_run_directory(tiny, tmp_path, held):
    run = tmp_path / "run"
    (run / "checkpoints" if held == "checkpoints" else run).mkdir(parents=True)
    if held != "checkpoints":
        (run / held).mkdir() if held == "params" else (run / held).write_text("kept\n")
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(CheckpointError, match=f"{run}: already holds {held}"):
        checkpoints.save_params(run, tiny[1], tiny[0])
    assert sorted(p.name for p in run.iterdir()) == before
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file, not a directory"):
        checkpoints.save_params(tmp_path / "file", tiny[1], tiny[0])


def test_save_params_writes_into_an_empty_directory(tiny, tmp_path):
    (tmp_path / "ckpt").mkdir()
    checkpoints.save_params(tmp_path / "ckpt", tiny[1], tiny[0])
    model, params = checkpoints.load_params(tmp_path / "ckpt")
    assert model.config == TINY
    jax.tree_util.tree_map(lambda a, b: (a == b).all() or pytest.fail("params differ"), params, tiny[1])


def test_damaged_params_is_a_checkpoint_error_naming_them(tiny, tmp_path):
    checkpoints.save_params(tmp_path / "ckpt", tiny[1], tiny[0])
    for f in (tmp_path / "ckpt" / "params" / "d").iterdir():
        f.write_bytes(b"junk!")
    with pytest.raises(CheckpointError, match="params: cannot restore"):
        checkpoints.load_params(tmp_path / "ckpt")


def _edit_gin(directory, old, new):
    gin = directory / checkpoints.MODEL_GIN
    assert old in gin.read_text()
    gin.write_text(gin.read_text().replace(old, new))


def test_model_gin_that_does_not_match_the_params_names_them(tiny, tmp_path):
    checkpoints.save_params(tmp_path / "ckpt", tiny[1], tiny[0])
    _edit_gin(tmp_path / "ckpt", "vocab_size = 40", "vocab_size = 48")
    message = r"model\.gin does not match the params in .*params \(decoder/logits_dense/kernel has shape \(8, 40\)"
    with pytest.raises(CheckpointError, match=message):
        checkpoints.load_params(tmp_path / "ckpt")


def test_training_checkpoint_that_does_not_match_model_gin_names_them(tiny, tmp_path):
    model, params = tiny
    run = tmp_path / "run"
    checkpoints.write_model_description(run, model)
    with ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(run / "checkpoints" / "3" / "state", {"params": params})
    assert checkpoints.load_params(run)[0].config == TINY
    _edit_gin(run, "d_ff = 16", "d_ff = 24")
    with pytest.raises(CheckpointError, match=r"model\.gin does not match .*3/state \(\S*mlp\S* has shape"):
        checkpoints.load_params(run)


def test_params_one_side_lacks_still_load(tmp_path):
    # What the BERT converter writes: an MLM wrapper keeping bert-base's pooler, a bare encoder without one.
    from t5x_lite.models.config import BertConfig
    from t5x_lite.models.model import EncoderOnlyMLMModel, EncoderOnlyModel

    cfg = BertConfig(vocab_size=40, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16,
                     max_position_embeddings=16)
    bare = EncoderOnlyModel(config=cfg)
    bare_params = bare.init(jax.random.key(0), bare.dummy_batch(1, {"inputs": 4}))
    mlm = EncoderOnlyMLMModel(config=cfg)
    mlm_params = mlm.init(jax.random.key(0), mlm.dummy_batch(1, {"inputs": 4}))
    assert "pooler" in bare_params["bert"] and "pooler" not in mlm_params["bert"]
    with_pooler = {**mlm_params, "bert": {**mlm_params["bert"], "pooler": bare_params["bert"]["pooler"]}}
    without_pooler = {**bare_params, "bert": {k: v for k, v in bare_params["bert"].items() if k != "pooler"}}
    for name, model, params in (("mlm", mlm, with_pooler), ("bare", bare, without_pooler)):
        checkpoints.save_params(tmp_path / name, params, model)
        assert checkpoints.load_params(tmp_path / name)[0].kind == model.kind


def test_model_gin_rebuilds_the_wrapper_settings_too(tmp_path, caplog):
    # A causal LM came back as a prefix LM (and eval fed it a prefix LM's features); loss options came back default.
    from t5x_lite.models.model import DecoderOnlyModel

    causal = DecoderOnlyModel(config=TINY.replace(num_encoder_layers=0), prefix_lm=False, z_loss=0.0,
                              label_smoothing=0.1, loss_normalizer=233.0)
    checkpoints.save_params(tmp_path / "lm", causal.init(jax.random.key(0), causal.dummy_batch(1, {"targets": 4})),
                            causal)
    assert checkpoints.load_model(tmp_path / "lm") == causal
    assert checkpoints.load_params(tmp_path / "lm")[0] == causal
    # a model.gin from before: the wrapper's lines missing, so the default (prefix LM) comes back, with a warning
    _edit_gin(tmp_path / "lm", "models.DecoderOnlyModel.prefix_lm = False\n", "")
    with caplog.at_level("WARNING"):
        assert checkpoints.load_model(tmp_path / "lm").prefix_lm is True
    assert "written before model.gin recorded prefix_lm; reading it as a prefix LM" in caplog.text
