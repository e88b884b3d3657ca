"""The score grid scored by AlgoPerf's own scorer (`scoring/performance_profile.py`).

Grid records (`scripts/experiments/evidence.py::run_one`) are written in the official
runner's experiment layout, one experiment per variant (AlgoPerf's "submission"), one study
per seed, one workload folder per problem (a (workload, scenario) cell of the grid):

    <out>/<variant>/study_<seed>/<workload>-<scenario>_jax/trial_1/eval_measurements.csv

with the columns AlgoPerf's logger writes and its scorer reads (`global_step`, `score`,
`accumulated_submission_time`, `validation/<metric>`, `validation/loss`,
`preemption_count`). AlgoPerf's `scoring_utils.get_experiment_df` reads them back and
`performance_profile.compute_performance_profiles` (time column `score`, tau in [1, 4],
100 points, as `scoring/score_submissions.py` calls it) and `compute_leaderboard_score`
(normalised: divided by 3) give the profiles and the scores.

Our problems are not AlgoPerf workloads, so three module globals of
`performance_profile` are set for the call and restored after it (nothing is edited on
disk): `BASE_WORKLOADS` (the problems), `NUM_BASE_WORKLOADS` (their number, rho's
denominator) and `HELDOUT_WORKLOADS` (none); and `scoring_utils.get_workload_metrics_and_targets`,
which imports an AlgoPerf workload to read its target, answers from the records' `target`
instead. Problem names must contain one of the metric names in AlgoPerf's
`MINIMIZE_REGISTRY` for their direction: `validation/accuracy` and `validation/loss` do.

Where AlgoPerf is not importable, `ALGOPERF_HOME` (an install by
`../shared/tools/install-algoperf.sh`) is used through its venv (`python -m
scripts.experiments.algoperf_score <layout>` prints the result as JSON); with neither,
`score_with_algoperf` returns None and `score.py` scores by its own code.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scripts.experiments.profiles import ratios
from scripts.study.algoperf_scoring import compute_profiles, scoring_over

COLUMNS = (
    "global_step",
    "score",
    "accumulated_submission_time",
    "preemption_count",
    "validation/loss",
)


def problem_name(workload: str, scenario: str) -> str:
    """The workload folder's name (without `_jax`) of a (workload, scenario) problem."""
    return f"{workload}-{scenario}"


def write_layout(records: Mapping[str, Mapping[str, Any]], variants, out: Path) -> dict:
    """Writes the records of `variants` in the experiment layout under `out`; returns
    {problem name: {'metric': 'validation/...', 'target': value, 'problem': (w, s)}}."""
    problems: dict[str, dict[str, Any]] = {}
    for record in records.values():
        spec = record["spec"]
        if spec["variant"] not in variants:
            continue
        name = problem_name(spec["workload"], spec["scenario"])
        metric, target = record["target"]["metric"], record["target"]["value"]
        problems[name] = {"metric": metric, "target": target}
        problems[name]["problem"] = (spec["workload"], spec["scenario"])
        trial = out / spec["variant"] / f"study_{spec['seed']}" / f"{name}_jax" / "trial_1"
        trial.mkdir(parents=True, exist_ok=True)
        _write_evals(trial / "eval_measurements.csv", record["evals"], metric)
    return problems


def _write_evals(path: Path, evals: Sequence[Mapping[str, Any]], metric: str) -> None:
    """One row per evaluation, AlgoPerf's column names (a missing value: an empty cell)."""
    columns = [*COLUMNS, metric] if metric not in COLUMNS else list(COLUMNS)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for e in evals:
            row = {
                "global_step": e["step"],
                "score": e["time"],
                "accumulated_submission_time": e["time"],
                "preemption_count": 0,
                "validation/loss": e["loss"],
                metric: e["metric"],
            }
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def algoperf_tree() -> Path | None:
    """AlgoPerf's work tree (its `scoring/` is not installed), from the installed package."""
    try:
        import algoperf
    except ImportError:
        return None
    tree = Path(algoperf.__file__).resolve().parents[1]
    return tree if (tree / "scoring" / "performance_profile.py").exists() else None


def _scoring_for(problems: Mapping[str, Mapping[str, Any]]):
    """AlgoPerf's scoring modules, set up for our problems (restored on exit)."""
    if algoperf_tree() is None:
        raise ImportError("AlgoPerf's work tree (scoring/) not found")
    targets = {name: (p["metric"], p["target"]) for name, p in problems.items()}
    return scoring_over(sorted(problems), targets)


