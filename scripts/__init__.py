"""Command-line tools (this folder) and their libraries: `local/` (the local runner, the
embedded workloads, plots) and `experiments/` (the evidence grid and other experiments).

The tools import the project as `cyclic_soft_reset`, the name `make` installs the checkout
under (editable). Run from a checkout where it is not installed (AlgoPerf's venv, an offline
GPU machine), the checkout itself becomes that package here, as submission.py's fallback
makes it for AlgoPerf's runner: nothing is imported (no jax), only the name is registered.
"""

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

_PACKAGE = "cyclic_soft_reset"

if _PACKAGE not in sys.modules and importlib.util.find_spec(_PACKAGE) is None:
    _spec = importlib.machinery.ModuleSpec(_PACKAGE, None, is_package=True)
    _spec.submodule_search_locations = [str(Path(__file__).resolve().parents[1])]
    sys.modules[_PACKAGE] = importlib.util.module_from_spec(_spec)
