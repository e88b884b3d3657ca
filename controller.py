"""The cycle controller: when a cycle ends, why, and with which tau (host side, pure).

Every training step the controller sees plain numbers: the evaluations so far (step,
target metric, validation loss), the global step and its own state (the plan, the current
cycle, the early-switch detector). It answers with a `Decision`: the resets to carry out
before this step (usually none, at a boundary one), or the end of training. It never
touches a device: the caller does the device work of each `Reset` it is handed.

The rules (METHOD.md sections 3-5):
  * An evaluation at step g feeds the detector when b_c < g < b_{c+1} (one on a boundary
    belongs to the planned reset) and a cycle can follow the current one (it is not the
    last, or more cycles are queued). After the first switch of a call, later evaluations
    of that call are only recorded.
  * A switch at g ends cycle c there: b_{c+1} = g and the remaining steps are replanned
    (`replan_after_switch`). The reset at b_{c+1} is then "early".
  * At step >= b_{c+1} cycle c + 1 starts with a reset; past the last cycle the run stops
    (`stop_when_plan_ends`, for studies) or the plan grows by one cycle like the last
    (`extend_plan`), long enough to reach the end of the time budget when one is known.
  * With a time budget (`Settings.budget`) and the runner's submission seconds, each new
    evaluation adds a sample (step, seconds) and the cycles not yet started are re-fitted
    so that the plan ends at a fraction of the budget (`schedules.budget`, METHOD.md
    section 3 v2).
  * tau comes from the latest target metric before the reset (or the cycle's best, an
    ablation) and the workload's target (`reset.tau`, or `reset.tau_relative` with the
    run's first evaluation).
  * A cycle made no improvement (failure rule (c), METHOD.md section 4 v2) when its best
    evaluation is no better than the last evaluation before it began (for a cycle with
    none before it, the run's first), within eps2 x |that value|. The device judges the
    other rules at the reset; `after_reset` learns whether the cycle was rolled back.
"""

import math
import typing
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from . import early_switching, reset
from .schedules import budget as time_budget
from .schedules.plan import CyclePlan, extend_plan, num_cycles, replan_after_switch, total_steps


class Evaluation(NamedTuple):
    """One evaluation as the controller reads it: its global step, the validation target
    metric y and the validation loss L."""

    step: int
    metric: float
    loss: float


class Settings(NamedTuple):
    """What the controller decides with, fixed for a run."""

    target: float  # y*, the workload's validation target
    higher_is_better: bool  # the target metric's direction
    detector: early_switching.DetectorConfig
    # No defaults here: hyperparameters.Config states them, `controller_settings` passes each.
    early_switching: bool
    stop_when_plan_ends: bool
    tau_metric: str  # "latest" or "best" (reset.TAU_METRICS)
    tau_formula: str  # reset.TAU_FORMULAS
    improvement_scale: str  # rule (c)'s margin: of the gap to the target, or the value
    switch_signal: str  # what the detector smooths: SWITCH_SIGNALS
    rollback_to: str  # what a rollback restores: ROLLBACK_TARGETS
    # k of `raised_peaks`: a cycle that ran to its end, improved, passed and missed the
    # target raises the later peaks to k x its own, under `peak_ceiling` (1: never).
    slow_cycle_lr_factor: float
    # Cycles [0, guarded_cycles) (the plan's: AlgoPerf's baseline cycle), and those from
    # `guarded_from` on, end early only by `early_switching.guard` (with `failure_kappa`): the
    # norm must confirm the detector; 0 and inf: the detector alone may end every cycle (v4).
    guarded_cycles: int
    guarded_from: float  # the plan's end with `rescue_cycle_switch = "guards"`, else inf
    # k of `raised_peaks` after a first cycle that moved nothing (`reset.peaks`; 1: `slow`'s),
    # and lambda, the optimizer's decoupled weight decay, which tells how little it moved.
    still_cycle_lr_factor: float
    weight_decay: float
    budget: time_budget.Budget | None = None  # None: the plan stays in steps
    # eta x r of a cycle past the plan, under the failures' ceiling (None: the last cycle's
    # peak as it stands); `past_plan_peaks`.
    past_plan_peak: float | None = None
    # Rule (b)'s reference after a rollback: NORM_REFERENCES; `after_reset`.
    norm_reference: str = "failed_start"
    # kappa of a sound rollback point: a state whose params' norm is outside
    # [1/kappa, kappa] x the cycle's start norm is not kept (`keep_best`); None: any.
    keep_kappa: float | None = None
    failure_kappa: float = 3.0  # kappa of rule (b): a raise needs a sound norm (`raised_peaks`)


