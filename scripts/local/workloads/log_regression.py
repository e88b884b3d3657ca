"""``log_regression`` (not registered): the divergence experiment's regression workload.

A small regression with positive targets and a log link (prediction exp(MLP(x)), mean
squared error, target metric ``validation/mse``, lower is better): with a far too high
learning rate the pre-activation passes log(float32 max) ~ 88.7, exp overflows to inf,
the gradients turn inf and Adam's update inf / inf = NaN. That makes the blow-up a real
finite-precision one, deterministic on CPU (``scripts/experiments/divergence.py``).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cyclic_soft_reset.algoperf_compat import spec

from .losses import masked_sums
from .tiny import GeneratedDataWorkload

NUM_FEATURES = 8
STEP_HINT = 300  # The plan: T = 300 steps, cycles [0, 100), [100, 200), [200, 300).
TARGET_MSE = 0.17  # The irreducible error is ~0.04; predicting the mean gives ~0.67.


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


class RegressionWorkload(GeneratedDataWorkload):
    """The parts of AlgoPerf's Workload interface the submission and the runner use.

    The batch-norm statistics give the reset a model state to act on (and one the
    divergence turns NaN). There is no dropout: `dropout_rate` is accepted and ignored.
    """

    def __init__(self, target: float = TARGET_MSE, step_hint: int = STEP_HINT):
        super().__init__(
            LogLinkMLP(), make_data(1, 2048), make_data(2, 512), "mse", False, target, step_hint
        )

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
        return masked_sums((logits_batch - label_batch) ** 2, mask_batch)

    @functools.partial(jax.jit, static_argnums=0)
    def _mse(self, params, model_state, inputs, targets):
        variables = {"params": params, "batch_stats": model_state}
        return jnp.mean((self._model.apply(variables, inputs, train=False) - targets) ** 2)

    def _evaluate(self, params, model_state):
        """{'train/mse', 'train/loss', 'validation/mse', 'validation/loss'} as floats."""
        result = {}
        for split, (inputs, targets) in (("train", self._train), ("validation", self._validation)):
            mse = float(self._mse(params, model_state, inputs, targets))
            result[f"{split}/mse"] = result[f"{split}/loss"] = mse
        return result
