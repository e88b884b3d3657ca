"""Cycles past the plan and the reference of rule (b) after a rollback (METHOD.md section 4,
v4): the controller's host numbers, and the failed scenario that relies on them.

A plan of one 10-step cycle; a detector that switches as soon as the loss rises.
"""

import math

import jax
import numpy as np
import pytest

from cyclic_soft_reset import controller as control
from cyclic_soft_reset import early_switching, hyperparameters, reset, schedules, steps
from cyclic_soft_reset.controller import Evaluation
from scripts.experiments import design

ETA = 2.0
ONE_CYCLE = schedules.make_plan(10, schedules.PlanSettings(num_cycles=1, learning_rate=ETA * 1000))
EAGER = early_switching.DetectorConfig(lambda_=1.0, eps1=0.25, eps2=0.0, grace_evals=0)
SETTINGS = control.Settings(
    target=0.9,
    higher_is_better=True,
    detector=EAGER._replace(relative=False),
    early_switching=True,
    stop_when_plan_ends=False,
    tau_metric="latest",
    tau_formula="thesis",
    improvement_scale="gap",
    switch_signal="loss",
    rollback_to="start",
    slow_cycle_lr_factor=1.0,
    still_cycle_lr_factor=1.0,
    weight_decay=0.0,
    guarded_cycles=0,
    guarded_from=math.inf,
)
RISING = {3: [Evaluation(3, 0.5, 1.0)], 6: [Evaluation(6, 0.4, 9.0)]}


def _decide(controller, steps, evaluations_at, settings):
    known = []
    for step in steps:
        known += evaluations_at.get(step, [])
        given = list(known) if len(known) != controller.evals_seen else None
        controller, _ = control.decide(controller, given, step, settings)
    return controller


def _start():
    return control.start(ONE_CYCLE, seed=np.array([0, 7], dtype=np.uint32), start_norm=2.0)


@pytest.mark.parametrize("switched", [True, False])
def test_a_cycle_past_the_plan_peaks_at_its_own_factor(switched):
    """Past the one planned cycle (by an early switch in it, or at its end) the next cycle
    peaks at past_plan_peak, not at the planned cycle's 1000x; without the setting it
    copies the last cycle."""
    evals = RISING if switched else {}
    own = SETTINGS._replace(past_plan_peak=ETA)
    grown = _decide(_start(), range(11), evals, own)
    assert grown.cycle == 1
    assert grown.plan.boundaries[1] == (6 if switched else 10)
    np.testing.assert_allclose(grown.plan.peak_learning_rates, [ETA * 1000, ETA])
    copied = _decide(_start(), range(11), evals, SETTINGS)
    np.testing.assert_allclose(copied.plan.peak_learning_rates, [ETA * 1000, ETA * 1000])


def test_a_failure_caps_later_peaks_below_the_peak_that_failed():
    """v4: after the 1000x planned cycle fails, the cycle past the plan keeps its own peak
    (ETA is far below 0.5 x 1000 ETA); only a cycle at the failed peak is halved, and the
    ceiling (0.5 x the lowest failed peak) caps every cycle created later."""
    settings = SETTINGS._replace(past_plan_peak=ETA, early_switching=False)
    grown = _decide(_start(), range(11), {}, settings)
    after = control.after_reset(grown, True, failed=True, lr_factor=0.5)
    assert after.peak_ceiling == 500 * ETA
    np.testing.assert_allclose(after.plan.peak_learning_rates, [1000 * ETA, ETA])
    copied = _decide(_start(), range(11), {}, settings._replace(past_plan_peak=None))
    halved = control.after_reset(copied, True, failed=True, lr_factor=0.5)
    np.testing.assert_allclose(halved.plan.peak_learning_rates, [1000 * ETA, 500 * ETA])
    # The cycle past the plan fails at ETA: the ceiling falls to ETA / 2, for every later one.
    again = control.after_reset(after._replace(cycle=2), True, failed=True, lr_factor=0.5)
    assert again.peak_ceiling == ETA / 2
    later = control.extend(again, 20, None, settings)
    np.testing.assert_allclose(later.plan.peak_learning_rates[-1], ETA / 2)
    passed = control.after_reset(after, False, failed=False, lr_factor=0.5)
    assert passed.peak_ceiling == 500 * ETA


