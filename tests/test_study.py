"""scripts/study without SLURM or AlgoPerf: the plan's files and seeds, the array script's
syntax, each task's state from its events, and the refusal to score a partial study.
(The job config against AlgoPerf's make_job_config.py and the scores against AlgoPerf's
scoring code are in tests/test_algoperf_study.py, run in AlgoPerf's venv.)"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from scripts.study import plan as planning
from scripts.study import scoring, slurm
from scripts.study.__main__ import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _study(tmp_path, contestants=("ours", "nadamw_baseline"), studies=2, **kw):
    return planning.write_study(tmp_path / "study", contestants, ["mnist"], studies, **kw)


def test_plan_writes_algoperf_job_config_and_sbatch(tmp_path):
    study = _study(tmp_path, max_global_steps=50)
    config = json.loads((tmp_path / "study" / "config.json").read_text())
    assert list(config) == ["0", "1", "2", "3"]
    first = config["0"]
    assert list(first) == [
        "framework", "workload", "dataset", "submission_path", "experiment_dir",
        "rng_seed", "tuning_ruleset", "num_tuning_trials", "max_global_steps",
    ]  # fmt: skip
    assert first["submission_path"] == "submission.py"
    assert config["2"]["submission_path"] == "scripts/local/contestants/nadamw_baseline.py"
    assert first["experiment_dir"] == f"{study.experiment_dir}/ours/study_0"
    # The same (workload, study) gets the same seed for every contestant.
    assert config["0"]["rng_seed"] == config["2"]["rng_seed"] != config["1"]["rng_seed"]
    sbatch = (tmp_path / "study" / "study.sbatch").read_text()
    assert "#SBATCH --array=0-3" in sbatch and "#SBATCH --requeue" in sbatch
    assert "#SBATCH --gpus-per-node=8" in sbatch and not re.search(r"@[A-Z_]+@", sbatch)
    assert planning.read_study(tmp_path / "study") == study


def test_seeds_do_not_depend_on_the_process():
    """A fixed value: Python's hash() of the workload (AlgoPerf's scheme) would change."""
    assert planning.derive_seed(0, "ogbg", 0, None) == planning.derive_seed(0, "ogbg", 0, None)
    assert planning.derive_seed(0, "ogbg", 0, None) == 488606856
    seeds = {planning.derive_seed(0, "ogbg", s, t) for s in range(3) for t in range(5)}
    assert len(seeds) == 15
    assert all(planning.MIN_INT <= s <= planning.MAX_INT for s in seeds)


@pytest.mark.slow
def test_seeds_are_the_same_under_another_hash_seed(tmp_path):
    code = "from scripts.study.plan import derive_seed; print(derive_seed(0, 'wmt', 1, None))"
    out = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=dict(os.environ, PYTHONHASHSEED=str(h)),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for h in (1, 2)
    }
    assert len(out) == 1


def test_ablation_names_are_the_strategy_registry():
    from cyclic_soft_reset.reset.strategies import STRATEGIES

    assert planning.ablation_names() == tuple(STRATEGIES)


def test_ablation_is_a_wrapper_submission_setting_the_strategy(tmp_path):
    study = _study(tmp_path, contestants=("ours", "none"))
    none = next(c for c in study.contestants if c.name == "none")
    assert none.submission_path == "submissions/none.py"
    source = (tmp_path / "study" / "submissions" / "none.py").read_text()
    assert "OVERRIDES = {'reset_strategy': 'none'}" in source
    compile(source, "none.py", "exec")


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"workloads": ["imagenet"]}, "--workloads"),
        ({"studies": 0}, "--studies"),
        ({"contestant_specs": ["bogus"]}, "--contestants"),
        ({"ruleset": "both"}, "--ruleset"),
    ],
)
def test_bad_input_names_the_field_and_allowed_values(tmp_path, kwargs, field):
    args = {"contestant_specs": ["ours"], "workloads": ["mnist"], "studies": 1, **kwargs}
    with pytest.raises(planning.PlanError, match=field) as e:
        planning.write_study(tmp_path / "s", **args)
    assert "allowed" in str(e.value)


@pytest.mark.slow
def test_sbatch_script_and_slurm_script_pass_bash_n(tmp_path):
    _study(tmp_path)
    for script in (
        tmp_path / "study" / "study.sbatch",
        ROOT / "scripts/study/single_node_slurm.sh",
    ):
        subprocess.run(["bash", "-n", str(script)], check=True)


def _events(study, task, lines):
    path = Path(study.study_dir) / "state" / f"task_{task}.events"
    path.write_text("".join(f"{line}\n" for line in lines))


def _evals(study, task):
    trial = slurm.trial_dir(study, study.jobs[task])
    trial.mkdir(parents=True)
    (trial / "eval_measurements.csv").write_text("global_step,score\n1,1.0\n")


def test_status_names_a_failed_and_a_missing_task(tmp_path):
    study = _study(tmp_path)
    _events(study, 0, ["100 0 start 7", "150 0 end 0"])
    _evals(study, 0)
    _events(study, 1, ["100 0 start 7", "120 0 end 1"])  # failed
    _events(study, 2, ["100 0 start 7", "110 0 term 143", "200 1 start 7"])  # requeued
    # task 3: never started, not queued: missing
    entries = {2: slurm.QueueEntry("7", 2, "RUNNING")}
    statuses = slurm.study_status(study, entries)
    assert [s.state for s in statuses] == ["done", "failed", "requeued", "missing"]
    lines = slurm.status_lines(statuses)
    assert "task   1 ours mnist study_1: failed" in lines[1] and "exit status 1" in lines[1]
    assert "task   3 nadamw_baseline mnist study_1: missing" in lines[3]
    assert lines[-1] == "1 requeued, 1 done, 1 failed, 1 missing of 4"


def test_a_killed_attempt_no_longer_queued_is_failed(tmp_path):
    study = _study(tmp_path, contestants=("ours",), studies=1)
    _events(study, 0, ["100 0 start 7"])
    assert slurm.study_status(study, {})[0].state == "failed"


def test_a_partial_study_is_not_scored(tmp_path):
    study = _study(tmp_path)
    _events(study, 0, ["100 0 start 7", "150 0 end 0"])
    _evals(study, 0)
    statuses = slurm.study_status(study, {})
    with pytest.raises(scoring.ScoreError, match="3 of 4 tasks are not done") as e:
        scoring.score_study(study, statuses, tmp_path / "score")
    assert "task 3 nadamw_baseline mnist study_1: missing" in str(e.value)


def test_squeue_lines_and_array_lists():
    entries = slurm.parse_squeue("12_3|RUNNING\n12_[4-5,7%2]|PENDING\nbogus\n")
    assert [(e.task, e.state) for e in entries] == [
        (3, "RUNNING"), (4, "PENDING"), (5, "PENDING"), (7, "PENDING"),
    ]  # fmt: skip
    assert slurm.array_spec([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"


def test_cli_help_fits_a_screen():
    help_text = build_parser().format_help()
    assert len(help_text.splitlines()) <= 30
    for command in ("plan", "submit", "status", "score"):
        assert command in help_text


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_single_node_slurm_without_root_says_so_and_does_not_hang():
    with tempfile.TemporaryDirectory() as folder:  # pytest's tmp_path is root's alone
        work = Path(folder)
        work.chmod(0o777)
        script = work / "single_node_slurm.sh"
        shutil.copy(ROOT / "scripts/study/single_node_slurm.sh", script)
        script.chmod(0o755)
        proc = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash",
             str(script), "run", "--", "true"],
            env=dict(os.environ, TMPDIR=folder, HOME=folder),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 2
    assert "needs root" in proc.stderr


def test_submit_failed_resubmits_only_the_failed_and_missing_tasks(tmp_path, monkeypatch):
    study = _study(tmp_path)
    _events(study, 0, ["100 0 start 7", "150 0 end 0"])
    _evals(study, 0)
    _events(study, 1, ["100 0 start 7", "120 0 end 1"])  # failed
    _events(study, 2, ["100 0 start 7", "150 0 end 0"])
    _evals(study, 2)  # task 3: missing
    calls = []

    def fake_slurm(args):
        calls.append(args)
        if args[0] == "squeue":
            return ""
        return "42;cluster\n"

    monkeypatch.setattr(slurm, "run_slurm", fake_slurm)
    assert main(["submit", study.study_dir, "--failed"]) == 0
    sbatch = calls[-1]
    assert sbatch[0] == "sbatch" and "--array=1,3" in sbatch
    assert slurm.submitted_job_ids(Path(study.study_dir)) == ["42"]


def test_the_restored_step_is_the_dump_s_own_not_the_last_evaluation(tmp_path):
    """The runner may log an evaluation after the requeue's checkpoint and die before it
    checkpoints that step (CI, stop 34: step 28 logged, 19 restored): the smoke check reads
    the step from the state the resumed run dumped."""
    from flax import serialization

    from scripts.study import smoke

    dump = tmp_path / "task_0.restored_2.msgpack"
    state = {"global_step": 19, "preemption_count": 0, "model_params": {"w": [1.0]}}
    dump.write_bytes(serialization.msgpack_serialize(state))
    assert smoke.dumped_step(dump) == 19
