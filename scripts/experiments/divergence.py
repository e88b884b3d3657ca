"""A first cycle whose peak learning rate is far too high: the runs behind
``tests/test_divergence.py`` and ``python -m scripts.experiments.divergence_experiment``.

The workload is ``scripts/local/workloads/log_regression.py``: a plan whose first cycle
peaks at 100x the base learning rate (``cycle_lr_factors`` [100, 1, 1]) blows up to NaN
within a few steps.
"""

import jax
import numpy as np

from cyclic_soft_reset import reset, submission
from cyclic_soft_reset.records import ResetRecord, resets_in
from scripts.experiments.design import V2_DEFAULTS
from scripts.local import runner
from scripts.local.workloads.log_regression import STEP_HINT, TARGET_MSE, RegressionWorkload

__all__ = ["STEP_HINT", "TARGET_MSE", "RegressionWorkload", "resets", "train", "validation_mse"]

FIRST_PLANNED_BOUNDARY = 100
EVAL_EVERY = 10
DIVERGING_FACTOR = 100.0
SEED = 0


def finite(tree) -> bool:
    """Every floating-point entry of the tree is finite (host check)."""
    leaves = jax.tree.leaves(jax.device_get(tree))
    return all(np.isfinite(x).all() for x in leaves if np.issubdtype(x.dtype, np.inexact))


def validation_mse(result):
    """``[(step, validation MSE)]`` of a run's evaluations."""
    return [(step, m["validation/mse"]) for step, m in result.eval_results]


def resets(result):
    """``[(step, metrics)]`` of the resets the submission logged in a run."""
    records = result.metrics_logger.records
    return [(s, m) for s, m, _ in records if ResetRecord.from_metrics(s, m) is not None]


def train(workload, hyperparameters, *, seed=SEED, stop_at_target=True, eval_every=EVAL_EVERY):
    """Trains with the local runner (``train_once``, batch size 64) until the plan
    (T = step_hint) ends; returns (``runner.RunResult``, logged resets, checks).

    checks[g] holds, for the first `eval_every` steps, every step that ends with an
    evaluation and every step that follows a reset, whether params, model state and the
    whole optimizer state are finite after g steps, and the Adam step count.
    """
    logger = runner.MetricsRecorder()
    checks = {}

    def hook(global_step, optimizer_state, params, model_state, eval_results):
        after_reset = any(r.step == global_step - 1 for r in resets_in(logger.records))
        if global_step <= eval_every or global_step % eval_every == 0 or after_reset:
            opt_state = optimizer_state[0].opt_state
            checks[global_step] = {
                "params": finite(params),
                "model_state": finite(model_state),
                "opt_state": finite(opt_state),
                "count": int(reset.moment_states(opt_state)[0].count),
            }

    result = runner.train_once(
        workload,
        submission,
        # A v2 study (3 cycles, the v2 method), and its budget: T.
        {**V2_DEFAULTS, **hyperparameters, "stop_when_plan_ends": True},
        seed,
        global_batch_size=64,
        eval_every_steps=eval_every,
        metrics_logger=logger,
        stop_at_target=stop_at_target,
        hooks=runner.RunnerHooks(after_step=hook),
    )
    return result, resets(result), checks
