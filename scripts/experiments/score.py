"""AlgoPerf's score of the evidence grid: performance profiles over its problems.

AlgoPerf (`scoring/performance_profile.py`; ../shared/ALGOPERF.md) scores a submission so:
per run, t = the submission time of the first evaluation that meets the validation target
(infinite if none); per workload, the median over studies; r = t / t_best against the best
submission on that workload, infinite where r > 4; rho(x) = the fraction of workloads with
r <= x; the score is the area under rho over [1, 4], divided by 3.

Here a *problem* is a (workload, scenario) cell of the grid, the studies are its seeds, the
submissions are the grid's variants, and t is on the simulated clock (`design.CLOCK`), so
the score does not depend on the machine's load.

    .venv/bin/python -m scripts.experiments.score            # the score grid, docs/score.md
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from scripts.cli_help import add_choice_list
from scripts.experiments.profiles import draw_profiles, reach_table, score_table


def build_parser() -> argparse.ArgumentParser:
    from scripts.experiments.design import SCORE_SEEDS, SCORE_VARIANTS, VARIANTS

    parser = argparse.ArgumentParser(
        prog="python -m scripts.experiments.score", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=None, help="results directory")
    parser.add_argument("--report", type=Path, default=None, help="Markdown report path")
    parser.add_argument("--seeds", type=int, default=SCORE_SEEDS, help="seeds 0..N-1")
    add_choice_list(
        parser,
        "--variants",
        "NAME",
        lambda: {name: variant.label for name, variant in VARIANTS.items()},
        default=list(SCORE_VARIANTS),
        help=f"contestants (default: {' '.join(SCORE_VARIANTS)})",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no_run", action="store_true", help="only score the records")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from scripts.experiments.design import (
        HEALTHY_GATE_SEEDS,
        RESCUE_PROBLEMS,
        RESCUE_VARIANTS,
        SCORE_PROBLEMS,
        SWITCH_PROBLEMS,
        SWITCH_TWIN,
        VARIANTS,
        problem_grid,
    )
    from scripts.experiments.evidence import ROOT, run_grid
    from scripts.experiments.evidence_measures import load_records, refusal
    from scripts.experiments.gates import gates, gates_lines, switch_gates, switch_lines

    args = build_parser().parse_args(argv)
    out = args.out or ROOT / "runs" / "score"
    report = args.report or (ROOT / "docs" / "score.md" if args.out is None else None)
    variants, skipped = runnable(dict.fromkeys(args.variants))
    for name, why in skipped.items():
        print(f"skipped {name}: {why}", file=sys.stderr)
    specs = problem_grid(SCORE_PROBLEMS, variants, range(args.seeds))
    # The submission's default: the variant of ours that overrides nothing.
    default = next(
        (v for v in variants if VARIANTS[v].submission == "ours" and not VARIANTS[v].overrides),
        None,
    )
    # The healthy time gate's paired seeds, where the race's are too few to see 5%.
    pair = [v for v in (default, "baseline") if v in variants]
    paired = [s for p, n in HEALTHY_GATE_SEEDS.items() for s in problem_grid([p], pair, range(n))]
    # The detector's twin runs where switches are judged; it is not scored.
    twins = problem_grid(SWITCH_PROBLEMS, [SWITCH_TWIN], range(args.seeds))
    # The injected failure on the other workloads: judged against `full`, not scored.
    rescuers = [v for v in RESCUE_VARIANTS if v in variants]
    rescues = problem_grid(RESCUE_PROBLEMS, rescuers, range(args.seeds))
    everything = specs + twins + rescues + paired
    errors = [] if args.no_run else run_grid(everything, out, args.workers)
    if message := refusal(out, everything, errors, args.no_run):
        print(message, file=sys.stderr)
        return 2
    records = load_records(out, specs)
    twin_records = load_records(out, twins)
    labels = {v: VARIANTS[v].label for v in variants}
    from scripts.experiments import algoperf_score  # AlgoPerf's scorer when installed.

    scored = algoperf_score.score_table(records, variants, labels, out / "algoperf")
    lines, scores, r = scored or score_table(records, variants, labels)
    figure = draw_profiles(
        r, scores, labels, out / "figures" / "score_profile.png", _title(args.seeds), default
    )
    print("\n".join(lines))
    scorer = (
        "Profiles and scores by AlgoPerf's own `scoring/performance_profile.py` "
        "(`scripts/experiments/algoperf_score.py`)."
        if scored
        else "Profiles and scores by this project's copy of AlgoPerf's recipe "
        "(`scripts/experiments/profiles.py`; AlgoPerf was not installed)."
    )
    sections = [
        *lines,
        "",
        scorer,
        "",
        *(f"Not in this race: `{name}`, {why}.\n" for name, why in skipped.items()),
        "Seeds reaching the target:",
        "",
        *reach_table(records, variants, labels),
    ]
    if default is not None:
        sections += ["", f"Gates (docs/METHOD.md section 7) for the default, `{default}`:", ""]
        rivals = [v for v in variants if VARIANTS[v].submission != "ours"]
        paired_records = load_records(out, paired)
        found = gates(
            records, SCORE_PROBLEMS, default, scores, rivals=rivals, paired=paired_records
        )
        found += switch_gates({**records, **twin_records}, SWITCH_PROBLEMS, default, SWITCH_TWIN)
        found += gates(load_records(out, rescues), RESCUE_PROBLEMS, default, {}, rivals=())
        sections += gates_lines(found)
        if twin_records:
            title = f"Early switches of the default, judged against `{SWITCH_TWIN}` (the same run"
            sections += ["", f"{title} with the detector off: identical up to the first switch):"]
            sections += [
                "",
                *switch_lines({**records, **twin_records}, SCORE_PROBLEMS, default, SWITCH_TWIN),
            ]
    if default is not None and "baseline" in variants:
        sections += ["", *seeds_section(records, default, args.seeds, load_records(out, paired))]
    print("\n".join(sections[len(lines) :]))
    if report is not None:
        write_report(report, sections, figure, records, args.seeds, argv)
        print(f"report -> {report}")
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors else 0


def runnable(variants) -> tuple[list[str], dict[str, str]]:
    """(the variants that can run here, {variant: why not} for those that cannot: a
    contestant this environment lacks, e.g. Schedule-Free AdamW under an older optax)."""
    from scripts.experiments.design import VARIANTS
    from scripts.local.contestants import unavailable

    why = {v: unavailable(VARIANTS[v].submission) for v in variants}
    return [v for v in variants if not why[v]], {v: w for v, w in why.items() if w}


def seeds_section(records, default: str, seeds: int, paired=None) -> list[str]:
    """Whether the seeds can see the healthy gate's 5% (scripts/experiments/power.py), in
    the race and on the gate's paired seeds (`design.HEALTHY_GATE_SEEDS`)."""
    from scripts.experiments.design import HEALTHY_GATE_SEEDS, SCORE_PROBLEMS
    from scripts.experiments.power import noise_lines, paired_noise

    healthy = [(w, s) for w, s in SCORE_PROBLEMS if s == "healthy"]
    rows = [paired_noise(records, w, s, default, "baseline") for w, s in healthy]
    gate = [paired_noise(paired or {}, w, s, default, "baseline") for w, s in HEALTHY_GATE_SEEDS]
    rows += [r for r in gate if r.seeds > seeds]
    extra = ", ".join(f"{w} {s} {n}" for (w, s), n in HEALTHY_GATE_SEEDS.items())
    return [
        f"Seeds enough to see 5%? The healthy problems paired on seeds, `{default}` against "
        "`baseline` (`scripts/experiments/power.py`): where both reach the target, the "
        "spread of ln(t ratio) from seed to seed, and the paired seeds a test needs to see a "
        f"true 5% difference (alpha 0.05, power 0.8; a median needs about pi/2 x that). "
        f"The race has {seeds}; the healthy time gate reads more where they are needed "
        f"(`design.HEALTHY_GATE_SEEDS`: {extra}), the rows with more seeds below.",
        "",
        *noise_lines(rows, default, "baseline"),
    ]


