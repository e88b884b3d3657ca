"""Installing the project claims one name, `cyclic_soft_reset`, and no generic ones."""

import importlib.metadata
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # Subprocesses, fresh processes or AlgoPerf itself.

GENERIC = ["submission", "hyperparameters", "algoperf_compat", "schedules", "reset", "records"]
GENERIC += ["early_switching", "scripts", "tests", "controller", "steps", "compile_ahead"]
CODE = f"""
import importlib.util, json
claimed = [n for n in {GENERIC!r} if importlib.util.find_spec(n) is not None]
import cyclic_soft_reset.submission as submission
from cyclic_soft_reset import reset, schedules
plan = schedules.make_plan(30, schedules.PlanSettings(num_cycles=3, learning_rate=1.0))
print(json.dumps({{"claimed": claimed, "schema": submission.schema.__name__,
                   "strategy": reset.soft(alpha=0.5).name, "T": schedules.total_steps(plan)}}))
"""


def test_installed_parts_import_under_one_namespace_only(tmp_path):
    try:
        importlib.metadata.distribution("cyclic-soft-reset")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the project is not installed in this environment")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", CODE], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {
        "claimed": [],
        "schema": "cyclic_soft_reset.hyperparameters",
        "strategy": "soft",
        "T": 30,
    }
