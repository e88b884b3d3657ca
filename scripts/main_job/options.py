"""The main job's options: the command line, the submission to run (ours by default, or
any AlgoPerf submission: ``--submission``), hyperparameter overrides (``--set``,
``--hparams_file``), the strategies to run and their resolved configurations."""

from __future__ import annotations

import argparse
import collections
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from cyclic_soft_reset import hyperparameters
from cyclic_soft_reset import reset as reset_lib
from scripts.local import contestants, workloads

RESET_STRATEGIES = tuple(reset_lib.STRATEGIES)
OURS = "ours"  # The contestant that is this project's submission.py.
# What the main job runs by default: soft against keeping everything and starting over,
# and AlgoPerf's own baseline (the yardstick the benchmark scores against) in the race.
STORY_STRATEGIES = ("soft", "none", "full")
STORY_BASELINE = "nadamw_baseline"


class PlannedRun(NamedTuple):
    """One entry of the main job (run once per seed): its label (the strategy, or a
    contestant's name), the submission that runs it (a ``--submission`` value), and for
    ours the hyperparameter overrides and the resolved configuration (else empty)."""

    label: str
    submission: str
    overrides: dict[str, Any]
    resolved: dict[str, Any]


TIME_BASED_CHECKPOINT_STEPS = 100  # Checkpoint period when evaluations are time-based.
# Options a resumed run takes from its config.json (never from the command line).
RUN_OPTIONS = (
    "workload",
    "tiny",
    "param_scale",
    "max_steps",
    "max_runtime_sec",
    "eval_every_steps",
    "clock",
    "speed",
    "batch_size",
    "run_past_target",
    "checkpoint_every_steps",
    "submission",
)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface; its help fits a screen (tests/test_docs.py)."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.run",
        description=__doc__.split("\n\n")[0] + " Manual: docs/main-job.md.",
    )
    add = parser.add_argument
    add(
        "--workload",
        default=workloads.DEFAULT_WORKLOAD,
        choices=workloads.WORKLOAD_NAMES,
        metavar="NAME",
        help=f"{', '.join(workloads.WORKLOAD_NAMES)} (default: {workloads.DEFAULT_WORKLOAD})",
    )
    add(
        "--submission",
        default=OURS,
        metavar="PATH|NAME",
        help=f"{', '.join(contestants.CONTESTANT_NAMES)} (default: {OURS}) or an AlgoPerf "
        f"submission file (hyperparameters: --hparams_file); only {OURS} takes "
        "--reset_strategy and --set",
    )
    add(
        "--reset_strategy",
        choices=RESET_STRATEGIES,
        nargs="+",
        default=None,
        metavar="S",
        help=f"{', '.join(RESET_STRATEGIES)}: each run in turn (default: "
        f"{' '.join(STORY_STRATEGIES)}, then {STORY_BASELINE}, in one compare.png)",
    )
    add("--no_baseline", action="store_true", help=f"the default story without {STORY_BASELINE}")
    add("--seed", type=int, nargs="+", default=[0], help="one or more seeds (default: 0)")
    add("--hparams_file", default=None, metavar="JSON", help="a JSON object of hyperparameters")
    add(
        "--set",
        dest="set_items",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one hyperparameter (repeatable; VALUE in JSON), e.g. num_cycles=4",
    )
    add("--max_steps", type=int, default=None, metavar="N", help="stop after N steps")
    add(
        "--max_runtime_sec",
        type=float,
        default=None,
        metavar="S",
        help="submission-time budget (default: 1.5x the workload's, self-tuning)",
    )
    add(
        "--eval_every_steps",
        type=int,
        default=None,
        metavar="N",
        help="evaluate every N steps (default: every eval_period_time_sec, as AlgoPerf)",
    )
    add(
        "--clock",
        choices=("reference", "wall"),
        default="reference",
        help="simulated reference hardware (default; deterministic) or this machine's time",
    )
    add(
        "--speed",
        type=float,
        default=1.0,
        help="the simulated hardware's speed, 2 = twice as fast (default: 1)",
    )
    add("--batch_size", type=int, default=None, metavar="N", help="default: the workload's")
    add(
        "--output_dir",
        default=None,
        metavar="DIR",
        help="run folder (default: runs/<workload>-<strategy>-seed<seed>-<time>)",
    )
    add("--overwrite", action="store_true", help="replace the runs already in --output_dir")
    add("--tiny", action="store_true", help="a tiny, fast version of the workload")
    add(
        "--param_scale",
        type=float,
        default=1.0,
        metavar="C",
        help="a held-out variant: a fixed learning rate acts C times too high (C > 1) or low",
    )
    add("--run_past_target", action="store_true", help="keep training past the target")
    add(
        "--checkpoint_every_steps",
        type=int,
        default=None,
        metavar="N",
        help="default: at every evaluation; every "
        f"{TIME_BASED_CHECKPOINT_STEPS} steps with time-based evaluations",
    )
    add(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue an interrupted run (or all below RUN_DIR) from its last checkpoint",
    )
    add("--no_progress", action="store_true", help="no progress bar")
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


