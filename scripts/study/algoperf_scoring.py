"""AlgoPerf's own scoring code on a study's experiment layout (run in AlgoPerf's venv).

    python -m scripts.study.algoperf_scoring REQUEST.json

REQUEST: {"layout": DIR (<contestant>/study_<i>/<workload>_jax/trial_<n>/...), "workloads":
[...], "targets": {workload: value} (overrides, smoke runs only), "self_tuning": bool,
"output_dir": DIR}. It calls what `scoring/score_submissions.py` calls, with its settings
(time column `score`, tau in [1, 4], 100 points, linear): `scoring_utils.get_experiment_df`
per contestant, `performance_profile.compute_performance_profiles`,
`compute_leaderboard_score` (normalised) and `plot_performance_profiles` (the figure and the
profile CSV in output_dir). Prints one JSON line: scores, AlgoPerf's time_to_targets.csv
(median over studies, before the 4x cut), the targets used, the figure's path.

A study of some of the workloads is scored over those: `BASE_WORKLOADS` and
`NUM_BASE_WORKLOADS` of `performance_profile` are set to them for the call (AlgoPerf's
scorer otherwise requires all eight), and held-out workloads to none. Targets come from
AlgoPerf's `scoring_utils.get_workload_metrics_and_targets` (it imports the workload),
unless REQUEST overrides one. Nothing of AlgoPerf is edited on disk.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path

MAX_TAU, NUM_POINTS = 4.0, 100  # As scoring/score_submissions.py calls it.


def algoperf_tree() -> Path:
    """AlgoPerf's work tree (its `scoring/` is not installed), from the installed package."""
    import algoperf

    return Path(algoperf.__file__).resolve().parents[1]


def targets_for(scoring_utils, workloads, overrides: Mapping[str, float]) -> dict:
    """{workload: (metric column, target)}: AlgoPerf's, or the override's value."""
    out = {}
    for w in workloads:
        metric, target = scoring_utils.get_workload_metrics_and_targets(f"{w}_jax")
        out[w] = (metric, float(overrides.get(w, target)))
    return out


@contextlib.contextmanager
def on_path():
    """AlgoPerf's work tree on sys.path (for its `scoring` package), removed on exit."""
    tree = str(algoperf_tree())
    sys.path.insert(0, tree)
    try:
        yield
    finally:
        sys.path.remove(tree)


@contextlib.contextmanager
def scoring_over(workloads, targets: Mapping[str, tuple[str, float]]):
    """AlgoPerf's scoring modules (performance_profile, scoring_utils) set up for these
    workloads and their (metric column, target); all restored on exit."""
    with on_path():
        from scoring import performance_profile as pp
        from scoring import scoring_utils

        saved = (
            pp.BASE_WORKLOADS,
            pp.NUM_BASE_WORKLOADS,
            pp.HELDOUT_WORKLOADS,
            scoring_utils.get_workload_metrics_and_targets,
        )

        def metrics_and_target(workload, split="validation"):
            name = workload.removesuffix("_jax")
            if name not in targets:
                raise KeyError(f"{workload}: not one of the scored workloads {sorted(targets)}")
            return targets[name]

        pp.BASE_WORKLOADS = sorted(workloads)  # as the time table names them: no _jax
        pp.NUM_BASE_WORKLOADS = len(workloads)
        pp.HELDOUT_WORKLOADS = None
        scoring_utils.get_workload_metrics_and_targets = metrics_and_target
        try:
            yield pp, scoring_utils
        finally:
            (pp.BASE_WORKLOADS, pp.NUM_BASE_WORKLOADS, pp.HELDOUT_WORKLOADS) = saved[:3]
            scoring_utils.get_workload_metrics_and_targets = saved[3]


def compute_profiles(pp, results, self_tuning: bool, output_dir: str):
    """AlgoPerf's performance profiles of `results` ({submission: get_experiment_df}) with
    scoring/score_submissions.py's settings; writes time_to_targets.csv in output_dir."""
    return pp.compute_performance_profiles(
        results,
        time_col="score",
        min_tau=1.0,
        max_tau=MAX_TAU,
        reference_submission_tag=None,
        num_points=NUM_POINTS,
        scale="linear",
        verbosity=0,
        self_tuning_ruleset=self_tuning,
        strict=False,
        output_dir=output_dir,
    )


def score(request: Mapping) -> dict:
    """AlgoPerf's scores, median times and profile figure for the request (module doc)."""
    layout, out = Path(request["layout"]), Path(request["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    with on_path():
        from scoring import scoring_utils as plain

        targets = targets_for(plain, request["workloads"], request.get("targets", {}))
    with scoring_over(request["workloads"], targets) as (pp, scoring_utils):
        results = {
            d.name: scoring_utils.get_experiment_df(str(d))
            for d in sorted(layout.iterdir())
            if d.is_dir()
        }
        profiles = compute_profiles(pp, results, bool(request["self_tuning"]), str(out))
        pp.plot_performance_profiles(profiles, "score", save_dir=str(out))
        scores = pp.compute_leaderboard_score(profiles, normalize=True)["score"]
    figures = sorted(str(p) for p in out.glob("performance_profile_by_*"))
    return {
        "scores": {c: float(s) for c, s in scores.items()},
        "times": read_times(out / "time_to_targets.csv"),
        "targets": {w: list(t) for w, t in targets.items()},
        "figure": figures[0] if figures else "",
    }


def read_times(path: Path) -> dict[str, dict[str, float | str]]:
    """AlgoPerf's time_to_targets.csv as {contestant: {workload: seconds or 'inf'}}."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    key = next(iter(rows[0])) if rows else "submission"
    return {
        row[key]: {k.removesuffix("_jax"): _cell(v) for k, v in row.items() if k != key}
        for row in rows
    }


def _cell(text: str) -> float | str:
    """A time cell for JSON: a float, 'inf' for a missed target, 'nan' when empty."""
    value = float(text) if text else math.nan
    return str(value) if not math.isfinite(value) else value


def build_parser() -> argparse.ArgumentParser:
    """The command line: the request file (run in AlgoPerf's venv by `score`)."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.study.algoperf_scoring",
        description="AlgoPerf's scoring code on a study; prints one JSON line.",
    )
    parser.add_argument("request", type=Path, help="the request's JSON file")
    return parser


def main(argv=None) -> int:
    """Reads the request file, prints the result as one JSON line on stdout."""
    request = json.loads(build_parser().parse_args(argv).request.read_text())
    with contextlib.redirect_stdout(sys.stderr):  # AlgoPerf's code prints.
        result = score(request)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
