"""The CI study (`make slurm-study`): on a running SLURM (scripts/study/single_node_slurm.sh),
AlgoPerf's official runner on mock MNIST (a simulated clock and a short budget, as
scripts/algoperf_checks.py's runner checks), our submission and AlgoPerf's self-tuning
NAdamW baseline, 2 studies each, all through `plan`, `submit`, `status` and `score`:

1. plan and submit the array (4 tasks, one at a time on a 2-core machine);
2. once task 0 wrote its 2nd checkpoint, `scontrol requeue` it (SIGTERM, then SIGKILL, as a
   preemption); SLURM runs it again and it resumes with `--resume_last_run`;
3. wait until no task is queued; every task must be done;
4. the requeued task: both attempts' logs kept, its evaluations logged before (preemption
   count 0) and after (count 1) the requeue, the resumed run past the checkpoint it
   restored, and the state it restored bit for bit the checkpoint's
   (scripts/algoperf_runner.py's `compare_restored`);
5. score with AlgoPerf's scoring code (mock data: the target is overridden, see TARGET).

Prints `SLURM study: ok (<tasks> tasks, <requeued> requeued, scored by AlgoPerf)` or
`SLURM study: FAIL <reason>`; the exit status is 1 on FAIL.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from scripts.study import plan as planning
from scripts.study import scoring, slurm

CONTESTANTS = ("ours", "nadamw_baseline")
STUDIES = 2
BUDGET = 80  # max_allowed_runtime_sec on the simulated clock: 120 s under self-tuning
RUNNER = (
    "--mock_examples 2000 --simulated_step_sec 1 --max_runtime_sec "
    f"{BUDGET} --eval_period_sec 20 --fix_jax_restore"
)
# Mock MNIST's labels are random: AlgoPerf's target (accuracy 0.97) is out of reach, so the
# smoke study scores against a validation accuracy that runs on random labels reach at
# different times (about 0.02 is chance on its mock validation split).
TARGET = {"mnist": 0.021}
REQUEUE_TASK, REQUEUE_AFTER_CHECKPOINTS = 0, 2
WAIT_SEC = 900  # the whole array, at most
_GONE = slurm.QueueEntry("", -1, "GONE")


class SmokeFailed(Exception):
    """What went wrong, for the FAIL line."""


def wait_for(predicate, timeout: float, what: str, poll: float = 0.5):
    """predicate()'s first truthy value, polling; SmokeFailed naming `what` on timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise SmokeFailed(f"timed out after {timeout:.0f} s waiting for {what}")


def checkpoints(trial: Path) -> list[int]:
    """The steps of the runner's checkpoints in a trial folder."""
    found = (re.fullmatch(r"checkpoint_(\d+)", p.name) for p in trial.glob("checkpoint_*"))
    return sorted(int(m.group(1)) for m in found if m)


def requeue_mid_run(study: planning.Study, job_id: str) -> int:
    """Requeues task REQUEUE_TASK after its REQUEUE_AFTER_CHECKPOINTS-th checkpoint; the
    step of the last checkpoint seen before."""
    trial = slurm.trial_dir(study, study.jobs[REQUEUE_TASK])
    seen = wait_for(
        lambda: len(checkpoints(trial)) >= REQUEUE_AFTER_CHECKPOINTS and checkpoints(trial),
        WAIT_SEC / 2,
        f"checkpoint {REQUEUE_AFTER_CHECKPOINTS} of task {REQUEUE_TASK} in {trial}",
        poll=0.2,
    )
    task = f"{job_id}_{REQUEUE_TASK}"
    slurm.run_slurm(["scontrol", "requeue", task])
    # SLURM holds a requeued batch job back (its begin time, about 2 minutes on); CI does
    # not wait for that: once it is pending again, let it start as soon as a CPU is free.
    pending = lambda: slurm.queue([job_id]).get(REQUEUE_TASK, _GONE).state == "PENDING"  # noqa: E731
    wait_for(pending, 60, f"task {task} pending after the requeue")
    slurm.run_slurm(["scontrol", "update", f"JobId={task}", "StartTime=now"])
    return seen[-1]


