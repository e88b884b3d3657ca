"""Targets and budgets as AlgoPerf sets them, from the reference baseline's own runs.

AlgoPerf's target for a workload is what its tuned baseline reaches at the end of a full
run of step_hint steps, and its runtime budget is about the time of those steps. Here, for
every embedded workload (docs/METHOD.md section 7):

* the reference contestant (`scripts/local/contestants/nadamw_baseline.py`, AlgoPerf's
  self-tuning NAdamW) runs for step_hint steps on CALIBRATION_SEEDS (never the grids'
  scoring seeds 0-9), evaluated at the workload's evaluation period;
* each run's value r_i is its best validation (and test) metric over the evaluations in
  the last END_FRACTION of step_hint: where its decay ends;
* the target is the value REACH of the runs reach: with r sorted best first, the midpoint
  of the REACH-th and the next value (so exactly REACH runs are strictly past it); where
  the two tie, just short of them (all the tied runs are past it, and no run sits on it);
* max_allowed_runtime_sec = step_hint x the reference clock's seconds per step.

The result goes to `scripts/local/workloads/calibration.json`, which `make_workload` reads
(the hand-set targets stay available with `targets="hand"`):

    .venv/bin/python -m scripts.experiments.calibrate              # every workload
    .venv/bin/python -m scripts.experiments.calibrate --workloads digits --check
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

CALIBRATION_SEEDS = (1000, 1001, 1002, 1003, 1004)
END_FRACTION = 0.2  # "Near the end of the decay": the last fifth of step_hint.
REACH = 4  # The target is a value 4 of the 5 calibration runs reach.
# --check's tolerance: float32 training rounds differently across jax versions and CPUs.
CHECK_RTOL = 1e-3


def end_value(evals: Sequence[tuple[int, float]], step_hint: int, higher: bool) -> float:
    """r: the best metric among evaluations at steps >= (1 - END_FRACTION) step_hint
    (nan counts as the worst)."""
    start = (1.0 - END_FRACTION) * step_hint
    values = [v for step, v in evals if step >= start and math.isfinite(v)]
    if not values:
        return -math.inf if higher else math.inf
    return max(values) if higher else min(values)


def target_from(values: Sequence[float], higher: bool, reach: int = REACH) -> float:
    """The value `reach` of the runs are strictly past: the midpoint of the reach-th best
    value and the next one; just short of the reach-th when all runs reach it or the next
    one ties with it (then the tied runs are past it too: a target equal to a value a run
    can attain, e.g. an accuracy k/n, would be reached by AlgoPerf's scorer, which counts
    `>=`, and not by its runner, which stops at `>`)."""
    if not 1 <= reach <= len(values):
        raise ValueError(f"reach must be in [1, {len(values)}], got {reach}.")
    ranked = sorted(values, reverse=higher)
    kth = ranked[reach - 1]
    if reach == len(ranked) or not math.isfinite(ranked[reach]) or ranked[reach] == kth:
        step = 1e-6 * max(abs(kth), 1e-12)
        return kth - step if higher else kth + step
    return (kth + ranked[reach]) / 2


def calibrate(name: str, seeds: Sequence[int] = CALIBRATION_SEEDS) -> dict[str, Any]:
    """Run the reference baseline on `seeds` and derive the workload's target and budget."""
    from scripts.experiments.design import CLOCK
    from scripts.local import runner, workloads
    from scripts.local.contestants import load_submission

    baseline = load_submission("nadamw_baseline")
    runs = []
    for seed in seeds:
        workload = workloads.make_workload(name, targets="hand")
        result = runner.train_once(
            workload,
            baseline,
            None,
            seed,
            workload_name=name,
            clock=runner.reference_clock(workload, **CLOCK),
            stop_at_target=False,
            max_global_steps=workload.step_hint,
        )
        higher = workload.higher_is_better
        per_split = {}
        for split in ("validation", "test"):
            key = f"{split}/{workload.target_metric_name}"
            evals = [(step, float(m[key])) for step, m in result.eval_results]
            per_split[split] = end_value(evals, workload.step_hint, higher)
        runs.append({"seed": seed, **per_split})
        print(f"{name} seed {seed}: validation {per_split['validation']:.6g}", flush=True)
    return {
        "metric": workload.target_metric_name,
        "higher_is_better": higher,
        "validation_target_value": target_from([r["validation"] for r in runs], higher),
        "test_target_value": target_from([r["test"] for r in runs], higher),
        "step_hint": workload.step_hint,
        "max_allowed_runtime_sec": workload.step_hint * workload.config.step_seconds,
        "hand_validation_target_value": workload.default_config.validation_target_value,
        "runs": runs,
        "rule": (
            f"reference baseline nadamw_baseline for step_hint steps on seeds {list(seeds)}; "
            f"r = best metric over the last {END_FRACTION:g} of step_hint; target = the "
            f"midpoint of the {REACH}th and the next best r (just short of the {REACH}th where "
            "they tie)"
        ),
    }


def reproduces(stored: Any, fresh: Any, rtol: float = CHECK_RTOL) -> bool:
    """Whether a recomputed calibration entry is the stored one: the same keys and text,
    numbers equal to `rtol` (relative)."""
    if isinstance(stored, dict) and isinstance(fresh, dict):
        return stored.keys() == fresh.keys() and all(
            reproduces(stored[k], fresh[k], rtol) for k in stored
        )
    if isinstance(stored, list) and isinstance(fresh, list):
        return len(stored) == len(fresh) and all(map(reproduces, stored, fresh))
    if isinstance(stored, float | int) and isinstance(fresh, float | int):
        return math.isclose(stored, fresh, rel_tol=rtol)
    return stored == fresh


def build_parser() -> argparse.ArgumentParser:
    from scripts.local.workloads import WORKLOAD_NAMES

    parser = argparse.ArgumentParser(
        prog="python -m scripts.experiments.calibrate", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        choices=WORKLOAD_NAMES,
        default=WORKLOAD_NAMES,
        metavar="NAME",
        help=f"{', '.join(WORKLOAD_NAMES)} (default: all)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="recompute and compare with the stored calibration; write nothing",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from scripts.local.workloads import CALIBRATION_PATH, load_calibration

    args = build_parser().parse_args(argv)
    stored = load_calibration()
    fresh = {name: calibrate(name) for name in args.workloads}
    if args.check:
        differ = [n for n in fresh if not reproduces(stored.get(n), fresh[n])]
        for name in differ:
            print(f"{name}: stored {stored.get(name)} != recomputed {fresh[name]}")
        print("calibration reproduced" if not differ else f"differs: {differ}")
        return 1 if differ else 0
    merged = {**stored, **fresh}
    CALIBRATION_PATH.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    for name, entry in fresh.items():
        print(
            f"{name}: target {entry['metric']} {entry['validation_target_value']:.6g} "
            f"(hand-set {entry['hand_validation_target_value']:g}), "
            f"budget {entry['max_allowed_runtime_sec']:g} s"
        )
    print(f"-> {CALIBRATION_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
