"""Train an embedded workload with the submission: ``python -m scripts.run``.

Without arguments: the default workload, seed 0, three reset strategies one after the
other (soft, the submission's default, against none and full), then AlgoPerf's NAdamW
baseline, and one figure of the four with their resets (``compare.png``,
``scripts/compare.py``). Each run shows a
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

import sys
from collections.abc import Sequence

from scripts import compare
from scripts.local.contestants import load_submission
from scripts.main_job.files import run_directories
from scripts.main_job.monitor import INTERRUPTED_EXIT_CODE, Interrupt
from scripts.main_job.options import (
    build_parser,
    per_cycle_notes,
    run_arguments,
    validate_options,
)
from scripts.main_job.resume import resume_main
from scripts.main_job.summary import print_run_summary
from scripts.main_job.train import run_one


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for invalid options, 130 after Ctrl-C)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume is not None:
        return resume_main(parser, args, argv)
    try:
        runs = validate_options(args)
        submissions = {run.submission: load_submission(run.submission) for run in runs}
        group, dirs = run_directories(args, [run.label for run in runs])
    except ValueError as error:
        parser.error(str(error))
    notes = {note for run in runs for note in per_cycle_notes(run.overrides, run.resolved)}
    for note in sorted(notes):
        print(note, flush=True)
    jobs = [(run, seed) for run in runs for seed in args.seed]
    interrupt = Interrupt()
    results, labels = [], []
    with interrupt.watching():
        for (run, seed), out_dir in zip(jobs, dirs, strict=True):
            submission = submissions[run.submission]
            run_args = run_arguments(args, run)
            results.append(
                run_one(run_args, submission, run.overrides, run.resolved, seed, out_dir, interrupt)
            )
            labels.append(f"{run.label} seed {seed}")
            if interrupt.requested:
                break
    if len(results) > 1:
        print_run_summary(labels, results, dirs[: len(results)])
    if group is not None:
        compare.main([*map(str, dirs[: len(results)]), "--out", str(group)])
    return INTERRUPTED_EXIT_CODE if interrupt.requested else 0


if __name__ == "__main__":
    sys.exit(main())
