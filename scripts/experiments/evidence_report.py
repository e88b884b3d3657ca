"""Measures, tables, figures and the report of the evidence experiment.

Everything here reads run records (``scripts/experiments/evidence.py`` writes them) and
the design (``scripts/experiments/design.py``), and nothing trains: the report can be
rebuilt from a results directory at any time
(``python -m scripts.experiments.evidence --no_run``).
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

INF = math.inf

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


def seconds_to_target(record: Mapping) -> float:
    """Submission seconds at that evaluation (compilation included); inf if never."""
    return INF if record["target_time"] is None else float(record["target_time"])


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


def every_reset(record: Mapping) -> str:
    """Each reset as "step tau kind: before->after" (the target metric around it)."""

    def metric(x: float | None) -> str:
        return "-" if x is None else f"{x:.4g}"

    parts = []
    for i, reset in enumerate(record["resets"]):
        before, after = recovery(record, i)
        kind = "early" if reset["early_switch"] else "planned"
        tau = "-" if reset["tau"] is None else f"{reset['tau']:.3f}"
        parts.append(f"{reset['step']} tau {tau} {kind}: {metric(before)}->{metric(after)}")
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
        "seconds_to_target": seconds_to_target(record),
        "global_step": record["global_step"],
        "stop_reason": record["stop_reason"],
        "resets": len(record["resets"]),
        "early_switches": len(switches),
        "first_reset_step": first.get("step", ""),
        "first_reset_tau": first.get("tau", ""),
        "first_reset_early": first.get("early_switch", ""),
        "metric_before_first_reset": before,
        "metric_after_first_reset": after,
        "every_reset": every_reset(record),
        "first_switch_judged": judged,
        "missed_switches": missed_switches(record),
        "submission_time": record["submission_time"],
        "wall_time": record["wall_time"],
    }


def write_runs_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        return
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


# --------------------------------------------------------------------------- aggregates


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _fmt_spread(values: Sequence[float], digits: int) -> str:
    """Median [min-max]; "never" for inf (a run that did not reach the target)."""
    if not values:
        return "n/a"

    def one(v: float) -> str:
        return "never" if v == INF else f"{v:.{digits}f}"

    return f"{one(_median(sorted(values)))} [{one(min(values))}-{one(max(values))}]"


def _fmt_steps(values: Sequence[float]) -> str:
    return _fmt_spread(values, 0)


def _fmt_seconds(values: Sequence[float]) -> str:
    return _fmt_spread(values, 1)


def _fmt_metric(values: Sequence[float | None]) -> str:
    finite = [v for v in values if v is not None]
    if not values:
        return "n/a"
    text = f"{_median(finite):.3f}" if finite else "-"
    missing = len(values) - len(finite)
    return text + (f" ({missing} missing or not finite)" if missing else "")


class Comparison(NamedTuple):
    """Per-seed comparison of steps to target: how often a beat b, tied, lost."""

    better: int
    tie: int
    worse: int
    verdict: str  # "wins", "ties", "loses" (a against b)


def compare(a: Sequence[Mapping], b: Sequence[Mapping]) -> Comparison:
    """Pairs runs by seed: a is better on a seed when it reached the target in fewer
    steps (a run that never reached it is worst). The verdict is "wins" when a is better
    on a strict majority of the seeds (3 of 5) and on more seeds than it is worse,
    "loses" in the mirror case, "ties" otherwise: one seed in five decides nothing."""
    by_seed = {r["spec"]["seed"]: steps_to_target(r) for r in b}
    pairs = [
        (steps_to_target(r), by_seed[r["spec"]["seed"]]) for r in a if r["spec"]["seed"] in by_seed
    ]
    better = sum(x < y for x, y in pairs)
    worse = sum(x > y for x, y in pairs)
    tie = len(pairs) - better - worse
    if 2 * better > len(pairs) and better > worse:
        verdict = "wins"
    elif 2 * worse > len(pairs) and worse > better:
        verdict = "loses"
    else:
        verdict = "ties"
    return Comparison(better, tie, worse, verdict)


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


def outcome_table(records, workload, scenario, variants, reference="soft") -> list[str]:
    """Markdown rows: reach rate, steps and seconds to target, recovery, vs reference."""
    lines = [
        "| variant | reached | steps to target, median [min-max] | seconds to target, "
        "median [min-max] | first reset: step, tau (median) | metric before -> after it (median) "
        f"| vs {reference} (better/tie/worse seeds) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    ref = _cell_records(records, workload, scenario, reference)
    for variant in variants:
        runs = _cell_records(records, workload, scenario, variant)
        if not runs:
            continue
        steps = [steps_to_target(r) for r in runs]
        seconds = [seconds_to_target(r) for r in runs]
        first = [r["resets"][0] for r in runs if r["resets"]]
        reset_text = (
            f"{_median([f['step'] for f in first]):.0f}, "
            f"{_median([f['tau'] for f in first if f['tau'] is not None]):.2f}"
            if first
            else "no reset"
        )
        if any(f["early_switch"] for f in first):
            reset_text += f" ({sum(f['early_switch'] for f in first)} early)"
        rec = [recovery(r) for r in runs if r["resets"]]
        rec_text = (
            f"{_fmt_metric([b for b, a in rec])} -> {_fmt_metric([a for b, a in rec])}"
            if rec
            else "n/a"
        )
        if variant == reference or not ref:
            versus = ""
        else:
            c = compare(runs, ref)
            versus = f"{c.verdict} ({c.better}/{c.tie}/{c.worse})"
        reached = sum(s < INF for s in steps)
        lines.append(
            f"| {VARIANTS[variant].label} | {reached}/{len(runs)} | {_fmt_steps(steps)} "
            f"| {_fmt_seconds(seconds)} | {reset_text} | {rec_text} | {versus} |"
        )
    return lines


def switch_table(records, workload, scenario, rows: Mapping[str, Mapping]) -> list[str]:
    """Markdown rows about the detector: switches, judged first switches, misses, and
    what switching did to the steps to target (against the same seeds without it)."""
    lines = [
        "| detector | early switches per run, median [min-max] | first switch false "
        "/ right / not judged | missed switches (runs with any) | steps to target vs "
        "switching off (better/tie/worse seeds) |",
        "| --- | --- | --- | --- | --- |",
    ]
    off = _cell_records(records, workload, scenario, COUNTERFACTUAL)
    for variant in (*DETECTOR_VARIANTS, COUNTERFACTUAL):
        runs = _cell_records(records, workload, scenario, variant)
        if not runs:
            continue
        counts = [sum(r2["early_switch"] for r2 in r["resets"]) for r in runs]
        judged = [rows[r["key"]]["first_switch_judged"] for r in runs]
        with_switch = sum(c > 0 for c in counts)
        missed = [rows[r["key"]]["missed_switches"] for r in runs]
        judge_text = versus = "-"
        if variant != COUNTERFACTUAL:
            judge_text = (
                f"{judged.count('false')} / {judged.count('right')} / "
                f"{with_switch - judged.count('false') - judged.count('right')}"
            )
            if off:
                c = compare(runs, off)
                versus = f"{c.verdict} ({c.better}/{c.tie}/{c.worse})"
        lines.append(
            f"| {VARIANTS[variant].label} | {_fmt_steps(counts)} | {judge_text} "
            f"| {sum(missed)} ({sum(m > 0 for m in missed)}/{len(runs)}) | {versus} |"
        )
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


def plot_cell(ax, records, workload, scenario, variants, colors) -> None:
    """Median curve and min-max band per variant; resets as markers on each run."""
    target = None
    for variant in variants:
        runs = _cell_records(records, workload, scenario, variant)
        if not runs:
            continue
        target = runs[0]["target"]
        steps, med, low, high = median_curve(runs)
        color = colors[variant]
        ax.plot(steps, med, color=color, label=VARIANTS[variant].label, lw=1.5)
        ax.fill_between(steps, low, high, color=color, alpha=0.15, lw=0)
        for r in runs:
            for reset in r["resets"]:
                y = [e["metric"] for e in r["evals"] if e["step"] <= reset["step"]]
                if y and y[-1] is not None:
                    marker = "v" if reset["early_switch"] else "|"
                    ax.plot(reset["step"], y[-1], marker, color=color, ms=6, alpha=0.6)
    if target is not None:
        ax.axhline(target["value"], color="black", ls="--", lw=0.8, label="target")
        ax.set_ylabel(target["metric"])
        if not target["higher_is_better"]:
            ax.set_yscale("log")
    ax.set_title(f"{workload}: {SCENARIOS[scenario].label}", fontsize=9)
    ax.set_xlabel("step")


def draw_figures(records, workloads, scenarios, out_dir: Path) -> list[Path]:
    """One figure per workload and group (strategies, ablations): a panel per scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    colors = {v: cmap(i % 10) for i, v in enumerate(VARIANTS)}
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for group, variants in (
        ("strategies", STRATEGY_VARIANTS),
        ("ablations", ("soft", *ABLATION_VARIANTS)),
    ):
        for workload in workloads:
            present = [
                s
                for s in scenarios
                if any(_cell_records(records, workload, s, v) for v in variants)
            ]
            if not present:
                continue
            fig, axes = plt.subplots(
                1, len(present), figsize=(5 * len(present), 3.8), squeeze=False
            )
            for ax, scenario in zip(axes[0], present, strict=True):
                plot_cell(ax, records, workload, scenario, variants, colors)
            axes[0][0].legend(fontsize=7, loc="best")
            fig.suptitle(
                f"{workload}: median over seeds, band min-max; "
                "markers: | planned reset, v early switch",
                fontsize=9,
            )
            fig.tight_layout()
            path = out_dir / f"{group}_{workload}.png"
            fig.savefig(path, dpi=90)
            plt.close(fig)
            paths.append(path)
    return paths


