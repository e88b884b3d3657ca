"""Finding Adam's moments inside any optax state.

Adam-family transformations keep their first and second moments in a state NamedTuple
with fields `mu` and `nu` (optax's ScaleByAdamState, also used by its NAdam(W) through
`scale_by_adam(nesterov=True)`; hand-written NAdamW states follow the same convention).
The moments are found by type, wherever they sit in a chain or a wrapper such as
`optax.inject_hyperparams`, never by position.
"""

import jax
import jax.numpy as jnp


def is_moment_state(node) -> bool:
    """True for a NamedTuple state holding Adam moments (fields `mu` and `nu`)."""
    fields = getattr(type(node), "_fields", ())
    return isinstance(node, tuple) and "mu" in fields and "nu" in fields


def moment_states(opt_state) -> list:
    """All moment-holding states inside opt_state, in tree order."""
    leaves = jax.tree.leaves(opt_state, is_leaf=is_moment_state)
    return [leaf for leaf in leaves if is_moment_state(leaf)]


def scale_moments(opt_state, factor):
    """opt_state with every m and v multiplied by `factor`; everything else as is.

    m <- factor * m, v <- factor * v; the step count n and all other state untouched.
    """

    def scale(node):
        if not is_moment_state(node):
            return node
        mul = lambda x: (x * factor).astype(x.dtype)  # noqa: E731
        return node._replace(mu=jax.tree.map(mul, node.mu), nu=jax.tree.map(mul, node.nu))

    return jax.tree.map(scale, opt_state, is_leaf=is_moment_state)


def moments_finite(opt_state):
    """A scalar bool array: every entry of every m and v is finite."""
    return all_finite([(s.mu, s.nu) for s in moment_states(opt_state)])


def all_finite(tree):
    """A scalar bool array: every inexact entry of the tree is finite (True if none)."""
    checks = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return jnp.stack(checks).all() if checks else jnp.asarray(True)
