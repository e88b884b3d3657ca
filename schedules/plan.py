"""Cycle plans: where each learning-rate cycle starts and ends, and its settings.

A plan of N cycles covers the steps [b_0, b_N) = [0, T). Cycle i covers [b_i, b_{i+1})
and has a peak learning rate eta_i = eta * r_i, a warm-up fraction w_i = warmup_factor * q_i
and a warm-up and decay shape (METHOD.md section 3).

A plan is a NamedTuple of numpy arrays: the host keeps it (decisions never touch the
device) and `cycle_window` cuts out one cycle, with fixed shapes and dtypes, for the
compiled training step.
"""

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .shapes import DECAY_SHAPES, WARMUP_SHAPES


class CyclePlan(NamedTuple):
    """A cyclic learning-rate plan (a pytree of arrays).

    Attributes:
      boundaries: int, shape (N + 1,), b_0 < b_1 < ... < b_N = T.
      peak_learning_rates: float, shape (N,), eta_i.
      warmup_fractions: float, shape (N,), w_i in (0, 1).
      warmup_shapes: int, shape (N,), index into WARMUP_SHAPES.
      decay_shapes: int, shape (N,), index into DECAY_SHAPES.
    """

    boundaries: np.ndarray
    peak_learning_rates: np.ndarray
    warmup_fractions: np.ndarray
    warmup_shapes: np.ndarray
    decay_shapes: np.ndarray


def _shape_index(name: str, allowed: Sequence[str], field: str) -> int:
    if name not in allowed:
        raise ValueError(f"{field} must be one of {list(allowed)}, got {name!r}.")
    return allowed.index(name)


def _per_cycle(values, num_cycles: int, field: str) -> np.ndarray:
    """A per-cycle list as an array of num_cycles numbers (all ones for None); ValueError
    unless it has exactly one entry per cycle."""
    if values is None:
        return np.ones(num_cycles)
    if isinstance(values, str) or not isinstance(values, Sequence | np.ndarray):
        raise ValueError(f"{field} must be a list of {num_cycles} numbers, got {values!r}.")
    if len(values) != num_cycles:
        raise ValueError(
            f"{field} has {len(values)} entries but num_cycles is {num_cycles}: "
            f"give exactly one number per cycle."
        )
    return np.asarray(values, dtype=np.float64)


def equal_lengths(total_steps: int, num_cycles: int) -> np.ndarray:
    """Splits total_steps into num_cycles integer lengths differing by at most one.

    The first (total_steps mod num_cycles) cycles get one extra step.
    """
    base, extra = divmod(int(total_steps), int(num_cycles))
    return np.array([base + (i < extra) for i in range(num_cycles)], dtype=np.int64)


class PlanSettings(NamedTuple):
    """What a plan is made of besides its length T (METHOD.md section 3): N cycles, the
    base peak eta, the warm-up factor w, the per-cycle factors f_i (lengths), r_i (peaks)
    and q_i (warm-ups), None meaning all ones, and the warm-up and decay shapes.

    N and eta have no default here: the schema (`hyperparameters.Config`) states them. The
    other defaults are the schema's too: it reads them from this record.
    """

    num_cycles: int
    learning_rate: float
    warmup_factor: float = 0.02
    cycle_length_factors: Sequence[float] | None = None
    cycle_lr_factors: Sequence[float] | None = None
    cycle_warmup_factors: Sequence[float] | None = None
    warmup_shape: str = "linear"
    decay_shape: str = "cosine"


def check_plan_settings(settings: PlanSettings) -> PlanSettings:
    """The settings unchanged if they fit together, whatever T; ValueError naming the field
    otherwise: per-cycle lists of N entries, every warm-up fraction w q_i < 1 (a cycle needs
    decay steps), known shape names.

    Each setting's own range (N >= 1, eta > 0, w in (0, 1), factors > 0) is the caller's:
    the schema (`hyperparameters.Spec`) checks it, once, like optax leaves its arguments'
    ranges to the caller; this module checks what ties the settings together.
    """
    n, w = settings.num_cycles, settings.warmup_factor
    _per_cycle(settings.cycle_lr_factors, n, "cycle_lr_factors")
    warmup_fractions = w * _per_cycle(settings.cycle_warmup_factors, n, "cycle_warmup_factors")
    if np.any(warmup_fractions >= 1):
        raise ValueError(
            "warmup_factor * cycle_warmup_factors must stay below 1 (a cycle needs "
            f"decay steps), got {warmup_fractions.tolist()}."
        )
    _per_cycle(settings.cycle_length_factors, n, "cycle_length_factors")
    _shape_index(settings.warmup_shape, WARMUP_SHAPES, "warmup_shape")
    _shape_index(settings.decay_shape, DECAY_SHAPES, "decay_shape")
    return settings


