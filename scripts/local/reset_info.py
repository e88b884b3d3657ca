"""What a reset strategy does with tau, asked of the strategy object itself.

``reset.STRATEGIES`` holds factories of ``ResetStrategy(name, needs_fresh, apply)``; none
of them says whether tau matters to it. ``uses_tau`` finds out by applying the strategy
to a two-number state at two values of tau: ``soft`` blends by tau, while ``none``,
``full`` and ``params_only`` give the same state for every tau. A strategy added to the
registry is answered for without a list to keep in step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import reset as reset_lib

_PROBE_TAUS = (0.25, 0.75)


def uses_tau(name: str) -> bool:
    """Whether strategy ``name`` (default parameters) gives a different state for a
    different tau after a cycle that did not fail; ValueError for an unknown name."""
    strategy = reset_lib.make_strategy(name)
    tx = optax.adam(1e-3)
    params = {"w": jnp.asarray([1.0, -2.0])}
    opt_state = tx.update({"w": jnp.asarray([0.5, 0.5])}, tx.init(params), params)[1]
    current = reset_lib.TrainState(params, {}, opt_state)
    fresh_params = {"w": jnp.asarray([0.1, 0.3])}
    fresh = reset_lib.TrainState(fresh_params, {}, tx.init(fresh_params))
    results = [
        strategy.apply(
            current,
            fresh,
            reset_lib.CycleOutcome(jnp.float32(tau), jnp.bool_(False), start=current),
        )
        for tau in _PROBE_TAUS
    ]
    leaves = [np.concatenate([np.ravel(x) for x in _leaves(r)]) for r in results]
    return not np.array_equal(leaves[0], leaves[1])


def _leaves(state: reset_lib.TrainState) -> list:
    """The inexact leaves of a state (params, model state, optimizer state)."""
    return [
        np.asarray(x, float)
        for x in jax.tree.leaves(state)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
