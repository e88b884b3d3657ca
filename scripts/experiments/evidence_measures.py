"""Measures of the evidence experiment's run records: reach, steps, recoveries, switches.

Records only (``scripts/experiments/evidence.py`` writes them); nothing trains or draws.
One perspective throughout: soft (the default) against another variant. Reach counts
(seeds that reached the target) are compared first; only equal reach counts go on to the
median steps to target, where a difference within 10% is a tie. Steps are the measure:
seconds on a CPU shared by the grid's processes and other jobs would mislead.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from scripts.experiments.design import (
    COUNTERFACTUAL,
    DETECTOR_VARIANTS,
    SCENARIOS,
    STRATEGY_VARIANTS,
    RunSpec,
)

INF = math.inf


DEFAULT = "soft"


ALTERNATIVES = tuple(v for v in STRATEGY_VARIANTS if v != DEFAULT)


# Median steps within this fraction count as a tie (only compared at equal reach counts).
STEPS_TIE = 0.10


# The failure rule (b)'s default kappa: the band [1/kappa, kappa] of the params' norm ratio.
DEFAULT_KAPPA = 3.0

# The v1 report (495 runs): where soft beat full in the healthy scenario, as
# (soft's reach, full's reach) of 5 seeds; the v2 default must still beat full there.
V1_HEALTHY_WINS_OVER_FULL = {"digit_sums": (5, 0), "digits": (5, 3)}
DECISION_SCENARIOS = ("failed", "healthy")


def load_records(out: Path, specs: Iterable[RunSpec]) -> dict[str, dict[str, Any]]:
    """The records of the given specs that exist, by key."""
    records = {}
    for spec in specs:
        path = out / "runs" / f"{spec.key}.json"
        if path.exists():
            records[spec.key] = json.loads(path.read_text(encoding="utf-8"))
    return records


def missing(out: Path, specs: Iterable[RunSpec]) -> list[str]:
    """The keys of the specs whose record is not in ``out/runs``."""
    return [s.key for s in specs if not (out / "runs" / f"{s.key}.json").exists()]


def refusal(out: Path, specs: Sequence[RunSpec], errors: Sequence[str], no_run: bool) -> str:
    """Why nothing is scored or written (a missing record would count as a miss and rewrite
    the report so): the failed runs, which records are missing and how to make them; empty
    when every record is there."""
    lost = missing(out, specs)
    if not lost:
        return ""
    shown = ", ".join(lost[:3]) + (f" and {len(lost) - 3} more" if len(lost) > 3 else "")
    how = (
        "run the command without --no_run to make them (runs already recorded are kept)"
        if no_run
        else "the runs above failed; fix them and rerun (finished runs are kept)"
    )
    return "".join(f"error: {error}\n" for error in errors) + (
        f"error: {len(lost)} of the {len(specs)} runs asked for have no record in "
        f"{out / 'runs'} ({shown}); nothing was scored or written: {how}."
    )


def _value(x: float | None, higher: bool) -> float:
    """A metric as a number where larger is better; a missing value is the worst."""
    if x is None:
        return -INF
    return x if higher else -x


def steps_to_target(record: Mapping) -> float:
    """The step of the first evaluation past the target; inf when never reached."""
    return INF if record["target_step"] is None else float(record["target_step"])


def recovery(record: Mapping, reset_index: int = 0) -> tuple[float | None, float | None]:
    """(target metric at the last evaluation at or before the reset, at the first after).

    (None, None) when the run has no such reset or no evaluation after it.
    """
    if len(record["resets"]) <= reset_index:
        return None, None
    step = record["resets"][reset_index]["step"]
    before = [e["metric"] for e in record["evals"] if e["step"] <= step]
    after = [e["metric"] for e in record["evals"] if e["step"] > step]
    if not after:
        return None, None
    return (before[-1] if before else None), after[0]


def failure_text(reset: Mapping) -> str:
    """The failure check of the cycle a reset ended: "failed (rule)", "ok", or "" (a
    record from before the check was logged)."""
    if "failed" not in reset:
        return ""
    return f"failed ({reset.get('failure_rule') or '?'})" if reset["failed"] else "ok"


def every_reset(record: Mapping) -> str:
    """Each reset as "step tau kind [norm xR, check]: before->after" (the target metric
    around it; R the params' norm ratio end/start of the cycle it ended)."""

    def metric(x: float | None) -> str:
        return "-" if x is None else f"{x:.4g}"

    parts = []
    for i, reset in enumerate(record["resets"]):
        before, after = recovery(record, i)
        kind = "early" if reset["early_switch"] else "planned"
        tau = "-" if reset["tau"] is None else f"{reset['tau']:.3f}"
        check = ""
        if "failed" in reset:
            ratio = reset.get("param_norm_ratio")
            check = f" [norm x{'-' if ratio is None else f'{ratio:.3g}'}, {failure_text(reset)}]"
        parts.append(f"{reset['step']} tau {tau} {kind}{check}: {metric(before)}->{metric(after)}")
    return "; ".join(parts)


def improvement_tolerance(record: Mapping) -> float:
    """What counts as a real improvement of the target metric: 1% of the target."""
    return 0.01 * abs(record["target"]["value"])


def cycle_spans(record: Mapping) -> list[tuple[int, int, bool]]:
    """(start, end, ended_by_switch) of each cycle the run entered; the last one's end
    is where the run stopped."""
    starts = [0] + [r["step"] for r in record["resets"]]
    switched = [r["early_switch"] for r in record["resets"]] + [False]
    ends = starts[1:] + [record["global_step"]]
    return list(zip(starts, ends, switched, strict=True))


def missed_switches(record: Mapping) -> int:
    """Failed cycles that ran to their planned end without an early switch.

    A cycle failed when its last evaluation is not better than its first one by the
    improvement tolerance (it learnt nothing), or any of its evaluations is not finite.
    Only cycles that could switch count: a later cycle followed, and the cycle ran to a
    reset (not to the target). A contestant other than ours (its record's hyperparameters
    are None: it is told none) has no detector and misses none.
    """
    hyperparameters = record["hyperparameters"]
    if hyperparameters is None or not hyperparameters.get("early_switching", True):
        return 0
    higher = record["target"]["higher_is_better"]
    tolerance = improvement_tolerance(record)
    missed = 0
    for start, end, switched in cycle_spans(record)[:-1]:
        inside = [e["metric"] for e in record["evals"] if start < e["step"] <= end]
        if switched or not inside:
            continue
        first, last = _value(inside[0], higher), _value(inside[-1], higher)
        if None in inside or not last > first + tolerance:
            missed += 1
    return missed


def judge_first_switch(record: Mapping, twin: Mapping | None) -> str:
    """ "false", "right" or "" (no switch, or no counterfactual run to judge it by).

    ``twin`` is the same seed and scenario with early switching off: the same run up to
    the switch (the detector only records). The switch at step s in a cycle planned to
    end at e was false when, in the twin, the cycle got better after s: it reached the
    target in (s, e], or its metric at the last evaluation in (s, e] beats the metric at
    s by the improvement tolerance.
    """
    window = first_switch_window(record, twin)
    if window is None:
        return ""
    step, end = window
    higher = record["target"]["higher_is_better"]
    at_switch = [e["metric"] for e in twin["evals"] if e["step"] == step]
    later = [e["metric"] for e in twin["evals"] if step < e["step"] <= end]
    if twin["target_step"] is not None and step < twin["target_step"] <= end:
        return "false"
    if not at_switch or not later:
        return ""
    gained = _value(later[-1], higher) - _value(at_switch[0], higher)
    return "false" if gained > improvement_tolerance(record) else "right"


def first_switch_window(record: Mapping, twin: Mapping | None) -> tuple[int, int] | None:
    """(s, e): the run's first early switch at step s, and where the twin (the same run,
    the detector off) ended that cycle, at its next planned boundary e, or at its run's end;
    None when the run never switched or has no twin."""
    switches = [r for r in record["resets"] if r["early_switch"]]
    if not switches or twin is None:
        return None
    step = switches[0]["step"]
    # The twin never switches: its cycles end at the planned boundaries.
    ends = [b for b in twin["planned_boundaries"] if b > step]
    return step, ends[0] if ends else twin["global_step"]


def stopped_a_reaching_cycle(record: Mapping, twin: Mapping | None) -> bool:
    """Whether the run's first early switch ended a cycle that, left to run, reached the
    target: the twin reached it in (s, e] (`first_switch_window`)."""
    window = first_switch_window(record, twin)
    target = None if twin is None else twin["target_step"]
    return window is not None and target is not None and window[0] < target <= window[1]


def twin_key(spec: Mapping) -> str:
    """The key of the counterfactual run (early switching off) of a run's spec."""
    return RunSpec(**{**spec, "variant": COUNTERFACTUAL}).key


def run_row(record: Mapping, records: Mapping[str, Mapping]) -> dict[str, Any]:
    """One CSV row: the run's design and measures."""
    spec = record["spec"]
    before, after = recovery(record)
    switches = [r for r in record["resets"] if r["early_switch"]]
    judged = ""
    if spec["variant"] in DETECTOR_VARIANTS:
        judged = judge_first_switch(record, records.get(twin_key(spec)))
    first = record["resets"][0] if record["resets"] else {}
    return {
        "workload": spec["workload"],
        "scenario": spec["scenario"],
        "variant": spec["variant"],
        "seed": spec["seed"],
        "reached": record["target_step"] is not None,
        "steps_to_target": steps_to_target(record),
        "global_step": record["global_step"],
        "stop_reason": record["stop_reason"],
        "resets": len(record["resets"]),
        "early_switches": len(switches),
        "failed_cycles": sum(bool(r.get("failed")) for r in record["resets"]),
        "first_reset_step": first.get("step", ""),
        "first_reset_tau": first.get("tau", ""),
        "first_reset_early": first.get("early_switch", ""),
        "first_reset_check": failure_text(first) if first else "",
        "first_reset_norm_ratio": first.get("param_norm_ratio", ""),
        "metric_before_first_reset": before,
        "metric_after_first_reset": after,
        "every_reset": every_reset(record),
        "first_switch_judged": judged,
        "missed_switches": missed_switches(record),
        # The one time column: seconds of a run on a CPU shared by the grid's processes
        # and other jobs; not a measure of speed.
        "wall_seconds_shared_cpu": round(record["wall_time"], 1),
    }


def write_runs_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        return
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


class Reach(NamedTuple):
    """Seeds that reached the target, runs, and the median steps of those that did."""

    reached: int
    runs: int
    median: float  # over the runs that reached the target; nan when none did

    def text(self, runs: bool = True) -> str:
        """ "3/5, 420" (median steps of the 3), "0/5"; without ``runs``: "3, 420"."""
        count = f"{self.reached}/{self.runs}" if runs else f"{self.reached}"
        return count + (f", {self.median:.0f}" if self.reached else "")


def reach(runs: Sequence[Mapping]) -> Reach:
    steps = [steps_to_target(r) for r in runs]
    done = sorted(s for s in steps if s < INF)
    return Reach(len(done), len(steps), median(done))


def pooled(reaches: Iterable[Reach]) -> Reach:
    """Reach counts summed over cells; the median is the median of the cells' medians."""
    reaches = list(reaches)
    medians = [r.median for r in reaches if r.reached]
    return Reach(
        sum(r.reached for r in reaches), sum(r.runs for r in reaches), median(sorted(medians))
    )


def verdict(soft: Reach, other: Reach) -> str:
    """Soft against another variant: "ahead", "level" or "behind".

    More seeds reaching the target is ahead, fewer is behind, whatever the steps; at equal
    reach counts the median steps decide, within 10% (or neither reaching) a tie ("level").
    """
    if soft.reached != other.reached:
        return "ahead" if soft.reached > other.reached else "behind"
    if soft.reached == 0:
        return "level"
    low, high = sorted((soft.median, other.median))
    if high <= (1 + STEPS_TIE) * low:
        return "level"
    return "ahead" if soft.median < other.median else "behind"


class Comparison(NamedTuple):
    """Per-seed comparison of steps to target: how often a beat b, tied, lost."""

    better: int
    tie: int
    worse: int


def compare(a: Sequence[Mapping], b: Sequence[Mapping]) -> Comparison:
    """Pairs runs by seed: a is better on a seed when it reached the target in fewer
    steps (a run that never reached it is worst)."""
    by_seed = {r["spec"]["seed"]: steps_to_target(r) for r in b}
    pairs = [
        (steps_to_target(r), by_seed[r["spec"]["seed"]]) for r in a if r["spec"]["seed"] in by_seed
    ]
    better = sum(x < y for x, y in pairs)
    worse = sum(x > y for x, y in pairs)
    return Comparison(better, len(pairs) - better - worse, worse)


def cell_records(records, workload, scenario, variant) -> list[Mapping]:
    return sorted(
        (
            r
            for r in records.values()
            if (r["spec"]["workload"], r["spec"]["scenario"], r["spec"]["variant"])
            == (workload, scenario, variant)
        ),
        key=lambda r: r["spec"]["seed"],
    )


def grid_cells(records, workloads, scenarios) -> list[tuple[str, str]]:
    """(workload, scenario) pairs that hold runs of the default."""
    return [(w, s) for w in workloads for s in scenarios if cell_records(records, w, s, DEFAULT)]


def seed_count(records) -> int:
    """Seeds per cell (the most any cell has)."""
    return len({r["spec"]["seed"] for r in records.values()})


def scenario_label(scenario: str) -> str:
    return SCENARIOS[scenario].label


def rule_counts(resets: Sequence[Mapping]) -> str:
    counts: dict[str, int] = {}
    for x in resets:
        name = x.get("failure_rule") or "?"
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


class Gate(NamedTuple):
    name: str
    met: bool | None  # None: not checkable with these records
    details: list[str]


def _gate_against(
    records, workloads, scenario, other, name, wanted=("ahead", "level"), subject=DEFAULT
):
    details, met = [], True
    checked = 0
    for workload in workloads:
        soft = reach(cell_records(records, workload, scenario, subject))
        them = reach(cell_records(records, workload, scenario, other))
        if not soft.runs or not them.runs:
            continue
        checked += 1
        v = verdict(soft, them)
        ok = v in wanted
        met &= ok
        details.append(
            f"{workload}: {subject} {soft.text()} vs {other} {them.text()}: {v} "
            f"({'ok' if ok else 'FAILS'})"
        )
    return Gate(name, met if checked else None, details)


def gates(records, workloads, subject: str = DEFAULT) -> list[Gate]:
    """The issue's gates for method v2, checked on the records of ``subject`` (soft)."""
    failed = _gate_against(
        records,
        workloads,
        "failed",
        "full",
        "Failed first cycle: soft reaches the target on at least as many seeds as full on "
        "every workload, with a median steps-to-target no worse than full's by more than 10%",
        subject=subject,
    )
    healthy = _gate_against(
        records,
        workloads,
        "healthy",
        "none",
        "Healthy: soft reaches the target on at least as many seeds as none on every "
        "workload, median within 10%",
        subject=subject,
    )
    still = _gate_against(
        records,
        [w for w in workloads if w in V1_HEALTHY_WINS_OVER_FULL],
        "healthy",
        "full",
        "Healthy: soft still beats full where it did in v1 ("
        + ", ".join(f"{w} {a}/5 vs {b}/5" for w, (a, b) in V1_HEALTHY_WINS_OVER_FULL.items())
        + ")",
        wanted=("ahead",),
        subject=subject,
    )
    return [failed, healthy, still]


def choice_ranking(records, workloads, candidates) -> list[tuple[str, str, Reach, float]]:
    """(variant, name, seeds summed over the failed and healthy scenarios of every
    workload, median over cells of the median-steps ratio against the default), best
    first: most seeds, then the lowest ratio."""
    default = candidates[0][0]
    rows = []
    for variant, name in candidates:
        cells = []
        ratios = []
        for workload in workloads:
            for scenario in DECISION_SCENARIOS:
                mine = reach(cell_records(records, workload, scenario, variant))
                base = reach(cell_records(records, workload, scenario, default))
                cells.append(mine)
                if mine.reached and base.reached:
                    ratios.append(mine.median / base.median)
        total = pooled(cells)
        if total.runs:
            rows.append((variant, name, total, median(sorted(ratios)) if ratios else INF))
    return sorted(rows, key=lambda row: (-row[2].reached, row[3]))
