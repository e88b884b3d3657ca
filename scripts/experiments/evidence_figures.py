"""Figures of the evidence experiment: learning curves per cell (median and band over
seeds, the default's resets marked), one figure per group of variants. Records only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from scripts.experiments.design import (
    ABLATION_VARIANTS,
    VARIANTS,
)
from scripts.experiments.evidence_measures import (
    ALTERNATIVES,
    DEFAULT,
    cell_records,
    median,
    scenario_label,
)

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
        med.append(median(sorted(values)))
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
        runs = cell_records(records, workload, scenario, variant)
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
    ax.set_title(f"{workload}: {scenario_label(scenario)}", fontsize=9)
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
        present = [v for v in variants if any(cell_records(records, w, s, v)
                   for w in workloads for s in scenarios)]  # fmt: skip
        if not present or (len(present) == 1 and group != "strategies"):
            continue
        panels = [(w, s) for w in workloads for s in scenarios
                  if any(cell_records(records, w, s, v) for v in present)]  # fmt: skip
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
