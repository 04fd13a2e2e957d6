"""The objectives study's smoke mode: every cell kind runs, a report and a plot come out, reruns skip."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "objectives" / "run.py"


def _run(*args, timeout=600):
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(ROOT / ".jax_cache"))
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_smoke_needs_its_own_output_folder():
    proc = _run("--smoke")
    assert proc.returncode != 0
    assert "--smoke needs --out" in proc.stderr


@pytest.mark.slow
def test_smoke_sweep_writes_a_report_and_resumes(tmp_path):
    committed = ROOT / "experiments" / "objectives" / "REPORT.md"
    before = committed.read_bytes() if committed.exists() else None
    proc = _run("--smoke", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = (tmp_path / "REPORT.md").read_text()
    assert "| No pretraining (Table 5) (`none`) |" in report
    assert "| Span corruption, mean span 3 (Table 7) (`span_3_15_u_u`) |" in report
    assert "not run" not in report
    assert (tmp_path / "REPORT.png").stat().st_size > 10_000
    for cell in ("pretrain/span_3_15_u_u", "finetune/none/seed_0", "finetune/span_3_15_u_u/seed_0"):
        assert (tmp_path / cell / "cell.json").exists(), cell
    # The fine-tuned cell started from the pretraining cell's checkpoint, and says so in its command.
    assert f"INITIAL_CHECKPOINT={tmp_path}/pretrain/span_3_15_u_u" in (
        tmp_path / "finetune" / "span_3_15_u_u" / "seed_0" / "cell.json").read_text()
    # Never over the committed report.
    assert (committed.read_bytes() if committed.exists() else None) == before

    again = _run("--smoke", "--out", str(tmp_path))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "$ t5x_lite" not in again.stdout  # every cell finished: nothing re-runs
    assert "wrote" in again.stdout
