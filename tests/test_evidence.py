"""The evidence experiment (scripts/experiments/): design, measures, a small real grid."""

import csv
import json
import math

import pytest

from cyclic_soft_reset import hyperparameters
from scripts.experiments import design
from scripts.experiments import evidence as ev
from scripts.experiments import evidence_figures as ef
from scripts.experiments import evidence_measures as em
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
            "failed": False,
            "failure_rule": None,
            "param_norm_ratio": 1.0,
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
        "wall_time": 1.0,
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
    assert spec.workload_options()["step_hint"] == 90  # The workload's study setting.
    assert hp["cycle_lr_factors"][0] == design.FAILED_PEAK_FACTOR  # The scenario's.
    assert hp["failure_kappa"] == 2.0  # The variant's.
    noisy = design.RunSpec("digit_sums", "noisy", "none", 0, tiny=True).workload_options()
    assert noisy["validation_examples"] == design.NOISY_VALIDATION_EXAMPLES["digit_sums"]
    assert noisy["hidden_sizes"] == design.TINY_OPTIONS["digit_sums"]["hidden_sizes"]


def test_plan_variants_fail_their_first_cycle_whatever_their_number_of_cycles():
    for variant in design.PLAN_VARIANTS:
        hp = design.RunSpec("digits", "failed", variant, 0).hyperparameters()
        factors = hp["cycle_lr_factors"]
        assert factors[0] == design.FAILED_PEAK_FACTOR
        assert len(factors) == hp.get("num_cycles", hyperparameters.DEFAULTS["num_cycles"])


def test_a_slower_clock_is_part_of_the_key_and_the_reference_keeps_its_records():
    reference = design.problem_grid([("digits", "healthy")], ["default"], [3])
    slow = design.problem_grid([("digits", "healthy")], ["default"], [3], speed=0.5)
    assert reference[0].key == "cal-digits__healthy__default__seed3"  # Records from before.
    assert slow[0].key == "cal-speed0.5-digits__healthy__default__seed3"
    assert slow[0]._replace(speed=1.0) == reference[0]
    assert slow[0].clock() == {**design.CLOCK, "speed": 0.5}
    assert em.twin_key(slow[0]._asdict()).startswith("cal-speed0.5-")
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="speed must be a positive finite number"):
            design.problem_grid([("digits", "healthy")], ["default"], [0], speed=bad)


@pytest.mark.slow
def test_a_run_on_a_slower_clock_spends_its_budget_in_fewer_steps(tmp_path):
    specs = [design.RunSpec("breast_cancer", "healthy", "none", 0, True, speed=s) for s in (1, 0.5)]
    assert ev.run_grid(specs, tmp_path, workers=1, say=lambda line: None) == []
    fast, slow = (json.loads((tmp_path / "runs" / f"{s.key}.json").read_text()) for s in specs)
    assert fast["evals"][0]["step"] == slow["evals"][0]["step"] == 1
    # Compiling and the first step take twice the reference time (compile_steps + 1 steps).
    assert slow["evals"][0]["time"] == pytest.approx(2 * fast["evals"][0]["time"], rel=1e-5)
    assert fast["stop_reason"] == slow["stop_reason"] == "time_budget"
    assert slow["global_step"] < fast["global_step"] / 2


def test_every_variant_and_scenario_is_valid_for_the_submission():

    for spec in design.grid(design.WORKLOADS, list(design.SCENARIOS), list(design.VARIANTS), [0]):
        hyperparameters.resolve(spec.hyperparameters())


# --------------------------------------------------------------------------- measures


