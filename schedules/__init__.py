"""Cycle plans, learning-rate shapes and the optax schedule (METHOD.md section 3)."""

from .budget import Budget
from .optax_schedule import (
    CyclicSchedule,
    CyclicScheduleState,
    cyclic_schedule,
    enter_cycle,
    learning_rate,
    schedule_states,
)
from .plan import (
    CyclePlan,
    PlanSettings,
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
from .shapes import DECAY, DECAY_SHAPES, KAPPA, WARMUP, WARMUP_SHAPES

__all__ = [
    "Budget",
    "DECAY",
    "DECAY_SHAPES",
    "KAPPA",
    "WARMUP",
    "WARMUP_SHAPES",
    "CyclePlan",
    "PlanSettings",
    "check_plan_settings",
    "CyclicSchedule",
    "CyclicScheduleState",
    "cycle_at",
    "cycle_window",
    "cyclic_schedule",
    "enter_cycle",
    "equal_lengths",
    "extend_plan",
    "learning_rate",
    "make_plan",
    "num_cycles",
    "plan_used_up",
    "replan_after_switch",
    "schedule_states",
    "total_steps",
]