# What the early-switch detector watches: the validation loss (METHOD.md section 5), or the
# target metric as a loss (lower is better: -y for a metric where higher is better), which
# is what the benchmark scores (METHOD.md section 7, v3).
SWITCH_SIGNALS = ("loss", "metric")

# What may end a cycle of the plan (AlgoPerf's baseline cycle) early, or one past it
# (`rescue_cycle_switch`; METHOD.md section 5 v5): the detector, or `early_switching.guard`:
# a non-finite evaluation, the norm far out (kappa^2), or the detector confirmed by it (kappa).
PLANNED_CYCLE_SWITCHES = ("detector", "guards")

# What a rollback restores (METHOD.md section 7, v3): the state the failed cycle started
# from, or the best state it reached (kept at each evaluation that improved on the one
# before; so a rollback never discards learning, as training logs restore the last good
# checkpoint).
ROLLBACK_TARGETS = ("start", "best")

# Rule (b)'s reference norm for the cycle after a rollback (METHOD.md section 4, v4): the
# failed cycle's own start norm (v3), or the norm of the state the rollback restored.
NORM_REFERENCES = ("failed_start", "restored")


def switch_value(evaluation: Evaluation, settings: Settings) -> float:
    """L(t) for the detector: the evaluation's validation loss, or its target metric y as a
    loss (-y where higher is better, y otherwise)."""
    if settings.switch_signal == "metric":
        return -evaluation.metric if settings.higher_is_better else evaluation.metric
    return evaluation.loss


class Controller(NamedTuple):
    """The controller's state: plain host numbers, kept in the checkpoint.

    plan: the current cycle plan (boundaries move on an early switch).
    cycle: index of the current cycle.
    evals_seen: the number of evaluations last read; last_eval_step: the newest one's step.
    last_metric: the latest validation target metric (nan before the first evaluation).
    cycle_best_metric: the best finite target metric evaluated in the current cycle (nan
      if none), for `tau_metric = "best"` and failure rule (c).
    detector: the early-switch detector's state for the current cycle.
    seed: key data from which each fresh initialisation's key is derived.
    first_metric: the run's first evaluation of the target metric (nan before it).
    cycle_start_metric: what the current cycle must improve on: the last evaluation
      before it began, else the run's first (nan before any).
    cycle_evals: evaluations read in the current cycle.
    kept_metric: the target metric of the state a rollback of the current cycle restores
      (its start, or with `rollback_to = "best"` its best evaluated state; nan before any).
    previous_start_metric: the ending cycle's `kept_metric`, for `after_reset`.
    start_norm: the global norm of the params the current cycle started from.
    time_samples: (step, submission seconds) at the evaluations read so far, k x 2, after
      the origin (0, 0) (`schedules.budget.add_sample`), from which the plan is re-fitted.
    first_cycle_scale: the first cycle's length after it was fitted to slower hardware,
      over its planned length (1 if it was not): the shortest cycle after the plan
      (`budget.min_steps`, in the plan's steps) scales with it.
    peak_ceiling: the lowest `lr_factor` x the peak of a failed cycle so far (inf before
      any failure): no later cycle peaks above it (`after_reset`, `past_plan_peaks`).
    unsound_metric: the best target metric of the current cycle's states not kept for
      their norm (`keep_best`; nan if none).
    cycle_norm: the params' global norm at the current cycle's latest evaluation, where
      the caller read it (`steps.norm_to_keep`; nan if none), before step `cycle_norm_step`:
      `raised_peaks`.
    cooldown_end: where the first cycle's cooldown ends its decay (-1: none started).
    """

    plan: CyclePlan
    cycle: int
    evals_seen: int
    last_eval_step: int
    last_metric: float
    cycle_best_metric: float
    detector: early_switching.DetectorState
    seed: np.ndarray
    first_metric: float = math.nan
    cycle_start_metric: float = math.nan
    cycle_evals: int = 0
    previous_start_metric: float = math.nan
    kept_metric: float = math.nan
    start_norm: float = 1.0  # ||params|| where the current cycle started: rule (b)
    # The run's origin (0 steps, 0 s) to begin with: never an empty array, which AlgoPerf's
    # checkpointing refuses to save.
    time_samples: np.ndarray = np.zeros((1, 2))
    first_cycle_scale: float = 1.0
    peak_ceiling: float = math.inf
    unsound_metric: float = math.nan
    cycle_norm: float = math.nan
    cooldown_end: int = -1
    cycle_norm_step: int = -1


