"""AlgoPerf itself on the submission: its conformance test and its official runner (CI).

    python3 -m scripts.algoperf_checks            # from the project root; standard library only

Installs AlgoPerf 0.6 from the snapshot beside the project (`../shared/algoperf/*.tar.gz`,
with `../shared/tools/install-algoperf.sh`) into `$ALGOPERF_HOME` (default: `.algoperf-ci`
beside the checkout, outside the project), unless `$ALGOPERF_HOME/venv` is already there
(e.g. `ALGOPERF_HOME=/work/algoperf-env` reuses an install). Then runs each check in that
venv and prints one line per check, `AlgoPerf <check>: ok (<seconds> s)` or
`AlgoPerf <check>: FAIL (<seconds> s): <reason>`; the exit status is 1 if any failed.

Checks: `conformance <workload>` (AlgoPerf's `tests/reference_algorithm_tests.py` on our
`submission.py`, with no search space and with `tuning_search_space.json`), `runner
self-tuning`, `runner external` and `runner resume` (AlgoPerf's `submission_runner` on
mock MNIST through `scripts/algoperf_runner.py`), `tests` (our `tests/test_algoperf*.py`
in AlgoPerf's venv, none skipped). `--only NAME...` runs some of them; `--keep DIR` keeps
the runners' experiment folders there.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from scripts.cli_help import add_choice_list

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TARBALL = SHARED / "algoperf" / "algorithmic-efficiency-2c90454.tar.gz"
INSTALLER = SHARED / "tools" / "install-algoperf.sh"
CONFORMANCE_WORKLOADS = ("mnist", "ogbg", "criteo1tb", "imagenet_resnet")
SEARCH_SPACE = ROOT / "tuning_search_space.json"
# The runner on mock MNIST with a simulated clock of 1 s per reading (whole seconds: the
# runner's checkpoint keeps train_state's times as integers, see scripts/algoperf_runner.py).
RUNNER_CLOCK = ["--simulated_step_sec", "1"]
SELF_BUDGET = 200  # max_allowed_runtime_sec; self-tuning may spend 1.5x: 300 steps.
EXTERNAL_BUDGET = 120  # 120 steps per trial.
RESUME_BUDGET = 100  # 150 steps; preempted after its 3rd checkpoint.
EVAL_PERIOD = 20  # An evaluation (and a checkpoint) about every 10 steps.


class CheckFailed(Exception):
    """A check's failure, with the reason printed on its line."""


