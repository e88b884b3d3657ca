"""The submission against the official AlgoPerf package (skipped when it is not installed).

`algoperf` is not on the package registry: install it from its repository
(`pip install -e '.[jax_cpu]'` in a clone of mlcommons/algorithmic-efficiency) to run
these. They check what a stand-in cannot: that our `spec` is AlgoPerf's own, that the
tuning search space parses with AlgoPerf's Halton sampler, and a few steps on AlgoPerf's
real JAX MNIST workload class, across two resets and to the end of a short plan, with
AlgoPerf's own metrics logger attached.
"""

import csv
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

algoperf = pytest.importorskip("algoperf")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

from algoperf import halton, logger_utils  # noqa: E402
from algoperf import spec as algoperf_spec  # noqa: E402
from algoperf.workloads.mnist.mnist_jax.workload import MnistWorkload  # noqa: E402

from cyclic_soft_reset import algoperf_compat, schedules, submission  # noqa: E402
from cyclic_soft_reset import hyperparameters as hp  # noqa: E402

pytestmark = pytest.mark.slow  # Subprocesses, fresh processes or AlgoPerf itself.

ROOT = Path(__file__).resolve().parents[1]
BATCH = 16
PLAN_STEPS = 30  # T: three cycles of 10 steps.


def test_compat_spec_is_algoperf_spec():
    assert algoperf_compat.HAVE_ALGOPERF
    assert algoperf_compat.spec is algoperf_spec
    assert submission.compat.spec is algoperf_spec  # What update_params raises from.
    assert submission.compat.spec.TrainingCompleteError is algoperf_spec.TrainingCompleteError
    assert submission.compat.spec.ForwardPassMode.TRAIN is algoperf_spec.ForwardPassMode.TRAIN


def test_search_space_points_from_algoperf_halton_resolve():
    """Every point AlgoPerf's sampler draws from our search space is a valid config."""
    space = json.loads((ROOT / "tuning_search_space.json").read_text())
    points = halton.generate_search(space, num_trials=5)
    for point in points:
        assert hasattr(point, "_asdict")  # A namedtuple, as the runner passes it.
        config = hp.resolve(point)
        for name, value in point._asdict().items():
            assert getattr(config, name) == pytest.approx(value)


def _fake_batch(step):
    rng = np.random.default_rng(step)
    return {
        "inputs": rng.normal(size=(BATCH, 28, 28, 1)).astype(np.float32),
        "targets": rng.integers(0, 10, size=(BATCH,)).astype(np.int32),
        "weights": np.ones((BATCH,), np.float32),
    }


def _eval_result(workload, accuracy, loss):
    """An evaluation as the runner appends it, with the workload's own metric names."""
    result = {}
    for split in ("train", "validation", "test"):
        result[f"{split}/{workload.target_metric_name}"] = accuracy
        result[f"{split}/loss"] = loss
    result.update(score=1.0, total_duration=1.0, accumulated_submission_time=1.0)
    return result


def test_steps_on_algoperf_mnist_workload_cross_resets_and_end_the_plan(tmp_path):
    workload = MnistWorkload()
    assert workload.target_metric_name == "accuracy"
    assert algoperf_compat.metric_direction(workload) is True  # Accuracy: higher is better.
    # AlgoPerf's own metrics logger (CSV + TensorBoard), as the runner attaches it.
    logger = logger_utils.set_up_loggers(
        str(tmp_path), types.SimpleNamespace(use_wandb=False), None
    )
    workload.attach_metrics_logger(logger)

    rng = jax.random.PRNGKey(0)
    params, model_state = workload.init_model_fn(rng)
    # v2's plan of 3 cycles and its rules (the default plans one cycle), in steps
    # (train_state = {}: no step time), ending the run at its end.
    hyperparameters = {
        **hp.V2_DEFAULTS,
        "cycle_budget_factor": PLAN_STEPS / workload.step_hint,
        "stop_when_plan_ends": True,
    }
    optimizer_state = submission.init_optimizer_state(
        workload, params, model_state, hyperparameters, rng
    )
    assert optimizer_state[1].settings.higher_is_better is True
    boundaries = submission.plan_summary(optimizer_state)["boundaries"]
    assert boundaries == [0, 10, 20, 30]

    eval_results, accuracies, step = [], {}, 0
    with pytest.raises(algoperf_spec.TrainingCompleteError):
        for step in range(2 * PLAN_STEPS):
            if step in (5, 15, 25):  # One evaluation inside each cycle.
                accuracies[step] = 0.5 + step / 100
                eval_results.append((step, _eval_result(workload, accuracies[step], 1.0)))
            optimizer_state, params, model_state = submission.update_params(
                workload=workload,
                current_param_container=params,
                current_params_types=workload.model_params_types,
                model_state=model_state,
                hyperparameters=hyperparameters,
                batch=_fake_batch(step),
                loss_type=workload.loss_type,
                optimizer_state=optimizer_state,
                eval_results=eval_results,
                global_step=step,
                rng=jax.random.fold_in(rng, step),
                train_state={},
            )
    assert step == PLAN_STEPS  # Raised at the end of the plan, before any update.
    assert optimizer_state[0].controller.cycle == 2
    leaves = jax.tree.leaves(params)
    assert leaves and all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)

    # The reset rows in AlgoPerf's measurements.csv: steps, cycles and tau from accuracy.
    with open(tmp_path / "measurements.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("reset/cycle")]
    assert [int(float(row["global_step"])) for row in rows] == [10, 20]
    assert [int(float(row["reset/cycle"])) for row in rows] == [1, 2]
    target = workload.validation_target_value
    for row, eval_step in zip(rows, (5, 15), strict=True):
        assert float(row["reset/metric"]) == pytest.approx(accuracies[eval_step])
        expected_tau = (target - accuracies[eval_step]) / target
        assert float(row["reset/tau"]) == pytest.approx(expected_tau)
    lr = submission.learning_rates(optimizer_state, np.arange(PLAN_STEPS))
    assert lr[10] == lr[20] == 0.0 and np.all(np.isfinite(lr))
    assert schedules.total_steps(optimizer_state[0].controller.plan) == PLAN_STEPS
    assert not math.isnan(optimizer_state[0].controller.last_metric)
