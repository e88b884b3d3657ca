"""The report of the evidence experiment: its sections and ``aggregate``.

Everything here reads run records (``scripts/experiments/evidence.py`` writes them) and
the design (``scripts/experiments/design.py``), and nothing trains: the report can be
rebuilt from a results directory at any time
(``python -m scripts.experiments.evidence --no_run``). The measures are in
``evidence_measures.py``, the figures in ``evidence_figures.py``, the detail tables in
``evidence_tables.py``; the score's math in ``profiles.py``.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scripts.experiments.design import (
    ABLATION_VARIANTS,
    COUNTERFACTUAL,
    DETECTOR_VARIANTS,
    SCENARIOS,
    STUDY_SETTINGS,
    VARIANTS,
    RunSpec,
)
from scripts.experiments.evidence_figures import draw_figures
from scripts.experiments.evidence_measures import (
    ALTERNATIVES,
    DEFAULT,
    DEFAULT_KAPPA,
    INF,
    STEPS_TIE,
    cell_records,
    choice_ranking,
    failure_text,
    gates,
    grid_cells,
    load_records,
    pooled,
    reach,
    rule_counts,
    run_row,
    scenario_label,
    seed_count,
    steps_to_target,
    verdict,
    write_runs_csv,
)
from scripts.experiments.evidence_tables import build_tables
from scripts.experiments.profiles import draw_profiles, score_table

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


# Variants also checked against the gates (a candidate default, measured as an ablation).
ALSO_GATED = tuple(v for v in ("soft-rule-c-gap",) if v in VARIANTS)


def verdict_section(records, workloads, scenarios) -> list[str]:
    """A line per scenario (soft against the best alternative strategy, seeds summed over
    the workloads), then a table of the counts per workload."""
    lines = []
    alternatives = [v for v in ALTERNATIVES if any(cell_records(records, w, s, v)
                    for w in workloads for s in scenarios)]  # fmt: skip
    for scenario in scenarios:
        ws = [w for w in workloads if cell_records(records, w, scenario, DEFAULT)]
        if not ws:
            continue
        total = {
            v: pooled(reach(cell_records(records, w, scenario, v)) for w in ws)
            for v in (DEFAULT, *alternatives)
        }
        others = [v for v in alternatives if total[v].runs]
        if not others:
            continue
        # The best alternative: most seeds, then the lower median of cell medians.
        best = min(others, key=lambda v: (-total[v].reached, total[v].median))
        per_workload = {
            w: verdict(
                reach(cell_records(records, w, scenario, DEFAULT)),
                reach(cell_records(records, w, scenario, best)),
            )
            for w in ws
        }
        rest = ", ".join(f"{v}'s {total[v].reached}/{total[v].runs}" for v in others if v != best)
        lines.append(
            f"- **{scenario_label(scenario).capitalize()}**: soft reaches the target on "
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
        f"Seeds reaching the target of {seed_count(records)}, and the median steps to target of "
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
            soft = reach(cell_records(records, workload, scenario, DEFAULT))
            if not soft.runs:
                continue
            others = [reach(cell_records(records, workload, scenario, v)) for v in alternatives]
            lines.append(
                f"| {scenario_label(scenario)} | {workload} | **{soft.text(False)}** | "
                + " | ".join(o.text(False) if o.runs else "-" for o in others)
                + " | "
                + " | ".join(verdict(soft, o) if o.runs else "-" for o in others)
                + " |"
            )
    return lines


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
    cells = grid_cells(records, workloads, scenarios)
    head = [f"{w} {s}" for w, s in cells]
    lines = [
        f"Per cell (workload, scenario): seeds reaching the target of {seed_count(records)}, "
        "median steps of those seeds. Last column: soft against the variant, over the "
        "cells (ahead / level / behind) and where soft is behind.",
        "",
        "| variant | " + " | ".join(head) + " | soft against it |",
        "| --- |" + " --- |" * (len(cells) + 1),
    ]
    for variant in (DEFAULT, *ABLATION_VARIANTS):
        mine = [reach(cell_records(records, w, s, variant)) for w, s in cells]
        if not any(m.runs for m in mine):
            continue
        if variant == DEFAULT:
            against = "(the default)"
        else:
            verdicts = [
                verdict(reach(cell_records(records, w, s, DEFAULT)), m) if m.runs else ""
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
        rules = rule_counts(judged)
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
            for r in cell_records(records, workload, "failed", DEFAULT):
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
            mine = pooled(reach(cell_records(records, w, scenario, variant)) for w in workloads)
            off = pooled(
                reach(cell_records(records, w, scenario, COUNTERFACTUAL)) for w in workloads
            )
            versus = f"; {mine.reached} seeds reach the target, {off.reached} with switching off"
            by_scenario.append(
                f"{scenario_label(scenario)}: {false} false / {right} right first switches, "
                f"{missed} missed in {len(cell)} runs" + (versus if off.runs else "")
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
