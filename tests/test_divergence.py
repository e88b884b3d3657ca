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
the blow-up a real finite-precision one, deterministic on CPU. Measured with
scripts/divergence_experiment.py (seeds 0-2): factor 1 and 10 reach the target in the
first cycle; factor 30 fails finitely (validation MSE up to 1.4-4, an early switch with
tau 0.87-0.96); factors 100 and 300 give NaN params by step 3 or 4.
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import loop
import reset
import submission
from algoperf_compat import spec

NUM_FEATURES = 8
STEP_HINT = 300  # The plan: T = 300 steps, cycles [0, 100), [100, 200), [200, 300).
FIRST_PLANNED_BOUNDARY = 100
EVAL_EVERY = 10
TARGET_MSE = 0.17  # The irreducible error is ~0.04; predicting the mean gives ~0.67.
DIVERGING_FACTOR = 100.0
SEED = 0


def make_data(seed: int, n: int, noise: float = 0.1):
    """Positive targets y = exp(g(x) + noise) with a smooth g (its weights from seed 0)."""
    a, b = np.random.default_rng(0).normal(size=(2, NUM_FEATURES)) / np.sqrt(NUM_FEATURES)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, NUM_FEATURES))
    log_y = 0.5 * np.tanh(2 * x @ a) + 0.3 * (x @ b) + 0.5 + noise * rng.normal(size=n)
    return x.astype(np.float32), np.exp(log_y).astype(np.float32)


class LogLinkMLP(nn.Module):
    """Dense-BatchNorm-ReLU, then ReLU layers, then exp of a linear output."""

    width: int = 64
    depth: int = 3

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.relu(
            nn.BatchNorm(use_running_average=not train, momentum=0.9)(nn.Dense(self.width)(x))
        )
        for _ in range(self.depth - 1):
            x = nn.relu(nn.Dense(self.width)(x))
        return jnp.exp(nn.Dense(1)(x)[:, 0])


class RegressionWorkload:
    """The parts of AlgoPerf's Workload interface the submission and tests/loop.py use.

    The batch-norm statistics give the reset a model state to act on (and one the
    divergence turns NaN). There is no dropout: `dropout_rate` is accepted and ignored.
    """

    target_metric_name = "mse"

    def __init__(self, target: float = TARGET_MSE, step_hint: int = STEP_HINT):
        self._target = target
        self._step_hint = step_hint
        self._model = LogLinkMLP()
        self._train = make_data(1, 2048)
        self._validation = make_data(2, 512)
        self.metrics_logger = None
        self.param_shapes = None
        self.model_params_types = None

    @property
    def validation_target_value(self) -> float:
        return self._target

    @property
    def step_hint(self) -> int:
        return self._step_hint

    def has_reached_validation_target(self, eval_result) -> bool:
        return eval_result["validation/mse"] < self._target

    def init_model_fn(self, rng):
        variables = self._model.init({"params": rng}, jnp.zeros((1, NUM_FEATURES)), train=False)
        params = variables["params"]
        self.param_shapes = jax.tree.map(lambda x: spec.ShapeTuple(x.shape), params)
        self.model_params_types = jax.tree.map(lambda _: spec.ParameterType.WEIGHT, params)
        return params, variables["batch_stats"]

    def model_fn(self, params, batch, model_state, mode, rng, update_batch_norm, dropout_rate=0.0):
        del rng, dropout_rate
        train = mode == spec.ForwardPassMode.TRAIN and update_batch_norm
        variables = {"params": params, "batch_stats": model_state}
        if not train:
            return self._model.apply(variables, batch["inputs"], train=False), model_state
        out, updates = self._model.apply(
            variables, batch["inputs"], train=True, mutable=["batch_stats"]
        )
        return out, updates["batch_stats"]

    def loss_fn(self, label_batch, logits_batch, mask_batch=None, label_smoothing=0.0):
        del label_smoothing
        per_example = (logits_batch - label_batch) ** 2
        n_valid = per_example.shape[0]
        if mask_batch is not None:
            per_example = per_example * mask_batch
            n_valid = mask_batch.sum()
        return {
            "summed": per_example.sum(),
            "n_valid_examples": n_valid,
            "per_example": per_example,
        }

    def train_batches(self, seed: int, batch_size: int, start_step: int = 0):
        """An infinite stream of training batches; batch t depends only on (seed, t)."""
        inputs, targets = self._train
        step = start_step
        while True:
            idx = np.random.default_rng([seed, step]).choice(len(targets), batch_size, False)
            yield {"inputs": inputs[idx], "targets": targets[idx]}
            step += 1

    @functools.partial(jax.jit, static_argnums=0)
    def _mse(self, params, model_state, inputs, targets):
        variables = {"params": params, "batch_stats": model_state}
        return jnp.mean((self._model.apply(variables, inputs, train=False) - targets) ** 2)

    def eval_model(self, params, model_state):
        """{'train/mse', 'train/loss', 'validation/mse', 'validation/loss'} as floats."""
        result = {}
        for split, (inputs, targets) in (("train", self._train), ("validation", self._validation)):
            mse = float(self._mse(params, model_state, inputs, targets))
            result[f"{split}/mse"] = result[f"{split}/loss"] = mse
        return result


