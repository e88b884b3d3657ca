"""Cycle plans and learning-rate shapes (METHOD.md section 3)."""

from .plan import (
    DECAY_SHAPES,
    WARMUP_SHAPES,
    CyclePlan,
    check_plan_settings,
    cycle_at,
    cycle_window,
    equal_lengths,
    extend_plan,
    make_plan,
    num_cycles,
    plan_used_up,
    replan_after_switch,
    total_steps,
)
from .shapes import KAPPA, learning_rate

__all__ = [
    "DECAY_SHAPES",
    "KAPPA",
    "WARMUP_SHAPES",
    "CyclePlan",
    "check_plan_settings",
    "cycle_at",
    "cycle_window",
    "equal_lengths",
    "extend_plan",
    "learning_rate",
    "make_plan",
    "num_cycles",
    "plan_used_up",
    "replan_after_switch",
    "total_steps",
]
