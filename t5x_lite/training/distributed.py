"""Multi-process start-up: one call, before anything touches a JAX device.

``initialize()`` joins this process to a multi-process JAX run (``jax.distributed``)
when the arguments or the environment say it is one, and does nothing for a
single process. Everything after it (``Trainer``, ``train``) is the same program
on one CPU as on a pod: ``jax.devices()`` then lists every device of every
process, a mesh spans them all, and each process feeds only its own rows of the
global batch (``partitioning.host_batch_to_global``).

Call it first, before ``jax.devices()``, ``jax.device_put`` or any computation::

    from t5x_lite.training import distributed
    distributed.initialize()          # reads the environment; a no-op on one process

GPU cluster (one process per host, or one per GPU)
--------------------------------------------------
Start the same command on every host (or once per GPU) with::

    JAX_COORDINATOR_ADDRESS=10.0.0.1:1234   # host:port of process 0, reachable by all
    JAX_NUM_PROCESSES=4                     # total number of processes
    JAX_PROCESS_ID=0                        # 0 .. JAX_NUM_PROCESSES-1, one per process
    JAX_LOCAL_DEVICE_IDS=0                  # optional: the GPU(s) this process drives
                                            # (one process per GPU: its local GPU index)

or pass the same values as arguments:
``initialize("10.0.0.1:1234", num_processes=4, process_id=0)``. With one process
per host, each process drives all of that host's GPUs; with one per GPU, set
``JAX_LOCAL_DEVICE_IDS`` (or ``local_device_ids=``) so processes do not share a GPU.
Given all three, these settings are the whole story: JAX's launcher detection is
turned off (``cluster_detection_method="deactivate"``), so a process started inside
a SLURM step does not get one GPU chosen by ``SLURM_LOCALID``.
Under SLURM (``srun``, several tasks) or Open MPI (``mpirun``) nothing needs to be
set: ``initialize()`` sees the launcher's variables and lets JAX read the
coordinator, process count and id from them (``JAX_COORDINATOR_PORT`` picks the
port). JAX then assumes one process per GPU and gives each process only the GPU
numbered by its local rank (``SLURM_LOCALID``); for one process per host, launch
with ``--ntasks-per-node=1`` and set ``JAX_LOCAL_DEVICE_IDS=0,1,...,7`` (all the
host's GPUs), or each process will use one GPU only.

TPU pod
-------
Run the same command on every host of the slice (``gcloud compute tpus tpu-vm
ssh NAME --worker=all --command=...``). The TPU runtime knows the topology, so
the call takes no arguments: ``jax.distributed.initialize()``. Here that is
``initialize(auto=True)`` or ``T5X_LITE_DISTRIBUTED=auto`` in the environment;
on GKE (``TPU_WORKER_HOSTNAMES`` lists several hosts) it is detected by itself.

CPU (tests, debugging)
----------------------
Processes on CPU exchange collectives through gloo over TCP
(``jax_cpu_collectives_implementation="gloo"``, set here before the backend starts);
``tests/training/test_multihost.py`` runs two such processes on 127.0.0.1.

``T5X_LITE_DISTRIBUTED=off`` disables all of this (e.g. to debug one process of a
SLURM allocation on its own); it ignores the environment but refuses explicit
arguments (``--num_processes`` etc.), which contradict it.

Bad or incomplete settings raise ``ConfigError`` (a ``ValueError``) naming the
argument's ``t5x_lite train`` flag and its environment variable.
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any, Optional, Sequence

import jax

from t5x_lite.errors import ConfigError

log = logging.getLogger(__name__)

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
ENV_MODE = "T5X_LITE_DISTRIBUTED"  # "auto": always call jax.distributed.initialize(); "off": never

# Each explicit setting by its argument name: ``t5x_lite train``'s flag and the environment variable.
_SOURCES = {
    "coordinator_address": ("--coordinator_address", ENV_COORDINATOR),
    "num_processes": ("--num_processes", ENV_NUM_PROCESSES),
    "process_id": ("--process_id", ENV_PROCESS_ID),
}

_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
_OMPI_URI = "OMPI_MCA_orte_hnp_uri"


def _env_int(name: str, fix: str) -> Optional[int]:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not an integer ({fix})") from None


def _either(name: str) -> str:
    flag, env = _SOURCES[name]
    return f"{flag} or {env}"


def detect_cluster() -> Optional[str]:
    """The multi-process launcher JAX can read its settings from, or None.

    Only launchers that started more than one process count: a one-task SLURM
    job is a single process and needs no distributed runtime.
    """
    launcher = f"set by the launcher; {ENV_MODE}=off ignores launchers"
    if all(v in os.environ for v in _SLURM_VARS) and (_env_int("SLURM_NTASKS", launcher) or 1) > 1:
        return "slurm"
    if _OMPI_URI in os.environ and (_env_int("OMPI_COMM_WORLD_SIZE", launcher) or 1) > 1:
        return "ompi"
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("TPU_PROCESS_ADDRESSES") or ""
    if len([h for h in hosts.split(",") if h.strip()]) > 1:
        return "tpu"
    return None


def _accepts(fn: Any, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no signature to read: let the call itself decide
        return True
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _enable_cpu_collectives() -> None:
    """Cross-process collectives for the CPU backend (gloo over TCP), unless one is chosen already.

    jax 0.10 names the option ``jax_cpu_collectives_implementation`` ("gloo",
    "mpi", "megascale") and already defaults to gloo; older releases defaulted to
    none, which made multi-process CPU computations fail at their first collective.
    It only affects the CPU client, so it is harmless on GPU/TPU hosts.
    """
    if jax.config.jax_cpu_collectives_implementation is None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")


def is_initialized() -> bool:
    return jax.distributed.is_initialized()


def initialize(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
    *,
    auto: Optional[bool] = None,
    local_device_ids: Optional[Sequence[int]] = None,
    **jax_kwargs: Any,
) -> bool:
    """Join a multi-process JAX run when asked to; return whether the distributed runtime is up.

    Settings come from the arguments, else ``JAX_COORDINATOR_ADDRESS`` /
    ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``, else a detected launcher
    (SLURM or Open MPI with several tasks, a multi-host GKE TPU slice), whose
    values ``jax.distributed.initialize()`` reads itself. ``auto=True`` (or
    ``T5X_LITE_DISTRIBUTED=auto``) calls ``jax.distributed.initialize()`` with
    whatever is given and lets JAX detect the rest (a TPU pod on GCE).

    A single process (nothing set, or ``num_processes=1``) is a no-op returning
    False. Calling again after a successful start is a no-op returning True. It
    does not start the XLA backend itself; JAX raises if something already did.
    ``jax_kwargs`` go to ``jax.distributed.initialize`` (``initialization_timeout``,
    ``heartbeat_timeout_seconds``, ``coordinator_bind_address``, ...).
    """
    if jax.distributed.is_initialized():
        return True
    raw_mode = os.environ.get(ENV_MODE, "")
    mode = raw_mode.strip().lower()
    if mode not in ("", "auto", "off"):
        raise ConfigError(f"{ENV_MODE}={raw_mode!r}: use 'auto', 'off' or leave it unset")
    arguments = dict(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)
    if mode == "off":
        # "off" exists to override the environment, but arguments are this run's own request: which one wins
        # is a guess, and guessing "off" would quietly train a fraction of the model on one process.
        given = [f"{_SOURCES[k][0]} {v}" for k, v in arguments.items() if v is not None]
        given += ["auto=True"] if auto else []
        if given:
            raise ConfigError(f"{ENV_MODE}=off disables multi-process start-up, but {', '.join(given)} "
                              f"{'was' if len(given) == 1 else 'were'} given; unset {ENV_MODE} or drop them")
        return False
    if auto is None:
        auto = mode == "auto"

    # Where each value came from, for the messages: "--num_processes 0" or "JAX_NUM_PROCESSES=0".
    origin = {k: f"{_SOURCES[k][0]} {v}" for k, v in arguments.items() if v is not None}
    if not coordinator_address and os.environ.get(ENV_COORDINATOR):
        coordinator_address = os.environ[ENV_COORDINATOR]
        origin["coordinator_address"] = f"{ENV_COORDINATOR}={coordinator_address}"
    coordinator_address = coordinator_address or None
    if num_processes is None:
        num_processes = _env_int(ENV_NUM_PROCESSES, "unset it or pass --num_processes")
        if num_processes is not None:
            origin["num_processes"] = f"{ENV_NUM_PROCESSES}={num_processes}"
    if process_id is None:
        process_id = _env_int(ENV_PROCESS_ID, "unset it or pass --process_id")
        if process_id is not None:
            origin["process_id"] = f"{ENV_PROCESS_ID}={process_id}"
    if num_processes is not None and num_processes < 1:
        raise ConfigError(f"{origin['num_processes']}: the number of processes ({_either('num_processes')}) "
                          "must be >= 1")
    if process_id is not None and process_id < 0:
        raise ConfigError(f"{origin['process_id']}: a process id ({_either('process_id')}) must be >= 0")
    if process_id is not None and num_processes is not None and process_id >= num_processes:
        raise ConfigError(f"{origin['process_id']} is out of range for {origin['num_processes']}: "
                          f"process ids run from 0 to {num_processes - 1}")
    if num_processes == 1 and not auto:
        return False  # one process: nothing to coordinate

    explicit = dict(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)
    cluster = detect_cluster()
    complete = None not in explicit.values()
    if not (complete or auto or cluster):
        given = [origin[k] for k, v in explicit.items() if v is not None]
        if not given:
            return False  # nothing asks for more than one process
        missing = [f"{k} ({_either(k)})" for k, v in explicit.items() if v is None]
        raise ConfigError(
            f"multi-process settings incomplete: {', '.join(given)} but no {' or '.join(missing)}; give all "
            f"three, or run under a launcher JAX detects (SLURM, Open MPI, TPU; or {ENV_MODE}=auto)")

    _enable_cpu_collectives()
    kwargs = {k: v for k, v in explicit.items() if v is not None}
    if local_device_ids is not None:
        kwargs["local_device_ids"] = list(local_device_ids)
    if complete and "cluster_detection_method" not in jax_kwargs:
        # With all three given, JAX would still ask a detected launcher for what is left, local_device_ids:
        # inside a SLURM step that is [SLURM_LOCALID], one GPU per process even with one process per host.
        # JAX_LOCAL_DEVICE_IDS is read before detection, so it still applies.
        if _accepts(jax.distributed.initialize, "cluster_detection_method"):
            kwargs["cluster_detection_method"] = "deactivate"
        elif cluster:
            log.warning("this jax cannot turn off its %s detection: it may pick local devices from the "
                        "launcher; set JAX_LOCAL_DEVICE_IDS to choose them", cluster)
    kwargs.update(jax_kwargs)
    how = "explicit settings" if complete else (cluster or "JAX auto-detection")
    log.info("jax.distributed.initialize via %s: %s", how, kwargs)
    jax.distributed.initialize(**kwargs)
    # Not jax.process_count() here: that would start the backend, and settings such as
    # jax_num_cpu_devices may still be set between this call and the first computation.
    return True


def shutdown() -> None:
    """Leave the distributed runtime (a no-op when not in one); JAX also does this at exit."""
    if jax.distributed.is_initialized():
        jax.distributed.shutdown()


_barriers: dict = {}  # per set of processes: how many barriers they passed (the service wants each key once)


def wait_for_every_process(what: str, processes: Sequence[int], timeout_s: int = 900) -> None:
    """Block until each of ``processes`` (the process indices of a mesh's devices) gets here: the coordination
    service's barrier, no device involved. A no-op for one process or without the distributed runtime.

    gloo, JAX's CPU collectives, gives the other processes 30 s to join a device group's first collective (not
    configurable), so processes that finish compiling further apart than that fail in their first step: seen
    with two processes on a loaded 2-core machine. ``Trainer.step`` waits here once a compiled step is ready.
    """
    group = frozenset(int(p) for p in processes)
    if len(group) < 2 or not jax.distributed.is_initialized():
        return
    from orbax.checkpoint import multihost

    count = _barriers[group] = _barriers.get(group, 0) + 1
    try:
        everyone = group == frozenset(range(jax.process_count()))
        multihost.get_barrier_sync_fn(processes=None if everyone else set(group))(
            key=f"t5x_lite {count} {sorted(group)}: {what}", timeout_ms=timeout_s * 1000)
    except Exception as e:
        raise RuntimeError(f"process {jax.process_index()} waited {timeout_s} s for processes {sorted(group)} to "
                           f"reach this point ({what}); one of them has failed or is still busy: see its log "
                           f"({type(e).__name__}: {e})") from e
