"""Multi-process training on one machine: two CPU processes joined by jax.distributed (gloo over TCP).

Each worker (``multihost_worker.py``) has 2 CPU devices, so the run has 4
devices in 2 processes. Two meshes:

- 2 (data) x 2 (model) with FSDP rules: the batch rows and the ``embed`` axis of
  every parameter are split *across the processes*, the tensor-parallel axis
  within each. Each process feeds only its half of the global batch.
- 1 (data) x 4 (model), tensor parallel over both processes: the ``model`` axis
  spans them, so both feed the whole batch.

The losses and final params must equal a single-process, single-device run of
the same global batch to float32 rounding, and the two processes must agree
exactly. Each process also evaluates the final params as ``train`` does during
training: on the mesh, with the params sharded as they trained.

The distributed runtime listens on 127.0.0.1 only (a free port); gloo's own
TCP pairs bind the address the hostname resolves to (127.0.0.1 on a typical
CI machine). Every subprocess has a timeout and is killed on failure.

Also: ``distributed.initialize``'s decisions that need no second process.
"""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from t5x_lite.training import distributed, partitioning

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
WORKER = HERE / "multihost_worker.py"
NUM_PROCESSES = 2
TIMEOUT_S = 240
TOL = 1e-5


def _load_worker():
    spec = importlib.util.spec_from_file_location("multihost_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the worker's own session: only what it started
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


def _start_workers(tmp_path: Path, model_parallel: int, strategy: str) -> list:
    port = _free_port()
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    for var in ("XLA_FLAGS", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                "T5X_LITE_DISTRIBUTED"):
        env.pop(var, None)
    procs = []
    for pid in range(NUM_PROCESSES):
        cmd = [sys.executable, str(WORKER), "--coordinator", f"127.0.0.1:{port}",
               "--num-processes", str(NUM_PROCESSES), "--process-id", str(pid),
               "--devices-per-process", "2", "--model-parallel", str(model_parallel), "--strategy", strategy,
               "--timeout", "60", "--out", str(tmp_path), "--evaluate"]
        out = open(tmp_path / f"stdout_{pid}.txt", "w")
        err = open(tmp_path / f"stderr_{pid}.txt", "w")
        procs.append((subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True),
                      out, err))
    return procs


def _wait(procs, tmp_path: Path, deadline: float) -> list:
    results, failures = [], []
    try:
        for pid, (proc, out, err) in enumerate(procs):
            try:
                rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                rc = None
            out.close(), err.close()
            stdout = (tmp_path / f"stdout_{pid}.txt").read_text()
            stderr = (tmp_path / f"stderr_{pid}.txt").read_text()
            if rc != 0:
                why = f"timed out after {TIMEOUT_S} s" if rc is None else f"exit code {rc}"
                failures.append(f"process {pid}: {why}\n--- stderr (tail)\n{stderr[-3000:]}")
                continue
            results.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for proc, _, _ in procs:
            _kill(proc)
    if failures:
        pytest.fail("multi-process run failed:\n" + "\n".join(failures))
    return results


@pytest.mark.slow
@pytest.mark.parametrize("model_parallel, strategy", [(2, "fsdp"), (4, "data_parallel")],
                         ids=["fsdp_across_processes", "tensor_parallel_across_processes"])
