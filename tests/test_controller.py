"""The cycle controller as a pure function of plain numbers (no jax device, no workload).

A plan of three 10-step cycles; a detector that switches as soon as the loss rises
(lambda 1, absolute eps1 0.25, no grace), so each test states its switch by its losses.
"""

import math

import jax
import numpy as np
import pytest

from cyclic_soft_reset import controller as control
from cyclic_soft_reset import early_switching, records, schedules
from cyclic_soft_reset.controller import Evaluation

PLAN = schedules.make_plan(30, schedules.PlanSettings(num_cycles=3, learning_rate=1.0))
EAGER = early_switching.DetectorConfig(lambda_=1.0, eps1=0.25, eps2=0.0, grace_evals=0)
EAGER = EAGER._replace(relative=False)
# The v2 rules these tests were written for: the plan's end stops the run, tau from the
# target alone, the detector on the validation loss, a rollback to the cycle's start.
SETTINGS = control.Settings(
    target=0.9,
    higher_is_better=True,
    detector=EAGER,
    early_switching=True,
    stop_when_plan_ends=True,
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


def _start(plan=PLAN):
    return control.start(plan, seed=np.array([0, 7], dtype=np.uint32))


def _run(controller, steps, evaluations_at=None, settings=SETTINGS):
    """Steps through `steps`; evaluations_at[step] = all evaluations known at that step.
    Returns the controller and every (step, decision) that was not plain training."""
    evaluations_at = evaluations_at or {}
    log, known = [], []
    for step in steps:
        new = evaluations_at.get(step)
        if new is not None:
            known = known + list(new)
        given = list(known) if len(known) != controller.evals_seen else None
        controller, decision = control.decide(controller, given, step, settings)
        if decision != control.Decision():
            log.append((step, decision))
        if decision.stop:
            break
    return controller, log


def test_planned_resets_at_each_boundary_then_stop():
    controller, log = _run(_start(), range(40))
    assert [(s, [r.cycle for r in d.resets], d.stop) for s, d in log] == [
        (10, [1], None),
        (20, [2], None),
        (30, [], "the cycle plan ended at step 30."),
    ]
    first = log[0][1].resets[0]
    assert (first.step, first.cycle, first.early, first.end) == (10, 1, False, 20)
    assert first.tau == 1.0 and math.isnan(first.metric)  # No evaluation yet: tau = 1.
    assert controller.cycle == 2


def test_tau_from_the_latest_metric_and_the_target():
    evals = {5: [Evaluation(5, 0.45, 1.0)], 8: [Evaluation(8, 0.72, 0.9)]}
    _, log = _run(_start(), range(11), evals)
    (reset,) = log[0][1].resets
    assert reset.metric == 0.72
    assert reset.tau == pytest.approx((0.9 - 0.72) / 0.9)
    assert not reset.early


def test_tau_from_the_cycle_best_is_an_ablation():
    settings = SETTINGS._replace(tau_metric="best")
    evals = {5: [Evaluation(5, 0.81, 1.0)], 8: [Evaluation(8, 0.72, 0.9)]}
    controller, log = _run(_start(), range(11), evals, settings)
    assert log[0][1].resets[0].metric == 0.81
    assert math.isnan(controller.cycle_best_metric)  # A new cycle starts with no best.


def test_lower_is_better_metric_mirrors_tau():
    settings = SETTINGS._replace(target=0.5, higher_is_better=False)
    _, log = _run(_start(), range(11), {9: [Evaluation(9, 2.0, 2.0)]}, settings)
    assert log[0][1].resets[0].tau == pytest.approx(1 - 0.5 / 2.0)


def test_rising_loss_switches_early_and_replans():
    evals = {3: [Evaluation(3, 0.5, 1.0)], 6: [Evaluation(6, 0.4, 2.0)]}
    controller, log = _run(_start(), range(8), evals)
    step, decision = log[0]
    assert step == 6 and decision.switch == control.Switch(6, early_switching.RISING, 2.0)
    (reset,) = decision.resets
    assert (reset.step, reset.cycle, reset.early, reset.end) == (6, 1, True, 18)
    assert reset.reason == early_switching.RISING
    assert "early switch (rising)" in control.describe(reset)
    assert controller.plan.boundaries.tolist() == [0, 6, 18, 30]
    assert controller.detector == early_switching.initial_state()


def test_switch_signal_metric_watches_the_target_metric_not_the_loss():
    """Overfitting: the validation loss rises while the accuracy still improves. The loss
    signal switches; the metric signal (-y, higher is better) does not, and switches when
    the accuracy falls."""
    improving = {3: [Evaluation(3, 0.5, 1.0)], 6: [Evaluation(6, 0.7, 2.0)]}
    metric = SETTINGS._replace(switch_signal="metric")
    assert _run(_start(), range(8), improving)[1][0][1].switch.step == 6  # Loss: switches.
    assert _run(_start(), range(8), improving, metric)[1] == []
    falling = {3: [Evaluation(3, 0.5, 1.0)], 6: [Evaluation(6, 0.2, 0.9)]}
    (step, decision), *_ = _run(_start(), range(8), falling, metric)[1]
    assert decision.switch == control.Switch(6, early_switching.RISING, 0.9)
    lower = SETTINGS._replace(target=0.1, higher_is_better=False, switch_signal="metric")
    assert control.switch_value(Evaluation(1, 0.3, 5.0), lower) == 0.3
    assert control.switch_value(Evaluation(1, 0.3, 5.0), metric) == -0.3
    assert control.switch_value(Evaluation(1, 0.3, 5.0), SETTINGS) == 5.0


def test_an_evaluation_on_a_boundary_belongs_to_the_planned_reset():
    evals = {3: [Evaluation(3, 0.5, 1.0)], 10: [Evaluation(10, 0.4, 9.0)]}
    controller, log = _run(_start(), range(12), evals)
    (reset,) = log[0][1].resets
    assert (reset.step, reset.early, log[0][1].switch) == (10, False, None)
    assert reset.reason == "planned" and "planned" in control.describe(reset)
    assert controller.plan.boundaries.tolist() == [0, 10, 20, 30]
    assert controller.detector.num_evals == 0  # Not fed to the next cycle's detector.


def test_two_evaluations_in_one_call_only_the_first_switch_counts():
    both = [Evaluation(2, 0.5, 1.0), Evaluation(4, 0.4, 2.0), Evaluation(6, 0.3, 3.0)]
    controller, log = _run(_start(), range(8), {7: both})
    step, decision = log[0]
    assert (step, decision.switch.step) == (7, 4)
    (reset,) = decision.resets
    assert reset.early and reset.step == 7
    assert reset.metric == 0.3  # Every evaluation is recorded, the latest gives tau.
    assert controller.plan.boundaries.tolist()[:2] == [0, 4]
    assert controller.last_eval_step == 6 and controller.evals_seen == 3


def test_evaluations_out_of_order_and_already_seen_are_read_once():
    controller, _ = _run(_start(), range(3), {2: [Evaluation(1, 0.5, 1.0)]})
    later = [Evaluation(5, 0.6, 0.9), Evaluation(1, 0.5, 1.0), Evaluation(4, 0.55, 0.95)]
    controller, decision = control.decide(controller, later, 5, SETTINGS)
    assert decision == control.Decision()
    assert controller.detector.num_evals == 3 and controller.last_metric == 0.6


def test_no_switch_in_the_last_cycle_without_queued_cycles():
    evals = {22: [Evaluation(22, 0.5, 1.0)], 25: [Evaluation(25, 0.4, 9.0)]}
    controller, log = _run(_start(), range(30), evals)
    assert [s for s, _ in log] == [10, 20]
    assert controller.detector.num_evals == 0  # The detector is not even fed.


def test_switch_in_the_last_cycle_with_queued_cycles_adds_one():
    settings = SETTINGS._replace(stop_when_plan_ends=False)
    evals = {22: [Evaluation(22, 0.5, 1.0)], 25: [Evaluation(25, 0.4, 9.0)]}
    controller, log = _run(_start(), range(36), evals, settings)
    assert [(s, d.resets[0].cycle, d.resets[0].early) for s, d in log] == [
        (10, 1, False),
        (20, 2, False),
        (25, 3, True),
        (35, 4, False),
    ]
    assert controller.plan.boundaries.tolist() == [0, 10, 20, 25, 35, 45]


def test_plan_end_with_queued_cycles_repeats_the_last_cycle():
    settings = SETTINGS._replace(stop_when_plan_ends=False)
    controller, log = _run(_start(), range(51), settings=settings)
    assert [s for s, _ in log] == [10, 20, 30, 40, 50]
    assert controller.plan.peak_learning_rates.tolist()[3:] == [1.0, 1.0, 1.0]


def test_a_step_past_several_boundaries_gives_every_reset_in_order():
    controller, decision = control.decide(_start(), None, 25, SETTINGS)
    assert [r.cycle for r in decision.resets] == [1, 2] and decision.stop is None
    _, decision = control.decide(_start(), None, 31, SETTINGS)
    assert [r.cycle for r in decision.resets] == [1, 2] and decision.stop is not None


def test_early_switching_off_never_feeds_the_detector():
    settings = SETTINGS._replace(early_switching=False)
    evals = {3: [Evaluation(3, 0.5, 1.0)], 6: [Evaluation(6, 0.4, 9.0)]}
    controller, log = _run(_start(), range(11), evals, settings)
    assert [s for s, _ in log] == [10] and not log[0][1].resets[0].early


def test_non_finite_loss_switches_at_once_and_tau_is_one():
    evals = {4: [Evaluation(4, math.nan, math.nan)]}
    _, log = _run(_start(), range(6), evals)
    (reset,) = log[0][1].resets
    assert reset.early and reset.tau == 1.0 and reset.reason == early_switching.NON_FINITE


def test_a_restored_controller_decides_like_the_live_one():
    """A checkpoint gives the controller back as arrays; as_host makes plain numbers
    again, and the run continues with the same decisions."""
    evals = {3: [Evaluation(3, 0.5, 1.0)], 5: [Evaluation(5, 0.45, 0.9)]}
    live, _ = _run(_start(), range(6), evals)
    restored = jax.tree.map(np.asarray, live)  # What a checkpoint gives back.
    host = control.as_host(restored)
    assert type(host.cycle) is int and type(host.detector.smoothed) is float
    later = [Evaluation(3, 0.5, 1.0), Evaluation(5, 0.45, 0.9), Evaluation(7, 0.3, 5.0)]
    a = control.decide(live, later, 8, SETTINGS)
    b = control.decide(host, later, 8, SETTINGS)
    assert repr(a) == repr(b)
    assert a[1].resets[0].early
    assert control.as_host(live) is live  # Host numbers already: no copy.


def test_no_improvement_is_judged_against_the_last_evaluation_before_the_cycle():
    """Rule (c): cycle 0 against the run's first evaluation, later cycles against the last
    evaluation before they began, within eps2 (1%) of it."""
    evals = {
        3: [Evaluation(3, 0.50, 1.0)],
        8: [Evaluation(8, 0.503, 1.0)],  # Within 1% of 0.50: no improvement.
        15: [Evaluation(15, 0.70, 0.8)],  # Better than 0.503: improved.
        25: [Evaluation(25, 0.69, 0.8)],
    }
    settings = SETTINGS._replace(early_switching=False, detector=EAGER._replace(eps2=0.01))
    controller, log = _run(_start(), range(30), evals, settings)
    assert [d.resets[0].no_improvement for _, d in log[:2]] == [True, False]
    assert controller.first_metric == 0.50 and controller.cycle_start_metric == 0.70


def test_a_cycle_without_evaluations_is_not_judged():
    _, log = _run(_start(), range(11))
    assert log[0][1].resets[0].no_improvement is False


def test_after_a_rollback_the_next_cycle_must_improve_on_the_failed_ones_start():
    evals = {5: [Evaluation(5, 0.5, 1.0)], 15: [Evaluation(15, 0.4, 1.2)]}
    settings = SETTINGS._replace(early_switching=False)
    controller, _ = _run(_start(), range(11), evals, settings)
    assert controller.cycle_start_metric == 0.5
    controller, log = _run(controller, range(11, 21), evals, settings)
    assert log[0][1].resets[0].no_improvement  # 0.4 is no better than 0.5.
    assert controller.cycle_start_metric == 0.4  # The last evaluation before cycle 2 ...
    rolled_back = control.after_reset(controller, rolled_back=True)
    assert rolled_back.cycle_start_metric == 0.5  # ... unless cycle 1 was rolled back.
    kept = control.after_reset(controller, rolled_back=False, start_norm=controller.start_norm)
    assert kept._replace(plan=None) == controller._replace(plan=None)  # Nothing else moves.


def test_relative_tau_uses_the_runs_first_evaluation():
    settings = SETTINGS._replace(early_switching=False, tau_formula="relative")
    evals = {2: [Evaluation(2, 0.1, 2.0)], 9: [Evaluation(9, 0.5, 1.0)]}
    _, log = _run(_start(), range(11), evals, settings)
    assert log[0][1].resets[0].tau == pytest.approx((0.5 - 0.9) / (0.1 - 0.9))


def test_no_improvement_margin_of_the_gap_to_the_target():
    """Near the target a margin of the value asks for more than is left to gain: 0.967 ->
    0.969 with a 0.97 target is no improvement by 1% of 0.967, but is by 1% of the gap."""
    evals = {5: [Evaluation(5, 0.5, 1.0)], 15: [Evaluation(15, 0.967, 0.2)]}
    evals[25] = [Evaluation(25, 0.969, 0.2)]
    base = SETTINGS._replace(
        early_switching=False,
        stop_when_plan_ends=False,
        target=0.97,
        detector=EAGER._replace(eps2=0.01),
    )
    for scale, expected in (("value", True), ("gap", False)):
        settings = base._replace(improvement_scale=scale)
        _, log = _run(_start(), range(31), evals, settings)
        # Cycle 0 saw only the run's first evaluation: nothing beyond its own start.
        assert [d.resets[0].no_improvement for _, d in log] == [True, False, expected]


def test_tau_expected_counts_the_share_of_the_plan_spent():
    settings = SETTINGS._replace(tau_formula="expected")
    evals = {5: [Evaluation(5, 0.1, 2.0)], 9: [Evaluation(9, 0.3, 1.5)]}
    _, log = _run(_start(), range(11), evals, settings)
    (step, decision), *_ = log
    # At step 10 of 30 (f = 1/3) a quarter of the way from 0.1 to 0.9 is done.
    assert step == 10
    assert decision.resets[0].tau == pytest.approx(1 - (0.2 / 0.8) * 3)


def test_after_a_failed_cycle_later_peaks_are_lowered():
    controller, _ = _run(_start(), range(11))
    assert controller.cycle == 1
    lowered = control.after_reset(controller, rolled_back=True, failed=True, lr_factor=0.5)
    np.testing.assert_allclose(lowered.plan.peak_learning_rates, [1.0, 0.5, 0.5])
    # Cycle 1 (at 0.5) fails too: cycle 2 is capped at half of that.
    again = control.after_reset(lowered._replace(cycle=2), False, failed=True, lr_factor=0.5)
    np.testing.assert_allclose(again.plan.peak_learning_rates, [1.0, 0.5, 0.25])
    # Failing again at cycle 1's index changes nothing: its peak 1.0 gives the ceiling 0.5.
    same = control.after_reset(lowered, rolled_back=False, failed=True, lr_factor=0.5)
    np.testing.assert_allclose(same.plan.peak_learning_rates, [1.0, 0.5, 0.5])
    kept = control.after_reset(controller, rolled_back=False, failed=False, lr_factor=0.5)
    np.testing.assert_allclose(kept.plan.peak_learning_rates, [1.0, 1.0, 1.0])


# --- v3: the rollback point is the cycle's best evaluated state --------------------------


def test_keep_marks_each_evaluation_of_this_state_that_beats_the_kept_one():
    """With rollback_to = "best" an evaluation at the current step (the state about to be
    trained is the one evaluated) that beats the kept metric makes this state the rollback
    point; a worse one or a stale one (evaluated at another step) does not."""
    settings = SETTINGS._replace(rollback_to="best", early_switching=False)
    evals = {
        2: [Evaluation(2, 0.3, 1.0)],  # The run's first: the cycle's start metric, kept.
        4: [Evaluation(4, 0.5, 0.9)],  # Better: kept.
        6: [Evaluation(6, 0.4, 0.9)],  # Worse: not kept.
        8: [Evaluation(7, 0.6, 0.8)],  # Better, but of step 7's state: not this one.
        10: [Evaluation(10, 0.7, 0.7)],  # The end of cycle 0, its best: kept, then reset.
        13: [Evaluation(13, 0.65, 0.7)],  # Cycle 1, better than its start 0.6? No: 0.7.
        15: [Evaluation(15, 0.75, 0.6)],  # Better than 0.7: kept.
    }
    controller, log = _run(_start(), range(16), evals, settings)
    assert [s for s, d in log if d.keep] == [4, 10, 15]
    assert controller.kept_metric == 0.75
    (reset,) = [r for _, d in log for r in d.resets]
    assert reset.cycle == 1 and reset.step == 10
    # `start` keeps the cycle's start: no state is ever marked.
    controller, log = _run(_start(), range(16), evals, settings._replace(rollback_to="start"))
    assert not any(d.keep for _, d in log) and controller.kept_metric == 0.7


def test_a_rollback_to_the_best_makes_the_next_cycle_improve_on_the_best():
    """The reset hands the kept metric to after_reset (previous_start_metric); a rolled-back
    cycle then starts from the restored state's metric, and keeps it."""
    settings = SETTINGS._replace(rollback_to="best", early_switching=False)
    evals = {2: [Evaluation(2, 0.3, 1.0)], 5: [Evaluation(5, 0.6, 0.9)], 9: [Evaluation(9, 0.2, 2)]}
    controller, _ = _run(_start(), range(11), evals, settings)
    assert controller.cycle == 1 and controller.previous_start_metric == 0.6
    back = control.after_reset(controller, rolled_back=True, failed=True, start_norm=2.5)
    assert back.cycle_start_metric == back.kept_metric == 0.6
    assert back.start_norm == controller.start_norm == 1.0  # Rule (b)'s reference stands.
    kept = control.after_reset(controller, rolled_back=False, start_norm=3.0)
    assert kept.cycle_start_metric == kept.kept_metric == 0.2 and kept.start_norm == 3.0


def test_the_summary_states_the_plan_and_the_cycle_in_plain_numbers():
    """What plots, logs and `submission.plan_summary` read: boundaries, peaks, warm-up
    fractions, shape names, the current cycle, the planned total and where the first
    cycle's cooldown ends (-1: none), as Python numbers."""
    settings = schedules.PlanSettings(
        num_cycles=2,
        learning_rate=0.5,
        cycle_lr_factors=[1.0, 0.5],
        cycle_warmup_factors=[1.0, 2.0],
        warmup_shape="exponential",
        decay_shape="linear",
    )
    controller = _start(schedules.make_plan(40, settings))._replace(cycle=1)
    summary = records.plan_summary(controller)
    assert summary == {
        "boundaries": [0, 20, 40],
        "peak_learning_rates": [0.5, 0.25],
        "warmup_fractions": [0.02, 0.04],
        "warmup_shape": "exponential",
        "decay_shape": "linear",
        "cycle": 1,
        "planned_total_steps": 40,
        "cooldown_end": -1,
    }
    assert all(type(x) is int for x in summary["boundaries"])
    assert all(type(x) is float for x in summary["peak_learning_rates"])
    assert all(type(x) is float for x in summary["warmup_fractions"])
    # The default plan has one cycle: its shapes are read from it.
    one = records.plan_summary(_start(schedules.make_plan(10, schedules.PlanSettings(1, 1.0))))
    assert (one["warmup_shape"], one["decay_shape"], one["boundaries"]) == (
        "linear",
        "cosine",
        [0, 10],
    )


def test_a_reset_is_described_in_one_log_line():
    planned = control.Reset(step=20, cycle=2, early=False, tau=0.25, metric=0.5, end=30)
    assert control.describe(planned) == (
        "reset at step 20: cycle 2 starts, planned, tau 0.2500 (metric 0.5), until step 30"
    )
    early = planned._replace(early=True, reason="rising")
    assert control.describe(early) == (
        "reset at step 20: cycle 2 starts, early switch (rising), tau 0.2500 (metric 0.5), "
        "until step 30"
    )


# Budgets of the tests below: r = 1 s per step from the samples (0, 0), (10, 10), (20, 20).
SAMPLES = np.array([[0.0, 0.0], [10.0, 10.0], [20.0, 20.0]])


def test_start_keeps_the_params_norm_and_takes_plain_ints_as_key_data():
    controller = control.start(PLAN, seed=[0, 7], start_norm=2.5)
    assert controller.start_norm == 2.5 and controller.cycle == 0
    assert controller.seed.dtype == np.uint32  # Key data for jax.random.fold_in.
    assert (jax.random.fold_in(controller.seed, 1) == jax.random.fold_in(_start().seed, 1)).all()


def test_a_checkpoint_on_the_device_comes_back_as_host_numbers():
    """Restored onto the device (32-bit arrays) or with wider integers, the controller is
    host numbers again: numpy arrays, key data uint32, time samples float64 (k x 2)."""
    live = _start()._replace(time_samples=SAMPLES)
    host = control.as_host(jax.tree.map(jax.numpy.asarray, live))
    for field in (*host.plan, host.seed, host.time_samples):
        assert type(field) is np.ndarray
    assert host.time_samples.dtype == np.float64 and host.time_samples.shape == (3, 2)
    np.testing.assert_array_equal(host.time_samples, SAMPLES)
    wide = control.as_host(live._replace(cycle=np.int64(0), seed=live.seed.astype(np.int64)))
    assert wide.seed.dtype == np.uint32 and wide.seed.tolist() == [0, 7]


def test_after_reset_by_default_changes_no_peak_and_takes_norm_one():
    controller = _start()._replace(start_norm=3.0)
    peaks = PLAN.peak_learning_rates.tolist()
    assert control.after_reset(controller, rolled_back=False).start_norm == 1.0
    for kwargs in ({"lr_factor": 0.5}, {"failed": True}):  # Not failed; a factor of 1.
        after = control.after_reset(controller, rolled_back=False, **kwargs)
        assert after.plan.peak_learning_rates.tolist() == peaks
    capped = control.after_reset(controller._replace(cycle=1), False, failed=True, lr_factor=0.25)
    assert capped.plan.peak_learning_rates.tolist() == [peaks[0], peaks[0] / 4, peaks[0] / 4]
    assert capped.peak_ceiling == peaks[0] / 4


def test_a_cycle_can_follow_until_the_last_when_the_plan_end_stops_the_run():
    assert control.can_follow(_start()._replace(cycle=1), SETTINGS)
    assert not control.can_follow(_start()._replace(cycle=2), SETTINGS)
    assert control.can_follow(
        _start()._replace(cycle=2), SETTINGS._replace(stop_when_plan_ends=False)
    )


def test_the_runners_seconds_are_read_only_with_a_budget_and_a_budget_only_with_them():
    evals = [Evaluation(3, 0.5, 1.0), Evaluation(5, 0.5, 1.0), Evaluation(7, 0.5, 1.0)]
    budget = schedules.Budget(seconds=40.0, fill=0.5)
    controller = _start()
    for k, step in enumerate((3, 5, 7)):
        controller, decision = control.decide(controller, evals[: k + 1], step, SETTINGS, step)
        assert decision.refit is None
    controller, decision = control.decide(controller, evals, 8, SETTINGS._replace(budget=budget))
    assert decision.refit is None
    np.testing.assert_array_equal(controller.time_samples, np.zeros((1, 2)))


def test_after_a_switch_only_the_moved_boundary_is_an_early_reset():
    """A call late enough to pass several boundaries: the reset at the switch's step is
    early, the next ones are planned; at the plan's end the stop still reports the switch."""
    evals = [Evaluation(3, 0.5, 1.0), Evaluation(5, 0.4, 2.0)]  # The loss rises: switch at 5.
    _, decision = control.decide(_start(), evals, 25, SETTINGS)
    assert [(r.step, r.cycle, r.early, r.reason) for r in decision.resets] == [
        (25, 1, True, early_switching.RISING),
        (25, 2, False, "planned"),
    ]
    _, decision = control.decide(_start(), evals, 35, SETTINGS)
    assert decision.stop == "the cycle plan ended at step 30."
    assert decision.switch == control.Switch(5, early_switching.RISING, 2.0)
    assert decision.refit is None and decision.keep is False


def test_a_stop_reports_the_refit_and_the_kept_state_of_the_same_call():
    """At step 35 (1 s per step, 35 s spent) the plan is re-fitted to end at 35 (half of a
    70 s budget), cycle 2 starts and ends at once: the run stops; the evaluation at 35
    beat the kept state, so the state is kept first."""
    budget = schedules.Budget(seconds=70.0, fill=0.5)
    settings = SETTINGS._replace(early_switching=False, rollback_to="best", budget=budget)
    controller = _start()._replace(
        cycle=1, time_samples=SAMPLES, last_eval_step=20, first_metric=0.1, kept_metric=0.2
    )
    controller, decision = control.decide(
        controller, [Evaluation(35, 0.6, 1.0)], 35, settings, seconds=35.0
    )
    assert [(r.step, r.cycle, r.end) for r in decision.resets] == [(35, 2, 35)]
    assert decision == control.Decision(
        decision.resets,
        "the cycle plan ended at step 35.",
        None,
        control.Refit(35, 35.0, 1.0, 35),
        True,
    )


@pytest.mark.parametrize(
    ("seconds", "min_steps", "scale", "end"),
    [(100.0, 4, 1.0, 34), (60.0, 4, 1.0, 70), (100.0, 1, 1.0, 31), (100.0, 4, 0.5, 32)],
)
def test_past_the_plan_a_cycle_lasts_until_the_budget_and_at_least_min_steps(
    seconds, min_steps, scale, end
):
    """Budget spent (100 s of 100): the cycle past the plan is min_steps long after the
    plan's end 30, in the plan's steps (x first_cycle_scale: half of 4 after a first cycle
    fitted to half its length); with 40 s left at 1 s per step, it ends at 30 + 40."""
    budget = schedules.Budget(seconds=100.0, fill=0.5, min_steps=min_steps)
    settings = SETTINGS._replace(stop_when_plan_ends=False, budget=budget)
    controller = _start()._replace(cycle=2, time_samples=SAMPLES, first_cycle_scale=scale)
    extended = control.extend(controller, 30, seconds, settings)
    assert extended.plan.boundaries.tolist() == [0, 10, 20, 30, end]
    controller, decision = control.decide(controller, None, 30, settings, seconds=seconds)
    ((reset),) = decision.resets
    assert (reset.cycle, reset.end) == (3, end)


def test_the_kept_state_is_a_finite_strictly_better_one_inside_the_cycle():
    best = SETTINGS._replace(rollback_to="best")
    base = _start()._replace(cycle=1, last_eval_step=15, last_metric=0.6, kept_metric=0.5)
    assert control.keep_best(base, 15, best) == (base._replace(kept_metric=0.6), True)
    assert control.keep_best(base, 15, SETTINGS) == (base, False)  # rollback_to start.
    on_start = base._replace(last_eval_step=10)  # The state the reset at 10 made.
    assert control.keep_best(on_start, 10, best) == (on_start, False)
    fresh = base._replace(last_metric=math.nan, kept_metric=math.nan)
    assert control.keep_best(fresh, 15, best) == (fresh, False)
    lower = best._replace(target=0.1, higher_is_better=False)
    assert control.keep_best(base._replace(last_metric=0.4), 15, lower)[1]
    assert not control.keep_best(base._replace(last_metric=0.5), 15, lower)[1]
    assert not control.keep_best(base, 15, lower)[1]


def test_a_cycle_without_evaluations_after_one_with_them_is_not_judged():
    """Cycle 0 is judged (0.503 within 1% of the first 0.5); cycle 1, not evaluated, is
    not, whether the caller passed no list or the same list again."""
    settings = SETTINGS._replace(early_switching=False, detector=EAGER._replace(eps2=0.01))
    evals = {3: [Evaluation(3, 0.5, 1.0)], 8: [Evaluation(8, 0.503, 1.0)]}
    _, log = _run(_start(), range(21), evals, settings)
    assert [d.resets[0].no_improvement for _, d in log] == [True, False]
    controller = _start()
    for step in range(21):
        known = [e for at, new in evals.items() if at <= step for e in new]
        controller, decision = control.decide(controller, known, step, settings)
        if decision.resets:
            assert decision.resets[0].no_improvement is (step == 10)
            assert controller.cycle_evals == 0
    assert controller.cycle == 2


def test_after_a_non_finite_evaluation_the_next_cycle_must_beat_the_first():
    settings = SETTINGS._replace(early_switching=False)
    evals = {3: [Evaluation(3, 0.5, 1.0)], 6: [Evaluation(6, math.nan, math.nan)]}
    evals[15] = [Evaluation(15, 0.45, 1.0)]
    controller, log = _run(_start(), range(21), evals, settings)
    assert [d.resets[0].no_improvement for _, d in log] == [True, True]
    assert controller.first_metric == 0.5


def test_the_runs_first_evaluation_may_be_at_step_zero():
    settings = SETTINGS._replace(early_switching=False, tau_formula="relative")
    evals = {0: [Evaluation(0, 0.1, 2.0)], 5: [Evaluation(5, 0.5, 1.0)]}
    controller, log = _run(_start(), range(11), evals, settings)
    assert controller.first_metric == 0.1
    assert log[0][1].resets[0].tau == pytest.approx((0.5 - 0.9) / (0.1 - 0.9))


def test_an_evaluation_on_the_cycles_start_is_not_fed_to_its_detector():
    """The evaluation of the state the reset at 10 made, read at 11, belongs to that
    reset: the detector of cycle 1 sees only 13 (one evaluation: no rise yet)."""
    evals = {11: [Evaluation(10, 0.5, 1.0)], 13: [Evaluation(13, 0.5, 2.0)]}
    controller, log = _run(_start(), range(15), evals)
    assert [s for s, _ in log] == [10]
    assert controller.detector.num_evals == 1


@pytest.mark.parametrize("cycle, early", [(0, False), (2, True)])
def test_every_new_evaluation_is_read_even_when_the_detector_is_not_fed(cycle, early):
    """Early switching off, or the last cycle of a plan whose end stops the run: all three
    evaluations are recorded (the latest, the cycle's best, the count)."""
    settings = SETTINGS._replace(early_switching=early)
    evals = [Evaluation(21, 0.5, 1.0), Evaluation(23, 0.7, 1.0), Evaluation(25, 0.6, 1.0)]
    controller = _start()._replace(cycle=cycle)
    controller, _ = control.observe(controller, evals, settings)
    assert (controller.last_metric, controller.cycle_best_metric) == (0.6, 0.7)
    assert controller.cycle_evals == 3 and controller.last_eval_step == 25
    controller, _ = control.observe(controller, evals, settings)
    assert controller.cycle_evals == 3


def test_two_evaluations_of_one_step_are_read_in_the_order_given():
    """A step evaluated twice (the runner evaluates again after a checkpoint restore;
    `algoperf_compat.parse_eval_results` keeps the runner's order within a step): the one
    given last is the latest, whatever its metric, and tau_metric "latest" reads it."""
    for later, earlier in ((0.3, 0.5), (0.5, 0.3)):
        evals = [Evaluation(23, earlier, 1.0), Evaluation(23, later, 1.0)]
        controller, _ = control.observe(_start(), evals, SETTINGS)
        assert controller.last_metric == later and controller.last_eval_step == 23
        assert controller.cycle_best_metric == 0.5 and controller.cycle_evals == 2


@pytest.mark.parametrize(("min_steps", "boundaries"), [(1, [0, 10, 18, 26]), (9, [0, 10, 26])])
def test_refit_drops_cycles_shorter_than_min_steps(min_steps, boundaries):
    """At step 20 after 20 s (1 s per step) half of a 52 s budget ends at step 26: the two
    cycles after the current one share [10, 26), 8 steps each, fewer than min_steps 9."""
    budget = schedules.Budget(seconds=52.0, fill=0.5, min_steps=min_steps)
    controller = _start()._replace(time_samples=SAMPLES[:2])
    controller, refit = control.refit(controller, 20, 20.0, budget)
    assert controller.plan.boundaries.tolist() == boundaries
    assert refit == control.Refit(20, 20.0, 1.0, 26)


def test_refit_reports_nothing_when_the_plan_already_fits():
    budget = schedules.Budget(seconds=60.0, fill=0.5)  # Half: 30 s, step 30 at 1 s per step.
    controller = _start()._replace(time_samples=SAMPLES[:2])
    controller, refit = control.refit(controller, 20, 20.0, budget)
    assert refit is None and controller.plan.boundaries.tolist() == [0, 10, 20, 30]
    assert controller.time_samples.tolist() == SAMPLES.tolist()


# 2 s per step from (0, 0), (2, 4), (4, 8): at step 4 after 8 s, half of 28 s is spent
# at step 4 + (14 - 8) / 2 = 7, short of the first cycle's end 10 by more than 10%.
SLOW = np.array([[0.0, 0.0], [2.0, 4.0]])


@pytest.mark.parametrize("fit_first", [True, False])
def test_on_slow_hardware_the_first_cycle_is_fitted_only_when_asked(fit_first):
    """fit_first_cycle: the first cycle ends at 7, the later ones are dropped, the scale of
    the shortest cycle past the plan is 7 / 10, and the refit says the window moved.
    Without it the first cycle keeps its end 10 and the later ones, with no time left,
    are dropped."""
    budget = schedules.Budget(seconds=28.0, fill=0.5, fit_first=fit_first)
    controller = _start()._replace(time_samples=SLOW)
    controller, refit = control.refit(controller, 4, 8.0, budget)
    end = 7 if fit_first else 10
    assert controller.plan.boundaries.tolist() == [0, end]
    assert refit[:4] == (4, 8.0, 2.0, end) and (refit.window is not None) == fit_first
    if fit_first:  # The first cycle's window, from its start to its new end.
        assert refit.window.boundaries.tolist() == [0, 7]
    assert controller.first_cycle_scale == pytest.approx(0.7 if fit_first else 1.0)


def test_only_the_first_cycle_is_fitted_to_slow_hardware():
    """In cycle 1 (2 s per step, half of 64 s spent at step 16) the current cycle keeps its
    end 20; the one after it, with no time left, is dropped."""
    budget = schedules.Budget(seconds=64.0, fill=0.5, fit_first=True)
    controller = _start()._replace(cycle=1, time_samples=np.array([[0.0, 0.0], [12.0, 24.0]]))
    controller, refit = control.refit(controller, 14, 28.0, budget)
    assert controller.plan.boundaries.tolist() == [0, 10, 20]
    assert refit == control.Refit(14, 28.0, 2.0, 20)
    assert controller.first_cycle_scale == 1.0


GUARDED = SETTINGS._replace(guarded_cycles=1, failure_kappa=3.0)


def test_a_guarded_cycle_is_not_ended_by_the_detector_alone_and_later_cycles_are():
    """The planned cycle (cycle 0 here) ignores a rising loss while the params' norm is
    sound (or unmeasured); cycle 1 switches on it."""
    rising = {3: [Evaluation(3, 0.5, 1.0)], 6: [Evaluation(6, 0.4, 2.0)]}
    later = {13: [Evaluation(13, 0.5, 1.0)], 16: [Evaluation(16, 0.4, 2.0)]}
    _, log = _run(_start(), range(18), rising | later, GUARDED)
    assert [(s, d.switch) for s, d in log] == [
        (10, None),
        (16, control.Switch(16, early_switching.RISING, 2.0)),
    ]
    _, log = _run(_start(), range(8), rising, GUARDED._replace(guarded_cycles=0))
    assert log[0][1].switch == control.Switch(6, early_switching.RISING, 2.0)


def test_cycles_past_the_plan_are_guarded_from_guarded_from_on():
    """`rescue_cycle_switch = "guards"` (guarded_from 1): cycle 1's rising loss, which
    the detector alone ends above, ends nothing while the norm is sound and ends it when
    the norm confirms; cycle 0 follows `guarded_cycles` alone (the detector ends it)."""
    later = {13: [Evaluation(13, 0.5, 1.0)], 16: [Evaluation(16, 0.4, 2.0)]}
    rescues = GUARDED._replace(guarded_from=1)
    _, log = _run(_start(), range(18), later, rescues)
    assert [(s, d.switch) for s, d in log] == [(10, None)]
    controller, _ = _run(_start(), range(11), {}, rescues)
    controller, _ = control.decide(controller, later[13], 13, rescues, None, 1.0)
    evals = later[13] + later[16]
    for norm, switch in [(2.9, None), (3.1, control.Switch(16, early_switching.RISING, 2.0))]:
        assert control.decide(controller, evals, 16, rescues, None, norm)[1].switch == switch
    rising = {3: [Evaluation(3, 0.5, 1.0)], 6: [Evaluation(6, 0.4, 2.0)]}
    _, log = _run(_start(), range(8), rising, rescues._replace(guarded_cycles=0))
    assert log[0][1].switch == control.Switch(6, early_switching.RISING, 2.0)


def test_a_guarded_cycle_ends_on_a_non_finite_evaluation():
    evals = {4: [Evaluation(4, math.nan, math.nan)]}
    _, log = _run(_start(), range(6), evals, GUARDED)
    (reset,) = log[0][1].resets
    assert (reset.step, reset.early, reset.reason) == (4, True, early_switching.NON_FINITE)


def _guarded_decide(norm, loss=2.0, start_norm=1.0):
    """The guarded cycle after evaluations at steps 3 (loss 1) and 6 (`loss`), with the
    norm of the params evaluated at 6 given."""
    controller = control.start(PLAN, np.array([0, 7], dtype=np.uint32), start_norm=start_norm)
    controller, _ = control.decide(controller, [Evaluation(3, 0.5, 1.0)], 3, GUARDED, None, 1.0)
    evals = [Evaluation(3, 0.5, 1.0), Evaluation(6, 0.4, loss)]
    return control.decide(controller, evals, 6, GUARDED, None, norm)[1]


@pytest.mark.parametrize(
    ("norm", "loss", "reason"),
    [
        (2.9, 2.0, None),  # rising, the norm sound: no switch
        (3.1, 2.0, early_switching.RISING),  # rising, confirmed by the norm
        (0.3, 2.0, early_switching.RISING),
        (3.1, 0.9, None),  # the norm out, the detector quiet: a small init growing
        (9.5, 0.9, early_switching.BLOW_UP),  # far out: alone
        (0.1, 0.9, early_switching.BLOW_UP),
    ],
)
def test_a_guarded_cycle_ends_when_the_norm_confirms_or_blows_up(norm, loss, reason):
    """The norm is that of the params just evaluated (at `step`), against the cycle's
    start norm (1 here): the detector needs it outside [1/3, 3], alone outside [1/9, 9]."""
    decision = _guarded_decide(norm, loss)
    assert (decision.switch.reason if decision.switch else None) == reason
    if reason:
        assert decision.switch.step == 6 and decision.resets[0].reason == reason
    # Against the cycle's start norm, not against 1.
    assert _guarded_decide(2.0 * norm, loss, start_norm=2.0).switch == decision.switch


def test_a_norm_measured_at_another_step_confirms_no_evaluation():
    """Params evaluated at step 6, norm given at step 7: not the evaluated state's norm."""
    controller = _start()
    controller, _ = control.decide(controller, [Evaluation(3, 0.5, 1.0)], 3, GUARDED, None, 1.0)
    evals = [Evaluation(3, 0.5, 1.0), Evaluation(6, 0.4, 2.0)]
    _, decision = control.decide(controller, evals, 7, GUARDED, None, 99.0)
    assert decision.switch is None
