"""Train an embedded workload with the submission: ``python -m scripts.run``.

Without arguments: the default workload, seed 0, three reset strategies one after the
other (soft, the submission's default, against none and full) and one figure of the
three with their resets (``compare.png``, ``scripts/compare.py``). Each run shows a
progress bar, one line per evaluation and per reset, and a per-cycle summary; it writes
a run directory with ``eval_measurements.csv`` / ``measurements.csv`` (AlgoPerf's
columns), ``events.jsonl``, ``config.json``, PNG plots and a checkpoint at every
evaluation. Ctrl-C stops after the current step with the summary so far (exit status
130); ``--resume RUN_DIR`` continues such a run bit for bit.

Examples::

    python -m scripts.run --workload breast_cancer --reset_strategy full
    python -m scripts.run --seed 0 1 2 --set num_cycles=4 --set early_switching=false
    python -m scripts.run --hparams_file hp.json --max_steps 300 --eval_every_steps 20
    python -m scripts.run --resume runs/digit_sums-soft-seed0-20260101-120000
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import csv
import dataclasses
import datetime
import json
import math
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

import hyperparameters
import reset as reset_lib
import submission
from algoperf_compat import metric_direction, parse_eval_results
from controller import RefitRecord, ResetRecord
from scripts import compare
from scripts.local import plots, runner, workloads

RESET_STRATEGIES = tuple(reset_lib.STRATEGIES)
# What the main job runs by default: soft against keeping everything and starting over.
STORY_STRATEGIES = ("soft", "none", "full")
CHECKPOINT_FILE = "checkpoint.msgpack"  # The local runner's (AlgoPerf's contents).
MONITOR_FILE = "checkpoint_monitor.json"  # What the console and plots had at that step.
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for Ctrl-C.
TIME_BASED_CHECKPOINT_STEPS = 100  # Checkpoint period when evaluations are time-based.
# Options a resumed run takes from its config.json (never from the command line).
RUN_OPTIONS = (
    "workload",
    "tiny",
    "max_steps",
    "max_runtime_sec",
    "eval_every_steps",
    "clock",
    "speed",
    "batch_size",
    "run_past_target",
    "checkpoint_every_steps",
)


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
        nargs="+",
        default=None,
        help="one or more reset strategies, each run in turn (default: "
        f"{' '.join(STORY_STRATEGIES)}, drawn together in compare.png; soft is the "
        "submission's)",
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
        help="evaluate every N steps (default: every eval_period_time_sec seconds of the "
        "clock, as AlgoPerf does)",
    )
    parser.add_argument(
        "--clock",
        choices=("reference", "wall"),
        default="reference",
        help="reference: simulated time of the hardware the workload's budget was set for "
        "(deterministic, fast or slow with --speed); wall: this machine's real time "
        "(default: reference)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="with --clock reference: the simulated hardware's speed, 2 = twice as fast "
        "(default: 1)",
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
    parser.add_argument(
        "--checkpoint_every_steps",
        type=int,
        default=None,
        help="save a checkpoint in the run folder every N steps (default: at every "
        f"evaluation; every {TIME_BASED_CHECKPOINT_STEPS} steps with time-based evaluations)",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue the interrupted run in RUN_DIR (or every unfinished run below it) "
        "from its last checkpoint, with the configuration in its config.json",
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
    """Hyperparameter overrides: file, then ``--set`` (the strategies: ``strategies_to_run``)."""
    overrides: dict[str, Any] = {}
    if args.hparams_file:
        overrides.update(load_hparams_file(args.hparams_file, valid_names))
    overrides.update(parse_set_items(args.set_items, valid_names))
    return overrides


def strategies_to_run(args: argparse.Namespace, overrides: Mapping[str, Any]) -> list[str]:
    """``--reset_strategy`` (duplicates dropped), else a ``reset_strategy`` from the file or
    ``--set``, else the story: soft against none and full."""
    if args.reset_strategy:
        return list(dict.fromkeys(args.reset_strategy))
    if "reset_strategy" in overrides:
        return [overrides["reset_strategy"]]
    return list(STORY_STRATEGIES)


def strategy_overrides(overrides: Mapping[str, Any], strategy: str) -> dict[str, Any]:
    """``overrides`` with ``reset_strategy`` set to ``strategy``, left out where that is the
    submission's default: a run without other overrides then gets
    ``hyperparameters=None``, exactly as under the self-tuning ruleset."""
    result = {key: value for key, value in overrides.items() if key != "reset_strategy"}
    if strategy != hyperparameters.DEFAULTS["reset_strategy"]:
        result["reset_strategy"] = strategy
    return result


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
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(strategy, overrides, resolved config)`` per strategy to run; ValueError with the
    valid values if an option is invalid."""
    for name in ("max_steps", "batch_size", "checkpoint_every_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be an integer >= 1, got {value}.")
    if args.eval_every_steps is not None and args.eval_every_steps < 1:
        raise ValueError(
            f"--eval_every_steps must be an integer >= 1 (leave it out for evaluations "
            f"every eval_period_time_sec seconds), got {args.eval_every_steps}."
        )
    if not (math.isfinite(args.speed) and args.speed > 0):
        raise ValueError(f"--speed must be a number > 0, got {args.speed}.")
    if args.speed != 1.0 and args.clock != "reference":
        raise ValueError("--speed needs --clock reference (the wall clock runs at its own).")
    if args.max_runtime_sec is not None and not args.max_runtime_sec > 0:
        raise ValueError(f"--max_runtime_sec must be > 0, got {args.max_runtime_sec}.")
    base = collect_overrides(args, list(hyperparameters.NAMES))
    runs = []
    for strategy in strategies_to_run(args, base):
        overrides = strategy_overrides(base, strategy)
        runs.append((strategy, overrides, resolve(overrides)))
    return runs


