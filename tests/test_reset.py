"""Tests of the soft-reset coefficient and the reset strategies (METHOD.md section 4).

The strategies act on a real small flax model (with batch norm, so there is a model state)
and real optax states after a few real update steps, so that every moment is non-zero:
Adam-family states (mu, nu) in chains and wrappers, Lion's (mu only) and sgd's momentum
buffer (trace).
"""

import functools
import itertools
import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cyclic_soft_reset import reset

# --- tau ----------------------------------------------------------------------------


def test_tau_thesis_ogbg_reset():
    # The deliberately diverged OGBG cycle: mAP 0.0371 against the target 0.28098.
    assert round(reset.tau(0.0371, 0.28098, higher_is_better=True), 3) == 0.868
    assert reset.tau(0.0371, 0.28098, True) == pytest.approx((0.28098 - 0.0371) / 0.28098)


def test_tau_lower_is_better():
    # LibriSpeech WER 0.5 against the target 0.085884.
    assert reset.tau(0.5, 0.085884, higher_is_better=False) == pytest.approx(1 - 0.085884 / 0.5)
    assert reset.tau(0.5, 0.085884, False) == pytest.approx(0.828232)


@pytest.mark.parametrize(
    ("metric", "target", "higher", "expected"),
    [
        (0.30, 0.28098, True, 0.0),  # target reached: pure cyclic
        (0.28098, 0.28098, True, 0.0),
        (0.05, 0.085884, False, 0.0),
        (0.085884, 0.085884, False, 0.0),
        (None, 0.28098, True, 1.0),  # missing metric
        (None, 0.085884, False, 1.0),
        (math.nan, 0.28098, True, 1.0),  # non-finite metric
        (math.nan, 0.085884, False, 1.0),
        (math.inf, 0.085884, False, 1.0),
        (-math.inf, 0.28098, True, 1.0),
        (math.inf, 0.28098, True, 1.0),
        (-0.5, 0.28098, True, 1.0),  # negative accuracy: clipped to 1
        (0.0, 0.28098, True, 1.0),
        (0.0, 0.085884, False, 0.0),
        (1e9, 0.085884, False, pytest.approx(1.0, abs=1e-9)),
    ],
)
def test_tau_edge_cases(metric, target, higher, expected):
    assert reset.tau(metric, target, higher) == expected


def test_tau_monotone_at_the_last_bit():
    # Adjacent floats: (y - y*) / y rounds down here as y grows; 1 - y*/y does not.
    y, target = 2.7126691902802715, 0.4487980472198576
    larger = math.nextafter(y, math.inf)
    assert reset.tau(y, target, False) <= reset.tau(larger, target, False)
    assert reset.tau(y, target, False) == 1.0 - target / y


@pytest.mark.parametrize(
    ("best", "value", "higher", "expected"),
    [
        (math.nan, 0.4, True, 0.4),  # nan: no best yet.
        (0.5, 0.4, True, 0.5),
        (0.5, 0.6, True, 0.6),
        (0.5, 0.4, False, 0.4),
        (0.5, 0.6, False, 0.5),
        (0.5, math.nan, True, 0.5),  # Non-finite values never count.
        (0.5, math.inf, False, 0.5),
        (math.nan, math.nan, True, math.nan),
    ],
)
def test_better_metric(best, value, higher, expected):
    result = reset.better_metric(best, value, higher)
    assert result == expected or (math.isnan(result) and math.isnan(expected))


def test_tau_metric_source():
    assert reset.tau_metric(0.4, 0.6, "latest") == 0.4
    assert reset.tau_metric(0.4, 0.6, "best") == 0.6
    assert reset.tau_metric(math.nan, 0.6, "best") == 0.6
    assert reset.tau_metric(0.4, math.nan, "best") == 0.4  # No finite value in the cycle.
    with pytest.raises(ValueError, match=r"tau_metric must be one of \['latest', 'best'\]"):
        reset.tau_metric(0.4, 0.6, "mean")


