"""The evidence experiment (scripts/experiments/): design, measures, a small real grid."""

import csv
import math

import pytest

from scripts.experiments import design
from scripts.experiments import evidence as ev
from scripts.experiments import evidence_report as er

INF = math.inf


def _record(
    evals,
    resets=(),
    target_step=None,
    variant="soft",
    seed=0,
    higher=True,
    target=0.9,
    boundaries=(0, 100, 200, 300),
    early_switching=True,
    global_step=None,
):
    """A run record as run_one writes it, from (step, metric) pairs and resets."""
    resets = [
        {
            "step": s,
            "cycle": i + 1,
            "tau": 0.5,
            "metric": None,
            "early_switch": e,
            "non_finite": False,
        }
        for i, (s, e) in enumerate(resets)
    ]
    spec = design.RunSpec("digits", "healthy", variant, seed)
    return {
        "key": spec.key,
        "spec": spec._asdict(),
        "hyperparameters": {"early_switching": early_switching},
        "target": {"metric": "validation/accuracy", "value": target, "higher_is_better": higher},
        "planned_boundaries": list(boundaries),
        "evals": [{"step": s, "metric": m, "loss": 1.0, "time": s / 10} for s, m in evals],
        "resets": resets,
        "target_step": target_step,
        "target_time": None if target_step is None else target_step / 10,
        "global_step": global_step if global_step is not None else evals[-1][0],
    }


# --------------------------------------------------------------------------- design


def test_grid_is_every_combination_and_rejects_unknown_names():
    specs = design.grid(["digits"], ["healthy", "failed"], ["soft", "full"], range(3))
    assert len(specs) == len({s.key for s in specs}) == 12
    with pytest.raises(ValueError, match=r"unknown variant\(s\) \['hard'\]; valid: \['none'"):
        design.grid(["digits"], ["healthy"], ["hard"], [0])
    with pytest.raises(ValueError, match=r"unknown scenario\(s\) \['calm'\]"):
        design.grid(["digits"], ["calm"], ["soft"], [0])


def test_run_settings_stack_study_scenario_and_variant():
    spec = design.RunSpec("digits", "failed", "soft-kappa2", 1)
    hp = spec.hyperparameters()
    assert hp["cycle_budget_factor"] == 0.3  # The workload's study setting.
    assert hp["cycle_lr_factors"][0] == design.FAILED_PEAK_FACTOR  # The scenario's.
    assert hp["failure_kappa"] == 2.0  # The variant's.
    noisy = design.RunSpec("digit_sums", "noisy", "none", 0, tiny=True).workload_options()
    assert noisy["validation_examples"] == design.NOISY_VALIDATION_EXAMPLES["digit_sums"]
    assert noisy["hidden_sizes"] == design.TINY_OPTIONS["digit_sums"]["hidden_sizes"]


def test_every_variant_and_scenario_is_valid_for_the_submission():
    import hyperparameters

    for spec in design.grid(design.WORKLOADS, list(design.SCENARIOS), list(design.VARIANTS), [0]):
        hyperparameters.resolve(spec.hyperparameters())


# --------------------------------------------------------------------------- measures


def test_steps_recovery_and_missed_switches():
    record = _record(
        [(50, 0.3), (100, 0.6), (150, 0.5), (200, 0.5), (250, 0.8)],
        resets=[(100, False), (200, False)],
    )
    assert er.steps_to_target(record) == INF
    assert er.recovery(record, 0) == (0.6, 0.5)
    assert er.recovery(record, 1) == (0.5, 0.8)
    assert er.recovery(record, 2) == (None, None)
    assert er.every_reset(record) == (
        "100 tau 0.500 planned: 0.6->0.5; 200 tau 0.500 planned: 0.5->0.8"
    )
    # Cycle 1 (steps 100-200) went 0.5 -> 0.5: it failed and ran to its planned end.
    assert er.missed_switches(record) == 1
    assert er.missed_switches({**record, "hyperparameters": {"early_switching": False}}) == 0
    # A cycle with a non-finite evaluation failed, whatever its ends.
    broken = _record([(50, 0.3), (100, None), (150, 0.8), (200, 0.85)], resets=[(150, False)])
    assert er.missed_switches(broken) == 1
    # Lower is better: 0.5 -> 0.3 is an improvement.
    loss = _record([(50, 0.5), (100, 0.3), (150, 0.2)], resets=[(100, False)], higher=False)
    assert er.missed_switches(loss) == 0
    reached = _record([(50, 0.5), (100, 0.95)], target_step=100)
    assert er.steps_to_target(reached) == 100 and er.seconds_to_target(reached) == 10


