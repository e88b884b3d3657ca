"""Warm-up and decay shapes (the plan's learning rate at a step: `optax_schedule`).

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

import jax.numpy as jnp

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


def select(fns, index, x):
    """fns[index](x), with index a traced integer: all shapes are cheap scalars."""
    return jnp.choose(index, [fn(x) for fn in fns], mode="clip")
