"""A rate too low raised (METHOD.md section 4, v4; issue 30 item 3, the upward half): after a
cycle that ran to its planned end, improved, did not fail and missed the target with a sound
norm, the later cycles peak at `slow_cycle_lr_factor` x its peak, under `peak_ceiling`.

A plan of one 10-step cycle; the controller's host numbers, then the device on a tiny model.
"""

import math

import numpy as np
import pytest

from cyclic_soft_reset import controller as control
from cyclic_soft_reset import early_switching, hyperparameters, schedules, steps
from cyclic_soft_reset.controller import Evaluation

ETA = 2.0
ONE_CYCLE = schedules.make_plan(10, schedules.PlanSettings(num_cycles=1, learning_rate=ETA))
SETTINGS = control.Settings(
    target=0.9,
    higher_is_better=True,
    detector=early_switching.DetectorConfig(),
    early_switching=False,
    stop_when_plan_ends=False,
    tau_metric="latest",
    tau_formula="thesis",
    improvement_scale="gap",
    switch_signal="metric",
    rollback_to="best",
    keep_kappa=3.0,
    slow_cycle_lr_factor=3.0,
    still_cycle_lr_factor=1.0,
    weight_decay=0.0,
    guarded_cycles=0,
    guarded_from=math.inf,
)
# Improving steadily, short of the target 0.9.
SLOW = [Evaluation(1, 0.2, 2.0), Evaluation(4, 0.5, 1.0), Evaluation(8, 0.8, 0.5)]


def _run(settings=SETTINGS, evaluations=SLOW, norm=2.0, until=11, controller=None, resets=None):
    """decide() at steps 0..until-1, each evaluation arriving at its step with the params'
    norm `norm` (start norm 2: sound norms lie in [2/3, 6]); the resets decided are
    appended to `resets` when given."""
    if controller is None:
        controller = control.start(ONE_CYCLE, seed=np.zeros(2, np.uint32), start_norm=2.0)
    known = []
    for step in range(until):
        new = [e for e in evaluations if e.step == step]
        known += new
        given = list(known) if new else None
        controller, decision = control.decide(
            controller, given, step, settings, norm=norm if new else None
        )
        if resets is not None:
            resets += decision.resets
    return controller


def test_a_slow_cycle_raises_the_next_peak():
    resets = []
    after = _run(resets=resets)
    assert after.cycle == 1
    np.testing.assert_allclose(after.plan.peak_learning_rates, [ETA, 3 * ETA])
    assert after.cycle_norm != after.cycle_norm  # Forgotten for the new cycle (nan).
    # The reset says so; the still rule is off here, so no growth was read.
    assert [r.peak_factor for r in resets] == [3.0] and math.isnan(resets[0].growth)


@pytest.mark.parametrize(
    ("why", "change"),
    [
        ("off", dict(settings=SETTINGS._replace(slow_cycle_lr_factor=1.0))),
        ("reached", dict(evaluations=[*SLOW[:2], Evaluation(8, 0.95, 0.1)])),
        ("no improvement", dict(evaluations=[Evaluation(1, 0.5, 1), Evaluation(8, 0.5, 1)])),
        ("no evaluation", dict(evaluations=[])),
        ("norm grown", dict(norm=6.01)),
        ("norm collapsed", dict(norm=0.66)),
        ("norm unread", dict(norm=None)),
    ],
)
def test_no_raise(why, change):
    resets = []
    after = _run(**change, resets=resets)
    assert after.cycle == 1, why
    np.testing.assert_allclose(after.plan.peak_learning_rates, [ETA, ETA])
    assert [r.peak_factor for r in resets] == [1.0] and math.isnan(resets[0].growth)


def test_a_metric_on_the_target_missed_it():
    """AlgoPerf's runner stops past the target (>), not on it: a cycle on it is raised."""
    on = _run(evaluations=[*SLOW[:2], Evaluation(8, 0.9, 0.1)])
    np.testing.assert_allclose(on.plan.peak_learning_rates, [ETA, 3 * ETA])


def test_the_bounds_of_a_sound_norm_raise():
    for norm in (6.0, 2.0 / 3.0):
        np.testing.assert_allclose(_run(norm=norm).plan.peak_learning_rates, [ETA, 3 * ETA])


def test_a_lower_is_better_metric_raises_when_above_its_target():
    settings = SETTINGS._replace(higher_is_better=False, target=0.1)
    losses = [Evaluation(1, 2.0, 2.0), Evaluation(4, 1.0, 1.0), Evaluation(8, 0.5, 0.5)]
    np.testing.assert_allclose(_run(settings, losses).plan.peak_learning_rates, [ETA, 3 * ETA])
    reached = [*losses[:2], Evaluation(8, 0.05, 0.05)]
    np.testing.assert_allclose(_run(settings, reached).plan.peak_learning_rates, [ETA, ETA])
    on = [*losses[:2], Evaluation(8, 0.1, 0.1)]  # On the target is not past it: raised.
    np.testing.assert_allclose(_run(settings, on).plan.peak_learning_rates, [ETA, 3 * ETA])


def test_a_factor_of_one_leaves_lower_later_peaks_as_they_are():
    """k = 1 is off: a later cycle planned below the slow one keeps its own peak (a raise
    never lowers a peak, and 1 x the slow cycle's peak would lift this one)."""
    two = schedules.make_plan(20, schedules.PlanSettings(num_cycles=2, learning_rate=ETA))
    two = two._replace(peak_learning_rates=np.array([ETA, ETA / 4]))
    off = SETTINGS._replace(slow_cycle_lr_factor=1.0)
    start = control.start(two, seed=np.zeros(2, np.uint32), start_norm=2.0)
    after = _run(off, controller=start)
    assert after.cycle == 1
    np.testing.assert_allclose(after.plan.peak_learning_rates, [ETA, ETA / 4])
    raised = _run(controller=start)
    np.testing.assert_allclose(raised.plan.peak_learning_rates, [ETA, 3 * ETA])


