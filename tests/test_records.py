"""The event records as every reader reads them back: the logged metric names and values
of a reset and a re-fit, their round trip through the metrics logger and a CSV's text, and
the record of a reset built from the controller's decision and the device's check."""

import math

import numpy as np
import pytest

from cyclic_soft_reset import records, reset, schedules
from cyclic_soft_reset.controller import Refit, Reset
from cyclic_soft_reset.records import RefitRecord, ResetRecord
from cyclic_soft_reset.schedules import budget as time_budget

FAILED = ResetRecord(
    step=120,
    cycle=2,
    tau=0.25,
    metric=0.5,
    early_switch=True,
    non_finite=True,
    failed=True,
    failure_rule=reset.FAILURE_RULES[2],
    param_norm_ratio=1.5,
    rolled_back=True,
    restored_metric=0.75,
    unsound_metric=0.875,
    peak_factor=10.0,
    growth=1.0021,
)


def _same(a: tuple, b: tuple) -> bool:
    """Field by field, nan equal to nan."""
    return all(x == y or (x != x and y != y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    "value, number",
    [(None, math.nan), ("", math.nan), ("abc", math.nan), ([1], math.nan), ("1.5", 1.5), (2, 2.0)],
)
def test_logged_numbers_read_numbers_and_text_and_nan_for_the_rest(value, number):
    assert _same((records.logged_number(value),), (number,))


def test_a_reset_logs_these_scalars():
    """Flags as 0.0/1.0 and the failure rule as its index in reset.FAILURE_RULES."""
    assert FAILED.to_metrics() == {
        "reset/cycle": 2,
        "reset/tau": 0.25,
        "reset/metric": 0.5,
        "reset/early_switch": 1.0,
        "reset/non_finite": 1.0,
        "reset/failed": 1.0,
        "reset/failure_rule": 2.0,
        "reset/param_norm_ratio": 1.5,
        "reset/rolled_back": 1.0,
        "reset/restored_metric": 0.75,
        "reset/unsound_metric": 0.875,
        "reset/peak_factor": 10.0,
        "reset/growth": 1.0021,
    }
    healthy = ResetRecord(step=10, cycle=1, tau=0.5, metric=0.1, early_switch=False)
    logged = healthy.to_metrics()
    assert (logged["reset/failure_rule"], logged["reset/failed"], logged["reset/rolled_back"]) == (
        -1.0,
        0.0,
        0.0,
    )
    assert (healthy.reason, FAILED.reason) == ("planned", "early switch")


@pytest.mark.parametrize("rule", reset.FAILURE_RULES)
def test_a_reset_reads_back_from_its_metrics_and_from_csv_text(rule):
    record = FAILED._replace(failure_rule=rule)
    metrics = record.to_metrics()
    assert _same(ResetRecord.from_metrics(120, metrics), record)
    text = {key: str(value) for key, value in metrics.items()}
    assert _same(ResetRecord.from_metrics("120", text), record)


def test_a_healthy_reset_reads_back_with_no_rule_and_nan_metrics():
    record = ResetRecord(step=10, cycle=1, tau=0.5, metric=0.1, early_switch=False)
    back = ResetRecord.from_metrics(10, record.to_metrics())
    assert _same(back, record) and back.failure_rule is None


def test_metrics_without_a_reset_hold_none_and_a_v1_log_did_not_fail():
    assert ResetRecord.from_metrics(5, {"validation/loss": 1.0}) is None
    assert ResetRecord.from_metrics(5, {"reset/cycle": ""}) is None
    v1 = ResetRecord.from_metrics(5, {"reset/cycle": 1.0, "reset/tau": 0.3, "reset/metric": 0.2})
    assert (v1.failed, v1.failure_rule, v1.rolled_back, v1.early_switch) == (
        False,
        None,
        False,
        False,
    )
    assert math.isnan(v1.param_norm_ratio) and math.isnan(v1.restored_metric)
    assert v1.peak_factor == 1.0 and math.isnan(v1.growth)  # No raise before v7 logged one.
    # A rule index out of range, or one logged for a cycle that did not fail, names no rule.
    for index in (len(reset.FAILURE_RULES), 7.0, -2.0):
        odd = {**FAILED.to_metrics(), "reset/failure_rule": float(index)}
        assert ResetRecord.from_metrics(5, odd).failure_rule is None
    unfailed = {**FAILED.to_metrics(), "reset/failed": 0.0}
    assert ResetRecord.from_metrics(5, unfailed).failure_rule is None


def test_the_record_of_a_reset_joins_the_decision_and_the_devices_check():
    action = Reset(step=50, cycle=1, early=True, tau=0.4, metric=0.6, end=100)
    rolled = records.reset_record(action, (True, False, 2.5, 1), True, restored_metric=0.7)
    assert _same(
        rolled,
        ResetRecord(50, 1, 0.4, 0.6, True, True, True, reset.FAILURE_RULES[1], 2.5, True, 0.7),
    )
    kept = records.reset_record(action, (False, True, 0.9, 2), False, restored_metric=0.7)
    assert _same(kept, ResetRecord(50, 1, 0.4, 0.6, True, False, False, None, 0.9, False, math.nan))


def test_a_reset_record_carries_its_actions_raise_and_growth():
    action = Reset(50, 1, False, 0.0, 0.9, 100, peak_factor=10.0, growth=1.002)
    record = records.reset_record(action, (False, True, 1.05, 2), False)
    assert (record.peak_factor, record.growth) == (10.0, 1.002)
    plain = records.reset_record(Reset(50, 1, False, 0.0, 0.9, 100), (False, True, 1.0, 2), False)
    assert plain.peak_factor == 1.0 and math.isnan(plain.growth)


def test_a_reset_says_what_it_did_in_words():
    assert FAILED.describe() == (
        "params norm x1.5, failed (no_improvement), rolled back, non-finite state, "
        "later peaks x10, the first cycle's growth beyond weight decay 1.0021"
    )
    healthy = ResetRecord(10, 1, 0.5, 0.1, False, param_norm_ratio=1.25)
    assert healthy.describe() == "params norm x1.25"
    slow = healthy._replace(peak_factor=3.0)
    assert slow.describe() == "params norm x1.25, later peaks x3"
    read = healthy._replace(growth=1.07)
    assert (
        read.describe() == "params norm x1.25, the first cycle's growth beyond weight decay 1.0700"
    )


def test_resets_in_a_log_in_step_order():
    log = [
        (30, FAILED._replace(step=30).to_metrics(), None),
        (10, {"validation/loss": 1.0}, None),
        (20, FAILED._replace(step=20, cycle=1).to_metrics(), None),
    ]
    assert [(r.step, r.cycle) for r in records.resets_in(log)] == [(20, 1), (30, 2)]


def test_a_refit_logs_the_fraction_of_the_budget_spent_and_reads_back():
    refit = RefitRecord.of(
        Refit(step=40, seconds=90.0, seconds_per_step=0.25, end=300),
        time_budget.Budget(seconds=120.0, fill=0.9),
    )
    assert refit == RefitRecord(40, 0.25, 300, 0.75)
    assert refit.to_metrics() == {
        "plan/seconds_per_step": 0.25,
        "plan/end": 300,
        "plan/budget_spent": 0.75,
        "plan/window_end": -1,
    }
    assert RefitRecord.from_metrics(40, refit.to_metrics()) == refit
    assert RefitRecord.from_metrics(40, {"reset/cycle": 1.0}) is None
    assert refit.describe() == (
        "plan re-fitted at step 40 (0.25 s per step, 75% of the budget spent): ends at step 300"
    )
    # A moved window (a cooldown from step 40 to 56): said, logged, read back.
    window = schedules.cycle_window(schedules.make_plan(300, schedules.PlanSettings(1, 1e-3)), 0)
    window = window._replace(boundaries=np.asarray([40, 56], np.int32))
    moved = RefitRecord.of(
        Refit(step=40, seconds=90.0, seconds_per_step=0.25, end=300, window=window),
        time_budget.Budget(seconds=120.0, fill=0.9),
    )
    assert moved == RefitRecord(40, 0.25, 300, 0.75, 56)
    assert RefitRecord.from_metrics(40, moved.to_metrics()) == moved
    assert moved.describe().endswith(
        "ends at step 300; the current cycle now decays to 0 by step 56"
    )
    # A log written before v6 has no window_end: none moved.
    old = {k: v for k, v in moved.to_metrics().items() if k != "plan/window_end"}
    assert RefitRecord.from_metrics(40, old).window_end == -1


def test_a_reset_record_carries_the_unsound_metric_of_its_action():
    """The controller's Reset names the ending cycle's best state refused as a rollback
    point; the record keeps it, rolled back or not."""
    action = Reset(50, 1, True, 0.5, 0.4, 100, "rising", False, unsound_metric=0.875)
    check = (True, True, 4.0, reset.FAILURE_RULES.index("norm"))
    for rolled_back in (True, False):
        record = records.reset_record(action, check, rolled_back, 0.3)
        assert record.unsound_metric == 0.875