def test_steps_recovery_and_missed_switches():
    record = _record(
        [(50, 0.3), (100, 0.6), (150, 0.5), (200, 0.5), (250, 0.8)],
        resets=[(100, False), (200, False)],
    )
    assert em.steps_to_target(record) == INF
    assert em.recovery(record, 0) == (0.6, 0.5)
    assert em.recovery(record, 1) == (0.5, 0.8)
    assert em.recovery(record, 2) == (None, None)
    assert em.every_reset(record) == (
        "100 tau 0.500 planned [norm x1, ok]: 0.6->0.5; "
        "200 tau 0.500 planned [norm x1, ok]: 0.5->0.8"
    )
    record["resets"][0].update(failed=True, failure_rule="norm", param_norm_ratio=8.25)
    assert em.every_reset(record).startswith("100 tau 0.500 planned [norm x8.25, failed (norm)]")
    record["resets"][0].update(failed=False, failure_rule=None, param_norm_ratio=1.0)
    # Cycle 1 (steps 100-200) went 0.5 -> 0.5: it failed and ran to its planned end.
    assert em.missed_switches(record) == 1
    assert em.missed_switches({**record, "hyperparameters": {"early_switching": False}}) == 0
    # A cycle with a non-finite evaluation failed, whatever its ends.
    broken = _record([(50, 0.3), (100, None), (150, 0.8), (200, 0.85)], resets=[(150, False)])
    assert em.missed_switches(broken) == 1
    # Lower is better: 0.5 -> 0.3 is an improvement.
    loss = _record([(50, 0.5), (100, 0.3), (150, 0.2)], resets=[(100, False)], higher=False)
    assert em.missed_switches(loss) == 0
    reached = _record([(50, 0.5), (100, 0.95)], target_step=100)
    assert em.steps_to_target(reached) == 100


def test_a_contestant_without_our_hyperparameters_misses_no_switch():
    """The baseline's record holds no hyperparameters (it is told none): it has no detector,
    so it misses no switch, and its row of the report is built."""
    baseline = {**_record([(50, 0.3), (100, 0.3)], variant="baseline"), "hyperparameters": None}
    assert em.missed_switches(baseline) == 0
    assert em.run_row({**baseline, "stop_reason": "budget"}, {})["missed_switches"] == 0


def test_first_switch_judged_against_the_run_without_switching():
    twin_evals = [(50, 0.3), (60, 0.35), (70, 0.4), (100, 0.7), (150, 0.72)]
    twin = _record(twin_evals, variant=design.COUNTERFACTUAL, early_switching=False)
    # Switched at 60; the twin's cycle went on from 0.35 to 0.7 by its end (100): false.
    switched = _record([(50, 0.3), (60, 0.35), (100, 0.5)], resets=[(60, True)])
    assert em.judge_first_switch(switched, twin) == "false"
    # The same switch where the twin's cycle got nowhere: right.
    flat = _record([(50, 0.3), (60, 0.35), (70, 0.34), (100, 0.352)], variant=design.COUNTERFACTUAL)
    assert em.judge_first_switch(switched, flat) == "right"
    # The twin reached the target before the cycle's end: false.
    hit = _record([(50, 0.3), (60, 0.35), (80, 0.95)], target_step=80)
    assert em.judge_first_switch(switched, hit) == "false"
    # Nothing to judge: no switch, or no twin.
    assert em.judge_first_switch(_record([(50, 0.3)]), twin) == ""
    assert em.judge_first_switch(switched, None) == ""
    assert em.twin_key(switched["spec"]) == twin["key"]


def _runs(steps, variant="soft", scenario="healthy", workload="digits"):
    """Runs of one cell, a seed each, reaching the target at the given steps (None: never)."""
    runs = []
    for seed, s in enumerate(steps):
        r = _record([(10, 0.9)], target_step=s, seed=seed, variant=variant)
        spec = design.RunSpec(workload, scenario, variant, seed)
        runs.append({**r, "key": spec.key, "spec": spec._asdict()})
    return runs


def test_compare_pairs_by_seed_and_counts_never_as_worst():
    a = _runs([100, 200, None])
    b = _runs([150, None, None])
    assert em.compare(a, b) == em.Comparison(2, 1, 0)
    assert em.compare(b, a) == em.Comparison(0, 1, 2)