def test_two_processes_match_single_process(tmp_path, model_parallel, strategy):
    try:  # gloo's TCP pairs listen on the address the hostname resolves to
        socket.gethostbyname(socket.gethostname())
    except OSError as e:
        pytest.skip(f"hostname {socket.gethostname()!r} does not resolve ({e}); gloo CPU collectives need it")
    start = time.monotonic()
    procs = _start_workers(tmp_path, model_parallel, strategy)
    try:
        # The reference runs here, in this (single-device) process, while the workers compile.
        worker = _load_worker()
        ref = worker.train_steps(worker.global_batch(), mesh_config=partitioning.MeshConfig(data=1, model=1),
                                 strategy="data_parallel", devices=jax.devices()[:1], evaluate=True)
        ref_losses, ref_params, ref_eval = ref["losses"], ref["params"], ref["eval_metrics"]
    except BaseException:
        for proc, _, _ in procs:
            _kill(proc)
        raise
    results = _wait(procs, tmp_path, start + TIMEOUT_S)
    elapsed = time.monotonic() - start

    assert [r["process_index"] for r in results] == list(range(NUM_PROCESSES))
    for r in results:
        assert r["joined"] and r["process_count"] == NUM_PROCESSES and r["cpu_collectives"] == "gloo", r
        assert r["local_devices"] == 2 and r["global_devices"] == 4, r
        assert len(r["losses"]) == worker.STEPS, r
        assert r["barriers"] == 1, r  # the processes met once the step had compiled, before its collectives
        # every process's data position gathered (what a checkpoint keeps), the rows check passed
        assert sorted(r["gathered_positions"], key=lambda g: g["process"]) == [
            {"process": p["process_index"], "shard": p["data_shard"]} for p in results], r
        if strategy == "fsdp":  # each process feeds its half; parameters really are split across the two
            assert r["data_shard"] == [r["process_index"], NUM_PROCESSES], r
            assert r["host_rows"] == worker.GLOBAL_BATCH // NUM_PROCESSES, r
            assert any("'data'" in spec for spec in r["param_specs"]), r["param_specs"]
        else:  # one model over both processes: both feed every row; weights split 4 ways over the model axis
            assert r["data_shard"] == [0, 1] and r["host_rows"] == worker.GLOBAL_BATCH, r
            assert any("'model'" in spec for spec in r["param_specs"]), r["param_specs"]
        # evaluation during training, with the params spread over both processes: the same metrics as in one
        # its loss and decode got the params sharded as trained, were traced under training's rules, and each
        # batch's 4 rows were split over the data axis: 2 per device on FSDP's 2 x 2 mesh, all 4 on the 1 x 4 one
        calls = r["eval_metrics"].pop("calls")
        rows = 2 if strategy == "fsdp" else 4
        assert calls["loss"] == [[True, True, rows]] and calls["decode"] == [[True, True, rows]], calls
        assert r["eval_metrics"].pop("gathered_whole") is True, r
        # 3 rows do not split over FSDP's 2 data devices (nor does a scalar): left for jit to replicate
        left = r["eval_metrics"].pop("left_on_host")
        assert left == (["odd", "scalar"] if strategy == "fsdp" else ["scalar"]), left
        assert r["eval_metrics"]["num_examples"] == 4 and "accuracy" in r["eval_metrics"], r
        assert r["eval_metrics"]["accuracy"] == ref_eval["accuracy"], (r["eval_metrics"], ref_eval)
        assert abs(r["eval_metrics"]["loss"] - ref_eval["loss"]) < TOL, (r["eval_metrics"], ref_eval)
    # Both processes hold the same replicated loss, bit for bit.
    assert results[0]["losses"] == results[1]["losses"]

    loss_diff = max(abs(a - b) for a, b in zip(results[0]["losses"], ref_losses))
    params = [np.load(tmp_path / f"params_{i}.npz") for i in range(NUM_PROCESSES)]
    assert set(params[0].files) == set(ref_params) == set(params[1].files)
    param_diff = max(float(np.max(np.abs(params[0][k] - ref_params[k]))) for k in ref_params)
    cross_diff = max(float(np.max(np.abs(params[0][k] - params[1][k]))) for k in ref_params)
    moved = max(float(np.max(np.abs(ref_params[k]))) for k in ref_params)
    print(f"multihost: {elapsed:.1f} s; losses {results[0]['losses']} vs {ref_losses}; "
          f"max diff loss {loss_diff:.1e}, params {param_diff:.1e}, between processes {cross_diff:.1e}")
    assert moved > 0
    assert loss_diff < TOL
    assert param_diff < TOL
    assert cross_diff == 0.0


# --------------------------------------------------------------------------- initialize(): no second process


