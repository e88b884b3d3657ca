"""What the main job shows and keeps while a run trains: the progress bar, a line per
evaluation and per reset, events.jsonl, the plan's snapshots, Ctrl-C as a request to stop,
and the monitor's own state beside each checkpoint (for ``--resume``)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cyclic_soft_reset import reset as reset_lib
from cyclic_soft_reset.records import RefitRecord, ResetRecord
from scripts.local import plots, runner
from scripts.main_job.files import json_safe, write_csv, write_json

INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for Ctrl-C.
MONITOR_FILE = "checkpoint_monitor.json"  # What the console and plots had at that step.


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


def refitted(snapshot: PlanSnapshot, submission: Any, optimizer_state: Any, step: int):
    """``snapshot`` after the plan was re-fitted at ``step``: its learning rates before
    ``step`` as they ran, the re-fitted plan's from ``step`` on (a re-fit may move the
    current cycle's end: the first cycle fitted to slower hardware)."""
    new = snapshot_plan(submission, optimizer_state, step)
    before = snapshot.steps < step
    steps = np.concatenate([snapshot.steps[before], new.steps])
    rates = np.concatenate([snapshot.rates[before], new.rates])
    return PlanSnapshot(snapshot.from_step, new.summary, steps, rates)


def cooled(snapshot: PlanSnapshot, step: int, end: int) -> PlanSnapshot:
    """``snapshot`` with its cycle cooling down from ``step`` (``schedules.budget.cooldown``:
    the device's window moved, the plan did not): eta(step) x (end - t) / (end - step) from
    ``step`` on, 0 from ``end``."""
    at = snapshot.steps >= step
    if not at.any():
        return snapshot
    rates = snapshot.rates.copy()
    fall = np.clip((end - snapshot.steps[at]) / max(end - step, 1), 0.0, 1.0)
    rates[at] = rates[np.argmax(at)] * fall
    return dataclasses.replace(snapshot, rates=rates)


def _snapshot_json(snap: PlanSnapshot) -> dict[str, Any]:
    return {
        "from_step": snap.from_step,
        "summary": snap.summary,
        "steps": snap.steps.tolist(),
        "rates": snap.rates.tolist(),
    }


def _snapshot_of(state: Mapping[str, Any]) -> PlanSnapshot:
    steps, rates = np.asarray(state["steps"], int), np.asarray(state["rates"], float)
    return PlanSnapshot(state["from_step"], state["summary"], steps, rates)


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
        strategy = config["hyperparameters"].get("reset_strategy")  # None: not ours.
        self.show_tau = strategy is not None and reset_lib.make_strategy(strategy).uses_tau
        # A submission that says its plan (ours): plan snapshots and figures; any other
        # AlgoPerf submission: evaluations only.
        self.has_plan = all(
            hasattr(submission, name) for name in ("plan_summary", "learning_rates")
        )
        self.snapshots: list[PlanSnapshot] = []
        self.first_plan: PlanSnapshot | None = None  # Before re-fits: the figure's dotted line.
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
            "snapshots": [_snapshot_json(snap) for snap in self.snapshots],
            "first_plan": _snapshot_json(self.first_plan) if self.first_plan else None,
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
        self.snapshots = [_snapshot_of(snap) for snap in state["snapshots"]]
        first = state.get("first_plan")
        self.first_plan = _snapshot_of(first) if first else None
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
        if self.has_plan and not self.snapshots:
            first = self.first_plan = snapshot_plan(self.submission, optimizer_state, 0)
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
        if not self.has_plan:
            write_json(self.out_dir / "config.json", self.config)
        total = self.snapshots[0].summary["planned_total_steps"] if self.snapshots else None
        if self.max_steps is not None:
            total = self.max_steps if total is None else min(total, self.max_steps)
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
        cycle = self.snapshots[-1].summary.get("cycle", 0) if self.snapshots else None
        self.say(
            f"step {step:6d} | "
            + ("" if cycle is None else f"cycle {cycle} | ")
            + f"val {self.workload.target_metric_name} {result[self.metric_key]:.4f} | "
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
                self.on_refit(refit, optimizer_state)
            record = ResetRecord.from_metrics(step, metrics)
            if record is not None:
                self.on_reset(record, optimizer_state)

    def on_refit(self, refit: RefitRecord, optimizer_state: Any) -> None:
        """The plan re-fitted to the time budget: an event, the plan's snapshot and the
        bar's new total."""
        if self.snapshots:
            last = refitted(self.snapshots[-1], self.submission, optimizer_state, refit.step)
            if 0 <= refit.window_end < last.summary["boundaries"][1]:  # A cooldown.
                last = cooled(last, refit.step, refit.window_end)
            self.snapshots[-1] = last
        self.event(
            {
                "event": "plan_refit",
                "step": refit.step,
                "seconds_per_step": refit.seconds_per_step,
                "budget_spent": refit.budget_spent,
                "end": refit.end,
                "window_end": refit.window_end,
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
                "peak_factor": record.peak_factor,
                "growth": record.growth,
                "boundaries": self.snapshots[-1].summary["boundaries"],
            }
        )
        tau = f"tau {reset.tau:.3f} " if self.show_tau else ""
        raised = record.raise_words()  # METHOD.md section 4: a slow cycle 3x, a still first 10x.
        self.say(
            f"step {reset.step:6d} | RESET -> cycle {reset.cycle} | "
            f"{tau}({reset.reason}) | "
            f"val {self.workload.target_metric_name} before {reset.metric:.4f}"
            + (f" | the cycle failed ({failure})" if failed else "")
            + (f" | {raised}" if raised else "")
        )

    def event(self, record: dict[str, Any]) -> None:
        """Append one JSON line to events.jsonl (and keep it for ``state_dict``)."""
        self.events.append(record)
        with open(self.out_dir / "events.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(json_safe(record)) + "\n")

    def say(self, line: str) -> None:
        """Print a line without breaking the progress bar."""
        if self.bar is not None and not self.bar.disable:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def workload_title(self) -> str:
        """Workload, reset strategy and seed for plot titles."""
        strategy = self.config["hyperparameters"].get("reset_strategy")
        method = f"{strategy} reset" if strategy else self.config.get("submission", "")
        return f"{self.config['workload']}, {method} (seed {self.config['seed']})"

    def close(self) -> None:
        """Close the progress bar."""
        if self.bar is not None:
            self.bar.close()