@pytest.mark.parametrize(
    ("reference", "rolled_back", "expected"),
    [
        ("failed_start", True, 2.0),
        ("failed_start", False, 30.0),
        ("restored", True, 30.0),
        ("restored", False, 30.0),
    ],
)
def test_rule_b_reference_after_a_rollback(reference, rolled_back, expected):
    """The new cycle's params' norm (30) becomes rule (b)'s reference, except after a
    rollback with the failed cycle's start norm (2) as the reference."""
    controller = _start()
    after = control.after_reset(controller, rolled_back, True, 0.5, 30.0, reference)
    assert after.start_norm == expected


def test_the_schema_passes_the_past_plan_peak_and_the_norm_reference():
    config = hyperparameters.resolve({"past_plan_lr_factor": 0.5, "norm_reference": "restored"})
    settings = hyperparameters.controller_settings(config, 0.9, True)
    assert settings.past_plan_peak == pytest.approx(0.5 * config.learning_rate)
    assert settings.norm_reference == "restored"
    default = hyperparameters.controller_settings(hyperparameters.resolve({}), 0.9, True)
    assert default.past_plan_peak is None and default.norm_reference == "failed_start"


def test_the_failed_scenario_injects_one_failed_cycle():
    """With a one-cycle plan the injected 1000x peak is the planned cycle's only: the
    cycles past the plan run at the base peak (a variant may name its own)."""
    hp = design.RunSpec("digits", "failed", "default", 0).hyperparameters()
    assert hp["cycle_lr_factors"] == [design.FAILED_PEAK_FACTOR]
    assert hp["past_plan_lr_factor"] == 1.0
    three = design.RunSpec("digits", "failed", "v2-default", 0).hyperparameters()
    assert "past_plan_lr_factor" not in three  # Its later planned cycles peak at 1.
    assert design.RunSpec("digits", "healthy", "default", 0).hyperparameters() == {}


# --- v4: a rollback point must have a sound norm ----------------------------------------

BEST = SETTINGS._replace(rollback_to="best", early_switching=False, keep_kappa=3.0)


def _evaluated(metric, step=5):
    controller = _start()  # start_norm 2: sound norms lie in [2/3, 6].
    controller, _ = control.observe(controller, [Evaluation(1, 0.1, 2.0)], BEST)
    controller, _ = control.observe(
        controller, [Evaluation(1, 0.1, 2.0), Evaluation(step, metric, 1.0)], BEST
    )
    return controller


@pytest.mark.parametrize(
    ("norm", "kept"),
    [(None, True), (2.0, True), (6.0, True), (2.0 / 3.0, True), (6.01, False), (0.66, False)],
)
def test_keep_best_keeps_only_a_state_of_sound_norm(norm, kept):
    controller, keep = control.keep_best(_evaluated(0.5), 5, BEST, norm)
    assert keep == kept
    assert controller.kept_metric == (0.5 if kept else 0.1)
    assert (
        controller.unsound_metric == pytest.approx(0.5)
        if not kept
        else np.isnan(controller.unsound_metric)
    )
    if not kept:  # Without keep_kappa (v3) any norm is kept.
        assert control.keep_best(_evaluated(0.5), 5, BEST._replace(keep_kappa=None), norm)[1]


@pytest.mark.parametrize("higher", [True, False])
def test_the_best_refused_state_is_the_best_of_them(higher):
    """Two refused states in a row: unsound_metric is the better of the two, in the
    metric's own direction."""
    settings = BEST._replace(higher_is_better=higher, target=0.9 if higher else 0.1)
    first, second = (0.5, 0.6) if higher else (0.6, 0.5)
    controller = _evaluated(first)._replace(kept_metric=math.nan)
    controller, _ = control.keep_best(controller, 5, settings, 50.0)
    controller = controller._replace(last_metric=second, last_eval_step=7)
    controller, keep = control.keep_best(controller, 7, settings, 50.0)
    assert not keep and controller.unsound_metric == second