class Switch(NamedTuple):
    """An early switch: the cycle ended at evaluation `step`, because the smoothed loss was
    `reason` (early_switching.RISING, PLATEAU or NON_FINITE; in a guarded cycle confirmed
    by the params' norm, or BLOW_UP: the norm alone, `early_switching.guard`)."""

    step: int
    reason: str
    loss: float


class Reset(NamedTuple):
    """Start cycle `cycle` at `step`: the reset that ends cycle `cycle - 1`.

    early: the detector ended the cycle (a switch moved its boundary to an evaluation's
    step); reason: "planned" or the switch's reason; metric: the y that tau was computed
    from; end: the new cycle's end b_{cycle+1}; no_improvement: failure rule (c) holds
    for the ending cycle; unsound_metric: its best metric among the states not kept for
    their norm (nan if none); peak_factor: k of `raised_peaks`, the later peaks raised to k
    x the ending cycle's under the ceiling (1: none); growth: the ending first cycle's g,
    its norm's growth beyond weight decay's shrinkage (`reset.peaks`; nan: not read).
    """

    step: int
    cycle: int
    early: bool
    tau: float
    metric: float
    end: int
    reason: str = "planned"
    no_improvement: bool = False
    unsound_metric: float = math.nan
    peak_factor: float = 1.0
    growth: float = math.nan


def describe(action: Reset) -> str:
    """One line for the log: where the cycle starts, why, with which tau, until when."""
    why = f"early switch ({action.reason})" if action.early else "planned"
    return (
        f"reset at step {action.step}: cycle {action.cycle} starts, {why}, tau "
        f"{action.tau:.4f} (metric {action.metric}), until step {action.end}"
    )


class Refit(NamedTuple):
    """The plan re-fitted to the time budget at `step` (after `seconds` of submission
    time, at `seconds_per_step`): it now ends at step `end`, where a fraction of the budget
    will be spent."""

    step: int
    seconds: float
    seconds_per_step: float
    end: int
    # The window the caller enters now on the device (the first cycle fitted or cooling
    # down: `schedules.budget`), None where the current one stays.
    window: CyclePlan | None = None


class Decision(NamedTuple):
    """What to do before this step: `keep` the current state as the cycle's rollback point,
    then `resets` in order, then train; or stop (`stop` is the reason, the resets are then
    moot). `refit`: the plan was re-fitted (for the log)."""

    resets: tuple[Reset, ...] = ()
    stop: str | None = None
    switch: Switch | None = None
    refit: Refit | None = None
    keep: bool = False


def start(plan: CyclePlan, seed, start_norm: float = 1.0) -> Controller:
    """The controller of a new run: cycle 0 of `plan` from params of norm `start_norm`,
    nothing evaluated yet."""
    return Controller(
        plan=plan,
        cycle=0,
        evals_seen=0,
        last_eval_step=-1,
        last_metric=math.nan,
        cycle_best_metric=math.nan,
        detector=early_switching.initial_state(),
        seed=np.asarray(seed, dtype=np.uint32),
        start_norm=float(start_norm),
    )


def _scalars_as_host(record):
    """A NamedTuple with each field annotated `int` or `float` made a Python int or float
    (a checkpoint gives them back as arrays); other fields as they are."""
    hints = typing.get_type_hints(type(record))
    kinds = {int: int, float: float}
    return record._make(
        kinds[hints[name]](value) if hints[name] in kinds else value
        for name, value in zip(record._fields, record, strict=True)
    )