@pytest.fixture
def clean_env(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "T5X_LITE_DISTRIBUTED",
                "OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES",
                *distributed._SLURM_VARS):
        monkeypatch.delenv(var, raising=False)
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    return calls


def test_initialize_is_a_noop_for_one_process(clean_env, monkeypatch):
    assert distributed.initialize() is False
    assert distributed.initialize("127.0.0.1:1234", num_processes=1, process_id=0) is False
    monkeypatch.setenv("JAX_NUM_PROCESSES", "1")
    assert distributed.initialize() is False
    # A one-task SLURM job is one process.
    for var, value in zip(distributed._SLURM_VARS, ("7", "node1", "1", "0", "0")):
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("JAX_NUM_PROCESSES")
    assert distributed.detect_cluster() is None and distributed.initialize() is False
    assert clean_env == []


def test_initialize_reads_env_and_detects_launchers(clean_env, monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    assert distributed.initialize(initialization_timeout=5) is True
    assert clean_env[-1] == dict(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=3,
                                 cluster_detection_method="deactivate", initialization_timeout=5)
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(var)
    # SLURM with several tasks: JAX reads the rest itself (no arguments).
    for var, value in zip(distributed._SLURM_VARS, ("7", "node[1-2]", "2", "1", "0")):
        monkeypatch.setenv(var, value)
    assert distributed.detect_cluster() == "slurm"
    assert distributed.initialize() is True and clean_env[-1] == {}
    for var in distributed._SLURM_VARS:
        monkeypatch.delenv(var)
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "host-0,host-1")
    assert distributed.detect_cluster() == "tpu"
    monkeypatch.delenv("TPU_WORKER_HOSTNAMES")
    # A TPU pod on GCE: opt in, and jax.distributed.initialize() gets no arguments.
    monkeypatch.setenv("T5X_LITE_DISTRIBUTED", "auto")
    assert distributed.initialize() is True and clean_env[-1] == {}
    monkeypatch.setenv("T5X_LITE_DISTRIBUTED", "off")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    assert distributed.initialize() is False and len(clean_env) == 3


def test_initialize_errors(clean_env, monkeypatch):
    from t5x_lite.errors import ConfigError

    with pytest.raises(ConfigError, match=r"incomplete: --num_processes 2 but no coordinator_address "
                                          r"\(--coordinator_address or JAX_COORDINATOR_ADDRESS\) or process_id"):
        distributed.initialize(num_processes=2)
    monkeypatch.setenv("JAX_PROCESS_ID", "zero")
    with pytest.raises(ConfigError, match=r"JAX_PROCESS_ID='zero' is not an integer \(unset it or pass --process_id"):
        distributed.initialize()
    monkeypatch.delenv("JAX_PROCESS_ID")
    monkeypatch.setenv("T5X_LITE_DISTRIBUTED", "Yes")
    with pytest.raises(ConfigError, match="T5X_LITE_DISTRIBUTED='Yes': use 'auto', 'off'"):
        distributed.initialize()
    monkeypatch.delenv("T5X_LITE_DISTRIBUTED")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "0")
    with pytest.raises(ConfigError, match=r"JAX_NUM_PROCESSES=0: .*\(--num_processes or JAX_NUM_PROCESSES\) must be"):
        distributed.initialize()
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    with pytest.raises(ConfigError, match="--process_id 4 is out of range for JAX_NUM_PROCESSES=4: .* 0 to 3"):
        distributed.initialize("10.0.0.1:1234", process_id=4)
    with pytest.raises(ConfigError, match="--process_id 2 is out of range for --num_processes 1"):
        distributed.initialize(num_processes=1, process_id=2)  # one process, but a wrong id is still wrong
    monkeypatch.setenv("JAX_PROCESS_ID", "-1")
    with pytest.raises(ConfigError, match=r"JAX_PROCESS_ID=-1: a process id \(--process_id or JAX_PROCESS_ID\)"):
        distributed.initialize()
    monkeypatch.delenv("JAX_PROCESS_ID")
    monkeypatch.delenv("JAX_NUM_PROCESSES")
    for var, value in zip(distributed._SLURM_VARS, ("7", "node[1-2]", "2x", "1", "0")):
        monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match="SLURM_NTASKS='2x' is not an integer .*T5X_LITE_DISTRIBUTED=off"):
        distributed.initialize()
    assert clean_env == []


