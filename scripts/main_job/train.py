"""One run of the main job: its config.json, its clock, and the local runner's
``train_once`` with the monitor's hooks (fresh, or continued from its checkpoint)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax

from cyclic_soft_reset.algoperf_compat import metric_direction, parse_eval_results
from scripts.local import plots, runner, workloads
from scripts.main_job.files import write_csv
from scripts.main_job.monitor import Interrupt, RunMonitor, actual_schedule
from scripts.main_job.options import (
    RUN_OPTIONS,
    as_hyperparameters,
    batch_size_for,
    checkpoint_period,
    contestant_hyperparameters,
    contestant_label,
    is_ours,
    jsonable,
)
from scripts.main_job.summary import (
    budget_lines,
    cycle_rows,
    format_cycle_table,
    target_event,
    target_line,
)

CHECKPOINT_FILE = "checkpoint.msgpack"  # The local runner's (AlgoPerf's contents).


def run_config(
    args: argparse.Namespace,
    workload: Any,
    options: Mapping[str, Any],
    overrides: Mapping[str, Any],
    resolved: Mapping[str, Any],
    seed: int,
    eval_every: int | None,
) -> dict[str, Any]:
    """What config.json holds: the options (``RUN_OPTIONS``, enough to resume the run),
    the resolved hyperparameters, the workload's settings and the target."""
    batch_size, batch_source = batch_size_for(args.workload, args.batch_size)
    return {
        "workload": args.workload,
        "workload_options": jsonable(list(options.items())),
        "workload_config": jsonable(dataclasses.asdict(workload.config)),
        "seed": seed,
        "global_batch_size": batch_size,
        "batch_size_source": batch_source,
        "eval_every_steps": eval_every,
        "eval_period_time_sec": workload.eval_period_time_sec,
        "max_steps": args.max_steps,
        "max_runtime_sec": runner.runtime_budget(workload, args.max_runtime_sec, self_tuning=True),
        "stop_at_target": not args.run_past_target,
        "checkpoint_every_steps": checkpoint_period(args.checkpoint_every_steps, eval_every),
        "options": {name: getattr(args, name) for name in RUN_OPTIONS},
        "hyperparameter_overrides": dict(overrides),
        "hyperparameters": dict(resolved),
        "submission": contestant_label(args.submission),
        "target": {
            "metric": f"validation/{workload.target_metric_name}",
            "value": workload.validation_target_value,
            "higher_is_better": metric_direction(workload),
        },
        "command": [sys.executable, "-m", "scripts.run", *sys.argv[1:]],
    }


def make_clock(args: argparse.Namespace, workload: Any) -> Any:
    """The run's clock: the simulated reference hardware (at ``--speed``) or the wall."""
    if args.clock == "wall":
        return runner.WallClock()
    return runner.reference_clock(workload, args.speed)


def run_one(
    args: argparse.Namespace,
    submission: Any,
    overrides: dict[str, Any],
    resolved: dict[str, Any],
    seed: int,
    out_dir: Path,
    interrupt: Interrupt,
    resume: Mapping[str, Any] | None = None,
) -> runner.RunResult:
    """Train one run, writing its directory; return the runner's result (stop reason
    ``interrupted`` after Ctrl-C). ``resume`` is the monitor state saved with the
    run's last checkpoint: the run continues from that checkpoint."""
    options = workloads.tiny_overrides(args.workload) if args.tiny else {}
    if args.param_scale != 1.0:  # 1 multiplies nothing: the workload as registered.
        options["param_scale"] = args.param_scale
    workload = workloads.make_workload(args.workload, **options)
    batch_size, _ = batch_size_for(args.workload, args.batch_size)
    eval_every = args.eval_every_steps  # None: every eval_period_time_sec of the clock.
    checkpoint_every = checkpoint_period(args.checkpoint_every_steps, eval_every)
    if resume is None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "events.jsonl").write_text("", encoding="utf-8")
        config = run_config(args, workload, options, overrides, resolved, seed, eval_every)
    else:
        config = json.loads((out_dir / "config.json").read_text(encoding="utf-8"))
    recorder = runner.MetricsRecorder()
    monitor = RunMonitor(
        submission,
        workload,
        out_dir,
        config,
        recorder,
        args.max_steps,
        show_progress=not args.no_progress,
        checkpoint_every=checkpoint_every,
        interrupt=interrupt,
    )
    if resume is not None:
        monitor.restore(resume)
    ours = is_ours(args.submission)
    method = (
        f"reset {resolved['reset_strategy']} | early switching {resolved['early_switching']}"
        if ours
        else f"submission {contestant_label(args.submission)}"
    )
    print(
        f"== {args.workload} | seed {seed} | {method} | batch {batch_size} | "
        f"{jax.device_count()} x {jax.devices()[0].platform} | -> {out_dir}"
        + ("" if resume is None else f" | resumed at step {monitor.start_step}"),
        flush=True,
    )
    try:
        result = runner.train_once(
            workload,
            submission,
            as_hyperparameters(overrides) if ours else contestant_hyperparameters(args),
            seed,
            workload_name=args.workload,
            global_batch_size=batch_size,
            eval_every_steps=eval_every,
            clock=make_clock(args, workload),
            max_global_steps=args.max_steps,
            max_runtime_sec=args.max_runtime_sec,
            metrics_logger=recorder,
            stop_at_target=not args.run_past_target,
            hooks=runner.RunnerHooks(
                before_training=monitor.before_training,
                after_eval=monitor.after_eval,
                after_step=monitor.after_step,
            ),
            checkpoint_path=out_dir / CHECKPOINT_FILE,
            checkpoint_every_steps=checkpoint_every,
            resume_from=None if resume is None else out_dir / CHECKPOINT_FILE,
        )
    finally:
        monitor.close()
    if result.stop_reason == "stopped_by_hook" and interrupt.requested:
        result = dataclasses.replace(result, stop_reason="interrupted")
    monitor.drain_records(result.optimizer_state)
    finish_run(monitor, result, workload, out_dir)
    return result


