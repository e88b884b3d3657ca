"""Put run folders of the main job side by side: ``python -m scripts.compare``.

    python -m scripts.compare RUN_DIR [RUN_DIR ...] [--out DIR]
    python -m scripts.compare RESULTS_DIR            # every run folder below it

Runs are grouped by workload and variant (the reset strategy plus any other
hyperparameter the run overrode); seeds are pooled. Writes ``compare.png`` (per
workload: the target metric and the validation loss against steps, each variant's
median over seeds as a line and its min-max shaded, its resets marked, tau shown where
the strategy uses it) and ``compare.md`` (the tables), and prints the tables: per
variant, seeds reaching the target (k/n) and the median steps and submission time to it
(a seed that never reached it counts as infinite, as AlgoPerf's median over studies
does); per run, its resets (tau only where the strategy uses tau) and the plan it
actually ran (the cycles' steps after early switches, and the final plan's boundaries).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cyclic_soft_reset import hyperparameters as hp
from cyclic_soft_reset import reset as reset_lib
from cyclic_soft_reset.records import logged_number
from scripts.local import plots

FIGURE = "compare.png"
TABLE = "compare.md"


@dataclasses.dataclass(frozen=True)
class Run:
    """One run folder of the main job, as read from its files."""

    path: Path
    workload: str
    variant: str
    strategy: str
    seed: int
    metric_name: str
    target: float
    steps: tuple[int, ...]
    metric: tuple[float, ...]
    loss: tuple[float, ...]
    resets: tuple[plots.Reset, ...]
    cycles: tuple[tuple[int, int], ...]
    final_boundaries: tuple[int, ...]
    target_step: int | None
    target_time: float | None
    end_step: int | None
    end_reason: str | None


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders (holding config.json and eval_measurements.csv) at or below ``paths``,
    in the order given (sorted below each path); ValueError naming a path that holds none."""
    found: list[Path] = []
    for path in map(Path, paths):
        here = sorted(
            p.parent
            for p in path.rglob("config.json")
            if (p.parent / "eval_measurements.csv").is_file()
        )
        if not here:
            raise ValueError(
                f"{path}: no run folder (config.json and eval_measurements.csv) at or below it."
            )
        found.extend(here)
    return list(dict.fromkeys(found))


def _uses_tau(strategy: str) -> bool:
    """Whether tau matters for this strategy (a contestant's name: no)."""
    return strategy in reset_lib.STRATEGIES and reset_lib.make_strategy(strategy).uses_tau


def run_strategy(config: Mapping[str, Any]) -> str:
    """The run's reset strategy; for another AlgoPerf submission (no configuration of
    ours), its name."""
    return config["hyperparameters"].get("reset_strategy") or config.get("submission", "?")


def variant_label(config: Mapping[str, Any]) -> str:
    """The strategy, then every other overridden hyperparameter as ``name=value``."""
    strategy = run_strategy(config)
    others = {
        k: v
        for k, v in sorted(config.get("hyperparameter_overrides", {}).items())
        if k != "reset_strategy"
    }
    return " ".join([strategy, *(f"{k}={json.dumps(v)}" for k, v in others.items())])


