"""Studies on a SLURM cluster: AlgoPerf's runner, one array task per run, AlgoPerf's scoring.

    python -m scripts.study plan   --out DIR --workloads ogbg wmt --studies 3 [--contestants ...]
    python -m scripts.study submit DIR            # sbatch the array (--failed: only those)
    python -m scripts.study status DIR            # each task: pending/running/done/failed/...
    python -m scripts.study score  DIR            # AlgoPerf's scoring: DIR/score/score.md
    python -m scripts.study smoke                 # CI: a tiny study on a running SLURM

docs/cluster.md walks through a study from an empty cluster account to its score.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from scripts.study import plan as planning
from scripts.study import scoring, slurm

DEFAULT_RUNNER_OPTIONS = "--mock_examples 0 --fix_jax_restore"


def _plan(args) -> int:
    """plan: writes DIR/config.json (AlgoPerf's job config), DIR/study.sbatch, DIR/study.json."""
    cluster = planning.Cluster(
        mode=args.mode,
        python=args.python,
        image=args.image,
        gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task,
        time_limit=args.time,
        partition=args.partition,
        data_dir=args.data_dir,
        runner_options=tuple(shlex.split(args.runner_options)),
        check_restore=args.check_restore,
    )
    study = planning.write_study(
        args.out,
        args.contestants,
        args.workloads,
        args.studies,
        trials=args.trials,
        ruleset=args.ruleset,
        seed=args.seed,
        max_global_steps=args.max_global_steps,
        search_space=str(args.tuning_search_space.resolve()),
        experiment_dir=args.experiment_dir,
        cluster=cluster,
    )
    print(
        f"planned {len(study.jobs)} tasks ({', '.join(c.name for c in study.contestants)} x "
        f"{', '.join(study.workloads)} x {study.studies} studies) in {study.study_dir}:"
    )
    for name in ("config.json", "study.sbatch", "study.json"):
        print(f"  {Path(study.study_dir) / name}")
    print(f"next: python -m scripts.study submit {study.study_dir}")
    return 0


def _statuses(study: planning.Study) -> list[slurm.TaskStatus]:
    """Each task's state; squeue is asked only when SLURM is there."""
    try:
        entries = slurm.queue(slurm.submitted_job_ids(Path(study.study_dir)))
    except slurm.SlurmError as e:
        print(f"(squeue not asked: {e})", file=sys.stderr)
        entries = {}
    return slurm.study_status(study, entries)


def _submit(args) -> int:
    """submit: sbatch the whole array, or with --failed only the failed and missing tasks."""
    study = planning.read_study(args.study)
    tasks = None
    if args.failed:
        tasks = [s.job.index for s in _statuses(study) if s.state in ("failed", "missing")]
        if not tasks:
            print("nothing to resubmit: no task failed or missing")
            return 0
    job = slurm.submit(study, tasks, shlex.split(args.sbatch_args))
    n = len(tasks) if tasks is not None else len(study.jobs)
    print(f"submitted array job {job}: {n} tasks; logs in {study.study_dir}/logs")
    print(f"next: python -m scripts.study status {study.study_dir}")
    return 0


def _status(args) -> int:
    """status: one line per task and the counts; --wait polls until none is queued."""
    study = planning.read_study(args.study)
    deadline = time.time() + args.wait
    while True:
        statuses = _statuses(study)
        active = [s for s in statuses if s.state in ("pending", "running", "requeued")]
        if not active or time.time() >= deadline:
            break
        time.sleep(args.poll)
    print("\n".join(slurm.status_lines(statuses)))
    return 1 if any(s.state in ("failed", "missing") for s in statuses) else 0


def _score(args) -> int:
    """score: AlgoPerf's scoring of the done runs; the table in OUT/score.md."""
    study = planning.read_study(args.study)
    targets = dict(_target(t) for t in args.target)
    out = args.out or Path(study.study_dir) / "score"
    try:
        result = scoring.score_study(study, _statuses(study), out, args.partial, targets)
    except scoring.ScoreError as e:
        print(f"score: {e}", file=sys.stderr)
        return 1
    lines = scoring.table_lines(result, sorted(targets))
    (out / "score.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"table: {out / 'score.md'}")
    return 0


def _target(text: str) -> tuple[str, float]:
    """`WORKLOAD=VALUE` of --target."""
    name, _, value = text.partition("=")
    try:
        return name, float(value)
    except ValueError:
        raise planning.PlanError(
            f"--target: {text!r}; expected WORKLOAD=NUMBER, e.g. mnist=0.2"
        ) from None


def _smoke(args) -> int:
    """smoke: the CI study (scripts/study/smoke.py)."""
    from scripts.study import smoke

    return smoke.main(args.out, args.keep)


def build_parser() -> argparse.ArgumentParser:
    """The CLI: plan, submit, status, score, smoke."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.study",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("plan", help="write the job config and the sbatch array script")
    p.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="the study folder to write"
    )
    p.add_argument(
        "--contestants",
        nargs="+",
        metavar="NAME",
        default=[planning.DEFAULT_CONTESTANT],
        help="ours, nadamw_baseline, an ablation (none, full, ...), or a *.py file",
    )
    p.add_argument(
        "--workloads", nargs="+", required=True, metavar="NAME", help=", ".join(planning.DATASETS)
    )
    p.add_argument("--studies", type=int, default=3, metavar="N")
    p.add_argument("--ruleset", choices=planning.RULESETS, default="self")
    p.add_argument(
        "--trials", type=int, default=1, metavar="N", help="tuning trials (external ruleset)"
    )
    p.add_argument(
        "--tuning_search_space",
        type=Path,
        default=planning.ROOT / "tuning_search_space.json",
        metavar="JSON",
    )
    p.add_argument(
        "--seed", type=int, default=0, metavar="N", help="the seed the runs' seeds derive from"
    )
    p.add_argument("--max_global_steps", type=int, default=None, metavar="N", help="for smoke runs")
    p.add_argument(
        "--experiment_dir", type=Path, default=None, metavar="DIR", help="default: OUT/experiments"
    )
    p.add_argument("--data_dir", default="/data", metavar="DIR", help="AlgoPerf's data layout root")
    p.add_argument("--mode", choices=planning.MODES, default="venv")
    p.add_argument(
        "--python", default="python3", metavar="PATH", help="venv mode: Python with AlgoPerf"
    )
    p.add_argument("--image", default="", metavar="IMAGE", help="docker mode: AlgoPerf's JAX image")
    p.add_argument("--gpus_per_node", type=int, default=8, metavar="N")
    p.add_argument("--cpus_per_task", type=int, default=0, metavar="N")
    p.add_argument("--time", default="", metavar="T", help="sbatch --time (e.g. 2-00:00:00)")
    p.add_argument("--partition", default="", metavar="NAME")
    p.add_argument(
        "--runner_options",
        default=DEFAULT_RUNNER_OPTIONS,
        metavar="OPTIONS",
        help=f"scripts.algoperf_runner's options (default: {DEFAULT_RUNNER_OPTIONS})",
    )
    p.add_argument("--check_restore", action="store_true", help="dump each resumed state")
    p.set_defaults(run=_plan)
    p = sub.add_parser("submit", help="sbatch the study's array script")
    p.add_argument("study", type=Path)
    p.add_argument("--failed", action="store_true", help="only the failed and missing tasks")
    p.add_argument("--sbatch_args", default="", help="more sbatch options, one string")
    p.set_defaults(run=_submit)
    p = sub.add_parser("status", help="each task's state (exit status 1 if any failed)")
    p.add_argument("study", type=Path)
    p.add_argument("--wait", type=float, default=0, help="seconds to wait for the queue")
    p.add_argument("--poll", type=float, default=10)
    p.set_defaults(run=_status)
    p = sub.add_parser("score", help="AlgoPerf's scoring of the finished runs")
    p.add_argument("study", type=Path)
    p.add_argument("--out", type=Path, default=None, help="default: STUDY/score")
    p.add_argument("--partial", action="store_true", help="score what is done, say so")
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="WORKLOAD=VALUE",
        help="override a target (smoke runs on mock data only)",
    )
    p.set_defaults(run=_score)
    p = sub.add_parser("smoke", help="CI: a tiny study on a running SLURM")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--keep", action="store_true")
    p.set_defaults(run=_smoke)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parses the command line and runs the subcommand; bad input: a clear message."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (planning.PlanError, slurm.SlurmError) as e:
        print(f"{args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