def as_host(controller: Controller) -> Controller:
    """The controller as host numbers: itself, unless restored from a checkpoint (where
    its numbers come back as arrays). Scalars by their annotations; the arrays below."""
    if type(controller.cycle) is int and type(controller.plan.boundaries) is np.ndarray:
        return controller
    return _scalars_as_host(controller)._replace(
        plan=CyclePlan(*(np.asarray(x) for x in controller.plan)),
        detector=_scalars_as_host(controller.detector),
        seed=np.asarray(controller.seed, dtype=np.uint32),
        time_samples=np.asarray(controller.time_samples, dtype=np.float64).reshape(-1, 2),
    )


def can_follow(controller: Controller, settings: Settings) -> bool:
    """Whether another cycle can follow the current one (else the detector is moot)."""
    return controller.cycle + 1 < num_cycles(controller.plan) or not settings.stop_when_plan_ends


def observe(
    controller: Controller,
    evaluations: Sequence[Evaluation],
    settings: Settings,
    norm_ratio: tuple[int, float] | None = None,
) -> tuple[Controller, Switch | None]:
    """Reads the evaluations not seen yet (step > last_eval_step), in step order.

    Returns the new state and the early switch (None if none): an evaluation inside the
    current cycle, when a cycle can follow it, is judged by the detector, and in a guarded
    cycle (`guarded_cycles`, `guarded_from`) by `early_switching.guard` on the detector's
    signal and `norm_ratio` = (step, ||theta|| / ||theta_start||) where the params of the
    evaluation at that step were measured; the first switch moves the cycle's end to its step.
    """
    plan, detector, switch = controller.plan, controller.detector, None
    last_metric, last_step = controller.last_metric, controller.last_eval_step
    best, c = controller.cycle_best_metric, controller.cycle
    first, start, count = controller.first_metric, controller.cycle_start_metric, 0
    for evaluation in sorted(evaluations, key=lambda e: e.step):
        if evaluation.step <= controller.last_eval_step:
            continue
        if last_step < 0:  # The run's first evaluation.
            first = evaluation.metric
            start = evaluation.metric if math.isnan(start) else start
        last_metric, last_step, count = evaluation.metric, evaluation.step, count + 1
        best = reset.better_metric(best, evaluation.metric, settings.higher_is_better)
        inside = plan.boundaries[c] < evaluation.step < plan.boundaries[c + 1]
        if not (settings.early_switching and inside and switch is None):
            continue
        if not can_follow(controller, settings):
            continue
        value = switch_value(evaluation, settings)
        detector, fired, reason = early_switching.update(detector, value, settings.detector)
        if c < settings.guarded_cycles or c >= settings.guarded_from:
            ratio = norm_ratio[1] if norm_ratio and norm_ratio[0] == evaluation.step else None
            # `reason` is the detector's signal, '' where it did not fire.
            reason = early_switching.guard(value, ratio, settings.failure_kappa, reason)
            fired = bool(reason)
        if fired:
            grown = replan_after_switch(plan, evaluation.step)
            plan = past_plan_peaks(grown, num_cycles(plan), controller.peak_ceiling, settings)
            switch = Switch(evaluation.step, reason, evaluation.loss)
    controller = controller._replace(
        plan=plan,
        detector=detector,
        evals_seen=len(evaluations),
        last_eval_step=last_step,
        last_metric=last_metric,
        cycle_best_metric=best,
        first_metric=first,
        cycle_start_metric=start,
        kept_metric=start if math.isnan(controller.kept_metric) else controller.kept_metric,
        cycle_evals=controller.cycle_evals + count,
    )
    return controller, switch