def test_off_refuses_explicit_arguments(clean_env, monkeypatch):
    from t5x_lite.errors import ConfigError

    monkeypatch.setenv("T5X_LITE_DISTRIBUTED", "off")
    with pytest.raises(ConfigError, match="T5X_LITE_DISTRIBUTED=off .* but --coordinator_address 10.0.0.1:1234, "
                                          "--num_processes 2, --process_id 0 were given"):
        distributed.initialize("10.0.0.1:1234", 2, 0)
    with pytest.raises(ConfigError, match="but --process_id 0 was given"):
        distributed.initialize(process_id=0)
    with pytest.raises(ConfigError, match="but auto=True was given"):
        distributed.initialize(auto=True)
    # The environment's settings are what "off" is for overriding: still ignored.
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    assert distributed.initialize() is False
    assert clean_env == []


def test_complete_settings_turn_off_launcher_detection(clean_env, monkeypatch):
    # Inside a SLURM step JAX would fill local_device_ids from SLURM_LOCALID: one GPU per process.
    for var, value in zip(distributed._SLURM_VARS, ("7", "node[1-2]", "2", "1", "0")):
        monkeypatch.setenv(var, value)
    assert distributed.initialize("10.0.0.1:1234", 2, 1) is True
    assert clean_env[-1] == dict(coordinator_address="10.0.0.1:1234", num_processes=2, process_id=1,
                                 cluster_detection_method="deactivate")
    assert distributed.initialize() is True and clean_env[-1] == {}  # partial: the launcher fills the rest
    assert distributed.initialize("10.0.0.1:1234", 2, 1, cluster_detection_method="slurm") is True
    assert clean_env[-1]["cluster_detection_method"] == "slurm"  # the caller's choice stands


def test_complete_settings_with_a_jax_that_cannot_deactivate(clean_env, monkeypatch, caplog):
    calls = []

    def old_initialize(coordinator_address=None, num_processes=None, process_id=None, local_device_ids=None):
        calls.append(dict(coordinator_address=coordinator_address, num_processes=num_processes,
                          process_id=process_id))

    monkeypatch.setattr(jax.distributed, "initialize", old_initialize)
    for var, value in zip(distributed._SLURM_VARS, ("7", "node[1-2]", "2", "1", "0")):
        monkeypatch.setenv(var, value)
    with caplog.at_level("WARNING", logger="t5x_lite.training.distributed"):
        assert distributed.initialize("10.0.0.1:1234", 2, 1) is True
    assert calls == [dict(coordinator_address="10.0.0.1:1234", num_processes=2, process_id=1)]
    assert "JAX_LOCAL_DEVICE_IDS" in caplog.text


def test_installed_jax_can_deactivate_detection():
    assert distributed._accepts(jax.distributed.initialize, "cluster_detection_method")
    assert not distributed._accepts(lambda coordinator_address=None: None, "cluster_detection_method")


def test_initialize_is_idempotent(clean_env, monkeypatch):
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
    assert distributed.initialize("10.0.0.1:1234", 2, 0) is True
    assert clean_env == []


# ------------------------------------------------------------- per-process data positions and shared rows


def _two_processes(theirs: np.ndarray):
    """A stand-in for process_allgather in process 0 of 2, whose other process contributes ``theirs``."""
    def allgather(x):
        x = np.asarray(x)
        other = np.asarray(theirs(x) if callable(theirs) else theirs, x.dtype).reshape(x.shape)
        return np.stack([x, other])
    return allgather


