"""HF BERT <-> t5x_lite: numerics against transformers, export/re-import identity, clear errors."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from t5x_lite.convert import hf_io  # noqa: E402
from t5x_lite.convert.bert import (  # noqa: E402
    BertConversionError,
    bert_config_from_hf,
    bert_config_to_hf,
    bert_params_from_hf,
    bert_params_to_hf,
    load_hf_bert,
    save_hf_bert,
)
from t5x_lite.models.bert import BertEncoder, BertForClassification, BertForMLM  # noqa: E402
from t5x_lite.models.stacking import stack_layer_params  # noqa: E402

HF_TINY = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=40, type_vocab_size=2, num_labels=3,
)
HF_CLASSES = {
    "base": transformers.BertModel,
    "mlm": transformers.BertForMaskedLM,
    "cls": transformers.BertForSequenceClassification,
}
# Keys HF writes that are not parameters of their own: tied copies and index buffers.
DERIVED = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias", "position_ids", "token_type_ids")


def _hf_model(kind, seed):
    torch.manual_seed(seed)
    model = HF_CLASSES[kind](transformers.BertConfig(**HF_TINY)).eval()
    with torch.no_grad():
        for p in model.parameters():  # LN and biases too; tied weights stay tied (shared Parameters)
            p.normal_(0.0, 0.2)
    return model


def _state(model):
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    lengths = np.array([12, 8, 5])
    real = np.arange(12)[None] < lengths[:, None]
    ids = np.where(real, rng.integers(1, HF_TINY["vocab_size"], (3, 12)), 0)
    types = (real & (np.arange(12)[None] >= lengths[:, None] // 2)).astype(np.int64)
    labels = np.where(real & (rng.random((3, 12)) < 0.5), ids, -100)
    return {"ids": ids, "mask": real.astype(np.int64), "types": types, "labels": labels}


@pytest.fixture(scope="module")
def hf():
    return {kind: _hf_model(kind, seed) for seed, kind in enumerate(HF_CLASSES)}


def _torch_out(model, batch, **kw):
    t = {k: torch.from_numpy(v) for k, v in batch.items()}
    with torch.no_grad():
        return model(input_ids=t["ids"], attention_mask=t["mask"], token_type_ids=t["types"], **kw)


def _jax(model_cls, cfg, params, batch, with_mask):
    mask = jnp.asarray(batch["mask"]) if with_mask else None
    fn = jax.jit(lambda p, ids, types, m: model_cls(cfg).apply({"params": p}, ids, types, attention_mask=m))
    return fn(params, jnp.asarray(batch["ids"]), jnp.asarray(batch["types"]), mask)


def test_mlm_logits_and_loss_match_hf(hf, batch):
    model = hf["mlm"]
    cfg, params = bert_params_from_hf(_state(model), model.config.to_dict())
    # No attention_mask: padding is derived from pad_id, as for HF when pads are pad_token_id.
    logits = np.asarray(_jax(BertForMLM, cfg, params, batch, with_mask=False))
    want = _torch_out(model, batch, labels=torch.from_numpy(batch["labels"]))
    assert logits.dtype == np.float32
    # Padding positions too: like HF, only padding keys are masked.
    assert np.abs(logits - want.logits.numpy()).max() < 1e-4
    valid = batch["labels"] != -100
    log_probs = jax.nn.log_softmax(logits)
    nll = -np.take_along_axis(np.asarray(log_probs), np.maximum(batch["labels"], 0)[..., None], -1)[..., 0]
    assert abs(nll[valid].mean() - want.loss.item()) < 1e-4


def test_classification_logits_match_hf(hf, batch):
    model = hf["cls"]
    cfg, params = bert_params_from_hf(_state(model), model.config.to_dict())
    assert cfg.num_labels == 3
    logits = np.asarray(_jax(BertForClassification, cfg, params, batch, with_mask=True))
    assert np.abs(logits - _torch_out(model, batch).logits.numpy()).max() < 1e-4


def test_bert_model_without_prefix_matches_hf(hf, batch):
    model = hf["base"]
    state = _state(model)
    assert not any(k.startswith("bert.") for k in state)
    cfg, params = bert_params_from_hf(state, model.config.to_dict())
    assert set(params) == {"bert"}
    seq, pooled = _jax(BertEncoder, cfg, params["bert"], batch, with_mask=True)
    want = _torch_out(model, batch)
    assert np.abs(np.asarray(seq) - want.last_hidden_state.numpy()).max() < 1e-4
    assert np.abs(np.asarray(pooled) - want.pooler_output.numpy()).max() < 1e-4


@pytest.mark.parametrize("kind", sorted(HF_CLASSES))
def test_export_then_import_is_identity(hf, kind):
    model = hf[kind]
    state = _state(model)
    cfg, params = bert_params_from_hf(state, model.config.to_dict())
    exported = bert_params_to_hf(params, cfg)
    assert set(exported) == {k for k in state if not k.endswith(DERIVED)}
    for k, v in exported.items():
        np.testing.assert_array_equal(v, state[k], err_msg=k)
    cfg2, params2 = bert_params_from_hf(exported, bert_config_to_hf(cfg))
    assert cfg2 == cfg
    assert jax.tree_util.tree_structure(params2) == jax.tree_util.tree_structure(params)
    jax.tree_util.tree_map(np.testing.assert_array_equal, params2, params)
    # Scan layout exports to the same tensors.
    stacked = bert_params_to_hf(stack_layer_params(params), cfg)
    jax.tree_util.tree_map(np.testing.assert_array_equal, stacked, exported)


@pytest.mark.parametrize("kind", ["mlm", "cls"])
def test_exported_directory_loads_in_hf(hf, batch, kind, tmp_path):
    model = hf[kind]
    cfg, params = bert_params_from_hf(_state(model), model.config.to_dict())
    save_hf_bert(tmp_path, params, cfg)
    reloaded, info = HF_CLASSES[kind].from_pretrained(str(tmp_path), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    got = _torch_out(reloaded.eval(), batch).logits.numpy()
    np.testing.assert_allclose(got, _torch_out(model, batch).logits.numpy(), atol=1e-6, rtol=0)
    cfg2, params2 = load_hf_bert(tmp_path)
    assert cfg2 == cfg
    jax.tree_util.tree_map(np.testing.assert_array_equal, params2, params)


def test_config_round_trip_and_overrides(hf):
    cfg = bert_config_from_hf(hf["mlm"].config.to_dict(), scan_layers=True, dtype="bfloat16")
    assert cfg.hidden_act == "gelu_exact" and cfg.scan_layers and cfg.dtype == "bfloat16"
    assert bert_config_from_hf(bert_config_to_hf(cfg), scan_layers=True, dtype="bfloat16") == cfg
    with pytest.raises(BertConversionError, match="position_embedding_type"):
        bert_config_from_hf({**HF_TINY, "position_embedding_type": "relative_key"})
    with pytest.raises(BertConversionError, match="hidden_act 'mish'"):
        bert_config_from_hf({**HF_TINY, "hidden_act": "mish"})


def test_class_names_survive_import_export_and_model_gin(tmp_path):
    from t5x_lite import convert
    from t5x_lite.training import checkpoints

    names = {0: "negative", 1: "neutral", 2: "positive"}
    torch.manual_seed(0)
    hf_model = transformers.BertForSequenceClassification(transformers.BertConfig(**{**HF_TINY, "id2label": names}))
    hf_model.save_pretrained(tmp_path / "hf")
    model, params = convert.import_hf(tmp_path / "hf")
    assert model.config.label_names == ("negative", "neutral", "positive")
    checkpoints.save_params(tmp_path / "ckpt", params, model)  # model.gin keeps them
    model, params = checkpoints.load_params(tmp_path / "ckpt")
    convert.export_hf(model, params, tmp_path / "back")
    back = transformers.AutoConfig.from_pretrained(tmp_path / "back")
    assert back.id2label == names and back.label2id == {v: k for k, v in names.items()}
    # HF's default names stay implicit; names that cannot be the classes' are left out
    assert bert_config_from_hf({**HF_TINY, "id2label": {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}}
                               ).label_names is None
    for unusable in ({"0": "a", "1": "b", "5": "c"}, {"0": "a", "1": "a", "2": "b"}, {"x": "a", "1": "b", "2": "c"}):
        assert bert_config_from_hf({**HF_TINY, "id2label": unusable}).label_names is None  # not needed: dropped
    assert bert_config_from_hf({**HF_TINY, "id2label": names}, num_labels=2).label_names is None


def test_errors_name_the_key_and_file(hf, tmp_path):
    model = hf["mlm"]
    config = model.config.to_dict()
    state = _state(model)

    missing = dict(state)
    del missing["bert.encoder.layer.1.output.dense.bias"]
    hf_io.write_directory(tmp_path, config, missing)
    message = r"model\.safetensors: missing key 'bert\.encoder\.layer\.1\.output\.dense\.bias'"
    with pytest.raises(BertConversionError, match=message):
        load_hf_bert(tmp_path)

    bad_shape = {**state, "cls.predictions.bias": state["cls.predictions.bias"][:-1]}
    with pytest.raises(BertConversionError, match=r"ckpt\.bin: key 'cls\.predictions\.bias' has shape \(98,\)"):
        bert_params_from_hf(bad_shape, config, source="ckpt.bin")

    extra = {**state, "bert.encoder.layer.2.output.dense.bias": np.zeros(32, np.float32)}
    message = r"unexpected key\(s\) 'bert\.encoder\.layer\.2\.output\.dense\.bias'"
    with pytest.raises(BertConversionError, match=message):
        bert_params_from_hf(extra, config)

    untied = {**state, "cls.predictions.decoder.weight": state["cls.predictions.decoder.weight"] + 1}
    with pytest.raises(BertConversionError, match="untied"):
        bert_params_from_hf(untied, config)


def test_accepts_tf_style_names_and_drops_nsp_head(hf):
    model = hf["mlm"]
    state = _state(model)
    _, params = bert_params_from_hf(state, model.config.to_dict())
    renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
               for k, v in state.items()}
    renamed["cls.seq_relationship.weight"] = np.zeros((2, 32), np.float32)
    with pytest.warns(UserWarning, match="next-sentence"):
        _, params2 = bert_params_from_hf(renamed, model.config.to_dict())
    jax.tree_util.tree_map(np.testing.assert_array_equal, params2, params)


def test_a_bare_encoder_saved_without_a_pooler_imports_runs_and_keeps_its_architecture(batch, tmp_path):
    from t5x_lite.convert import export_hf, import_hf
    from t5x_lite.training import checkpoints

    torch.manual_seed(5)
    model = transformers.BertModel(transformers.BertConfig(**HF_TINY), add_pooling_layer=False).eval()
    model.save_pretrained(tmp_path / "hf")
    wrapper, params = import_hf(tmp_path / "hf")
    assert wrapper.kind == "encoder_only" and wrapper.pooler is False and "pooler" not in params["bert"]
    checkpoints.save_params(tmp_path / "ours", params, wrapper)
    wrapper, params = checkpoints.load_params(tmp_path / "ours")  # model.gin keeps pooler=False
    assert wrapper.pooler is False
    hidden = wrapper.logits(params, {"input_tokens": jnp.asarray(batch["ids"]),
                                     "token_type_ids": jnp.asarray(batch["types"])})
    want = _torch_out(model, {**batch, "mask": (batch["ids"] != 0).astype(np.int64)}).last_hidden_state.numpy()
    real = batch["mask"].astype(bool)
    assert np.abs(np.asarray(hidden)[real] - want[real]).max() < 1e-4
    export_hf(wrapper, params, tmp_path / "back")
    assert hf_io.read_config(tmp_path / "back")["architectures"] == ["BertModel"]
    # converted before model.gin recorded `pooler`: the params say there is none
    gin = tmp_path / "ours" / "model.gin"
    gin.write_text(gin.read_text().replace("models.EncoderOnlyModel.pooler = False\n", ""))
    wrapper, params = checkpoints.load_params(tmp_path / "ours")
    assert wrapper.pooler is False
    wrapper.logits(params, {"input_tokens": jnp.asarray(batch["ids"])})


def test_heads_and_settings_that_would_be_silently_wrong_are_refused(hf, tmp_path):
    from t5x_lite.convert import import_hf
    from t5x_lite.models.model import EncoderOnlyClassificationModel

    torch.manual_seed(0)
    tagger = transformers.BertForTokenClassification(transformers.BertConfig(**HF_TINY)).eval()
    tagger.save_pretrained(tmp_path / "tagger")
    with pytest.raises(BertConversionError, match=r"architectures \['BertForTokenClassification'\] is not "
                                                  r"supported"):
        import_hf(tmp_path / "tagger")
    config = tagger.config.to_dict()
    del config["architectures"]  # the keys alone still say it: a classifier without a pooler
    with pytest.raises(BertConversionError, match=r"src: 'classifier\.\*' without 'bert\.pooler\.\*' is a "
                                                  r"per-token head"):
        bert_params_from_hf(_state(tagger), config, source="src")
    # a head is trained as HF trains it: softmax over >= 2 classes, or regression with one label (the next test);
    # multi-label and multi-output regression heads are refused
    for change, message in [(dict(problem_type="multi_label_classification"),
                             "problem_type 'multi_label_classification' with num_labels=3 is not supported"),
                            (dict(problem_type="regression"), "problem_type 'regression' with num_labels=3"),
                            (dict(num_labels=1, problem_type="single_label_classification"),
                             "problem_type 'single_label_classification' with num_labels=1")]:
        with pytest.raises(BertConversionError, match=r"^src: " + message):
            bert_params_from_hf(_state(hf["cls"]), {**hf["cls"].config.to_dict(), **change}, source="src")
    # ... while a bare encoder's config may say one label (embedding models ship id2label={"0": "LABEL_0"})
    cfg, _ = bert_params_from_hf(_state(hf["base"]), {**hf["base"].config.to_dict(), "num_labels": 1})
    assert cfg.num_labels == 1
    assert EncoderOnlyClassificationModel(config=cfg).regression  # a head on it with one label: HF's regression
    for change, message in [(dict(type_vocab_size=0), "type_vocab_size must be >= 1, got 0"),
                            (dict(classifier_dropout="x"), "classifier_dropout_rate must be a float or None")]:
        with pytest.raises(BertConversionError, match=r"^cfg\.json: .*" + message):
            bert_config_from_hf({**HF_TINY, **change}, source="cfg.json")


@pytest.mark.parametrize("kind,architecture", [("mlm", "BertForMaskedLM"), ("cls", "BertForSequenceClassification")])
def test_export_names_the_hf_class(hf, kind, architecture, tmp_path):
    from t5x_lite.convert import export_hf, import_hf

    hf[kind].save_pretrained(tmp_path / "hf")
    wrapper, params = import_hf(tmp_path / "hf")
    export_hf(wrapper, params, tmp_path / "back")
    assert hf_io.read_config(tmp_path / "back")["architectures"] == [architecture]


def test_regression_head_matches_hf_and_exports_as_one(batch, tmp_path):
    # HF's num_labels=1 head: MSE on the pooled output's one value (STS-B, cross-encoder rerankers)
    from t5x_lite.models.model import EncoderOnlyClassificationModel

    torch.manual_seed(3)
    model = transformers.BertForSequenceClassification(transformers.BertConfig(**{**HF_TINY, "num_labels": 1}))
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    labels = np.array([0.4, 3.2, 4.8], np.float32)
    want = _torch_out(model, batch, labels=torch.from_numpy(labels))
    assert model.config.problem_type == "regression"  # what HF inferred from one label and float labels
    cfg, params = bert_params_from_hf(_state(model), model.config.to_dict())
    wrapper = EncoderOnlyClassificationModel(config=cfg)
    assert wrapper.regression
    features = {"input_tokens": jnp.asarray(batch["ids"]), "token_type_ids": jnp.asarray(batch["types"]),
                "labels": jnp.asarray(labels)}
    logits = np.asarray(wrapper.logits(params, features))
    assert logits.shape == (3, 1) and np.abs(logits - want.logits.numpy()).max() < 1e-4
    loss, metrics = wrapper.loss_fn(params, features)
    assert abs(float(loss) - want.loss.item()) < 1e-4 * max(1.0, want.loss.item())
    assert float(metrics["num_tokens"]) == 3
    save_hf_bert(tmp_path, params, cfg)
    reloaded = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path)).eval()
    assert reloaded.config.problem_type == "regression" and reloaded.config.num_labels == 1
    np.testing.assert_allclose(_torch_out(reloaded, batch).logits.numpy(), want.logits.numpy(), atol=1e-6)