def keep_best(
    controller: Controller, step: int, settings: Settings, norm: float | None = None
) -> tuple[Controller, bool]:
    """Whether the state before training step `step` becomes the cycle's rollback point:
    with `rollback_to = "best"`, when the newest evaluation was of exactly this state (at
    `step`, inside the current cycle), its target metric is better than the kept one's
    and, with `keep_kappa` and its params' global norm given, that norm is within
    [1/kappa, kappa] x the cycle's start norm (rule (b)'s bounds: a state the failure has
    already grown or collapsed is part of the failure; its metric goes to
    `unsound_metric`)."""
    metric, kept = controller.last_metric, controller.kept_metric
    if settings.rollback_to != "best" or controller.last_eval_step != step:
        return controller, False
    if step <= controller.plan.boundaries[controller.cycle] or not math.isfinite(metric):
        return controller, False
    better = metric > kept if settings.higher_is_better else metric < kept
    if math.isfinite(kept) and not better:
        return controller, False
    if not sound(norm, controller.start_norm, settings.keep_kappa):
        unsound = controller.unsound_metric
        higher = metric > unsound if settings.higher_is_better else metric < unsound
        best = metric if higher or not math.isfinite(unsound) else unsound
        return controller._replace(unsound_metric=best), False
    return controller._replace(kept_metric=metric), True


def sound(norm: float | None, start_norm: float, kappa: float | None) -> bool:
    """1/kappa <= norm / start_norm <= kappa; true when kappa or the norm is not given
    (a non-finite norm is not sound)."""
    if kappa is None or norm is None:
        return True
    return start_norm / kappa <= norm <= start_norm * kappa


def next_cycle(
    controller: Controller, step: int, switch: Switch | None, settings: Settings
) -> tuple[Controller, Reset]:
    """Cycle c + 1 starts at `step`: its reset (tau and rule (c) from the finished cycle)
    and the state with a fresh detector."""
    metric = reset.tau_metric(
        controller.last_metric, controller.cycle_best_metric, settings.tau_metric
    )
    if settings.tau_formula == "relative":
        tau = reset.tau_relative(metric, settings.target, controller.first_metric)
    elif settings.tau_formula == "expected":
        fraction = step / max(total_steps(controller.plan), 1)
        tau = reset.tau_expected(metric, settings.target, controller.first_metric, fraction)
    else:
        tau = reset.tau(metric, settings.target, settings.higher_is_better)
    no_improvement = controller.cycle_evals > 0 and not reset.improved(
        controller.cycle_best_metric,
        controller.cycle_start_metric,
        settings.higher_is_better,
        settings.detector.eps2,
        settings.target if settings.improvement_scale == "gap" else None,
    )
    raised = (controller, 1.0, math.nan)  # Only a cycle that ran to its end and improved:
    if switch is None and not no_improvement:
        raised = raised_peaks(controller, settings)
    controller, peak_factor, growth = raised
    cycle = controller.cycle + 1
    last = controller.last_metric
    start_metric = last if math.isfinite(last) else controller.first_metric
    unsound = controller.unsound_metric
    controller = controller._replace(
        cycle=cycle,
        cycle_best_metric=math.nan,
        unsound_metric=math.nan,
        cycle_norm=math.nan,
        detector=early_switching.initial_state(),
        cycle_evals=0,
        previous_start_metric=controller.kept_metric,
        cycle_start_metric=start_metric,
        kept_metric=start_metric,
    )
    end = int(controller.plan.boundaries[cycle + 1])
    reason = "planned" if switch is None else switch.reason
    early = switch is not None
    details = (reason, no_improvement, unsound, peak_factor, growth)
    return controller, Reset(step, cycle, early, tau, metric, end, *details)


