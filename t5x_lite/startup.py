"""Process settings the CLI applies first thing: glibc malloc tuning and JAX's compilation cache.

**Malloc.** glibc settings that keep XLA:CPU's per-step buffers mapped between steps.

XLA:CPU allocates a step's temporaries with ``malloc`` and frees them when the
step ends. With glibc's defaults, large blocks are ``mmap``-ed and unmapped
every time and worker threads spread over many arenas whose heaps are
trimmed, so every step faults in hundreds of MB of fresh, zeroed pages: 87k
minor page faults per step for the quickstart model, 1.2M (about 4.5 GB) for
T5 1.1 small at batch 8. One arena, no ``mmap`` for large blocks and no
trimming keep that memory mapped; in benchmarks/RESULTS.md the train step then
runs 28% (quickstart model) and 48% (T5 small) faster on a 2-core CPU. The price is
that freed memory stays with the process until it exits, which a training
process does not mind.

The arena limit only counts if it is set before JAX's CPU client starts its
threads (a thread picks its arena on its first allocation), so the CLI calls
``tune_malloc()`` first thing. It does nothing off glibc, or with
``T5X_LITE_MALLOC_TUNING=0``.

**Compilation cache.** JAX's persistent cache keeps compiled programs on disk, so a
second run of the same model and shapes (a resumed job, the next cell of a
sweep, an eval after training) skips XLA's compile (programs that took over a
second to compile; on GPUs, JAX caches XLA's autotuning results beside them).
``enable_compilation_cache()``, which the CLI calls for train, eval and infer,
points it at ``$T5X_LITE_COMPILATION_CACHE`` (default ``~/.cache/t5x_lite/jax``,
capped at 4 GiB, least recently used entries evicted) unless JAX already has a
cache directory (``JAX_COMPILATION_CACHE_DIR``); ``T5X_LITE_COMPILATION_CACHE=0``
turns it off.

From a notebook, call ``prepare_process()`` (both) before the first JAX computation.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path
from typing import Optional

# mallopt(3) parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_applied = False
CACHE_MAX_BYTES = 4 << 30


def tune_malloc() -> bool:
    """Apply the settings once per process; True when glibc accepted them."""
    global _applied
    if _applied:
        return True
    if os.environ.get("T5X_LITE_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # Trim threshold -1 disables trimming (mallopt(3)); mmap max 0 serves large blocks from the heap.
    _applied = all(mallopt(param, value) == 1 for param, value in
                   ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
    return _applied


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "t5x_lite" / "jax"


def enable_compilation_cache() -> Optional[str]:
    """Turn on JAX's persistent compilation cache; returns the directory in use (None: off)."""
    import jax

    setting = os.environ.get("T5X_LITE_COMPILATION_CACHE", "")
    if setting == "0":
        return None
    if jax.config.jax_compilation_cache_dir:  # the user's own choice (JAX_COMPILATION_CACHE_DIR) wins
        return jax.config.jax_compilation_cache_dir
    path = Path(setting).expanduser() if setting else default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only home, say: run without a cache rather than fail
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    if jax.config.jax_compilation_cache_max_size == -1:
        jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
    return str(path)


def prepare_process() -> None:
    """Both settings, for a process that does not start through the CLI (a notebook, a script)."""
    tune_malloc()
    enable_compilation_cache()
