"""The plan in the benchmark's time: cycles re-fitted to the submission-time budget.

A scored AlgoPerf run ends when its target is reached or when its budget of B seconds of
submission time is spent (B = time_budget_factor x max_allowed_runtime_sec). The first plan
is in steps; at each evaluation the controller records a sample (g, t): the global step g
and the submission seconds t spent before it. From the samples (METHOD.md section 3, v2):

  * the seconds per step r is the median of the rates (t_k - t_{k-1}) / (g_k - g_{k-1}) of
    the last `WINDOW` intervals between samples, the first interval excepted (it holds the
    compilation). Compilation, resets and evaluations only add time, to a few intervals:
    the median ignores them where a mean would not;
  * the plan ends at T* = g + floor((fill x B - t) / r), the step at which a fraction
    `fill` of the budget is spent;
  * the cycles that have not started share [b_{c+1}, T*) in proportion to their present
    lengths; those that would get fewer than `min_steps` are dropped from the end; the
    current cycle c keeps its end b_{c+1} (its window is in the optimizer state on the
    device, and it has already been warmed up);
  * except the run's first cycle on hardware slower than the plan assumed (v4, METHOD.md
    section 3): when T* falls short of its end b_1 by more than `FIT_SLACK`, b_1 moves to
    T*, so that its decay ends inside the budget instead of being cut off at a high
    learning rate (`fit_first_cycle`); the caller then moves the window on the device;
  * or, by default (v6), that first cycle, when the budget would cut it, keeps its schedule
    until the last `cooldown` fraction of the steps it can run, and then anneals linearly
    to 0 where the budget is spent (`cut_cycle_cooldown`, `cooldown`).

Everything here is a pure function of host numbers kept in the checkpoint, so a restored run
re-fits exactly as the uninterrupted one would.
"""

import math
from typing import NamedTuple

import jax
import numpy as np

from .optax_schedule import learning_rate
from .plan import CyclePlan, cycle_window, num_cycles, select_cycles
from .shapes import DECAY_SHAPES

# The first cycle is shortened only when T* is short of its end by more than this fraction:
# on the hardware a workload's budget was set for, compilation and resets put T* a few
# percent before step_hint (digits: 290 of 300 steps), and there the cycle must stay exactly
# the one planned (AlgoPerf's baseline's); a cycle ending up to 10% late still ends its
# decay inside the budget B (at most 1.1 of 1.5 x the runtime).
FIT_SLACK = 0.1

# Rates of at most this many recent intervals enter the median (a speed that changes, e.g.
# when another job shares the machine, is followed within a few evaluations).
WINDOW = 16


class Budget(NamedTuple):
    """The time budget of a run and how the plan should use it.

    seconds: B, the submission seconds the runner allows.
    fill: the fraction of B at which the last planned cycle should end its decay (no
      default here: the schema's `budget_fill` states it).
    min_steps: the fewest steps a re-fitted cycle gets (a shorter one cannot learn after
      its reset; it then runs into the budget instead).
    fit_first: whether the run's first cycle is shortened on hardware too slow for it
      (`fit_first_cycle`).
    cooldown: the fraction of a cut first cycle's steps annealed before the budget ends
      (`cut_cycle_cooldown`; 0: none, the run ends inside the cycle; METHOD.md section 3).
    """

    seconds: float
    fill: float
    min_steps: int = 1
    fit_first: bool = False
    cooldown: float = 0.1


def add_sample(samples: np.ndarray, step: int, seconds: float) -> np.ndarray:
    """`samples` (k x 2, rows (g, t)) with (step, seconds) appended; a sample at a step
    not after the last one replaces nothing and is ignored. Only the newest WINDOW + 2 rows
    are kept: the state stays small however long the run."""
    samples = np.asarray(samples, dtype=np.float64).reshape(-1, 2)
    if len(samples) and step <= samples[-1, 0]:
        return samples
    return np.concatenate([samples, [[float(step), float(seconds)]]])[-(WINDOW + 2) :]


def seconds_per_step(samples: np.ndarray) -> float:
    """r = median over the last WINDOW intervals (the run's first excepted) of
    (t_k - t_{k-1}) / (g_k - g_{k-1}); nan while fewer than two intervals are known.

    The run's first interval is the one from (0, 0) to the first sample; it is dropped as
    long as the samples still begin with it (at most WINDOW + 2 are kept)."""
    samples = np.asarray(samples, dtype=np.float64).reshape(-1, 2)
    if len(samples) and samples[0, 0] > 0:  # The origin (0, 0) starts the first interval.
        samples = np.concatenate([[[0.0, 0.0]], samples])
    if len(samples) and samples[0, 0] == 0:
        samples = samples[1:]  # Drop the first interval: it holds the compilation.
    rates = np.diff(samples[:, 1]) / np.diff(samples[:, 0])
    rates = rates[np.isfinite(rates) & (rates > 0)][-WINDOW:]
    return float(np.median(rates)) if len(rates) else math.nan


def steps_until(budget_seconds: float, step: int, seconds: float, rate: float) -> int:
    """The step at which `budget_seconds` of submission time will be spent, from step g
    at t seconds and r seconds per step: g + floor((budget - t) / r), at least g."""
    return step + max(0, math.floor((budget_seconds - seconds) / rate))


