"""AlgoPerf's own scorer against ours on the same grid records (needs AlgoPerf installed:
`scripts.algoperf_checks` runs this in AlgoPerf's venv; elsewhere it is skipped).

`scripts/experiments/algoperf_score.py` writes the records in the official experiment
layout and calls `scoring/performance_profile.py`; `scripts/experiments/score.py` is our
fallback. Both must give the same median times, profiles and scores.
"""

import math

import numpy as np
import pytest

pytest.importorskip("algoperf")

from scripts.experiments import algoperf_score, profiles  # noqa: E402

PROBLEMS = {  # workload: (metric, target, higher is better)
    "digit_sums": ("validation/accuracy", 0.93, True),
    "breast_cancer": ("validation/loss", 0.2, False),
}
VARIANTS = ("soft", "none", "full", "plan_a")
SEEDS = 5


def _record(variant, workload, scenario, seed, rng):
    """A grid record (evidence.run_one's fields the scorers read): evaluations every
    `period` s of submission time, the metric drifting to the target and past it at a
    random evaluation or never; `target_time` by the runner's strict comparison."""
    metric, target, higher = PROBLEMS[workload]
    period = float(rng.uniform(0.5, 2.0))
    crossing = int(rng.integers(3, 40)) if rng.random() < 0.75 else None
    evals, target_time = [], None
    for i in range(45):
        gap = (i - crossing + 0.5) if crossing is not None else -1.0 - i % 3
        value = target + (0.01 if higher else -0.01) * gap  # Past the target when gap > 0.
        value = round(value, 6)
        past = value > target if higher else value < target
        if target_time is None and past:
            target_time = (i + 1) * period
        evals.append({"step": 10 * (i + 1), "metric": value, "loss": 1.0, "time": (i + 1) * period})
    if seed == 0 and variant == "none":
        evals[1]["metric"] = None  # A non-finite evaluation, written as an empty cell.
    spec = {"variant": variant, "workload": workload, "scenario": scenario, "seed": seed}
    return {
        "spec": spec,
        "target": {"metric": metric, "value": target, "higher_is_better": higher},
        "evals": evals,
        "target_time": target_time,
    }


def _records(seed=0):
    rng = np.random.default_rng(seed)
    records = {}
    for v in VARIANTS:
        for w in PROBLEMS:
            for scenario in ("healthy", "failed"):
                for s in range(SEEDS):
                    records[f"{v}-{w}-{scenario}-{s}"] = _record(v, w, scenario, s, rng)
    return records


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_algoperf_scorer_and_ours_agree_on_the_same_records(tmp_path, seed):
    records = _records(seed)
    ours_lines, ours, ours_r = profiles.score_table(records, VARIANTS, {})
    result = algoperf_score.score_with_algoperf(records, VARIANTS, tmp_path)
    assert result is not None
    assert len(result["problems"]) == 4
    # The median times over studies (AlgoPerf's time_to_targets.csv).
    ours_times = profiles.problem_times(records, VARIANTS)
    for v in VARIANTS:
        for name, problem in result["problems"].items():
            assert float(result["times"][v][name]) == pytest.approx(ours_times[v][problem])
    # The profiles, rho at AlgoPerf's 100 taus, and the scores.
    taus = np.asarray(result["taus"])
    np.testing.assert_allclose(taus, np.linspace(1.0, profiles.MAX_RATIO, profiles.PROFILE_POINTS))
    for v in VARIANTS:
        np.testing.assert_allclose(result["profiles"][v], profiles.profile(ours_r[v], taus))
        assert result["scores"][v] == pytest.approx(ours[v], abs=1e-12)
    assert len(set(np.round(list(ours.values()), 6))) > 1  # The records tell variants apart.
    # The table score.py writes, from AlgoPerf's scores: the same as ours.
    lines, scores, r = algoperf_score.score_table(records, VARIANTS, {}, tmp_path)
    assert lines == ours_lines and r == ours_r
    assert scores == pytest.approx(ours, abs=1e-12)


def test_layout_is_the_runners(tmp_path):
    records = _records()
    algoperf_score.write_layout(records, ("soft",), tmp_path)
    trial = tmp_path / "soft" / "study_3" / "breast_cancer-failed_jax" / "trial_1"
    header = (trial / "eval_measurements.csv").read_text().splitlines()[0].split(",")
    assert {"global_step", "score", "accumulated_submission_time", "validation/loss"} <= set(header)
    assert not (tmp_path / "none").exists()


def test_a_metric_exactly_on_target_counts_for_algoperf_only(tmp_path):
    """AlgoPerf's scorer takes the target as reached at metric >= target (<= for a
    loss); the runner's stop and our `target_time` use the workload's strict check."""
    records = _records()
    for record in records.values():
        spec = record["spec"]
        if spec["variant"] == "soft" and spec["workload"] == "digit_sums":
            record["evals"][0]["metric"] = 0.93  # Exactly the target, at 1 period.
    ours_times = profiles.problem_times(records, VARIANTS)
    result = algoperf_score.score_with_algoperf(records, VARIANTS, tmp_path)
    name = algoperf_score.problem_name("digit_sums", "healthy")
    first = min(r["evals"][0]["time"] for r in records.values() if r["spec"]["variant"] == "soft")
    assert float(result["times"]["soft"][name]) < ours_times["soft"][("digit_sums", "healthy")]
    assert float(result["times"]["soft"][name]) >= first and not math.isinf(first)
