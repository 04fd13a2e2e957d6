"""Fine-tuning each model kind on the bundled sentiment task: T5 text to text (see test_train_loop),
a BERT classification head on an MLM checkpoint, and a decoder-only LM (prefix or causal)."""

import json
import re

import jax
import numpy as np
import optax
import pytest

from t5x_lite.data.tasks import DataError
from t5x_lite.evaluation.evaluate import DecodeOptions, evaluate
from t5x_lite.models.config import BertConfig, T5Config
from t5x_lite.models.model import DecoderOnlyModel, EncoderOnlyClassificationModel, EncoderOnlyMLMModel
from t5x_lite.training import checkpoints
from t5x_lite.training.train import TrainingError, train

BERT = BertConfig(vocab_size=8000, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                  max_position_embeddings=64, dropout_rate=0.0, attention_dropout_rate=0.0)
DECODER = T5Config(vocab_size=8000, d_model=32, d_ff=48, num_heads=2, d_kv=16, num_encoder_layers=0,
                   num_decoder_layers=1, mlp_activations=("gelu", "linear"), logits_via_embedding=False,
                   dropout_rate=0.0, relative_attention_num_buckets=8, relative_attention_max_distance=16)


def _train(tmp, model, task, lengths, steps=2, **kw):
    return train(model=model, task=task, feature_lengths=lengths, batch_size=4, train_steps=steps,
                 model_dir=str(tmp), optimizer=optax.adamw(1e-3), checkpoint_every=steps, log_every=steps,
                 **{"progress": False, **kw})


def test_bert_classification_head_on_an_mlm_checkpoint(tmp_path, capsys):
    # another seed than the classifier's: its fresh init must not already equal the MLM weights
    _train(tmp_path / "mlm", EncoderOnlyMLMModel(config=BERT), "bundled_corpus_bert_mlm", {"inputs": 32}, seed=1)
    classifier = EncoderOnlyClassificationModel(config=BERT)
    with pytest.raises(TrainingError, match="missing.*init_checkpoint_allow_missing"):
        _train(tmp_path / "strict", classifier, "bundled_sentiment_classification", {"inputs": 32},
               init_checkpoint=str(tmp_path / "mlm"))
    _train(tmp_path / "cls", classifier, "bundled_sentiment_classification", {"inputs": 32}, progress=True,
           init_checkpoint=str(tmp_path / "mlm"), init_checkpoint_allow_missing=("classifier", "bert/pooler"))
    note = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("initialized from"))
    assert note.endswith("; new, from scratch: bert/pooler, classifier; not used from the checkpoint: mlm_bias, "
                         "mlm_dense, mlm_layer_norm"), note  # the MLM head is left behind, and the note says so
    _, mlm = checkpoints.load_params(tmp_path / "mlm")
    _, cls = checkpoints.load_params(tmp_path / "cls")
    # the encoder started from the MLM weights: after 2 small steps it is still close to them
    a, b = mlm["bert"]["word_embeddings"]["embedding"], cls["bert"]["word_embeddings"]["embedding"]
    assert np.abs(a - b).max() < 0.01
    metrics, rows = evaluate(model=classifier, params=cls, task="bundled_sentiment_classification",
                             feature_lengths={"inputs": 32}, batch_size=4, max_examples=8)
    assert metrics["num_examples"] == 8 and rows[0]["prediction"] in (0, 1)


@pytest.mark.parametrize("prefix_lm", [True, False], ids=["prefix_lm", "causal"])
def test_decoder_only_fine_tunes_and_decodes(tmp_path, prefix_lm):
    # A causal LM continues "sentiment: ..." under its causal mask, as it was trained (T5 paper Table 2's LM).
    model = DecoderOnlyModel(config=DECODER, prefix_lm=prefix_lm)
    lengths = {"inputs": 32, "targets": 4}
    result = _train(tmp_path, model, "bundled_sentiment", lengths)
    assert np.isfinite(result.metrics["loss"])
    _, params = checkpoints.load_params(tmp_path)
    metrics, rows = evaluate(model=model, params=jax.device_get(params), task="bundled_sentiment",
                             feature_lengths=lengths, batch_size=4, max_examples=4,
                             decode=DecodeOptions(max_decode_length=4))
    assert metrics["num_examples"] == 4 and "accuracy" in metrics
    assert rows[0]["inputs"].startswith("sentiment:") and rows[0]["targets"] in ("positive", "negative")