def test_each_process_keeps_its_own_data_position(tmp_path):
    # Only process 0 writes the checkpoint's JSON, and a packed pipeline's position differs between shards
    # (grain's next_index 15 in one, 13 in the other after 3 batches): every process's is gathered and kept,
    # with the slice it fed.
    from t5x_lite.training import train as train_lib

    mine = {"shard": [0, 2], "iterator": {"parent": {"next_index": 15}}}
    theirs = {"shard": [1, 2], "iterator": {"parent": {"next_index": 13}}}
    raw = json.dumps(theirs).encode()

    def other(x):  # the other process's length, then its padded bytes
        if x.ndim == 0:
            return len(raw)
        padded = np.zeros(x.shape, np.uint8)
        padded[:len(raw)] = np.frombuffer(raw, np.uint8)
        return padded

    states = train_lib._every_process(mine, allgather=_two_processes(other))
    assert states == [mine, theirs]
    saved = {"iterators": states, "run": {"processes": 2, "data_slices": 2}}
    run = {"processes": 2, "data_slices": 2}
    assert train_lib._resumable_data_state(saved, run, tmp_path, (0, 2)) == mine["iterator"]
    assert train_lib._resumable_data_state(saved, run, tmp_path, (1, 2)) == theirs["iterator"]
    # Resumed with the model axis across both processes: both feed slice (0, 1), which no process fed before;
    # both must take one and the same position, or they would feed different rows into one slice.
    shared = {"processes": 2, "data_slices": 1}
    assert train_lib._resumable_data_state(saved, shared, tmp_path, (0, 1)) == mine["iterator"]
    # checkpoints written before each process's position was kept: the one position there is
    old = {"iterator": mine["iterator"], "run": {}}
    assert train_lib._resumable_data_state(old, run, tmp_path, (1, 2)) == mine["iterator"]


def test_processes_feeding_one_slice_must_read_the_same_rows():
    from t5x_lite.data.sources import DataError
    from t5x_lite.training import train as train_lib

    batch = {"encoder_input_tokens": np.arange(12, dtype=np.int32).reshape(3, 4)}
    other = {"encoder_input_tokens": batch["encoder_input_tokens"] + 1}
    seen = []  # this process's payload: [process index, slice index, digest of its rows]
    train_lib._check_shared_rows(other, (0, 1), allgather=lambda x: seen.append(np.asarray(x)) or np.stack([x]))
    _, _, other_digest = seen[0]
    train_lib._check_shared_rows(batch, (0, 1), allgather=_two_processes(lambda x: [1, x[1], x[2]]))  # same rows
    with pytest.raises(DataError, match=r"processes \[0, 1\] feed the same slice 0 of the batch but read "
                                        r"different rows"):
        train_lib._check_shared_rows(batch, (0, 1), allgather=_two_processes([1, 0, other_digest]))
    # different slices may differ (data parallelism)
    train_lib._check_shared_rows(batch, (0, 2), allgather=_two_processes([1, 1, other_digest]))


def test_waiting_for_other_processes_is_a_noop_alone_and_names_them_when_they_never_come(monkeypatch):
    from orbax.checkpoint import multihost

    def unexpected(**kwargs):
        raise AssertionError("no barrier for one process")

    monkeypatch.setattr(multihost, "get_barrier_sync_fn", unexpected)
    distributed.wait_for_every_process("alone", [0])  # one process: nothing to wait for
    distributed.wait_for_every_process("alone", [0, 1])  # no distributed runtime: nothing to wait with

    def never_met(**kwargs):
        def barrier(*, key, timeout_ms):
            raise RuntimeError(f"DEADLINE_EXCEEDED: barrier {key} timed out after {timeout_ms} ms")
        return barrier

    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(multihost, "get_barrier_sync_fn", never_met)
    with pytest.raises(RuntimeError, match=r"waited 5 s for processes \[0, 1\] to reach this point \(the step is "
                                           r"compiled\); one of them has failed or is still busy"):
        distributed.wait_for_every_process("the step is compiled", [1, 0], timeout_s=5)
