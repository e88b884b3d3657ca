"""Reset strategies and the tau math (METHOD.md section 4).

At a cycle boundary, with tau = max(y* - y, 0) / y* (`tau`) and theta0 a fresh
initialisation, a strategy (`none`, `full`, `params_only`, `soft(alpha)`) maps the current
state to the next cycle's: e.g. `soft` gives theta <- (1 - tau) theta + tau theta0 and
m, v <- (1 - tau alpha) m, v (and the moments' weights w1, w2 with them, METHOD.md
section 4 v2: the optimizer, `adamw`, debiases by those weights, `scale_by_weighted_adam`).
"""

from .failure import (
    FAILURE_RULES,
    NORM_RULES,
    FailureCheck,
    check_cycle,
    global_norm,
    reestimate_ema,
)
from .moments import (
    FIRST_MOMENT_FIELDS,
    MOMENT_FIELDS,
    SECOND_MOMENT_FIELDS,
    WEIGHT_FIELDS,
    all_finite,
    check_moments,
    find_moments,
    find_weights,
    moment_states,
    moments_finite,
    scale_moments,
)
from .optimizer import ScaleByWeightedAdamState, adamw, scale_by_weighted_adam
from .peaks import STILL_GROWTH, growth_beyond_decay, slow_cycle_factor
from .strategies import (
    MODEL_STATE_CHOICES,
    STRATEGIES,
    CycleOutcome,
    ResetStrategy,
    TrainState,
    blend,
    full,
    is_finite_state,
    make_strategy,
    none,
    params_only,
    soft,
    tree_select,
)
from .tau import (
    IMPROVEMENT_SCALES,
    TAU_FORMULAS,
    TAU_METRICS,
    better_metric,
    improved,
    tau,
    tau_expected,
    tau_metric,
    tau_relative,
)

__all__ = [
    "IMPROVEMENT_SCALES",
    "FAILURE_RULES",
    "NORM_RULES",
    "FailureCheck",
    "MODEL_STATE_CHOICES",
    "check_cycle",
    "global_norm",
    "reestimate_ema",
    "FIRST_MOMENT_FIELDS",
    "MOMENT_FIELDS",
    "SECOND_MOMENT_FIELDS",
    "STRATEGIES",
    "TAU_FORMULAS",
    "TAU_METRICS",
    "improved",
    "tau_expected",
    "tau_relative",
    "tree_select",
    "WEIGHT_FIELDS",
    "CycleOutcome",
    "ResetStrategy",
    "ScaleByWeightedAdamState",
    "TrainState",
    "adamw",
    "all_finite",
    "better_metric",
    "blend",
    "check_moments",
    "find_moments",
    "find_weights",
    "full",
    "is_finite_state",
    "make_strategy",
    "moment_states",
    "moments_finite",
    "none",
    "params_only",
    "scale_by_weighted_adam",
    "STILL_GROWTH",
    "growth_beyond_decay",
    "slow_cycle_factor",
    "scale_moments",
    "soft",
    "tau",
    "tau_metric",
]
