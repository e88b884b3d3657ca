"""Method v2 (METHOD.md section 4): when a cycle failed, the rollback, the statistics after a
reset, and the direction-free tau, as pure functions on small real trees."""

import math

import flax.linen as nn
import jax
import jax.experimental
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cyclic_soft_reset import reset

PARAMS = {"w": jnp.arange(1.0, 7.0).reshape(2, 3), "b": jnp.ones(3)}
NORM = reset.global_norm(PARAMS)
TX = optax.adamw(1e-3)


def _state(params, model_state=None):
    model_state = {"mean": jnp.zeros(3)} if model_state is None else model_state
    return reset.TrainState(params, model_state, TX.init(params))


def _scaled(factor):
    return jax.tree.map(lambda x: x * factor, PARAMS)


@pytest.mark.parametrize(
    ("factor", "failed", "rule"),
    [(1.0, False, -1), (2.9, False, -1), (3.1, True, 1), (0.34, False, -1), (0.32, True, 1)],
)
def test_norm_rule_fails_a_blown_up_or_collapsed_cycle(factor, failed, rule):
    check = reset.check_cycle(_state(_scaled(factor)), NORM, False, kappa=3.0)
    assert bool(check.failed) is failed and int(check.rule) == rule
    assert float(check.norm_ratio) == pytest.approx(factor, rel=1e-6)
    assert bool(check.finite)


def test_non_finite_state_fails_first_and_no_improvement_last():
    nan = jax.tree.map(lambda x: x.at[0].set(jnp.nan), PARAMS)
    check = reset.check_cycle(_state(nan), NORM, True, kappa=3.0)
    assert bool(check.failed) and not bool(check.finite) and int(check.rule) == 0
    check = reset.check_cycle(_state(PARAMS), NORM, True, kappa=3.0)
    assert bool(check.failed) and int(check.rule) == 2


def test_disabled_rules_do_not_fail_a_cycle():
    check = reset.check_cycle(_state(_scaled(10.0)), NORM, True, 3.0, rules=("non_finite",))
    assert not bool(check.failed) and int(check.rule) == -1
    with pytest.raises(ValueError, match=r"unknown failure rule\(s\) \['size'\]"):
        reset.check_cycle(_state(PARAMS), NORM, False, 3.0, rules=("size",))


def test_check_compiles_once_for_every_outcome():
    check = jax.jit(reset.check_cycle, static_argnames=("kappa", "rules"))
    for factor, no_improvement in ((1.0, False), (5.0, True), (0.1, False)):
        check(_state(_scaled(factor)), NORM, no_improvement, kappa=3.0)
    assert check._cache_size() == 1


def _outcome(tau, failed, switched=False, start_params=PARAMS):
    start = reset.TrainState(start_params, {"mean": jnp.full(3, 7.0)}, None)
    return reset.CycleOutcome(jnp.float32(tau), jnp.bool_(failed), jnp.bool_(switched), start)


def _leaves_equal(a, b):
    a, b = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_soft_rolls_a_failed_cycle_back_with_fresh_moments():
    current = _state(_scaled(5.0), {"mean": jnp.full(3, 2.0)})
    current = current._replace(opt_state=TX.update(PARAMS, current.opt_state, PARAMS)[1])
    fresh = _state(_scaled(-1.0), {"mean": jnp.zeros(3)})
    out = jax.jit(reset.soft(alpha=0.5).apply)(current, fresh, _outcome(0.4, True))
    assert _leaves_equal(out.params, PARAMS)
    assert _leaves_equal(out.model_state, {"mean": jnp.full(3, 7.0)})
    assert _leaves_equal(out.opt_state, fresh.opt_state)


def test_soft_blends_a_cycle_that_did_not_fail_even_after_a_switch():
    current = _state(_scaled(2.0), {"mean": jnp.full(3, 2.0)})
    fresh = _state(_scaled(0.0), {"mean": jnp.zeros(3)})
    out = reset.soft(alpha=0.5).apply(current, fresh, _outcome(0.25, False, switched=True))
    np.testing.assert_allclose(out.params["w"], 0.75 * 2.0 * PARAMS["w"], rtol=1e-6)
    np.testing.assert_allclose(out.model_state["mean"], 1.5, rtol=1e-6)
    # The v1 rule is an ablation: off by default, on it takes fresh moments.
    v1 = reset.soft(fresh_moments_when_switched=True)
    out = v1.apply(current, fresh, _outcome(0.25, False, switched=True))
    assert _leaves_equal(out.opt_state, fresh.opt_state)


