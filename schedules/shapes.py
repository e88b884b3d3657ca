"""Warm-up and decay shapes, and the learning rate of a plan at a step.

With s = t - b_i the step inside cycle i, L_i = b_{i+1} - b_i, W_i = w_i L_i (a real
number) and u = (s - W_i) / (L_i - W_i), METHOD.md section 3:

| shape       | warm-up, 0 <= s < W_i             | decay, W_i <= s < L_i                        |
| linear      | s / W_i                           | 1 - u                                        |
| cosine      | (1 - cos(pi s / W_i)) / 2         | (1 + cos(pi u)) / 2                          |
| exponential | (e^(k s / W_i) - 1) / (e^k - 1)   | (e^(-k u) - e^(-k)) / (1 - e^(-k))           |

each times the cycle's peak eta_i, with k = kappa = 5. Every cycle starts at exactly 0 and
reaches 0 at its end boundary. All functions are pure jax.numpy and jit-compatible; the
shape of a cycle is data (an index), so nothing is recompiled when it changes.
"""

from typing import TYPE_CHECKING

import jax.numpy as jnp

if TYPE_CHECKING:  # plan.py imports the shape names from here.
    from .plan import CyclePlan

KAPPA = 5.0


def linear_warmup(x):
    """x = s / W in [0, 1) -> x."""
    return x


def cosine_warmup(x):
    """x = s / W in [0, 1) -> (1 - cos(pi x)) / 2."""
    return 0.5 * (1.0 - jnp.cos(jnp.pi * x))


def exponential_warmup(x):
    """x = s / W in [0, 1) -> (exp(kappa x) - 1) / (exp(kappa) - 1)."""
    return jnp.expm1(KAPPA * x) / jnp.expm1(KAPPA)


def linear_decay(u):
    """u in [0, 1] -> 1 - u."""
    return 1.0 - u


def cosine_decay(u):
    """u in [0, 1] -> (1 + cos(pi u)) / 2."""
    return 0.5 * (1.0 + jnp.cos(jnp.pi * u))


def exponential_decay(u):
    """u in [0, 1] -> (exp(-kappa u) - exp(-kappa)) / (1 - exp(-kappa))."""
    return (jnp.exp(-KAPPA * u) - jnp.exp(-KAPPA)) / (1.0 - jnp.exp(-KAPPA))


# The registries: a plan names its shapes and stores their indices here (in this order),
# so adding a shape is one function and one entry. The first entry is the default.
WARMUP = {"linear": linear_warmup, "cosine": cosine_warmup, "exponential": exponential_warmup}
DECAY = {"cosine": cosine_decay, "linear": linear_decay, "exponential": exponential_decay}
WARMUP_SHAPES = tuple(WARMUP)
DECAY_SHAPES = tuple(DECAY)


def _select(fns, index, x):
    """fns[index](x), with index a traced integer: all shapes are cheap scalars."""
    return jnp.choose(index, [fn(x) for fn in fns], mode="clip")


def learning_rate(step, plan: "CyclePlan"):
    """The plan's learning rate at `step` (a scalar or an array of steps).

    eta_i * warmup(s / W_i) for s < W_i, eta_i * decay(u) after, 0 outside [b_0, b_N).
    Pure and jit-compatible in both arguments: the plan's numbers are traced arrays.
    """
    b = jnp.asarray(plan.boundaries)
    step = jnp.asarray(step)
    n = b.shape[0] - 1
    i = jnp.clip(jnp.searchsorted(b, step, side="right") - 1, 0, n - 1)
    peak = jnp.asarray(plan.peak_learning_rates)[i]
    start, end = b[i], b[i + 1]
    length = (end - start).astype(peak.dtype)
    s = (step - start).astype(peak.dtype)
    warm = jnp.asarray(plan.warmup_fractions)[i] * length
    in_warmup = s < warm
    # Guard the unused branch of each `where` against 0/0.
    x = s / jnp.where(in_warmup, warm, 1.0)
    u = jnp.where(in_warmup, 0.0, (s - warm) / jnp.maximum(length - warm, 1e-12))
    value = jnp.where(
        in_warmup,
        _select(tuple(WARMUP.values()), jnp.asarray(plan.warmup_shapes)[i], x),
        _select(tuple(DECAY.values()), jnp.asarray(plan.decay_shapes)[i], jnp.clip(u, 0.0, 1.0)),
    )
    inside = (step >= b[0]) & (step < b[n])
    return jnp.where(inside, peak * value, jnp.zeros_like(peak))