def _finite(tree) -> bool:
    """Every floating-point entry of the tree is finite (host check)."""
    leaves = jax.tree.leaves(jax.device_get(tree))
    return all(np.isfinite(x).all() for x in leaves if np.issubdtype(x.dtype, np.inexact))


def train(workload, hyperparameters, *, seed=SEED, stop_at_target=True, eval_every=EVAL_EVERY):
    """Trains through tests/loop.py; returns (loop result, logged resets, checks).

    checks[g] holds, for the first `eval_every` steps, every step that ends with an
    evaluation and every step that follows a reset, whether params, model state and the
    whole optimizer state are finite after g steps, and the Adam step count.
    """
    logger = workload.metrics_logger = loop.RecordingLogger()
    checks = {}

    def hook(global_step, optimizer_state, params, model_state, eval_results):
        after_reset = any(step == global_step - 1 for step, _ in logger.resets())
        if global_step <= eval_every or global_step % eval_every == 0 or after_reset:
            opt_state = optimizer_state[0].opt_state
            checks[global_step] = {
                "params": _finite(params),
                "model_state": _finite(model_state),
                "opt_state": _finite(opt_state),
                "count": int(reset.moment_states(opt_state)[0].count),
            }

    result = loop.run(
        workload,
        hyperparameters,
        seed=seed,
        num_steps=10 * workload.step_hint,  # The plan (T = step_hint) ends the run first.
        eval_every=eval_every,
        stop_at_target=stop_at_target,
        on_step=hook,
    )
    return result, logger.resets(), checks


@functools.cache
def run_plan(strategy: str, factor: float = DIVERGING_FACTOR, stop_at_target: bool = True):
    """The plan [factor, 1, 1] with `strategy` on the regression; cached: each runs once."""
    hyperparameters = {"reset_strategy": strategy, "cycle_lr_factors": [factor, 1.0, 1.0]}
    return train(RegressionWorkload(), hyperparameters, stop_at_target=stop_at_target)


def _val(result):
    return [(step, m["validation/mse"]) for step, m in result["eval_results"]]


def test_workload_trains_to_target_with_an_ordinary_plan():
    """Control: the same workload and budget with the default plan reaches the target."""
    result, resets, _ = run_plan("soft", factor=1.0)
    assert result["reached_at"] is not None and result["reached_at"] <= FIRST_PLANNED_BOUNDARY
    assert all(math.isfinite(v) for _, v in _val(result))


def test_soft_switches_early_resets_with_tau_one_and_reaches_target():
    result, resets, checks = run_plan("soft")
    # The first evaluation is already non-finite (the blow-up takes 2-3 steps) ...
    first_eval_step, first_mse = _val(result)[0]
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
    boundaries = submission.plan_summary(result["optimizer_state"])["boundaries"]
    assert boundaries[:3] == [0, step, step + (STEP_HINT - step) // 2]
    # No NaN carried into cycle 1: after the reset step (learning rate 0) everything is
    # finite and the optimizer state is fresh (one step counted since the reset).
    assert checks[step + 1] == {
        "params": True,
        "model_state": True,
        "opt_state": True,
        "count": 1,
    }
    assert all(math.isfinite(v) for g, v in _val(result) if g > step)
    # And the remaining cycles reach the target.
    assert result["reached_at"] is not None and step < result["reached_at"] < STEP_HINT


def test_none_flat_lines_for_the_rest_of_the_budget():
    """The thesis's cyclic schedule without reset never recovers from the NaN."""
    result, resets, checks = run_plan("none", stop_at_target=False)
    assert result["reached_at"] is None
    assert result["global_step"] == STEP_HINT  # The whole budget was used.
    values = [v for _, v in _val(result)]
    assert len(values) == STEP_HINT // EVAL_EVERY
    assert not any(math.isfinite(v) for v in values)
    # The detector still switched (twice: cycle 2 is the last), but `none` keeps the NaN.
    assert [(s, m["reset/early_switch"], m["reset/tau"]) for s, m in resets] == [
        (EVAL_EVERY, 1.0, 1.0),
        (2 * EVAL_EVERY, 1.0, 1.0),
    ]
    assert not checks[STEP_HINT]["params"]
    assert not checks[STEP_HINT]["opt_state"]


def test_full_recovers_exactly_like_soft():
    """After a non-finite cycle, soft's reset is the full reset: same fresh state, same run."""
    soft, soft_resets, _ = run_plan("soft")
    full, full_resets, checks = run_plan("full")
    step, logged = full_resets[0]
    assert (step, logged["reset/early_switch"], logged["reset/tau"]) == (EVAL_EVERY, 1.0, 1.0)
    assert checks[step + 1] == {"params": True, "model_state": True, "opt_state": True, "count": 1}
    assert full["reached_at"] is not None and step < full["reached_at"] < STEP_HINT
    assert full["reached_at"] == soft["reached_at"]
    np.testing.assert_array_equal(_val(full), _val(soft))