class Env:
    """Where AlgoPerf is installed, and how to run things in its venv from the root."""

    def __init__(self, home: Path, work: Path):
        self.home, self.work = home, work
        self.python = home / "venv" / "bin" / "python"
        self.tree = home / "algoperf"

    def run(self, args: Sequence[str], log: str, expect: int = 0) -> str:
        """Runs `python args...` in AlgoPerf's venv from the project root; its output
        (also written to `<work>/<log>.log`), or CheckFailed naming the status and the
        output's last lines."""
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.run(
            [str(self.python), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        (self.work / f"{log}.log").write_text(proc.stdout, encoding="utf-8")
        if proc.returncode != expect:
            lines = _interesting_lines(proc.stdout)
            errors = [line for line in lines if "Error" in line or "error:" in line]
            tail = " | ".join((errors or lines)[-3:])
            raise CheckFailed(
                f"{log}: exit status {proc.returncode} (expected {expect}): {tail} "
                f"(full output: {self.work / (log + '.log')})"
            )
        return proc.stdout


def _interesting_lines(output: str) -> list[str]:
    """The output's lines without TensorFlow/absl info noise (for a failure's reason)."""
    noise = ("I1", "I0", "W0", "E0", "WARNING:", "20")
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    kept = [line for line in lines if not line.startswith(noise)]
    return kept or lines


def install(home: Path) -> None:
    """AlgoPerf into `home` from the snapshot beside the project, unless it is there."""
    python = home / "venv" / "bin" / "python"
    if python.exists() and (home / "algoperf").is_dir():
        probe = [str(python), "-c", "import algoperf, jax, flax, optax, submission_runner"]
        if subprocess.run(probe, capture_output=True).returncode != 0:
            raise CheckFailed(
                f"{home} holds a broken AlgoPerf install (an interrupted one?): remove it"
            )
        return
    tarball = Path(os.environ.get("ALGOPERF_TARBALL", TARBALL))
    for path in (tarball, INSTALLER):
        if not path.exists():
            raise CheckFailed(f"{path} not found (../shared/ must be beside the checkout)")
    proc = subprocess.run(
        ["bash", str(INSTALLER), str(tarball), str(home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if proc.returncode != 0 or "algoperf ready" not in proc.stdout:
        raise CheckFailed(f"install-algoperf.sh failed: {proc.stdout[-500:]}")


# --------------------------------------------------------------------------- checks


def conformance(workload: str) -> Callable[[Env], str]:
    """AlgoPerf's reference test on `workload`: self-tuning (no search space), then with
    our search space (its first Halton point as the hyperparameters)."""

    def check(env: Env) -> str:
        """AlgoPerf's reference_algorithm_tests.py: self-tuning, then our search space."""
        test = env.tree / "tests" / "reference_algorithm_tests.py"
        for space, tag in (("None", "self"), (str(SEARCH_SPACE), "space")):
            env.run(
                [
                    str(test),
                    f"--workload={workload}",
                    "--framework=jax",
                    "--global_batch_size=16",
                    "--submission_path=submission.py",
                    f"--tuning_search_space={space}",
                    f"--log_file={env.work / f'conformance-{workload}-{tag}.pkl'}",
                ],
                f"conformance-{workload}-{tag}",
            )
        return "no search space and tuning_search_space.json"

    return check


def _runner(env: Env, name: str, ours: Sequence[str], flags: Sequence[str], **kw) -> str:
    """scripts/algoperf_runner.py (AlgoPerf's submission_runner on mock MNIST)."""
    args = ["-m", "scripts.algoperf_runner", *RUNNER_CLOCK, *ours, "--"]
    args += [
        "--framework=jax",
        "--workload=mnist",
        "--submission_path=submission.py",
        f"--experiment_dir={env.work / 'experiments'}",
        f"--experiment_name={name}",
        f"--data_dir={env.work / 'data'}",
        "--rng_seed=1",
        *flags,
    ]
    return env.run(args, f"runner-{name}", **kw)


def read_rows(path: Path) -> list[dict[str, str]]:
    """A CSV the runner's logger wrote, as dicts (CheckFailed if missing)."""
    if not path.exists():
        raise CheckFailed(f"{path} was not written")
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def ended_by_budget(trial: Path, budget: float) -> float:
    """The run's final score (its last `score` row): CheckFailed unless it reached the
    budget (the runner stops at the first evaluation past it)."""
    scores = [float(r["score"]) for r in read_rows(trial / "measurements.csv") if r.get("score")]
    if not scores or scores[-1] < budget:
        raise CheckFailed(f"{trial}: not ended by the budget {budget} s (scores {scores[-3:]})")
    return scores[-1]


# The resets are read by records.ResetRecord (`resets_in`), the one reader of the
# "reset/..." columns, in AlgoPerf's venv: records needs numpy and jax, and this script
# runs on the standard library alone. Our package is not installed there: submission.py,
# loaded from the checkout as the runner loads it, registers the checkout as
# cyclic_soft_reset (its fallback), whose records module is then importable.
_RESETS = (
    "import csv, sys; import submission; from cyclic_soft_reset.records import resets_in;"
    "rows = csv.DictReader(open(sys.argv[1], newline='', encoding='utf-8'));"
    "print([r.step for r in resets_in((int(float(row['global_step'])), row) for row in rows)])"
)


def resets_logged(env: Env, trial: Path) -> list[int]:
    """The steps of the resets our submission logged in the runner's measurements.csv."""
    path = trial / "measurements.csv"
    read_rows(path)  # CheckFailed if it was not written.
    out = env.run(["-c", _RESETS, str(path)], f"resets-{trial.parent.parent.name}-{trial.name}")
    return json.loads(out.strip().splitlines()[-1])


def runner_self_tuning(env: Env) -> str:
    """--tuning_ruleset=self on a short budget: ends by the budget (the defaults' planned
    cycle is AlgoPerf's, guarded: on mock MNIST nothing ends it inside 300 steps, so no
    reset is expected; the resets' rows are checked by `runner external`)."""
    budget = ["--max_runtime_sec", str(SELF_BUDGET), "--eval_period_sec", str(EVAL_PERIOD)]
    _runner(env, "self", budget, ["--tuning_ruleset=self", "--nosave_intermediate_checkpoints"])
    trial = env.work / "experiments" / "self" / "mnist_jax" / "trial_1"
    score = ended_by_budget(trial, 1.5 * SELF_BUDGET)
    resets = resets_logged(env, trial)
    return f"score {score:.0f} s of {1.5 * SELF_BUDGET:.0f}, resets at steps {resets}"


# One trial of `runner external` runs this search space too: the defaults but for the
# planned cycle, which the detector may end alone (v4's, `planned_cycle_switch =
# "detector"`): on mock MNIST it switches within the budget, so the resets' rows pass
# through the runner.
DETECTOR_SPACE = {"num_cycles": {"feasible_points": [1]}} | {
    "planned_cycle_switch": {"feasible_points": ["detector"]}
}


def runner_external(env: Env) -> str:
    """--tuning_ruleset=external, 2 trials of our search space, then 1 of it with the
    detector alone on the planned cycle (`DETECTOR_SPACE`): each ends by the budget, and
    the last logs resets (the reset/* rows read back by `records.resets_in`)."""
    budget = ["--max_runtime_sec", str(EXTERNAL_BUDGET), "--eval_period_sec", str(EVAL_PERIOD)]
    detector_space = env.work / "detector_search_space.json"
    detector_space.write_text(json.dumps(DETECTOR_SPACE), encoding="utf-8")
    out = []
    for name, path, trials in (("external", SEARCH_SPACE, 2), ("detector", detector_space, 1)):
        flags = [
            "--tuning_ruleset=external",
            f"--tuning_search_space={path}",
            f"--num_tuning_trials={trials}",
            "--nosave_intermediate_checkpoints",
        ]
        _runner(env, name, budget, flags)
        for n in range(1, trials + 1):
            trial = env.work / "experiments" / name / "mnist_jax" / f"trial_{n}"
            if not (trial / "hparams.json").exists():
                raise CheckFailed(f"{trial / 'hparams.json'} was not written")
            score = ended_by_budget(trial, EXTERNAL_BUDGET)
            resets = resets_logged(env, trial)
            if name == "detector" and not resets:
                raise CheckFailed(f"no reset/* rows in {trial / 'measurements.csv'}")
            out.append(f"{name} trial {n}: score {score:.0f} s, resets at {resets}")
    return "; ".join(out)


def runner_resume(env: Env) -> str:
    """A run preempted after its 3rd checkpoint and resumed by the runner
    (`--resume_last_run`) against the same run uninterrupted: the evaluations before the
    preemption and the state the resumed run restored are bit for bit those of the
    uninterrupted run at that step; the resumed run goes on to the budget."""
    ours = ["--max_runtime_sec", str(RESUME_BUDGET), "--eval_period_sec", str(EVAL_PERIOD)]
    flags = ["--tuning_ruleset=self"]
    _runner(env, "whole", ours, flags)
    _runner(env, "resumed", [*ours, "--preempt_after_checkpoints", "3"], flags, expect=75)
    dump = env.work / "restored.msgpack"
    fix = ["--fix_jax_restore", "--dump_restored", str(dump)]
    _runner(env, "resumed", [*ours, *fix], [*flags, "--resume_last_run"])
    whole = env.work / "experiments" / "whole" / "mnist_jax" / "trial_1"
    resumed = env.work / "experiments" / "resumed" / "mnist_jax" / "trial_1"
    rows_w, rows_r = (read_rows(t / "eval_measurements.csv") for t in (whole, resumed))
    first = [r for r in rows_r if r["preemption_count"] in ("0", "0.0")]
    if len(first) != 3 or rows_w[:3] != first:
        raise CheckFailed("the evaluations before the preemption differ from the whole run's")
    step = int(float(first[-1]["global_step"]))
    differ = env.run(
        ["-c", _COMPARE, str(whole / f"checkpoint_{step}"), str(dump)], "resume-compare"
    ).strip()
    if differ.splitlines()[-1] != "[]":
        raise CheckFailed(f"restored state differs from the whole run's at step {step}: {differ}")
    after = [r for r in rows_r if r["preemption_count"] in ("1", "1.0")]
    if not after or int(float(after[0]["global_step"])) <= step:
        raise CheckFailed(f"the resumed run did not continue after step {step}")
    score = ended_by_budget(resumed, 1.5 * RESUME_BUDGET)
    same_after = sum(a == b for a, b in zip(rows_w[3:], after, strict=False))
    return (
        f"preempted at step {step}; restored state bit for bit; resumed to score {score:.0f} s; "
        f"{same_after}/{len(after)} later evaluations identical (the runner restarts the "
        "input pipeline on resume)"
    )


_COMPARE = (
    "import sys; from scripts.algoperf_runner import compare_restored; from pathlib import Path;"
    "print(compare_restored(Path(sys.argv[1]), Path(sys.argv[2])))"
)


def our_tests(env: Env) -> str:
    """tests/test_algoperf*.py in AlgoPerf's venv, with no test skipped."""
    tests = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_algoperf*.py"))
    out = env.run(["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *tests], "tests")
    summary = out.strip().splitlines()[-1]
    if "skipped" in summary or "passed" not in summary:
        raise CheckFailed(f"tests skipped or none passed: {summary}")
    return summary.strip("= ")


CHECKS: dict[str, Callable[[Env], str]] = {
    **{f"conformance {w}": conformance(w) for w in CONFORMANCE_WORKLOADS},
    "runner self-tuning": runner_self_tuning,
    "runner external": runner_external,
    "runner resume": runner_resume,
    "tests": our_tests,
}


# --------------------------------------------------------------------------- CLI


def timed(name: str, fn: Callable[[], str | None]) -> bool:
    """Runs one check; prints its line; True when it passed."""
    start = time.time()
    try:
        detail = fn()
    except CheckFailed as failure:
        print(f"AlgoPerf {name}: FAIL ({time.time() - start:.0f} s): {failure}", flush=True)
        return False
    suffix = f": {detail}" if detail else ""
    print(f"AlgoPerf {name}: ok ({time.time() - start:.0f} s){suffix}", flush=True)
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m scripts.algoperf_checks", description=__doc__.splitlines()[0]
    )
    default_home = os.environ.get("ALGOPERF_HOME", str(ROOT.parent / ".algoperf-ci"))
    parser.add_argument(
        "--home", type=Path, default=Path(default_home), help="AlgoPerf's install (DIR/venv)"
    )
    checks = {name: (CHECKS[name].__doc__ or "").split("\n")[0] for name in CHECKS}
    add_choice_list(
        parser, "--only", "CHECK", lambda: checks, default=None, help="some checks (quoted)"
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep the runs' folders here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.time()
    if not timed("install", lambda: install(args.home.resolve()) or str(args.home)):
        return 1
    work = args.keep or Path(tempfile.mkdtemp(prefix="algoperf-checks-"))
    if work.exists() and args.keep:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    env = Env(args.home.resolve(), work.resolve())
    names = args.only or list(CHECKS)
    failed = [name for name in names if not timed(name, lambda n=name: CHECKS[n](env))]
    ok = len(names) - len(failed)
    print(f"AlgoPerf checks: {ok}/{len(names)} ok in {time.time() - start:.0f} s", flush=True)
    if args.keep is None and not failed:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
