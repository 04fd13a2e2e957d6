"""The training loop: exact resume after SIGKILL, damaged checkpoints, divergence, fine-tuning, the CLI."""

import dataclasses
import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from t5x_lite import cli
from t5x_lite.models.model import EncoderDecoderModel
from t5x_lite.training import checkpoints
from t5x_lite.training.optimizers import make_optimizer
from t5x_lite.training.run_lock import run_lock
from t5x_lite.training.train import TrainingError, train

sys.path.insert(0, str(Path(__file__).parent))
from run_worker import TINY  # noqa: E402

WORKER = Path(__file__).parent / "run_worker.py"
MODEL = EncoderDecoderModel(config=TINY)
LENGTHS = {"inputs": 32, "targets": 8}


def _run(model_dir, steps, **kw):
    args = dict(model=MODEL, task="bundled_corpus_span_3_15_u_u", feature_lengths=LENGTHS, batch_size=4,
                train_steps=steps, model_dir=str(model_dir), checkpoint_every=2, log_every=2, progress=False,
                optimizer=make_optimizer("adafactor_t5", learning_rate=1e-2))
    args.update(kw)
    return train(**args)


def _params(model_dir):
    return jax.tree_util.tree_leaves(checkpoints.load_params(model_dir)[1])


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_restart_equals_an_uninterrupted_run(tmp_path):
    steps = 8
    subprocess.run([sys.executable, str(WORKER), str(tmp_path / "straight"), str(steps)], check=True,
                   capture_output=True, timeout=600)
    kill_at = random.Random().randint(3, 6)
    proc = subprocess.Popen([sys.executable, str(WORKER), str(tmp_path / "killed"), str(steps)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            if line.strip() == f"STEP {kill_at}":
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, f"worker ended with {proc.returncode} before step {kill_at}"
    subprocess.run([sys.executable, str(WORKER), str(tmp_path / "killed"), str(steps)], check=True,
                   capture_output=True, timeout=600)
    a, b = _params(tmp_path / "straight"), _params(tmp_path / "killed")
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y, err_msg=f"killed at step {kill_at}")


def test_resume_skips_a_damaged_newest_checkpoint(tmp_path, caplog):
    _run(tmp_path, 4)
    newest = tmp_path / "checkpoints" / "4" / "state"
    chunks = list(newest.glob("ocdbt.process_0/d/*"))  # the arrays' data, not the metadata: tensorstore's error
    assert chunks
    for f in chunks:
        f.write_bytes(b"garbage")
    result = _run(tmp_path, 6)
    assert result.step == 6
    assert "checkpoints/4 is unreadable" in caplog.text
    warning = next(r.getMessage() for r in caplog.records if "is unreadable" in r.getMessage())
    assert "TensorStore(" not in warning and "tensorstore_spec" not in warning and len(warning) < 800, warning
    assert "Metadata file does not exist" not in caplog.text  # orbax's noise about our layout is dropped
    assert checkpoints.TrainCheckpointer(tmp_path).steps()[-1] == 6


def _damage(step_dir):
    for f in (step_dir / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")


def test_a_run_with_no_readable_checkpoint_stops_instead_of_starting_over(tmp_path):
    _run(tmp_path, 4)
    for step in (2, 4):
        _damage(tmp_path / "checkpoints" / str(step))
    for _ in range(2):  # the second time, only the moved-aside copies are left: still no silent restart
        with pytest.raises(checkpoints.CheckpointError, match=r"no readable checkpoint left \(2.unreadable, "
                                                              r"4.unreadable could not.*to start this run over"):
            _run(tmp_path, 6)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2.unreadable", "4.unreadable"]


def test_a_step_found_unreadable_twice_is_moved_aside_under_a_new_name(tmp_path):
    _run(tmp_path, 4)
    for _ in range(2):
        _damage(tmp_path / "checkpoints" / "4")
        assert _run(tmp_path, 4).step == 4  # resumes from 2 and writes step 4 again
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["2", "4", "4.unreadable", "4.unreadable.1"]


def test_resuming_needs_the_same_seed_and_task_and_warns_on_a_new_batch_size(tmp_path, caplog):
    _run(tmp_path, 2)
    with pytest.raises(TrainingError, match=r"checkpoints/2: was written by a run with train.seed=0, and this "
                                            r"run has 1"):
        _run(tmp_path, 4, seed=1)
    with pytest.raises(TrainingError, match=r"train.task='bundled_corpus_span_3_15_u_u'.*'bundled_corpus_iid_15_u_u'"):
        _run(tmp_path, 4, task="bundled_corpus_iid_15_u_u")
    assert _run(tmp_path, 4, batch_size=8).step == 4
    assert "train.batch_size=8 (the checkpoint's run had 4)" in caplog.text


def test_train_steps_at_or_below_the_saved_step(tmp_path):
    _run(tmp_path, 4)
    assert "loss" not in _run(tmp_path, 4).metrics  # finished already: nothing to do
    with pytest.raises(TrainingError, match=r"holds step 4, past train_steps=2; give train_steps > 4"):
        _run(tmp_path, 2)


@pytest.mark.parametrize("setting, value", [("keep_checkpoints", 0), ("checkpoint_every", 0), ("log_every", 0),
                                            ("train_steps", -1), ("batch_size", 0), ("num_microbatches", 3),
                                            ("init_checkpoint", "")])
def test_a_setting_that_cannot_work_is_refused_before_anything_is_written(tmp_path, setting, value):
    _run(tmp_path, 2)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=rf"train\.{setting}"):
        _run(tmp_path, 4, **{setting: value})
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_load_params_reads_a_chosen_step_and_skips_a_damaged_newest_one(tmp_path, caplog):
    _run(tmp_path, 4)
    _, at_2 = checkpoints.load_params(tmp_path / "checkpoints" / "2")
    _, at_4 = checkpoints.load_params(tmp_path)
    assert not all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(at_2),
                                                        jax.tree_util.tree_leaves(at_4)))
    _damage(tmp_path / "checkpoints" / "4")
    _, newest_readable, step = checkpoints.load_params_and_step(tmp_path)
    jax.tree_util.tree_map(np.testing.assert_array_equal, newest_readable, at_2)
    assert step == 2  # eval names its results after the step it really read
    assert "checkpoints/4/state: cannot restore" in caplog.text and "trying the previous step" in caplog.text
    with pytest.raises(checkpoints.CheckpointError, match=r"nope: does not exist"):
        checkpoints.load_params(tmp_path / "nope")
    with pytest.raises(checkpoints.CheckpointError, match=r"model.gin: is a file, not a checkpoint directory"):
        checkpoints.load_params(tmp_path / "model.gin")