def score_layout(layout: Path, problems: Mapping[str, Mapping[str, Any]]) -> dict:
    """AlgoPerf's scorer on a written layout: {'scores': {variant: score}, 'times':
    {variant: {problem name: median time}}, 'profiles': {variant: rho at the 100 taus},
    'taus': [...]} (JSON-able; inf as the string 'inf')."""
    with _scoring_for(problems) as (pp, scoring_utils):
        results = {
            v.name: scoring_utils.get_experiment_df(str(v))
            for v in sorted(layout.iterdir())
            if v.is_dir()
        }
        with tempfile.TemporaryDirectory() as output_dir:
            profiles = compute_profiles(pp, results, True, output_dir)
            times = _read_times(Path(output_dir) / "time_to_targets.csv")
        scores = pp.compute_leaderboard_score(profiles, normalize=True)["score"]
    return {
        "scores": {v: float(s) for v, s in scores.items()},
        "times": times,
        "profiles": {v: [float(x) for x in row] for v, row in profiles.iterrows()},
        "taus": [float(t) for t in profiles.columns],
    }


def _read_times(path: Path) -> dict[str, dict[str, Any]]:
    """AlgoPerf's `time_to_targets.csv` (median over studies, before the 4x cut)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {
        row["submission"]: {k: _json_time(v) for k, v in row.items() if k != "submission"}
        for row in rows
    }


def _json_time(text: str) -> float | str:
    """A time cell of AlgoPerf's CSV for the JSON this prints: a float, nan when empty, the
    text "inf" for a missed target (strict JSON has no infinity; `score_table`'s float()
    reads it back)."""
    value = float(text) if text else math.nan
    return "inf" if math.isinf(value) else value


def score_with_algoperf(
    records: Mapping[str, Mapping[str, Any]], variants: Sequence[str], out: Path
) -> dict | None:
    """AlgoPerf's scores, profiles and median times of the records of `variants` (the
    layout is written to `out/layout`, replaced), in this process if AlgoPerf is
    importable, else in `$ALGOPERF_HOME/venv`; None when neither is there."""
    in_process = algoperf_tree() is not None
    python = Path(os.environ.get("ALGOPERF_HOME", "/nonexistent")) / "venv" / "bin" / "python"
    if not in_process and not python.exists():
        return None
    out = out / "layout"
    if out.exists():  # Only the given records: a former grid's variants would be scored.
        shutil.rmtree(out)
    problems = write_layout(records, variants, out)
    if not problems:
        return None
    if in_process:
        result = score_layout(out, problems)
    else:
        (out / "problems.json").write_text(json.dumps(problems), encoding="utf-8")
        root = Path(__file__).resolve().parents[2]
        proc = subprocess.run(
            [str(python), "-m", "scripts.experiments.algoperf_score", str(out)],
            cwd=root,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"AlgoPerf's scorer failed in {python}: {proc.stderr[-2000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["problems"] = {name: tuple(p["problem"]) for name, p in problems.items()}
    return result


def score_table(records, variants: Sequence[str], labels: Mapping[str, str], out: Path):
    """`profiles.score_table`'s (lines, scores, ratios), the scores by AlgoPerf's scorer; None
    without AlgoPerf. The ratios (table cells, the figure) are AlgoPerf's median times over
    the best's, cut at 4x (`profiles.ratios`, our code)."""
    result = score_with_algoperf(records, variants, out)
    if result is None:
        return None
    names = result["problems"]
    times = {
        v: {names[p]: float(t) for p, t in per.items() if p in names}
        for v, per in result["times"].items()
    }
    r = ratios(times)
    scores = result["scores"]
    problems = sorted(names.values())
    head = ["variant", "score"] + [f"{w} {s}" for w, s in problems]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for v in sorted(scores, key=lambda v: -scores[v]):
        cells = [labels.get(v, v), f"{scores[v]:.3f}"]
        for p in problems:
            ratio, t = r[v][p], times[v].get(p, math.nan)
            cells.append("never" if not math.isfinite(ratio) else f"{ratio:.2f} ({t:.3g} s)")
        lines.append("| " + " | ".join(cells) + " |")
    return lines, scores, r


def build_parser() -> argparse.ArgumentParser:
    """The command line's options."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.experiments.algoperf_score",
        description="AlgoPerf's scorer on a layout written by write_layout (with its "
        "problems.json); prints one JSON line (run in AlgoPerf's venv).",
    )
    parser.add_argument("layout", type=Path, help="the layout's folder")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m scripts.experiments.algoperf_score LAYOUT`: AlgoPerf's scorer on a layout
    written by `write_layout` (with its problems.json); one JSON line on stdout."""
    layout = build_parser().parse_args(argv).layout
    problems = json.loads((layout / "problems.json").read_text(encoding="utf-8"))
    with contextlib.redirect_stdout(sys.stderr):  # get_experiment_df prints.
        result = score_layout(layout, problems)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