def finish_run(
    monitor: RunMonitor,
    result: runner.RunResult,
    workload: Any,
    out_dir: Path,
) -> None:
    """Final files, plots and the console summary of one run (also after Ctrl-C)."""
    rows = [metrics for _, metrics, _ in monitor.recorder.records]
    write_csv(out_dir / "measurements.csv", rows)
    write_csv(out_dir / "eval_measurements.csv", monitor.eval_rows)
    reached = target_event(monitor.events)
    monitor.event(
        {
            "event": "end",
            "step": result.global_step,
            "reason": result.stop_reason,
            "target_step": None if reached is None else reached["step"],
            "target_submission_time_sec": (
                None if reached is None else reached["submission_time_sec"]
            ),
            "submission_time_sec": result.train_state["accumulated_submission_time"],
        }
    )
    evals = parse_eval_results(result.eval_results)
    draw_final_plots(monitor, result, workload, out_dir, evals)
    if monitor.snapshots:  # A submission that says its plan: the cycles as run.
        table = cycle_rows(
            monitor.snapshots,
            monitor.resets,
            evals,
            monitor.metric_key,
            metric_direction(workload),
            # Steps trained: AlgoPerf's runner counts the step that ended the plan too.
            result.global_step - (result.stop_reason == "training_complete"),
        )
        print(format_cycle_table(table, workload.target_metric_name))
    print(target_line(result, workload, reached, monitor.config["options"].get("clock", "wall")))
    budget = monitor.config["max_runtime_sec"]
    spent = result.train_state["accumulated_submission_time"]
    lines = budget_lines(monitor.events, budget, spent, result.stop_reason)
    # A submission without a plan of ours has nothing to re-fit: only the budget's line.
    print("\n".join(lines if monitor.snapshots else lines[:1]))
    print(f"Run directory: {out_dir}", flush=True)
    if result.stop_reason == "interrupted":
        print(
            f"Interrupted after step {result.global_step}. To continue from the last "
            f"checkpoint: python -m scripts.run --resume {out_dir}",
            flush=True,
        )


def draw_final_plots(
    monitor: RunMonitor,
    result: runner.RunResult,
    workload: Any,
    out_dir: Path,
    evals: Sequence[tuple[int, Mapping[str, Any]]],
) -> None:
    """The actual schedule (for a submission that says its plan) and the validation
    curves, resets marked."""
    title = monitor.workload_title()
    if monitor.snapshots:
        steps, rates = actual_schedule(monitor.snapshots)
        first = monitor.first_plan or monitor.snapshots[0]
        plots.plot_learning_rate(
            out_dir / "lr_schedule.png",
            steps,
            rates,
            monitor.snapshots[-1].summary["boundaries"],
            title=f"{title}: learning-rate schedule as run",
            planned=(first.steps, first.rates),
            resets=monitor.resets,
            end_step=result.global_step,
            logged=monitor.logged_lr,
            show_tau=monitor.show_tau,
        )
    eval_steps = [s for s, _ in evals]
    name = workload.target_metric_name
    plots.plot_metric(
        out_dir / f"validation_{name}.png",
        eval_steps,
        [m[monitor.metric_key] for _, m in evals],
        ylabel=f"validation {name}",
        title=f"{title}: validation {name}",
        target=workload.validation_target_value,
        resets=monitor.resets,
        extra={f"train {name}": (eval_steps, [m.get(f"train/{name}") for _, m in evals])},
        show_tau=monitor.show_tau,
    )
    if name != "loss":
        plots.plot_metric(
            out_dir / "validation_loss.png",
            eval_steps,
            [m["validation/loss"] for _, m in evals],
            ylabel="validation loss",
            title=f"{title}: validation loss",
            resets=monitor.resets,
            show_tau=monitor.show_tau,
        )
