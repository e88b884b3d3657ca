"""Measures, tables, figures and the report of the evidence experiment.

Everything here reads run records (``scripts/experiments/evidence.py`` writes them) and
the design (``scripts/experiments/design.py``), and nothing trains: the report can be
rebuilt from a results directory at any time
(``python -m scripts.experiments.evidence --no_run``).

One perspective throughout: soft (the default) against another variant. Reach counts
(seeds that reached the target) are compared first; only equal reach counts go on to the
median steps to target, where a difference within 10% is a tie. Steps are the measure:
seconds on a CPU shared by the grid's processes and other jobs would mislead.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import shutil
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from scripts.experiments.design import (
    ABLATION_VARIANTS,
    COUNTERFACTUAL,
    DETECTOR_VARIANTS,
    SCENARIOS,
    STRATEGY_VARIANTS,
    STUDY_SETTINGS,
    VARIANTS,
    RunSpec,
)
from scripts.experiments.score import draw_profiles, score_table

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
# The open choices of method v2 the grid decides: the default first, then its candidates.
OPEN_CHOICES = {
    "batch-norm statistics after a soft reset": (
        ("soft", "blend"),
        ("soft-stats-keep", "keep"),
        ("soft-stats-fresh", "fresh"),
        ("soft-stats-reestimate", "reestimate"),
    ),
    "tau": (("soft", "thesis"), ("soft-tau-relative", "relative")),
}
DECISION_SCENARIOS = ("failed", "healthy")
# Variants also checked against the gates (a candidate default, measured as an ablation).
ALSO_GATED = tuple(v for v in ("soft-rule-c-gap",) if v in VARIANTS)
# Ablation figures, one per group (variants not named here go to the last group).
ABLATION_FIGURES = {
    "failure": (
        "soft-v1",
        "soft-rollback-off",
        "soft-rule-a-off",
        "soft-rule-b-off",
        "soft-rule-c-off",
        "soft-rule-c-gap",
        "soft-kappa2",
        "soft-kappa5",
    ),
    "moments_stats_tau": (
        "soft-weights-off",
        "soft-switch-moments",
        "soft-stats-keep",
        "soft-stats-fresh",
        "soft-stats-reestimate",
        "soft-tau-relative",
    ),
    "detector": ("soft-switching-off", "soft-grace0"),
}

# --------------------------------------------------------------------------- records


def load_records(out: Path, specs: Iterable[RunSpec]) -> dict[str, dict[str, Any]]:
    """The records of the given specs that exist, by key."""
    records = {}
    for spec in specs:
        path = out / "runs" / f"{spec.key}.json"
        if path.exists():
            records[spec.key] = json.loads(path.read_text(encoding="utf-8"))
    return records


# --------------------------------------------------------------------------- measures


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
    reset (not to the target).
    """
    if not record["hyperparameters"].get("early_switching", True):
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
    switches = [r for r in record["resets"] if r["early_switch"]]
    if not switches or twin is None:
        return ""
    step = switches[0]["step"]
    # The twin never switches: its cycles end at the planned boundaries.
    ends = [b for b in twin["planned_boundaries"] if b > step]
    end = ends[0] if ends else twin["global_step"]
    higher = record["target"]["higher_is_better"]
    at_switch = [e["metric"] for e in twin["evals"] if e["step"] == step]
    later = [e["metric"] for e in twin["evals"] if step < e["step"] <= end]
    if twin["target_step"] is not None and step < twin["target_step"] <= end:
        return "false"
    if not at_switch or not later:
        return ""
    gained = _value(later[-1], higher) - _value(at_switch[0], higher)
    return "false" if gained > improvement_tolerance(record) else "right"


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


# --------------------------------------------------------------------------- comparisons


def _median(values: Sequence[float]) -> float:
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
    return Reach(len(done), len(steps), _median(done))


