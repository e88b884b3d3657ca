"""The calibration rule (targets as AlgoPerf sets them) and its command's reproduction."""

import json
import math

import pytest

from scripts.experiments import calibrate
from scripts.local import workloads


def test_end_value_is_the_best_in_the_last_fifth_of_step_hint():
    evals = [(0, 0.1), (50, 0.9), (80, 0.7), (90, 0.8), (100, math.nan)]
    assert calibrate.end_value(evals, step_hint=100, higher=True) == 0.8  # 50 is too early.
    assert calibrate.end_value(evals, step_hint=100, higher=False) == 0.7
    assert calibrate.end_value([(10, 0.5)], step_hint=100, higher=True) == -math.inf


def test_target_is_what_exactly_four_of_five_runs_pass():
    runs = [0.95, 0.97, 0.96, 0.90, 0.98]
    target = calibrate.target_from(runs, higher=True)
    assert target == pytest.approx((0.95 + 0.90) / 2)
    assert sum(r > target for r in runs) == 4
    loss_target = calibrate.target_from([2.4, 2.3, 2.5, 2.35, 2.45], higher=False)
    assert loss_target == pytest.approx((2.45 + 2.5) / 2)
    assert calibrate.target_from([1.0] * 5, higher=True, reach=5) < 1.0  # All reach it.


@pytest.mark.parametrize("higher", [True, False])
def test_a_tie_at_the_fourth_run_puts_the_target_just_short_of_it(higher):
    """digits' 4th and 5th runs both score 350/359: the midpoint would be 350/359 itself,
    which AlgoPerf's scorer counts as reached (>=) and its runner does not (>). Just short
    of it, both count the tied runs, and 5 of 5 are strictly past it."""
    tied = 350 / 359 if higher else 2.0
    other = (352 / 359, 355 / 359, 353 / 359) if higher else (1.5, 1.7, 1.9)
    runs = [*other, tied, tied]
    target = calibrate.target_from(runs, higher=higher)
    assert target != tied and target == pytest.approx(tied, rel=1e-5)
    past = [r > target if higher else r < target for r in runs]
    assert all(past)
    with pytest.raises(ValueError, match="reach must be in"):
        calibrate.target_from(runs, higher=True, reach=6)


def test_reproduces_compares_numbers_to_a_tolerance():
    entry = {"metric": "loss", "runs": [{"seed": 1, "validation": 2.4}], "target": 2.4}
    close = {"metric": "loss", "runs": [{"seed": 1, "validation": 2.4001}], "target": 2.4}
    assert calibrate.reproduces(entry, close)
    assert not calibrate.reproduces(entry, {**close, "target": 2.5})
    assert not calibrate.reproduces(entry, {**close, "metric": "accuracy"})
    assert not calibrate.reproduces(entry, None)


def test_every_registered_workload_is_calibrated_and_used():
    stored = workloads.load_calibration()
    assert set(stored) == set(workloads.WORKLOAD_NAMES)
    for name, entry in stored.items():
        workload = workloads.make_workload(name)
        assert workload.validation_target_value == entry["validation_target_value"]
        assert workload.step_hint == entry["step_hint"]
        assert len(entry["runs"]) == len(calibrate.CALIBRATION_SEEDS)


@pytest.mark.slow
def test_check_reproduces_the_stored_calibration(capsys):
    """The command, run again, gives the stored entry (breast_cancer: the fastest)."""
    assert calibrate.main(["--workloads", "breast_cancer", "--check"]) == 0
    assert "calibration reproduced" in capsys.readouterr().out


@pytest.mark.slow
def test_a_changed_entry_fails_the_check(tmp_path, monkeypatch, capsys):
    stored = workloads.load_calibration()
    stored["breast_cancer"]["validation_target_value"] *= 1.1
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(stored))
    monkeypatch.setattr(workloads, "CALIBRATION_PATH", path)
    assert calibrate.main(["--workloads", "breast_cancer", "--check"]) == 1
    assert "differs: ['breast_cancer']" in capsys.readouterr().out