@pytest.mark.parametrize("target", [0.0, -1.0, math.nan, math.inf])
def test_tau_rejects_bad_target(target):
    with pytest.raises(ValueError, match="target must be a positive finite number"):
        reset.tau(0.5, target, True)


metrics = st.floats(-2.0, 5.0, allow_nan=False)
targets = st.floats(1e-3, 3.0)


@settings(max_examples=200, deadline=None)
@given(y1=metrics, y2=metrics, target=targets, higher=st.booleans(), adjacent=st.booleans())
def test_tau_in_unit_interval_and_monotone(y1, y2, target, higher, adjacent):
    if adjacent:  # the next float: monotone to the last bit
        y2 = math.nextafter(y1, math.inf)
    lo, hi = sorted((y1, y2))
    t_lo, t_hi = reset.tau(lo, target, higher), reset.tau(hi, target, higher)
    assert 0.0 <= t_lo <= 1.0 and 0.0 <= t_hi <= 1.0
    if higher:  # a larger metric is better: tau does not grow
        assert t_hi <= t_lo
    else:  # a smaller metric is better: tau does not grow as the metric falls
        assert t_lo <= t_hi


# --- a real small model and real optimizer states -------------------------------------


class SmallNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(8)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(x)
        return nn.Dense(3)(x)


WD = 0.1
LR = 1e-2


def nadamw(learning_rate, weight_decay):
    """NAdamW from optax parts (the AlgoPerf baseline's optimizer)."""
    return optax.chain(
        optax.scale_by_adam(b1=0.9, b2=0.99, nesterov=True),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )


def clipped_adamw(learning_rate, weight_decay):
    """Adam's state at position 1 of the chain (not 0): found by type, not position."""
    return optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.scale_by_adam(),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )


# Adam-family optimizers: one ScaleByAdamState (count, mu, nu) somewhere in the state.
OPTIMIZERS = {
    "adamw": lambda: optax.adamw(LR, weight_decay=WD),
    "optax_nadamw": lambda: optax.nadamw(LR, weight_decay=WD),
    "nadamw_chain": lambda: nadamw(LR, WD),
    "clipped_adamw_chain": lambda: clipped_adamw(LR, WD),
    "inject_adamw": lambda: optax.inject_hyperparams(optax.adamw)(
        learning_rate=LR, weight_decay=WD
    ),
    "inject_nadamw": lambda: optax.inject_hyperparams(nadamw)(learning_rate=LR, weight_decay=WD),
    "inject_clipped_adamw": lambda: optax.inject_hyperparams(clipped_adamw)(
        learning_rate=LR, weight_decay=WD
    ),
}
# First moment only: Lion's mu, sgd's momentum buffer (trace, counted as a first moment).
FIRST_MOMENT_ONLY = {
    "lion": lambda: optax.lion(LR, weight_decay=WD),
    "sgd_momentum": lambda: optax.sgd(LR, momentum=0.9),
    "inject_clipped_sgd_momentum": lambda: optax.inject_hyperparams(
        lambda learning_rate: optax.chain(
            optax.clip_by_global_norm(1.0), optax.sgd(learning_rate, momentum=0.9, nesterov=True)
        )
    )(learning_rate=LR),
}


def adam_state_by_hand(name, opt_state):
    """Where each optimizer keeps its ScaleByAdamState (known from optax's layout)."""
    if name.startswith("inject"):
        opt_state = opt_state.inner_state
    return opt_state[1] if "clipped" in name else opt_state[0]


MODEL = SmallNet()
X = np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32)
Y = np.random.default_rng(1).integers(0, 3, size=16).astype(np.int32)


@functools.cache
def variables(seed: int):
    """A fresh initialisation of the model (params, batch-norm statistics)."""
    variables = jax.jit(MODEL.init, static_argnames="train")(
        jax.random.PRNGKey(seed), X, train=False
    )
    return variables["params"], {"batch_stats": variables["batch_stats"]}