def load_hparams_file(path: str, valid_names: Sequence[str] | None) -> dict[str, Any]:
    """Hyperparameters from a JSON object of plain values, their names checked against
    ``valid_names`` (None: another submission's, not checked).

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
    if valid_names is not None:
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


def jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
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


def validate_options(args: argparse.Namespace) -> list[PlannedRun]:
    """The runs, each strategy of ours with its overrides and resolved configuration (the
    default story: STORY_STRATEGIES, then AlgoPerf's baseline unless ``--no_baseline``;
    another submission: that one alone); ValueError with the valid values if an option is
    invalid."""
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
    if not (math.isfinite(args.param_scale) and args.param_scale > 0):
        raise ValueError(f"--param_scale must be a number > 0, got {args.param_scale}.")
    if args.max_runtime_sec is not None and not args.max_runtime_sec > 0:
        raise ValueError(f"--max_runtime_sec must be > 0, got {args.max_runtime_sec}.")
    if not is_ours(args.submission):
        contestants.load_submission(args.submission)  # ValueError naming a bad one.
        ours_only = [o for o, given in (("--reset_strategy", args.reset_strategy),
                                        ("--set", args.set_items)) if given]  # fmt: skip
        if ours_only:
            raise ValueError(
                f"{' and '.join(ours_only)}: options of our submission; --submission "
                f"{args.submission} takes its hyperparameters from --hparams_file."
            )
        contestant_hyperparameters(args)  # ValueError for an unreadable --hparams_file.
        return [PlannedRun(contestant_label(args.submission), args.submission, {}, {})]
    base = collect_overrides(args, list(hyperparameters.NAMES))
    runs = []
    for strategy in strategies_to_run(args, base):
        overrides = strategy_overrides(base, strategy)
        runs.append(PlannedRun(strategy, args.submission, overrides, resolve(overrides)))
    story = not args.reset_strategy and "reset_strategy" not in base
    if story and not args.no_baseline:
        runs.append(PlannedRun(STORY_BASELINE, STORY_BASELINE, {}, {}))
    return runs


def run_arguments(args: argparse.Namespace, run: PlannedRun) -> argparse.Namespace:
    """The options one run of the job sees: ``--submission`` is the run's, and
    ``--hparams_file`` goes only to the submission it was given for."""
    options = {**vars(args), "submission": run.submission}
    if run.submission != args.submission:
        options["hparams_file"] = None
    return argparse.Namespace(**options)


def is_ours(submission: str) -> bool:
    """Whether ``--submission`` names this project's submission.py (by name or path)."""
    path = contestants.REGISTRY[OURS].path
    chosen = contestants.REGISTRY[submission].path if submission in contestants.REGISTRY else None
    return (chosen or Path(submission)).resolve() == path.resolve()


def contestant_label(submission: str) -> str:
    """A contestant's name: its registry name, else its file's name without .py."""
    return submission if submission in contestants.REGISTRY else Path(submission).stem


def contestant_hyperparameters(args: argparse.Namespace) -> Any:
    """What another submission's ``update_params`` receives: ``--hparams_file``'s values
    (its own names, unchecked: a namedtuple, as AlgoPerf's runner passes them), else the
    registry's, else for AlgoPerf's NAdamW file (``contestants.ALGOPERF_NADAMW``) the
    self-tuning baseline's HPARAMS, else None (self-tuning)."""
    if args.hparams_file:
        data = load_hparams_file(args.hparams_file, None)
        return collections.namedtuple("Hyperparameters", sorted(data))(**data)
    if args.submission in contestants.REGISTRY:
        return contestants.REGISTRY[args.submission].hyperparameters
    path = Path(args.submission).resolve()
    tail = contestants.ALGOPERF_NADAMW.parts
    if path.parts[-len(tail) :] == tail:
        return contestants.algoperf_contestant(path.parents[len(tail) - 1]).hyperparameters
    return None


def resolve(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The submission's configuration for these overrides, as JSON values."""
    return hyperparameters.to_json(hyperparameters.resolve(as_hyperparameters(overrides)))


def per_cycle_notes(overrides: Mapping[str, Any], resolved: Mapping[str, Any]) -> list[str]:
    """A line for each per-cycle list that `num_cycles` replaced by all ones (METHOD.md
    section 3), so that dropping the tuned per-cycle values is never silent."""
    notes = []
    for name in ("cycle_lr_factors", "cycle_warmup_factors") if resolved else ():
        default = hyperparameters.DEFAULTS[name]
        if name not in overrides and list(resolved[name]) != list(default):
            notes.append(
                f"note: num_cycles={resolved['num_cycles']} differs from the {len(default)} "
                f"entries of the default {name} {list(default)}: it is "
                f"{list(resolved[name])}; give --set {name}=[...] to choose."
            )
    return notes


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
