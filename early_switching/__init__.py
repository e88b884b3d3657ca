"""The early-switch detector (METHOD.md section 5)."""

from .detector import (
    NON_FINITE,
    PLATEAU,
    RISING,
    Decision,
    DetectorConfig,
    DetectorState,
    initial_state,
    replay,
    smooth,
    switch_signal,
    update,
)

__all__ = [
    "NON_FINITE",
    "PLATEAU",
    "RISING",
    "Decision",
    "DetectorConfig",
    "DetectorState",
    "initial_state",
    "replay",
    "smooth",
    "switch_signal",
    "update",
]
