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
SLURM allocation on its own).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional, Sequence

import jax

log = logging.getLogger(__name__)

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
ENV_MODE = "T5X_LITE_DISTRIBUTED"  # "auto": always call jax.distributed.initialize(); "off": never

_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
_OMPI_URI = "OMPI_MCA_orte_hnp_uri"


def _env_int(name: str) -> Optional[int]:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer") from None


def detect_cluster() -> Optional[str]:
    """The multi-process launcher JAX can read its settings from, or None.

    Only launchers that started more than one process count: a one-task SLURM
    job is a single process and needs no distributed runtime.
    """
    if all(v in os.environ for v in _SLURM_VARS) and (_env_int("SLURM_NTASKS") or 1) > 1:
        return "slurm"
    if _OMPI_URI in os.environ and (_env_int("OMPI_COMM_WORLD_SIZE") or 1) > 1:
        return "ompi"
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("TPU_PROCESS_ADDRESSES") or ""
    if len([h for h in hosts.split(",") if h.strip()]) > 1:
        return "tpu"
    return None


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
    mode = os.environ.get(ENV_MODE, "").strip().lower()
    if mode not in ("", "auto", "off"):
        raise ValueError(f"{ENV_MODE}={mode!r}: use 'auto', 'off' or leave it unset")
    if mode == "off":
        return False
    if auto is None:
        auto = mode == "auto"

    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
    if num_processes is None:
        num_processes = _env_int(ENV_NUM_PROCESSES)
    if process_id is None:
        process_id = _env_int(ENV_PROCESS_ID)
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if num_processes == 1 and not auto:
        return False  # one process: nothing to coordinate

    explicit = dict(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)
    cluster = detect_cluster()
    complete = None not in explicit.values()
    if not (complete or auto or cluster):
        given = [k for k, v in explicit.items() if v is not None]
        if not given:
            return False  # nothing asks for more than one process
        missing = [k for k, v in explicit.items() if v is None]
        raise ValueError(
            f"distributed.initialize: got {', '.join(given)} but not {', '.join(missing)}; set all three "
            f"(arguments or {ENV_COORDINATOR} / {ENV_NUM_PROCESSES} / {ENV_PROCESS_ID}), or run under a "
            f"launcher JAX detects (SLURM, Open MPI, TPU; {ENV_MODE}=auto)")

    _enable_cpu_collectives()
    kwargs = {k: v for k, v in explicit.items() if v is not None}
    if local_device_ids is not None:
        kwargs["local_device_ids"] = list(local_device_ids)
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