def test_a_second_run_on_the_same_model_dir_is_refused_and_numpy_lengths_are_fine(tmp_path):
    with run_lock(tmp_path):  # what a running training holds
        with pytest.raises(checkpoints.CheckpointError, match=r"another training run is using it \(pid \d+ "):
            _run(tmp_path, 2)
        assert (tmp_path / "t5x_lite.lock").exists()  # the refused run leaves the holder's lock file alone
    lengths = {k: np.int64(v) for k, v in LENGTHS.items()}  # e.g. computed with numpy: saved as JSON ints
    assert _run(tmp_path, 2, feature_lengths=lengths).step == 2
    assert checkpoints.TrainCheckpointer(tmp_path).steps() == [2]


def test_resuming_with_another_optimizer_or_model_is_a_clear_error_and_keeps_the_checkpoints(tmp_path, caplog):
    _run(tmp_path, 2, config_text="# the first run's config\n")
    run_files = {name: (tmp_path / name).read_text() for name in ("config.gin", "model.gin", "t5x_lite.json")}
    with pytest.raises(checkpoints.CheckpointError, match=r"checkpoints/2: .*different train state.*opt_state/"):
        _run(tmp_path, 4, optimizer=make_optimizer("adamw", learning_rate=1e-3))
    wider = EncoderDecoderModel(config=dataclasses.replace(TINY, d_ff=2 * TINY.d_ff))
    with pytest.raises(checkpoints.CheckpointError, match=r"mlp/wi\S*/kernel has shape"):
        _run(tmp_path, 4, model=wider)
    # Same shapes, another function: nothing in the restore notices, so model.gin must.
    silu = EncoderDecoderModel(config=dataclasses.replace(TINY, mlp_activations=("silu", "linear")))
    with pytest.raises(TrainingError, match=r"model.gin: this run's model differs from the one that trained these "
                                            r"checkpoints \(mlp_activations \('gelu', 'linear'\) -> \('silu', "
                                            r"'linear'\)\)"):
        _run(tmp_path, 4, model=silu)
    # Nothing was moved aside or overwritten (the run's description included): the original run resumes.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2"]
    assert {name: (tmp_path / name).read_text() for name in run_files} == run_files
    assert _run(tmp_path, 3).step == 3
    # How it runs may change, with a warning: dropout, compute dtype, the loss options
    with caplog.at_level("WARNING"):
        assert _run(tmp_path, 4, model=MODEL.replace(z_loss=0.0, config=TINY.replace(dropout_rate=0.2))).step == 4
    assert "with dropout_rate 0.1 -> 0.2, z_loss 0.0001 -> 0.0" in caplog.text