# --------------------------------------------------------------------------- report


def _summary(runs: Sequence[Mapping]) -> str:
    """ "k/n, median S": reach rate and median steps to target."""
    steps = sorted(steps_to_target(r) for r in runs)
    median = _median(steps)
    return f"{sum(s < INF for s in steps)}/{len(steps)}, " + (
        "median never" if median == INF else f"median {median:.0f}"
    )


def _recovery_text(runs: Sequence[Mapping]) -> str:
    pairs = [recovery(r) for r in runs if r["resets"]]
    if not pairs:
        return "no reset"
    return f"{_fmt_metric([b for b, _ in pairs])} -> {_fmt_metric([a for _, a in pairs])}"


def reading(records, rows, workloads, scenarios) -> list[str]:
    """Sentences derived from the numbers: where soft wins, ties, loses (reach rate, median
    steps, per-seed verdict), what survives the first reset, which decision changes the
    outcome (an ablation that does not tie with soft's defaults somewhere), and how often
    the detector's first switch was false."""
    lines = [
        "### Where soft reset wins, ties or loses",
        "",
        "Each line: reached / runs and median steps to target per strategy, then soft's "
        "verdict against it (seeds better/tie/worse).",
        "",
    ]
    for workload in workloads:
        for scenario in scenarios:
            soft = _cell_records(records, workload, scenario, "soft")
            if not soft:
                continue
            parts = [f"soft {_summary(soft)}"]
            for other in ("none", "full", "params_only"):
                runs = _cell_records(records, workload, scenario, other)
                if runs:
                    c = compare(soft, runs)
                    parts.append(
                        f"{other} {_summary(runs)}: soft {c.verdict} ({c.better}/{c.tie}/{c.worse})"
                    )
            lines.append(f"- {workload}, {SCENARIOS[scenario].label}: " + "; ".join(parts) + ".")
    lines += [
        "",
        "### What survives the first reset",
        "",
        "Target metric at the last evaluation before the first reset -> the first after it "
        "(medians over seeds).",
        "",
    ]
    for workload in workloads:
        for scenario in scenarios:
            parts = [
                f"{name} {_recovery_text(runs)}"
                for name in ("soft", "none", "full", "params_only")
                if (runs := _cell_records(records, workload, scenario, name))
            ]
            if parts:
                lines.append(
                    f"- {workload}, {SCENARIOS[scenario].label}: " + "; ".join(parts) + "."
                )
    lines += ["", "### Which decisions matter (each ablation against soft's defaults)", ""]
    for variant in ABLATION_VARIANTS:
        v = VARIANTS[variant]
        verdicts = []
        for workload in workloads:
            for scenario in scenarios:
                runs = _cell_records(records, workload, scenario, variant)
                soft = _cell_records(records, workload, scenario, "soft")
                if runs and soft:
                    c = compare(runs, soft)
                    if c.verdict != "ties":
                        verdicts.append(
                            f"{c.verdict} on {workload} {SCENARIOS[scenario].label} "
                            f"({_summary(runs)} vs {_summary(soft)}; "
                            f"{c.better}/{c.tie}/{c.worse})"
                        )
        text = "; ".join(verdicts) if verdicts else "ties with the defaults everywhere"
        lines.append(f"- {v.label}: {text}.")
    lines += ["", "### Early switching", ""]
    for variant in DETECTOR_VARIANTS:
        judged = [r for r in rows.values() if r["variant"] == variant]
        if not judged:
            continue
        by_scenario = []
        for scenario in scenarios:
            cell = [r for r in judged if r["scenario"] == scenario]
            false = sum(r["first_switch_judged"] == "false" for r in cell)
            right = sum(r["first_switch_judged"] == "right" for r in cell)
            missed = sum(r["missed_switches"] for r in cell)
            pairs = [
                (
                    _cell_records(records, w, scenario, variant),
                    _cell_records(records, w, scenario, COUNTERFACTUAL),
                )
                for w in workloads
            ]
            better = sum(compare(a, b).better for a, b in pairs if a and b)
            worse = sum(compare(a, b).worse for a, b in pairs if a and b)
            by_scenario.append(
                f"{SCENARIOS[scenario].label}: {false} false / {right} right first switches, "
                f"{missed} missed in {len(cell)} runs; against switching off, target sooner "
                f"on {better} seeds, later on {worse}"
            )
        lines.append(f"- {VARIANTS[variant].label}: " + "; ".join(by_scenario) + ".")
    return lines


