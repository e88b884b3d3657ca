"""Reset strategies and the tau math (METHOD.md section 4)."""

from .moments import all_finite, moment_states, moments_finite, scale_moments
from .strategies import (
    STRATEGIES,
    ResetStrategy,
    TrainState,
    blend,
    full_reset,
    get_strategy,
    is_finite_state,
    none_reset,
    params_only_reset,
    soft_reset,
)
from .tau import TAU_METRICS, better_metric, tau, tau_metric

__all__ = [
    "STRATEGIES",
    "TAU_METRICS",
    "ResetStrategy",
    "TrainState",
    "all_finite",
    "better_metric",
    "blend",
    "full_reset",
    "get_strategy",
    "is_finite_state",
    "moment_states",
    "moments_finite",
    "none_reset",
    "params_only_reset",
    "scale_moments",
    "soft_reset",
    "tau",
    "tau_metric",
]
