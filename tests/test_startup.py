"""The glibc malloc settings keep large freed blocks mapped (no fresh page faults on reuse)."""

import os
import subprocess
import sys

import pytest

_PROBE = r"""
import os, resource, sys
import numpy as np
from t5x_lite import startup
tuned = startup.tune_malloc()
np._core.multiarray._set_madvise_hugepage(False)  # count 4 KiB pages, as XLA's own buffers get
np.ones(16 << 20, np.float32)  # 64 MiB allocated, touched, freed: as a train step's temporaries
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    np.ones(16 << 20, np.float32)
print(tuned, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 10)
"""


def _probe(**env) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE], env=dict(os.environ, **env), capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tuned_process_reuses_freed_memory_without_page_faults():
    tuned, faults = _probe()
    untuned, default_faults = _probe(T5X_LITE_MALLOC_TUNING="0")
    assert tuned and not untuned
    # 64 MiB is 16,384 pages: glibc's default mmaps and unmaps the block each time.
    assert default_faults > 10_000
    assert faults < 100


_CACHE_PROBE = r"""
import jax
from t5x_lite import startup
print(startup.enable_compilation_cache(), jax.config.jax_compilation_cache_max_size)
"""


def _cache_probe(**env) -> list[str]:
    env = {k: v for k, v in dict(os.environ, **env).items() if v is not None}
    return subprocess.run([sys.executable, "-c", _CACHE_PROBE], env=env, capture_output=True, text=True,
                          check=True).stdout.split()


def test_compilation_cache_directory_precedence(tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    assert _cache_probe(T5X_LITE_COMPILATION_CACHE=str(ours), JAX_COMPILATION_CACHE_DIR="") == [
        str(ours), str(4 << 30)]
    assert ours.is_dir()
    # A directory the user gave JAX itself wins, and its size limit is left alone.
    assert _cache_probe(T5X_LITE_COMPILATION_CACHE=str(ours), JAX_COMPILATION_CACHE_DIR=str(theirs)) == [
        str(theirs), "-1"]
    assert _cache_probe(T5X_LITE_COMPILATION_CACHE="0", JAX_COMPILATION_CACHE_DIR="") == ["None", "-1"]
