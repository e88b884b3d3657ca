"""When a cycle failed, and model state re-estimated after a reset (METHOD.md section 4, v2).

A cycle **failed** when any of its enabled rules holds:
  (a) non-finite: its params, model state or moments hold a non-finite value;
  (b) norm: the params' global norm at its end is outside [1/kappa, kappa] x their norm
      at its start (blown up or collapsed);
  (c) no improvement: its best evaluation is no better than the last evaluation before
      it began (the cycle controller judges this one from the evaluations).
An early switch alone is not a failure. A failed cycle is rolled back by `soft`.

Model state that is an exponential moving average (batch-norm statistics,
s <- mu s + (1 - mu) b for a batch statistic b) can be re-estimated from one batch under
new params with two forward passes, whatever the (unknown, per-leaf) momentum mu:
from s = 0 a pass gives s0 = (1 - mu) b, from s = 1 it gives s1 = mu + (1 - mu) b, so
mu = s1 - s0 and b = s0 / (1 - mu).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .moments import all_finite, moments_finite

NON_FINITE = "non_finite"
NORM = "norm"
NO_IMPROVEMENT = "no_improvement"
FAILURE_RULES = (NON_FINITE, NORM, NO_IMPROVEMENT)
# Rule (b) decides alone (v2), or only where an early switch confirms it (v3).
NORM_RULES = ("alone", "confirmed")


class FailureCheck(NamedTuple):
    """What the device measured of a finished cycle (scalars, maybe traced)."""

    failed: Any  # bool: an enabled rule holds
    finite: Any  # bool: params, model state and moments are all finite
    norm_ratio: Any  # float: ||theta_end|| / ||theta_start||
    rule: Any  # int32: index in FAILURE_RULES of the first rule that holds, -1 if none


def global_norm(tree) -> jax.Array:
    """sqrt(sum of squares) over every inexact leaf of a tree, in float32: failure rule
    (b)'s params norm, and the gradient norm the training step logs."""
    leaves = [
        jnp.sum(jnp.square(x.astype(jnp.float32)))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return jnp.sqrt(sum(leaves)) if leaves else jnp.zeros((), jnp.float32)


def check_cycle(
    current, start_norm, no_improvement, kappa: float, rules=FAILURE_RULES, confirm=True
) -> FailureCheck:
    """Rules (a) and (b) measured on `current` (a TrainState at the cycle's end) against
    `start_norm`, the global norm of the params the cycle started from (`global_norm`);
    rule (c) given by the caller (`no_improvement`).

    kappa > 1; `rules` names the enabled rules (a subset of FAILURE_RULES). Rule (b) holds
    only where `confirm` (a bool, maybe traced) does: with `norm_rule = "confirmed"` the
    caller passes whether the detector ended the cycle, so that a norm grown by a cycle
    that kept learning (a small initialisation, a scaled parametrisation) fails nothing.
    """
    unknown = sorted(set(rules) - set(FAILURE_RULES))
    if unknown:
        raise ValueError(f"unknown failure rule(s) {unknown}; known: {list(FAILURE_RULES)}.")
    finite = all_finite((current.params, current.model_state)) & moments_finite(current.opt_state)
    ratio = global_norm(current.params) / start_norm
    holds = [
        ~finite,
        finite & ((ratio > kappa) | (ratio < 1.0 / kappa)) & jnp.asarray(confirm, bool),
        jnp.asarray(no_improvement, bool),
    ]
    enabled = [h & (name in rules) for h, name in zip(holds, FAILURE_RULES, strict=True)]
    failed = enabled[0] | enabled[1] | enabled[2]
    rule = jnp.where(enabled[0], 0, jnp.where(enabled[1], 1, jnp.where(enabled[2], 2, -1)))
    return FailureCheck(failed, finite, ratio, rule.astype(jnp.int32))


def reestimate_ema(forward, model_state):
    """The batch statistics b behind every EMA leaf of `model_state`, from two passes.

    `forward(state) -> new_state` is one training-mode forward pass over a batch that
    updates the EMA leaves (s <- mu s + (1 - mu) b). Leaves that do not move like an EMA
    (mu = 1: not updated; non-float leaves) keep their value in `model_state`.
    """
    zeros = jax.tree.map(_fill(0.0), model_state)
    ones = jax.tree.map(_fill(1.0), model_state)
    from_zeros, from_ones = forward(zeros), forward(ones)

    def estimate(old, s0, s1):
        if not jnp.issubdtype(jnp.result_type(old), jnp.inexact):
            return old
        weight = 1.0 - (s1 - s0)  # 1 - mu
        moved = jnp.abs(weight) > 1e-6
        return jnp.where(moved, s0 / jnp.where(moved, weight, 1.0), old).astype(old.dtype)

    return jax.tree.map(estimate, model_state, from_zeros, from_ones)


def _fill(value):
    def fill(x):
        if not jnp.issubdtype(jnp.result_type(x), jnp.inexact):
            return x
        return jnp.full_like(x, value)

    return fill
