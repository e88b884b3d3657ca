"""Detail tables of the evidence experiment (``tables.md`` and the report's appendix):
per cell, each variant's outcomes over seeds, and the first switch judged against its
counterfactual. Records only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from scripts.experiments.design import (
    ABLATION_VARIANTS,
    COUNTERFACTUAL,
    DETECTOR_VARIANTS,
    STRATEGY_VARIANTS,
    VARIANTS,
)
from scripts.experiments.evidence_measures import (
    DEFAULT,
    INF,
    cell_records,
    compare,
    median,
    reach,
    recovery,
    rule_counts,
    scenario_label,
    steps_to_target,
    verdict,
)


def _fmt_metric(values: Sequence[float | None]) -> str:
    finite = [v for v in values if v is not None]
    if not values:
        return "n/a"
    text = f"{median(finite):.3f}" if finite else "-"
    missing = len(values) - len(finite)
    return text + (f" ({missing} missing or not finite)" if missing else "")


def _fmt_steps(values: Sequence[float]) -> str:
    done = sorted(v for v in values if v < INF)
    if not done:
        return "-"
    return f"{median(done):.0f} [{done[0]:.0f}-{done[-1]:.0f}]"


def outcome_table(records, workload, scenario, variants) -> list[str]:
    """Markdown rows: reach, steps, the first reset and its check, soft against each."""
    lines = [
        "| variant | reached | steps to target of those, median [min-max] | first reset: "
        "step, tau (median); cycles judged failed | metric before -> after it (median) "
        "| soft against it (seeds soft better/tie/worse) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    ref = cell_records(records, workload, scenario, DEFAULT)
    for variant in variants:
        runs = cell_records(records, workload, scenario, variant)
        if not runs:
            continue
        first = [r["resets"][0] for r in runs if r["resets"]]
        taus = [f["tau"] for f in first if f["tau"] is not None]
        reset_text = (
            f"{median([f['step'] for f in first]):.0f}, " + (f"{median(taus):.2f}" if taus else "-")
            if first
            else "no reset"
        )
        if any(f["early_switch"] for f in first):
            reset_text += f" ({sum(f['early_switch'] for f in first)} early)"
        if any("failed" in f for f in first):
            failed = [f for f in first if f.get("failed")]
            reset_text += f"; {len(failed)} failed" + (
                f" ({rule_counts(failed)})" if failed else ""
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
        runs = cell_records(records, workload, scenario, variant)
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
            f"| {VARIANTS[variant].label} | {median(counts):.0f} [{counts[0]}-{counts[-1]}] "
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
                    lines += [f"#### {workload}, {scenario_label(scenario)}", "", *table, ""]
    lines += ["### Early switching: false and missed switches", ""]
    for workload in workloads:
        for scenario in scenarios:
            table = switch_table(records, workload, scenario, rows)
            if len(table) > 2:
                lines += [f"#### {workload}, {scenario_label(scenario)}", "", *table, ""]
    return lines
