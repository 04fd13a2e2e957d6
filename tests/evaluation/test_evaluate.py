"""eval / infer end to end: from our params checkpoint and from a converted Hugging Face directory."""

import json

import jax
import numpy as np
import pytest
import torch
from transformers import T5Config as HFT5Config
from transformers import T5ForConditionalGeneration

from t5x_lite import cli
from t5x_lite.convert import hf_io
from t5x_lite.models.config import T5Config
from t5x_lite.models.model import EncoderDecoderModel
from t5x_lite.training import checkpoints

TINY = T5Config(vocab_size=8000, d_model=32, d_ff=48, num_heads=2, d_kv=16, num_encoder_layers=1,
                num_decoder_layers=1, mlp_activations=("gelu", "linear"), logits_via_embedding=False,
                dropout_rate=0.0, relative_attention_num_buckets=8, relative_attention_max_distance=16)
FLAGS = ["--gin.TASK=bundled_sentiment", "--gin.TASK_FEATURE_LENGTHS={'inputs': 48, 'targets': 4}",
         "--gin.evaluate_checkpoint.max_examples=12", "--gin.evaluation.DecodeOptions.max_decode_length=4"]


def _our_checkpoint(path):
    model = EncoderDecoderModel(config=TINY)
    params = model.init(jax.random.key(0), model.dummy_batch(1, {"inputs": 8, "targets": 4}))
    checkpoints.save_params(path, params, model)
    return path


def test_eval_and_infer_from_our_checkpoint(tmp_path, capsys):
    ckpt = _our_checkpoint(tmp_path / "ckpt")
    assert cli.main(["eval", "--gin_file=runs/eval.gin", f"--gin.CHECKPOINT={ckpt}", *FLAGS,
                     "--gin.evaluate_checkpoint.split=test"]) == 0
    metrics = json.loads((ckpt / "eval" / "metrics-bundled_sentiment-test.json").read_text())
    assert metrics["num_examples"] == 12 and 0 <= metrics["accuracy"] <= 100 and np.isfinite(metrics["loss"])
    # an untrained model writes neither label: those predictions count as invalid, not as a crash
    assert metrics["invalid_predictions"] >= 0
    rows = [json.loads(x) for x in (ckpt / "eval" / "predictions-bundled_sentiment-test.jsonl").read_text()
            .splitlines()]
    assert len(rows) == 12 and rows[0]["inputs"].startswith("sentiment:")
    assert rows[0]["targets"] in ("positive", "negative")

    flags = [f.replace("evaluate_checkpoint", "infer_checkpoint") for f in FLAGS]
    assert cli.main(["infer", "--score", "--gin_file=runs/infer.gin", f"--gin.CHECKPOINT={ckpt}", *flags]) == 0
    scores = [json.loads(x) for x in (ckpt / "infer" / "scores-bundled_sentiment-validation.jsonl").read_text()
              .splitlines()]
    assert len(scores) == 12 and all(s["score"] < 0 for s in scores)
    np.testing.assert_allclose(scores[0]["score"], sum(scores[0]["token_scores"]), rtol=1e-5)
    assert "wrote 12 scores" in capsys.readouterr().out


def test_eval_from_a_converted_hf_directory(tmp_path):
    torch.manual_seed(0)
    hf_cfg = HFT5Config(vocab_size=8000, d_model=32, d_ff=48, d_kv=16, num_heads=2, num_layers=1,
                        feed_forward_proj="gated-gelu", decoder_start_token_id=0, tie_word_embeddings=False)
    hf = T5ForConditionalGeneration(hf_cfg).eval()
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    state["lm_head.weight"] = np.random.default_rng(0).normal(0, 0.2, (8000, 32)).astype(np.float32)
    config = hf_cfg.to_dict()
    config["tie_word_embeddings"] = False
    hf_io.write_directory(tmp_path / "hf", config, state)
    assert cli.main(["convert", "--from_hf", str(tmp_path / "hf"), "--to", str(tmp_path / "ckpt")]) == 0
    assert cli.main(["eval", "--gin_file=runs/eval.gin", f"--gin.CHECKPOINT={tmp_path / 'ckpt'}", *FLAGS]) == 0
    metrics = json.loads((tmp_path / "ckpt" / "eval" / "metrics-bundled_sentiment-validation.json").read_text())
    assert metrics["num_examples"] == 12