def test_a_diverging_run_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
    lr = lambda step: jnp.where(step >= 3, jnp.nan, 1e-3)  # noqa: E731
    with pytest.raises(TrainingError, match=r"update_norm is nan at step 4.*Last good checkpoint: step 2"):
        _run(tmp_path, 10, optimizer=optax.adamw(lr), log_every=1)
    assert checkpoints.TrainCheckpointer(tmp_path).steps() == [2]
    assert all(np.isfinite(x).all() for x in _params(tmp_path))


def test_finetuning_restores_params_only_and_checks_shapes(tmp_path):
    _run(tmp_path / "pre", 2)
    pretrained = _params(tmp_path / "pre")
    # zero learning rate: the fine-tuned params must be exactly the restored ones
    result = _run(tmp_path / "ft", 1, init_checkpoint=str(tmp_path / "pre"), optimizer=optax.sgd(0.0))
    assert result.step == 1
    for x, y in zip(pretrained, _params(tmp_path / "ft")):
        np.testing.assert_array_equal(x, y)
    # A scan-layout model fine-tunes from the loop-layout checkpoint (and back): same weights, other tree.
    scanned = EncoderDecoderModel(config=TINY.replace(scan_layers=True))
    _run(tmp_path / "ft_scan", 1, model=scanned, init_checkpoint=str(tmp_path / "pre"), optimizer=optax.sgd(0.0))
    model, params = checkpoints.load_params(tmp_path / "ft_scan")
    assert model.config.scan_layers and "layers" in params["encoder"]
    for x, y in zip(pretrained, jax.tree_util.tree_leaves(model.to_loop_layout(params))):
        np.testing.assert_array_equal(x, y)
    _run(tmp_path / "ft_loop", 1, init_checkpoint=str(tmp_path / "ft_scan"), optimizer=optax.sgd(0.0))
    for x, y in zip(pretrained, _params(tmp_path / "ft_loop")):
        np.testing.assert_array_equal(x, y)

    other = EncoderDecoderModel(config=TINY.replace(d_ff=64))
    with pytest.raises(TrainingError, match=r"pre: parameter .*mlp.*shape \(32, 48\).*\(32, 64\)"):
        _run(tmp_path / "bad", 1, model=other, init_checkpoint=str(tmp_path / "pre"))


