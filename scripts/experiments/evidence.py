"""The evidence experiment: reset strategies and our decisions, over seeds, on every workload.

One command runs the grid (variant x scenario x workload x seed) through the local
runner and the real ``submission.py``, then writes a results directory and the report:

    .venv/bin/python -m scripts.experiments.evidence      # the full grid (docs/evidence.md)
    .venv/bin/python -m scripts.experiments.evidence --grid small --out runs/evidence-small

* ``<out>/runs/<key>.json``: one finished run each. A run whose file exists is not
  redone, so an interrupted grid resumes where it stopped (``--redo`` starts over).
* ``<out>/runs.csv``: one row per run; ``<out>/tables.md``: the aggregated tables;
  ``<out>/figures/*.png``: learning curves (median and band over seeds, resets marked).
* ``--report PATH`` (default for the full grid: ``docs/evidence.md``): the report, with
  the tables, figures (copied beside it) and a reading derived from the numbers.

The design (variants, scenarios, study settings, grids) is
``scripts/experiments/design.py``. Measures, tables, figures and the report are in
``scripts/experiments/evidence_report.py``; they read the records only, so ``--no_run``
rebuilds them without training.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from scripts.cli_help import add_choice_list
from scripts.experiments.design import (
    GRIDS,
    SCENARIOS,
    VARIANTS,
    WORKLOADS,
    RunSpec,
    grid,
)
from scripts.experiments.evidence_measures import refusal
from scripts.experiments.evidence_report import aggregate
from scripts.main_job.files import write_json

ROOT = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- one run


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Trains one run with the local runner and the real submission; a JSON-able record.

    The record holds the target, every evaluation (step, target metric, validation
    loss, submission time), every reset the submission logged (with the failure check of
    the cycle it ended: failed, the rule, the params' norm ratio end/start), the initial
    plan's boundaries, and how the run ended.
    """
    from cyclic_soft_reset.algoperf_compat import metric_direction
    from cyclic_soft_reset.records import resets_in
    from scripts.experiments.design import VARIANTS
    from scripts.local import runner, workloads
    from scripts.local.contestants import load_submission

    submission = load_submission(VARIANTS[spec.variant].submission)
    # The project's submission says its plan; another contestant has none to say.
    plan_summary = getattr(submission, "plan_summary", lambda state: {"boundaries": []})
    workload = workloads.make_workload(spec.workload, **spec.workload_options())
    recorder = runner.MetricsRecorder()
    plans = []
    start = time.time()
    # AlgoPerf's clock on the reference hardware, simulated: the records do not depend on
    # the machine's load, and evaluations come every eval_period_time_sec of it.
    clock = runner.reference_clock(workload, **spec.clock())
    result = runner.train_once(
        workload,
        submission,
        spec.hyperparameters(),
        spec.seed,
        workload_name=spec.workload,
        clock=clock,
        metrics_logger=recorder,
        hooks=runner.RunnerHooks(before_training=lambda state: plans.append(plan_summary(state))),
    )
    wall = time.time() - start
    metric_key = f"validation/{workload.target_metric_name}"
    evals = [
        {
            "step": step,
            "metric": _json_number(metrics[metric_key]),
            "loss": _json_number(metrics["validation/loss"]),
            "time": _json_number(metrics["accumulated_submission_time"]),
        }
        for step, metrics in result.eval_results
    ]
    # Each reset with the failure check of the cycle it ended (v2: rules (a)-(c)).
    numbers = ("tau", "metric", "param_norm_ratio")
    resets = [
        {k: _json_number(v) if k in numbers else v for k, v in record._asdict().items()}
        for record in resets_in(recorder.records)
    ]
    return {
        "key": spec.key,
        "spec": spec._asdict(),
        "hyperparameters": spec.hyperparameters(),
        "workload_options": spec.workload_options(),  # json writes tuples as lists.
        "target": {
            "metric": metric_key,
            "value": workload.validation_target_value,
            "higher_is_better": metric_direction(workload),
        },
        "eval_every_steps": workload.eval_every_steps,
        "clock": dataclasses.asdict(clock) | {"time": None},
        "budget": runner.runtime_budget(workload, None, self_tuning=True),
        "planned_boundaries": plans[0]["boundaries"],
        "final_boundaries": plan_summary(result.optimizer_state)["boundaries"],
        "evals": evals,
        "resets": resets,
        "target_step": result.target_step,
        "target_time": result.target_submission_time,
        "global_step": result.global_step,
        "stop_reason": result.stop_reason,
        "submission_time": result.train_state["accumulated_submission_time"],
        "wall_time": wall,
    }


def _json_number(value: Any) -> float | None:
    """A float for JSON: None for nan/inf (JSON has neither)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _worker_run(spec: RunSpec) -> tuple[RunSpec, dict[str, Any] | None, str | None]:
    """Pool entry point: (spec, record, error text)."""
    try:
        return spec, run_one(spec), None
    except Exception as error:  # A failed run is reported, not fatal to the grid.
        return spec, None, f"{type(error).__name__}: {error}"


def _configure_jax(cache_dir: Path | None) -> None:
    """A persistent compilation cache shared by the grid's processes."""
    import jax

    if cache_dir is not None:
        jax.config.update("jax_compilation_cache_dir", str(cache_dir))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _init_worker(cache_dir: str | None) -> None:
    import logging

    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("jax").setLevel(logging.WARNING)
    _configure_jax(Path(cache_dir) if cache_dir else None)


