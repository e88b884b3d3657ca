"""Preemption: a run restored from a checkpoint continues exactly as the uninterrupted one.

The checkpoint holds what AlgoPerf's runner saves (params, model state,
optimizer_state[0], eval_results, global_step); the resumed half runs in a fresh Python
process, so nothing can survive in module state, and gets eval_results back in the
shape the runner's restore produces today.
"""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from scripts.local import loop
from scripts.local.workloads.tiny import TinyWorkload

ROOT = Path(__file__).resolve().parents[1]
# Cycle 1's peak is 10x: its loss rises and the detector ends it at step 130, where its
# params norm has grown by 5%: with kappa 1.04 the cycle failed (rule (b)) and is rolled
# back, so the checkpoints after it cover a rollback.
HYPERPARAMETERS = {"cycle_lr_factors": [1.0, 10.0, 1.0], "failure_kappa": 1.04}
NUM_STEPS = 300

_SCRIPT = """
import json, sys
import jax, numpy as np
sys.path[:0] = [{root!r}]
from scripts.local import loop
from scripts.local.workloads.tiny import TinyWorkload
w = TinyWorkload(target=0.99, step_hint={steps}, batch_norm=True)
w.metrics_logger = loop.RecordingLogger()
kwargs = dict(num_steps={steps}, eval_every=10)
if {part!r} == "first":
    loop.run(w, {hparams!r}, checkpoint_at={at}, checkpoint_path={path!r}, **kwargs)
    print(json.dumps({{}}))
else:
    r = loop.run(w, {hparams!r}, resume_from={path!r}, **kwargs)
    print(json.dumps({{
        "params": [np.asarray(x).tolist() for x in jax.tree.leaves(r["params"])],
        "learning_rates": r["learning_rates"].tolist(),
        "resets": w.metrics_logger.resets(),
        "final_step": r["global_step"],
    }}))
"""


def _subprocess(part: str, at: int, path: Path, hparams=HYPERPARAMETERS) -> dict:
    script = _SCRIPT.format(
        root=str(ROOT),
        steps=NUM_STEPS,
        part=part,
        hparams=hparams,
        at=at,
        path=str(path),
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def uninterrupted():
    workload = TinyWorkload(target=0.99, step_hint=NUM_STEPS, batch_norm=True)
    workload.metrics_logger = loop.RecordingLogger()
    result = loop.run(workload, HYPERPARAMETERS, num_steps=NUM_STEPS, eval_every=10)
    resets = workload.metrics_logger.resets()
    # The scenario the checkpoints are placed around: a planned reset at 100, an early
    # switch at 130 that rolls the failed cycle back and makes cycle 2 (the last) run to 300.
    assert [(s, m["reset/early_switch"], m["reset/failed"]) for s, m in resets] == [
        (100, 0.0, 0.0),
        (130, 1.0, 1.0),
    ]
    return result, resets


@pytest.mark.parametrize(
    "at",
    [
        55,  # mid-cycle
        100,  # after the eval on a planned boundary, before its reset
        101,  # the step after a planned reset
        130,  # after the eval that triggers the early switch, before the switch
        131,  # the step after an early switch
        250,  # in the last cycle
    ],
)
def test_resumed_run_matches_uninterrupted_run(uninterrupted, at, tmp_path):
    _check_resumed(uninterrupted, at, tmp_path, HYPERPARAMETERS)


@pytest.mark.parametrize("at", [120, 131])
def test_resumed_run_with_the_snapshot_on_the_host(uninterrupted, at, tmp_path):
    """The cycle's start kept in host memory is checkpointed and restored the same way."""
    _check_resumed(uninterrupted, at, tmp_path, {**HYPERPARAMETERS, "snapshot_on_host": True})


def _check_resumed(uninterrupted, at, tmp_path, hparams):
    result, resets = uninterrupted
    path = tmp_path / "checkpoint.msgpack"
    _subprocess("first", at, path, hparams)
    resumed = _subprocess("second", at, path, hparams)
    assert resumed["final_step"] == result["global_step"]
    # Learning rates from the restore on, resets (step, cycle, tau, switch) after it.
    np.testing.assert_array_equal(resumed["learning_rates"], result["learning_rates"][at:])
    expected_resets = [[s, m] for s, m in resets if s >= at]
    assert json.loads(json.dumps(expected_resets)) == resumed["resets"]
    # Params bit for bit.
    for got, want in zip(resumed["params"], jax.tree.leaves(result["params"]), strict=True):
        np.testing.assert_array_equal(np.asarray(got, dtype=np.float32), np.asarray(want))