@pytest.mark.parametrize(("choice", "expected"), [("blend", 1.5), ("keep", 2.0), ("fresh", 0.0)])
def test_soft_model_state_choices(choice, expected):
    current = _state(PARAMS, {"mean": jnp.full(3, 2.0)})
    fresh = _state(PARAMS, {"mean": jnp.zeros(3)})
    out = reset.soft(model_state=choice).apply(current, fresh, _outcome(0.25, False))
    np.testing.assert_allclose(out.model_state["mean"], expected, rtol=1e-6)


def test_soft_without_rollback_blends_a_failed_cycle_and_needs_no_start():
    current = _state(_scaled(5.0))
    fresh = _state(_scaled(0.0))
    outcome = reset.CycleOutcome(jnp.float32(0.5), jnp.bool_(True))
    out = reset.soft(rollback=False).apply(current, fresh, outcome)
    np.testing.assert_allclose(out.params["w"], 2.5 * PARAMS["w"], rtol=1e-6)
    # The whole message: what is missing and what it must hold.
    needs_start = (
        r"^soft\(rollback=True\) needs outcome\.start, the TrainState the cycle started "
        r"from \(its params and model state\)\.$"
    )
    with pytest.raises(ValueError, match=needs_start):
        reset.soft().apply(current, fresh, outcome)
    with pytest.raises(ValueError, match="model_state must be one of"):
        reset.soft(model_state="reestimate")


def test_a_cycle_is_rolled_back_only_when_it_failed_and_rollback_is_on():
    """`rolls_back` decides it for the device and the host (the log, the controller):
    soft with rollback rolls back failed cycles only; soft without it and the baselines
    never do."""
    for rollback in (True, False):
        strategy = reset.soft(rollback=rollback)
        for failed in (True, False):
            assert bool(strategy.rolls_back(jnp.bool_(failed))) is (failed and rollback)
    for name in ("none", "full", "params_only"):
        assert not bool(reset.make_strategy(name).rolls_back(jnp.bool_(True)))


def test_baselines_stay_faithful_to_their_definitions_after_a_failure():
    current, fresh = _state(_scaled(5.0)), _state(_scaled(-1.0))
    outcome = _outcome(1.0, True)
    assert reset.none().apply(current, fresh, outcome) is current
    assert reset.full().apply(current, fresh, outcome) is fresh
    kept = reset.params_only().apply(current, fresh, outcome)
    assert kept.params is fresh.params and kept.opt_state is current.opt_state


class _BatchNormNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(4)(x)
        return nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)


def test_reestimated_statistics_are_the_batch_statistics():
    """Two forward passes recover the batch mean and variance exactly, whatever the
    running statistics were and without knowing the momentum."""
    net = _BatchNormNet()
    x = jax.random.normal(jax.random.key(0), (64, 3)) * 3.0 + 1.0
    variables = net.init(jax.random.key(1), x, train=False)
    params, stats = variables["params"], variables["batch_stats"]
    stats = jax.tree.map(lambda s: s + 5.0, stats)  # Stale statistics.

    def forward(batch_stats):
        _, updated = net.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
        )
        return updated["batch_stats"]

    estimated = jax.jit(lambda s: reset.reestimate_ema(forward, s))(stats)
    hidden = x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]
    np.testing.assert_allclose(estimated["BatchNorm_0"]["mean"], hidden.mean(0), rtol=1e-4)
    np.testing.assert_allclose(estimated["BatchNorm_0"]["var"], hidden.var(0), rtol=1e-3, atol=1e-6)


def test_reestimate_keeps_leaves_that_are_not_moving_averages():
    state = {"ema": jnp.full(2, 4.0), "frozen": jnp.full(2, 3.0), "count": jnp.int32(7)}

    def forward(s):
        return {"ema": 0.5 * s["ema"] + 0.5 * 10.0, "frozen": s["frozen"], "count": s["count"] + 1}

    out = reset.reestimate_ema(forward, state)
    np.testing.assert_allclose(out["ema"], 10.0)
    np.testing.assert_array_equal(out["frozen"], 3.0)
    assert int(out["count"]) == 7


def test_both_passes_see_the_non_float_leaves_as_they_are():
    """Only the float leaves are set to 0 and 1 for the two passes: an integer leaf the
    forward pass reads (here the seed its batch is drawn with) is passed as it is, so both
    passes see the same batch and the estimate is that batch's statistic."""
    state = {"mean": jnp.full(3, 5.0), "seed": jnp.array(7, jnp.uint32)}

    def batch(seed):
        return jax.random.normal(jax.random.key(seed), (3,))

    def forward(s):
        return {"mean": 0.9 * s["mean"] + 0.1 * batch(s["seed"]), "seed": s["seed"]}

    out = reset.reestimate_ema(forward, state)
    np.testing.assert_allclose(out["mean"], batch(7), rtol=1e-4, atol=1e-6)
    assert out["seed"].dtype == jnp.uint32 and int(out["seed"]) == 7


