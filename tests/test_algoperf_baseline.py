"""Our reference contestant against AlgoPerf's own NAdamW baseline, step for step.

`scripts/local/contestants/nadamw_baseline.py` is the project's copy of the algorithm of
AlgoPerf's self-tuning baseline, so that the score grids and CI have the baseline without
AlgoPerf. Here (in AlgoPerf's venv: `make algoperf-checks` runs it there, with no test
skipped) AlgoPerf's file is given the self-tuning HPARAMS as its hyperparameters (its
self-tuning twin fails at AlgoPerf's head), and two things must agree over a whole
step_hint (warm-up, the cosine and its end at 0):

* the update rule: both optimizers fed the same gradients move the same parameters alike,
  to float32 rounding (1e-5), at every step;
* the runs: both files train the same embedded workload from the same seed through the
  local runner, with the same validation losses (to 1e-3: AlgoPerf's file divides the
  summed loss's gradient by n, ours differentiates the mean; the few-ulp difference grows
  while training moves fast and shrinks again, measured at most 1e-4) and metrics at
  every evaluation.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

algoperf = pytest.importorskip("algoperf")

from scripts.local import runner, workloads  # noqa: E402
from scripts.local.contestants import algoperf_contestant, load_submission  # noqa: E402
from scripts.local.contestants.nadamw_baseline import HPARAMS, nadamw  # noqa: E402

pytestmark = pytest.mark.slow  # Subprocesses, fresh processes or AlgoPerf itself.

# AlgoPerf's repository: the installed package is an editable install of its work tree.
ALGOPERF_DIR = Path(algoperf.__file__).resolve().parents[1]


def _losses(submission, hyperparameters, workload_name: str, steps: int):
    workload = workloads.make_workload(workload_name)
    result = runner.train_once(
        workload,
        submission,
        hyperparameters,
        rng_seed=7,
        workload_name=workload_name,
        eval_every_steps=steps // 6,
        max_global_steps=steps,
        stop_at_target=False,
        clock=runner.reference_clock(workload),
    )
    metric = f"validation/{workload.target_metric_name}"
    evals = [(s, m["validation/loss"], m[metric]) for s, m in result.eval_results]
    return np.array(evals, dtype=float), result.global_step


@pytest.mark.parametrize("workload_name", ["digits", "char_lm"])
def test_reference_contestant_matches_algoperfs_nadamw_step_for_step(workload_name):
    contestant = algoperf_contestant(ALGOPERF_DIR)
    steps = workloads.make_workload(workload_name).step_hint  # The whole schedule.
    theirs, their_steps = _losses(
        load_submission(contestant.path), contestant.hyperparameters, workload_name, steps
    )
    ours, our_steps = _losses(load_submission("nadamw_baseline"), None, workload_name, steps)
    assert their_steps == our_steps == steps
    assert len(ours) >= 6
    np.testing.assert_array_equal(ours[:, 0], theirs[:, 0])  # The same evaluation steps.
    np.testing.assert_allclose(ours[:, 1:], theirs[:, 1:], rtol=1e-3, atol=1e-6)
    assert ours[-1, 1] < ours[0, 1]  # Still training after the first evaluation.


def test_reference_update_rule_is_algoperfs_on_the_same_gradients():
    contestant = algoperf_contestant(ALGOPERF_DIR)
    workload = workloads.make_workload("digits")
    params = workload.init_model_fn(jax.random.PRNGKey(0))[0]
    theirs_module = load_submission(contestant.path)
    their_state, their_update = theirs_module.init_optimizer_state(
        workload, params, None, contestant.hyperparameters, None
    )
    tx = nadamw(workload.step_hint, HPARAMS)
    our_state = tx.init(params)
    theirs, ours = params, params
    keys = jax.random.split(jax.random.PRNGKey(1), workload.step_hint + 5)
    for step, key in enumerate(keys):  # Past step_hint: the rate stays 0 there.
        leaves, treedef = jax.tree.flatten(params)
        grads = jax.tree.unflatten(
            treedef,
            [
                jax.random.normal(k, x.shape)
                for k, x in zip(jax.random.split(key, len(leaves)), leaves, strict=True)
            ],
        )
        updates, their_state = their_update(grads, their_state, theirs)
        theirs = optax.apply_updates(theirs, updates)
        updates, our_state = tx.update(grads, our_state, ours)
        ours = optax.apply_updates(ours, updates)
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=f"step {step}")
    moved = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(params), strict=True)
    )
    assert moved > 1e-2  # The schedule's peak was applied.