def test_reach_counts_come_before_steps_and_steps_tie_within_ten_percent():
    assert em.reach(_runs([100, 300, None, 200])) == em.Reach(3, 4, 200)
    assert em.reach(_runs([100, 300, None])).text() == "2/3, 200"
    assert em.reach(_runs([None, None])).text() == "0/2"
    # Fewer seeds is behind even with far fewer steps; 0/5 against 2/5 is never a tie.
    fast_few = em.reach(_runs([10, 10, None, None, None]))
    slow_all = em.reach(_runs([900] * 5))
    assert em.verdict(fast_few, slow_all) == "behind"
    assert em.verdict(slow_all, fast_few) == "ahead"
    assert em.verdict(em.reach(_runs([None] * 5)), em.reach(_runs([50, 60, None, None, None]))) == (
        "behind"
    )
    # Equal counts: the median steps, within 10% level.
    assert em.verdict(em.reach(_runs([100, 110])), em.reach(_runs([100, 115]))) == "level"
    assert em.verdict(em.reach(_runs([100, 100])), em.reach(_runs([120, 120]))) == "ahead"
    assert em.verdict(em.reach(_runs([120, 120])), em.reach(_runs([100, 100]))) == "behind"
    assert em.verdict(em.reach(_runs([None])), em.reach(_runs([None]))) == "level"


def _cells(spec: dict) -> dict:
    """Records of several cells: {(workload, scenario, variant): steps per seed}."""
    records = {}
    for (workload, scenario, variant), steps in spec.items():
        for r in _runs(steps, variant, scenario, workload):
            records[r["key"]] = r
    return records


def test_gates_are_checked_per_workload_against_full_and_none():
    records = _cells(
        {
            ("digits", "failed", "soft"): [100, 100, None],
            ("digits", "failed", "full"): [100, None, None],
            ("digits", "healthy", "soft"): [50, 50, 50],
            ("digits", "healthy", "none"): [50, 52, 50],
            ("digits", "healthy", "full"): [50, 50, 50],
            ("digit_sums", "failed", "soft"): [None, None, None],
            ("digit_sums", "failed", "full"): [400, None, None],
        }
    )
    failed, healthy, still = em.gates(records, ["digit_sums", "digits"])
    assert failed.met is False  # digit_sums: 0/3 against full's 1/3.
    assert failed.details[0].startswith("digit_sums: soft 0/3 vs full 1/3, 400: behind")
    assert healthy.met is True and healthy.details == [
        "digits: soft 3/3, 50 vs none 3/3, 50: level (ok)"
    ]
    assert still.met is False  # Level with full on digits is not beating it.
    text = "\n".join(er.gates_section(records, ["digit_sums", "digits"]))
    assert "- **NOT MET**: Failed first cycle" in text and "- **MET**: Healthy: soft" in text


def test_open_choices_rank_by_seeds_then_steps():
    records = _cells(
        {
            ("digits", "failed", "soft"): [100, None],
            ("digits", "healthy", "soft"): [100, 100],
            ("digits", "failed", "soft-stats-fresh"): [100, 100],
            ("digits", "healthy", "soft-stats-fresh"): [300, 300],
            ("digits", "failed", "soft-stats-keep"): [80, None],
            ("digits", "healthy", "soft-stats-keep"): [80, 80],
        }
    )
    candidates = er.OPEN_CHOICES["batch-norm statistics after a soft reset"]
    ranking = em.choice_ranking(records, ["digits"], candidates)
    assert [(name, total.reached) for _, name, total, _ in ranking] == [
        ("fresh", 4),
        ("keep", 3),
        ("blend", 3),
    ]
    text = "\n".join(er.choices_section(records, ["digits"]))
    assert "The grid says: change the default to **fresh**." in text


def test_median_curve_holds_a_stopped_runs_last_value():
    runs = [
        _record([(10, 0.2), (20, 0.95)], target_step=20, seed=0),
        _record([(10, 0.4), (20, 0.5), (30, 0.7)], seed=1),
        _record([(10, None), (20, 0.3), (30, 0.6)], seed=2),
    ]
    steps, med, low, high = ef.median_curve(runs)
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