def raised_peaks(controller: Controller, settings: Settings) -> tuple[Controller, float, float]:
    """The state of cycle c ending at its planned end (no switch), having improved on its
    start (rule (c) passed): if its best evaluation (`cycle_best_metric`, none: no raise)
    missed the target while the params' norm at its latest evaluation (`cycle_norm`) stayed
    within rule (b)'s bounds [1/kappa, kappa] x its start norm (a rate too high grows it:
    digits lr300x 41x), cycles c + 1 on peak at k x cycle c's peak, capped at `peak_ceiling`
    (never below their own): k = `reset.slow_cycle_factor` (`slow_cycle_lr_factor`, or
    `still_cycle_lr_factor` after a first cycle whose norm grew no more than weight decay's
    shrinkage explains). The device takes the new cycle's window from this plan; if the
    cycle fails there after all, the failure's cap (`after_reset`) lowers it again.
    Returns the state, k (1: no raise) and the first cycle's g (nan: not read)."""
    best, c, norm = controller.cycle_best_metric, controller.cycle, controller.cycle_norm
    unchanged = (controller, 1.0, math.nan)
    # A best is finite only after an evaluation of the cycle (`observe` counts them alike).
    if not math.isfinite(best) or not sound(norm, controller.start_norm, settings.failure_kappa):
        return unchanged
    reached = best > settings.target if settings.higher_is_better else best < settings.target
    k, still, growth = settings.slow_cycle_lr_factor, settings.still_cycle_lr_factor, math.nan
    if reached or max(k, still) == 1.0:
        return unchanged
    if c == 0 and still not in (1.0, k):  # Only then is the growth asked (a host pass).
        start, stop = int(controller.plan.boundaries[0]), controller.cycle_norm_step
        shrinkage = time_budget.decay_shrinkage(controller.plan, start, stop, settings.weight_decay)
        growth = reset.growth_beyond_decay(norm / controller.start_norm, shrinkage)
        k = reset.slow_cycle_factor(growth, True, k, still)
    peaks = controller.plan.peak_learning_rates.astype(np.float64).copy()
    raised = min(k * peaks[c], controller.peak_ceiling)
    peaks[c + 1 :] = np.maximum(peaks[c + 1 :], raised)
    return controller._replace(plan=controller.plan._replace(peak_learning_rates=peaks)), k, growth


def after_reset(
    controller: Controller,
    rolled_back: bool,
    failed: bool = False,
    lr_factor: float = 1.0,
    start_norm: float = 1.0,
    norm_reference: str = "failed_start",
) -> Controller:
    """The state once the device has reset: a cycle rolled back to the failed one's kept
    state (its start, or its best) must improve on that state's metric; after a failed
    cycle of peak p no later cycle peaks above `lr_factor` x p (the new cycle's and all
    later peaks are capped there; the device capped the new cycle's alike; v4: a cap on
    the peak that failed, not a cut of every peak, so a cycle already far below p keeps
    its peak). `start_norm`: the new cycle's params' norm, rule (b)'s next reference,
    unless the cycle was rolled back and `norm_reference` is "failed_start": then the
    failed cycle's reference stands."""
    if not rolled_back or norm_reference == "restored":
        controller = controller._replace(start_norm=float(start_norm))
    if failed and lr_factor != 1.0:
        peaks = controller.plan.peak_learning_rates.astype(np.float64).copy()
        ceiling = min(controller.peak_ceiling, lr_factor * peaks[controller.cycle - 1])
        peaks[controller.cycle :] = np.minimum(peaks[controller.cycle :], ceiling)
        plan = controller.plan._replace(peak_learning_rates=peaks)
        controller = controller._replace(plan=plan, peak_ceiling=float(ceiling))
    if not rolled_back:
        return controller
    restored = controller.previous_start_metric
    return controller._replace(cycle_start_metric=restored, kept_metric=restored)


def refit(
    controller: Controller, step: int, seconds: float, budget: time_budget.Budget
) -> tuple[Controller, Refit | None]:
    """Records the sample (step, seconds) and re-fits the cycles not yet started so that
    the plan ends where `budget.fill` of the budget is spent (`schedules.budget`); the first
    cycle too, while it runs: shortened when it would end too late (`budget.fit_first`),
    else annealed before the budget cuts it (`budget.cooldown`). Returns the new state and
    the re-fit (None while the seconds per step are unknown, or when nothing moved)."""
    samples = time_budget.add_sample(controller.time_samples, step, seconds)
    controller = controller._replace(time_samples=samples)
    rate = time_budget.seconds_per_step(samples)
    if not math.isfinite(rate):
        return controller, None
    end = time_budget.steps_until(budget.fill * budget.seconds, step, seconds, rate)
    plan, window = controller.plan, None
    if budget.fit_first and controller.cycle == 0:
        plan, window = time_budget.fit_first_cycle(plan, step, end)
        scale = controller.first_cycle_scale * plan.boundaries[1] / controller.plan.boundaries[1]
        controller = controller._replace(first_cycle_scale=float(scale))
    elif controller.cycle == 0 and controller.cooldown_end < 0:
        spent = time_budget.steps_until(budget.seconds, step, seconds, rate)
        window = time_budget.cooldown(plan, step, spent, budget.cooldown)
        if window is not None:
            controller = controller._replace(cooldown_end=int(window.boundaries[1]))
    plan, changed = time_budget.fit_plan(plan, controller.cycle, end, budget.min_steps)
    controller = controller._replace(plan=plan)
    refit = Refit(step, seconds, rate, total_steps(plan), window)
    return controller, refit if changed or window is not None else None