@pytest.mark.parametrize(
    ("metric", "target", "first", "expected"),
    [
        (0.5, 0.9, 0.1, 0.5),  # accuracy: half way from 0.1 to 0.9
        (0.95, 0.9, 0.1, 0.0),
        (0.05, 0.9, 0.1, 1.0),
        (0.14, 0.1237, 0.7, (0.14 - 0.1237) / (0.7 - 0.1237)),  # a loss: Criteo-like
        (math.nan, 0.9, 0.1, 1.0),
        (0.5, 0.9, math.nan, 1.0),
        (0.5, 0.9, 0.9, 1.0),
    ],
)
def test_tau_relative_is_the_share_of_the_way_still_missing(metric, target, first, expected):
    assert reset.tau_relative(metric, target, first) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("best", "start", "higher", "improved"),
    [
        (0.6, 0.5, True, True),
        (0.504, 0.5, True, False),  # within eps2 = 1% of 0.5
        (0.4, 0.5, False, True),
        (0.499, 0.5, False, False),
        (math.nan, 0.5, True, False),
        (0.5, math.nan, True, True),
    ],
)
def test_improved_within_a_relative_tolerance(best, start, higher, improved):
    assert reset.improved(best, start, higher, 0.01) is improved


@pytest.mark.parametrize(("confirm", "failed"), [(True, True), (False, False)])
def test_confirmed_norm_rule_needs_an_early_switch(confirm, failed):
    """v3 (METHOD.md section 7): a norm grown tenfold fails the cycle only where the
    detector also ended it; non-finite values and no improvement still fail it alone."""
    check = reset.check_cycle(_state(_scaled(10.0)), NORM, False, 3.0, confirm=confirm)
    assert bool(check.failed) is failed and int(check.rule) == (1 if failed else -1)
    assert float(check.norm_ratio) == pytest.approx(10.0, rel=1e-6)
    check = reset.check_cycle(_state(_scaled(10.0)), NORM, True, 3.0, confirm=False)
    assert bool(check.failed) and int(check.rule) == 2


@pytest.mark.parametrize(
    ("metric", "first", "fraction", "expected"),
    [
        (0.55, 0.1, 1 / 3, 0.0),  # Half the way at a third of the plan: ahead of pace.
        (0.25, 0.1, 1 / 3, 1 - (0.15 / 0.8) / (1 / 3)),  # Behind pace: the shortfall.
        (0.1, 0.1, 1 / 3, 1.0),  # Learnt nothing.
        (0.05, 0.1, 1 / 3, 1.0),  # Went backwards: clipped.
        (0.5, 0.1, 1.0, 0.5),  # At the plan's end it is tau_relative.
        (float("nan"), 0.1, 0.5, 1.0),
        (0.5, float("nan"), 0.5, 1.0),
    ],
)
def test_tau_expected_is_the_shortfall_against_a_steady_pace(metric, first, fraction, expected):
    assert reset.tau_expected(metric, 0.9, first, fraction) == pytest.approx(expected)
    if math.isfinite(metric) and math.isfinite(first) and fraction == 1.0:
        assert reset.tau_expected(metric, 0.9, first, 1.0) == pytest.approx(
            reset.tau_relative(metric, 0.9, first)
        )


def test_tau_expected_for_a_loss_mirrors_the_direction():
    # A loss from 4.0 towards 2.0: at 3.0 (half the way) and f = 0.5 the cycle is on pace.
    assert reset.tau_expected(3.0, 2.0, 4.0, 0.5) == pytest.approx(0.0)
    assert reset.tau_expected(3.5, 2.0, 4.0, 0.5) == pytest.approx(0.5)


def test_the_norm_is_over_the_float_leaves_only_and_float32():
    """An integer leaf (a step count) is not a parameter; no float leaf: norm 0."""
    tree = {"w": jnp.array([3.0, 4.0]), "count": jnp.array(100, jnp.int32)}
    assert float(reset.global_norm(tree)) == 5.0
    for empty in ({}, {"count": jnp.array(100, jnp.int32)}):
        norm = reset.global_norm(empty)
        assert norm.shape == () and norm.dtype == jnp.float32 and float(norm) == 0.0


def test_non_finite_moments_fail_the_cycle_even_with_finite_params():
    def poison(x):
        return jnp.full_like(x, jnp.nan) if jnp.issubdtype(x.dtype, jnp.inexact) else x

    state = _state(PARAMS)._replace(opt_state=jax.tree.map(poison, TX.init(PARAMS)))
    check = reset.check_cycle(state, NORM, False, kappa=3.0)
    assert bool(check.failed) and not bool(check.finite) and int(check.rule) == 0
    assert check.rule.dtype == jnp.int32