@functools.cache
def states(name: str, steps: int = 3):
    """(current, fresh) TrainStates: `current` after `steps` real AdamW/NAdamW updates."""
    model, x, y = MODEL, X, Y
    tx = {**OPTIMIZERS, **FIRST_MOMENT_ONLY}[name]()

    def init(seed):
        params, model_state = variables(seed)
        return reset.TrainState(params, model_state, tx.init(params))

    @jax.jit
    def step(state):
        def loss_fn(params):
            logits, new_model_state = model.apply(
                {"params": params, **state.model_state}, x, train=True, mutable=["batch_stats"]
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, new_model_state

        grads, new_model_state = jax.grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return reset.TrainState(
            optax.apply_updates(state.params, updates), new_model_state, opt_state
        )

    current = init(seed=10)
    for _ in range(steps):
        current = step(current)
    return current, init(seed=20)


def leaves(tree):
    return jax.tree.leaves(tree)


def assert_identical(a, b):
    """Same tree structure, dtypes, shapes and bytes (bit for bit)."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(leaves(a), leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def is_moment_path(path) -> bool:
    return any(getattr(key, "name", None) in ("mu", "nu", "trace") for key in path)


def split_opt_state(opt_state):
    """(moment leaves, other leaves), located by path names, independently of the package."""
    flat = jax.tree_util.tree_flatten_with_path(opt_state)[0]
    moments = [np.asarray(x) for p, x in flat if is_moment_path(p)]
    others = [np.asarray(x) for p, x in flat if not is_moment_path(p)]
    return moments, others


def assert_blended(result, current, fresh, tau):
    for got, x, x0 in zip(leaves(result), leaves(current), leaves(fresh), strict=True):
        expected = (1.0 - tau) * np.asarray(x, np.float64) + tau * np.asarray(x0, np.float64)
        assert np.asarray(got).dtype == np.asarray(x).dtype
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def set_first(tree, value):
    """tree with the first entry of its first leaf replaced by value."""
    first, *rest = leaves(tree)
    first = jnp.asarray(first).reshape(-1).at[0].set(value).reshape(jnp.shape(first))
    return jax.tree.unflatten(jax.tree.structure(tree), [first, *rest])


NAMES = list(OPTIMIZERS)


@pytest.fixture(params=NAMES)
def name(request):
    return request.param


def test_setup_has_nonzero_moments_and_model_state(name):
    current, fresh = states(name)
    adam = adam_state_by_hand(name, current.opt_state)
    assert int(adam.count) == 3
    for tree in (adam.mu, adam.nu):
        assert all(np.all(np.asarray(x) != 0) for x in leaves(tree))
    assert all(np.all(np.asarray(x) == 0) for x in leaves(adam_state_by_hand(name, fresh[2]).mu))
    stats = leaves(current.model_state)
    assert stats and not all(
        np.array_equal(a, b) for a, b in zip(stats, leaves(fresh.model_state), strict=True)
    )


# --- moments found by type ------------------------------------------------------------

FIRST_ONLY_NAMES = list(FIRST_MOMENT_ONLY)


def test_moment_states_found_without_position(name):
    current, _ = states(name)
    found = reset.moment_states(current.opt_state)
    assert len(found) == 1
    assert found[0] is adam_state_by_hand(name, current.opt_state)
    assert [field for field, _, _ in reset.find_moments(current.opt_state)] == ["mu", "nu"]
    reset.check_moments(current.opt_state)  # no error


@pytest.mark.parametrize(
    ("name", "state_type", "field"),
    [
        ("lion", optax.ScaleByLionState, "mu"),
        ("sgd_momentum", optax.TraceState, "trace"),
        ("inject_clipped_sgd_momentum", optax.TraceState, "trace"),
    ],
)
def test_first_moment_only_states_are_found(name, state_type, field):
    current, _ = states(name)
    (state,) = reset.moment_states(current.opt_state)
    assert isinstance(state, state_type)
    ((found_field, _, moment),) = reset.find_moments(current.opt_state)
    assert found_field == field and moment is getattr(state, field)
    assert all(np.any(np.asarray(x) != 0) for x in leaves(moment))


def test_no_moments_in_sgd():
    params = {"w": jnp.ones(3)}
    opt_state = optax.sgd(0.1).init(params)
    assert reset.moment_states(opt_state) == [] and reset.find_moments(opt_state) == []
    assert bool(reset.moments_finite(opt_state))
    message = "^" + re.escape(
        "the optimizer state holds no moments to reset: looked for NamedTuple state fields "
        "['mu', 'trace'] (first moments: adam(w), nadam(w), lion, sgd with momentum) and "
        "['nu'] (second moments) anywhere in it, found none (e.g. optax.sgd without momentum)."
    )
    with pytest.raises(ValueError, match=message):
        reset.check_moments(opt_state)
    with pytest.raises(ValueError, match=message):
        reset.check_moments(optax.inject_hyperparams(optax.sgd)(learning_rate=0.1).init(params))
    current = reset.TrainState(params, {}, opt_state)
    with pytest.raises(ValueError, match=message):  # soft would silently reset only params
        apply("soft", current, current)
    for strategy in ("none", "full", "params_only"):  # they need no moments
        apply(strategy, current, current)


def test_params_named_like_moments_are_not_moments():
    # A dict key "mu" in the params (so in every moment tree) is no moment of its own.
    params = {"mu": jnp.ones(3), "nu": {"trace": jnp.full(2, 2.0)}}
    tx = optax.adamw(0.1)
    opt_state = tx.update(params, tx.init(params), params)[1]
    assert [f for f, _, _ in reset.find_moments(opt_state)] == ["mu", "nu"]
    scaled = reset.scale_moments(opt_state, 0.5)
    for a, b in zip(leaves(opt_state[0].mu), leaves(scaled[0].mu), strict=True):
        assert_identical(b, (a * 0.5).astype(a.dtype))  # scaled once, not twice
    assert_identical(scaled[0].count, opt_state[0].count)


def test_every_moment_state_scaled_with_its_own_values():
    # Two Adam states (multi_transform) and a Lion one: each scaled, none overwritten.
    params = {"a": jnp.arange(3.0), "b": jnp.arange(4.0), "c": jnp.arange(2.0)}
    tx = optax.multi_transform(
        {"x": optax.adam(0.1), "y": optax.adamw(0.2), "z": optax.lion(0.1)},
        {"a": "x", "b": "y", "c": "z"},
    )
    opt_state = tx.init(params)
    for k in range(2):
        grads = jax.tree.map(lambda p, k=k: p + 1.0 + k, params)
        opt_state = tx.update(grads, opt_state, params)[1]
    assert len(reset.moment_states(opt_state)) == 3
    assert len(reset.find_moments(opt_state)) == 5
    (m0, o0), (m1, o1) = (
        split_opt_state(opt_state),
        split_opt_state(reset.scale_moments(opt_state, 0.25)),
    )
    assert len(m0) == 5  # one unmasked leaf in each of the 5 moment trees
    for a, b in zip(m0, m1, strict=True):
        assert_identical(b, (a * np.float32(0.25)).astype(a.dtype))
    assert_identical(o0, o1)


@pytest.mark.parametrize("name", NAMES + FIRST_ONLY_NAMES)
def test_scale_moments_touches_only_moments(name):
    current, _ = states(name)
    scaled = reset.scale_moments(current.opt_state, 0.25)
    (m0, o0), (m1, o1) = split_opt_state(current.opt_state), split_opt_state(scaled)
    assert len(m0) == len(m1) > 0
    for a, b in zip(m0, m1, strict=True):
        np.testing.assert_allclose(b, 0.25 * a, rtol=1e-7)
    assert_identical(o0, o1)


# --- the strategies -------------------------------------------------------------------


def apply(strategy, current, fresh, tau=0.3, alpha=0.5, failed=False, **params):
    """The strategy's apply, eagerly; `alpha` and `params` go to soft only.

    These tests check the blend and moment formulas of a cycle that is not rolled back
    (rollback: tests/test_failure.py); `failed` here is an early switch, which with the
    v1 rule (`fresh_moments_when_switched`, on unless given) hands on no momentum.
    """
    if strategy == "soft":
        params = {"rollback": False, "fresh_moments_when_switched": True, **params}
        params = dict(params, alpha=alpha)
    outcome = reset.CycleOutcome(tau, False, failed)
    return reset.make_strategy(strategy, **params).apply(current, fresh, outcome)


@pytest.mark.parametrize("strategy", sorted(reset.STRATEGIES))
def test_uses_tau_says_whether_tau_changes_the_result(strategy):
    """Reports show tau only where `uses_tau`: the result depends on tau exactly then."""
    current, fresh = states("adamw")
    a, b = (apply(strategy, current, fresh, tau=tau) for tau in (0.25, 0.75))
    same = all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )
    assert reset.make_strategy(strategy).uses_tau == (not same)


def test_full_is_the_fresh_state(name):
    current, fresh = states(name)
    assert_identical(apply("full", current, fresh), fresh)
    assert_identical(apply("full", current, fresh, tau=0.0, failed=True), fresh)


def test_none_is_the_identity(name):
    current, fresh = states(name)
    assert_identical(apply("none", current, fresh, tau=1.0, alpha=1.0, failed=True), current)
    # `fresh` is ignored: the caller may pass `current` in its place.
    assert_identical(apply("none", current, current, tau=0.5, failed=True), current)


def test_params_only_keeps_optimizer_state(name):
    current, fresh = states(name)
    result = apply("params_only", current, fresh, tau=0.4)
    assert_identical(result.params, fresh.params)
    assert_identical(result.model_state, fresh.model_state)
    assert_identical(result.opt_state, current.opt_state)


def test_soft_blends_and_scales_moments(name):
    current, fresh = states(name)
    tau, alpha = 0.3, 0.5
    result = apply("soft", current, fresh, tau, alpha)
    assert_blended(result.params, current.params, fresh.params, tau)
    assert_blended(result.model_state, current.model_state, fresh.model_state, tau)
    (m0, o0), (m1, o1) = split_opt_state(current.opt_state), split_opt_state(result.opt_state)
    for a, b in zip(m0, m1, strict=True):
        assert b.dtype == a.dtype
        np.testing.assert_allclose(b, (1 - tau * alpha) * a.astype(np.float64), rtol=1e-6)
    # The step count (and inject_hyperparams' hyperparameters) stay as they were.
    assert_identical(o0, o1)
    assert int(reset.moment_states(result.opt_state)[0].count) == 3


FIRST_MOMENT_ONLY_FIELD = {
    "lion": "mu",
    "sgd_momentum": "trace",
    "inject_clipped_sgd_momentum": "trace",
}


@pytest.mark.parametrize("name", FIRST_ONLY_NAMES)
def test_soft_resets_a_first_moment_only_state(name):
    # Lion's mu and sgd's momentum buffer get the soft reset too (none escapes).
    current, fresh = states(name)
    tau, alpha = 0.6, 0.5
    for result in (
        apply("soft", current, fresh, tau, alpha),
        _jitted_soft(current, fresh, tau, alpha, False),
    ):
        assert_blended(result.params, current.params, fresh.params, tau)
        (m0, o0), (m1, o1) = split_opt_state(current.opt_state), split_opt_state(result.opt_state)
        assert len(m0) == len(leaves(current.params))
        for a, b in zip(m0, m1, strict=True):
            np.testing.assert_allclose(b, (1 - tau * alpha) * a.astype(np.float64), rtol=1e-6)
        assert_identical(o0, o1)
    result = apply("soft", current, fresh, tau, alpha, failed=True)
    assert_identical(result.opt_state, fresh.opt_state)
    bad = poison(current, FIRST_MOMENT_ONLY_FIELD[name], math.nan)
    assert not bool(reset.is_finite_state(bad))
    assert_identical(apply("soft", bad, fresh, tau, alpha), fresh)


@settings(max_examples=25, deadline=None)
@given(
    tau=st.floats(0.0, 1.0),
    alpha=st.floats(0.0, 1.0),
    name=st.sampled_from(["adamw", "inject_nadamw"]),
)
def test_soft_formula_property(tau, alpha, name):
    current, fresh = states(name)
    result = _jitted_soft(current, fresh, tau, alpha, False)
    assert_blended(result.params, current.params, fresh.params, tau)
    assert_blended(result.model_state, current.model_state, fresh.model_state, tau)
    (m0, o0), (m1, o1) = split_opt_state(current.opt_state), split_opt_state(result.opt_state)
    for a, b in zip(m0, m1, strict=True):
        # 1 - tau alpha is computed in float32: allow its rounding (tau alpha near 1).
        expected = (1 - tau * alpha) * a.astype(np.float64)
        np.testing.assert_allclose(b, expected, rtol=2e-6, atol=1e-7 * np.abs(a).max())
    assert_identical(o0, o1)


@settings(max_examples=15, deadline=None)
@given(alpha=st.floats(0.0, 1.0), name=st.sampled_from(NAMES))
def test_soft_with_tau_zero_is_the_identity(alpha, name):
    current, fresh = states(name)
    assert_identical(_jitted_soft(current, fresh, 0.0, alpha, False), current)
    assert_identical(apply("soft", current, fresh, 0.0, alpha), current)


def test_soft_with_tau_one_alpha_one_is_fresh_params_zero_moments(name):
    current, fresh = states(name)
    for result in (apply("soft", current, fresh, 1.0, 1.0), _jitted_soft(current, fresh, 1, 1, 0)):
        assert_identical(result.params, fresh.params)
        assert_identical(result.model_state, fresh.model_state)
        moments, others = split_opt_state(result.opt_state)
        assert moments and all(np.all(m == 0) for m in moments)
        assert_identical(others, split_opt_state(current.opt_state)[1])  # count kept


def test_failed_cycle_gives_fresh_optimizer_state(name):
    current, fresh = states(name)
    for alpha in (0.0, 0.5):
        result = apply("soft", current, fresh, 0.3, alpha, failed=True)
        assert_blended(result.params, current.params, fresh.params, 0.3)
        assert_blended(result.model_state, current.model_state, fresh.model_state, 0.3)
        assert_identical(result.opt_state, fresh.opt_state)
    # tau = 0 after a failed cycle: params kept exactly, moments still fresh.
    result = apply("soft", current, fresh, 0.0, 0.5, failed=True)
    assert_identical(result.params, current.params)
    assert_identical(result.opt_state, fresh.opt_state)


def test_failed_cycle_keeps_moments_when_switched_off(name):
    # soft(fresh_moments_when_switched=False): a failed cycle is reset like any other.
    current, fresh = states(name)
    for failed in (False, True):
        result = apply("soft", current, fresh, 0.3, 0.5, failed, fresh_moments_when_switched=False)
        assert_identical(result, apply("soft", current, fresh, 0.3, 0.5, failed=False))


def poison(state, where, value):
    """state with one entry of its params, model state or first `where` moment set."""
    if where == "params":
        return state._replace(params=set_first(state.params, value))
    if where == "model_state":
        return state._replace(model_state=set_first(state.model_state, value))
    done = []

    def poison_leaf(path, x):
        if done or not any(getattr(key, "name", None) == where for key in path):
            return x
        done.append(path)
        return set_first(x, value)

    opt_state = jax.tree_util.tree_map_with_path(poison_leaf, state.opt_state)
    assert done, f"no {where} in the optimizer state"
    return state._replace(opt_state=opt_state)


@pytest.mark.parametrize("where", ["params", "model_state", "mu", "nu"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("name", ["adamw", "inject_nadamw", "clipped_adamw_chain"])
def test_non_finite_turns_soft_into_full(name, where, value):
    current, fresh = states(name)
    bad = poison(current, where, value)
    assert not bool(reset.is_finite_state(bad))
    for tau, alpha, failed in ((1.0, 1.0, False), (0.3, 0.5, False), (0.0, 0.5, True)):
        for result in (
            apply("soft", bad, fresh, tau, alpha, failed),
            _jitted_soft(bad, fresh, tau, alpha, failed),
        ):
            assert_identical(result, fresh)
            assert all(np.all(np.isfinite(x)) for x in leaves(result))
    # The baselines stay faithful to their definitions.
    assert_identical(apply("none", bad, fresh), bad)
    assert_identical(apply("params_only", bad, fresh).opt_state, bad.opt_state)


@pytest.mark.parametrize("name", NAMES + FIRST_ONLY_NAMES)
def test_is_finite_state(name):
    current, fresh = states(name)
    assert bool(reset.is_finite_state(current)) and bool(reset.is_finite_state(fresh))


# --- jit --------------------------------------------------------------------------------

_traces = []


@functools.cache
def _jitted_soft_with(alpha: float):
    """soft(alpha).apply under jit (alpha is the strategy's, fixed; the outcome traced)."""
    strategy = reset.soft(alpha, rollback=False, fresh_moments_when_switched=True)

    def counted(current, fresh, outcome):
        _traces.append(1)  # runs only while tracing
        return strategy.apply(current, fresh, outcome)

    return jax.jit(counted)


def _jitted_soft(current, fresh, tau, alpha, failed):
    outcome = reset.CycleOutcome(tau, False, failed)
    return _jitted_soft_with(float(alpha))(current, fresh, outcome)


@pytest.mark.parametrize("strategy", ["none", "full", "params_only", "soft"])
def test_strategies_under_jit_compile_once(strategy):
    current, fresh = states("inject_adamw")
    soft_params = [dict(alpha=0.5, rollback=False), dict(alpha=0.3, rollback=False)]
    for params in [{}] if strategy != "soft" else soft_params:
        traces = []
        applied = reset.make_strategy(strategy, **params)

        def counted(current, fresh, outcome, applied=applied, traces=traces):
            traces.append(1)
            return applied.apply(current, fresh, outcome)

        jitted = jax.jit(counted)
        for tau, failed in ((0.0, False), (0.25, False), (0.9, True), (1, 0)):
            traced = reset.CycleOutcome(jnp.float32(tau), jnp.bool_(failed), jnp.bool_(failed))
            got = jitted(current, fresh, traced)
            eager = applied.apply(current, fresh, reset.CycleOutcome(tau, bool(failed)))
            jax.tree.map(
                lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8), got, eager
            )
        assert len(traces) == 1


def test_soft_python_scalars_trace_once():
    current, fresh = states("nadamw_chain")
    before = len(_traces)
    for tau in (0.1, 0.2, 0.7, 0.95):
        _jitted_soft(current, fresh, tau, 0.5, False)
        _jitted_soft(current, fresh, tau, 0.5, True)
    assert len(_traces) - before <= 1  # at most one trace (none if cached already)


# --- the registry -----------------------------------------------------------------------


def test_make_strategy():
    assert sorted(reset.STRATEGIES) == ["full", "none", "params_only", "soft"]
    for name, factory in reset.STRATEGIES.items():
        strategy = reset.make_strategy(name)
        assert isinstance(strategy, reset.ResetStrategy)
        assert strategy.name == name == factory().name
    assert not reset.make_strategy("none").needs_fresh
    assert all(reset.make_strategy(n).needs_fresh for n in ("full", "params_only", "soft"))
    assert reset.STRATEGIES["soft"] is reset.soft and reset.STRATEGIES["none"] is reset.none


def test_make_strategy_passes_params():
    current, fresh = states("adamw")
    outcome = reset.CycleOutcome(0.4, False, True, start=current)  # Switched, not failed.
    for params in (dict(alpha=0.3), dict(alpha=0.3, fresh_moments_when_switched=True)):
        got = reset.make_strategy("soft", **params).apply(current, fresh, outcome)
        assert_identical(got, reset.soft(**params).apply(current, fresh, outcome))
    default = reset.make_strategy("soft").apply(current, fresh, outcome)
    assert_identical(default, reset.soft(0.5, True).apply(current, fresh, outcome))


@pytest.mark.parametrize("bad", ["Soft", "sequential", "", "hard"])
def test_make_strategy_unknown_name(bad):
    with pytest.raises(
        ValueError,
        match=r"reset_strategy must be one of \['full', 'none', 'params_only', 'soft'\], got",
    ):
        reset.make_strategy(bad)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("full", dict(alpha=0.5), r"reset strategy 'full' accepts no parameters, got \['alpha'\]"),
        ("none", dict(tau=1.0), r"reset strategy 'none' accepts no parameters, got \['tau'\]"),
        ("params_only", dict(alpha=0.5), r"'params_only' accepts no parameters"),
        (
            "soft",
            dict(alpha=0.5, beta=1.0),
            r"reset strategy 'soft' accepts only \['alpha', 'rollback', "
            r"'fresh_moments_when_switched', 'model_state'\], "
            r"got \['beta'\]",
        ),
    ],
)
def test_make_strategy_unknown_params(name, params, message):
    with pytest.raises(ValueError, match=message):
        reset.make_strategy(name, **params)


