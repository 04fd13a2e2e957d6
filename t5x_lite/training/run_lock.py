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
def run_lock(model_dir: str | Path) -> Iterator[bool]:
    """Hold ``model_dir``'s lock for the duration; ``CheckpointError`` on every process if a run holds it.
    Yields whether this process holds it (False on other processes and where locks are unsupported)."""
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
        yield handle is not None
    finally:
        if handle is not None:
            handle.close()  # closing the file releases its lock


def _try_lock(model_dir: Path) -> tuple[Optional[TextIO], Optional[str]]:
    """(open locked file, None), (None, None) where locks are unsupported, or (None, why it is refused)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        return None, None
    path = model_dir / LOCK_FILE
    for _ in range(10):
        model_dir.mkdir(parents=True, exist_ok=True)
        try:
            handle = open(path, "a+")
        except FileNotFoundError:  # a refused run removed the directory it had made: make it again
            continue
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
        if _same_file(handle, path):
            break
        # A run refused at its start deletes the lock file it made (train's cleanup); a lock on the file it
        # deleted guards nothing, so lock the one there now.
        handle.close()
    else:
        return None, f"{path}: cannot lock it (the file kept being replaced)"
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    return handle, None


def _same_file(handle: TextIO, path: Path) -> bool:
    try:
        here, there = os.fstat(handle.fileno()), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