def test_metrics_and_model_description_are_written(tmp_path):
    _run(tmp_path, 2)
    lines = [json.loads(x) for x in (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 2 and np.isfinite(lines[-1]["train/loss"])
    assert {"train/grad_norm", "train/learning_rate", "train/accuracy"} <= set(lines[-1]) or \
        {"train/grad_norm", "train/accuracy"} <= set(lines[-1])
    assert list((tmp_path / "train").glob("events.out.tfevents*"))
    model, _ = checkpoints.load_params(tmp_path)
    assert model == MODEL


# ----------------------------------------------------------------------------- CLI errors


def _cli_error(capsys, *args):
    assert cli.main(["train", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def test_cli_missing_required_macro(capsys, tmp_path):
    err = _cli_error(capsys, "--gin_file=models/t5_1_1/tiny.gin", "--gin_file=runs/pretrain.gin",
                     f"--gin.MODEL_DIR={tmp_path}")
    assert "missing REQUIRED macros" in err and "TASK (required by" in err and "pretrain.gin" in err
    err = _cli_error(capsys, "--gin_file=models/t5_1_1/tiny.gin", "--gin_file=objectives/span_3_15_u_u.gin",
                     "--gin_file=runs/pretrain.gin", f"--gin.MODEL_DIR={tmp_path}")
    assert "but never used: TASK = %PRETRAIN_TASK?)" in err  # the objective's task is for TASK
    assert err.count("PRETRAIN_TASK is set") == 1, err  # not also offered as a misspelling of TRAIN_STEPS


def test_cli_misspelled_parameter_gets_a_suggestion(capsys):
    err = _cli_error(capsys, "--gin_file=experiments/quickstart.gin", "--gin.train.bach_size=3")
    assert "doesn't have a parameter named 'bach_size'" in err and "did you mean 'batch_size'" in err


def test_cli_unknown_configurable_names_the_file_and_line(capsys, tmp_path):
    bad = tmp_path / "bad.gin"
    bad.write_text("include 'experiments/quickstart.gin'\ntrian.seed = 1\n")
    err = _cli_error(capsys, f"--gin_file={bad}")
    assert f"{bad}:2" in err and "did you mean 'train'" in err


def test_cli_missing_gin_file_and_wrong_type(capsys, tmp_path):
    assert "gin file not found: nope.gin" in _cli_error(capsys, "--gin_file=nope.gin")
    err = _cli_error(capsys, "--gin_file=experiments/quickstart.gin", "--gin.BATCH_SIZE=many",
                     f"--gin.MODEL_DIR={tmp_path}")
    assert "train.batch_size must be int, got 'many'" in err
    assert not (tmp_path / "config.gin").exists()  # a refused run writes nothing
    (tmp_path / "a_file").write_text("")
    err = _cli_error(capsys, "--gin_file=experiments/quickstart.gin", f"--gin.MODEL_DIR={tmp_path / 'a_file'}")
    assert err.endswith("a_file exists and is not a directory")


def test_logged_throughput_counts_the_tokens_of_its_steps_and_leaves_out_the_compile(tmp_path):
    from t5x_lite.data.features import EncDecFeatureConverter
    from t5x_lite.data.pipeline import get_dataset

    logged = {}
    lengths = {"inputs": 32, "targets": 8}
    _run(tmp_path, 7, task="bundled_sentiment", feature_lengths=lengths, log_every=3,
         eval_task="bundled_sentiment", eval_every=3, eval_max_examples=4,  # an interval restarts after eval
         step_callback=lambda step, m: logged.update({step: dict(m)}))
    # the same batches, counted here: sentiment examples vary in length, so padding varies per batch
    ds, _ = get_dataset("bundled_sentiment", split="train", feature_lengths=lengths, batch_size=4,
                        converter=EncDecFeatureConverter(), seed=0, shard=(0, 1))
    it = iter(ds)
    per_step = [sum(int(np.count_nonzero(b[k])) for k in ("encoder_input_tokens", "decoder_target_tokens"))
                for b in (next(it) for _ in range(7))]
    assert sorted(logged) == [3, 6, 7]
    # step 3's interval is steps 2-3 (the clock starts after step 1, which waits for the compile); then 4-6, 7
    for step, steps in [(3, (2, 3)), (6, (4, 5, 6)), (7, (7,))]:
        m = logged[step]
        tokens = m["tokens_per_s"] / m["steps_per_s"] * len(steps)
        assert tokens == pytest.approx(sum(per_step[s - 1] for s in steps), rel=1e-6), step


def test_a_streamed_corpus_resumes_exactly(tmp_path):
    import t5x_lite.tasks  # noqa: F401  (registers the bundled tasks)
    from t5x_lite.data.tasks import Task, TaskRegistry

    bundled = TaskRegistry.get("bundled_corpus_span_3_15_u_u")
    TaskRegistry.add(Task(**{**bundled.__dict__, "name": "streamed_corpus", "streaming": True}), overwrite=True)
    try:
        _run(tmp_path / "straight", 4, task="streamed_corpus")
        _run(tmp_path / "resumed", 2, task="streamed_corpus")
        _run(tmp_path / "resumed", 4, task="streamed_corpus")
    finally:
        TaskRegistry.remove("streamed_corpus")
    for a, b in zip(_params(tmp_path / "straight"), _params(tmp_path / "resumed")):
        np.testing.assert_array_equal(a, b)


def test_a_checkpoint_from_another_input_pipeline_is_refused_by_name(tmp_path):
    # the same task name, read in memory when the checkpoint was written and streamed now: grain's saved state
    # has another shape, and its KeyError must become an error that names the checkpoint
    import t5x_lite.tasks  # noqa: F401  (registers the bundled tasks)
    from t5x_lite.data.tasks import Task, TaskRegistry
    from t5x_lite.training.train import TrainingError

    bundled = TaskRegistry.get("bundled_corpus_span_3_15_u_u")
    try:
        TaskRegistry.add(Task(**{**bundled.__dict__, "name": "switching_corpus"}), overwrite=True)
        _run(tmp_path, 2, task="switching_corpus")
        TaskRegistry.add(Task(**{**bundled.__dict__, "name": "switching_corpus", "streaming": True}), overwrite=True)
        with pytest.raises(TrainingError, match=r"checkpoints/2: its data position does not fit this run's input "
                                                r"pipeline \(KeyError"):
            _run(tmp_path, 4, task="switching_corpus")
    finally:
        TaskRegistry.remove("switching_corpus")
    assert checkpoints.load_params_and_step(tmp_path)[2] == 2  # the checkpoint is still there


def test_the_console_says_whether_a_run_started_fresh_or_resumed(tmp_path, capsys):
    _run(tmp_path, 2, progress=True)
    assert "initialized from scratch (seed 0)" in capsys.readouterr().err
    _run(tmp_path, 4, progress=True)
    assert f"resumed from {tmp_path / 'checkpoints' / '2'}" in capsys.readouterr().err


def test_truncation_is_said_once_on_the_console(tmp_path, capsys, caplog):
    # i.i.d. replace-spans at 25% writes targets longer than 4 tokens: cut, and said (not only in metrics.jsonl).
    cut = dict(task="bundled_corpus_iid_25_u_u", feature_lengths={"inputs": 32, "targets": 4})
    _run(tmp_path / "a", 4, progress=True, **cut)
    err = capsys.readouterr().err
    assert err.count("truncated so far, of ") == 1 and " examples read: targets in " in err, err
    _run(tmp_path / "b", 2, **cut)  # without a progress bar (a notebook), as a warning
    assert "truncated so far" in caplog.text
    records = [json.loads(line) for line in (tmp_path / "a" / "train" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["train/truncated_tokens"] > 0 for r in records)


def test_a_window_of_only_the_first_step_logs_no_rates(tmp_path):
    _run(tmp_path, 2, log_every=1)
    records = [json.loads(line) for line in (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()]
    assert "train/tokens_per_s" not in records[0] and "train/steps_per_s" not in records[0]
    assert records[1]["train/tokens_per_s"] > 0


def test_a_run_refused_at_its_start_leaves_no_directory_behind(tmp_path):
    _run(tmp_path / "t5", 2)
    from t5x_lite.models.config import BertConfig
    from t5x_lite.models.model import EncoderOnlyClassificationModel

    bert = BertConfig(vocab_size=8000, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                      max_position_embeddings=64)
    classifier = dict(model=EncoderOnlyClassificationModel(config=bert),
                      task="bundled_sentiment_classification", feature_lengths={"inputs": 32})
    with pytest.raises(TrainingError, match=r"t5: holds a model of kind 'encoder_decoder', and this run builds "
                                            r"one of kind 'encoder_only_classification'"):
        _run(tmp_path / "new", 2, init_checkpoint=str(tmp_path / "t5"), **classifier)
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()  # made by the user: stays, and stays empty
    with pytest.raises(TrainingError, match="holds a model of kind"):
        _run(tmp_path / "kept", 2, init_checkpoint=str(tmp_path / "t5"), **classifier)
    assert list((tmp_path / "kept").iterdir()) == []
