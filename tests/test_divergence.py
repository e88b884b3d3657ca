"""A first cycle whose peak learning rate is far too high diverges; the soft reset recovers.

The thesis's failure case (METHOD.md sections 4 and 5): a plan whose first cycle peaks at
100x the base learning rate (`cycle_lr_factors` [100, 1, 1]) blows up to NaN within a
few steps. With the default strategy `soft` and early switching, the non-finite
validation loss ends the cycle at the first evaluation, the reset takes tau = 1 (the
metric is NaN) and, the state being non-finite, the fresh state by selection, so no NaN
reaches the next cycle, which then trains to the target. With `none` the NaN stays for
the rest of the budget; `full` recovers along the same trajectory as `soft`.

The workload is a small regression with positive targets and a log link (prediction
exp(MLP(x)), mean squared error, target metric `validation/mse`, lower is better): with
a far too high learning rate the pre-activation passes log(float32 max) ~ 88.7, exp
overflows to inf, the gradients turn inf and Adam's update inf / inf = NaN. That makes
the blow-up a real finite-precision one, deterministic on CPU. The runs go through the
local runner (`train_once`), evaluating every 10 steps. Measured with
scripts/experiments/divergence_experiment.py (seeds 0-2): factor 1 and 10 reach the target;
factor 30 fails finitely (validation MSE up to 2-4, an early switch with tau 0.96 or
planned resets with tau 0.39-0.90); factor 300 gives NaN params at step 3 for every seed,
factor 100 for seeds 0 and 1 (this test's seed is 0).
"""

import functools
import math

import pytest

from cyclic_soft_reset import submission
from scripts.experiments.divergence import (
    DIVERGING_FACTOR,
    EVAL_EVERY,
    FIRST_PLANNED_BOUNDARY,
    STEP_HINT,
    RegressionWorkload,
    train,
    validation_mse,
)


@functools.cache
def run_plan(strategy: str, factor: float = DIVERGING_FACTOR, stop_at_target: bool = True):
    """The plan [factor, 1, 1] with `strategy` on the regression; cached: each runs once."""
    hyperparameters = {"reset_strategy": strategy, "cycle_lr_factors": [factor, 1.0, 1.0]}
    return train(RegressionWorkload(), hyperparameters, stop_at_target=stop_at_target)


@pytest.mark.slow
def test_workload_trains_to_target_with_an_ordinary_plan():
    """Control: the same workload and budget with the default plan reaches the target."""
    result, resets, _ = run_plan("soft", factor=1.0)
    assert result.target_step is not None and result.target_step <= FIRST_PLANNED_BOUNDARY
    assert all(math.isfinite(v) for _, v in validation_mse(result))


def test_soft_switches_early_resets_with_tau_one_and_reaches_target():
    result, resets, checks = run_plan("soft")
    # The first evaluation is already non-finite (the blow-up takes 2-3 steps) ...
    first_eval_step, first_mse = validation_mse(result)[0]
    assert first_eval_step == EVAL_EVERY and not math.isfinite(first_mse)
    # ... and so is the whole state: params, batch-norm statistics, Adam moments.
    assert checks[EVAL_EVERY] == {
        "params": False,
        "model_state": False,
        "opt_state": False,
        "count": EVAL_EVERY,
    }
    # The detector ends the first cycle at once, inside the planned cycle [0, 100).
    step, logged = resets[0]
    assert step == first_eval_step and 0 < step < FIRST_PLANNED_BOUNDARY
    assert logged["reset/cycle"] == 1
    assert logged["reset/early_switch"] == 1.0
    assert logged["reset/non_finite"] == 1.0
    assert math.isnan(logged["reset/metric"])
    assert logged["reset/tau"] == 1.0  # Exactly: a non-finite metric gives tau = 1.
    # The remaining 290 steps are split equally over the two cycles left.
    boundaries = submission.plan_summary(result.optimizer_state)["boundaries"]
    assert boundaries[:3] == [0, step, step + (STEP_HINT - step) // 2]
    # No NaN carried into cycle 1: after the reset step (learning rate 0) everything is
    # finite and the optimizer state is fresh (one step counted since the reset).
    assert checks[step + 1] == {
        "params": True,
        "model_state": True,
        "opt_state": True,
        "count": 1,
    }
    assert all(math.isfinite(v) for g, v in validation_mse(result) if g > step)
    # And the remaining cycles reach the target.
    assert result.target_step is not None and step < result.target_step < STEP_HINT


def test_none_flat_lines_for_the_rest_of_the_budget():
    """The thesis's cyclic schedule without reset never recovers from the NaN."""
    result, resets, checks = run_plan("none", stop_at_target=False)
    assert result.target_step is None
    # The whole budget was used: the plan ended the run at step T (the runner counts the
    # step whose update_params raised TrainingCompleteError, as AlgoPerf's does).
    assert result.stop_reason == "training_complete"
    assert result.global_step == STEP_HINT + 1
    values = [v for _, v in validation_mse(result)]
    assert len(values) == STEP_HINT // EVAL_EVERY + 1  # Every 10 steps, and at the end.
    assert not any(math.isfinite(v) for v in values)
    # The detector still switched (twice: cycle 2 is the last), but `none` keeps the NaN.
    assert [(s, m["reset/early_switch"], m["reset/tau"]) for s, m in resets] == [
        (EVAL_EVERY, 1.0, 1.0),
        (2 * EVAL_EVERY, 1.0, 1.0),
    ]
    assert not checks[STEP_HINT]["params"]
    assert not checks[STEP_HINT]["opt_state"]


def test_soft_rolls_a_non_finite_cycle_back_and_recovers_like_full():
    """After a non-finite cycle (failure rule (a)), soft rolls back to where the cycle
    started, with a fresh optimizer state; full starts from a fresh initialisation. Both
    recover and reach the target within the plan."""
    soft, soft_resets, _ = run_plan("soft")
    full, full_resets, checks = run_plan("full")
    step, logged = full_resets[0]
    assert (step, logged["reset/early_switch"], logged["reset/tau"]) == (EVAL_EVERY, 1.0, 1.0)
    assert checks[step + 1] == {"params": True, "model_state": True, "opt_state": True, "count": 1}
    assert full.target_step is not None and step < full.target_step < STEP_HINT
    soft_step, soft_logged = soft_resets[0]
    assert soft_step == step and soft_logged["reset/failed"] == 1.0
    assert soft_logged["reset/failure_rule"] == 0.0  # non-finite
    assert soft.target_step is not None and step < soft.target_step < STEP_HINT
