"""One training run per MODEL_DIR: flock, released when the holder ends, and no lock where unsupported."""

import errno
import fcntl
import logging
import subprocess
import sys

import pytest

from t5x_lite.training import run_lock as run_lock_lib
from t5x_lite.training.checkpoints import CheckpointError
from t5x_lite.training.run_lock import run_lock


def test_a_held_lock_refuses_a_second_run_and_is_released_on_exit(tmp_path):
    with run_lock(tmp_path):
        with pytest.raises(CheckpointError, match=r"another training run is using it \(pid \d+ on .*\); wait"):
            with run_lock(tmp_path):
                pass
    with run_lock(tmp_path):  # released: the next run takes it
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from t5x_lite.training.run_lock import "
                               f"run_lock; cm = run_lock({str(tmp_path)!r}); cm.__enter__(); print('held', "
                               "flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CheckpointError, match=f"pid {holder.pid} on"):
            with run_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(tmp_path):
        pass


def test_where_locks_are_unsupported_the_run_goes_on_with_a_warning(tmp_path, monkeypatch, caplog):
    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with caplog.at_level(logging.WARNING), run_lock(tmp_path):
        pass
    assert "does not support locks" in caplog.text and run_lock_lib.LOCK_FILE in caplog.text


def test_a_lock_file_deleted_under_a_new_lock_is_locked_again(tmp_path, monkeypatch):
    # A run refused at its start deletes the lock file it made, maybe just after another run opened it.
    real, calls = fcntl.flock, []

    def flock_then_the_file_is_deleted(handle, operation):
        real(handle, operation)
        if not calls:
            (tmp_path / run_lock_lib.LOCK_FILE).unlink()
        calls.append(operation)

    monkeypatch.setattr(fcntl, "flock", flock_then_the_file_is_deleted)
    with run_lock(tmp_path) as held:
        assert held and len(calls) == 2
        monkeypatch.setattr(fcntl, "flock", real)
        with pytest.raises(CheckpointError, match="another training run is using it"):
            with run_lock(tmp_path):  # the lock is on the file that is there now
                pass