def pooled(reaches: Iterable[Reach]) -> Reach:
    """Reach counts summed over cells; the median is the median of the cells' medians."""
    reaches = list(reaches)
    medians = [r.median for r in reaches if r.reached]
    return Reach(
        sum(r.reached for r in reaches), sum(r.runs for r in reaches), _median(sorted(medians))
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


def _cell_records(records, workload, scenario, variant) -> list[Mapping]:
    return sorted(
        (
            r
            for r in records.values()
            if (r["spec"]["workload"], r["spec"]["scenario"], r["spec"]["variant"])
            == (workload, scenario, variant)
        ),
        key=lambda r: r["spec"]["seed"],
    )


def _cells(records, workloads, scenarios) -> list[tuple[str, str]]:
    """(workload, scenario) pairs that hold runs of the default."""
    return [(w, s) for w in workloads for s in scenarios if _cell_records(records, w, s, DEFAULT)]


def _seeds(records) -> int:
    """Seeds per cell (the most any cell has)."""
    return len({r["spec"]["seed"] for r in records.values()})


def _label(scenario: str) -> str:
    return SCENARIOS[scenario].label


# --------------------------------------------------------------------------- report sections


def verdict_section(records, workloads, scenarios) -> list[str]:
    """A line per scenario (soft against the best alternative strategy, seeds summed over
    the workloads), then a table of the counts per workload."""
    lines = []
    alternatives = [v for v in ALTERNATIVES if any(_cell_records(records, w, s, v)
                    for w in workloads for s in scenarios)]  # fmt: skip
    for scenario in scenarios:
        ws = [w for w in workloads if _cell_records(records, w, scenario, DEFAULT)]
        if not ws:
            continue
        total = {
            v: pooled(reach(_cell_records(records, w, scenario, v)) for w in ws)
            for v in (DEFAULT, *alternatives)
        }
        others = [v for v in alternatives if total[v].runs]
        if not others:
            continue
        # The best alternative: most seeds, then the lower median of cell medians.
        best = min(others, key=lambda v: (-total[v].reached, total[v].median))
        per_workload = {
            w: verdict(
                reach(_cell_records(records, w, scenario, DEFAULT)),
                reach(_cell_records(records, w, scenario, best)),
            )
            for w in ws
        }
        rest = ", ".join(f"{v}'s {total[v].reached}/{total[v].runs}" for v in others if v != best)
        lines.append(
            f"- **{_label(scenario).capitalize()}**: soft reaches the target on "
            f"{total[DEFAULT].reached}/{total[DEFAULT].runs} seeds against {best}'s "
            f"{total[best].reached}/{total[best].runs} (best alternative; {rest}). "
            "Against "
            + best
            + ": "
            + ", ".join(f"{v} on {w}" for w, v in per_workload.items())
            + "."
        )
    lines += [
        "",
        f"Seeds reaching the target of {_seeds(records)}, and the median steps to target of "
        "those seeds; "
        "the last columns: soft against each strategy.",
        "",
        "| scenario | workload | soft | "
        + " | ".join(alternatives)
        + " | "
        + " | ".join(f"soft vs {v}" for v in alternatives)
        + " |",
        "| --- | --- | --- |" + " --- |" * (2 * len(alternatives)),
    ]
    for scenario in scenarios:
        for workload in workloads:
            soft = reach(_cell_records(records, workload, scenario, DEFAULT))
            if not soft.runs:
                continue
            others = [reach(_cell_records(records, workload, scenario, v)) for v in alternatives]
            lines.append(
                f"| {_label(scenario)} | {workload} | **{soft.text(False)}** | "
                + " | ".join(o.text(False) if o.runs else "-" for o in others)
                + " | "
                + " | ".join(verdict(soft, o) if o.runs else "-" for o in others)
                + " |"
            )
    return lines


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
        soft = reach(_cell_records(records, workload, scenario, subject))
        them = reach(_cell_records(records, workload, scenario, other))
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


def gates_section(records, workloads) -> list[str]:
    lines = [
        "Reach counts first; the median steps (of the seeds that reached the target) only "
        "at equal counts, within 10% a tie (level).",
        "",
    ]
    for gate in gates(records, workloads):
        status = {True: "MET", False: "NOT MET", None: "NOT CHECKED (no records)"}[gate.met]
        lines.append(f"- **{status}**: {gate.name}.")
        lines += [f"  - {d}" for d in gate.details]
    for subject in ALSO_GATED:
        if not any(r["spec"]["variant"] == subject for r in records.values()):
            continue
        lines += ["", f"The same gates for `{subject}` ({VARIANTS[subject].label}):", ""]
        for gate in gates(records, workloads, subject):
            status = {True: "MET", False: "NOT MET", None: "NOT CHECKED"}[gate.met]
            lines.append(f"- **{status}**: {gate.name.split(':')[0]}: " + "; ".join(gate.details))
    return lines


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
                mine = reach(_cell_records(records, workload, scenario, variant))
                base = reach(_cell_records(records, workload, scenario, default))
                cells.append(mine)
                if mine.reached and base.reached:
                    ratios.append(mine.median / base.median)
        total = pooled(cells)
        if total.runs:
            rows.append((variant, name, total, _median(sorted(ratios)) if ratios else INF))
    return sorted(rows, key=lambda row: (-row[2].reached, row[3]))


def choices_section(records, workloads) -> list[str]:
    lines = [
        "Rule: the most seeds reaching the target, summed over the failed and healthy "
        "scenarios of every workload; ties broken by the median steps (per cell, the median "
        "steps of the seeds that reached the target relative to the default's; the median of "
        "those ratios); a change of default needs a strict improvement (more seeds, or the "
        "same seeds and steps more than 10% lower).",
        "",
    ]
    for choice, candidates in OPEN_CHOICES.items():
        ranking = choice_ranking(records, workloads, candidates)
        if not ranking:
            continue
        default = next(r for r in ranking if r[0] == candidates[0][0])
        best = ranking[0]
        better = best[0] != default[0] and (
            best[2].reached > default[2].reached
            or (best[2].reached == default[2].reached and best[3] < 1 / (1 + STEPS_TIE))
        )
        parts = [
            f"{name} {total.reached}/{total.runs} seeds"
            + (f", steps x{ratio:.2f}" if ratio < INF else "")
            + (" (default)" if variant == default[0] else "")
            for variant, name, total, ratio in ranking
        ]
        if len(ranking) < len(candidates):
            parts.append("missing: " + ", ".join(n for v, n in candidates if v not in
                         {r[0] for r in ranking}))  # fmt: skip
        decision = (
            f"change the default to **{best[1]}**"
            if better
            else f"keep the default (**{default[1]}**)"
        )
        lines.append(f"- **{choice.capitalize()}**: {'; '.join(parts)}. The grid says: {decision}.")
    return lines


def ablation_section(records, workloads, scenarios) -> list[str]:
    """Each variant's reach per cell, and soft's verdict against it."""
    cells = _cells(records, workloads, scenarios)
    head = [f"{w} {s}" for w, s in cells]
    lines = [
        f"Per cell (workload, scenario): seeds reaching the target of {_seeds(records)}, "
        "median steps of those seeds. Last column: soft against the variant, over the "
        "cells (ahead / level / behind) and where soft is behind.",
        "",
        "| variant | " + " | ".join(head) + " | soft against it |",
        "| --- |" + " --- |" * (len(cells) + 1),
    ]
    for variant in (DEFAULT, *ABLATION_VARIANTS):
        mine = [reach(_cell_records(records, w, s, variant)) for w, s in cells]
        if not any(m.runs for m in mine):
            continue
        if variant == DEFAULT:
            against = "(the default)"
        else:
            verdicts = [
                verdict(reach(_cell_records(records, w, s, DEFAULT)), m) if m.runs else ""
                for (w, s), m in zip(cells, mine, strict=True)
            ]
            behind = [f"{w} {s}" for (w, s), v in zip(cells, verdicts, strict=True)
                      if v == "behind"]  # fmt: skip
            against = (
                f"{verdicts.count('ahead')} / {verdicts.count('level')} / "
                f"{verdicts.count('behind')}"
                + (f"; behind on {', '.join(behind)}" if behind else "")
            )
        label = VARIANTS[variant].label
        name = f"**{label}**" if variant == DEFAULT else f"{label} (`{variant}`)"
        lines.append(
            f"| {name} | "
            + " | ".join(m.text(False) if m.runs else "-" for m in mine)
            + f" | {against} |"
        )
    return lines


def _quantiles(values: Sequence[float]) -> str:
    values = sorted(values)
    if not values:
        return "none"

    def q(p: float) -> float:
        return values[min(len(values) - 1, max(0, round(p * (len(values) - 1))))]

    return (
        f"min {values[0]:.3g}, 5% {q(0.05):.3g}, median {q(0.5):.3g}, 95% {q(0.95):.3g}, "
        f"max {values[-1]:.3g}"
    )


def failure_section(records, workloads, scenarios) -> list[str]:
    """The failure check at each reset: the params' norm ratio in healthy cycles (how far
    from the band [1/kappa, kappa]), and the failed first cycles' reset log."""
    lines = []
    logged = [r for r in records.values() if any("failed" in x for x in r["resets"])]
    if not logged:
        return ["The records hold no failure check (made before it was logged)."]
    lines += [
        f"The params' global norm at a cycle's end over its start, at every reset of the "
        f"*healthy* scenario (all variants; default band of rule (b): "
        f"[{1 / DEFAULT_KAPPA:.3g}, {DEFAULT_KAPPA:g}]):",
        "",
    ]
    for workload in workloads:
        ratios = [
            x["param_norm_ratio"]
            for r in logged
            if (r["spec"]["workload"], r["spec"]["scenario"]) == (workload, "healthy")
            for x in r["resets"]
            if x.get("param_norm_ratio") is not None
        ]
        if not ratios:
            continue
        margin = min(DEFAULT_KAPPA / max(ratios), min(ratios) * DEFAULT_KAPPA)
        flagged = [
            x
            for r in logged
            if (r["spec"]["workload"], r["spec"]["scenario"], r["spec"]["variant"])
            == (workload, "healthy", DEFAULT)
            for x in r["resets"]
        ]
        judged = [x for x in flagged if x.get("failed")]
        rules = _rule_counts(judged)
        if judged:
            taus = ", ".join("-" if x["tau"] is None else f"{x['tau']:.3f}" for x in judged)
            rules += f"; their tau: {taus}"
        lines.append(
            f"- {workload}: {len(ratios)} resets, {_quantiles(ratios)}; the nearest is a "
            f"factor {margin:.2g} inside the band. Soft's healthy cycles judged failed: "
            f"{sum(bool(x.get('failed')) for x in flagged)} of {len(flagged)}"
            + (f" ({rules})" if rules else "")
            + "."
        )
    if "failed" in scenarios:
        lines += [
            "",
            "Soft in the failed-first-cycle scenario: the first reset of each seed (the check "
            "of the broken cycle; a failed cycle is rolled back to its start).",
            "",
            "| workload | seed | step | tau | norm ratio | check | steps to target |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for workload in workloads:
            for r in _cell_records(records, workload, "failed", DEFAULT):
                if not r["resets"]:
                    continue
                x = r["resets"][0]
                ratio = x.get("param_norm_ratio")
                tau = "-" if x["tau"] is None else f"{x['tau']:.2f}"
                steps = steps_to_target(r)
                lines.append(
                    f"| {workload} | {r['spec']['seed']} | {x['step']} | {tau} | "
                    f"{'-' if ratio is None else f'{ratio:.3g}'} | {failure_text(x)} | "
                    f"{'never' if steps == INF else f'{steps:.0f}'} |"
                )
    return lines


def _rule_counts(resets: Sequence[Mapping]) -> str:
    counts: dict[str, int] = {}
    for x in resets:
        name = x.get("failure_rule") or "?"
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def switching_section(records, rows, workloads, scenarios) -> list[str]:
    """How often the detector's first switch was false, and whether switching paid off."""
    lines = []
    for variant in DETECTOR_VARIANTS:
        judged = [r for r in rows.values() if r["variant"] == variant]
        if not judged:
            continue
        by_scenario = []
        for scenario in scenarios:
            cell = [r for r in judged if r["scenario"] == scenario]
            if not cell:
                continue
            false = sum(r["first_switch_judged"] == "false" for r in cell)
            right = sum(r["first_switch_judged"] == "right" for r in cell)
            missed = sum(r["missed_switches"] for r in cell)
            mine = pooled(reach(_cell_records(records, w, scenario, variant)) for w in workloads)
            off = pooled(
                reach(_cell_records(records, w, scenario, COUNTERFACTUAL)) for w in workloads
            )
            versus = f"; {mine.reached} seeds reach the target, {off.reached} with switching off"
            by_scenario.append(
                f"{_label(scenario)}: {false} false / {right} right first switches, "
                f"{missed} missed in {len(cell)} runs" + (versus if off.runs else "")
            )
        lines.append(f"- {VARIANTS[variant].label}: " + "; ".join(by_scenario) + ".")
    return lines


# --------------------------------------------------------------------------- detail tables


def _fmt_metric(values: Sequence[float | None]) -> str:
    finite = [v for v in values if v is not None]
    if not values:
        return "n/a"
    text = f"{_median(finite):.3f}" if finite else "-"
    missing = len(values) - len(finite)
    return text + (f" ({missing} missing or not finite)" if missing else "")


def _fmt_steps(values: Sequence[float]) -> str:
    done = sorted(v for v in values if v < INF)
    if not done:
        return "-"
    return f"{_median(done):.0f} [{done[0]:.0f}-{done[-1]:.0f}]"


def outcome_table(records, workload, scenario, variants) -> list[str]:
    """Markdown rows: reach, steps, the first reset and its check, soft against each."""
    lines = [
        "| variant | reached | steps to target of those, median [min-max] | first reset: "
        "step, tau (median); cycles judged failed | metric before -> after it (median) "
        "| soft against it (seeds soft better/tie/worse) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    ref = _cell_records(records, workload, scenario, DEFAULT)
    for variant in variants:
        runs = _cell_records(records, workload, scenario, variant)
        if not runs:
            continue
        first = [r["resets"][0] for r in runs if r["resets"]]
        taus = [f["tau"] for f in first if f["tau"] is not None]
        reset_text = (
            f"{_median([f['step'] for f in first]):.0f}, "
            + (f"{_median(taus):.2f}" if taus else "-")
            if first
            else "no reset"
        )
        if any(f["early_switch"] for f in first):
            reset_text += f" ({sum(f['early_switch'] for f in first)} early)"
        if any("failed" in f for f in first):
            failed = [f for f in first if f.get("failed")]
            reset_text += f"; {len(failed)} failed" + (
                f" ({_rule_counts(failed)})" if failed else ""
            )
        rec = [recovery(r) for r in runs if r["resets"]]
        rec_text = (
            f"{_fmt_metric([b for b, a in rec])} -> {_fmt_metric([a for b, a in rec])}"
            if rec
            else "n/a"
        )
        if variant == DEFAULT or not ref:
            versus = ""
        else:
            c = compare(ref, runs)
            versus = f"{verdict(reach(ref), reach(runs))} ({c.better}/{c.tie}/{c.worse})"
        mine = reach(runs)
        label = VARIANTS[variant].label
        lines.append(
            f"| {f'**{label}**' if variant == DEFAULT else label} | {mine.reached}/{mine.runs} "
            f"| {_fmt_steps([steps_to_target(r) for r in runs])} | {reset_text} | {rec_text} "
            f"| {versus} |"
        )
    return lines


def switch_table(records, workload, scenario, rows: Mapping[str, Mapping]) -> list[str]:
    """Markdown rows about the detector: switches, judged first switches, misses."""
    lines = [
        "| detector | early switches per run, median [min-max] | first switch false "
        "/ right / not judged | missed switches (runs with any) | reached |",
        "| --- | --- | --- | --- | --- |",
    ]
    for variant in (*DETECTOR_VARIANTS, COUNTERFACTUAL):
        runs = _cell_records(records, workload, scenario, variant)
        if not runs:
            continue
        counts = sorted(sum(r2["early_switch"] for r2 in r["resets"]) for r in runs)
        judged = [rows[r["key"]]["first_switch_judged"] for r in runs]
        with_switch = sum(c > 0 for c in counts)
        missed = [rows[r["key"]]["missed_switches"] for r in runs]
        judge_text = "-"
        if variant != COUNTERFACTUAL:
            judge_text = (
                f"{judged.count('false')} / {judged.count('right')} / "
                f"{with_switch - judged.count('false') - judged.count('right')}"
            )
        lines.append(
            f"| {VARIANTS[variant].label} | {_median(counts):.0f} [{counts[0]}-{counts[-1]}] "
            f"| {judge_text} | {sum(missed)} ({sum(m > 0 for m in missed)}/{len(runs)}) "
            f"| {reach(runs).text()} |"
        )
    return lines


def build_tables(records, rows, workloads, scenarios) -> list[str]:
    lines = []
    for title, variants in (
        ("Reset strategies", STRATEGY_VARIANTS),
        ("Ablations (soft with one change)", (DEFAULT, *ABLATION_VARIANTS)),
    ):
        lines += [f"### {title}", ""]
        for workload in workloads:
            for scenario in scenarios:
                table = outcome_table(records, workload, scenario, variants)
                if len(table) > 2:
                    lines += [f"#### {workload}, {_label(scenario)}", "", *table, ""]
    lines += ["### Early switching: false and missed switches", ""]
    for workload in workloads:
        for scenario in scenarios:
            table = switch_table(records, workload, scenario, rows)
            if len(table) > 2:
                lines += [f"#### {workload}, {_label(scenario)}", "", *table, ""]
    return lines


# --------------------------------------------------------------------------- figures


def median_curve(
    runs: Sequence[Mapping],
) -> tuple[list[int], list[float], list[float], list[float]]:
    """(steps, median, low, high) of the target metric over seeds at each evaluation step.

    A run that stopped (target reached or plan ended) holds its last value afterwards;
    non-finite values are left out of that step's statistics.
    """
    steps = sorted({e["step"] for r in runs for e in r["evals"]})
    med, low, high = [], [], []
    for step in steps:
        values = []
        for r in runs:
            upto = [e["metric"] for e in r["evals"] if e["step"] <= step]
            if upto and upto[-1] is not None:
                values.append(upto[-1])
        med.append(_median(sorted(values)))
        low.append(min(values) if values else math.nan)
        high.append(max(values) if values else math.nan)
    return steps, med, low, high


_STYLES = ("-", "--", "-.", ":")
_LEGEND_IN = 3.4  # inches right of the panels for the legend


def plot_cell(ax, records, workload, scenario, variants, colors) -> None:
    """The default (soft) thick and black on top, with its min-max band and its resets;
    every other variant a thinner coloured median line."""
    target = None
    for i, variant in enumerate(variants):
        runs = _cell_records(records, workload, scenario, variant)
        if not runs:
            continue
        target = runs[0]["target"]
        steps, med, low, high = median_curve(runs)
        label = VARIANTS[variant].label
        if variant == DEFAULT:
            ax.plot(steps, med, color="black", lw=2.8, zorder=10, label=label)
            ax.fill_between(steps, low, high, color="black", alpha=0.12, lw=0, zorder=1)
            for r in runs:
                for reset in r["resets"]:
                    y = [e["metric"] for e in r["evals"] if e["step"] <= reset["step"]]
                    if y and y[-1] is not None:
                        marker = "v" if reset["early_switch"] else "|"
                        ax.plot(reset["step"], y[-1], marker, color="black", ms=7, zorder=11)
        else:
            ax.plot(
                steps, med, color=colors[variant], lw=1.3, ls=_STYLES[i % len(_STYLES)],
                zorder=5, label=label, alpha=0.9,
            )  # fmt: skip
    if target is not None:
        ax.axhline(target["value"], color="dimgray", ls=(0, (1, 3)), lw=1.2, label="target")
        ax.set_ylabel(target["metric"].removeprefix("validation/"), fontsize=8)
        if not target["higher_is_better"]:
            ax.set_yscale("log")
    ax.set_title(f"{workload}: {_label(scenario)}", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("step", fontsize=8)


def figure_groups() -> dict[str, tuple[str, ...]]:
    """Figure name -> variants drawn (the default first)."""
    named = {v for vs in ABLATION_FIGURES.values() for v in vs}
    groups = {"strategies": (DEFAULT, *ALTERNATIVES)}
    for name, variants in ABLATION_FIGURES.items():
        groups[f"ablations_{name}"] = (DEFAULT, *(v for v in variants if v in VARIANTS))
    rest = tuple(v for v in ABLATION_VARIANTS if v not in named)
    if rest:
        groups["ablations_other"] = (DEFAULT, *rest)
    return groups


def draw_figures(records, workloads, scenarios, out_dir: Path) -> list[Path]:
    """One figure per group (strategies, each ablation group): a row per workload, a
    panel per scenario, one legend naming every line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for group, variants in figure_groups().items():
        colors = {v: cmap(i % 10) for i, v in enumerate(variants[1:])}
        present = [v for v in variants if any(_cell_records(records, w, s, v)
                   for w in workloads for s in scenarios)]  # fmt: skip
        if not present or (len(present) == 1 and group != "strategies"):
            continue
        panels = [(w, s) for w in workloads for s in scenarios
                  if any(_cell_records(records, w, s, v) for v in present)]  # fmt: skip
        rows = [w for w in workloads if any(p[0] == w for p in panels)]
        cols = [s for s in scenarios if any(p[1] == s for p in panels)]
        fig, axes = plt.subplots(
            len(rows), len(cols), figsize=(4.2 * len(cols) + _LEGEND_IN, 3.0 * len(rows)),
            squeeze=False,
        )  # fmt: skip
        for i, workload in enumerate(rows):
            for j, scenario in enumerate(cols):
                plot_cell(axes[i][j], records, workload, scenario, variants, colors)
        handles, labels = {}, []
        for ax in axes.flat:
            for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
                if label not in handles:
                    handles[label] = h
                    labels.append(label)
        width = 4.2 * len(cols) + _LEGEND_IN
        fig.legend(
            [handles[label] for label in labels], labels, loc="center left",
            bbox_to_anchor=(1 - (_LEGEND_IN - 0.1) / width, 0.5), fontsize=8, frameon=False,
        )  # fmt: skip
        fig.suptitle(
            f"{group.replace('_', ' ')}: median over seeds (soft: thick black, band min-max, "
            "markers | planned reset, v early switch; a line hidden under soft's matches it)",
            fontsize=10,
        )
        fig.tight_layout(rect=(0, 0, 1 - _LEGEND_IN / width, 0.96))
        path = out_dir / f"{group}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- report


def environment() -> str:
    import jax
    import optax

    return (
        f"Python {platform.python_version()}, jax {jax.__version__}, optax {optax.__version__}, "
        f"{platform.machine()} CPU ({os.cpu_count()} cores), {time.strftime('%Y-%m-%d')}"
    )


DEFINITIONS = """\
- **Reached**: seeds whose run passed the target at an evaluation (a run stops there, as
  a scored AlgoPerf run does, or when its plan ends). **Steps**: the step of that
  evaluation; medians are over the seeds that reached the target.
- **Soft against X**: *ahead* when soft reaches the target on more seeds, *behind* on
  fewer, whatever the steps; at equal reach counts the median steps decide, a difference
  within 10% (or neither reaching) is *level*. Detail tables add the per-seed pairing
  (seeds where soft reached the target in fewer steps / the same / more; never = worst).
- **Best alternative**: the strategy other than soft with the most seeds reaching the
  target in that scenario (summed over the workloads), ties broken by steps.
- **Failure check** (method v2, rules (a)-(c)): logged at every reset for the cycle it
  ends: failed or not, the first rule that holds, and the params' norm ratio end/start.
- **First reset**: its step, tau, and the target metric at the last evaluation before it
  and the first evaluation after it. `runs.csv` lists every reset of a run (column
  `every_reset`, with the norm ratio and the check).
- **False switch**: the first early switch of a detector variant, judged against the same
  seed with early switching off (identical up to the switch): false when that run's
  cycle then improved the target metric by >= 1% of the target, or reached the target,
  before its planned end; right otherwise.
- **Missed switch**: a cycle that ran to a planned reset although it learnt nothing: its
  last evaluation was not better than its first by 1% of the target, or one was not finite.
- No seconds: the grid shares a 2-core CPU with other jobs; `runs.csv` keeps the wall
  time of each run (`wall_seconds_shared_cpu`) for bookkeeping only.
"""


def score_section(records, variants: Sequence[str], fig_dir: Path) -> list[str]:
    """Every variant's AlgoPerf score over the grid's (workload, scenario) problems, its
    ratio to the best variant per problem, and the profiles (``scripts/experiments/score``)."""
    labels = {v: VARIANTS[v].label for v in variants if v in VARIANTS}
    lines, scores, ratios = score_table(records, variants, labels)
    figure = draw_profiles(
        ratios, scores, labels, fig_dir / "score_profile.png", "Performance profiles"
    )
    return [
        "t: the submission seconds at the first evaluation on target (simulated clock for "
        "records made since the time-budget change), median over seeds; each cell: t over "
        "the best variant's t (never: missed by half the seeds or more, or beyond 4x); the "
        "score is the area under the profile over [1, 4] / 3, as AlgoPerf computes it.",
        "",
        *lines,
        "",
        f"![score profile]({fig_dir.name}/{figure.name})",
    ]


def write_report(
    path: Path,
    out: Path,
    records,
    rows,
    workloads,
    scenarios,
    figures: Sequence[Path],
    command: str,
) -> None:
    """The Markdown report, its figures copied beside it (``<stem>/``)."""
    fig_dir = path.parent / path.stem
    fig_dir.mkdir(parents=True, exist_ok=True)
    links = []
    for figure in figures:
        shutil.copy(figure, fig_dir / figure.name)
        links.append(f"![{figure.stem}]({path.stem}/{figure.name})")
    if (out / "runs.csv").exists():
        shutil.copy(out / "runs.csv", fig_dir / "runs.csv")
    seeds = sorted({r["spec"]["seed"] for r in records.values()})
    variants = list(dict.fromkeys(r["spec"]["variant"] for r in records.values()))
    lines = [
        "# Evidence: cyclic AdamW with soft reset (method v2), over seeds",
        "",
        "## Verdict",
        "",
        *verdict_section(records, workloads, scenarios),
        "",
        "## Score (AlgoPerf's performance profile)",
        "",
        *score_section(records, variants, fig_dir),
        "",
        "## Gates (issue 11)",
        "",
        *gates_section(records, workloads),
        "",
        "## Open choices, decided by the grid",
        "",
        *choices_section(records, workloads),
        "",
        "## Ablations of method v2 (soft with one change)",
        "",
        *ablation_section(records, workloads, scenarios),
        "",
        "## Failure checks",
        "",
        *failure_section(records, workloads, scenarios),
        "",
        "## Early switching",
        "",
        *switching_section(records, rows, workloads, scenarios),
        "",
        "## Learning curves",
        "",
        *links,
        "",
        "## How this was made",
        "",
        f"`{command}` ({len(records)} runs; {environment()}). Every number above comes "
        "from the run records the command writes (`runs/<key>.json` in its results "
        "directory, not committed); the same command reproduces them and reuses finished "
        f"runs. One row per run: [`{path.stem}/runs.csv`]({path.stem}/runs.csv).",
        "",
        f"- Workloads: {', '.join(workloads)} (embedded, `scripts/local/workloads/`), seeds "
        f"{', '.join(map(str, seeds))}.",
        "- Study settings, in every scenario (so that the target needs more than one "
        "cycle): "
        + "; ".join(
            f"{w}: {', '.join(f'{k} {v}' for k, v in {**o, **h}.items()) or 'the defaults'}"
            for w, (o, h) in STUDY_SETTINGS.items()
            if w in workloads
        )
        + ".",
        *(
            f"- Scenario *{s.label}*: {s.description}."
            for k, s in SCENARIOS.items()
            if k in scenarios
        ),
        "- Variants: "
        + "; ".join(
            f"`{k}` = {v.label}" + (f" {dict(v.overrides)}" if v.overrides else "")
            for k, v in VARIANTS.items()
            if k in variants
        )
        + ".",
        "",
        "### Definitions",
        "",
        DEFINITIONS,
        "## Detail tables",
        "",
        *build_tables(records, rows, workloads, scenarios),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def aggregate(
    out: Path, specs: Sequence[RunSpec], report: Path | None, command: str
) -> dict[str, Any]:
    """runs.csv, tables.md, figures and (optionally) the report, from the records."""
    records = load_records(out, specs)
    rows = {key: run_row(r, records) for key, r in records.items()}
    write_runs_csv(out / "runs.csv", [rows[s.key] for s in specs if s.key in rows])
    workloads = list(dict.fromkeys(s.workload for s in specs))
    scenarios = list(dict.fromkeys(s.scenario for s in specs))
    tables = build_tables(records, rows, workloads, scenarios)
    (out / "tables.md").write_text("\n".join(tables) + "\n", encoding="utf-8")
    figures = draw_figures(records, workloads, scenarios, out / "figures")
    if report is not None:
        write_report(report, out, records, rows, workloads, scenarios, figures, command)
    return {"records": records, "rows": rows, "figures": figures}
