"""eval / infer entry points: bad settings are one-line errors before any work; results are never overwritten."""

import json

import jax
import numpy as np
import pytest

from t5x_lite import cli
from t5x_lite.evaluation.evaluate import DecodeOptions
from t5x_lite.evaluation.run import _output_paths
from t5x_lite.models.config import BertConfig
from t5x_lite.models.model import DecoderOnlyModel, EncoderDecoderModel, EncoderOnlyMLMModel
from t5x_lite.training import checkpoints
from tests.evaluation.test_evaluate import FLAGS, TINY, _our_checkpoint


def _cli_error(capsys, *args):
    assert cli.main(list(args)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


@pytest.mark.parametrize("flag, message", [
    ("--gin.evaluate_checkpoint.batch_size=0", "evaluate_checkpoint.batch_size must be >= 1, got 0"),
    ("--gin.evaluate_checkpoint.max_examples=0", "evaluate_checkpoint.max_examples must be >= 1, got 0"),
    ("--gin.evaluate_checkpoint.batch_size=2.5", "evaluate_checkpoint.batch_size must be int, got 2.5"),
    ("--gin.CHECKPOINT=", "evaluate_checkpoint.checkpoint (CHECKPOINT) is empty"),
    ("--gin.TASK=5", "evaluate_checkpoint.task must be str, got 5"),
    ("--gin.evaluate_checkpoint.split=dev", "task 'bundled_sentiment' has no split 'dev'; its splits are train, "
                                            "validation, test"),
    ("--gin.TASK=bundled_sentiment_classification", "task 'bundled_sentiment_classification' has no 'targets' "
                                                    "feature"),
    (("--gin.evaluation.DecodeOptions.method=beam", "--gin.evaluation.DecodeOptions.num_beams=0"),
     "DecodeOptions.num_beams must be >= 1 for beam search, got 0"),
    ("--gin.evaluation.DecodeOptions.max_decode_length=-5", "DecodeOptions.max_decode_length must be >= 1, got -5"),
])
def test_bad_eval_settings_are_one_line_errors(tmp_path, capsys, flag, message):
    ckpt = _our_checkpoint(tmp_path / "ckpt")
    flags = flag if isinstance(flag, tuple) else (flag,)
    err = _cli_error(capsys, "eval", "--gin_file=runs/eval.gin", f"--gin.CHECKPOINT={ckpt}", *FLAGS, *flags)
    assert message in err
    assert not (ckpt / "eval").exists()  # refused before writing anything


def test_a_model_that_cannot_do_the_job_or_is_too_small_for_the_vocabulary(tmp_path, capsys):
    mlm = EncoderOnlyMLMModel(config=BertConfig(vocab_size=8000, hidden_size=16, num_layers=1, num_heads=2,
                                                intermediate_size=32, max_position_embeddings=64))
    checkpoints.save_params(tmp_path / "mlm", mlm.init(jax.random.key(0), mlm.dummy_batch(1, {"inputs": 8})), mlm)
    err = _cli_error(capsys, "eval", "--gin_file=runs/eval.gin", f"--gin.CHECKPOINT={tmp_path / 'mlm'}", *FLAGS)
    assert err.endswith(f"{tmp_path / 'mlm'}: task 'bundled_sentiment' is scored by accuracy, f1, which need "
                        "predictions, and the model (kind encoder_only_mlm) cannot decode them (only encoder_decoder, "
                        "decoder_only and encoder_only_classification models can; on a task without "
                        "metrics, its loss is evaluated)")
    causal = DecoderOnlyModel(config=TINY.replace(num_encoder_layers=0), prefix_lm=False)
    checkpoints.save_params(tmp_path / "lm", causal.init(jax.random.key(0), causal.dummy_batch(1, {"targets": 8})),
                            causal)
    assert cli.main(["eval", "--gin_file=runs/eval.gin", f"--gin.CHECKPOINT={tmp_path / 'lm'}", *FLAGS]) == 0
    assert "accuracy" in json.loads((tmp_path / "lm" / "eval" / "metrics-bundled_sentiment-validation.json")
                                    .read_text())  # a causal LM decodes after its inputs
    capsys.readouterr()
    # on a task without metrics, the loss: the MLM on held-out MLM data, the causal LM on its LM task
    for name, task, lengths in [("mlm", "bundled_corpus_bert_mlm", "{'inputs': 16}"),
                                ("lm", "bundled_corpus_lm", "{'targets': 16}")]:
        assert cli.main(["eval", "--gin_file=runs/eval.gin", f"--gin.CHECKPOINT={tmp_path / name}", f"--gin.TASK={task}",
                         f"--gin.TASK_FEATURE_LENGTHS={lengths}", "--gin.evaluate_checkpoint.max_examples=4"]) == 0
        metrics = json.loads((tmp_path / name / "eval" / f"metrics-{task}-validation.json").read_text())
        assert metrics["num_examples"] == 4 and np.isfinite(metrics["loss"])
        assert not (tmp_path / name / "eval" / f"predictions-{task}-validation.jsonl").exists()  # none decoded
        assert capsys.readouterr().out.strip().endswith("(the loss only: this task decodes nothing)")

    small = EncoderDecoderModel(config=TINY.replace(vocab_size=300))
    params = small.init(jax.random.key(0), small.dummy_batch(1, {"inputs": 8, "targets": 4}))
    checkpoints.save_params(tmp_path / "small", params, small)
    err = _cli_error(capsys, "eval", "--gin_file=runs/eval.gin", f"--gin.CHECKPOINT={tmp_path / 'small'}", *FLAGS)
    assert err.endswith("task 'bundled_sentiment' has 8000 token ids, more than the model's vocab_size 300")


def test_results_are_numbered_not_overwritten_and_step_results_live_beside_the_checkpoints(tmp_path, capsys):
    ckpt = _our_checkpoint(tmp_path / "ckpt")
    for _ in range(2):
        assert cli.main(["eval", "--gin_file=runs/eval.gin", f"--gin.CHECKPOINT={ckpt}", *FLAGS]) == 0
    names = sorted(p.name for p in (ckpt / "eval").iterdir())
    assert names == ["metrics-bundled_sentiment-validation-2.json", "metrics-bundled_sentiment-validation.json",
                     "predictions-bundled_sentiment-validation-2.jsonl", "predictions-bundled_sentiment-validation.jsonl"]
    assert cli.main(["eval", "--gin_file=runs/eval.gin", f"--gin.CHECKPOINT={ckpt}", *FLAGS,
                     "--gin.evaluate_checkpoint.overwrite=True"]) == 0
    assert len(list((ckpt / "eval").iterdir())) == 4

    step = tmp_path / "run" / "checkpoints" / "6"  # deleted when the run keeps newer ones: results go beside it
    step.mkdir(parents=True)
    (tmp_path / "run" / "model.gin").write_text("# the run's\n")
    assert _output_paths(str(step), 6, None, False, "infer", "predictions-t-validation.jsonl") == [
        tmp_path / "run" / "infer" / "predictions-t-validation-step6.jsonl"]
    # a MODEL_DIR's results say which step they are from, and each call reserves its names at once
    names = ("metrics-t-validation.json", "predictions-t-validation.jsonl")
    first = _output_paths(str(tmp_path / "run"), 8, None, False, "eval", *names)
    second = _output_paths(str(tmp_path / "run"), 8, None, False, "eval", *names)
    assert [p.name for p in first + second] == [
        "metrics-t-validation-step8.json", "predictions-t-validation-step8.jsonl",
        "metrics-t-validation-step8-2.json", "predictions-t-validation-step8-2.jsonl"]
    (tmp_path / "run" / "eval" / "predictions-t-validation-step8-3.jsonl").write_text("kept\n")
    third = _output_paths(str(tmp_path / "run"), 8, None, False, "eval", *names)
    assert third[0].name == "metrics-t-validation-step8-4.json"  # both names move on together
    assert not (tmp_path / "run" / "eval" / "metrics-t-validation-step8-3.json").exists()
    assert (tmp_path / "run" / "eval" / "predictions-t-validation-step8-3.jsonl").read_text() == "kept\n"


def test_decode_options_are_checked_where_they_are_made():
    DecodeOptions(method="sample", temperature=0.7, top_k=40, top_p=0.9)
    DecodeOptions(method="sample", temperature=0.0)  # argmax, as decoding documents
    DecodeOptions(method="greedy", num_beams=0)  # beams are beam search's alone
    for bad, message in ((dict(method="foo"), "method must be one of"), (dict(temperature=-0.5), "temperature"),
                         (dict(top_p=1.5), "top_p must be in"), (dict(top_k=-2), "top_k must be >= 0"),
                         (dict(method="beam", num_beams=0), "num_beams must be >= 1 for beam search")):
        with pytest.raises(ValueError, match=message):
            DecodeOptions(**bad)


def test_decode_options_that_do_not_fit_the_model_are_refused_before_loading(tmp_path, capsys):
    ckpt = _our_checkpoint(tmp_path / "ckpt")
    err = _cli_error(capsys, "infer", "--gin_file=runs/infer.gin", f"--gin.CHECKPOINT={ckpt}",
                     *[f.replace("evaluate_checkpoint", "infer_checkpoint") for f in FLAGS],
                     "--gin.evaluation.DecodeOptions.method='beam'", "--gin.evaluation.DecodeOptions.num_beams=4001")
    assert err.endswith("decoding: num_beams=4001 needs a vocabulary of at least 2 x num_beams tokens; the model "
                        "has 8000")
    assert not (ckpt / "infer").exists()


def test_a_run_config_for_another_command_is_named_as_the_fix(tmp_path, capsys):
    ckpt = _our_checkpoint(tmp_path / "ckpt")
    err = _cli_error(capsys, "infer", "--gin_file=runs/eval.gin", f"--gin.CHECKPOINT={ckpt}", *FLAGS)
    assert err.endswith("infer_checkpoint() missing 3 required keyword-only arguments: 'checkpoint', 'task', and "
                        "'feature_lengths' (a run config binds them: --gin_file=runs/infer.gin)")


def test_a_causal_lm_scores_the_targets_after_its_inputs(tmp_path, capsys, caplog):
    causal = DecoderOnlyModel(config=TINY.replace(num_encoder_layers=0), prefix_lm=False)
    checkpoints.save_params(tmp_path / "lm", causal.init(jax.random.key(0), causal.dummy_batch(1, {"targets": 8})),
                            causal)
    assert cli.main(["infer", "--score", "--gin_file=runs/infer.gin", f"--gin.CHECKPOINT={tmp_path / 'lm'}",
                     *FLAGS, "--gin.infer_checkpoint.max_examples=3"]) == 0
    out = capsys.readouterr().out
    assert "wrote 3 scores" in out, out
    # with no inputs to continue, greedy decoding would write one text for every example: said before decoding
    assert cli.main(["infer", "--gin_file=runs/infer.gin", f"--gin.CHECKPOINT={tmp_path / 'lm'}",
                     "--gin.TASK=bundled_corpus_lm", "--gin.TASK_FEATURE_LENGTHS={'targets': 8}",
                     "--gin.infer_checkpoint.max_examples=2",
                     "--gin.evaluation.DecodeOptions.max_decode_length=4"]) == 0
    assert ("task 'bundled_corpus_lm' has no inputs, so greedy decoding writes the same unprompted text for every "
            "example") in caplog.text