def load_run(path: Path) -> Run:
    """Read one run folder: config.json, eval_measurements.csv and events.jsonl."""
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    with open(path / "eval_measurements.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    events_path = path / "events.jsonl"
    events = (
        [json.loads(line) for line in events_path.read_text(encoding="utf-8").splitlines() if line]
        if events_path.is_file()
        else []
    )
    metric_key = config["target"]["metric"]
    resets = tuple(
        plots.Reset(
            step=e["step"],
            cycle=e["cycle"],
            tau=math.nan if e.get("tau") is None else e["tau"],
            metric=math.nan if e.get("metric") is None else e["metric"],
            early_switch=bool(e.get("early_switch")),
        )
        for e in events
        if e.get("event") == "reset"
    )
    reached = next((e for e in events if e.get("event") == "target_reached"), None)
    ends = [e for e in events if e.get("event") == "end"]
    end = ends[-1] if ends else None
    steps = tuple(int(logged_number(r["global_step"])) for r in rows)
    end_step = end["step"] if end else (steps[-1] if steps else 0)
    boundaries = next(
        (
            e["boundaries"]
            for e in reversed(events)
            if e.get("event") == "reset" and "boundaries" in e
        ),
        config.get("initial_plan", {}).get("boundaries", []),
    )
    starts = [0, *(r.step for r in resets)]
    return Run(
        path=path,
        workload=config["workload"],
        variant=variant_label(config),
        strategy=run_strategy(config),
        seed=int(config["seed"]),
        metric_name=metric_key.removeprefix("validation/"),
        target=float(config["target"]["value"]),
        steps=steps,
        metric=tuple(logged_number(r.get(metric_key)) for r in rows),
        loss=tuple(logged_number(r.get("validation/loss")) for r in rows),
        resets=resets,
        cycles=tuple(zip(starts, [*starts[1:], end_step], strict=True)),
        final_boundaries=tuple(boundaries),
        target_step=None if reached is None else int(reached["step"]),
        target_time=None if reached is None else float(reached["submission_time_sec"]),
        end_step=None if end is None else int(end["step"]),
        end_reason=None if end is None else end.get("reason"),
    )


def band(
    runs: Sequence[Run], values: str
) -> tuple[list[int], list[float], list[float], list[float]]:
    """``(steps, median, min, max)`` over the runs of ``values`` ("metric" or "loss") at
    every step where at least one run was evaluated (runs that stopped earlier drop out)."""
    by_step: dict[int, list[float]] = {}
    for run in runs:
        for step, value in zip(run.steps, getattr(run, values), strict=True):
            if math.isfinite(value):
                by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    return (
        steps,
        [float(np.median(by_step[s])) for s in steps],
        [min(by_step[s]) for s in steps],
        [max(by_step[s]) for s in steps],
    )


def median_or_never(values: Sequence[float | None]) -> float:
    """The median with None (target never reached) as infinity, as AlgoPerf scores."""
    return float(np.median([math.inf if v is None else v for v in values]))


def groups_of(runs: Sequence[Run]) -> dict[tuple[str, str], list[Run]]:
    """Runs by ``(workload, variant)``, seeds sorted: the submission's default strategy
    first (the figure draws the first band on top and widest), then in the order first
    seen (folders below a path come sorted by name: `full` before `soft`)."""
    groups: dict[tuple[str, str], list[Run]] = {}
    default = hp.DEFAULTS["reset_strategy"]
    for run in sorted(runs, key=lambda r: r.strategy != default):  # Stable: order kept.
        groups.setdefault((run.workload, run.variant), []).append(run)
    return {key: sorted(group, key=lambda r: r.seed) for key, group in groups.items()}


def _fmt(value: float, digits: int = 0) -> str:
    """A number, or ``never`` for infinity."""
    return "never" if math.isinf(value) else f"{value:.{digits}f}"


def summary_rows(runs: Sequence[Run]) -> list[dict[str, str]]:
    """One row per ``(workload, variant)``: reach count and medians to the target."""
    rows = []
    for (workload, variant), group in groups_of(runs).items():
        reached = sum(r.target_step is not None for r in group)
        rows.append(
            {
                "workload": workload,
                "variant": variant,
                "reached": f"{reached}/{len(group)}",
                "median steps to target": _fmt(median_or_never([r.target_step for r in group])),
                "median submission time to target (s)": _fmt(
                    median_or_never([r.target_time for r in group]), 1
                ),
                "seeds": " ".join(str(r.seed) for r in group),
            }
        )
    return rows


def run_rows(runs: Sequence[Run]) -> list[dict[str, str]]:
    """One row per run: target, resets (tau where the strategy uses it), plan run."""
    rows = []
    for (workload, variant), group in groups_of(runs).items():
        show_tau = _uses_tau(group[0].strategy)
        for run in group:
            resets = ", ".join(
                f"{r.step}"
                + (f" tau {r.tau:.3f}" if show_tau else "")
                + (" (early switch)" if r.early_switch else "")
                for r in run.resets
            )
            rows.append(
                {
                    "workload": workload,
                    "variant": variant,
                    "seed": str(run.seed),
                    "target step": "never" if run.target_step is None else str(run.target_step),
                    "resets at step": resets or "-",
                    "cycles run": ", ".join(f"{a}-{b}" for a, b in run.cycles),
                    "final plan": " ".join(map(str, run.final_boundaries)),
                    "ended": f"{run.end_reason} at {run.end_step}" if run.end_reason else "-",
                }
            )
    return rows


def markdown_table(rows: Sequence[Mapping[str, str]]) -> str:
    """A markdown table with the rows' keys as columns."""
    if not rows:
        return ""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(row[c] for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def text_table(rows: Sequence[Mapping[str, str]]) -> str:
    """A fixed-width table with the rows' keys as columns."""
    if not rows:
        return ""
    columns = list(rows[0])
    widths = [max(len(c), *(len(row[c]) for row in rows)) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(row[c].ljust(w) for c, w in zip(columns, widths, strict=True)) for row in rows
    ]
    return "\n".join(lines)


def figure_panels(runs: Sequence[Run]) -> list[tuple[str, str, float | None, list[plots.Band]]]:
    """Per workload, a panel of the target metric and (unless it is the loss) one of
    the validation loss, each with one band per variant."""
    panels = []
    groups = groups_of(runs)
    for workload in dict.fromkeys(r.workload for r in runs):
        mine = [(variant, group) for (w, variant), group in groups.items() if w == workload]
        first = mine[0][1][0]
        kinds = [("metric", first.metric_name, first.target)]
        if first.metric_name != "loss":
            kinds.append(("loss", "loss", None))
        for values, name, target in kinds:
            bands = []
            for variant, group in mine:
                steps, median, low, high = band(group, values)
                bands.append(
                    plots.Band(
                        label=variant,
                        steps=tuple(steps),
                        median=tuple(median),
                        low=tuple(low),
                        high=tuple(high),
                        seeds=len(group),
                        resets=tuple(r for run in group for r in run.resets),
                        show_tau=_uses_tau(group[0].strategy),
                    )
                )
            panels.append((f"{workload}: validation {name}", f"validation {name}", target, bands))
    return panels


def comparison_title(runs: Sequence[Run]) -> str:
    """The figure's title: workloads, variants and seeds."""
    workloads = ", ".join(dict.fromkeys(r.workload for r in runs))
    variants = ", ".join(dict.fromkeys(r.variant for r in runs))
    seeds = sorted({r.seed for r in runs})
    return f"{workloads}: {variants} (seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))})"


def write_comparison(runs: Sequence[Run], out: Path) -> tuple[Path, Path, str]:
    """Write the figure and the markdown tables to ``out``; return their paths and the
    text tables."""
    out.mkdir(parents=True, exist_ok=True)
    figure = plots.plot_comparison(out / FIGURE, figure_panels(runs), title=comparison_title(runs))
    summary, per_run = summary_rows(runs), run_rows(runs)
    note = (
        "Medians over seeds; a seed that never reached the target counts as infinite "
        "(AlgoPerf's median over studies). tau is shown only for strategies that use it."
    )
    table = out / TABLE
    table.write_text(
        f"# {comparison_title(runs)}\n\n{markdown_table(summary)}\n\n{note}\n\n"
        f"{markdown_table(per_run)}\n",
        encoding="utf-8",
    )
    return figure, table, f"{text_table(summary)}\n\n{text_table(per_run)}\n{note}"


def build_parser() -> argparse.ArgumentParser:
    """The command line's options."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.compare",
        description="Put run folders of python -m scripts.run side by side.",
    )
    parser.add_argument("paths", nargs="+", help="run folders, or folders holding them")
    parser.add_argument(
        "--out",
        default=None,
        help="where compare.png and compare.md go (default: the folder holding all the paths)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit status 2 for a path without runs."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        runs = [load_run(path) for path in find_runs(args.paths)]
    except ValueError as error:
        parser.error(str(error))
    out = (
        Path(args.out)
        if args.out
        else Path(os.path.commonpath([Path(p).resolve() for p in args.paths]))
    )
    if out.joinpath("config.json").is_file():  # A single run folder: beside it, not in it.
        out = out.parent
    figure, table, text = write_comparison(runs, out)
    print(f"\n{text}\nFigure: {figure}\nTables: {table}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