def make_plan(total_steps: int, settings: PlanSettings) -> CyclePlan:
    """Builds a plan of N = settings.num_cycles cycles over total_steps = T steps.

    Boundaries: b_i = round(T * sum_{j<i} f_j / sum_j f_j) for length factors f (equal
    lengths when None). Peaks eta_i = eta * r_i, warm-up fractions w_i = w * q_i. Raises
    ValueError naming the field for invalid input (`check_plan_settings`, then T >= N and
    no cycle of zero steps).
    """
    num_cycles, learning_rate, warmup_factor, *_ = check_plan_settings(settings)
    if isinstance(total_steps, bool) or not isinstance(total_steps, int | np.integer):
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}.")
    if not 1 <= num_cycles <= total_steps:
        raise ValueError(
            f"total_steps must be at least num_cycles ({num_cycles}) and num_cycles at "
            f"least 1, so that every cycle gets a step; got total_steps {total_steps}."
        )
    r = _per_cycle(settings.cycle_lr_factors, num_cycles, "cycle_lr_factors")
    q = _per_cycle(settings.cycle_warmup_factors, num_cycles, "cycle_warmup_factors")
    if settings.cycle_length_factors is None:
        lengths = equal_lengths(total_steps, num_cycles)
        boundaries = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    else:
        f = _per_cycle(settings.cycle_length_factors, num_cycles, "cycle_length_factors")
        cum = np.concatenate([[0.0], np.cumsum(f)]) / np.sum(f)
        boundaries = np.round(cum * total_steps).astype(np.int64)
        if np.any(np.diff(boundaries) < 1):
            raise ValueError(
                f"cycle_length_factors {list(f)} give a cycle of no steps out of "
                f"{total_steps}: make the factors less uneven or the plan longer."
            )
    return CyclePlan(
        boundaries=boundaries,
        peak_learning_rates=learning_rate * r,
        warmup_fractions=warmup_factor * q,
        warmup_shapes=np.full(num_cycles, WARMUP_SHAPES.index(settings.warmup_shape), np.int32),
        decay_shapes=np.full(num_cycles, DECAY_SHAPES.index(settings.decay_shape), np.int32),
    )


def num_cycles(plan: CyclePlan) -> int:
    """N, the number of cycles in the plan."""
    return len(plan.boundaries) - 1


def total_steps(plan: CyclePlan) -> int:
    """T = b_N, the planned total."""
    return int(plan.boundaries[-1])


def cycle_at(plan: CyclePlan, step: int) -> int:
    """Index i of the cycle with b_i <= step < b_{i+1}; N - 1 for step >= T, 0 below 0."""
    i = int(np.searchsorted(plan.boundaries, step, side="right")) - 1
    return min(max(i, 0), num_cycles(plan) - 1)


def plan_used_up(plan: CyclePlan, step: int) -> bool:
    """True once step >= T: no planned cycle covers the step."""
    return step >= total_steps(plan)


def replan_after_switch(plan: CyclePlan, step: int) -> CyclePlan:
    """The plan after an early switch at `step`.

    The cycle i containing `step` ends there (b_{i+1} = step); the remaining T - step
    steps are split equally among the cycles after i (the earlier ones get the extra
    steps when the split is uneven), and a cycle that cannot get a step is dropped
    (from the end). T is unchanged.

    When i is the last cycle (a switch there is only asked for when extra cycles are
    queued, METHOD.md section 5), it ends at `step` and one cycle with its settings and
    its planned length follows, so T moves to step + (b_N - b_{N-1}).
    """
    b = plan.boundaries
    if not (b[0] < step < b[-1]):
        raise ValueError(f"step must lie strictly inside the plan ({b[0]}, {b[-1]}), got {step}.")
    i = cycle_at(plan, step)
    if step == b[i]:
        raise ValueError(f"step {step} is the boundary b_{i} already: nothing to end.")
    if i == num_cycles(plan) - 1:
        length = int(b[i + 1] - b[i])
        return select_cycles(plan, list(range(i + 1)) + [i], np.r_[b[: i + 1], step, step + length])
    remaining = int(b[-1]) - step
    following = min(num_cycles(plan) - i - 1, remaining)
    lengths = equal_lengths(remaining, following)
    boundaries = np.r_[b[: i + 1], step + np.cumsum(np.r_[0, lengths])]
    return select_cycles(plan, list(range(i + 1 + following)), boundaries)


def select_cycles(plan: CyclePlan, cycles: list[int], boundaries: np.ndarray) -> CyclePlan:
    """A plan made of the given cycles' settings (repeats allowed) and new boundaries."""
    idx = np.asarray(cycles, dtype=np.int64)
    return CyclePlan(
        boundaries=np.asarray(boundaries, dtype=np.int64),
        peak_learning_rates=plan.peak_learning_rates[idx],
        warmup_fractions=plan.warmup_fractions[idx],
        warmup_shapes=plan.warmup_shapes[idx],
        decay_shapes=plan.decay_shapes[idx],
    )


def extend_plan(plan: CyclePlan) -> CyclePlan:
    """Appends one cycle after b_N with the last cycle's settings and length."""
    b = plan.boundaries
    n = num_cycles(plan)
    return select_cycles(plan, list(range(n)) + [n - 1], np.r_[b, b[-1] + (b[-1] - b[-2])])


def cycle_window(plan: CyclePlan, i: int) -> CyclePlan:
    """The one-cycle plan [b_i, b_{i+1}) with fixed dtypes (int32 / float32).

    Its shapes never change, so a compiled step that reads its learning rate from a
    window is never recompiled when the cycle changes or a boundary moves.
    """
    return CyclePlan(
        boundaries=np.asarray(plan.boundaries[i : i + 2], dtype=np.int32),
        peak_learning_rates=np.asarray(plan.peak_learning_rates[i : i + 1], np.float32),
        warmup_fractions=np.asarray(plan.warmup_fractions[i : i + 1], np.float32),
        warmup_shapes=np.asarray(plan.warmup_shapes[i : i + 1], np.int32),
        decay_shapes=np.asarray(plan.decay_shapes[i : i + 1], np.int32),
    )