def run_grid(
    specs: Sequence[RunSpec],
    out: Path,
    workers: int = 1,
    redo: bool = False,
    say: Callable[[str], None] | None = None,
) -> list[str]:
    """Runs the specs whose record is missing (all with ``redo``); returns the errors.

    Records are written atomically (``.tmp`` then rename), so a killed grid leaves no
    half-written record and resumes with the next call. With ``workers > 1`` each
    process runs XLA single-threaded, so that the processes do not share cores.
    """
    say = say or functools.partial(print, flush=True)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    todo = [s for s in specs if redo or not (runs_dir / f"{s.key}.json").exists()]
    say(f"{len(specs) - len(todo)} of {len(specs)} runs already done; {len(todo)} to run.")
    if not todo:
        return []
    cache = out / ".jax_cache"
    errors: list[str] = []
    start = time.time()

    def finished(done: int, spec: RunSpec, record: dict | None, error: str | None) -> None:
        if record is None:
            errors.append(f"{spec.key}: {error}")
            line = f"FAILED {error}"
        else:
            write_json(runs_dir / f"{spec.key}.json", record)
            reached = record["target_step"]
            line = f"target at step {reached}" if reached is not None else "target not reached"
            line += f", {record['wall_time']:.0f} s"
        elapsed = time.time() - start
        eta = elapsed / done * (len(todo) - done)
        say(f"[{done}/{len(todo)}] {spec.key}: {line} (elapsed {elapsed:.0f} s, eta {eta:.0f} s)")

    if workers <= 1:
        _init_worker(str(cache))
        for done, spec in enumerate(todo, 1):
            finished(done, *_worker_run(spec))
        return errors
    env_before = os.environ.get("XLA_FLAGS")
    os.environ["XLA_FLAGS"] = " ".join(
        filter(None, [env_before, "--xla_cpu_multi_thread_eigen=false"])
    )
    try:
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, initializer=_init_worker, initargs=(str(cache),)) as pool:
            for done, result in enumerate(pool.imap_unordered(_worker_run, todo), 1):
                finished(done, *result)
    finally:
        if env_before is None:
            os.environ.pop("XLA_FLAGS", None)
        else:
            os.environ["XLA_FLAGS"] = env_before
    return errors


# --------------------------------------------------------------------------- CLI


_NO_EFFECT = ("--no_run", "--redo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.experiments.evidence", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--grid", choices=sorted(GRIDS), default="full")
    parser.add_argument("--out", type=Path, default=None, help="results directory")
    parser.add_argument("--report", type=Path, default=None, help="Markdown report path")
    parser.add_argument(
        "--workloads",
        nargs="+",
        default=None,
        choices=WORKLOADS,
        metavar="NAME",
        help=f"{', '.join(WORKLOADS)} (default: the grid's)",
    )
    scenarios = {name: f"{s.label}: {s.description}" for name, s in SCENARIOS.items()}
    add_choice_list(parser, "--scenarios", "NAME", lambda: scenarios, help="default: the grid's")
    variants = {name: variant.label for name, variant in VARIANTS.items()}
    add_choice_list(parser, "--variants", "NAME", lambda: variants, help="default: the grid's")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1")
    parser.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1))
    parser.add_argument("--redo", action="store_true", help="rerun finished runs too")
    parser.add_argument("--no_run", action="store_true", help="only aggregate the records")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    preset = GRIDS[args.grid]
    seeds = args.seeds if args.seeds is not None else preset["seeds"]
    if seeds < 1:
        raise SystemExit(f"--seeds must be >= 1, got {seeds}.")
    if args.workers < 1:
        raise SystemExit(f"--workers must be >= 1, got {args.workers}.")
    out = args.out or ROOT / "runs" / f"evidence-{args.grid}"
    report = args.report
    if report is None and args.grid == "full" and args.out is None:
        report = ROOT / "docs" / "evidence.md"
    specs = grid(
        args.workloads or preset["workloads"],
        args.scenarios or preset.get("scenarios", list(SCENARIOS)),
        args.variants or preset.get("variants", list(VARIANTS)),
        range(seeds),
        tiny=preset["tiny"],
    )
    errors = [] if args.no_run else run_grid(specs, out, args.workers, args.redo)
    if message := refusal(out, specs, errors, args.no_run):
        print(message, file=sys.stderr)
        return 2
    # The command that reproduces the records (--no_run and --redo do not change them).
    given = argv if argv is not None else sys.argv[1:]
    command = " ".join(
        ["python -m scripts.experiments.evidence", *(a for a in given if a not in _NO_EFFECT)]
    )

    result = aggregate(out, specs, report, command.strip())
    print(f"{len(result['records'])} records -> {out}/runs.csv, {out}/tables.md, {out}/figures/")
    if report is not None:
        print(f"report -> {report}")
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
