"""Reset strategies at a cycle boundary (METHOD.md section 4).

Each strategy maps (current, fresh, tau, alpha, failed) to the state the next cycle
starts from, where current and fresh are `TrainState`s (params, model state, optimizer
state) and fresh comes from a new initialisation. They are pure jax functions: jit one
with tau, alpha and failed as traced scalars and it compiles once for every reset.

| strategy      | params                        | optimizer moments                     |
| none          | theta                         | m, v                                  |
| full          | theta0                        | fresh (m = v = 0, n = 0)              |
| params_only   | theta0                        | m, v (bit for bit)                    |
| soft          | (1 - tau) theta + tau theta0  | (1 - tau alpha) m, (1 - tau alpha) v  |

`soft` also blends the model state (batch-norm statistics) with tau and keeps the step
count n. Two decisions of METHOD.md make it safe:
  * a failed cycle (ended by an early switch) hands on no momentum: params and model
    state are blended, the optimizer state is fresh;
  * if any params, model state or moment entry is not finite, the result is the fresh
    state, chosen by selection (`where`), never by arithmetic: (1 - tau) NaN is NaN.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .moments import all_finite, moments_finite, scale_moments


class TrainState(NamedTuple):
    """What a reset acts on."""

    params: Any
    model_state: Any
    opt_state: Any


class ResetStrategy(NamedTuple):
    """A reset strategy: `apply(current, fresh, tau, alpha, failed) -> TrainState`.

    `needs_fresh` is False when `apply` ignores `fresh`, so a caller can skip the
    new initialisation (and pass `current` in its place).
    """

    apply: Callable[..., TrainState]
    needs_fresh: bool


def blend(current, fresh, tau):
    """(1 - tau) x + tau x0 for inexact leaves, in each leaf's dtype.

    Leaves that are not floating point (counters) are kept from `current`.
    """

    def mix(x, x0):
        if not jnp.issubdtype(jnp.result_type(x), jnp.inexact):
            return x
        return ((1.0 - tau) * x + tau * x0).astype(jnp.result_type(x))

    return jax.tree.map(mix, current, fresh)


def tree_select(pred, on_true, on_false):
    """Leafwise `where(pred, a, b)` over two trees of the same structure."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def is_finite_state(state: TrainState):
    """A scalar bool array: params, model state and Adam moments are all finite."""
    return all_finite((state.params, state.model_state)) & moments_finite(state.opt_state)


def none_reset(current: TrainState, fresh, tau, alpha, failed) -> TrainState:
    """Cyclical schedule: keep theta, m and v."""
    del fresh, tau, alpha, failed
    return current


def full_reset(current: TrainState, fresh: TrainState, tau, alpha, failed) -> TrainState:
    """Sequential schedule: the fresh state, exactly."""
    del current, tau, alpha, failed
    return fresh


def params_only_reset(current: TrainState, fresh: TrainState, tau, alpha, failed) -> TrainState:
    """Fresh params and model state, the optimizer state kept bit for bit."""
    del tau, alpha, failed
    return TrainState(fresh.params, fresh.model_state, current.opt_state)


def soft_reset(current: TrainState, fresh: TrainState, tau, alpha, failed) -> TrainState:
    """theta <- (1 - tau) theta + tau theta0; m, v <- (1 - tau alpha) m, v.

    The model state is blended like the params; the step count n is kept. With
    `failed` (a traced bool) the optimizer state is the fresh one instead; with any
    non-finite entry in the current state the whole result is `fresh`.
    """
    tau = jnp.asarray(tau, jnp.float32)
    kept = scale_moments(current.opt_state, 1.0 - tau * alpha)
    blended = TrainState(
        params=blend(current.params, fresh.params, tau),
        model_state=blend(current.model_state, fresh.model_state, tau),
        opt_state=tree_select(failed, fresh.opt_state, kept),
    )
    return tree_select(is_finite_state(current), blended, fresh)


STRATEGIES = {
    "none": ResetStrategy(none_reset, needs_fresh=False),
    "full": ResetStrategy(full_reset, needs_fresh=True),
    "params_only": ResetStrategy(params_only_reset, needs_fresh=True),
    "soft": ResetStrategy(soft_reset, needs_fresh=True),
}


def get_strategy(name: str) -> ResetStrategy:
    """The strategy registered under `name`; ValueError listing the known names."""
    if name not in STRATEGIES:
        raise ValueError(f"reset_strategy must be one of {sorted(STRATEGIES)}, got {name!r}.")
    return STRATEGIES[name]
