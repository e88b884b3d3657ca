"""SLURM's side of a study: `sbatch` the array script, read each task's state from `squeue`
and from what the array script wrote (state/task_<T>.events, the runner's experiment
folder), and resubmit the tasks that failed or never ran.

A task's state, one of STATES:
* `pending` / `running`: squeue lists it so (after a preemption: `requeued`);
* `requeued`: squeue lists it pending or running, and it had an earlier attempt;
* `done`: its last attempt ended with status 0 and the runner wrote eval_measurements.csv;
* `failed`: its last attempt ended with another status, or was killed (a start with no
  end) and SLURM no longer lists it;
* `missing`: it never started and SLURM does not list it (never submitted, or cancelled).
squeue alone forgets finished tasks after MinJobAge (and sacct needs SLURM's accounting
database, which many clusters and our single-node SLURM lack), so the events decide.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from scripts.study.plan import Job, Study

STATES = ("pending", "running", "requeued", "done", "failed", "missing")
SLURM_TIMEOUT = 60  # seconds for any one SLURM command


class SlurmError(RuntimeError):
    """A SLURM command failed or is missing; the message says which and why."""


@dataclass(frozen=True)
class TaskEvent:
    """One line of state/task_<T>.events: an attempt's start, end or SIGTERM."""

    time: int
    attempt: int
    kind: str  # start | end | term
    value: int  # start: the array job id; end/term: the exit status


@dataclass(frozen=True)
class QueueEntry:
    """One array task as squeue lists it."""

    job_id: str
    task: int
    state: str  # squeue's %T: PENDING, RUNNING, REQUEUED, COMPLETING, ...


@dataclass(frozen=True)
class TaskStatus:
    """A task's state and what it is based on."""

    job: Job
    state: str
    attempts: int
    detail: str