@pytest.mark.parametrize("rules", [reset.FAILURE_RULES, ("non_finite",)])
def test_a_non_finite_state_alone_fails_the_cycle(rules):
    """Rule (a) without (c): nothing else holds (the norm of a NaN state is NaN)."""
    nan = jax.tree.map(lambda x: x.at[0].set(jnp.nan), PARAMS)
    check = reset.check_cycle(_state(nan), NORM, False, kappa=3.0, rules=rules)
    assert bool(check.failed) and int(check.rule) == 0


@pytest.mark.parametrize(("params", "start_norm"), [([6.0, 8.0], 5.0), ([3.0, 4.0], 10.0)])
def test_a_norm_ratio_of_exactly_kappa_or_one_over_kappa_is_not_a_failure(params, start_norm):
    """Rule (b) needs the ratio outside [1/kappa, kappa]: 10 / 5 = 2 and 5 / 10 = 1/2."""
    tree = {"w": jnp.array(params)}
    check = reset.check_cycle(_state(tree, {}), start_norm, False, kappa=2.0)
    assert float(check.norm_ratio) in (2.0, 0.5)
    assert not bool(check.failed) and int(check.rule) == -1


def test_past_the_plan_the_expected_pace_is_the_whole_way():
    """A cycle evaluated after the plan's end (fraction > 1) is measured like at its end."""
    assert reset.tau_expected(0.5, 0.9, 0.1, 1.5) == pytest.approx(0.5)
    assert reset.tau_expected(0.5, 0.9, 0.1, 1.5) == reset.tau_expected(0.5, 0.9, 0.1, 1.0)


@pytest.mark.parametrize(
    ("best", "higher", "target", "improved"),
    [
        (0.56, True, None, True),  # margin 0.1 x 0.5 = 0.05
        (0.545, True, 0.9, True),  # margin 0.1 x |0.5 - 0.9| = 0.04
        (0.535, True, 0.9, False),
        (0.445, False, 0.0, True),  # A loss towards 0: margin 0.1 x 0.5.
        (0.46, False, None, False),
    ],
)
def test_the_improvement_margin_is_the_tolerance_times_the_value_or_the_gap(
    best, higher, target, improved
):
    assert reset.improved(best, 0.5, higher, 0.1, target) is improved


@pytest.mark.parametrize(("best", "higher"), [(3.0, True), (1.0, False)])
def test_a_best_exactly_at_the_margin_is_no_improvement(best, higher):
    """start 2, tolerance 0.5: margin 1; 3 (or 1 for a loss) does not beat it."""
    assert reset.improved(best, 2.0, higher, 0.5) is False


def test_the_norm_is_float32_even_with_64_bit_types_enabled():
    """The docstring's promise holds where jax_enable_x64 is on: float64 leaves are summed
    in float32, and a tree without float leaves gives a float32 zero."""
    # jax >= 0.8 has jax.enable_x64; 0.7 (AlgoPerf 0.6's pin) jax.experimental.enable_x64.
    enable_x64 = jax.enable_x64 if hasattr(jax, "enable_x64") else jax.experimental.enable_x64
    with enable_x64(True):
        norm = reset.global_norm({"w": jnp.array([3.0, 4.0], jnp.float64)})
        assert norm.dtype == jnp.float32 and float(norm) == 5.0
        assert reset.global_norm({}).dtype == jnp.float32


def test_a_reestimated_statistic_keeps_its_dtype():
    """An EMA kept in bfloat16 (s <- 0.9 s + 0.1 b, b = 2) comes back as b in bfloat16."""

    def forward(state):
        return {"mean": (0.9 * state["mean"] + 0.1 * 2.0).astype(state["mean"].dtype)}

    estimated = reset.reestimate_ema(forward, {"mean": jnp.zeros(3, jnp.bfloat16)})
    assert estimated["mean"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(estimated["mean"], np.float32), 2.0, rtol=0.05)  # bf16


def test_a_blend_keeps_counters_and_each_leafs_dtype():
    """(1 - tau) x + tau x0 on float leaves, in their dtype; an integer leaf (a counter)
    is kept from the current state."""
    current = {"w": jnp.full(2, 2.0, jnp.bfloat16), "count": jnp.array(10, jnp.int32)}
    fresh = {"w": jnp.zeros(2, jnp.bfloat16), "count": jnp.array(0, jnp.int32)}
    blended = reset.blend(current, fresh, 0.25)
    assert blended["w"].dtype == jnp.bfloat16 and blended["w"].tolist() == [1.5, 1.5]
    assert blended["count"].dtype == jnp.int32 and int(blended["count"]) == 10
