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


def make_workload(name: str, **overrides: Any) -> SklearnWorkload:
    """Build an embedded workload by name; ``overrides`` go to ``WorkloadConfig``."""
    return entry(name).workload_class(**overrides)


def tiny_overrides(name: str) -> dict[str, Any]:
    """Options for a tiny, fast version of a workload (tests, smoke runs)."""
    return dict(entry(name).tiny)


def batch_size(name: str) -> int | None:
    """The global batch size of an embedded workload; None for a name not registered."""
    return REGISTRY[name].batch_size if name in REGISTRY else None