def eval_rows(trial: Path) -> list[dict[str, str]]:
    """The runner's eval_measurements.csv rows."""
    with open(trial / "eval_measurements.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def dumped_step(dump: Path) -> int:
    """The global step of a state the resumed runner restored (algoperf_runner.write_state)."""
    from flax import serialization

    return int(serialization.msgpack_restore(dump.read_bytes())["global_step"])


def check_resumed(study: planning.Study, algoperf_python: list[str], requeued_at: int) -> str:
    """SmokeFailed unless the requeued task resumed from a checkpoint at least as new as
    the one seen before the requeue, bit for bit (module doc, 4)."""
    job = study.jobs[REQUEUE_TASK]
    logs = Path(study.study_dir) / "logs"
    kept = sorted(p.name for p in logs.glob(f"task_{job.index}.attempt_*.log"))
    if len(kept) < 2:
        raise SmokeFailed(f"task {job.index}: attempts' logs {kept}, expected 2 (requeue kept)")
    rows = eval_rows(slurm.trial_dir(study, job))
    counts = {round(float(r["preemption_count"])) for r in rows}
    if not {0, 1} <= counts:
        raise SmokeFailed(f"task {job.index}: preemption counts {sorted(counts)}, expected 0, 1")
    dumps = sorted(Path(study.study_dir, "state").glob(f"task_{job.index}.restored_*.msgpack"))
    if not dumps:
        raise SmokeFailed(f"task {job.index}: the resumed attempt restored no checkpoint")
    # The step restored is the dump's own: the runner may log an evaluation (preemption
    # count 0) after the requeue's checkpoint and die before it checkpoints that step.
    restored_step = dumped_step(dumps[0])
    if restored_step < requeued_at:
        raise SmokeFailed(
            f"task {job.index}: restored step {restored_step}, older than the checkpoint at "
            f"step {requeued_at} written before the requeue"
        )
    after = [round(float(r["global_step"])) for r in rows if r["preemption_count"] in ("1", "1.0")]
    if not after or min(after) <= restored_step:
        raise SmokeFailed(f"task {job.index}: did not continue past step {restored_step}")
    checkpoint = slurm.trial_dir(study, job) / f"checkpoint_{restored_step}"
    if not checkpoint.exists():
        raise SmokeFailed(f"task {job.index}: restored step {restored_step}, no {checkpoint}")
    code = (
        "import sys; from pathlib import Path; from scripts.algoperf_runner import "
        "compare_restored; print(compare_restored(Path(sys.argv[1]), Path(sys.argv[2])))"
    )
    proc = subprocess.run(
        [*algoperf_python, "-c", code, str(checkpoint), str(dumps[0])],
        cwd=planning.ROOT,
        env=dict(os.environ, PYTHONPATH=str(planning.ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    differ = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    if proc.returncode != 0 or differ != "[]":
        raise SmokeFailed(f"task {job.index}: restored state differs from {checkpoint}: {differ}")
    return f"resumed from step {restored_step} bit for bit, continued to step {max(after)}"


def run(out: Path) -> str:
    """The study (module doc); the ok line's detail, or SmokeFailed."""
    python = scoring.algoperf_python()
    cluster = planning.Cluster(
        python=python[0],
        gpus_per_node=0,
        cpus_per_task=os.cpu_count() or 1,
        data_dir=str(out / "data"),
        runner_options=tuple(RUNNER.split()),
        check_restore=True,
    )
    study = planning.write_study(out / "study", CONTESTANTS, ["mnist"], STUDIES, cluster=cluster)
    job_id = slurm.submit(study)
    step = requeue_mid_run(study, job_id)
    print(
        f"SLURM study: requeued task {REQUEUE_TASK} after its checkpoint at step {step}", flush=True
    )

    def settled():
        statuses = slurm.study_status(study, slurm.queue([job_id]))
        active = [s for s in statuses if s.state in ("pending", "running", "requeued")]
        return None if active else statuses

    statuses = wait_for(settled, WAIT_SEC, "the array to finish", poll=2)
    print("\n".join(slurm.status_lines(statuses)), flush=True)
    bad = scoring.left_out(statuses)
    if bad:
        raise SmokeFailed(f"{len(bad)} task(s) not done: {bad[0]}")
    resumed = check_resumed(study, python, step)
    print(f"SLURM study: {resumed}", flush=True)
    result = scoring.score_study(study, statuses, out / "score", targets=TARGET)
    print("\n".join(scoring.table_lines(result, sorted(TARGET))), flush=True)
    if set(result.scores) != set(CONTESTANTS):
        raise SmokeFailed(f"AlgoPerf scored {sorted(result.scores)}, expected {CONTESTANTS}")
    requeued = sum(s.attempts > 1 for s in statuses)
    return f"{len(statuses)} tasks, {requeued} requeued, scored by AlgoPerf"


def main(out: Path | None = None, keep: bool = False) -> int:
    """Runs the study in `out` (a temporary folder unless given); prints the result line."""
    start = time.time()
    work = Path(out) if out else Path(tempfile.mkdtemp(prefix="slurm-study-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        detail = run(work.resolve())
    except (SmokeFailed, slurm.SlurmError, scoring.ScoreError, planning.PlanError) as e:
        print(f"SLURM study: FAIL {e} (files in {work})", flush=True)
        return 1
    print(f"SLURM study: ok ({detail})", flush=True)
    print(f"SLURM study: {time.time() - start:.0f} s", flush=True)
    if not keep and out is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0