def _title(seeds: int) -> str:
    return (
        "AlgoPerf's performance profiles, calibrated problems\n"
        f"(targets from the reference baseline's runs), median of {seeds} seeds"
    )


def conditions() -> str:
    """The versions and the machine a report's runs were made with, in one sentence."""
    import importlib.metadata
    import os
    import platform

    names = ("jax", "jaxlib", "flax", "optax")
    versions = ", ".join(f"{n} {importlib.metadata.version(n)}" for n in names)
    cpu = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")),
        platform.processor() or "an unnamed processor",
    )
    return (
        f"Made with Python {platform.python_version()}, {versions}, on {cpu} "
        f"({platform.machine()}, {os.cpu_count()} cores); the runs' trajectories depend on the "
        "processor and the versions (float rounding), their times on the simulated clock do not."
    )


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []


def write_report(report: Path, lines, figure: Path, records, seeds: int, argv) -> None:
    """docs/score.md: how it was scored, the tables, the profile."""
    import shutil

    from scripts.experiments.design import CLOCK, SCENARIOS, SCORE_PROBLEMS

    report.parent.mkdir(parents=True, exist_ok=True)
    target = report.parent / "evidence" / figure.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(figure, target)
    given = " ".join(a for a in (argv if argv is not None else sys.argv[1:]) if a != "--no_run")
    problems = [f"`{w} {s}` ({SCENARIOS[s].description})" for w, s in SCORE_PROBLEMS]
    text = [
        "# The score: the submission against AlgoPerf's baseline and the field's leader, "
        "scored as AlgoPerf scores",
        "",
        f"Reproduce: `{f'.venv/bin/python -m scripts.experiments.score {given}'.rstrip()}`.",
        f"{len(records)} runs; every time is on the simulated clock {CLOCK} of each "
        "workload's reference hardware (`scripts/local/runner.py::reference_clock`), so "
        "the numbers do not depend on the machine's load.",
        conditions(),
        "",
        "The problems are posed as the benchmark poses them: every target and budget comes "
        "from the reference baseline's own runs (`python -m scripts.experiments.calibrate`, "
        "calibration seeds 1000-1004, never the scoring seeds 0-9; docs/METHOD.md section "
        "7), `baseline` is AlgoPerf's self-tuning NAdamW (`scripts/local/contestants/"
        "nadamw_baseline.py`), `schedule-free` is the field's self-tuning leader, "
        "Schedule-Free AdamW at its JAX port's fixed setting (`scripts/local/contestants/"
        "schedule_free_adamw.py`), and a held-out variant keeps its base workload's target. "
        "Problems: " + "; ".join(problems) + ".",
        "",
        "t is the submission seconds at the first evaluation on target, the median over "
        f"{seeds} seeds (never when half or more missed); the ratio is t over the best "
        "variant's t on that problem (never beyond 4x); the score is the area under the "
        "fraction of problems within x of the best, over x in [1, 4], divided by 3 "
        "(AlgoPerf's recipe). Each cell: ratio (t).",
        "",
        *lines,
        "",
        f"![performance profiles](evidence/{target.name})",
        "",
    ]
    report.write_text("\n".join(text), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
