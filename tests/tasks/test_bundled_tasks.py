"""The registered bundled tasks run through the real pipeline with the real vocabulary."""

from pathlib import Path

import numpy as np
import pytest

import t5x_lite.tasks  # noqa: F401  (registers the providers)
from t5x_lite import config
from t5x_lite.data.features import (
    DecoderOnlyFeatureConverter,
    EncDecFeatureConverter,
    EncoderOnlyFeatureConverter,
)
from t5x_lite.data.objectives import OBJECTIVE_NAMES
from t5x_lite.data.pipeline import get_dataset
from t5x_lite.data.tasks import DataError, TaskRegistry
from t5x_lite.tasks.bundled import postprocess_sentiment, vocabulary

LENGTHS = {"inputs": 64, "targets": 16}


def _first(task, converter, lengths=LENGTHS, split="validation", **kw):
    ds, stats = get_dataset(task, split=split, feature_lengths=lengths, batch_size=4, converter=converter,
                            seed=0, shard=(0, 1), **kw)
    return next(iter(ds)), stats


@pytest.mark.parametrize("objective", [o for o in OBJECTIVE_NAMES if o not in ("lm", "bert_mlm")])
def test_every_objective_task_feeds_the_encoder_decoder(objective):
    lengths = {"inputs": 64, "targets": 64}
    batch, _ = _first(f"bundled_corpus_{objective}", EncDecFeatureConverter(), lengths)
    assert batch["encoder_input_tokens"].shape == (4, 64)
    assert (batch["decoder_target_tokens"] == 1).sum() == 4  # one EOS per row


def test_span_corruption_inputs_fill_the_feature_length_exactly():
    batch, stats = _first("bundled_corpus_span_3_15_u_u", EncDecFeatureConverter(), {"inputs": 512, "targets": 114})
    assert (batch["encoder_input_tokens"] != 0).all()
    assert stats.as_dict()["truncated_tokens"] == {}


def test_lm_task_feeds_the_decoder_only_model():
    batch, _ = _first("bundled_corpus_lm", DecoderOnlyFeatureConverter(prefix_lm=False), {"targets": 32})
    assert batch["decoder_target_tokens"].shape == (4, 32)
    assert batch["decoder_loss_weights"].sum() == 4 * 32


def test_bert_mlm_task_feeds_the_encoder():
    batch, _ = _first("bundled_corpus_bert_mlm", EncoderOnlyFeatureConverter(), {"inputs": 32})
    assert batch["input_tokens"].shape == batch["mlm_targets"].shape == (4, 32)
    assert 0 < batch["mlm_weights"].sum() < 4 * 32
    assert (batch["input_tokens"] != 0).all()  # text in every position, none left as padding


def test_sentiment_text_to_text_and_classification():
    batch, _ = _first("bundled_sentiment", EncDecFeatureConverter(), split="test", shuffle=False, repeat=False)
    vocab = vocabulary()
    targets = [vocab.decode(r) for r in batch["decoder_target_tokens"]]
    assert set(targets) <= {"positive", "negative"}
    assert vocab.decode(batch["encoder_input_tokens"][0]).startswith("sentiment:")
    batch, _ = _first("bundled_sentiment_classification", EncoderOnlyFeatureConverter(classification=True),
                      split="test", shuffle=False, repeat=False)
    assert set(batch["labels"].tolist()) <= {0, 1}
    assert postprocess_sentiment("Positive ") == 1 and postprocess_sentiment("meh") == -1


def test_unknown_task_suggests_close_names():
    with pytest.raises(DataError, match="did you mean 'bundled_sentiment'"):
        TaskRegistry.get("bundled_sentimnet")


def test_every_objective_has_a_gin_file_and_task():
    files = {p.stem for p in (Path(config.GIN_CONFIGS) / "objectives").glob("*.gin")}
    assert files == set(OBJECTIVE_NAMES)
    for name in OBJECTIVE_NAMES:
        assert f"bundled_corpus_{name}" in TaskRegistry


def test_pipeline_decodes_back_to_corpus_text():
    batch, _ = _first("bundled_corpus_prefix_lm", EncDecFeatureConverter(), {"inputs": 64, "targets": 64})
    text = vocabulary().decode(batch["encoder_input_tokens"][0])
    assert len(text) > 20 and np.mean([c.isalpha() or c.isspace() for c in text]) > 0.6


def test_every_task_names_known_metrics():
    from t5x_lite.evaluation.metrics import METRICS

    for name in TaskRegistry.names():
        assert set(TaskRegistry.get(name).metric_names) <= set(METRICS), name
    assert TaskRegistry.get("glue_cola").metric_names == ("matthews_corrcoef",)