def test_decide_passes_the_measured_norm_to_keep_best():
    """The runner's evaluation of this very state, a norm out of bounds: not kept."""
    controller = _start()
    evaluations = [Evaluation(1, 0.1, 2.0), Evaluation(5, 0.5, 1.0)]
    _, refused = control.decide(controller, evaluations, 5, BEST, norm=50.0)
    _, kept = control.decide(controller, evaluations, 5, BEST, norm=2.0)
    assert (refused.keep, kept.keep) == (False, True)


def test_a_failure_without_a_lowering_sets_no_ceiling():
    """A failed cycle with lr_factor 1 (or none given) lowers nothing, not even the ceiling."""
    controller = _decide(_start(), range(11), {}, SETTINGS._replace(early_switching=False))
    for after in (
        control.after_reset(controller, True, failed=True),
        control.after_reset(controller, True, failed=True, lr_factor=1.0),
    ):
        assert after.peak_ceiling == math.inf
        np.testing.assert_array_equal(
            after.plan.peak_learning_rates, controller.plan.peak_learning_rates
        )


def test_the_reset_names_the_cycle_s_best_unsound_state_and_forgets_it():
    two = schedules.make_plan(20, schedules.PlanSettings(num_cycles=2, learning_rate=1.0))
    controller, _ = control.keep_best(_evaluated(0.5)._replace(plan=two), 5, BEST, 50.0)
    later = controller._replace(last_metric=0.4, last_eval_step=7)
    later, keep = control.keep_best(later, 7, BEST, 50.0)  # Refused too, and below 0.5:
    assert not keep and later.unsound_metric == 0.5  # the best refused stays.
    later, action = control.next_cycle(later, 10, None, BEST)
    assert action.unsound_metric == 0.5 and np.isnan(later.unsound_metric)


def test_the_norm_is_read_only_at_evaluations_where_a_state_may_be_kept():
    params = {"w": np.array([3.0, 4.0], np.float32)}
    assert steps.norm_to_keep(params, [Evaluation(1, 0.1, 2.0)], BEST) == pytest.approx(5.0)
    assert steps.norm_to_keep(params, None, BEST) is None
    assert steps.norm_to_keep(params, [], BEST._replace(keep_kappa=None)) is None
    assert steps.norm_to_keep(params, [], BEST._replace(rollback_to="start")) is None
    # A guarded cycle's blow-up switch reads it whatever the rollback keeps (v5).
    guarded = BEST._replace(keep_kappa=None, rollback_to="start", guarded_cycles=1)
    assert steps.norm_to_keep(params, [], guarded) == pytest.approx(5.0)
    assert steps.norm_to_keep(params, None, guarded) is None
    # So does a guarded cycle past the plan (`rescue_cycle_switch = "guards"`).
    rescues = guarded._replace(guarded_cycles=0, guarded_from=1)
    assert steps.norm_to_keep(params, [], rescues) == pytest.approx(5.0)


# --- v4 candidate: a failed cycle's peak lowered by its norm's blow-up ------------------


@pytest.mark.parametrize(
    ("rule", "ratio", "expected"),
    [
        ("factor", 40.0, 0.5),  # The factor alone, whatever the norm did.
        ("norm", 40.0, 1 / 40),  # Rule (b), a 40x blow-up: 1/40 < 0.5.
        ("norm", 1 / 70, 1 / 70),  # Rule (b), a collapse to 1/70.
        ("norm", 1.5, 0.5),  # A small change: the factor is lower.
    ],
)
def test_a_failed_cycle_s_peak_is_lowered_by_its_norm_s_spread(rule, ratio, expected):
    config = hyperparameters.resolve({"failed_peak_rule": rule})
    norm_rule = reset.FAILURE_RULES.index("norm")
    check = reset.FailureCheck(True, True, np.float32(ratio), np.int32(norm_rule))
    assert float(steps.lowering(check, config)) == pytest.approx(expected, rel=1e-6)
    traced = jax.jit(lambda c: steps.lowering(c, config))(check)  # The device agrees.
    assert float(traced) == pytest.approx(expected, rel=1e-6)
    other = check._replace(rule=np.int32(reset.FAILURE_RULES.index("no_improvement")))
    assert float(steps.lowering(other, config)) == 0.5  # Not rule (b): the factor.