def test_an_early_switched_cycle_is_not_raised():
    """The detector ended the cycle (here on a falling metric: a plateau is not needed, a
    relative tolerance of 0 and lambda 1 switch at once): no raise."""
    eager = early_switching.DetectorConfig(lambda_=1.0, eps1=0.25, eps2=0.0, grace_evals=0)
    settings = SETTINGS._replace(
        early_switching=True, detector=eager._replace(relative=False), switch_signal="loss"
    )
    rising = [Evaluation(1, 0.2, 1.0), Evaluation(4, 0.5, 9.0), Evaluation(8, 0.8, 20.0)]
    after = _run(settings, rising)
    assert after.plan.boundaries[1] < 10  # It switched.
    assert np.all(after.plan.peak_learning_rates == ETA)


def test_the_ceiling_bounds_the_raise_and_raises_compound():
    """A failure's ceiling caps the raise (the bracket); without one, a second slow cycle
    raises again (k^2)."""
    capped = _run(controller=_run(until=0)._replace(peak_ceiling=1.5 * ETA))
    np.testing.assert_allclose(capped.plan.peak_learning_rates, [ETA, 1.5 * ETA])
    first = _run()
    later = [Evaluation(12, 0.82, 0.4), Evaluation(16, 0.85, 0.3)]
    second = _run(evaluations=SLOW + later, until=first.plan.boundaries[2] + 1)
    assert second.cycle == 2
    np.testing.assert_allclose(second.plan.peak_learning_rates, [ETA, 3 * ETA, 9 * ETA])


def test_a_raised_cycle_that_fails_is_capped_below_its_predecessor():
    """The device caps the raised window at factor x the failed (ending) cycle's peak, and
    the host's plan alike (`after_reset`)."""
    after = control.after_reset(_run(), rolled_back=True, failed=True, lr_factor=0.5)
    np.testing.assert_allclose(after.plan.peak_learning_rates, [ETA, ETA / 2])
    assert after.peak_ceiling == ETA / 2


def test_the_schema_passes_the_factor_and_kappa():
    config = hyperparameters.resolve({"slow_cycle_lr_factor": 3.0, "failure_kappa": 4.0})
    settings = hyperparameters.controller_settings(config, 0.9, True)
    assert (settings.slow_cycle_lr_factor, settings.failure_kappa) == (3.0, 4.0)


def test_the_norm_is_read_at_evaluations_when_a_raise_may_need_it():
    params = {"w": np.array([3.0, 4.0], np.float32)}
    start = SETTINGS._replace(rollback_to="start", keep_kappa=None)
    assert steps.norm_to_keep(params, [SLOW[0]], start) == pytest.approx(5.0)
    assert steps.norm_to_keep(params, None, start) is None  # Ordinary steps: no read.
    assert steps.norm_to_keep(params, [SLOW[0]], start._replace(slow_cycle_lr_factor=1.0)) is None
    assert math.isnan(control.start(ONE_CYCLE, seed=np.zeros(2, np.uint32)).cycle_norm)


@pytest.mark.slow
def test_the_device_follows_the_raised_plan():
    """End to end on a tiny model (one 40-step cycle, the target out of reach): the cycle
    past the plan peaks at 3x the base rate in the compiled step and in the plan."""
    from cyclic_soft_reset import submission
    from scripts.local import runner
    from scripts.local.workloads.tiny import TinyWorkload

    rates, states = [], {}

    def after_step(global_step, optimizer_state, params, model_state, eval_results):
        rates.append(float(optimizer_state[0].opt_state.hyperparams["learning_rate"]))
        states[global_step] = optimizer_state
        return global_step == 70

    # The still factor off: at this rate 40 steps leave the weights still (test_still.py).
    hp = {"slow_cycle_lr_factor": 3.0, "still_cycle_lr_factor": 1.0, "early_switching": False}
    runner.train_once(
        TinyWorkload(target=0.999, step_hint=40),
        submission,
        hp,
        0,
        hooks=runner.RunnerHooks(after_step=after_step),
        global_batch_size=64,
        eval_every_steps=5,
        stop_at_target=False,
    )
    base = hyperparameters.DEFAULTS["learning_rate"]
    summary = submission.plan_summary(states[70])
    np.testing.assert_allclose(summary["peak_learning_rates"], [base, 3 * base], rtol=1e-6)
    assert max(rates[:40]) <= base * (1 + 1e-6)
    expected = submission.learning_rates(states[70], np.arange(41, 70))
    np.testing.assert_allclose(rates[41:70], expected, rtol=1e-5)
    assert max(rates[41:70]) > 2 * base  # It climbs past the old peak towards 3x.


def test_a_cycle_with_one_evaluation_that_improved_raises_too():
    """Cycle 1 (steps 10-19) is evaluated once, at 0.85: better than the 0.8 before it, short
    of 0.9. It raises cycle 2 to 3 x its own peak (itself 3 x cycle 0's)."""
    two = schedules.make_plan(20, schedules.PlanSettings(num_cycles=2, learning_rate=ETA))
    start = control.start(two, seed=np.zeros(2, np.uint32), start_norm=2.0)
    after = _run(evaluations=[*SLOW, Evaluation(15, 0.85, 0.4)], until=21, controller=start)
    assert after.cycle == 2
    np.testing.assert_allclose(after.plan.peak_learning_rates, [ETA, 3 * ETA, 9 * ETA])
