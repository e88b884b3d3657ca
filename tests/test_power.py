"""Seeds enough to see 5% (scripts/experiments/power.py) on hand-made records."""

import math

import pytest

from scripts.experiments import power


def _record(variant, seed, time, workload="digit_sums"):
    evals = [{"step": i, "metric": 0.0, "time": 0.5 * i} for i in range(4)]
    return {
        "spec": {"workload": workload, "scenario": "healthy", "variant": variant, "seed": seed},
        "target_time": time,
        "evals": evals,
    }


def test_paired_noise_by_hand():
    ours = [(0, 11.0), (1, 10.0), (2, 9.0), (3, None), (4, 12.0)]
    base = [(0, 10.0), (1, 10.0), (2, 10.0), (3, 10.0)]  # seed 4 not run by the baseline
    records = {
        f"{v}{s}": _record(v, s, t)
        for v, runs in (("default", ours), ("baseline", base))
        for s, t in runs
    }
    row = power.paired_noise(records, "digit_sums", "healthy", "default", "baseline")
    assert (row.seeds, row.both_reach, row.identical) == (4, 3, 1)
    logs = [math.log(1.1), 0.0, math.log(0.9)]
    mean = sum(logs) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / 2)
    assert row.sd == pytest.approx(sd)
    # (z_0.975 + z_0.8) = 1.959964 + 0.841621: 34 seeds at this noise.
    assert row.needed == pytest.approx(((1.959964 + 0.841621) * sd / math.log(1.05)) ** 2, 1e-5)
    assert math.ceil(row.needed) == 34
    assert row.period_share == pytest.approx(0.5 / 10.0)
    (header, rule, line) = power.noise_lines([row], "default", "baseline")
    assert line == "| digit_sums healthy | 4 | 3 | 1 | 5.0% | 0.100 | 34 |"


def test_identical_runs_need_one_seed_and_one_pair_has_no_sd():
    records = {f"{v}{s}": _record(v, s, 10.0) for v in ("default", "baseline") for s in range(3)}
    row = power.paired_noise(records, "digit_sums", "healthy", "default", "baseline")
    assert (row.identical, row.sd, row.needed) == (3, 0.0, 1.0)
    one = {k: r for k, r in records.items() if r["spec"]["seed"] == 0}
    row = power.paired_noise(one, "digit_sums", "healthy", "default", "baseline")
    assert math.isnan(row.sd) and math.isnan(row.needed)
    assert power.noise_lines([row], "default", "baseline")[-1].endswith("| - | - |")