@pytest.mark.slow
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
        assert float(row["steps_to_target"]) == em.steps_to_target(record)
        assert int(row["resets"]) == len(record["resets"])
        # Runs end at the target or when the time budget (simulated clock) is spent.
        assert row["stop_reason"] in ("target_reached", "time_budget")
    tables = (out / "tables.md").read_text()
    assert "#### breast_cancer, failed first cycle" in tables
    assert "| none (cyclic) |" in tables and "| early switching off |" in tables
    names = sorted(p.name for p in result["figures"])
    assert names == ["ablations_detector.png", "strategies.png"]
    text = report.read_text()
    assert "python -m scripts.experiments.evidence --grid small" in text
    assert "![strategies](report/strategies.png)" in text
    assert (out / "report" / "strategies.png").stat().st_size > 1000
    assert (out / "report" / "runs.csv").read_text() == (out / "runs.csv").read_text()
    # The verdict first, then the gates; no seconds.
    assert text.startswith("# Evidence")
    assert text.index("## Verdict") < text.index("## Score") < text.index("## Gates")
    assert text.index("## Gates") < text.index("## Detail tables")
    assert "![score profile](report/score_profile.png)" in text
    assert (out / "report" / "score_profile.png").stat().st_size > 1000
    assert "- **Failed first cycle**: soft reaches the target on " in text
    assert "seconds to target" not in text
    assert "| failed first cycle | breast_cancer | **" in text


@pytest.mark.slow
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


@pytest.mark.slow
def test_runs_are_reproducible_and_the_pool_gives_the_same_records(small_grid, tmp_path):
    out, specs, *_ = small_grid
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


@pytest.mark.slow
def test_failed_scenario_resets_with_a_large_tau(small_grid):
    _, _, _, _, _, result = small_grid
    failed = [
        r
        for r in result["records"].values()
        if r["spec"]["scenario"] == "failed" and r["spec"]["variant"] != "none" and r["resets"]
    ]
    assert failed and all(r["resets"][0]["tau"] > 0.5 for r in failed)
    # Every reset carries the failure check of the cycle it ended.
    for record in result["records"].values():
        for reset in record["resets"]:
            assert isinstance(reset["failed"], bool)
            assert reset["failure_rule"] in (None, "non_finite", "norm", "no_improvement")
            assert reset["failure_rule"] is None or reset["failed"]
            ratio = reset["param_norm_ratio"]
            assert ratio is None or ratio > 0


@pytest.mark.slow
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
    assert (tmp_path / "e" / "strategies.png").exists()
    with pytest.raises(SystemExit):
        ev.main(["--seeds", "0", "--no_run"])
    # One more seed than recorded: nothing is aggregated or written.
    code = ev.main(
        [
            "--grid", "small", "--out", str(out), "--no_run", "--workloads", "breast_cancer",
            "--scenarios", "healthy", "--variants", "soft", "--seeds", "3",
            "--report", str(tmp_path / "f.md"),
        ]
    )  # fmt: skip
    assert code == 2 and not (tmp_path / "f.md").exists()
    err = capsys.readouterr().err
    assert "1 of the 3 runs asked for have no record" in err
    assert "tiny-breast_cancer__healthy__soft__seed2" in err


def test_a_failing_run_is_reported_and_left_to_redo(tmp_path):
    bad = design.RunSpec("mnist", "healthy", "soft", 0)  # Not an embedded workload.
    lines = []
    errors = ev.run_grid([bad], tmp_path, workers=1, say=lines.append)
    assert len(errors) == 1 and errors[0].startswith(f"{bad.key}: KeyError")
    assert lines[1].startswith(f"[1/1] {bad.key}: FAILED KeyError")
    assert not (tmp_path / "runs" / f"{bad.key}.json").exists()  # Retried next time.
