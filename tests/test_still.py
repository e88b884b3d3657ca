"""A still first cycle raises further (METHOD.md section 4, v7; `reset.peaks`): after the
run's first cycle ran to its end, improved, passed and missed the target, the later cycles
peak at `still_cycle_lr_factor` x its peak (not `slow_cycle_lr_factor` x) where its params'
norm ratio r is within 1% of weight decay's shrinkage s = prod(1 - lambda eta_t): g = r / s,
the growth its gradient steps brought, says they moved nothing.
"""

import math

import numpy as np
import pytest

from cyclic_soft_reset import controller as control
from cyclic_soft_reset import hyperparameters, records, reset, schedules, steps
from cyclic_soft_reset.controller import Evaluation
from cyclic_soft_reset.schedules.budget import decay_shrinkage
from tests.test_raise import ETA, SETTINGS, SLOW, _run

WD = 0.05  # lambda x eta up to 0.1 a step: the shrinkage over the cycle is far from 1.
STILL = SETTINGS._replace(still_cycle_lr_factor=10.0, weight_decay=WD)
PLAN = schedules.make_plan(10, schedules.PlanSettings(num_cycles=1, learning_rate=ETA))


def _shrinkage(start, stop, plan=PLAN, wd=WD):
    """prod (1 - lambda eta_t), one step at a time."""
    rates = [float(schedules.learning_rate(t, plan)) for t in range(start, stop)]
    return math.prod(1.0 - wd * eta for eta in rates)


def test_the_shrinkage_is_the_product_over_the_steps():
    # In float64 (the rates are float32): float32 sums would part at about 1e-7.
    assert decay_shrinkage(PLAN, 2, 9, WD) == pytest.approx(_shrinkage(2, 9), rel=1e-12)
    assert decay_shrinkage(PLAN, 0, 10, WD) == pytest.approx(_shrinkage(0, 10), rel=1e-12)
    assert decay_shrinkage(PLAN, 0, 10, WD) < 0.7  # Far from 1: the factors all count.
    assert decay_shrinkage(PLAN, 5, 5, WD) == 1.0
    assert decay_shrinkage(PLAN, 6, 5, WD) == 1.0
    assert decay_shrinkage(PLAN, 0, 10, 0.0) == 1.0


def test_the_growth_is_the_ratio_over_the_shrinkage():
    assert reset.growth_beyond_decay(0.99, 0.9) == pytest.approx(1.1)
    for ratio, shrinkage in ((math.nan, 0.9), (math.inf, 0.9), (1.0, 0.0), (1.0, -1.0)):
        assert math.isnan(reset.growth_beyond_decay(ratio, shrinkage))
    assert math.isnan(reset.growth_beyond_decay(1.0, math.nan))
    assert math.isnan(reset.growth_beyond_decay(1.0, math.inf))


@pytest.mark.parametrize(
    ("growth", "first", "still", "factor"),
    [
        (1.0, True, 10.0, 10.0),
        (1.0099, True, 10.0, 10.0),
        (1.0101, True, 10.0, 3.0),  # It grew: the slow factor.
        (1.0 / 1.0099, True, 10.0, 10.0),
        (1.0 / 1.0101, True, 10.0, 3.0),  # It shrank beyond weight decay: it moved.
        (1.0 + reset.STILL_GROWTH, True, 10.0, 3.0),  # The band is open at both ends.
        (1.0 / (1.0 + reset.STILL_GROWTH), True, 10.0, 3.0),
        (1.0, False, 10.0, 3.0),  # A later cycle: from trained weights.
        (1.0, True, 1.0, 3.0),  # Off.
        (math.nan, True, 10.0, 3.0),
    ],
)
def test_the_factor(growth, first, still, factor):
    assert reset.slow_cycle_factor(growth, first, 3.0, still) == factor


def _norms(growth, read=8, start_norm=2.0):
    """The params' norm at an evaluation at `read` whose growth beyond decay is `growth`."""
    return start_norm * growth * _shrinkage(0, read)


@pytest.mark.parametrize(("growth", "factor"), [(1.0, 10.0), (1.005, 10.0), (1.05, 3.0)])
def test_a_still_first_cycle_raises_by_the_still_factor(growth, factor):
    resets = []
    after = _run(STILL, norm=_norms(growth), resets=resets)
    assert after.cycle == 1
    np.testing.assert_allclose(after.plan.peak_learning_rates, [ETA, factor * ETA])
    # The reset records the factor and the growth it was chosen by (the log's numbers).
    assert [r.peak_factor for r in resets] == [factor]
    assert resets[0].growth == pytest.approx(growth, rel=1e-9)


def test_the_shrinkage_runs_to_where_the_norm_was_read():
    """The norm read at step 8 is weight decay's alone over steps 0-7: still. Over the
    cycle's 10 steps the decay is more than 1% larger: a rule reading to the cycle's end
    would see growth."""
    assert _shrinkage(0, 8) / _shrinkage(0, 10) > 1.01
    after = _run(STILL, norm=_norms(1.0))
    np.testing.assert_allclose(after.plan.peak_learning_rates, [ETA, 10 * ETA])
    moved = _run(STILL, norm=2.0 * _shrinkage(0, 10) * 1.0)
    np.testing.assert_allclose(moved.plan.peak_learning_rates, [ETA, 3 * ETA])


