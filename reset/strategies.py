"""Reset strategies at a cycle boundary (METHOD.md section 4).

A strategy is a small object carrying its own parameters; its `apply(current, fresh,
outcome)` maps the state the finished cycle ends with (`current`), a fresh initialisation
(`fresh`) and how the cycle went (`CycleOutcome`: tau, failed) to the state the next cycle
starts from. States are `TrainState`s (params, model state, optimizer state). `apply` is
a pure jax function: jit it with the outcome traced and it compiles once for every reset.

| strategy      | params                        | optimizer moments                     |
| none          | theta                         | m, v                                  |
| full          | theta0                        | fresh (m = v = 0, n = 0)              |
| params_only   | theta0                        | m, v (bit for bit)                    |
| soft(alpha)   | (1 - tau) theta + tau theta0  | (1 - tau alpha) m, (1 - tau alpha) v  |

`soft` also blends the model state (batch-norm statistics) with tau and keeps the step
count n. Two decisions of METHOD.md make it safe:
  * a failed cycle (ended by an early switch) hands on no momentum: with
    `fresh_moments_when_failed` params and model state are blended, the optimizer state
    is fresh;
  * if any params, model state or moment entry is not finite, the result is the fresh
    state, chosen by selection (`where`), never by arithmetic: (1 - tau) NaN is NaN.

Moments are the optimizer state's `mu`, `trace` and `nu` fields (see `reset.moments`):
Adam's m and v, Lion's m, sgd's momentum buffer. Where the state also carries the moments'
weights (`w1`, `w2` of `reset.scale_by_weighted_adam`, METHOD.md section 4 v2) `soft` scales
them by the same 1 - tau alpha: the kept history then counts for what it is, and tau alpha = 1
gives exactly `full`'s optimizer state.
"""

import inspect
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .moments import all_finite, check_moments, moments_finite, scale_moments


class TrainState(NamedTuple):
    """What a reset acts on."""

    params: Any
    model_state: Any
    opt_state: Any


class CycleOutcome(NamedTuple):
    """How the finished cycle went (both may be traced).

    Attributes:
      tau: float32 scalar in [0, 1], the soft-reset coefficient (`reset.tau`).
      failed: bool scalar, the cycle was ended by an early switch.
    """

    tau: Any
    failed: Any


class ResetStrategy(NamedTuple):
    """A reset strategy: `apply(current, fresh, outcome) -> TrainState`.

    `needs_fresh` is False when `apply` ignores `fresh`, so a caller can skip the new
    initialisation (and pass `current` in its place).
    """

    name: str
    needs_fresh: bool
    apply: Callable[[TrainState, TrainState, CycleOutcome], TrainState]


def blend(current, fresh, tau):
    """(1 - tau) x + tau x0 for inexact leaves, in each leaf's dtype.

    This is optax's Polyak step `optax.incremental_update(x0, x, tau)`, which computes
    tau x0 + (1 - tau) x. It is written out here with the addition's operands in this
    order on purpose: under jit, XLA contracts a * b + c * d into a fused multiply-add,
    and which product it fuses follows the operand order, so the two orders differ in
    the last bit (measured on CPU, jax 0.7 and 0.10). This order is the one results were
    recorded with. Leaves that are not floating point (counters) are kept from `current`.
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
    """A scalar bool array: params, model state and moments are all finite."""
    return all_finite((state.params, state.model_state)) & moments_finite(state.opt_state)


# --- the strategies -------------------------------------------------------------------


def none() -> ResetStrategy:
    """Cyclical schedule: keep theta, m and v (`fresh` is ignored)."""

    def apply(current: TrainState, fresh: TrainState, outcome: CycleOutcome) -> TrainState:
        del fresh, outcome
        return current

    return ResetStrategy("none", needs_fresh=False, apply=apply)


def full() -> ResetStrategy:
    """Sequential schedule: the fresh state, exactly."""

    def apply(current: TrainState, fresh: TrainState, outcome: CycleOutcome) -> TrainState:
        del current, outcome
        return fresh

    return ResetStrategy("full", needs_fresh=True, apply=apply)


def params_only() -> ResetStrategy:
    """Fresh params and model state, the optimizer state kept bit for bit."""

    def apply(current: TrainState, fresh: TrainState, outcome: CycleOutcome) -> TrainState:
        del outcome
        return TrainState(fresh.params, fresh.model_state, current.opt_state)

    return ResetStrategy("params_only", needs_fresh=True, apply=apply)


def soft(alpha: float = 0.5, fresh_moments_when_failed: bool = True) -> ResetStrategy:
    """Soft reset: theta <- (1 - tau) theta + tau theta0; m, v <- (1 - tau alpha) m, v.

    The model state is blended like the params; the step count n is kept (in a state with
    moment weights, m, v, w1, w2 are all scaled, and only tau alpha = 1 restarts n). With
    `fresh_moments_when_failed` and `outcome.failed` the optimizer state is the fresh one
    instead. With any non-finite entry in the current params, model state or moments the
    whole result is `fresh`. `apply` raises ValueError if the optimizer state holds no
    moments (`reset.check_moments`).

    Args:
      alpha: in [0, 1], how much of tau the moments are reset by (thesis: 0.5).
      fresh_moments_when_failed: a failed cycle hands on no momentum (METHOD.md section 4).
    """
    if not (_is_real(alpha) and 0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}.")
    if not isinstance(fresh_moments_when_failed, bool | np.bool_):
        raise ValueError(
            f"fresh_moments_when_failed must be True or False, got {fresh_moments_when_failed!r}."
        )
    alpha, fresh_moments_when_failed = float(alpha), bool(fresh_moments_when_failed)

    def apply(current: TrainState, fresh: TrainState, outcome: CycleOutcome) -> TrainState:
        check_moments(current.opt_state)
        tau = jnp.asarray(outcome.tau, jnp.float32)
        opt_state = scale_moments(current.opt_state, 1.0 - tau * alpha)
        if fresh_moments_when_failed:
            opt_state = tree_select(outcome.failed, fresh.opt_state, opt_state)
        blended = TrainState(
            params=blend(current.params, fresh.params, tau),
            model_state=blend(current.model_state, fresh.model_state, tau),
            opt_state=opt_state,
        )
        return tree_select(is_finite_state(current), blended, fresh)

    return ResetStrategy("soft", needs_fresh=True, apply=apply)


def _is_real(x) -> bool:
    """A finite real number that is not a bool."""
    return (
        isinstance(x, int | float | np.integer | np.floating)
        and not isinstance(x, bool | np.bool_)
        and math.isfinite(x)
    )


# --- the registry ---------------------------------------------------------------------

STRATEGIES: dict[str, Callable[..., ResetStrategy]] = {
    "none": none,
    "full": full,
    "params_only": params_only,
    "soft": soft,
}


def make_strategy(name: str, **params) -> ResetStrategy:
    """The strategy registered under `name`, built with `params`.

    ValueError listing the known names for an unknown name, and naming the strategy's
    accepted parameters for an unknown parameter.
    """
    if name not in STRATEGIES:
        raise ValueError(f"reset_strategy must be one of {sorted(STRATEGIES)}, got {name!r}.")
    factory = STRATEGIES[name]
    accepted = list(inspect.signature(factory).parameters)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        takes = f"accepts only {accepted}" if accepted else "accepts no parameters"
        raise ValueError(f"reset strategy {name!r} {takes}, got {unknown}.")
    return factory(**params)