def resolve(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The submission's configuration for these overrides, as JSON values."""
    return hyperparameters.to_json(hyperparameters.resolve(as_hyperparameters(overrides)))


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


def unique_dir(base: Path) -> Path:
    """``base``, or ``base-1``, ``base-2``, ... the first that does not exist."""
    candidate, n = base, 1
    while candidate.exists():
        candidate, n = Path(f"{base}-{n}"), n + 1
    return candidate


def run_name(strategy: str, seed: int, strategies: Sequence[str], seeds: Sequence[int]) -> str:
    """A run's folder inside its group: ``<strategy>``, ``seed<seed>`` or both, as needed."""
    if len(strategies) == 1:
        return f"seed{seed}"
    return strategy if len(seeds) == 1 else f"{strategy}-seed{seed}"


def run_directories(
    args: argparse.Namespace, strategies: Sequence[str]
) -> tuple[Path | None, list[Path]]:
    """``(group folder, one folder per (strategy, seed), strategy-major)``; the group is
    None for a single run. Defaults: ``runs/<workload>-<strategy>-seed<seed>-<time>`` for
    one run, ``runs/<workload>-<time>/`` for several."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    single = len(strategies) == 1 and len(args.seed) == 1
    if args.output_dir is None:
        if single:
            name = f"{args.workload}-{strategies[0]}-seed{args.seed[0]}-{stamp}"
            return None, [unique_dir(Path("runs") / name)]
        root = unique_dir(Path("runs") / f"{args.workload}-{stamp}")
    else:
        root = Path(args.output_dir)
    if single:
        group, dirs = None, [root]
    else:
        group = root
        dirs = [
            root / run_name(strategy, seed, strategies, args.seed)
            for strategy in strategies
            for seed in args.seed
        ]
    taken = [d for d in dirs if d.is_dir() and any(d.iterdir())]
    if taken and not args.overwrite:
        raise ValueError(
            f"--output_dir: {', '.join(map(str, taken))} already holds a run; pass --overwrite "
            "to replace it, or choose another directory."
        )
    for d in taken:
        shutil.rmtree(d)
    return group, dirs


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


class Interrupt:
    """Ctrl-C as a request: the first SIGINT asks the run to stop after its current step
    (``requested``; the runner's ``after_step`` hook ends the run, so no JAX computation
    is cut off), a second one aborts at once (``KeyboardInterrupt``). Installed only while
    ``watching()`` and only in the main thread (signals are delivered there)."""

    def __init__(self) -> None:
        self.requested = False

    def _handle(self, signum: int, frame: Any) -> None:
        del signum, frame
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nCtrl-C: stopping after this step (press again to abort at once).",
            file=sys.stderr,
            flush=True,
        )

    @contextlib.contextmanager
    def watching(self) -> Iterator[Interrupt]:
        """Handle SIGINT as above inside the block; the previous handler after it."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


class RunMonitor:
    """Progress bar, console lines, incremental files and plots of one run.

    At each checkpoint step it writes its own state (``MONITOR_FILE``: the plans, resets,
    evaluation rows, logged metrics and events so far) next to the runner's checkpoint,
    so that a resumed run reports and draws the whole run (``restore``).
    """

    def __init__(
        self,
        submission: Any,
        workload: Any,
        out_dir: Path,
        config: dict[str, Any],
        recorder: runner.MetricsRecorder,
        max_steps: int | None,
        show_progress: bool,
        checkpoint_every: int | None = None,
        interrupt: Interrupt | None = None,
    ) -> None:
        self.submission = submission
        self.workload = workload
        self.out_dir = out_dir
        self.config = config
        self.recorder = recorder
        self.max_steps = max_steps
        self.show_progress = show_progress
        self.checkpoint_every = checkpoint_every
        self.interrupt = interrupt
        self.metric_key = f"validation/{workload.target_metric_name}"
        self.show_tau = reset_lib.make_strategy(
            config["hyperparameters"]["reset_strategy"]
        ).uses_tau
        self.snapshots: list[PlanSnapshot] = []
        self.resets: list[plots.Reset] = []
        self.logged_lr: list[tuple[int, float]] = []
        self.eval_rows: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.records_seen = 0
        self.preemption_count = 0
        self.start_step = 0
        self.bar: Any = None
        self.target_announced = False

    # -- state for a resume

    def state_dict(self, step: int) -> dict[str, Any]:
        """Everything the monitor holds after ``step`` steps, as JSON values."""
        return {
            "step": step,
            "preemption_count": self.preemption_count,
            "snapshots": [
                {
                    "from_step": snap.from_step,
                    "summary": snap.summary,
                    "steps": snap.steps.tolist(),
                    "rates": snap.rates.tolist(),
                }
                for snap in self.snapshots
            ],
            "resets": [dataclasses.asdict(r) for r in self.resets],
            "logged_lr": self.logged_lr,
            "eval_rows": self.eval_rows,
            "records": self.recorder.records,
            "events": self.events,
            "target_announced": self.target_announced,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back ``state_dict``'s contents (a resumed run); rewrite events.jsonl to
        the events up to the checkpoint and add a ``resumed`` event."""
        self.snapshots = [
            PlanSnapshot(
                snap["from_step"],
                snap["summary"],
                np.asarray(snap["steps"], int),
                np.asarray(snap["rates"], float),
            )
            for snap in state["snapshots"]
        ]
        self.resets = [plots.Reset(**r) for r in state["resets"]]
        self.logged_lr = [tuple(pair) for pair in state["logged_lr"]]
        self.eval_rows = list(state["eval_rows"])
        self.recorder.records = [(s, m, e) for s, m, e in state["records"]]
        self.records_seen = len(self.recorder.records)
        self.target_announced = bool(state["target_announced"])
        self.preemption_count = int(state["preemption_count"]) + 1
        self.start_step = int(state["step"])
        (self.out_dir / "events.jsonl").write_text("", encoding="utf-8")
        self.events = []
        for record in state["events"]:
            self.event(record)
        self.event(
            {"event": "resumed", "step": self.start_step, "preemption_count": self.preemption_count}
        )

    def save_state(self, step: int) -> None:
        """Write ``state_dict(step)`` atomically beside the runner's checkpoint."""
        path = self.out_dir / MONITOR_FILE
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(self.state_dict(step)), encoding="utf-8")
        os.replace(partial, path)

    # -- hooks

    def before_training(self, optimizer_state: Any) -> None:
        """Snapshot the plan, write config.json, draw the planned schedule (a resumed
        run has them already); start the progress bar."""
        if not self.snapshots:
            first = snapshot_plan(self.submission, optimizer_state, 0)
            self.snapshots.append(first)
            self.config["initial_plan"] = first.summary
            write_json(self.out_dir / "config.json", self.config)
            plots.plot_learning_rate(
                self.out_dir / "lr_schedule_planned.png",
                first.steps,
                first.rates,
                first.summary["boundaries"],
                title=f"{self.workload_title()}: the first plan, in steps\n"
                "(re-fitted to the time budget as the run goes)",
            )
        first = self.snapshots[0]
        total = first.summary["planned_total_steps"]
        if self.max_steps is not None:
            total = min(total, self.max_steps)
        self.bar = tqdm(
            initial=self.start_step,
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
        self.eval_rows.append(
            {**result, "global_step": step, "preemption_count": self.preemption_count}
        )
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
    ) -> bool:
        """Advance the bar; report resets the submission logged during the step; save the
        monitor's state where the runner saved a checkpoint. True (stop) after Ctrl-C."""
        del params, model_state, eval_results
        self.drain_records(optimizer_state)
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
        if self.checkpoint_every is not None and step % self.checkpoint_every == 0:
            self.save_state(step)
        return self.interrupt is not None and self.interrupt.requested

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
            refit = RefitRecord.from_metrics(step, metrics)
            if refit is not None:
                self.on_refit(refit)
            record = ResetRecord.from_metrics(step, metrics)
            if record is not None:
                self.on_reset(record, optimizer_state)

    def on_refit(self, refit: RefitRecord) -> None:
        """The plan re-fitted to the time budget: an event, and the bar's new total."""
        self.event(
            {
                "event": "plan_refit",
                "step": refit.step,
                "seconds_per_step": refit.seconds_per_step,
                "budget_spent": refit.budget_spent,
                "end": refit.end,
            }
        )
        if self.bar is not None:
            end = refit.end
            self.bar.total = end if self.max_steps is None else min(end, self.max_steps)
            self.bar.refresh()

    def on_reset(self, record: ResetRecord, optimizer_state: Any) -> None:
        """Record, print and snapshot the plan after a reset."""
        reset = plots.Reset.of(record)
        failed, failure = record.failed, record.failure_rule
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
                "non_finite": record.non_finite,
                "failed": failed,
                "failure": failure,
                "param_norm_ratio": record.param_norm_ratio,
                "boundaries": self.snapshots[-1].summary["boundaries"],
            }
        )
        tau = f"tau {reset.tau:.3f} " if self.show_tau else ""
        self.say(
            f"step {reset.step:6d} | RESET -> cycle {reset.cycle} | "
            f"{tau}({reset.reason}) | "
            f"val {self.workload.target_metric_name} before {reset.metric:.4f}"
            + (f" | the cycle failed ({failure})" if failed else "")
        )

    def event(self, record: dict[str, Any]) -> None:
        """Append one JSON line to events.jsonl (and keep it for ``state_dict``)."""
        self.events.append(record)
        with open(self.out_dir / "events.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(_finite(record)) + "\n")

    def say(self, line: str) -> None:
        """Print a line without breaking the progress bar."""
        if self.bar is not None and not self.bar.disable:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def workload_title(self) -> str:
        """Workload, reset strategy and seed for plot titles."""
        strategy = self.config["hyperparameters"]["reset_strategy"]
        return f"{self.config['workload']}, {strategy} reset (seed {self.config['seed']})"

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


def target_event(events: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The run's ``target_reached`` event, or None (kept across a resume, unlike the
    runner's ``target_step``, which counts from the restored step)."""
    return next((e for e in events if e.get("event") == "target_reached"), None)


def target_line(
    result: runner.RunResult,
    workload: Any,
    reached: Mapping[str, Any] | None,
    clock: str = "wall",
) -> str:
    """When the validation target was reached (``reached``: the ``target_reached``
    event), or that it was not; times on ``clock`` ("reference": simulated)."""
    op = ">" if metric_direction(workload) else "<"
    goal = f"validation {workload.target_metric_name} {op} {workload.validation_target_value:g}"
    if reached is None:
        return (
            f"Target ({goal}) NOT reached in {result.global_step} steps "
            f"({result.train_state['accumulated_submission_time']:.1f} s; "
            f"stopped: {result.stop_reason})."
        )
    return (
        f"Target ({goal}) reached at step {reached['step']}: "
        f"{reached['submission_time_sec']:.1f} s submission time (score), "
        f"{reached['total_duration_sec']:.1f} s in all including evaluations"
        + (" (simulated reference clock)." if clock == "reference" else " (wall clock).")
    )


# --------------------------------------------------------------------------- run


def batch_size_for(workload_name: str, override: int | None) -> tuple[int, str]:
    """``(batch size, where it came from)``."""
    if override is not None:
        return override, "--batch_size"
    return workloads.entry(workload_name).batch_size, "workload registry"


def checkpoint_period(requested: int | None, eval_every: int | None) -> int:
    """Steps between checkpoints: ``requested``, else every evaluation, else (time-based
    evaluations) ``TIME_BASED_CHECKPOINT_STEPS``."""
    if requested is not None:
        return requested
    return eval_every if eval_every is not None else TIME_BASED_CHECKPOINT_STEPS


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
        "checkpoint_every_steps": checkpoint_period(args.checkpoint_every_steps, eval_every),
        "options": {name: getattr(args, name) for name in RUN_OPTIONS},
        "hyperparameter_overrides": dict(overrides),
        "hyperparameters": dict(resolved),
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


def budget_lines(
    events: Sequence[Mapping[str, Any]], budget: float, spent: float, reason: str
) -> list[str]:
    """What happened to the time budget: the share used, and the plan's re-fits (the
    ``plan_refit`` events: when, from which step time, where the plan then ended)."""
    refits = [e for e in events if e.get("event") == "plan_refit"]
    lines = [
        f"Time budget: {spent:.2f} s of {budget:.2f} s submission time used "
        f"({spent / budget:.0%}); stopped: {reason}."
        + (" (The runner checks the budget at evaluations only.)" if spent > budget else "")
    ]
    if not refits:
        return lines + ["Plan not re-fitted (no evaluation with a known step time)."]
    first, last = refits[0], refits[-1]
    return lines + [
        f"Plan re-fitted to the budget {len(refits)} times: first at step {first['step']} "
        f"({first['seconds_per_step']:.3g} s/step, ends at step {first['end']}), last at step "
        f"{last['step']} ({last['seconds_per_step']:.3g} s/step, {last['budget_spent']:.0%} "
        f"spent, ends at step {last['end']})."
    ]


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
    print(
        f"== {args.workload} | seed {seed} | reset {resolved['reset_strategy']} | "
        f"early switching {resolved['early_switching']} | batch {batch_size} | "
        f"{jax.device_count()} x {jax.devices()[0].platform} | -> {out_dir}"
        + ("" if resume is None else f" | resumed at step {monitor.start_step}"),
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
    higher = metric_direction(workload)
    table = cycle_rows(
        monitor.snapshots,
        monitor.resets,
        evals,
        monitor.metric_key,
        higher,
        # Steps trained: AlgoPerf's runner counts the step that ended the plan too.
        result.global_step - (result.stop_reason == "training_complete"),
    )
    print(format_cycle_table(table, workload.target_metric_name))
    print(target_line(result, workload, reached, monitor.config["options"].get("clock", "wall")))
    budget = monitor.config["max_runtime_sec"]
    spent = result.train_state["accumulated_submission_time"]
    print("\n".join(budget_lines(monitor.events, budget, spent, result.stop_reason)))
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


def print_run_summary(
    labels: Sequence[str], results: Sequence[runner.RunResult], dirs: Sequence[Path]
) -> None:
    """One line per run: steps and submission time to the target (from its events)."""
    print("\nrun              target step  submission time (s)  steps  stopped")
    for label, result, out_dir in zip(labels, results, dirs, strict=True):
        reached = target_event(read_events(out_dir))
        step = "-" if reached is None else str(reached["step"])
        time_s = "-" if reached is None else f"{reached['submission_time_sec']:.1f}"
        print(
            f"{label:<16} {step:>11}  {time_s:>19}  {result.global_step:>5}  {result.stop_reason}"
        )


def read_events(out_dir: Path) -> list[dict[str, Any]]:
    """The records of a run's events.jsonl (none if it has no such file)."""
    path = Path(out_dir) / "events.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


# --------------------------------------------------------------------------- resume


def explicit_options(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> dict[str, str]:
    """The options written on the command line, as ``--name`` or ``--name=value``:
    ``{dest: option string}``."""
    words = list(sys.argv[1:] if argv is None else argv)
    given = {}
    for action in parser._actions:
        for option in action.option_strings:
            if any(w == option or w.startswith(option + "=") for w in words):
                given[action.dest] = option
    return given


def runs_to_resume(path: Path) -> list[Path]:
    """The run folders to continue: ``path`` itself if it holds config.json, else every
    folder below it that does, unfinished ones only; ValueError when there is none or a
    run has no checkpoint."""
    if not path.is_dir():
        raise ValueError(f"--resume: {path} is not a directory.")
    found = (
        [path]
        if (path / "config.json").is_file()
        else sorted(p.parent for p in path.rglob("config.json"))
    )
    if not found:
        raise ValueError(f"--resume: {path} holds no run (no config.json).")
    unfinished = [run for run in found if finished_reason(run) is None]
    if not unfinished:
        reasons = ", ".join(f"{run.name}: {finished_reason(run)}" for run in found)
        raise ValueError(f"--resume: nothing to continue in {path}, every run ended ({reasons}).")
    missing = [str(run) for run in unfinished if not (run / MONITOR_FILE).is_file()]
    if missing:
        raise ValueError(
            f"--resume: no checkpoint in {', '.join(missing)} (the run stopped before its "
            "first checkpoint): start it again instead."
        )
    return unfinished


def finished_reason(run_dir: Path) -> str | None:
    """Why the run in ``run_dir`` ended, or None if it can be continued (interrupted,
    or killed before writing its end)."""
    ends = [e for e in read_events(run_dir) if e.get("event") == "end"]
    if not ends or ends[-1].get("reason") == "interrupted":
        return None
    return str(ends[-1].get("reason"))


def resumed_args(
    config: Mapping[str, Any], given: argparse.Namespace, explicit: Mapping[str, str]
) -> argparse.Namespace:
    """The run's own options from config.json; ValueError naming any option given on the
    command line that differs from them (a resumed run keeps its configuration)."""
    saved = dict(config["options"])
    ignored = {"resume", "no_progress"}
    for name in sorted(set(explicit) - ignored):
        want = getattr(given, name)
        if name in saved and want == saved[name]:
            continue
        if name == "seed" and want == [config["seed"]]:
            continue
        if name in {"reset_strategy", "set_items", "hparams_file"}:
            overrides = collect_overrides(given, list(hyperparameters.NAMES))
            strategies = strategies_to_run(given, overrides)
            if (
                strategies == [config["hyperparameters"]["reset_strategy"]]
                and resolve(strategy_overrides(overrides, strategies[0]))
                == config["hyperparameters"]
            ):
                continue
        shown = "" if name in saved or name == "seed" else " (not an option of a resumed run)"
        raise ValueError(
            f"--resume: {explicit[name]} {want!r} differs from the run's configuration{shown}; "
            f"the run continues with its config.json ({name}: "
            f"{saved.get(name, config.get(name))!r}). Leave the option out."
        )
    return argparse.Namespace(
        **saved,
        seed=[config["seed"]],
        no_progress=given.no_progress,
        output_dir=None,
        overwrite=False,
        reset_strategy=None,
        set_items=[],
        hparams_file=None,
        resume=None,
    )


def resume_main(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] | None
) -> int:
    """``--resume RUN_DIR``: continue each unfinished run there from its checkpoint."""
    explicit = explicit_options(parser, argv)
    try:
        dirs = runs_to_resume(Path(args.resume))
        plans = []
        for out_dir in dirs:
            config = json.loads((out_dir / "config.json").read_text(encoding="utf-8"))
            run_args = resumed_args(config, args, explicit)
            overrides = dict(config["hyperparameter_overrides"])
            if resolve(overrides) != config["hyperparameters"]:
                raise ValueError(
                    f"--resume: {out_dir}/config.json's hyperparameters no longer resolve to "
                    "the same configuration (the submission's defaults changed)."
                )
            state = json.loads((out_dir / MONITOR_FILE).read_text(encoding="utf-8"))
            plans.append((out_dir, config, run_args, overrides, state))
    except (ValueError, KeyError, json.JSONDecodeError) as error:
        parser.error(str(error))
    interrupt = Interrupt()
    with interrupt.watching():
        for out_dir, config, run_args, overrides, state in plans:
            run_one(
                run_args,
                submission,
                overrides,
                config["hyperparameters"],
                config["seed"],
                out_dir,
                interrupt,
                resume=state,
            )
            if interrupt.requested:
                return INTERRUPTED_EXIT_CODE
    root = Path(args.resume)
    if not (root / "config.json").is_file():
        compare.main([str(root), "--out", str(root)])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for invalid options, 130 after Ctrl-C)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume is not None:
        return resume_main(parser, args, argv)
    try:
        runs = validate_options(args, submission)
        group, dirs = run_directories(args, [strategy for strategy, _, _ in runs])
    except ValueError as error:
        parser.error(str(error))
    notes = {
        note for _, overrides, resolved in runs for note in per_cycle_notes(overrides, resolved)
    }
    for note in sorted(notes):
        print(note, flush=True)
    jobs = [(run, seed) for run in runs for seed in args.seed]
    interrupt = Interrupt()
    results, labels = [], []
    with interrupt.watching():
        for ((strategy, overrides, resolved), seed), out_dir in zip(jobs, dirs, strict=True):
            results.append(run_one(args, submission, overrides, resolved, seed, out_dir, interrupt))
            labels.append(f"{strategy} seed {seed}")
            if interrupt.requested:
                break
    if len(results) > 1:
        print_run_summary(labels, results, dirs[: len(results)])
    if group is not None:
        compare.main([*map(str, dirs[: len(results)]), "--out", str(group)])
    return INTERRUPTED_EXIT_CODE if interrupt.requested else 0


if __name__ == "__main__":
    sys.exit(main())
