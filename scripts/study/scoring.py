"""`score`: a study's finished runs scored by AlgoPerf's own scoring code, and a table.

Only tasks whose state is `done` (scripts/study/slurm.py) are scored, through a layout of
links to their trial folders (`<out>/layout/<contestant>/study_<i>/<workload>_jax/trial_<n>`),
so a failed run's partial log never counts. If any task is not done, `score` names each
and stops, unless asked for a partial score, which the table's first line then calls
PARTIAL with the tasks left out: a partial study is never scored as if complete.

AlgoPerf's scorer runs in AlgoPerf's venv (`$ALGOPERF_HOME/venv`, as `make algoperf-checks`
installs it) through `python -m scripts.study.algoperf_scoring`, or in this process when
AlgoPerf is importable here.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from scripts.study.plan import ROOT, Study
from scripts.study.slurm import TaskStatus, trial_dir


class ScoreError(RuntimeError):
    """The study cannot be scored as asked; the message says why."""


@dataclass(frozen=True)
class ScoreResult:
    """AlgoPerf's result for the scored runs, and what was left out."""

    scores: dict[str, float]
    times: dict[str, dict[str, float | str]]  # contestant -> workload -> median time
    targets: dict[str, list]  # workload -> [metric column, target]
    figure: str
    left_out: tuple[str, ...]  # "task 3 ours mnist study_1: failed (...)"


def left_out(statuses: Sequence[TaskStatus]) -> list[str]:
    """A line for each task that is not done (it cannot be scored)."""
    return [
        f"task {s.job.index} {s.job.contestant} {s.job.workload} study_{s.job.study}: "
        f"{s.state} ({s.detail})"
        for s in statuses
        if s.state != "done"
    ]


def link_layout(study: Study, statuses: Sequence[TaskStatus], layout: Path) -> int:
    """Links the done runs' trial folders into `layout` (replaced); how many."""
    if layout.exists():
        shutil.rmtree(layout)
    n = 0
    for s in statuses:
        if s.state != "done":
            continue
        source = trial_dir(study, s.job)
        target = layout / s.job.contestant / f"study_{s.job.study}" / source.parent.name
        target.mkdir(parents=True, exist_ok=True)
        (target / source.name).symlink_to(source, target_is_directory=True)
        n += 1
    return n


def algoperf_python() -> list[str]:
    """The command that runs Python with AlgoPerf: this interpreter if it imports
    algoperf, else $ALGOPERF_HOME/venv/bin/python (default ../.algoperf-ci)."""
    home = Path(os.environ.get("ALGOPERF_HOME", ROOT.parent / ".algoperf-ci"))
    python = home / "venv" / "bin" / "python"
    if python.exists():
        return [str(python)]
    probe = subprocess.run([sys.executable, "-c", "import algoperf"], capture_output=True)
    if probe.returncode == 0:
        return [sys.executable]
    raise ScoreError(
        f"AlgoPerf not found: no {python} and `import algoperf` fails here. Set ALGOPERF_HOME "
        "to an install (make algoperf-checks makes one in ../.algoperf-ci)."
    )


def run_algoperf_scoring(request: Mapping, work: Path) -> dict:
    """`python -m scripts.study.algoperf_scoring` in AlgoPerf's venv on the request."""
    path = work / "request.json"
    path.write_text(json.dumps(request, indent=1), encoding="utf-8")
    proc = subprocess.run(
        [*algoperf_python(), "-m", "scripts.study.algoperf_scoring", str(path)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=900,
    )
    (work / "algoperf_scoring.log").write_text(proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise ScoreError(
            f"AlgoPerf's scoring failed (exit status {proc.returncode}): "
            f"{proc.stderr.strip()[-1500:]} (log: {work / 'algoperf_scoring.log'})"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def score_study(
    study: Study,
    statuses: Sequence[TaskStatus],
    out: Path,
    partial: bool = False,
    targets: Mapping[str, float] | None = None,
) -> ScoreResult:
    """AlgoPerf's score of the study's done runs; ScoreError naming the tasks not done
    unless `partial`."""
    missing = left_out(statuses)
    if missing and not partial:
        raise ScoreError(
            f"{len(missing)} of {len(statuses)} tasks are not done, so the study is not "
            "scored (resubmit them: `python -m scripts.study submit --failed`, or score "
            "what is done with --partial):\n  " + "\n  ".join(missing)
        )
    out.mkdir(parents=True, exist_ok=True)
    if link_layout(study, statuses, out / "layout") == 0:
        raise ScoreError("no task is done: nothing to score")
    done_workloads = sorted({s.job.workload for s in statuses if s.state == "done"})
    request = {
        "layout": str(out / "layout"),
        "workloads": done_workloads,
        "targets": dict(targets or {}),
        "self_tuning": study.ruleset == "self",
        "output_dir": str(out),
    }
    raw = run_algoperf_scoring(request, out)
    return ScoreResult(raw["scores"], raw["times"], raw["targets"], raw["figure"], tuple(missing))


def table_lines(result: ScoreResult, overridden: Sequence[str] = ()) -> list[str]:
    """The score table (markdown): a line saying what was scored, then one row per
    contestant, best first: its score and per workload its median time to the target."""
    workloads = sorted(result.targets)
    head = "AlgoPerf score (its scoring/performance_profile.py, tau in [1, 4])"
    if result.left_out:
        head = f"PARTIAL STUDY: {len(result.left_out)} task(s) left out; " + head
    lines = [head + f" over {', '.join(workloads)}:", ""]
    cells = [
        f"{w} (median s to {m} {'<=' if 'loss' in m or 'wer' in m else '>='} {t:g})"
        for w, (m, t) in result.targets.items()
    ]
    lines += ["| contestant | score | " + " | ".join(cells) + " |"]
    lines += ["|" + " --- |" * (len(workloads) + 2)]
    for c in sorted(result.scores, key=lambda c: -result.scores[c]):
        times = [_time(result.times.get(c, {}).get(w)) for w in workloads]
        lines.append(f"| {c} | {result.scores[c]:.3f} | " + " | ".join(times) + " |")
    if overridden:
        lines += ["", f"Targets overridden (a smoke run, not AlgoPerf's): {', '.join(overridden)}"]
    if result.left_out:
        lines += ["", "Left out (not done):", *[f"- {m}" for m in result.left_out]]
    if result.figure:
        lines += ["", f"Performance profiles: {result.figure}"]
    return lines


def _time(value) -> str:
    """A median time cell: seconds, or `never` where no study reached the target."""
    if value is None:
        return "-"
    number = float(value)
    return f"{number:.0f}" if math.isfinite(number) else "never"