def past_plan_peaks(plan: CyclePlan, planned: int, ceiling: float, settings: Settings) -> CyclePlan:
    """`plan` grown past its first `planned` cycles (an extension, or a switch in the last
    cycle): the new cycles peak at `settings.past_plan_peak`, capped at `ceiling` (the
    failures' `peak_ceiling`), where the setting is given; else as they were copied."""
    if settings.past_plan_peak is None or num_cycles(plan) <= planned:
        return plan
    peaks = plan.peak_learning_rates.astype(np.float64).copy()
    peaks[planned:] = min(settings.past_plan_peak, ceiling)
    return plan._replace(peak_learning_rates=peaks)


def extend(
    controller: Controller, step: int, seconds: float | None, settings: Settings
) -> Controller:
    """The plan grown by one cycle like the last (the run goes on past the plan), peaking
    at `settings.past_plan_peak` under `peak_ceiling` where that is set (`past_plan_peaks`). With
    a time budget and a known speed, the new cycle ends where the whole budget is spent
    (at least `budget.min_steps` x `first_cycle_scale` after the plan's end): it is the
    last chance to reach the target, and the runner's budget check ends it."""
    plan = extend_plan(controller.plan)
    plan = past_plan_peaks(plan, num_cycles(controller.plan), controller.peak_ceiling, settings)
    budget = settings.budget
    rate = time_budget.seconds_per_step(controller.time_samples)
    if budget is not None and seconds is not None and math.isfinite(rate):
        end = time_budget.steps_until(budget.seconds, step, seconds, rate)
        start = int(plan.boundaries[-2])
        boundaries = plan.boundaries.copy()
        shortest = max(1, round(budget.min_steps * controller.first_cycle_scale))
        boundaries[-1] = max(start + shortest, end)
        plan = plan._replace(boundaries=boundaries)
    return controller._replace(plan=plan)


def decide(
    controller: Controller,
    evaluations: Sequence[Evaluation] | None,
    step: int,
    settings: Settings,
    seconds: float | None = None,
    norm: float | None = None,
) -> tuple[Controller, Decision]:
    """The controller before training step `step`, given every evaluation so far (None
    when the caller knows nothing new arrived: the number seen is unchanged) and the
    submission seconds spent so far (None when the runner does not say).

    New evaluations are read (an early switch may end the cycle at once, in a guarded cycle
    by `norm`, these params' global norm where the caller measured it; an evaluation of
    this very state that is the cycle's best makes it the rollback point, if `norm` is
    sound) and, with a time
    budget, the plan is re-fitted to it; then, while `step` has reached the current
    cycle's end, the next cycle starts with a reset, or the run stops when the plan is used
    up and `stop_when_plan_ends`.
    """
    switch = fitted = None
    keep = False
    if evaluations is not None:
        ratio = None if norm is None else (step, norm / controller.start_norm)
        controller, switch = observe(controller, evaluations, settings, ratio)
        controller, keep = keep_best(controller, step, settings, norm)
        if norm is not None:
            controller = controller._replace(cycle_norm=float(norm), cycle_norm_step=step)
        if settings.budget is not None and seconds is not None:
            controller, fitted = refit(controller, step, seconds, settings.budget)
    resets = []
    while step >= controller.plan.boundaries[controller.cycle + 1]:
        plan = controller.plan
        if controller.cycle + 1 == num_cycles(plan):
            if settings.stop_when_plan_ends:
                reason = f"the cycle plan ended at step {total_steps(plan)}."
                return controller, Decision(tuple(resets), reason, switch, fitted, keep)
            controller = extend(controller, step, seconds, settings)
        # The boundary an early switch just moved (to the evaluation's step) ends the cycle.
        ends = int(plan.boundaries[controller.cycle + 1])
        early = switch if switch is not None and ends == switch.step else None
        controller, new_reset = next_cycle(controller, step, early, settings)
        resets.append(new_reset)
    return controller, Decision(tuple(resets), None, switch, fitted, keep)