def test_an_eval_task_the_model_cannot_score_is_refused_before_training(tmp_path):
    from t5x_lite.errors import ConfigError

    mlm = EncoderOnlyMLMModel(config=BERT)
    with pytest.raises(ConfigError, match=r"train.eval_task: task 'bundled_sentiment' is scored by accuracy, f1, "
                                          r"which need predictions, and the model \(kind encoder_only_mlm\) cannot "
                                          r"decode"):
        _train(tmp_path, mlm, "bundled_corpus_bert_mlm", {"inputs": 16}, eval_task="bundled_sentiment", eval_every=1)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
    # an eval task whose objective the model cannot read: refused now, not at the first evaluation
    causal = DecoderOnlyModel(config=DECODER, prefix_lm=False)
    with pytest.raises(DataError, match=r"^train.eval_task: task 'bundled_corpus_bert_mlm': objective 'bert_mlm' "
                                        r"makes inputs, mlm_targets, mlm_weights, not the targets that a "
                                        r"decoder-only model reads: use an objective made for it \(lm with"):
        _train(tmp_path, causal, "bundled_sentiment", {"inputs": 32, "targets": 4},
               eval_task="bundled_corpus_bert_mlm", eval_every=1)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_decoder_only_model_fine_tuning_with_inputs_evaluates_on_the_lm_task(tmp_path, caplog):
    # The bundled LM task's inputs are optional: beside a task with inputs it is read as targets only.
    causal = DecoderOnlyModel(config=DECODER, prefix_lm=False)
    result = _train(tmp_path / "ft", causal, "bundled_sentiment", {"inputs": 32, "targets": 4},
                    eval_task="bundled_corpus_lm", eval_every=2, eval_max_examples=4)
    assert np.isfinite(result.metrics["eval_loss"]) and result.metrics["eval_num_examples"] == 4, result.metrics
    assert "padding" not in caplog.text
    # trained alone with an inputs length, every row would be half padding: refused, unless the eval_task needs it
    message = ("objective 'lm' makes no inputs, so the 16 'inputs' positions of every row it fills are padding: "
               "drop 'inputs' from TASK_FEATURE_LENGTHS if nothing else needs it")
    with pytest.raises(DataError, match=re.escape(message)):
        _train(tmp_path / "lm", causal, "bundled_corpus_lm", {"inputs": 16, "targets": 16})
    assert message not in caplog.text
    _train(tmp_path / "lm", causal, "bundled_corpus_lm", {"inputs": 16, "targets": 16},
           eval_task="bundled_sentiment", eval_every=2, eval_max_examples=4,
           eval_decode=DecodeOptions(max_decode_length=2))
    assert caplog.text.count(message) == 1


def test_the_bert_experiments_pretrain_then_fine_tune_through_the_cli(tmp_path, monkeypatch):
    # experiments/bert_pretrain.gin and bert_finetune_sentiment.gin with runs/pretrain_bert.gin and
    # finetune_bert.gin, shrunk to 2 steps: the MLM checkpoint restores into the classifier
    from t5x_lite import cli

    monkeypatch.chdir(tmp_path)
    small = ["--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=4", "--gin.TASK_FEATURE_LENGTHS={'inputs': 32}",
             "--gin.train.log_every=1", "--gin.train.checkpoint_every=2"]
    assert cli.main(["train", "--gin_file=experiments/bert_pretrain.gin", f"--gin.MODEL_DIR={tmp_path / 'mlm'}",
                     *small]) == 2  # its 30 warmup steps do not fit in 2: a one-line error, no traceback
    assert cli.main(["train", "--gin_file=experiments/bert_pretrain.gin", f"--gin.MODEL_DIR={tmp_path / 'mlm'}",
                     *small, "--gin.optimizers.make_schedule.warmup_steps=1", "--gin.train.seed=1"]) == 0
    assert cli.main(["train", "--gin_file=experiments/bert_finetune_sentiment.gin", *small,
                     f"--gin.INITIAL_CHECKPOINT={tmp_path / 'mlm'}", f"--gin.MODEL_DIR={tmp_path / 'cls'}",
                     "--gin.WARMUP_STEPS=1", "--gin.train.eval_every=2", "--gin.train.eval_max_examples=8"]) == 0
    model, cls = checkpoints.load_params(tmp_path / "cls")
    _, mlm = checkpoints.load_params(tmp_path / "mlm")
    assert isinstance(model, EncoderOnlyClassificationModel) and model.config.hidden_size == 128
    a, b = mlm["bert"]["word_embeddings"]["embedding"], cls["bert"]["word_embeddings"]["embedding"]
    assert np.abs(a - b).max() < 0.01  # started from the MLM weights (seed 1), 2 small steps ago
    logged = [json.loads(line) for line in (tmp_path / "cls" / "train" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/accuracy" in row for row in logged)
