"""AlgoPerf's scoring recipe applied to grid records (scripts/experiments/profiles.py)."""

import math

import numpy as np
import pytest

from scripts.experiments import design, profiles
from scripts.experiments import evidence_measures as em


def test_median_time_counts_misses_as_the_largest():
    assert profiles.median_time([3.0, 1.0, 2.0]) == 2.0
    assert profiles.median_time([1.0, math.inf, 2.0]) == 2.0
    assert profiles.median_time([1.0, math.inf, math.inf]) == math.inf
    assert profiles.median_time([1.0, 3.0]) == 2.0
    assert math.isnan(profiles.median_time([]))


def test_ratios_against_the_best_with_never_beyond_four():
    times = {
        "a": {"p": 10.0, "q": 50.0},
        "b": {"p": 20.0, "q": math.inf},
        "c": {"p": 45.0, "q": 25.0},
    }
    r = profiles.ratios(times)
    assert r["a"] == {"p": 1.0, "q": 2.0}
    assert r["b"] == {"p": 2.0, "q": math.inf}
    assert r["c"] == {"p": math.inf, "q": 1.0}  # 4.5x the best on p: never.


def test_score_is_the_area_under_the_profile_over_one_to_four():
    assert profiles.benchmark_score({"p": 1.0, "q": 1.0}) == pytest.approx(1.0)
    assert profiles.benchmark_score({"p": math.inf}) == 0.0
    # r = 2.5 on one problem of one: rho is 1 from 2.5 on; the trapezoid over 100 points
    # puts the step between two grid points.
    assert profiles.benchmark_score({"p": 2.5}) == pytest.approx(0.5, abs=0.02)
    half = profiles.benchmark_score({"p": 1.0, "q": math.inf})
    assert half == pytest.approx(0.5)


def test_profile_is_a_fraction_of_problems():
    xs = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(profiles.profile({"p": 1.0, "q": 2.5}, xs), [0.5, 0.5, 1.0])


def test_score_table_from_records():
    def record(variant, workload, seed, t):
        spec = {"variant": variant, "workload": workload, "scenario": "healthy", "seed": seed}
        return {"spec": spec, "target_time": t}

    records = {
        f"{v}{w}{s}": record(v, w, s, t)
        for v, w, s, t in [
            ("soft", "x", 0, 1.0),
            ("soft", "x", 1, 2.0),
            ("soft", "x", 2, None),
            ("none", "x", 0, 1.0),
            ("none", "x", 1, None),
            ("none", "x", 2, None),
        ]
    }
    lines, scores, r = profiles.score_table(records, ["soft", "none"], {"soft": "soft"})
    assert scores["soft"] == pytest.approx(1.0)
    assert scores["none"] == 0.0
    assert lines[2].startswith("| soft | 1.000 | 1.00 (2 s)")
    assert "never" in lines[3]
    reach = profiles.reach_table(records, ["soft", "none"], {})
    assert reach[2] == "| soft | 2/3 | 2/3 |" and reach[3] == "| none | 1/3 | 1/3 |"


def test_the_score_report_names_its_versions_and_machine(tmp_path):
    """docs/score.md says what it was made with: the versions and the processor."""
    import importlib.metadata
    import platform

    from scripts.experiments.score import write_report

    figure = tmp_path / "score_profile.png"
    figure.write_bytes(b"png")
    report = tmp_path / "docs" / "score.md"
    write_report(report, ["| table |"], figure, [], 10, ["--no_run"])
    text = report.read_text()
    assert f"jax {importlib.metadata.version('jax')}" in text
    assert f"optax {importlib.metadata.version('optax')}" in text
    assert platform.machine() in text and "Reproduce:" in text


def test_scoring_refuses_missing_records_and_writes_nothing(tmp_path, capsys):
    """A missing record would score as a miss and rewrite the report so: `--no_run` on a
    fresh checkout must not turn docs/score.md into empty tables."""
    from scripts.experiments import score

    report = tmp_path / "score.md"
    args = ["--no_run", "--out", str(tmp_path), "--report", str(report), "--seeds", "1"]
    assert score.main([*args, "--variants", "default", "baseline"]) == 2
    err = capsys.readouterr().err
    assert "runs asked for have no record in" in err and "without --no_run" in err
    assert not report.exists() and not (tmp_path / "figures").exists()
    specs = design.grid(["digits"], ["healthy"], ["none"], range(5))
    message = em.refusal(tmp_path, specs, ["digits seed 4: boom"], no_run=False)
    assert message.startswith("error: digits seed 4: boom\nerror: 5 of the 5 runs asked for")
    keys = ", ".join(s.key for s in specs[:3])
    assert f"({keys} and 2 more)" in message and "the runs above failed" in message
    (tmp_path / "runs").mkdir(exist_ok=True)
    for spec in specs:
        (tmp_path / "runs" / f"{spec.key}.json").write_text("{}")
    assert em.refusal(tmp_path, specs, [], no_run=True) == ""