def test_records_a_preprocessor_drops_are_left_out_with_a_warning(caplog):
    from t5x_lite.data.features import EncDecFeatureConverter, Feature
    from t5x_lite.data.sources import DataError
    from t5x_lite.data.tasks import Task
    from t5x_lite.evaluation.evaluate import _eval_batches
    from t5x_lite.tasks.bundled import vocabulary

    class Records(list):
        description = "mem.jsonl"

        def origin(self, i):
            return f"mem.jsonl:{i + 1}"

    def task(keep):
        return Task(name="mem_labels", source=lambda split: Records({"q": f"q {i}", "label": i} for i in range(10)),
                    preprocessors=(lambda ex: {"inputs": ex["q"], "targets": "yes"} if keep(ex["label"]) else None,),
                    output_features={"inputs": Feature(vocabulary()), "targets": Feature(vocabulary())})

    kwargs = dict(split="test", feature_lengths={"inputs": 8, "targets": 4}, batch_size=4,
                  converter=EncDecFeatureConverter(), max_examples=None)
    with caplog.at_level("WARNING"):
        assert sum(n for _, n in _eval_batches(task(lambda label: label < 7), **kwargs)) == 7
    assert "task 'mem_labels' split 'test': its preprocessors dropped 3 of the records read" in caplog.text
    with pytest.raises(DataError, match="dropped every one of the 10 records read"):
        list(_eval_batches(task(lambda label: False), **kwargs))


def _tiny_params(model):
    return model.init(jax.random.key(0), model.dummy_batch(1, {"inputs": 8, "targets": 4}))


def test_metrics_score_against_the_target_text_not_its_truncated_tokens(caplog):
    from t5x_lite.data.features import Feature
    from t5x_lite.data.tasks import Task
    from t5x_lite.evaluation.evaluate import DecodeOptions, predict
    from t5x_lite.tasks.bundled import vocabulary

    class Records(list):
        description = "mem.jsonl"

        def origin(self, i):
            return f"mem.jsonl:{i + 1}"

    target = "Die Größe des Hauses überrascht, sagte François… ½"  # long, and NFKC rewrites … and ½
    records = Records([{"inputs": "translate: the size", "targets": target}] * 20)
    task = Task(name="mem_translate", source=lambda split: records,
                output_features={"inputs": Feature(vocabulary()), "targets": Feature(vocabulary())})
    model = EncoderDecoderModel(config=TINY)
    with caplog.at_level("WARNING"):
        rows = predict(model=model, params=_tiny_params(model), task=task,
                       feature_lengths={"inputs": 8, "targets": 4}, batch_size=2, max_examples=3,
                       decode=DecodeOptions(method="greedy", max_decode_length=3))
    assert len(rows) == 3 and rows[0]["targets"] == target
    # counted over the examples evaluated, though grain read ahead of max_examples
    assert "task 'mem_translate' split 'validation': 'targets' was cut to its feature length in 3 of the 3 " \
           "examples evaluated" in caplog.text


def test_validation_loss_is_per_token_whatever_the_normalizer_and_batch_size():
    from t5x_lite.evaluation.evaluate import validation_loss

    model = EncoderDecoderModel(config=TINY)
    params = _tiny_params(model)
    kw = dict(params=params, task="bundled_sentiment", feature_lengths={"inputs": 16, "targets": 4}, max_examples=10)
    plain = validation_loss(model=model, batch_size=10, **kw)
    fixed = model.replace(loss_normalizer=1000.0)
    for batch_size in (10, 4, 3):
        np.testing.assert_allclose(validation_loss(model=fixed, batch_size=batch_size, **kw), plain, rtol=1e-5)