@pytest.mark.parametrize("alpha", [0, 0.0, 1, 1.0, np.float32(0.3), np.float64(0.5)])
def test_soft_accepts_alpha_in_closed_unit_interval(alpha):
    assert reset.soft(alpha=alpha).name == "soft"


# --- when a reset reads the fresh initialisation ----------------------------------------


def _with_nan(state: reset.TrainState) -> reset.TrainState:
    first, *rest = jax.tree.leaves(state.params)
    params = jax.tree.unflatten(
        jax.tree.structure(state.params), [first.at[(0,) * first.ndim].set(jnp.nan), *rest]
    )
    return state._replace(params=params)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("none", {}),
        ("full", {}),
        ("params_only", {}),
        ("soft", {}),
        ("soft", {"rollback": False}),
        ("soft", {"model_state": "fresh"}),
        ("soft", {"model_state": "keep", "fresh_moments_when_switched": True}),
    ],
)
def test_uses_init_false_means_the_init_is_not_read(name, params):
    """Where `uses_init` says no, `apply` gives the same state bit for bit with the fresh
    params and model state replaced by the current ones (the compiled reset's stand-in)."""
    strategy = reset.make_strategy(name, **params)
    finite_state, fresh = states("adamw")
    skipped = []
    for current in (finite_state, _with_nan(finite_state)):
        finite = bool(reset.is_finite_state(current))
        stand_in = reset.TrainState(current.params, current.model_state, fresh.opt_state)
        for tau, failed, switched in itertools.product((0.0, 0.3), (False, True), (False, True)):
            outcome = reset.CycleOutcome(tau, failed, switched, start=fresh)
            if bool(strategy.uses_init(outcome, finite)):
                continue
            skipped.append((tau, failed, finite))
            assert_identical(
                strategy.apply(current, stand_in, outcome), strategy.apply(current, fresh, outcome)
            )
    # Of 16 cases: soft skips the 8 rolled back and, if the state is finite, those with
    # tau = 0 that were not (2); without rollback only the latter (4); with a fresh model
    # state only the rollbacks.
    expected = {"none": 16, "full": 0, "params_only": 0, "soft": 10}[name]
    if params.get("rollback") is False:
        expected = 4
    if params.get("model_state") == "fresh":
        expected = 8
    assert len(skipped) == expected, skipped
