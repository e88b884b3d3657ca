"""The core's modules, their fast tests, and the staged copy of the checkout mutmut runs in.

mutmut names a mutant by its file's path and activates it by the running function's
`__module__`, so the product must sit under the name the tests import it by:
`build/mutation/<module>/cyclic_soft_reset/` holds a copy of the product, beside copies
of `tests/` and `scripts/`, and a pyproject.toml whose `[tool.mutmut]` mutates only that
core module and collects only its fast tests. mutmut's copy (`mutants/`) comes first on
sys.path, so the tests import the mutated package, not the editable install.

Each mutant's tests run in a process forked from a server that has imported the test
modules (mutmut's `collect` warm-up: about 1 s a mutant) and so must not have run a JAX
computation: a test module that computes at import (test_failure.py's PARAMS) starts XLA's
threads in the server, and its forked children then hang in their first compilation until
mutmut's timeout (counted as killed). Such a module's server imports only the libraries
(`warmup = "import"`, `PRELOAD`; each mutant then imports the tests itself, about 4 s).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "mutation"
PACKAGE = "cyclic_soft_reset"
# The product: the root's modules and the libraries (scripts/ and tests/ are not in it).
LIBRARIES = ("reset", "schedules", "early_switching")
# Files the tests read from the checkout's root (README's generated table, the search space).
ROOT_FILES = ("README.md", "tuning_search_space.json")
# Folders the tests read beside the product: docs/ holds the hyperparameter table that
# tests/test_hyperparameters.py compares with the schema.
FOLDERS = ("scripts", "docs")


@dataclasses.dataclass(frozen=True)
class CoreModule:
    """One module of the pure core: the files mutated and the fast tests run on them."""

    name: str
    files: tuple[str, ...]  # Globs relative to the package, as mutmut's only_mutate takes.
    tests: tuple[str, ...]
    # Fast tests that train end to end (seconds per mutant); their modules' pure tests
    # check the same decisions from plain numbers.
    skip: tuple[str, ...] = ()
    # mutmut's fork-server warm-up: "collect" (imports the tests), or "import" (only
    # PRELOAD) where a test module computes with JAX at import.
    warmup: str = "collect"


# Imported once by the fork server of a module with `warmup = "import"`: importing them
# starts no XLA backend, so forking after them is safe; the tests and the product are
# imported by each mutant's process.
PRELOAD = ("numpy", "jax", "jax.numpy", "optax", "flax.linen")
PRELOAD_FILE = "mutmut-preload.txt"

TRAINING_TIME_BUDGET_TESTS = ("plan_stretches", "evaluations_follow_the_clock")
CORE = (
    CoreModule(
        "reset",
        ("reset/*",),
        # test_still.py: reset.peaks, the still first cycle's factor (v7).
        (
            "tests/test_reset.py",
            "tests/test_failure.py",
            "tests/test_optimizer.py",
            "tests/test_still.py",
        ),
        warmup="import",  # test_failure.py computes PARAMS' norm at import.
    ),
    CoreModule(
        "schedules",
        ("schedules/*",),
        # test_fit_first_cycle.py, test_cooldown.py: schedules.budget's rules for a first
        # cycle too long for the budget (fitted, or cooled down), their own fast tests.
        (
            "tests/test_schedules.py",
            "tests/test_time_budget.py",
            "tests/test_fit_first_cycle.py",
            "tests/test_cooldown.py",
            "tests/test_still.py",  # schedules.budget.decay_shrinkage (v7).
        ),
        TRAINING_TIME_BUDGET_TESTS,
    ),
    CoreModule("early_switching", ("early_switching/*",), ("tests/test_early_switching.py",)),
    CoreModule(
        "controller",
        ("controller.py",),
        (
            "tests/test_controller.py",
            "tests/test_time_budget.py",
            "tests/test_rescue.py",
            "tests/test_raise.py",  # The upward rescue, `raised_peaks` (v4).
            "tests/test_cooldown.py",  # The cut first cycle's cooldown, `refit` (v6).
            "tests/test_still.py",  # A still first cycle's raise, `raised_peaks` (v7).
        ),
        TRAINING_TIME_BUDGET_TESTS,
    ),
    # test_controller.py: `plan_summary` (records since v7).
    CoreModule("records", ("records.py",), ("tests/test_records.py", "tests/test_controller.py")),
    CoreModule(
        "hyperparameters",
        ("hyperparameters.py", "hyperparameter_spec.py"),
        ("tests/test_hyperparameters.py", "tests/test_bad_input.py"),
    ),
)
BY_NAME = {module.name: module for module in CORE}


def _toml_list(values) -> str:
    return "[" + ", ".join(f'"{value}"' for value in values) + "]"


def mutmut_config(module: CoreModule) -> str:
    """The `[tool.mutmut]` section for `module`: its files only, its fast tests only
    (`-m "not slow"`, less `module.skip`), mutants forked from a server process that has
    imported the libraries and computed nothing (JAX's threads are not fork-safe)."""
    only = [f"{PACKAGE}/{pattern}" for pattern in module.files]
    pytest_args = ["-m", "not slow", "-p", "no:cacheprovider", "-q"]
    if module.skip:
        pytest_args += ["-k", " and ".join(f"not {name}" for name in module.skip)]
    return "\n".join(
        [
            "",
            "[tool.mutmut]",
            f'source_paths = ["{PACKAGE}"]',
            f"only_mutate = {_toml_list(only)}",
            f"pytest_add_cli_args_test_selection = {_toml_list(module.tests)}",
            f"pytest_add_cli_args = {_toml_list(pytest_args)}",
            f"also_copy = {_toml_list([*FOLDERS, *ROOT_FILES])}",
            'process_isolation = "forkserver"',
            f'forkserver_warmup = "{module.warmup}"',
            f'preload_modules_file = "{PRELOAD_FILE}"',
            "use_git_change_detection = false",
            "",
        ]
    )


def _product_files(root: Path):
    """The product's source files, relative to the root."""
    yield from sorted(p.relative_to(root) for p in root.glob("*.py"))
    for library in LIBRARIES:
        yield from sorted(p.relative_to(root) for p in (root / library).rglob("*.py"))
    yield Path("tuning_search_space.json")


def stage(module: CoreModule, root: Path = ROOT, build: Path = BUILD) -> Path:
    """A fresh staged copy of the checkout for mutating `module`; returns its folder."""
    dest = build / module.name
    if dest.exists():
        shutil.rmtree(dest)
    package = dest / PACKAGE
    for relative in _product_files(root):
        (package / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / relative, package / relative)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("tests", *FOLDERS):
        shutil.copytree(root / folder, dest / folder, ignore=ignore)
    for name in ROOT_FILES:
        shutil.copy2(root / name, dest / name)
    pyproject = (root / "pyproject.toml").read_text()
    (dest / "pyproject.toml").write_text(pyproject + mutmut_config(module))
    (dest / PRELOAD_FILE).write_text("\n".join(PRELOAD) + "\n")
    return dest
