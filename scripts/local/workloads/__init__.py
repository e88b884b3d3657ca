"""The embedded workloads and their registry: every name, CLI choice, default, tiny
version and batch size derives from ``REGISTRY``.

Adding a workload: write ``<name>.py`` beside this file with its ``SklearnWorkload``
subclass and ``ENTRY = WorkloadEntry("<name>", TheClass[, tiny={...}])``, and add
``"<name>"`` to ``_MODULES`` below. Nothing else names workloads.

``tiny`` (a test workload on generated data) and ``log_regression`` (the divergence
experiment's) are not registered: they implement only what the local runner needs.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .base import SklearnWorkload, WorkloadEntry

# One line per registered workload (module name = workload name); the first is the default.
_MODULES = ("digit_sums", "digits", "breast_cancer", "char_lm")

REGISTRY: MappingProxyType[str, WorkloadEntry] = MappingProxyType(
    {
        entry.name: entry
        for entry in (importlib.import_module(f".{m}", __name__).ENTRY for m in _MODULES)
    }
)
WORKLOAD_NAMES: tuple[str, ...] = tuple(REGISTRY)
DEFAULT_WORKLOAD: str = WORKLOAD_NAMES[0]


def entry(name: str) -> WorkloadEntry:
    """The registry entry of ``name``; ValueError listing the valid names."""
    if name not in REGISTRY:
        raise ValueError(f"Unknown workload {name!r}; valid: {', '.join(WORKLOAD_NAMES)}.")
    return REGISTRY[name]


# Targets and budgets set from the reference baseline's runs (scripts.experiments.calibrate).
CALIBRATION_PATH = Path(__file__).with_name("calibration.json")
TARGET_SOURCES = ("calibrated", "hand")


def load_calibration() -> dict[str, dict[str, Any]]:
    """The stored calibration, by workload name ({} before the first calibration)."""
    if not CALIBRATION_PATH.exists():
        return {}
    return json.loads(CALIBRATION_PATH.read_text())


def calibrated_options(name: str) -> dict[str, Any]:
    """The calibrated targets and budget of ``name`` as workload options ({} if none)."""
    stored = load_calibration().get(name)
    if stored is None:
        return {}
    keys = ("validation_target_value", "test_target_value", "max_allowed_runtime_sec")
    return {key: stored[key] for key in keys}


def make_workload(name: str, targets: str = "calibrated", **overrides: Any) -> SklearnWorkload:
    """Build an embedded workload by name; ``overrides`` go to ``WorkloadConfig``.

    ``targets="calibrated"`` (the default) takes the targets and budget the calibration
    set from the reference baseline's runs, unless overridden; ``"hand"`` the hand-set
    values of the workload's module. A calibrated budget belongs to the calibrated
    step_hint and speed, so it is not applied where either is overridden.
    """
    if targets not in TARGET_SOURCES:
        raise ValueError(f"targets must be one of {TARGET_SOURCES}, got {targets!r}.")
    calibrated = calibrated_options(name) if targets == "calibrated" else {}
    if {"step_hint", "step_seconds"} & set(overrides):
        calibrated.pop("max_allowed_runtime_sec", None)
    return entry(name).workload_class(**{**calibrated, **overrides})


def tiny_overrides(name: str) -> dict[str, Any]:
    """Options for a tiny, fast version of a workload (tests, smoke runs)."""
    return dict(entry(name).tiny)


def batch_size(name: str) -> int | None:
    """The global batch size of an embedded workload; None for a name not registered."""
    return REGISTRY[name].batch_size if name in REGISTRY else None
