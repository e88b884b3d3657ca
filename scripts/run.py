"""Train an embedded workload with the submission: ``python -m scripts.run``.

Without arguments: the default workload, the submission's default hyperparameters
(soft reset, early switching), seed 0. Shows a progress bar, one line per evaluation
and per reset, and a per-cycle summary; writes a run directory with
``eval_measurements.csv`` / ``measurements.csv`` (AlgoPerf's columns),
``events.jsonl``, ``config.json`` and PNG plots.

Examples::

    python -m scripts.run --workload breast_cancer --reset_strategy full
    python -m scripts.run --seed 0 1 2 --set num_cycles=4 --set early_switching=false
    python -m scripts.run --hparams_file hp.json --max_steps 300 --eval_every_steps 20
"""

from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import datetime
import json
import math
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

import hyperparameters
import reset as reset_lib
import submission
from algoperf_compat import metric_direction
from scripts.local import plots, runner, workloads

RESET_STRATEGIES = tuple(reset_lib.STRATEGIES)


# --------------------------------------------------------------------------- options


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.run",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--workload",
        default=workloads.DEFAULT_WORKLOAD,
        choices=workloads.WORKLOAD_NAMES,
        help=f"embedded workload (default: {workloads.DEFAULT_WORKLOAD})",
    )
    parser.add_argument(
        "--reset_strategy",
        choices=RESET_STRATEGIES,
        default=None,
        help="reset at cycle boundaries (default: the submission's, soft)",
    )
    parser.add_argument(
        "--seed", type=int, nargs="+", default=[0], help="one or more random seeds (default: 0)"
    )
    parser.add_argument(
        "--hparams_file",
        default=None,
        help="JSON object of hyperparameters (plain values, tuning_search_space names)",
    )
    parser.add_argument(
        "--set",
        dest="set_items",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one hyperparameter of submission.py (repeatable); VALUE is JSON"
        " or a bare word, e.g. --set num_cycles=4 --set decay_shape=linear",
    )
    parser.add_argument(
        "--max_steps", type=int, default=None, help="stop after this many steps (default: no limit)"
    )
    parser.add_argument(
        "--max_runtime_sec",
        type=float,
        default=None,
        help="submission-time budget (default: 1.5x the workload's, self-tuning)",
    )
    parser.add_argument(
        "--eval_every_steps",
        type=int,
        default=None,
        help="evaluate every N steps (default: the workload's); 0 = every "
        "eval_period_time_sec seconds as AlgoPerf does",
    )
    parser.add_argument(
        "--batch_size",
        type=int,
        default=None,
        help="global batch size (default: the workload's, from the workload registry)",
    )
    parser.add_argument(
        "--output_dir",
        default=None,
        help="run directory (default runs/<workload>-<strategy>-seed<seed>-<time>;"
        " with several seeds, one subdirectory per seed); an existing run is never"
        " replaced without --overwrite",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the runs already in --output_dir",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="tiny, fast version of the workload (smoke tests)",
    )
    parser.add_argument(
        "--run_past_target",
        action="store_true",
        help="keep training after the validation target is reached",
    )
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def parse_set_items(items: Sequence[str], valid_names: Sequence[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> dict of checked values (``hyperparameters.parse_cli_value``);
    ValueError for bad syntax, unknown keys or values out of range."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}.")
        check_names([key], valid_names, source="--set")
        parsed[key] = hyperparameters.parse_cli_value(key, value.strip())
    return parsed


def check_names(names: Sequence[str], valid_names: Sequence[str], source: str) -> None:
    """ValueError listing the valid hyperparameter names if any name is unknown."""
    unknown = sorted(set(names) - set(valid_names))
    if unknown:
        raise ValueError(
            f"{source}: unknown hyperparameter(s) {', '.join(unknown)}; valid names: "
            f"{', '.join(sorted(valid_names))}."
        )


def load_hparams_file(path: str, valid_names: Sequence[str]) -> dict[str, Any]:
    """Hyperparameters from a JSON object of plain values.

    A search-space entry with exactly one ``feasible_points`` value is accepted too.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as error:
        raise ValueError(f"--hparams_file: cannot read {path!r}: {error}.") from error
    except json.JSONDecodeError as error:
        raise ValueError(f"--hparams_file: {path!r} is not JSON: {error}.") from error
    if not isinstance(data, dict):
        raise ValueError(f"--hparams_file: {path!r} must hold a JSON object.")
    check_names(list(data), valid_names, source="--hparams_file")
    return {key: _plain_value(key, value) for key, value in data.items()}


def _plain_value(key: str, value: Any) -> Any:
    """Unwrap ``{"feasible_points": [v]}``; reject ranges (no tuning here)."""
    if isinstance(value, dict):
        points = value.get("feasible_points")
        if isinstance(points, list) and len(points) == 1:
            return points[0]
        raise ValueError(
            f"--hparams_file: {key!r} must be a plain value (or a single feasible "
            f"point), got {value!r}."
        )
    return value


def collect_overrides(args: argparse.Namespace, valid_names: Sequence[str]) -> dict[str, Any]:
    """Hyperparameter overrides: file, then ``--reset_strategy``, then ``--set``."""
    overrides: dict[str, Any] = {}
    if args.hparams_file:
        overrides.update(load_hparams_file(args.hparams_file, valid_names))
    if args.reset_strategy is not None:
        overrides["reset_strategy"] = args.reset_strategy
    overrides.update(parse_set_items(args.set_items, valid_names))
    return overrides


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def as_hyperparameters(overrides: Mapping[str, Any]) -> Any:
    """What ``update_params`` receives: None (self-tuning) or a namedtuple.

    Only the overridden keys, as AlgoPerf's external-tuning runner passes a point of
    the search space; the submission fills in its defaults.
    """
    if not overrides:
        return None
    cls = collections.namedtuple("Hyperparameters", sorted(overrides))
    return cls(**{key: overrides[key] for key in sorted(overrides)})


def validate_options(
    args: argparse.Namespace, submission: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(overrides, resolved config)``; ValueError with valid values if invalid."""
    for name in ("max_steps", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be an integer >= 1, got {value}.")
    if args.eval_every_steps is not None and args.eval_every_steps < 0:
        raise ValueError(
            f"--eval_every_steps must be >= 1 (or 0 for time-based), got {args.eval_every_steps}."
        )
    if args.max_runtime_sec is not None and not args.max_runtime_sec > 0:
        raise ValueError(f"--max_runtime_sec must be > 0, got {args.max_runtime_sec}.")
    valid_names = list(hyperparameters.NAMES)
    overrides = collect_overrides(args, valid_names)
    resolved = hyperparameters.to_json(hyperparameters.resolve(as_hyperparameters(overrides)))
    return overrides, resolved


# --------------------------------------------------------------------------- files


def per_cycle_notes(overrides: Mapping[str, Any], resolved: Mapping[str, Any]) -> list[str]:
    """A line for each per-cycle list that `num_cycles` replaced by all ones (METHOD.md
    section 3), so that dropping the tuned per-cycle values is never silent."""
    notes = []
    for name in ("cycle_lr_factors", "cycle_warmup_factors"):
        default = hyperparameters.DEFAULTS[name]
        if name not in overrides and list(resolved[name]) != list(default):
            notes.append(
                f"note: num_cycles={resolved['num_cycles']} differs from the {len(default)} "
                f"entries of the default {name} {list(default)}: it is "
                f"{list(resolved[name])}; give --set {name}=[...] to choose."
            )
    return notes


def default_output_dir(workload: str, strategy: str, seed: int, stamp: str) -> Path:
    """``runs/<workload>-<strategy>-seed<seed>-<timestamp>`` (made unique)."""
    base = Path("runs") / f"{workload}-{strategy}-seed{seed}-{stamp}"
    candidate, n = base, 1
    while candidate.exists():
        candidate, n = Path(f"{base}-{n}"), n + 1
    return candidate


def run_directories(args: argparse.Namespace, strategy: str) -> list[Path]:
    """One output directory per seed."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    if args.output_dir is None:
        return [default_output_dir(args.workload, strategy, seed, stamp) for seed in args.seed]
    root = Path(args.output_dir)
    dirs = [root] if len(args.seed) == 1 else [root / f"seed{seed}" for seed in args.seed]
    taken = [d for d in dirs if d.is_dir() and any(d.iterdir())]
    if taken and not args.overwrite:
        raise ValueError(
            f"--output_dir: {', '.join(map(str, taken))} already holds a run; pass --overwrite "
            "to replace it, or choose another directory."
        )
    for d in taken:
        shutil.rmtree(d)
    return dirs


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows with the sorted union of their keys as columns (blank when missing)."""
    columns = sorted({key for row in rows for key in row})
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: Path, data: Any) -> None:
    """Pretty JSON (non-finite floats as null)."""
    path.write_text(json.dumps(_finite(data), indent=2) + "\n", encoding="utf-8")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# --------------------------------------------------------------------------- monitor


@dataclasses.dataclass
class PlanSnapshot:
    """The schedule in force from ``from_step`` on (taken at start and each reset)."""

    from_step: int
    summary: dict[str, Any]
    steps: np.ndarray
    rates: np.ndarray


def snapshot_plan(submission: Any, optimizer_state: Any, from_step: int) -> PlanSnapshot:
    """The submission's plan and its learning rates over ``[from_step, T]``."""
    summary = submission.plan_summary(optimizer_state)
    end = max(int(summary["planned_total_steps"]), from_step)
    steps = np.arange(from_step, end + 1)
    rates = np.asarray(submission.learning_rates(optimizer_state, steps), float)
    return PlanSnapshot(from_step, summary, steps, rates)


def actual_schedule(snapshots: Sequence[PlanSnapshot]) -> tuple[np.ndarray, np.ndarray]:
    """Learning rate per step, each step taken from the plan in force at that step."""
    steps, rates = [], []
    for current, following in zip(snapshots, [*snapshots[1:], None], strict=True):
        keep = (
            current.steps < following.from_step
            if following is not None
            else np.ones(len(current.steps), bool)
        )
        steps.append(current.steps[keep])
        rates.append(current.rates[keep])
    return np.concatenate(steps), np.concatenate(rates)


class RunMonitor:
    """Progress bar, console lines, incremental files and plots of one run."""

    def __init__(
        self,
        submission: Any,
        workload: Any,
        out_dir: Path,
        config: dict[str, Any],
        recorder: runner.MetricsRecorder,
        max_steps: int | None,
        show_progress: bool,
    ) -> None:
        self.submission = submission
        self.workload = workload
        self.out_dir = out_dir
        self.config = config
        self.recorder = recorder
        self.max_steps = max_steps
        self.show_progress = show_progress
        self.metric_key = f"validation/{workload.target_metric_name}"
        self.snapshots: list[PlanSnapshot] = []
        self.resets: list[plots.Reset] = []
        self.logged_lr: list[tuple[int, float]] = []
        self.eval_rows: list[dict[str, Any]] = []
        self.records_seen = 0
        self.bar: Any = None
        self.target_announced = False

    # -- hooks

    def before_training(self, optimizer_state: Any) -> None:
        """Snapshot the plan, write config.json, draw the planned schedule."""
        first = snapshot_plan(self.submission, optimizer_state, 0)
        self.snapshots.append(first)
        self.config["initial_plan"] = first.summary
        write_json(self.out_dir / "config.json", self.config)
        plots.plot_learning_rate(
            self.out_dir / "lr_schedule_planned.png",
            first.steps,
            first.rates,
            first.summary["boundaries"],
            title=f"{self.workload_title()}: planned learning-rate schedule",
        )
        total = first.summary["planned_total_steps"]
        if self.max_steps is not None:
            total = min(total, self.max_steps)
        self.bar = tqdm(
            total=total,
            unit="step",
            disable=None if self.show_progress else True,  # None: only on a terminal.
            dynamic_ncols=True,
            leave=False,
        )

    def after_eval(self, step: int, result: dict[str, Any], optimizer_state: Any) -> None:
        """Print pending resets and the evaluation; append to eval_measurements.csv."""
        self.drain_records(optimizer_state)
        cycle = self.snapshots[-1].summary.get("cycle", 0) if self.snapshots else 0
        self.say(
            f"step {step:6d} | cycle {cycle} | "
            f"val {self.workload.target_metric_name} {result[self.metric_key]:.4f} | "
            + (
                ""
                if self.metric_key == "validation/loss"  # Said once when the target is the loss.
                else f"val loss {result['validation/loss']:.4f} | "
            )
            + f"train loss {result.get('train/loss', float('nan')):.4f} | "
            f"{result['accumulated_submission_time']:.1f} s"
        )
        self.eval_rows.append({**result, "global_step": step, "preemption_count": 0})
        write_csv(self.out_dir / "eval_measurements.csv", self.eval_rows)
        if not self.target_announced and self.workload.has_reached_validation_target(result):
            self.target_announced = True
            self.event(
                {
                    "event": "target_reached",
                    "step": step,
                    "metric": result[self.metric_key],
                    "submission_time_sec": result["accumulated_submission_time"],
                    "total_duration_sec": result["total_duration"],
                }
            )
            self.say(f"step {step:6d} | validation target reached")

    def after_step(
        self, step: int, optimizer_state: Any, params: Any, model_state: Any, eval_results: list
    ) -> None:
        """Advance the bar; report resets the submission logged during the step."""
        del params, model_state, eval_results
        self.drain_records(optimizer_state)
        if self.bar is not None:
            self.bar.update(step - self.bar.n)

    # -- helpers

    def drain_records(self, optimizer_state: Any) -> None:
        """Handle metrics the submission logged since the last call."""
        new = self.recorder.records[self.records_seen :]
        self.records_seen = len(self.recorder.records)
        for step, metrics, is_eval in new:
            if is_eval:
                continue
            if "learning_rate" in metrics:
                self.logged_lr.append((step, float(metrics["learning_rate"])))
            reset = plots.reset_from_metrics(step, metrics)
            if reset is not None:
                self.on_reset(reset, optimizer_state, metrics)

    def on_reset(
        self, reset: plots.Reset, optimizer_state: Any, metrics: Mapping[str, Any]
    ) -> None:
        """Record, print and snapshot the plan after a reset."""
        failed = bool(metrics.get("reset/failed", 0.0))
        rule = int(metrics.get("reset/failure_rule", -1))
        failure = reset_lib.FAILURE_RULES[rule] if failed and rule >= 0 else None
        self.resets.append(reset)
        self.snapshots.append(snapshot_plan(self.submission, optimizer_state, reset.step))
        self.event(
            {
                "event": "reset",
                "step": reset.step,
                "cycle": reset.cycle,
                "tau": reset.tau,
                "metric": reset.metric,
                "early_switch": reset.early_switch,
                "reason": reset.reason,
                "non_finite": bool(metrics.get("reset/non_finite", 0.0)),
                "failed": failed,
                "failure": failure,
                "param_norm_ratio": metrics.get("reset/param_norm_ratio"),
                "boundaries": self.snapshots[-1].summary["boundaries"],
            }
        )
        self.say(
            f"step {reset.step:6d} | RESET -> cycle {reset.cycle} | "
            f"tau {reset.tau:.3f} ({reset.reason}) | "
            f"val {self.workload.target_metric_name} before {reset.metric:.4f}"
            + (f" | the cycle failed ({failure})" if failed else "")
        )

    def event(self, record: dict[str, Any]) -> None:
        """Append one JSON line to events.jsonl."""
        with open(self.out_dir / "events.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(_finite(record)) + "\n")

    def say(self, line: str) -> None:
        """Print a line without breaking the progress bar."""
        if self.bar is not None and not self.bar.disable:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def workload_title(self) -> str:
        """Workload name and seed for plot titles."""
        return f"{self.config['workload']} (seed {self.config['seed']})"

    def close(self) -> None:
        """Close the progress bar."""
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------- summary


@dataclasses.dataclass(frozen=True)
class CycleRow:
    """One line of the per-cycle summary."""

    index: int
    start: int
    end: int
    peak_lr: float
    best_metric: float
    tau_at_end: float | None
    switched_early: bool


def cycle_rows(
    snapshots: Sequence[PlanSnapshot],
    resets: Sequence[plots.Reset],
    evals: Sequence[tuple[int, Mapping[str, Any]]],
    metric_key: str,
    higher: bool,
    final_step: int,
) -> list[CycleRow]:
    """Cycles as they happened: start/end steps, peak lr, best metric, ending reset."""
    starts = [0] + [r.step for r in resets]
    ends = [r.step for r in resets] + [final_step]
    rows = []
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        plan = snapshots[min(i, len(snapshots) - 1)].summary
        peaks = plan["peak_learning_rates"]
        cycle_index = resets[i - 1].cycle if i > 0 else 0
        peak = peaks[cycle_index] if cycle_index < len(peaks) else float("nan")
        last = i == len(starts) - 1  # The final evaluation may come after the last step.
        values = [m[metric_key] for s, m in evals if start < s and (last or s <= end)]
        best = (max(values) if higher else min(values)) if values else float("nan")
        ending = resets[i] if i < len(resets) else None
        rows.append(
            CycleRow(
                index=cycle_index,
                start=start,
                end=end,
                peak_lr=peak,
                best_metric=best,
                tau_at_end=ending.tau if ending else None,
                switched_early=bool(ending and ending.early_switch),
            )
        )
    return rows


def format_cycle_table(rows: Sequence[CycleRow], metric_name: str) -> str:
    """Fixed-width text table of the cycles."""
    header = (
        f"{'cycle':>5} {'steps':>13} {'length':>6} {'peak lr':>10} "
        f"{'best ' + metric_name:>16} {'tau at end':>10} {'ended by':>12}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        tau = "-" if row.tau_at_end is None else f"{row.tau_at_end:.3f}"
        ended = (
            "training end"
            if row.tau_at_end is None
            else ("early switch" if row.switched_early else "plan")
        )
        lines.append(
            f"{row.index:>5} {f'{row.start}-{row.end}':>13} {row.end - row.start:>6} "
            f"{row.peak_lr:>10.3g} {row.best_metric:>16.4f} {tau:>10} {ended:>12}"
        )
    return "\n".join(lines)


def target_line(result: runner.RunResult, workload: Any) -> str:
    """When the validation target was reached, or that it was not."""
    op = ">" if metric_direction(workload) else "<"
    goal = f"validation {workload.target_metric_name} {op} {workload.validation_target_value:g}"
    if result.target_step is None:
        return (
            f"Target ({goal}) NOT reached in {result.global_step} steps "
            f"({result.train_state['accumulated_submission_time']:.1f} s; "
            f"stopped: {result.stop_reason})."
        )
    wall = next(m["total_duration"] for s, m in result.eval_results if s == result.target_step)
    return (
        f"Target ({goal}) reached at step {result.target_step}: "
        f"{result.target_submission_time:.1f} s submission time (score), "
        f"{wall:.1f} s wall clock including evaluations."
    )


# --------------------------------------------------------------------------- run


def batch_size_for(workload_name: str, override: int | None) -> tuple[int, str]:
    """``(batch size, where it came from)``."""
    if override is not None:
        return override, "--batch_size"
    return workloads.entry(workload_name).batch_size, "workload registry"


def run_seed(
    args: argparse.Namespace,
    submission: Any,
    overrides: dict[str, Any],
    resolved: dict[str, Any],
    seed: int,
    out_dir: Path,
) -> runner.RunResult:
    """Train one seed, writing its directory; return the runner's result."""
    options = workloads.tiny_overrides(args.workload) if args.tiny else {}
    workload = workloads.make_workload(args.workload, **options)
    batch_size, batch_source = batch_size_for(args.workload, args.batch_size)
    eval_every = (
        workload.eval_every_steps
        if args.eval_every_steps is None
        else (args.eval_every_steps or None)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "events.jsonl").write_text("", encoding="utf-8")
    config = {
        "workload": args.workload,
        "workload_options": _jsonable(list(options.items())),
        "workload_config": _jsonable(dataclasses.asdict(workload.config)),
        "seed": seed,
        "global_batch_size": batch_size,
        "batch_size_source": batch_source,
        "eval_every_steps": eval_every,
        "eval_period_time_sec": workload.eval_period_time_sec,
        "max_steps": args.max_steps,
        "max_runtime_sec": runner.runtime_budget(workload, args.max_runtime_sec, self_tuning=True),
        "stop_at_target": not args.run_past_target,
        "hyperparameter_overrides": overrides,
        "hyperparameters": resolved,
        "target": {
            "metric": f"validation/{workload.target_metric_name}",
            "value": workload.validation_target_value,
            "higher_is_better": metric_direction(workload),
        },
        "command": [sys.executable, "-m", "scripts.run", *sys.argv[1:]],
    }
    recorder = runner.MetricsRecorder()
    monitor = RunMonitor(
        submission,
        workload,
        out_dir,
        config,
        recorder,
        args.max_steps,
        show_progress=not args.no_progress,
    )
    print(
        f"== {args.workload} | seed {seed} | reset {resolved['reset_strategy']} | "
        f"early switching {resolved['early_switching']} | batch {batch_size} | "
        f"{jax.device_count()} x {jax.devices()[0].platform} | -> {out_dir}",
        flush=True,
    )
    try:
        result = runner.train_once(
            workload,
            submission,
            as_hyperparameters(overrides),
            seed,
            workload_name=args.workload,
            global_batch_size=batch_size,
            eval_every_steps=eval_every,
            max_global_steps=args.max_steps,
            max_runtime_sec=args.max_runtime_sec,
            metrics_logger=recorder,
            stop_at_target=not args.run_past_target,
            hooks=runner.RunnerHooks(
                before_training=monitor.before_training,
                after_eval=monitor.after_eval,
                after_step=monitor.after_step,
            ),
        )
    finally:
        monitor.close()
    monitor.drain_records(result.optimizer_state)
    finish_run(monitor, result, workload, out_dir)
    return result


def finish_run(
    monitor: RunMonitor,
    result: runner.RunResult,
    workload: Any,
    out_dir: Path,
) -> None:
    """Final files, plots and the console summary of one run."""
    rows = [metrics for _, metrics, _ in monitor.recorder.records]
    write_csv(out_dir / "measurements.csv", rows)
    write_csv(out_dir / "eval_measurements.csv", monitor.eval_rows)
    monitor.event(
        {
            "event": "end",
            "step": result.global_step,
            "reason": result.stop_reason,
            "target_step": result.target_step,
            "target_submission_time_sec": result.target_submission_time,
            "submission_time_sec": result.train_state["accumulated_submission_time"],
        }
    )
    draw_final_plots(monitor, result, workload, out_dir)
    higher = metric_direction(workload)
    table = cycle_rows(
        monitor.snapshots,
        monitor.resets,
        result.eval_results,
        monitor.metric_key,
        higher,
        # Steps trained: AlgoPerf's runner counts the step that ended the plan too.
        result.global_step - (result.stop_reason == "training_complete"),
    )
    print(format_cycle_table(table, workload.target_metric_name))
    print(target_line(result, workload))
    print(f"Run directory: {out_dir}", flush=True)


def draw_final_plots(
    monitor: RunMonitor,
    result: runner.RunResult,
    workload: Any,
    out_dir: Path,
) -> None:
    """The actual schedule and the validation curves, resets marked."""
    title = monitor.workload_title()
    steps, rates = actual_schedule(monitor.snapshots)
    first = monitor.snapshots[0]
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
    )
    evals = result.eval_results
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
    )
    if name != "loss":
        plots.plot_metric(
            out_dir / "validation_loss.png",
            eval_steps,
            [m["validation/loss"] for _, m in evals],
            ylabel="validation loss",
            title=f"{title}: validation loss",
            resets=monitor.resets,
        )


def print_seed_summary(seeds: Sequence[int], results: Sequence[Any]) -> None:
    """One line per seed: steps and time to target."""
    print("\nseed  target step  submission time (s)  steps  stopped")
    for seed, result in zip(seeds, results, strict=True):
        step = "-" if result.target_step is None else str(result.target_step)
        time_s = (
            "-" if result.target_submission_time is None else f"{result.target_submission_time:.1f}"
        )
        print(f"{seed:>4}  {step:>11}  {time_s:>19}  {result.global_step:>5}  {result.stop_reason}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for invalid options)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        overrides, resolved = validate_options(args, submission)
        dirs = run_directories(args, resolved["reset_strategy"])
    except ValueError as error:
        parser.error(str(error))
    for note in per_cycle_notes(overrides, resolved):
        print(note, flush=True)
    results = [
        run_seed(args, submission, overrides, resolved, seed, out_dir)
        for seed, out_dir in zip(args.seed, dirs, strict=True)
    ]
    if len(results) > 1:
        print_seed_summary(args.seed, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
