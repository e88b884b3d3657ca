"""Contestants: AlgoPerf submission modules the local runner races, and how to load one.

A contestant is any module with AlgoPerf's submission interface (`get_batch_size`,
`init_optimizer_state`, `update_params`, `data_selection`, optionally `prepare_for_eval`)
plus the hyperparameters it is run with (None under self-tuning). The registry names the
ones the grids use; `load_submission` takes a name of it or a path to any submission file,
as the official runner's `--submission_path` does (for instance AlgoPerf's own baselines in
an AlgoPerf tree: `algoperf_contestant`).
"""

from __future__ import annotations

import collections
import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[3]


class Contestant(NamedTuple):
    """A submission file and the hyperparameters the runner hands it."""

    path: Path
    hyperparameters: Any = None


REGISTRY: MappingProxyType[str, Contestant] = MappingProxyType(
    {
        # The project's submission; the grids' variants add their overrides.
        "ours": Contestant(ROOT / "submission.py"),
        # AlgoPerf's self-tuning NAdamW baseline, the project's own copy of its algorithm.
        "nadamw_baseline": Contestant(Path(__file__).with_name("nadamw_baseline.py")),
        # The field's leader: Schedule-Free AdamW, the JAX port's self-tuning setting.
        "schedule_free_adamw": Contestant(Path(__file__).with_name("schedule_free_adamw.py")),
    }
)
CONTESTANT_NAMES: tuple[str, ...] = tuple(REGISTRY)

# Where AlgoPerf's external-tuning JAX baseline lives in its repository.
ALGOPERF_NADAMW = Path("algorithms/baselines/external_tuning/jax_nadamw_full_budget.py")


def load_submission(path_or_name: str | os.PathLike) -> ModuleType:
    """The submission module for a registered name or a path to a submission file.

    The project's `submission.py` is the installed `cyclic_soft_reset.submission` (one
    module object per process, the one the tests and tools import; the runner needs the
    module, not AlgoPerf's load by path, which `scripts/algoperf_checks.py` and
    tests/test_package.py exercise); any other file is imported under a name made from its
    path, so two files called `submission.py` never collide.
    """
    key = str(path_or_name)
    path = REGISTRY[key].path if key in REGISTRY else Path(key)
    path = path.resolve()
    if not path.is_file():
        raise ValueError(
            f"--submission {key!r}: no such file; give a submission file's path or one of "
            f"{', '.join(CONTESTANT_NAMES)}."
        )
    if path == (ROOT / "submission.py").resolve():
        module = importlib.import_module("cyclic_soft_reset.submission")
        if Path(module.__file__).resolve() != path:  # A venv installed from another checkout.
            raise ImportError(
                f"cyclic_soft_reset.submission is {module.__file__}, not {path}: install this "
                f"checkout in this environment (pip install -e {ROOT}) or use its own venv."
            )
        return module
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    name = f"_contestant_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    missing = [f for f in ("init_optimizer_state", "update_params") if not hasattr(module, f)]
    if missing:
        raise ValueError(f"--submission {key!r} is not an AlgoPerf submission: no {missing}.")
    return module


def unavailable(path_or_name: str | os.PathLike) -> str | None:
    """Why a contestant cannot run in this environment (its module's `UNAVAILABLE`, e.g.
    Schedule-Free AdamW under an optax without it); None when it can."""
    if str(path_or_name) == "ours":
        return None
    return getattr(load_submission(path_or_name), "UNAVAILABLE", None)


def algoperf_contestant(algoperf_dir: str | os.PathLike) -> Contestant:
    """AlgoPerf's own NAdamW baseline from an AlgoPerf work tree: the external-tuning JAX
    file (its self-tuning twin fails at AlgoPerf's head), given the self-tuning HPARAMS as
    its hyperparameters, which is the self-tuning baseline's algorithm."""
    from scripts.local.contestants.nadamw_baseline import HPARAMS

    path = Path(algoperf_dir) / ALGOPERF_NADAMW
    if not path.is_file():
        raise ValueError(f"No AlgoPerf NAdamW baseline at {path} (is {algoperf_dir} AlgoPerf?).")
    hparams = collections.namedtuple("Hyperparameters", sorted(HPARAMS))(**HPARAMS)
    return Contestant(path, hparams)