def fit_plan(plan: CyclePlan, cycle: int, end: int, min_steps: int = 1) -> tuple[CyclePlan, bool]:
    """The plan whose cycles after `cycle` share [b_{cycle+1}, end) in proportion to their
    present lengths L_j; cycle `cycle` and the ones before it are unchanged. Returns
    (plan, whether it changed).

    With A = end - b_{cycle+1}, the first m cycles after `cycle` are kept for the largest
    m whose proportional shares A x L_j / sum_{j<m} L_j are all at least `min_steps` (a
    budget too small for every cycle drops cycles from the end rather than making each too
    short to learn after its reset); their boundaries are
    b'_{c+1+k} = b_{c+1} + round(A x sum_{j<=k} L_j / sum_{j<m} L_j). With m = 0 the
    current cycle becomes the plan's last.
    """
    b = np.asarray(plan.boundaries, dtype=np.int64)
    start = int(b[cycle + 1])
    if cycle + 1 >= num_cycles(plan):
        return plan, False
    lengths = np.diff(b[cycle + 1 :]).astype(np.float64)
    available = max(0, int(end) - start)
    keep = len(lengths)
    while keep and available * lengths[:keep].min() / lengths[:keep].sum() < max(1, min_steps):
        keep -= 1
    cum = np.round(available * np.cumsum(lengths[:keep]) / lengths[:keep].sum())
    boundaries = np.concatenate([b[: cycle + 2], start + cum.astype(np.int64)])
    if np.array_equal(boundaries, b):
        return plan, False
    return select_cycles(plan, list(range(len(boundaries) - 1)), boundaries), True


def fit_first_cycle(plan: CyclePlan, step: int, end: int) -> tuple[CyclePlan, CyclePlan | None]:
    """The plan whose first cycle ends by `end` when it would end too late. Returns (plan,
    the first cycle's window to enter now, or None: nothing changed); call it only while
    the first cycle runs.

    With b_1 the first cycle's end: unchanged when end >= (1 - FIT_SLACK) x b_1 (it fits,
    or nearly: see FIT_SLACK); else b_1 <- max(end, step + 1) and the later cycles are
    dropped (no time is left for them before T*; past the plan the run goes on with cycles
    like the last, up to the budget). Never lengthens a cycle.
    """
    first_end = int(plan.boundaries[1])
    if end >= (1.0 - FIT_SLACK) * first_end:
        return plan, None
    boundaries = np.asarray([plan.boundaries[0], max(int(end), int(step) + 1)])
    fitted = select_cycles(plan, [0], boundaries)
    return fitted, cycle_window(fitted, 0)


def host_learning_rate(step: int, plan: CyclePlan) -> float:
    """`learning_rate(step, plan)` computed on the host's CPU (no accelerator touched)."""
    with jax.default_device(jax.devices("cpu")[0]):
        return float(learning_rate(step, plan))


def cooldown(plan: CyclePlan, step: int, budget_end: int, fraction: float) -> CyclePlan | None:
    """The first cycle's cooldown before the budget cuts it (METHOD.md section 3, v6): the
    one-cycle window to enter at `step`, or None (nothing changes). Call it while the
    first cycle runs and has not started cooling down.

    With b_1 the cycle's end, E = `budget_end` the step at which the whole budget is spent
    and f = `fraction`: None unless the run would end with more than FIT_SLACK of the
    cycle left, E < (1 - FIT_SLACK) b_1, and the cycle is in the last f of the E steps it
    can run, (1 - f) E <= step < E. Then from t = `step` the rate falls linearly from the
    schedule's own value there, eta(step), to 0 at E:

        eta'(t) = eta(step) x (E - t) / (E - step)

    (the window [step, E) at peak eta(step), no warm-up, linear decay). The plan keeps b_1,
    past the budget: no cycle follows the cooldown (the rate stays 0 after E, until the
    runner's budget check, within an evaluation period, ends the run). Until `step` the
    cycle is exactly the planned one, the one a cut run follows.
    """
    cut = budget_end < (1.0 - FIT_SLACK) * int(plan.boundaries[1])
    if fraction <= 0.0 or not cut or not (1.0 - fraction) * budget_end <= step < budget_end:
        return None
    return CyclePlan(
        boundaries=np.asarray([step, budget_end], np.int32),
        peak_learning_rates=np.asarray([host_learning_rate(step, plan)], np.float32),
        warmup_fractions=np.zeros(1, np.float32),
        warmup_shapes=np.asarray(plan.warmup_shapes[:1], np.int32),
        decay_shapes=np.asarray([DECAY_SHAPES.index("linear")], np.int32),
    )


def decay_shrinkage(plan: CyclePlan, start: int, stop: int, weight_decay: float) -> float:
    """s = prod_{t=start}^{stop-1} (1 - lambda eta_t), with eta_t = `learning_rate(t, plan)`
    and lambda = `weight_decay`: what decoupled weight decay alone leaves of the params'
    norm over those steps (`reset.peaks`), computed on the host's CPU in float64 (1 where
    stop <= start: an empty product)."""
    with jax.default_device(jax.devices("cpu")[0]):
        rates = np.asarray(learning_rate(np.arange(start, stop), plan), np.float64)
    return float(np.exp(np.sum(np.log1p(-weight_decay * rates))))
