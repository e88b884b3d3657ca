"""The first cycle fitted to the hardware (`fit_first_cycle`, METHOD.md section 3; issue
30 item 1).

On hardware slower than the plan assumed, step_hint steps do not fit in the time the plan
gives its first cycle, and without a fit the run ends inside that cycle at a high learning
rate. With `fit_first_cycle` the cycle ends where `budget_fill` of the budget is spent. (An
option, off by default: on the healthy problems at 2x and 3x the reference step time the
shortened, fully decayed cycle reached the target less often than the cut one.) The pure
rule (`schedules.budget.fit_first_cycle`), the controller's use of it, and whole runs with
it on simulated clocks of 0.5x, 1x, 2x and 3x the reference step time.
"""

import math

import numpy as np
import pytest
from clocked import OPTIONS, STEP_TIME, run_on_clock

from cyclic_soft_reset import controller as control
from cyclic_soft_reset import hyperparameters as hp
from cyclic_soft_reset import schedules, submission
from cyclic_soft_reset.schedules import budget as tb

# --------------------------------------------------------------------------- pure parts


def _plan(total=300, cycles=1):
    return schedules.make_plan(total, schedules.PlanSettings(cycles, 1e-3))


def test_a_cycle_that_fits_or_nearly_is_left_alone():
    plan = _plan()
    for end in (300, 400, math.ceil(0.9 * 300)):  # On time, early, within the slack.
        fitted, changed = tb.fit_first_cycle(plan, step=10, end=end)
        assert not changed and fitted is plan


def test_a_cycle_too_long_for_the_budget_ends_where_it_is_spent():
    plan = _plan(300, cycles=3)
    fitted, window = tb.fit_first_cycle(plan, step=10, end=80)
    assert window.boundaries.tolist() == [0, 80]  # The first cycle's window, to enter now.
    # b_1 = T*; the later cycles have no time left before T*: dropped.
    assert fitted.boundaries.tolist() == [0, 80]
    assert fitted.peak_learning_rates.tolist() == plan.peak_learning_rates[:1].tolist()
    # Never in the past: at least one step after the current one.
    assert tb.fit_first_cycle(plan, step=50, end=20)[0].boundaries.tolist() == [0, 51]


def test_the_fit_is_a_host_rule_on_the_schedule_the_device_reads():
    """The learning rate of the fitted plan decays to 0 at the new end (as the cycle's
    window, moved on the device, makes the optimizer do)."""
    fitted, _ = tb.fit_first_cycle(_plan(300), step=10, end=90)
    lr = np.asarray(schedules.learning_rate(np.arange(0, 91), fitted))
    assert lr[89] < 1e-3 * lr.max() and lr[90] == 0.0


def _budget(fit_first=True):
    return schedules.Budget(seconds=150.0, fill=1.0 / 1.5, min_steps=75, fit_first=fit_first)


def _settings(budget):
    return hp.controller_settings(hp.resolve(None), 0.9, True, budget)


def _refits(controller, samples, budget):
    """The controller after re-fits at each (step, seconds) sample; the last re-fit."""
    refit = None
    for step, seconds in samples:
        controller, refit = control.refit(controller, step, seconds, budget)
    return controller, refit


def test_the_controller_shortens_only_the_first_cycle_and_only_when_asked():
    # B = 150 s filled to 100 s; 300 planned steps. The first sample's interval holds the
    # compilation; the speed is known from the second on.
    start = control.start(_plan(300), np.zeros(2, np.uint32))
    # 0.3 s a step: T* = 20 + (100 - 9) / 0.3 = 323 >= 300: the cycle fits, nothing moves.
    fits, refit = _refits(start, [(10, 6.0), (20, 9.0)], _budget())
    assert fits.plan.boundaries.tolist() == [0, 300] and refit is None
    # 3 s a step: T* = 20 + (100 - 60) / 3 = 33: the first cycle ends there.
    slow, refit = _refits(start, [(10, 30.0), (20, 60.0)], _budget())
    assert slow.plan.boundaries.tolist() == [0, 33]
    assert refit.window is not None and refit.end == 33
    assert slow.first_cycle_scale == pytest.approx(33 / 300)
    # Off: the cycle keeps its end (and the run is cut inside it).
    off, refit = _refits(start, [(10, 30.0), (20, 60.0)], _budget(fit_first=False))
    assert off.plan.boundaries.tolist() == [0, 300] and refit is None
    # A later cycle keeps its end; the cycles after it get what is left (nothing here).
    later = control.start(_plan(300, 3), np.zeros(2, np.uint32))._replace(cycle=1)
    later, refit = _refits(later, [(110, 30.0), (120, 60.0)], _budget())
    assert later.plan.boundaries.tolist() == [0, 100, 200]
    assert refit.window is None and later.first_cycle_scale == 1.0


def test_after_a_fitted_first_cycle_the_last_cycle_ends_with_the_budget():
    """The shortest cycle after the plan scales with the fitted first cycle: one of the
    planned 75 steps would not fit the 50 left and would be cut at a high learning rate."""
    one_cycle = _plan(300)._replace(boundaries=np.asarray([0, 90]))
    c = control.start(one_cycle, np.zeros(2, np.uint32))._replace(
        time_samples=np.asarray([[0, 0], [10, 10.0], [20, 20.0], [30, 30.0]]),  # 1 s a step.
    )
    settings = _settings(_budget())
    # At step 90 after 100 s, 50 s of the 150 are left: 50 steps.
    fitted = control.extend(c._replace(first_cycle_scale=0.3), 90, 100.0, settings)
    assert fitted.plan.boundaries.tolist() == [0, 90, 140]
    unscaled = control.extend(c, 90, 100.0, settings)
    assert unscaled.plan.boundaries.tolist() == [0, 90, 165]


# --------------------------------------------------------------------- simulated hardware

FIT = {"fit_first_cycle": True}


def _run(speed, hyperparameters=FIT):
    return run_on_clock(speed, hyperparameters)


@pytest.mark.slow
@pytest.mark.parametrize("step_time", list(STEP_TIME))
def test_fitted_runs_use_the_budget_and_end_their_last_decay_in_it(step_time):
    result, spent, lr, budget = _run(STEP_TIME[step_time])
    assert result.stop_reason == "time_budget"
    steps_run = result.global_step
    assert spent[steps_run] >= 0.9 * budget
    boundaries = submission.plan_summary(result.optimizer_state)["boundaries"]
    # The last decay the run completes (up to one evaluation period late: the runner
    # checks the budget at evaluations only) ends in the final 15% of the steps run.
    period = OPTIONS["eval_every_steps"]
    last_decay_end = max(b for b in boundaries if b <= steps_run + period)
    assert last_decay_end >= 0.85 * steps_run, (boundaries, steps_run)
    # The optimizer's own learning rate is near 0 at the end of the first cycle and of
    # that decay: the device's window moved with the plan.
    peak = max(lr.values())
    for end in (boundaries[1], min(last_decay_end, steps_run)):
        assert lr[end - 1] < 0.05 * peak, (end, lr[end - 1], peak)


@pytest.mark.slow
@pytest.mark.parametrize("step_time", ["0.5x", "1x"])
def test_on_the_reference_hardware_or_faster_the_run_is_the_unfitted_one(step_time):
    fitted = _run(STEP_TIME[step_time])[0]
    unfitted = _run(STEP_TIME[step_time], None)[0]  # The defaults: no fit.
    assert fitted.eval_results == unfitted.eval_results
    records = [m for _, m, _ in fitted.metrics_logger.records]
    assert not any("plan/end" in m for m in records[:1])  # No fit of the first cycle.
