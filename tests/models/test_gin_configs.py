"""Every gin model config parses, and published sizes equal the published configs."""

from pathlib import Path

import jax
import numpy as np
import pytest

from t5x_lite import config

MODELS = Path(config.GIN_CONFIGS) / "models"

# (d_model, d_ff, d_kv, heads, encoder layers, decoder layers, vocab) from the papers / HF config.json files.
T5_SIZES = {
    "t5_1_0/small": (512, 2048, 64, 8, 6, 6, 32128),
    "t5_1_0/base": (768, 3072, 64, 12, 12, 12, 32128),
    "t5_1_0/large": (1024, 4096, 64, 16, 24, 24, 32128),
    "t5_1_0/3B": (1024, 16384, 128, 32, 24, 24, 32128),
    "t5_1_0/11B": (1024, 65536, 128, 128, 24, 24, 32128),
    "t5_1_1/small": (512, 1024, 64, 6, 8, 8, 32128),
    "t5_1_1/base": (768, 2048, 64, 12, 12, 12, 32128),
    "t5_1_1/large": (1024, 2816, 64, 16, 24, 24, 32128),
    "t5_1_1/xl": (2048, 5120, 64, 32, 24, 24, 32128),
    "t5_1_1/xxl": (4096, 10240, 64, 64, 24, 24, 32128),
    "mt5/small": (512, 1024, 64, 6, 8, 8, 250112),
    "mt5/base": (768, 2048, 64, 12, 12, 12, 250112),
    "mt5/large": (1024, 2816, 64, 16, 24, 24, 250112),
    "mt5/xl": (2048, 5120, 64, 32, 24, 24, 250112),
    "mt5/xxl": (4096, 10240, 64, 64, 24, 24, 250112),
    "ul2/20B": (4096, 16384, 256, 16, 32, 32, 32128),
}
# (layers, hidden, heads, intermediate) for BERT; vocab 30522, 512 positions, 2 token types.
BERT_SIZES = {"tiny": (2, 128, 2, 512), "mini": (4, 256, 4, 1024), "small": (4, 512, 8, 2048),
              "medium": (8, 512, 8, 2048), "base": (12, 768, 12, 3072), "large": (24, 1024, 16, 4096)}


def _all_size_files():
    return sorted(str(p.relative_to(config.GIN_CONFIGS)) for p in MODELS.rglob("*.gin")
                  if p.name != "architecture.gin")


@pytest.mark.parametrize("gin_file", _all_size_files())
def test_every_model_file_builds(gin_file):
    model = config.model_from_gin([gin_file])
    assert model.config is not None


@pytest.mark.parametrize("name", sorted(T5_SIZES))
def test_t5_sizes_match_published(name):
    cfg = config.model_from_gin([f"models/{name}.gin"]).config
    got = (cfg.d_model, cfg.d_ff, cfg.d_kv, cfg.num_heads, cfg.num_encoder_layers, cfg.num_decoder_layers,
           cfg.vocab_size)
    assert got == T5_SIZES[name]
    family = name.split("/")[0]
    assert cfg.logits_via_embedding == (family == "t5_1_0")
    expected_mlp = {"t5_1_0": ("relu",), "ul2": ("silu", "linear")}.get(family, ("gelu", "linear"))
    assert cfg.mlp_activations == expected_mlp


@pytest.mark.parametrize("name", sorted(BERT_SIZES))
def test_bert_sizes_match_published(name):
    cfg = config.model_from_gin([f"models/bert/{name}.gin"]).config
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.intermediate_size) == BERT_SIZES[name]
    assert (cfg.vocab_size, cfg.max_position_embeddings, cfg.type_vocab_size) == (30522, 512, 2)


def _count(model, lengths):
    abstract = model.abstract_params(model.dummy_batch(1, lengths))
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(abstract)))


def test_parameter_counts_match_published():
    # T5 1.1 small (untied head) has exactly 76,961,152 parameters; T5 1.0 small (t5-small) 60,506,624.
    assert _count(config.model_from_gin(["models/t5_1_1/small.gin"]), {"inputs": 4, "targets": 4}) == 76_961_152
    assert _count(config.model_from_gin(["models/t5_1_0/small.gin"]), {"inputs": 4, "targets": 4}) == 60_506_624


def test_size_file_overrides_only_the_config():
    for path in MODELS.rglob("*.gin"):
        if path.name == "architecture.gin":
            continue
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith("include"):
                assert line.startswith(("models.T5Config.", "models.BertConfig.")), f"{path}: {line}"


@pytest.mark.parametrize("wrapper", ["EncoderOnlyClassificationModel", "EncoderOnlyModel"])
def test_a_bert_size_file_sizes_whichever_wrapper_model_picks(wrapper):
    # fine-tuning switches MODEL; the size file's BertConfig must hold for that wrapper too (it got BERT-base)
    model = config.model_from_gin(["models/bert/tiny.gin"], [f"MODEL = @models.{wrapper}()"])
    assert type(model).__name__ == wrapper
    assert (model.config.num_layers, model.config.hidden_size) == BERT_SIZES["tiny"][:2]
