"""One training run per MODEL_DIR: a second one would save over the first one's checkpoints.

The lock is ``flock`` on ``MODEL_DIR/t5x_lite.lock``, which the kernel releases
when the holding process ends however it ends (SIGKILL included), so a crashed
run never leaves a stale lock. Process 0 takes it for the whole job and tells the
other processes whether it got it, so that every host stops with the same error
instead of waiting for process 0 at the next collective step.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from pathlib import Path
from typing import Iterator, Optional, TextIO

import jax
import numpy as np

from t5x_lite.training.checkpoints import CheckpointError

LOCK_FILE = "t5x_lite.lock"
# flock is not supported everywhere (NFS mounted with nolock, some FUSE file systems): run unlocked there.
_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)

log = logging.getLogger(__name__)


@contextlib.contextmanager
def run_lock(model_dir: str | Path) -> Iterator[None]:
    """Hold ``model_dir``'s lock for the duration; ``CheckpointError`` on every process if a run holds it."""
    handle, refusal = (None, None)
    if jax.process_index() == 0:
        handle, refusal = _try_lock(Path(model_dir))
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        refused = multihost_utils.broadcast_one_to_all(np.int32(refusal is not None))
        if refused and refusal is None:
            refusal = f"{model_dir}: another training run is using it (see process 0's error)"
    if refusal is not None:
        raise CheckpointError(refusal)
    try:
        yield
    finally:
        if handle is not None:
            handle.close()  # closing the file releases its lock


def _try_lock(model_dir: Path) -> tuple[Optional[TextIO], Optional[str]]:
    """(open locked file, None), (None, None) where locks are unsupported, or (None, why it is refused)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        return None, None
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / LOCK_FILE
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        return None, (f"{model_dir}: another training run is using it ({holder}); wait for it to finish, "
                      "or use another MODEL_DIR")
    except OSError as e:
        handle.close()
        if e.errno in _UNSUPPORTED:
            log.warning("%s: this file system does not support locks (%s); nothing stops a second run from "
                        "using this MODEL_DIR at the same time", path, e.strerror)
            return None, None
        return None, f"{path}: cannot lock it ({e.strerror})"
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    return handle, None
