"""One core module's mutmut run, and its results as a summary (JSON in summaries/)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from scripts.mutation import stage

COMMAND = ["mutmut", "run", "--max-children", "1"]
KILLED = {"killed", "caught by type check", "timeout", "segfault"}
NOT_CHECKED = "not checked"


def _mutmut() -> str:
    """The mutmut of the running venv (`pip install -e '.[mutation]'`)."""
    return str(Path(sys.executable).with_name("mutmut"))


def statuses(folder: Path) -> dict[str, str]:
    """{mutant name: status} from `mutmut results --all true` in a staged folder."""
    out = subprocess.run(
        [_mutmut(), "results", "--all", "true"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    )
    found = {}
    for line in out.stdout.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            found[name] = status
    return found


def summarize(module: stage.CoreModule, folder: Path, seconds: float) -> dict:
    """Counts, survivors, run time, command, versions and machine of one run."""
    found = statuses(folder)
    # A run stopped before its end leaves mutants "not checked": neither killed nor survived.
    unchecked = sum(status == NOT_CHECKED for status in found.values())
    survivors = sorted(n for n, status in found.items() if status not in KILLED | {NOT_CHECKED})
    return {
        "module": module.name,
        "files": list(module.files),
        "tests": list(module.tests),
        "mutants": len(found),
        "not_checked": unchecked,
        "killed": len(found) - unchecked - len(survivors),
        "timeouts": sum(status == "timeout" for status in found.values()),
        "survivors": {name: found[name] for name in survivors},
        "seconds": round(seconds, 1),
        "command": " ".join(COMMAND)
        + f"  (in build/mutation/{module.name}, JAX's compilation cache in jax-cache/)",
        "versions": {
            "python": platform.python_version(),
            **{name: metadata.version(name) for name in ("mutmut", "jax", "pytest")},
        },
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }


# The summaries are kept in the repository, one per module: a run is long (reset: an hour),
# the build folder goes with the machine, and the report is rebuilt from every module's.
SUMMARIES = Path(__file__).with_name("summaries")


def summary_path(module: stage.CoreModule) -> Path:
    return SUMMARIES / f"{module.name}.json"


# JAX's persistent compilation cache, shared by the mutants' processes of one run: each
# process is forked fresh and would compile every jitted function of its tests again; a
# mutated function traces to other HLO, so it misses the cache and is compiled as mutated.
# (The reset module's fast tests: 69 s per process without it, 16 s with it warm.)
JAX_CACHE_ENV = {
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


def environment(folder: Path) -> dict[str, str]:
    """mutmut's environment: this one, with a compilation cache in the staged folder."""
    return {**os.environ, **JAX_CACHE_ENV, "JAX_COMPILATION_CACHE_DIR": str(folder / "jax-cache")}


def run(module: stage.CoreModule) -> dict:
    """Stages `module`, runs mutmut on it, and writes and returns its summary."""
    folder = stage.stage(module)
    start = time.monotonic()
    subprocess.run([_mutmut(), *COMMAND[1:]], cwd=folder, env=environment(folder), check=True)
    return collect(module, time.monotonic() - start)


def collect(module: stage.CoreModule, seconds: float, note: str | None = None) -> dict:
    """Writes and returns the summary of the run already done in `module`'s stage; `note`
    says how it was run where that was not one `mutmut run` (the report prints it)."""
    summary = summarize(module, stage.BUILD / module.name, seconds)
    if note:
        summary["note"] = note
    summary_path(module).write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def describe(summary: dict) -> str:
    """One line: module, mutants, killed, survived, seconds."""
    unchecked = summary.get("not_checked", 0)
    return (
        f"{summary['module']}: {summary['mutants']} mutants, {summary['killed']} killed, "
        f"{len(summary['survivors'])} survived, {unchecked} not checked, {summary['seconds']} s"
    )