def test_evaluate_reads_the_split_once_for_predictions_and_loss(monkeypatch):
    from t5x_lite.data import pipeline
    from t5x_lite.evaluation.evaluate import DecodeOptions, evaluate, validation_loss

    model = EncoderDecoderModel(config=TINY)
    kw = dict(model=model, params=_tiny_params(model), task="bundled_sentiment",
              feature_lengths={"inputs": 16, "targets": 4}, batch_size=4, max_examples=10)
    alone = validation_loss(**kw)
    reads = []
    real = pipeline.get_dataset
    monkeypatch.setattr(pipeline, "get_dataset", lambda *a, **k: reads.append(1) or real(*a, **k))
    metrics, rows = evaluate(decode=DecodeOptions(max_decode_length=2), **kw)
    assert len(reads) == 1 and len(rows) == 10 and metrics["num_examples"] == 10
    np.testing.assert_allclose(metrics["loss"], alone, rtol=1e-6)  # the padding rows of the last batch left out


def test_models_or_tasks_that_cannot_decode_report_their_loss():
    from t5x_lite.errors import ConfigError
    from t5x_lite.evaluation.evaluate import DecodeOptions, evaluate
    from t5x_lite.models.config import BertConfig
    from t5x_lite.models.model import DecoderOnlyModel, EncoderOnlyMLMModel

    bert = EncoderOnlyMLMModel(config=BertConfig(vocab_size=8000, hidden_size=32, num_layers=1, num_heads=2,
                                                 intermediate_size=64, max_position_embeddings=64))
    causal = DecoderOnlyModel(config=TINY.replace(num_encoder_layers=0), prefix_lm=False)
    for model, task, lengths in [(bert, "bundled_corpus_bert_mlm", {"inputs": 32}),
                                 (causal, "bundled_corpus_lm", {"targets": 32})]:
        params = model.init(jax.random.key(0), model.dummy_batch(1, lengths))
        metrics, rows = evaluate(model=model, params=params, task=task, feature_lengths=lengths, batch_size=4,
                                 max_examples=8)
        assert rows == [] and metrics["num_examples"] == 8 and np.isfinite(metrics["loss"])
    bert_params = bert.init(jax.random.key(0), bert.dummy_batch(1, {"inputs": 32}))
    with pytest.raises(ConfigError, match=r"task 'bundled_sentiment' is scored by accuracy, f1, which need "
                                          r"predictions, and the model \(kind encoder_only_mlm\) cannot decode them"):
        evaluate(model=bert, params=bert_params, task="bundled_sentiment", feature_lengths={"inputs": 32},
                 batch_size=4, max_examples=4)
    # The causal LM's LM task has no inputs to prompt with (the loss only, above); a task with inputs it decodes.
    metrics, rows = evaluate(model=causal, params=params, task="bundled_sentiment",
                             feature_lengths={"inputs": 16, "targets": 4}, batch_size=4, max_examples=4,
                             decode=DecodeOptions(max_decode_length=2))
    assert "accuracy" in metrics and len(rows) == 4 and rows[0]["inputs"].startswith("sentiment:")


def test_a_classifier_reports_its_loss_over_the_real_rows_only():
    from t5x_lite.evaluation.evaluate import evaluate, validation_loss
    from t5x_lite.models.config import BertConfig
    from t5x_lite.models.model import EncoderOnlyClassificationModel

    model = EncoderOnlyClassificationModel(config=BertConfig(vocab_size=8000, hidden_size=16, num_layers=1,
                                                             num_heads=2, intermediate_size=32,
                                                             max_position_embeddings=32))
    params = model.init(jax.random.key(0), model.dummy_batch(1, {"inputs": 16}))
    kw = dict(model=model, params=params, task="bundled_sentiment_classification", feature_lengths={"inputs": 16},
              max_examples=10)
    whole = validation_loss(batch_size=10, **kw)  # one batch, no padding rows
    metrics, rows = evaluate(batch_size=4, **kw)  # the last batch has 2 real rows and 2 of padding
    assert metrics["num_examples"] == 10 == len(rows) and "accuracy" in metrics
    np.testing.assert_allclose(metrics["loss"], whole, rtol=1e-5)


