"""Shared pytest setup: CPU-only JAX, quiet logs, a compilation cache shared by all tests."""

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

# XLA:CPU compiles even a tiny T5 in seconds; many tests build the same computations (often from fresh
# closures, which the in-memory cache cannot match), so a persistent cache keyed by HLO saves minutes.
jax.config.update("jax_compilation_cache_dir", str(Path(__file__).resolve().parent.parent / ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
