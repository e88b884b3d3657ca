"""Plot validation curves of an official AlgoPerf experiment directory.

``python -m scripts.plot_algoperf <experiment dir> [--out DIR]`` finds every
``eval_measurements.csv`` below the directory (one per trial of AlgoPerf's
``submission_runner``), and draws each ``validation/<metric>`` against
``global_step``. Resets are marked when the runner's ``measurements.csv`` beside it
holds the ``reset/*`` columns our submission logs through ``workload.metrics_logger``;
otherwise the curves are drawn without reset marks. Works on this project's run
directories too (same file names and columns).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from scripts.local import plots

EVAL_CSV = "eval_measurements.csv"
TRAIN_CSV = "measurements.csv"
SKIPPED_METRICS = ("num_examples",)


def find_eval_csvs(root: Path) -> list[Path]:
    """Every ``eval_measurements.csv`` below ``root`` (sorted)."""
    return sorted(root.rglob(EVAL_CSV))


def read_rows(path: Path) -> list[dict[str, str]]:
    """CSV rows as dicts of strings (AlgoPerf writes them with pandas)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def as_float(text: str | None) -> float | None:
    """A float, or None for blank/non-numeric cells."""
    if text is None or text.strip() == "":
        return None
    try:
        return float(text)
    except ValueError:
        return None


def validation_metrics(columns: Sequence[str]) -> list[str]:
    """Names of the ``validation/<metric>`` columns worth plotting (loss included)."""
    names = [c.split("/", 1)[1] for c in columns if c.startswith("validation/")]
    return sorted(n for n in names if n not in SKIPPED_METRICS)


def metric_series(rows: Sequence[dict[str, str]], column: str) -> tuple[list[int], list[float]]:
    """``(steps, values)`` of one column, rows without a number skipped."""
    steps, values = [], []
    for row in rows:
        step, value = as_float(row.get("global_step")), as_float(row.get(column))
        if step is not None and value is not None:
            steps.append(int(step))
            values.append(value)
    return steps, values


def resets_beside(eval_csv: Path) -> list[plots.Reset]:
    """Resets from the ``reset/*`` columns of the neighbouring measurements.csv."""
    path = eval_csv.with_name(TRAIN_CSV)
    if not path.exists():
        return []
    records = []
    for row in read_rows(path):
        step = as_float(row.get("global_step"))
        if step is not None and not math.isnan(step):
            records.append((int(step), row))
    return plots.resets_from_records(records)


def output_name(eval_csv: Path, root: Path, metric: str) -> str:
    """A flat file name from the trial's path below ``root`` and the metric."""
    relative = eval_csv.parent.relative_to(root).parts
    stem = "__".join(relative) if relative else root.resolve().name
    return f"{stem}__validation_{metric}.png".replace("/", "_")


def plot_experiment(root: Path, out_dir: Path) -> list[Path]:
    """Draw every validation metric of every trial under ``root``; return the PNGs."""
    written = []
    for eval_csv in find_eval_csvs(root):
        rows = read_rows(eval_csv)
        if not rows:
            continue
        resets = resets_beside(eval_csv)
        trial = str(eval_csv.parent.relative_to(root)) or root.name
        for metric in validation_metrics(list(rows[0])):
            steps, values = metric_series(rows, f"validation/{metric}")
            if not steps:
                continue
            train_steps, train_values = metric_series(rows, f"train/{metric}")
            extra = {f"train {metric}": (train_steps, train_values)} if train_steps else {}
            written.append(
                plots.plot_metric(
                    out_dir / output_name(eval_csv, root, metric),
                    steps,
                    values,
                    ylabel=f"validation {metric}",
                    title=f"{trial}: validation {metric}",
                    resets=resets,
                    extra=extra,
                )
            )
    return written


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.plot_algoperf",
        description="Plot validation curves (with resets) of an AlgoPerf experiment.",
    )
    parser.add_argument("experiment_dir", help="AlgoPerf experiment directory")
    parser.add_argument(
        "--out", default=None, help="output directory (default: <experiment_dir>/plots)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit status 2 when nothing can be plotted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    root = Path(args.experiment_dir)
    if not root.is_dir():
        parser.error(f"{root} is not a directory.")
    if not find_eval_csvs(root):
        parser.error(f"no {EVAL_CSV} found under {root}.")
    out_dir = Path(args.out) if args.out else root / "plots"
    written = plot_experiment(root, out_dir)
    for path in written:
        print(path)
    return 0 if written else 2


if __name__ == "__main__":
    sys.exit(main())