def test_weight_decay_counts():
    """Without lambda the same norm is a shrinkage of the params: they moved."""
    after = _run(STILL._replace(weight_decay=0.0), norm=_norms(1.0))
    np.testing.assert_allclose(after.plan.peak_learning_rates, [ETA, 3 * ETA])


def test_only_the_first_cycle_is_judged_still():
    """Cycle 0 grew (3x); cycle 1, still by its own norm, raises 3x again (not 10x)."""
    two = schedules.make_plan(20, schedules.PlanSettings(num_cycles=2, learning_rate=ETA))
    start = control.start(two, seed=np.zeros(2, np.uint32), start_norm=2.0)
    later = [Evaluation(12, 0.82, 0.4), Evaluation(16, 0.85, 0.3)]
    after = _run(STILL, SLOW + later, norm=_norms(1.05), until=11, controller=start)
    np.testing.assert_allclose(after.plan.peak_learning_rates, [ETA, 3 * ETA])
    # Cycle 1 (peak 3 ETA) still: without weight decay its norm where it started (growth 1
    # over any steps).
    light = STILL._replace(weight_decay=0.0)
    resets = []
    end = _run(
        light, SLOW + later, norm=after.start_norm, until=21, controller=after, resets=resets
    )
    assert end.cycle == 2
    np.testing.assert_allclose(end.plan.peak_learning_rates, [ETA, 3 * ETA, 9 * ETA])
    assert [r.peak_factor for r in resets] == [3.0] and math.isnan(resets[0].growth)  # Unread.


def test_the_still_factor_alone_raises_and_reads_the_norm():
    """The slow factor off (1), the still one on: a still first cycle raises 10x, a moved
    one not at all; the norm is read at evaluations for it."""
    alone = STILL._replace(slow_cycle_lr_factor=1.0)
    np.testing.assert_allclose(
        _run(alone, norm=_norms(1.0)).plan.peak_learning_rates, [ETA, 10 * ETA]
    )
    np.testing.assert_allclose(_run(alone, norm=_norms(1.05)).plan.peak_learning_rates, [ETA, ETA])
    params = {"w": np.array([3.0, 4.0], np.float32)}
    start = alone._replace(rollback_to="start", keep_kappa=None)
    assert steps.norm_to_keep(params, [SLOW[0]], start) == pytest.approx(5.0)
    off = start._replace(still_cycle_lr_factor=1.0)
    assert steps.norm_to_keep(params, [SLOW[0]], off) is None


def test_the_schema_passes_the_still_factor_and_the_weight_decay():
    config = hyperparameters.resolve({"still_cycle_lr_factor": 4.0, "weight_decay": 0.2})
    settings = hyperparameters.controller_settings(config, 0.9, True)
    assert (settings.still_cycle_lr_factor, settings.weight_decay) == (4.0, 0.2)
    default = hyperparameters.controller_settings(hyperparameters.resolve({}), 0.9, True)
    assert default.still_cycle_lr_factor == 10.0
    v2 = hyperparameters.resolve(dict(hyperparameters.V2_DEFAULTS))
    assert v2.still_cycle_lr_factor == 1.0


@pytest.mark.slow
@pytest.mark.parametrize(("lr_factor", "raised"), [(1.0, 10.0), (3.0, 3.0)])
def test_the_device_follows_a_still_first_cycle(lr_factor, raised):
    """End to end on a tiny model (one 40-step cycle, the target out of reach): at the
    default rate 40 steps leave the weights where weight decay does (still: 10x); at 3x the
    rate they move (3x)."""
    from cyclic_soft_reset import submission
    from scripts.local import runner
    from scripts.local.workloads.tiny import TinyWorkload

    states = {}

    def after_step(global_step, optimizer_state, params, model_state, eval_results):
        states[global_step] = optimizer_state
        return global_step == 45

    base = hyperparameters.DEFAULTS["learning_rate"] * lr_factor
    recorder = runner.MetricsRecorder()
    runner.train_once(
        TinyWorkload(target=0.999, step_hint=40),
        submission,
        {"early_switching": False, "learning_rate": base},
        0,
        hooks=runner.RunnerHooks(after_step=after_step),
        global_batch_size=64,
        eval_every_steps=5,
        stop_at_target=False,
        metrics_logger=recorder,
    )
    summary = submission.plan_summary(states[45])
    np.testing.assert_allclose(summary["peak_learning_rates"], [base, raised * base], rtol=1e-6)
    expected = submission.learning_rates(states[45], np.arange(41, 45))
    assert np.all(expected > base)  # The device's window climbs past the old peak.
    # The logged reset says why: the factor, and the first cycle's growth beyond decay.
    (logged,) = records.resets_in(recorder.records)
    assert logged.step == 40 and logged.peak_factor == raised
    still = 1 / (1 + reset.STILL_GROWTH) < logged.growth < 1 + reset.STILL_GROWTH
    assert still == (raised == 10.0)