@pytest.mark.parametrize("num_labels", [2, 1])
def test_a_classifier_predicts_unlabelled_rows_and_scores_the_labelled_ones_alone(num_labels):
    # A test split's hidden labels reach a BERT classifier as label_weight 0: predicted, keyed by idx, not scored.
    from t5x_lite.data.features import Feature
    from t5x_lite.data.tasks import Task
    from t5x_lite.evaluation.evaluate import evaluate, validation_loss
    from t5x_lite.models.config import BertConfig
    from t5x_lite.models.model import EncoderOnlyClassificationModel
    from t5x_lite.tasks.bundled import vocabulary

    class Records(list):
        description = "mem.jsonl"

        def origin(self, i):
            return f"mem.jsonl:{i + 1}"

    def label(i):
        return float(i % 5) if num_labels == 1 else i % 2

    labelled = [{"inputs": f"review number {i}", "label": label(i), "idx": i} for i in range(7)]
    hidden = [{"inputs": f"an unlabelled review {i}", "label": label(0), "label_weight": 0.0, "idx": 100 + i}
              for i in range(3)]
    mixed = labelled[:1] + hidden[:1] + labelled[1:4] + hidden[1:] + labelled[4:]

    def task(records, name):
        return Task(name=name, source=lambda split: Records(records), output_features={"inputs": Feature(vocabulary())},
                    metric_names=("pearson",) if num_labels == 1 else ("accuracy",), eval_fields=("idx",))

    model = EncoderOnlyClassificationModel(config=BertConfig(vocab_size=8000, hidden_size=16, num_layers=1,
                                                             num_heads=2, intermediate_size=32,
                                                             max_position_embeddings=32, num_labels=num_labels))
    kw = dict(model=model, params=model.init(jax.random.key(0), model.dummy_batch(1, {"inputs": 16})),
              feature_lengths={"inputs": 16}, batch_size=4)
    alone, alone_rows = evaluate(task=task(labelled, "mem_labelled"), **kw)
    metrics, rows = evaluate(task=task(mixed, "mem_mixed"), **kw)
    assert metrics.pop("unlabelled_examples") == 3 and metrics.pop("num_examples") == 10
    alone.pop("num_examples")
    assert metrics.keys() == alone.keys()
    for key in alone:
        np.testing.assert_allclose(metrics[key], alone[key], rtol=1e-5)
    assert [r["example"]["idx"] for r in rows] == [r["idx"] for r in mixed]
    assert [r["targets"] is None for r in rows] == ["label_weight" in r for r in mixed]
    labelled_rows = [r for r in rows if r["targets"] is not None]
    np.testing.assert_allclose([r["prediction"] for r in labelled_rows], [r["prediction"] for r in alone_rows],
                               rtol=1e-5)
    np.testing.assert_allclose(validation_loss(task=task(mixed, "mem_mixed"), **kw), alone["loss"], rtol=1e-5)
    none, rows = evaluate(task=task(hidden, "mem_hidden"), **kw)
    assert none == {"unlabelled_examples": 3, "num_examples": 3} and len(rows) == 3


def test_evaluating_again_does_not_trace_the_model_again(monkeypatch):
    # Evaluation during training runs every eval period; each run must reuse the compiled loss and logits.
    from t5x_lite.evaluation.evaluate import DecodeOptions, evaluate
    from t5x_lite.models.config import BertConfig
    from t5x_lite.models.model import EncoderOnlyClassificationModel

    traces = []
    for cls in (EncoderDecoderModel, EncoderOnlyClassificationModel):
        for name in ("loss_fn", "logits"):
            real = getattr(cls, name)
            monkeypatch.setattr(cls, name, lambda self, *a, _real=real, _name=name, **k:
                                traces.append(_name) or _real(self, *a, **k))
    t5 = EncoderDecoderModel(config=TINY)
    bert = EncoderOnlyClassificationModel(config=BertConfig(vocab_size=8000, hidden_size=16, num_layers=1,
                                                            num_heads=2, intermediate_size=32,
                                                            max_position_embeddings=32))
    for model, task, lengths in [(t5, "bundled_sentiment", {"inputs": 16, "targets": 4}),
                                 (bert, "bundled_sentiment_classification", {"inputs": 16})]:
        kw = dict(model=model, params=_tiny_params(model) if model is t5 else
                  model.init(jax.random.key(0), model.dummy_batch(1, lengths)), task=task, feature_lengths=lengths,
                  batch_size=4, max_examples=8, decode=DecodeOptions(max_decode_length=2))
        first, _ = evaluate(**kw)
        traced = len(traces)
        second, _ = evaluate(**kw)
        assert len(traces) == traced, f"{type(model).__name__} traced {traces[traced:]} again"
        assert first == second