def test_first_switch_judged_against_the_run_without_switching():
    twin_evals = [(50, 0.3), (60, 0.35), (70, 0.4), (100, 0.7), (150, 0.72)]
    twin = _record(twin_evals, variant=design.COUNTERFACTUAL, early_switching=False)
    # Switched at 60; the twin's cycle went on from 0.35 to 0.7 by its end (100): false.
    switched = _record([(50, 0.3), (60, 0.35), (100, 0.5)], resets=[(60, True)])
    assert er.judge_first_switch(switched, twin) == "false"
    # The same switch where the twin's cycle got nowhere: right.
    flat = _record([(50, 0.3), (60, 0.35), (70, 0.34), (100, 0.352)], variant=design.COUNTERFACTUAL)
    assert er.judge_first_switch(switched, flat) == "right"
    # The twin reached the target before the cycle's end: false.
    hit = _record([(50, 0.3), (60, 0.35), (80, 0.95)], target_step=80)
    assert er.judge_first_switch(switched, hit) == "false"
    # Nothing to judge: no switch, or no twin.
    assert er.judge_first_switch(_record([(50, 0.3)]), twin) == ""
    assert er.judge_first_switch(switched, None) == ""
    assert er.twin_key(switched["spec"]) == twin["key"]


def test_compare_pairs_by_seed_and_counts_never_as_worst():
    a = [_record([(10, 0.9)], target_step=s, seed=i) for i, s in enumerate([100, 200, None])]
    b = [_record([(10, 0.9)], target_step=s, seed=i) for i, s in enumerate([150, None, None])]
    assert er.compare(a, b) == er.Comparison(2, 1, 0, "wins")
    assert er.compare(b, a) == er.Comparison(0, 1, 2, "loses")
    assert er.compare(a, a).verdict == "ties"


def test_median_curve_holds_a_stopped_runs_last_value():
    runs = [
        _record([(10, 0.2), (20, 0.95)], target_step=20, seed=0),
        _record([(10, 0.4), (20, 0.5), (30, 0.7)], seed=1),
        _record([(10, None), (20, 0.3), (30, 0.6)], seed=2),
    ]
    steps, med, low, high = er.median_curve(runs)
    assert steps == [10, 20, 30]
    assert med == pytest.approx([0.3, 0.5, 0.7])
    assert low == [0.2, 0.3, 0.6] and high == [0.4, 0.95, 0.95]


# --------------------------------------------------------------------------- a real grid


SMALL = {
    "workloads": ["breast_cancer"],
    "scenarios": ["healthy", "failed"],
    "variants": ["none", "soft", "soft-switching-off"],
    "seeds": [0, 1],
}


@pytest.fixture(scope="module")
def small_grid(tmp_path_factory):
    """A small real grid (tiny models) run in-process, and its aggregates."""
    out = tmp_path_factory.mktemp("evidence")
    specs = design.grid(
        SMALL["workloads"], SMALL["scenarios"], SMALL["variants"], SMALL["seeds"], True
    )
    lines = []
    errors = ev.run_grid(specs, out, workers=1, say=lines.append)
    report = out / "report.md"
    result = er.aggregate(out, specs, report, "python -m scripts.experiments.evidence --grid small")
    return out, specs, lines, errors, report, result


