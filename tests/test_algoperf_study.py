"""scripts/study against AlgoPerf's own code (run in AlgoPerf's venv by
`scripts.algoperf_checks`; skipped elsewhere): the job config `plan` writes equals what
AlgoPerf's `scoring/utils/slurm/make_job_config.py` writes for the same inputs (seeds
aside), and `score` on a synthetic experiment folder gives the scores computed by hand."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("algoperf")

from scripts.study import plan as planning  # noqa: E402
from scripts.study import scoring, slurm  # noqa: E402
from scripts.study.algoperf_scoring import algoperf_tree  # noqa: E402

# make_job_config.py at AlgoPerf 0.6 defines the flag `experiment_dir` twice (absl's
# DuplicateFlagError on start): run it with redefinitions allowed, nothing else changed.
_RUN_MAKE_JOB_CONFIG = """
import functools, runpy, sys
from absl import flags
for name in ("DEFINE_string", "DEFINE_enum", "DEFINE_integer"):
    setattr(flags, name, functools.partial(getattr(flags, name), allow_override=True))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def make_job_config(tmp_path: Path, *flags: str) -> dict:
    """AlgoPerf's make_job_config.py's config.json for these flags (written in tmp_path)."""
    script = algoperf_tree() / "scoring" / "utils" / "slurm" / "make_job_config.py"
    subprocess.run(
        [sys.executable, "-c", _RUN_MAKE_JOB_CONFIG, str(script), *flags],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    return json.loads((tmp_path / "config.json").read_text())


def _without_seeds(config: dict) -> dict:
    return {k: {f: v for f, v in job.items() if f != "rng_seed"} for k, job in config.items()}


# make_job_config.py ignores --num_studies (it loops over its NUM_STUDIES = 3) and runs
# NUM_TUNING_TRIALS = 5 trials under external tuning: the same inputs are 3 and 5.
@pytest.mark.slow
@pytest.mark.parametrize("ruleset, trials", [("self", 1), ("external", 5)])
def test_job_config_equals_algoperf_make_job_config(tmp_path, ruleset, trials):
    space = str(planning.ROOT / "tuning_search_space.json")
    study = planning.write_study(
        tmp_path / "study", ["ours"], ["ogbg", "wmt"], 3, trials=trials, ruleset=ruleset,
        search_space=space,
    )  # fmt: skip
    ours = json.loads((tmp_path / "study" / "config.json").read_text())
    theirs = make_job_config(
        tmp_path,
        "--submission_path=submission.py",
        f"--tuning_search_space={space}",
        f"--experiment_dir={study.experiment_dir}/ours",
        "--framework=jax",
        f"--tuning_ruleset={ruleset}",
        "--workloads=ogbg,wmt",
    )
    assert len(ours) == 2 * 3 * trials
    assert json.dumps(_without_seeds(ours)) == json.dumps(_without_seeds(theirs))  # key order


def _write_run(study, task: int, accuracies, seconds) -> None:
    """A done run: its eval_measurements.csv (the runner's columns) and its events."""
    trial = slurm.trial_dir(study, study.jobs[task])
    trial.mkdir(parents=True)
    rows = ["global_step,score,accumulated_submission_time,preemption_count,validation/accuracy"]
    rows += [
        f"{10 * (i + 1)},{t},{t},0,{a}"
        for i, (a, t) in enumerate(zip(accuracies, seconds, strict=True))
    ]
    (trial / "eval_measurements.csv").write_text("\n".join(rows) + "\n")
    events = Path(study.study_dir) / "state" / f"task_{task}.events"
    events.write_text("1 0 start 5\n2 0 end 0\n")


@pytest.mark.slow
def test_score_of_a_synthetic_study_is_the_one_computed_by_hand(tmp_path):
    """Target accuracy 0.5 on mnist, 2 studies each. fast: reaches it at 10 s and 30 s,
    median 20 s; slow: at 40 s and 60 s, median 50 s, 2.5x the best; never: not at all.
    rho over 100 points in [1, 4] (step h = 3/99): fast 1 everywhere, score 1; slow 0
    below tau = 2.5 and 1 from point 50 (tau = 2.515) on: the trapezoid is 49.5 h = 1.5,
    /3 = 0.5; never: 0."""
    study = planning.write_study(
        tmp_path / "study", [f"{planning.ROOT}/submission.py"], ["mnist"], 2
    )  # One contestant planned; the synthetic folder holds three.
    jobs = []
    for name in ("fast", "slow", "never"):
        jobs += [planning.Job(len(jobs) + s, name, "mnist", s, None, 0) for s in range(2)]
    study = planning.Study(**{**study.__dict__, "jobs": tuple(jobs)})
    _write_run(study, 0, [0.1, 0.6], [5, 10])
    _write_run(study, 1, [0.1, 0.2, 0.5], [10, 20, 30])
    _write_run(study, 2, [0.2, 0.55], [20, 40])
    _write_run(study, 3, [0.2, 0.4, 0.7], [20, 40, 60])
    _write_run(study, 4, [0.1, 0.2], [10, 20])
    _write_run(study, 5, [0.3, 0.4], [10, 20])
    statuses = slurm.study_status(study, {})
    result = scoring.score_study(study, statuses, tmp_path / "score", targets={"mnist": 0.5})
    assert result.scores == pytest.approx({"fast": 1.0, "slow": 0.5, "never": 0.0})
    assert result.times["fast"]["mnist"] == pytest.approx(20.0)
    assert result.times["slow"]["mnist"] == pytest.approx(50.0)
    assert float(result.times["never"]["mnist"]) == float("inf")
    assert result.targets == {"mnist": ["validation/accuracy", 0.5]}
    table = scoring.table_lines(result, ["mnist"])
    assert table[4:7] == [
        "| fast | 1.000 | 20 |",
        "| slow | 0.500 | 50 |",
        "| never | 0.000 | never |",
    ]
    assert Path(result.figure).exists()
