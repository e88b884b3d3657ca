"""Finding an optimizer's moments inside any optax state.

optax keeps moment estimates in NamedTuple states under conventional field names:

| field   | moment                            | e.g.                                           |
| `mu`    | first, m = EMA of g               | adam(w), nadam(w), lion (ScaleByLionState)     |
| `trace` | first, momentum buffer            | sgd(momentum=...), optax.trace (TraceState)    |
| `nu`    | second, v = EMA of g^2            | adam(w), nadam(w), rmsprop                     |

`trace` counts as a first moment: sgd's heavy-ball buffer m <- g + beta m is a first
moment up to the scale (1 - beta), and a soft reset scales it like Adam's m.

The moments are found with `optax.tree_utils.tree_get_all_with_path` wherever they sit
(inside `optax.inject_hyperparams`, chains, `clip_by_global_norm` chains, masks), as
fields of a NamedTuple state; a params-level dict key of the same name is not a moment.

A state may also carry the moments' weights (METHOD.md section 4, v2): the fields `w1`, `w2`
of `reset.optimizer.ScaleByWeightedAdamState`, the totals Adam's bias correction divides
by. A weight field counts when it sits in the same NamedTuple state as a moment; a reset
scales it with the moments (`scale_moments`).
"""

import jax
import jax.numpy as jnp
import optax

FIRST_MOMENT_FIELDS = ("mu", "trace")
SECOND_MOMENT_FIELDS = ("nu",)
MOMENT_FIELDS = FIRST_MOMENT_FIELDS + SECOND_MOMENT_FIELDS
WEIGHT_FIELDS = ("w1", "w2")


def _is_field(path) -> bool:
    """The path ends at a NamedTuple field (not a dict key or a sequence index)."""
    return bool(path) and isinstance(path[-1], optax.tree_utils.NamedTupleKey)


def find_moments(opt_state) -> list[tuple[str, tuple, object]]:
    """(field, path, moment tree) for every moment in opt_state, in tree order per field.

    A moment nested inside another one found (a NamedTuple inside a params tree) is not
    a moment of its own.
    """
    found = []
    for field in MOMENT_FIELDS:
        matches = optax.tree_utils.tree_get_all_with_path(
            opt_state, field, lambda path, _: _is_field(path)
        )
        found += [(field, path, value) for path, value in matches]
    paths = [path for _, path, _ in found]

    def nested(path) -> bool:
        return any(len(p) < len(path) and path[: len(p)] == p for p in paths)

    return [(field, path, value) for field, path, value in found if not nested(path)]


def check_moments(opt_state) -> None:
    """ValueError unless opt_state holds at least one moment to reset."""
    if not find_moments(opt_state):
        raise ValueError(
            "the optimizer state holds no moments to reset: looked for NamedTuple state "
            f"fields {list(FIRST_MOMENT_FIELDS)} (first moments: adam(w), nadam(w), lion, "
            f"sgd with momentum) and {list(SECOND_MOMENT_FIELDS)} (second moments) anywhere "
            "in it, found none (e.g. optax.sgd without momentum)."
        )


def moment_states(opt_state) -> list:
    """The NamedTuple states holding the moments (e.g. ScaleByAdamState), each once."""
    states = []
    for _, path, _ in find_moments(opt_state):
        state_path, name = path[:-1], path[-1].tuple_name
        for p, value in optax.tree_utils.tree_get_all_with_path(opt_state, name):
            if p == state_path and all(value is not s for s in states):
                states.append(value)
    return states


def find_weights(opt_state) -> list[tuple[str, tuple, object]]:
    """(field, path, weight) for every moment weight in opt_state, in tree order per field.

    A weight is a NamedTuple field named in WEIGHT_FIELDS (`w1`, `w2`) of a state that also
    holds a moment found by `find_moments`; optax's own states have none.
    """
    holders = [path[:-1] for _, path, _ in find_moments(opt_state)]
    found = []
    for field in WEIGHT_FIELDS:
        matches = optax.tree_utils.tree_get_all_with_path(
            opt_state, field, lambda path, _: _is_field(path) and path[:-1] in holders
        )
        found += [(field, path, value) for path, value in matches]
    return found


def scale_moments(opt_state, factor):
    """opt_state with every moment, and every moment weight, multiplied by `factor`.

    m <- factor * m, v <- factor * v (each leaf in its dtype); in a state carrying weights
    (`find_weights`) also w1 <- factor * w1, w2 <- factor * w2, so factor = 0 gives exactly
    a fresh state: there moments and weights become +0 (not -0, nor NaN from a non-finite
    entry) and the state's step count `count` becomes 0 too; factor = 1 changes nothing.
    States without weights (optax's Adam) keep their step count n and all other state.
    """
    zero = jnp.asarray(factor) == 0
    weighted_paths, weighted = [], []  # the states carrying weights, each once
    for _, path, _ in find_weights(opt_state):
        if path[:-1] not in weighted_paths:
            weighted_paths.append(path[:-1])
            weighted.append(_state_holding(opt_state, path))
    moments = [m for m in find_moments(opt_state) if m[1][:-1] not in weighted_paths]

    def fresh_at_zero(x):
        return jnp.where(zero, jnp.zeros_like(x), (x * factor).astype(jnp.result_type(x)))

    for state in weighted:  # replaced whole: the paths below stay valid
        fields = [f for f in MOMENT_FIELDS + WEIGHT_FIELDS if f in state._fields]
        new = {f: jax.tree.map(fresh_at_zero, getattr(state, f)) for f in fields}
        if "count" in state._fields:
            new["count"] = jnp.where(zero, jnp.zeros_like(state.count), state.count)
        opt_state = _replace_state(opt_state, state, state._replace(**new))
    for field, path, moment in moments:
        scaled = jax.tree.map(lambda x: (x * factor).astype(x.dtype), moment)
        opt_state = optax.tree_utils.tree_set(
            opt_state, lambda p, _, path=path: p == path, **{field: scaled}
        )
    return opt_state


def _replace_state(opt_state, old, new):
    """opt_state with the NamedTuple state `old` (found by identity) replaced by `new`."""
    return jax.tree.map(lambda x: new if x is old else x, opt_state, is_leaf=lambda x: x is old)


def _state_holding(opt_state, field_path):
    """The NamedTuple state whose field is at `field_path` (a path as `find_moments` gives)."""
    state_path, name = field_path[:-1], field_path[-1].tuple_name
    return next(
        v for p, v in optax.tree_utils.tree_get_all_with_path(opt_state, name) if p == state_path
    )


def moments_finite(opt_state):
    """A scalar bool array: every entry of every moment is finite (True if none)."""
    return all_finite([moment for _, _, moment in find_moments(opt_state)])


def all_finite(tree):
    """A scalar bool array: every inexact entry of the tree is finite (True if none)."""
    checks = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return jnp.stack(checks).all() if checks else jnp.asarray(True)
