"""The main job's run folders and the files in them: CSV with AlgoPerf's columns, JSON
(non-finite floats as null), events.jsonl."""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def unique_dir(base: Path) -> Path:
    """``base``, or ``base-1``, ``base-2``, ... the first that does not exist."""
    candidate, n = base, 1
    while candidate.exists():
        candidate, n = Path(f"{base}-{n}"), n + 1
    return candidate


def run_name(strategy: str, seed: int, strategies: Sequence[str], seeds: Sequence[int]) -> str:
    """A run's folder inside its group: ``<strategy>``, ``seed<seed>`` or both, as needed."""
    if len(strategies) == 1:
        return f"seed{seed}"
    return strategy if len(seeds) == 1 else f"{strategy}-seed{seed}"


def run_directories(
    args: argparse.Namespace, strategies: Sequence[str]
) -> tuple[Path | None, list[Path]]:
    """``(group folder, one folder per (strategy, seed), strategy-major)``; the group is
    None for a single run. Defaults: ``runs/<workload>-<strategy>-seed<seed>-<time>`` for
    one run, ``runs/<workload>-<time>/`` for several."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    single = len(strategies) == 1 and len(args.seed) == 1
    if args.output_dir is None:
        if single:
            name = f"{args.workload}-{strategies[0]}-seed{args.seed[0]}-{stamp}"
            return None, [unique_dir(Path("runs") / name)]
        root = unique_dir(Path("runs") / f"{args.workload}-{stamp}")
    else:
        root = Path(args.output_dir)
    if single:
        group, dirs = None, [root]
    else:
        group = root
        dirs = [
            root / run_name(strategy, seed, strategies, args.seed)
            for strategy in strategies
            for seed in args.seed
        ]
    taken = [d for d in dirs if d.is_dir() and any(d.iterdir())]
    if taken and not args.overwrite:
        raise ValueError(
            f"--output_dir: {', '.join(map(str, taken))} already holds a run; pass --overwrite "
            "to replace it, or choose another directory."
        )
    for d in taken:
        shutil.rmtree(d)
    return group, dirs


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows with the sorted union of their keys as columns (blank when missing)."""
    columns = sorted({key for row in rows for key in row})
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: Path, data: Any) -> None:
    """Pretty JSON (non-finite floats as null), written whole or not at all: a reader (the
    run monitor, a resumed grid) never finds half a file, whenever the writer is stopped."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json_safe(data), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float (nested in dicts and lists) as None: JSON has none."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def read_events(out_dir: Path) -> list[dict[str, Any]]:
    """The records of a run's events.jsonl (none if it has no such file)."""
    path = Path(out_dir) / "events.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
