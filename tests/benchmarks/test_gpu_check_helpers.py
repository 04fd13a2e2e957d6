"""gpu_check.py's bookkeeping (peak memory per arm, atomic save, the deadline) and train_step.py's machine line."""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def gpu_check(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts benchmarks/ on it
    module = _load("gpu_check")
    module.RESULTS = {"sections": {}}
    module.DEADLINE = None
    return module


def test_arm_peak_is_reported_only_when_the_arm_raised_the_process_peak(gpu_check):
    gib = 2**30
    own = gpu_check.arm_peak_memory({"peak_bytes_in_use": 10 * gib, "bytes_in_use": gib},
                                    {"peak_bytes_in_use": 12 * gib})
    assert own["peak_mem_gib"] == 12.0 and own["process_peak_before_arm_gib"] == 10.0
    assert own["bytes_in_use_at_arm_start_gib"] == 1.0
    hidden = gpu_check.arm_peak_memory({"peak_bytes_in_use": 10 * gib}, {"peak_bytes_in_use": 10 * gib})
    assert hidden["peak_mem_gib"] is None
    assert hidden["peak_mem_note"] == "not separable (<= earlier peak 10.00 GiB)"
    assert gpu_check.arm_peak_memory({}, {})["peak_mem_gib"] is None  # CPU: no memory_stats


def test_save_is_atomic(gpu_check, tmp_path, monkeypatch):
    gpu_check.RESULTS["sections"]["a"] = {"x": 1}
    gpu_check.save(str(tmp_path))
    gpu_check.RESULTS["sections"]["b"] = {"x": 2}

    def dump_then_die(obj, f, **kw):
        f.write('{"sections": {"a"')
        raise KeyboardInterrupt  # as a kill in the middle of writing

    monkeypatch.setattr(gpu_check.json, "dump", dump_then_die)
    with pytest.raises(KeyboardInterrupt):
        gpu_check.save(str(tmp_path))
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == {"sections": {"a": {"x": 1}}}
    assert os.listdir(tmp_path) == ["gpu_check.json"]


def test_section_skipped_for_time_is_recorded_and_not_run(gpu_check, tmp_path):
    gpu_check.DEADLINE = time.monotonic() + 30
    ran = []
    gpu_check.section("late", str(tmp_path), min_s=60)(lambda: ran.append(1) or {})
    gpu_check.section("fits", str(tmp_path), min_s=10)(lambda: ran.append(2) or {"ok": True})
    sections = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]
    assert ran == [2]
    assert sections["late"]["skipped"].startswith("deadline:") and sections["fits"]["ok"] is True


def test_machine_line_says_only_what_was_measured(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "path", list(sys.path))
    train_step = _load("train_step")
    flags = tmp_path / "cpuinfo"
    flags.write_text("model name\t: Some CPU\nflags\t\t: fpu sse2 avx2\n")
    assert train_step.cpu_has_avx512f(str(flags)) is False
    flags.write_text("flags\t\t: fpu avx512f avx512bw\n")
    assert train_step.cpu_has_avx512f(str(flags)) is True
    assert train_step.cpu_has_avx512f(str(tmp_path / "missing")) is None
    line = train_step.machine_text({"cpu": "C", "cores": 2, "avx512f": False, "gpus_jax_sees": []})
    assert line == "C (2 cores, no AVX-512), no GPU"
    assert train_step.machine_text({"cpu": "C", "cores": 2}) == "C (2 cores)"  # an older summary claims nothing
    assert "GPU: H100" in train_step.machine_text({"cpu": "C", "cores": 2, "gpus_jax_sees": ["H100"]})


@pytest.mark.slow
def test_gpu_check_deadline_and_first_step_limit(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(ROOT / ".jax_cache"))
    # A deadline already past: every section is recorded as skipped, nothing is run.
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--smoke", "--out", str(tmp_path / "a"),
                           "--deadline-s", "0.01"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sections = json.loads((tmp_path / "a" / "gpu_check.json").read_text())["sections"]
    assert set(sections) == {"jax_train_xla", "hf_train", "decode"}
    assert all("skipped" in s for s in sections.values()), sections
    # --max-step-s holds the first step (after its compile) too: the arm fails there, the rest still runs.
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--smoke", "--out", str(tmp_path / "b"),
                           "--skip", "hf_train,decode", "--max-step-s", "1e-6"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    arm = json.loads((tmp_path / "b" / "gpu_check.json").read_text())["sections"]["jax_train_xla"]
    assert "the first compiled step took" in arm["error"], arm["error"]