def run_slurm(args: Sequence[str]) -> str:
    """A SLURM command's stdout; SlurmError (not a hang) if missing, failing or slow."""
    try:
        proc = subprocess.run(
            list(args), capture_output=True, text=True, timeout=SLURM_TIMEOUT, check=False
        )
    except FileNotFoundError:
        raise SlurmError(
            f"{args[0]}: not found. Run this on a SLURM login node, or start a single-node "
            "SLURM here: scripts/study/single_node_slurm.sh run -- <command>"
        ) from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{' '.join(args)}: no answer in {SLURM_TIMEOUT} s") from None
    if proc.returncode != 0:
        raise SlurmError(f"{' '.join(args)}: exit status {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def array_spec(tasks: Iterable[int]) -> str:
    """sbatch's --array list for these task indices, ranges merged: [0,1,2,5] -> '0-2,5'."""
    out, run = [], []
    for t in sorted(set(tasks)):
        if run and t == run[-1] + 1:
            run.append(t)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [t]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def submit(study: Study, tasks: Sequence[int] | None = None, extra: Sequence[str] = ()) -> str:
    """`sbatch --parsable` of the study's array script (all tasks, or `tasks`); the array
    job id, also appended to state/submissions.jsonl."""
    study_dir = Path(study.study_dir)
    args = ["sbatch", "--parsable", *extra]
    if tasks is not None:
        args.append(f"--array={array_spec(tasks)}")
    out = run_slurm([*args, str(study_dir / "study.sbatch")])
    job_id = out.strip().split(";")[0]
    record = {"job_id": job_id, "tasks": array_spec(tasks or [j.index for j in study.jobs])}
    with open(study_dir / "state" / "submissions.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    return job_id


def submitted_job_ids(study_dir: Path) -> list[str]:
    """The array job ids `submit` recorded for this study, oldest first."""
    path = Path(study_dir) / "state" / "submissions.jsonl"
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["job_id"] for line in lines if line.strip()]


def parse_squeue(text: str) -> list[QueueEntry]:
    """`squeue -h -r -o '%i|%T'` lines `<job>_<task>|STATE` as entries (a not yet
    expanded array's line, `<job>_[0-3]`, gives one entry per task)."""
    entries = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or "_" not in parts[0]:
            continue
        job, task = parts[0].split("_", 1)
        for t in _expand(task):
            entries.append(QueueEntry(job, t, parts[1]))
    return entries


def _expand(task: str) -> list[int]:
    """'3' -> [3]; '[0-2,5%2]' -> [0, 1, 2, 5]."""
    task = task.strip("[]").split("%")[0]
    out = []
    for part in task.split(","):
        if re.fullmatch(r"\d+-\d+", part):
            a, b = map(int, part.split("-"))
            out += range(a, b + 1)
        elif part.isdigit():
            out.append(int(part))
    return out


def queue(job_ids: Sequence[str]) -> dict[int, QueueEntry]:
    """squeue's view of this study's tasks (the latest submission's entry per task)."""
    if not job_ids:
        return {}
    out = run_slurm(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i|%T"])
    entries = {}
    order = {j: n for n, j in enumerate(job_ids)}
    for e in sorted(parse_squeue(out), key=lambda e: order.get(e.job_id, -1)):
        entries[e.task] = e
    return entries


def read_events(path: Path) -> list[TaskEvent]:
    """A task's events file (empty if it never started)."""
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in ("start", "end", "term"):
            events.append(TaskEvent(int(parts[0]), int(parts[1]), parts[2], int(parts[3])))
    return events


def trial_dir(study: Study, job: Job) -> Path:
    """The runner's folder of this run (its experiment layout)."""
    trial = 1 if job.trial is None else job.trial + 1
    return (
        Path(study.experiment_dir)
        / job.contestant
        / f"study_{job.study}"
        / f"{job.workload}_jax"
        / f"trial_{trial}"
    )


def task_status(
    study: Study, job: Job, events: Sequence[TaskEvent], entry: QueueEntry | None
) -> TaskStatus:
    """One task's state (module docstring) from its events and squeue's entry."""
    attempts = len({e.attempt for e in events if e.kind == "start"})
    latest = max((e.attempt for e in events), default=0)
    if entry is not None and entry.state not in ("COMPLETED", "FAILED", "CANCELLED"):
        active = "running" if entry.state in ("RUNNING", "COMPLETING") else "pending"
        # Pending after an attempt, or running a later attempt: SLURM requeued it.
        if (active == "pending" and attempts) or latest > 0:
            return TaskStatus(job, "requeued", attempts, f"squeue: {entry.state}, requeued")
        return TaskStatus(job, active, attempts, f"squeue: {entry.state}")
    if not events:
        return TaskStatus(job, "missing", 0, "never started")
    last = events[-1]
    evals = trial_dir(study, job) / "eval_measurements.csv"
    if last.kind == "end" and last.value == 0:
        if evals.exists():
            return TaskStatus(job, "done", attempts, f"{evals}")
        return TaskStatus(job, "failed", attempts, f"exit status 0 but no {evals}")
    if last.kind == "start":
        return TaskStatus(job, "failed", attempts, "killed (started, never ended)")
    return TaskStatus(job, "failed", attempts, f"exit status {last.value}")


def study_status(study: Study, entries: Mapping[int, QueueEntry]) -> list[TaskStatus]:
    """Each task's state, in task order."""
    state = Path(study.study_dir) / "state"
    return [
        task_status(study, j, read_events(state / f"task_{j.index}.events"), entries.get(j.index))
        for j in study.jobs
    ]


def status_lines(statuses: Sequence[TaskStatus]) -> list[str]:
    """A line per task, then the counts per state."""
    lines = [
        f"task {s.job.index:>3} {s.job.contestant} {s.job.workload} study_{s.job.study}"
        + ("" if s.job.trial is None else f" trial_{s.job.trial + 1}")
        + f": {s.state} (attempts {s.attempts}; {s.detail})"
        for s in statuses
    ]
    counts = {k: sum(s.state == k for s in statuses) for k in STATES}
    lines.append(", ".join(f"{n} {k}" for k, n in counts.items() if n) + f" of {len(statuses)}")
    return lines