def environment() -> str:
    import jax
    import optax

    return (
        f"Python {platform.python_version()}, jax {jax.__version__}, optax {optax.__version__}, "
        f"{platform.machine()} CPU ({os.cpu_count()} cores), {time.strftime('%Y-%m-%d')}"
    )


def build_tables(records, rows, workloads, scenarios) -> list[str]:
    lines = []
    for title, variants in (
        ("Reset strategies", STRATEGY_VARIANTS),
        ("Ablations of our decisions (soft with one change)", ("soft", *ABLATION_VARIANTS)),
    ):
        lines += [f"## {title}", ""]
        for workload in workloads:
            for scenario in scenarios:
                table = outcome_table(records, workload, scenario, variants)
                if len(table) > 2:
                    lines += [f"### {workload}, {SCENARIOS[scenario].label}", "", *table, ""]
    lines += ["## Early switching: false and missed switches", ""]
    for workload in workloads:
        for scenario in scenarios:
            table = switch_table(records, workload, scenario, rows)
            if len(table) > 2:
                lines += [f"### {workload}, {SCENARIOS[scenario].label}", "", *table, ""]
    return lines


DEFINITIONS = """\
- **Steps / seconds to target**: the step (and the runner's submission seconds,
  compilation included) of the first evaluation whose validation target metric passes the
  target; "never" when the run ended (plan used up) without reaching it. Medians count
  "never" as infinite. Seconds come from grid processes sharing the CPU: compare them
  within a table, not with other machines.
- **vs soft (better/tie/worse seeds)**: runs paired by seed; better = reached the target
  in fewer steps (never = worst). "wins" when better on a strict majority of the seeds
  (at least 3 of 5) and on more seeds than worse, "loses" in the mirror case, else
  "ties": a difference on one or two seeds in five is reported, not concluded from.
- **First reset**: its step, tau, and the target metric at the last evaluation before it
  and the first evaluation after it (recovery: how much of the cycle's learning survived).
  `runs.csv` lists the same for every reset of a run (column `every_reset`).
- **False switch**: the first early switch of a detector variant, judged against the same
  seed with early switching off (identical up to the switch): false when that run's
  cycle then improved the target metric by >= 1% of the target, or reached the target,
  before its planned end (the cycle was not failing); right otherwise. Whether switching
  paid off is a separate column: steps to target against switching off, per seed. A
  false switch can pay off (a slow cycle replaced by a faster one).
- **Missed switch**: a cycle that ran to a planned reset although it failed: its last
  evaluation was not better than its first by 1% of the target, or one was not finite.
"""


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
    lines = [
        "# Evidence: cyclic AdamW with soft reset, over seeds",
        "",
        f"Generated by `{command}` ({len(records)} runs; {environment()}). Every number "
        "below comes from the run records the command writes (`runs/<key>.json` in its "
        "results directory, not committed); the same command reproduces them, the seconds "
        "up to the machine's speed, and reuses finished runs. One row per run: "
        f"[`{path.stem}/runs.csv`]({path.stem}/runs.csv).",
        "",
        "## Design",
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
        )
        + ".",
        "- Each run stops at the target, as a scored AlgoPerf run does, or when its plan ends.",
        "",
        "## Definitions",
        "",
        DEFINITIONS,
        "## Reading",
        "",
        *reading(records, rows, workloads, scenarios),
        "",
        "## Learning curves",
        "",
        *links,
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
