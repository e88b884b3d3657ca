"""The early-switch detector (METHOD.md section 5)."""

from .detector import (
    BLOW_UP,
    NON_FINITE,
    PLATEAU,
    RISING,
    Decision,
    DetectorConfig,
    DetectorState,
    guard,
    initial_state,
    replay,
    smooth,
    switch_signal,
    update,
)

__all__ = [
    "BLOW_UP",
    "NON_FINITE",
    "PLATEAU",
    "RISING",
    "Decision",
    "DetectorConfig",
    "DetectorState",
    "guard",
    "initial_state",
    "replay",
    "smooth",
    "switch_signal",
    "update",
]
