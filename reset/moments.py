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
"""

import jax
import jax.numpy as jnp
import optax

FIRST_MOMENT_FIELDS = ("mu", "trace")
SECOND_MOMENT_FIELDS = ("nu",)
MOMENT_FIELDS = FIRST_MOMENT_FIELDS + SECOND_MOMENT_FIELDS


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


def scale_moments(opt_state, factor):
    """opt_state with every moment multiplied by `factor`; everything else as is.

    m <- factor * m, v <- factor * v (each leaf in its dtype); the step count n and all
    other state untouched.
    """
    for field, path, moment in find_moments(opt_state):
        scaled = jax.tree.map(lambda x: (x * factor).astype(x.dtype), moment)
        opt_state = optax.tree_utils.tree_set(
            opt_state, lambda p, _, path=path: p == path, **{field: scaled}
        )
    return opt_state


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