def test_small_grid_writes_records_csv_tables_figures_and_report(small_grid):
    out, specs, lines, errors, report, result = small_grid
    assert errors == []
    assert lines[0] == f"0 of {len(specs)} runs already done; {len(specs)} to run."
    assert len(lines) == 1 + len(specs)  # A progress line per run.
    assert all((out / "runs" / f"{s.key}.json").exists() for s in specs)
    with (out / "runs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["scenario"], r["variant"], int(r["seed"])) for r in rows] == [
        (s.scenario, s.variant, s.seed) for s in specs
    ]
    for row in rows:
        spec = design.RunSpec(
            row["workload"], row["scenario"], row["variant"], int(row["seed"]), True
        )
        record = result["records"][spec.key]
        assert float(row["steps_to_target"]) == er.steps_to_target(record)
        assert int(row["resets"]) == len(record["resets"])
        # Runs end at the target, or when the plan (0.2 x step_hint 150 = 30 steps) ends.
        assert row["stop_reason"] in ("target_reached", "training_complete")
    tables = (out / "tables.md").read_text()
    assert "### breast_cancer, failed first cycle" in tables
    assert "| none (cyclic) |" in tables and "| early switching off |" in tables
    names = sorted(p.name for p in result["figures"])
    assert names == ["ablations_breast_cancer.png", "strategies_breast_cancer.png"]
    text = report.read_text()
    assert "python -m scripts.experiments.evidence --grid small" in text
    assert "![strategies_breast_cancer](report/strategies_breast_cancer.png)" in text
    assert (out / "report" / "strategies_breast_cancer.png").stat().st_size > 1000
    assert (out / "report" / "runs.csv").read_text() == (out / "runs.csv").read_text()
    assert "## Reading" in text
    assert "- breast_cancer, failed first cycle: soft " in text


def test_small_grid_resumes_without_redoing_finished_runs(small_grid):
    out, specs, *_ = small_grid
    stamps = {s.key: (out / "runs" / f"{s.key}.json").stat().st_mtime_ns for s in specs}
    lines = []
    assert ev.run_grid(specs, out, workers=1, say=lines.append) == []
    assert lines == [f"{len(specs)} of {len(specs)} runs already done; 0 to run."]
    (out / "runs" / f"{specs[0].key}.json").unlink()
    lines = []
    ev.run_grid(specs, out, workers=1, say=lines.append)
    assert lines[0] == f"{len(specs) - 1} of {len(specs)} runs already done; 1 to run."
    assert lines[1].startswith(f"[1/1] {specs[0].key}: ")
    for s in specs[1:]:
        assert (out / "runs" / f"{s.key}.json").stat().st_mtime_ns == stamps[s.key]


def test_runs_are_reproducible_and_the_pool_gives_the_same_records(small_grid, tmp_path):
    out, specs, *_ = small_grid
    import json

    chosen = [s for s in specs if s.variant == "soft"][:2]
    assert ev.run_grid(chosen, tmp_path, workers=2, say=lambda line: None) == []
    for spec in chosen:
        fresh = json.loads((tmp_path / "runs" / f"{spec.key}.json").read_text())
        first = json.loads((out / "runs" / f"{spec.key}.json").read_text())
        for field in ("evals", "resets", "target_step", "global_step", "planned_boundaries"):
            if field == "evals":
                assert [(e["step"], e["metric"]) for e in fresh[field]] == [
                    (e["step"], e["metric"]) for e in first[field]
                ]
            else:
                assert fresh[field] == first[field]


def test_failed_scenario_resets_with_a_large_tau(small_grid):
    _, _, _, _, _, result = small_grid
    failed = [
        r
        for r in result["records"].values()
        if r["spec"]["scenario"] == "failed" and r["spec"]["variant"] != "none" and r["resets"]
    ]
    assert failed and all(r["resets"][0]["tau"] > 0.5 for r in failed)


def test_cli_aggregates_existing_records(small_grid, tmp_path, capsys):
    out, *_ = small_grid
    code = ev.main(
        [
            "--grid", "small", "--out", str(out), "--no_run", "--workloads", "breast_cancer",
            "--scenarios", "healthy", "failed", "--variants", "none", "soft",
            "soft-switching-off", "--seeds", "2", "--report", str(tmp_path / "e.md"),
        ]
    )  # fmt: skip
    assert code == 0
    assert "records ->" in capsys.readouterr().out
    assert (tmp_path / "e" / "strategies_breast_cancer.png").exists()
    with pytest.raises(SystemExit):
        ev.main(["--seeds", "0", "--no_run"])


def test_a_failing_run_is_reported_and_left_to_redo(tmp_path):
    bad = design.RunSpec("mnist", "healthy", "soft", 0)  # Not an embedded workload.
    lines = []
    errors = ev.run_grid([bad], tmp_path, workers=1, say=lines.append)
    assert len(errors) == 1 and errors[0].startswith(f"{bad.key}: KeyError")
    assert lines[1].startswith(f"[1/1] {bad.key}: FAILED KeyError")
    assert not (tmp_path / "runs" / f"{bad.key}.json").exists()  # Retried next time.
