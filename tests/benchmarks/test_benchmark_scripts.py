"""The benchmark scripts run end to end at tiny sizes on CPU (their numbers are not checked, their plumbing is)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _env():
    return dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(ROOT / ".jax_cache"))


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_section_on_cpu(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--smoke", "--out", str(tmp_path)], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = result["sections"]
    assert set(sections) == {"hf_train", "jax_train_xla", "decode"}
    for name, section in sections.items():
        assert "error" not in section, (name, section.get("error"))
    assert sections["hf_train"]["tokens_per_s"] > 0 and sections["jax_train_xla"]["tokens_per_s"] > 0
    assert "error" not in sections["jax_train_xla"]["profile"], sections["jax_train_xla"]["profile"]
    # The decode benchmark refuses to time unless both frameworks produce the same greedy tokens.
    assert sections["decode"]["token_agreement"] == 1.0


@pytest.mark.slow
def test_train_step_benchmark_one_tiny_pair(tmp_path):
    out = tmp_path / "summary.json"
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nhand-written notes stay\n")
    proc = subprocess.run([sys.executable, "benchmarks/train_step.py", "--shapes", "tiny", "--pairs", "1", "--steps",
                           "2", "--warmup", "0", "--results", str(results), "--json-out", str(out)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    pair = summary["shapes"]["tiny"]["pairs"][0]
    assert pair["arms"]["t5x_lite"]["tokens_per_s"] > 0 and pair["arms"]["hf"]["tokens_per_s"] > 0
    assert pair["arms"]["t5x_lite"]["num_params"] == pair["arms"]["hf"]["num_params"]
    text = results.read_text()
    assert "hand-written notes stay" in text and "### tiny" in text


@pytest.mark.slow
def test_train_step_profile_names_ops_after_the_model_code():
    proc = subprocess.run([sys.executable, "benchmarks/train_step_profile.py", "--shape", "tiny", "--steps", "1",
                           "--top", "5"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    parts = {line.rsplit(None, 3)[0] for line in proc.stdout.splitlines() if line.endswith(tuple("0123456789"))}
    # The trace was mapped back to the model: the big parts of a T5 step appear by name, both directions.
    for part in ("attention forward", "attention backward", "mlp backward", "logits_dense forward"):
        assert part in parts, proc.stdout


@pytest.mark.slow
def test_attention_layouts_benchmark_compares_equal_gradients():
    proc = subprocess.run([sys.executable, "benchmarks/attention_layouts.py", "--shapes", "tiny", "--rounds", "1"],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("tiny")]
    # One row per kind of attention layer, each timed in both layouts (the script checked their gradients agree).
    assert [" ".join(r[1:3]) for r in rows] == ["encoder self", "decoder cross", "decoder self"]
    assert all(float(r[-3]) > 0 and float(r[-2]) > 0 for r in rows), proc.stdout


@pytest.mark.slow
def test_dropout_masks_benchmark_runs():
    # one arm (each compiles a train step): the plumbing, not the numbers
    proc = subprocess.run([sys.executable, "benchmarks/dropout_masks.py", "--rounds", "1", "--steps", "1", "--arms",
                           "broadcast"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [line.split() for line in proc.stdout.splitlines() if "ms/step" in line]
    assert [line[0] for line in lines] == ["broadcast"] and float(lines[0][1]) > 0
