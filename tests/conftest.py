"""Shared test set-up: the package, a persistent XLA compilation cache, reproducible
property tests.

The tests import the project as the installed package `cyclic_soft_reset` (`make test`
installs the checkout in editable mode). Where it is not installed (AlgoPerf's own venv,
in which `make algoperf-checks` runs tests/test_algoperf*.py from the project root), the
checkout's submission.py is loaded first, as AlgoPerf's runner loads it: its fallback
registers the checkout as the package.

Compiling dominates the run time of small CPU tests (about 0.5 s per computation on
2 cores). The cache lives in one temporary directory per session and is inherited by
the subprocesses the tests start (fresh processes for preemption and device tests), so
each computation is compiled once.
"""

import importlib
import importlib.util
import os
import tempfile

import jax

if importlib.util.find_spec("cyclic_soft_reset") is None:
    importlib.import_module("submission")  # The checkout (the project root) on sys.path.

_CACHE = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="jax-test-cache-")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

try:  # Property tests draw the same examples on every run: CI results are reproducible.
    from hypothesis import settings

    settings.register_profile("reproducible", derandomize=True, deadline=None)
    settings.load_profile("reproducible")
except ImportError:  # An environment without the test extras (e.g. AlgoPerf's own venv).
    pass
