"""What the main job says at a run's end: the per-cycle table, the target line, what
happened to the time budget, and one line per run of a group."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cyclic_soft_reset.algoperf_compat import metric_direction
from scripts.local import plots, runner
from scripts.main_job.files import read_events
from scripts.main_job.monitor import PlanSnapshot


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
        return lines + [
            "Plan not re-fitted (once the step time is known, a re-fit moves the cycles not "
            "yet started, and the first cycle only on hardware too slow for it, where its end "
            "cools down before the budget: a plan of one cycle keeps its step_hint steps here)."
        ]
    first, last = refits[0], refits[-1]
    moved = [e for e in refits if e.get("window_end", -1) >= 0]
    window = (
        f" At step {moved[-1]['step']} the first cycle's window moved (too slow hardware): "
        f"its rate reaches 0 at step {moved[-1]['window_end']}."
        if moved
        else ""
    )
    return lines + [
        f"Plan re-fitted to the budget {_times(len(refits))}: first at step {first['step']} "
        f"({first['seconds_per_step']:.3g} s/step, ends at step {first['end']}), last at step "
        f"{last['step']} ({last['seconds_per_step']:.3g} s/step, {last['budget_spent']:.0%} "
        f"spent, ends at step {last['end']})." + window
    ]


def print_run_summary(
    labels: Sequence[str], results: Sequence[runner.RunResult], dirs: Sequence[Path]
) -> None:
    """One line per run: steps and submission time to the target (from its events)."""
    width = max(16, *map(len, labels))
    print(f"\n{'run':<{width}} target step  submission time (s)  steps  stopped")
    for label, result, out_dir in zip(labels, results, dirs, strict=True):
        reached = target_event(read_events(out_dir))
        step = "-" if reached is None else str(reached["step"])
        time_s = "-" if reached is None else f"{reached['submission_time_sec']:.1f}"
        row = f"{step:>11}  {time_s:>19}  {result.global_step:>5}  {result.stop_reason}"
        print(f"{label:<{width}} {row}")


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"
