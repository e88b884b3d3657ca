"""``--resume RUN_DIR``: continue unfinished runs from their last checkpoint, with the
configuration in their config.json (an option that differs is refused, named)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cyclic_soft_reset import hyperparameters
from scripts import compare
from scripts.local.contestants import load_submission
from scripts.main_job.files import read_events
from scripts.main_job.monitor import INTERRUPTED_EXIT_CODE, MONITOR_FILE, Interrupt
from scripts.main_job.options import (
    OURS,
    collect_overrides,
    is_ours,
    resolve,
    strategies_to_run,
    strategy_overrides,
)
from scripts.main_job.train import run_one


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
    saved.setdefault("submission", OURS)  # A run from before --submission: ours.
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
            ours = is_ours(run_args.submission)
            if ours and resolve(overrides) != config["hyperparameters"]:
                raise ValueError(
                    f"--resume: {out_dir}/config.json's hyperparameters no longer resolve to "
                    "the same configuration (the submission's defaults changed)."
                )
            state = json.loads((out_dir / MONITOR_FILE).read_text(encoding="utf-8"))
            submission = load_submission(run_args.submission)
            plans.append((out_dir, config, run_args, overrides, state, submission))
    except (ValueError, KeyError, json.JSONDecodeError) as error:
        parser.error(str(error))
    interrupt = Interrupt()
    with interrupt.watching():
        for out_dir, config, run_args, overrides, state, submission in plans:
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
