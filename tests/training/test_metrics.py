"""MetricsWriter (JSONL + TensorBoard), StepTimer, ProgressBar, summarize_metrics."""

import glob
import json
import os
import struct
import sys
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

from t5x_lite.training import metrics as metrics_lib
from t5x_lite.training.metrics import MetricsWriter, ProgressBar, StepTimer, read_metrics_jsonl, summarize_metrics


def _read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def _read_event_scalars(log_dir):
    """{(tag, step): value} from the TFRecord event files, parsed with tensorboardX's protos."""
    event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
    out = {}
    for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            record = data[pos + 12 : pos + 12 + length]  # skip the length's crc; the data's crc follows
            pos += 12 + length + 4
            event = event_pb2.Event.FromString(record)
            for v in event.summary.value:
                out[(v.tag, event.step)] = v.simple_value
    return out


def test_writer_writes_jsonl_and_events(tmp_path):
    log_dir = str(tmp_path / "train")
    with MetricsWriter(log_dir, every_n_steps=2) as w:
        assert w.has_tensorboard
        assert w.write(2, {"loss": jnp.float32(2.5), "learning_rate": np.float64(0.01), "tokens": np.int32(7)})
        assert not w.write(3, {"loss": 9.0})  # not a logging step
        assert w.write(3, {"eval/accuracy": 0.5}, force=True)
        assert w.write(4, {"loss": float("nan")})
    lines = _read_jsonl(os.path.join(log_dir, "metrics.jsonl"))
    assert [line["step"] for line in lines] == [2, 3, 4]
    assert lines[0]["loss"] == 2.5 and lines[0]["learning_rate"] == 0.01 and lines[0]["tokens"] == 7
    assert isinstance(lines[0]["tokens"], int) and isinstance(lines[0]["time"], float)
    assert lines[2]["loss"] is None  # strict JSON: NaN -> null
    events = glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))
    assert events and os.path.getsize(events[0]) > 0
    scalars = _read_event_scalars(log_dir)
    assert scalars[("loss", 2)] == 2.5
    assert scalars[("learning_rate", 2)] == pytest.approx(0.01)
    assert scalars[("eval/accuracy", 3)] == 0.5
    assert ("loss", 3) not in scalars
    assert ("loss", 4) not in scalars  # non-finite: a gap in the curve (JSONL has null), no tensorboardX warning


def test_writer_appends_on_reopen_and_reader_takes_last(tmp_path):
    log_dir = str(tmp_path)
    with MetricsWriter(log_dir, use_tensorboard=False) as w:
        for step in (1, 2, 3):
            w.write(step, {"loss": float(step)})
    with open(os.path.join(log_dir, "metrics.jsonl"), "a") as f:
        f.write('{"step": 4, "ti')  # a crash cut this line short
    with MetricsWriter(log_dir, use_tensorboard=False, resume_step=2) as w:  # resumed from step 2
        w.write(3, {"loss": 30.0})
        w.write(4, {"loss": 40.0})
    with open(os.path.join(log_dir, "metrics.jsonl")) as f:
        raw = f.read().splitlines()
    assert len(raw) == 6  # 3 old + the partial line + 2 new; the old step-3 line is left in place
    assert not glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))
    records = read_metrics_jsonl(os.path.join(log_dir, "metrics.jsonl"))
    assert [(r["step"], r["loss"]) for r in records] == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]


def test_writer_without_tensorboardx_warns_once(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import raises ImportError
    monkeypatch.setattr(metrics_lib, "_warned_no_tensorboardx", False)
    with pytest.warns(UserWarning, match="tensorboardX"):
        w1 = MetricsWriter(str(tmp_path / "a"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w2 = MetricsWriter(str(tmp_path / "b"))
    for w in (w1, w2):
        assert not w.has_tensorboard
        assert w.write(1, {"loss": 1.0})
        w.close()
    assert _read_jsonl(str(tmp_path / "a" / "metrics.jsonl"))[0]["loss"] == 1.0


def test_disabled_writer_writes_nothing(tmp_path):
    with MetricsWriter(str(tmp_path / "x"), enabled=False) as w:
        assert not w.write(1, {"loss": 1.0}, force=True)
    assert not os.path.exists(tmp_path / "x")


def test_step_timer_excludes_first_step():
    now = [0.0]
    timer = StepTimer(window=3, clock=lambda: now[0])
    assert np.isnan(timer.summary()["steps_per_s"])
    now[0] = 30.0  # step 1 took 30 s: compilation
    timer.mark(1, 100)
    assert np.isnan(timer.summary()["tokens_per_s"])
    for step in (2, 3, 4):
        now[0] += 0.5
        timer.mark(step, 100)
    s = timer.summary()
    assert s["steps_per_s"] == pytest.approx(2.0)
    assert s["tokens_per_s"] == pytest.approx(200.0)
    assert s["step_time_s"] == pytest.approx(0.5)
    # window: only the last 3 intervals count
    now[0] += 2.0
    timer.mark(6, 400)  # two steps in one interval
    s = timer.summary()
    assert s["steps_per_s"] == pytest.approx(4 / 3.0)
    assert s["tokens_per_s"] == pytest.approx(600 / 3.0)
    # reset (e.g. after evaluation): the pause is not counted
    timer.reset()
    now[0] += 100.0
    timer.mark(7, 100)
    assert timer.summary()["steps_per_s"] == pytest.approx(4 / 3.0)


def test_progress_bar_plain_lines(capsys):
    bar = ProgressBar(10, 0, print_every=5)  # under pytest stderr is not a TTY
    assert bar.plain
    for step in range(1, 11):
        bar.update(step, {"loss": 2.0 / step, "tokens_per_s": 12345.0, "learning_rate": 1e-3, "other": 1})
    bar.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("step 5/10 | loss 0.4 tok/s 12.3k lr 1.00e-03 |")
    assert "eta" in lines[0]
    assert lines[1].startswith("step 10/10 |")


def test_progress_bar_ci_env_disables_tqdm(monkeypatch, capsys):
    class FakeTTY:
        def __init__(self):
            self.text = ""

        def isatty(self):
            return True

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    monkeypatch.setenv("CI", "true")
    out = FakeTTY()
    with ProgressBar(4, 2, print_every=1, file=out) as bar:
        assert bar.plain
        bar.update(3, {"train/loss": 1.5, "lr": 0.1})
    assert out.text == "step 3/4 | loss 1.5 lr 0.1 | 0:00:00 eta 0:00:00\n"
    monkeypatch.delenv("CI")
    with ProgressBar(4, 2, file=out) as bar:
        assert not bar.plain  # a TTY outside CI gets tqdm
        bar.update(3, {"loss": 1.5})


def test_summarize_metrics():
    window = [
        {"loss": jnp.float32(1.0), "accuracy": np.float32(0.5)},
        {"loss": jnp.array(3.0), "accuracy": 0.7},
        {"loss": 2.0},
    ]
    out = summarize_metrics(window)
    assert out == pytest.approx({"loss": 2.0, "accuracy": 0.6})
    assert all(type(v) is float for v in out.values())
    assert summarize_metrics([]) == {}