def test_unlabelled_examples_are_predicted_but_left_out_of_metrics_and_loss():
    # GLUE's and SuperGLUE's test splits hide their labels; T5 keeps those rows with the target "<unk>".
    from t5x_lite.data.features import Feature
    from t5x_lite.data.tasks import UNLABELLED_TARGET, Task
    from t5x_lite.evaluation.evaluate import DecodeOptions, evaluate
    from t5x_lite.tasks.bundled import vocabulary
    from t5x_lite.tasks.tfds_tasks import label_postprocessor

    class Records(list):
        description = "mem.jsonl"

        def origin(self, i):
            return f"mem.jsonl:{i + 1}"

    labelled = [{"inputs": f"sentiment: review number {i} was {'good' if i % 2 else 'bad'}",
                 "targets": "positive" if i % 2 else "negative"} for i in range(6)]
    hidden = [{"inputs": f"sentiment: an unlabelled review {i}", "targets": UNLABELLED_TARGET} for i in range(3)]
    mixed = labelled[:1] + hidden[:1] + labelled[1:3] + hidden[1:2] + labelled[3:5] + hidden[2:] + labelled[5:]

    def task(records, name):
        return Task(name=name, source=lambda split: Records(records), metric_names=("accuracy",),
                    output_features={"inputs": Feature(vocabulary()), "targets": Feature(vocabulary())},
                    postprocess_fn=label_postprocessor(("negative", "positive")))

    model = EncoderDecoderModel(config=TINY)
    kw = dict(model=model, params=_tiny_params(model), feature_lengths={"inputs": 16, "targets": 4}, batch_size=4,
              decode=DecodeOptions(max_decode_length=2))
    only_labelled, _ = evaluate(task=task(labelled, "mem_labelled"), **kw)
    metrics, rows = evaluate(task=task(mixed, "mem_mixed"), **kw)
    assert len(rows) == 9 and metrics["num_examples"] == 9 and metrics["unlabelled_examples"] == 3
    assert metrics["accuracy"] == only_labelled["accuracy"]
    np.testing.assert_allclose(metrics["loss"], only_labelled["loss"], rtol=1e-5)
    none, rows = evaluate(task=task(hidden, "mem_hidden"), **kw)  # a test split: predictions, nothing scored
    assert none == {"unlabelled_examples": 3, "num_examples": 3} and len(rows) == 3


def test_the_loss_alone_also_leaves_unlabelled_examples_out():
    # Evaluation during training with decode_without_metrics=False on a task without metrics (GLUE's AX), and
    # validation_loss, read no predictions: the loss must still skip "<unk>" targets.
    from t5x_lite.data.features import Feature
    from t5x_lite.data.tasks import UNLABELLED_TARGET, Task
    from t5x_lite.evaluation.evaluate import evaluate, validation_loss
    from t5x_lite.tasks.bundled import vocabulary
    from t5x_lite.tasks.tfds_tasks import label_postprocessor

    class Records(list):
        description = "mem.jsonl"

        def origin(self, i):
            return f"mem.jsonl:{i + 1}"

    labelled = [{"inputs": f"sentiment: review {i}", "targets": "positive" if i % 2 else "negative"}
                for i in range(5)]
    mixed = labelled[:2] + [{"inputs": "sentiment: hidden", "targets": UNLABELLED_TARGET}] + labelled[2:]

    def task(records, name):
        return Task(name=name, source=lambda split: Records(records),
                    output_features={"inputs": Feature(vocabulary()), "targets": Feature(vocabulary())},
                    postprocess_fn=label_postprocessor(("negative", "positive")))

    model = EncoderDecoderModel(config=TINY)
    kw = dict(model=model, params=_tiny_params(model), feature_lengths={"inputs": 16, "targets": 4}, batch_size=4)
    only = validation_loss(task=task(labelled, "mem_only_labelled"), **kw)
    np.testing.assert_allclose(validation_loss(task=task(mixed, "mem_one_hidden"), **kw), only, rtol=1e-5)
    metrics, rows = evaluate(task=task(mixed, "mem_one_hidden"), decode_without_metrics=False, **kw)
    assert rows == [] and metrics["unlabelled_examples"] == 1 and metrics["num_examples"] == 6
    np.testing.assert_allclose(metrics["loss"], only, rtol=1e-5)
