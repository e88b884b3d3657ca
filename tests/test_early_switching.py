"""Tests of the early-switch detector (METHOD.md section 5)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cyclic_soft_reset import early_switching as es
from cyclic_soft_reset.early_switching import DetectorConfig

DEFAULT = DetectorConfig()
NO_SWITCH = es.Decision(False, "")


def reference(losses, config=DEFAULT):
    """METHOD.md section 5 written out directly, for finite losses: [(switch, reason)]."""
    lam, eps1, eps2, m, k, g, relative = config
    smoothed, out = [], []
    for t, loss in enumerate(losses, start=1):
        prev = smoothed[-1] if smoothed else None
        lt = loss if t == 1 else lam * loss + (1 - lam) * prev
        trend = 0.0 if t == 1 else lt - prev
        smoothed.append(lt)
        best = min(smoothed)
        argmin = smoothed.index(best) + 1  # the first time the minimum was reached
        if t <= g:
            out.append((False, ""))
            continue
        tol1 = eps1 * (abs(prev) if relative and t > 1 else 1.0)
        tol2 = eps2 * (abs(best) if relative else 1.0)
        if t > 1 and trend >= tol1:
            out.append((True, "rising"))
        elif t - argmin >= k and m * trend + lt >= best + tol2:
            out.append((True, "plateau"))
        else:
            out.append((False, ""))
    return out


def decisions(losses, config=DEFAULT):
    return es.replay(losses, config)[1]


def first_switch(losses, config=DEFAULT):
    """(1-based evaluation index, reason) of the first switch, or None."""
    for t, d in enumerate(decisions(losses, config), start=1):
        if d.switch:
            return t, d.reason
    return None


# --- case 1: rising --------------------------------------------------------------------


def test_rising_switches_at_the_predicted_evaluation():
    losses = [1.0, 0.8, 0.7, 0.65, 0.68, 0.70]
    # By hand, lambda = 0.7:
    #   l1 = 1.0
    #   l2 = 0.7 * 0.8  + 0.3 * 1.0    = 0.86        l'2 = -0.14
    #   l3 = 0.7 * 0.7  + 0.3 * 0.86   = 0.748       l'3 = -0.112
    #   l4 = 0.7 * 0.65 + 0.3 * 0.748  = 0.6794      l'4 = -0.0686
    #   l5 = 0.7 * 0.68 + 0.3 * 0.6794 = 0.67982     l'5 = 0.00042  < 0.01 * 0.6794
    #   l6 = 0.7 * 0.70 + 0.3 * 0.67982 = 0.693946   l'6 = 0.014126 >= 0.01 * 0.67982
    state, ds = es.replay(losses, DEFAULT)
    assert ds[:5] == [NO_SWITCH] * 5
    assert ds[5] == es.Decision(True, es.RISING) == (True, "rising")
    assert state.num_evals == 6
    assert state.smoothed == pytest.approx(0.693946)
    assert state.trend == pytest.approx(0.014126)
    assert state.best == pytest.approx(0.6794) and state.best_index == 4
    # With absolute tolerances (eps1 = 0.01) the same evaluation: 0.00042 < 0.01 <= 0.014126.
    assert first_switch(losses, DEFAULT._replace(relative=False)) == (6, "rising")
    assert [tuple(d) for d in ds] == reference(losses)


def test_rising_threshold_is_inclusive():
    # lambda = 1: l = L. eps1 = 0.25 absolute; l' = 0.25 exactly fires (>=).
    config = DetectorConfig(lambda_=1.0, eps1=0.25, eps2=0.0, grace_evals=0, relative=False)
    assert first_switch([1.0, 1.0, 1.25], config) == (3, "rising")
    assert first_switch([1.0, 1.0, 1.125, 1.25], config) is None


# --- case 2: plateau -------------------------------------------------------------------


def test_plateau_switches_k_evaluations_past_the_minimum_literal():
    # lambda = 1 (l = L); the minimum 0.8 at t = 3, then +0.001 per evaluation:
    # l' = 0.001 < eps1 |l(t-1)| ~ 0.008 (never rising); 9 * 0.001 + l(t) >= 0.8 + 0.008.
    config = DEFAULT._replace(lambda_=1.0)
    losses = [1.0, 0.9, 0.8] + [0.8 + 0.001 * j for j in range(1, 15)]
    ds = decisions(losses, config)
    assert ds[:11] == [NO_SWITCH] * 11
    assert ds[11] == (True, "plateau")  # t = 12 = 3 + k
    assert first_switch(losses, config) == (3 + config.k, es.PLATEAU)


@pytest.mark.parametrize("k", [3, 6, 9])
def test_plateau_switches_k_evaluations_past_the_minimum_smoothed(k):
    config = DEFAULT._replace(m=k, k=k)
    losses = [1.0, 0.9, 0.8, 0.78] + [0.78 + 0.005 * j for j in range(1, 20)]
    # l(t) and its minimum by hand (lambda = 0.7).
    smoothed = [losses[0]]
    for loss in losses[1:]:
        smoothed.append(0.7 * loss + 0.3 * smoothed[-1])
    t_min = int(np.argmin(smoothed)) + 1
    trends = np.diff(smoothed)
    # Case 1 never fires on this sequence: the trend stays below eps1 |l(t-1)|.
    assert np.all(trends < 0.01 * np.abs(smoothed[:-1]))
    assert first_switch(losses, config) == (t_min + k, "plateau")
    assert [tuple(d) for d in decisions(losses, config)] == reference(losses, config)


def test_flat_plateau_needs_the_tolerance():
    # Exactly flat after the minimum: m l' + l = min, below min + eps2: no switch...
    config = DEFAULT._replace(lambda_=1.0)
    losses = [1.0, 0.9, 0.8] + [0.8] * 20
    assert first_switch(losses, config) is None
    # ... unless eps2 = 0.
    assert first_switch(losses, config._replace(eps2=0.0)) == (12, "plateau")


# --- no switch on a noisy but falling loss ---------------------------------------------


def test_noisy_falling_sequence_never_switches_fixed_seed():
    rng = np.random.default_rng(1234)
    t = np.arange(60)
    clean = 0.5 + 2.5 * np.exp(-t / 15)
    losses = clean * (1 + 0.005 * rng.normal(size=t.size))
    assert np.any(np.diff(losses) > 0)  # it is noisy: the raw loss does go up at times
    assert all(not d.switch for d in decisions(losses.tolist()))


@settings(max_examples=60, deadline=None)
@given(
    start=st.floats(0.05, 20.0),
    rate=st.floats(0.90, 0.97),
    noise=st.lists(st.floats(-0.01, 0.01), min_size=5, max_size=60),
)
def test_noisy_falling_sequence_never_switches(start, rate, noise):
    # L(t) = start rate^t (1 + e_t) with |e_t| <= 1 %: L(t) < l(t-1) always (rate * 1.01 < 0.99),
    # so l falls strictly: l' < 0 (never rising) and the minimum is the latest (no plateau).
    losses = [start * rate**t * (1 + e) for t, e in enumerate(noise)]
    assert all(not d.switch for d in decisions(losses))


# --- non-finite losses -----------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("at", [0, 1, 4])
def test_non_finite_switches_at_once(bad, at):
    losses = [1.0, 0.9, 0.8, 0.7, 0.6][:at] + [bad]
    ds = decisions(losses)
    assert ds[:at] == [NO_SWITCH] * at
    assert ds[at] == (True, es.NON_FINITE) == (True, "non_finite")
    # Also with a long grace period.
    ds = decisions(losses, DEFAULT._replace(grace_evals=10))
    assert ds[at] == (True, "non_finite")


def test_update_counts_the_non_finite_evaluation():
    state = es.initial_state()
    state, switch, reason = es.update(state, 1.0, DEFAULT)
    assert (switch, reason) == (False, "")
    state, switch, reason = es.update(state, float("nan"), DEFAULT)
    assert (switch, reason) == (True, "non_finite")
    assert state.num_evals == 2 and state.smoothed == 1.0 and state.best == 1.0


# --- grace period ----------------------------------------------------------------------


def test_grace_period_records_but_never_switches():
    rising = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    # No grace: rising from t = 2.
    assert first_switch(rising, DEFAULT._replace(grace_evals=0)) == (2, "rising")
    # Default g = 2: the first switch is at t = 3.
    assert first_switch(rising, DEFAULT) == (3, "rising")
    for g in (3, 5):
        ds = decisions(rising, DEFAULT._replace(grace_evals=g))
        assert ds[:g] == [NO_SWITCH] * g
        assert ds[g] == (True, "rising")
    # During the grace period the state is recorded as usual.
    state, ds = es.replay([5.0, 1.0, 9.0], DEFAULT._replace(grace_evals=3))
    assert ds == [NO_SWITCH] * 3
    assert state.num_evals == 3
    assert state.best == pytest.approx(0.7 * 1.0 + 0.3 * 5.0) and state.best_index == 2
    assert state.smoothed == pytest.approx(0.7 * 9.0 + 0.3 * 2.2)
    assert state.trend == pytest.approx(0.7 * 9.0 + 0.3 * 2.2 - 2.2)


def test_grace_period_applies_to_plateau_too():
    # lambda = 1, k = 1: the plateau case could fire at t = 3; g = 5 holds it to t = 6.
    config = DEFAULT._replace(lambda_=1.0, k=1, m=1, eps2=0.0, grace_evals=5)
    losses = [1.0, 0.5, 0.5, 0.5, 0.5, 0.5]
    assert first_switch(losses, config._replace(grace_evals=0)) == (3, "plateau")
    assert first_switch(losses, config) == (6, "plateau")


# --- relative vs absolute tolerances ------------------------------------------------------


def test_relative_and_absolute_tolerances_differ():
    # Large losses: l'4 = 0.077 >= 0.01 (absolute), < 0.01 * 98.39 (relative).
    big = [100.0, 99.0, 98.0, 98.5]
    assert first_switch(big, DEFAULT._replace(relative=False)) == (4, "rising")
    assert first_switch(big, DEFAULT) is None
    # Small losses: l'4 = 0.00427 < 0.01 (absolute), >= 0.01 * 0.0839 (relative).
    small = [0.10, 0.09, 0.08, 0.09]
    assert first_switch(small, DEFAULT) == (4, "rising")
    assert first_switch(small, DEFAULT._replace(relative=False)) is None
    # Plateau tolerance eps2 likewise (lambda = 1): minimum 10.0 at t = 2, then +0.002 per
    # evaluation; at t = 11: 9 * 0.002 + 10.018 = 10.036 >= 10 + 0.01 (absolute) but
    # < 10 + 0.01 * 10 (relative), and stays below that to the end.
    config = DEFAULT._replace(lambda_=1.0, eps1=1.0)  # eps1 large: never rising
    plateau = [11.0, 10.0] + [10.0 + 0.002 * j for j in range(1, 12)]
    assert first_switch(plateau, config._replace(relative=False)) == (11, "plateau")
    assert first_switch(plateau, config) is None
    for seq in (big, small, plateau):
        for cfg in (DEFAULT, DEFAULT._replace(relative=False), config):
            assert [tuple(d) for d in decisions(seq, cfg)] == reference(seq, cfg)


def test_the_rising_tolerance_at_the_second_evaluation_is_relative_to_the_first():
    """Relative: at t = 2 the rising tolerance is eps1 |l(1)|. With l(1) = 10 a trend of
    0.05 is under 0.1 and does not switch, though it is over the absolute 0.01."""
    config = DEFAULT._replace(grace_evals=1)
    losses = [10.0, 10.0 + 0.05 / 0.7]  # l(2) = 10.05 (lambda = 0.7)
    assert first_switch(losses, config) is None
    assert first_switch(losses, config._replace(relative=False)) == (2, "rising")


def test_the_absolute_plateau_tolerance_is_eps2():
    """Not relative: a plateau switches once m l' + l reaches min l + eps2 (lambda = 1:
    minimum 10 at t = 2, then flat at 10.015 >= 10.01, k = 9 evaluations later)."""
    config = DEFAULT._replace(lambda_=1.0, eps1=1.0, relative=False)  # Never rising.
    assert first_switch([11.0, 10.0] + [10.015] * 10, config) == (11, "plateau")
    assert first_switch([11.0, 10.0] + [10.005] * 10, config) is None


# --- replay and agreement with the formulas ---------------------------------------------

configs = st.builds(
    DetectorConfig,
    lambda_=st.floats(0.1, 1.0),
    eps1=st.floats(1e-4, 0.1),
    eps2=st.floats(0.0, 0.1),
    m=st.integers(1, 10),
    k=st.integers(1, 10),
    grace_evals=st.integers(0, 4),
    relative=st.booleans(),
)
finite_losses = st.lists(st.floats(0.01, 10.0), min_size=1, max_size=40)


@settings(max_examples=100, deadline=None)
@given(losses=finite_losses, config=configs)
def test_detector_matches_the_formulas(losses, config):
    assert [tuple(d) for d in decisions(losses, config)] == reference(losses, config)


@settings(max_examples=60, deadline=None)
@given(
    losses=st.lists(
        st.one_of(st.floats(-5.0, 10.0), st.sampled_from([math.nan, math.inf])), max_size=40
    ),
    config=configs,
    split=st.integers(0, 40),
)
def test_replay_reproduces_repeated_updates(losses, config, split):
    state, expected = es.initial_state(), []
    for loss in losses:
        state, switch, reason = es.update(state, loss, config)
        expected.append(es.Decision(switch, reason))
    final, got = es.replay(losses, config)
    assert got == expected and final == state
    # Replaying the rest from a saved state gives the same decisions (checkpoint restore).
    middle, head = es.replay(losses[:split], config)
    end, tail = es.replay(losses[split:], config, middle)
    assert head + tail == expected and end == state


def test_initial_state():
    state = es.initial_state()
    assert state.num_evals == 0 and state.best == math.inf
    assert es.replay([], DEFAULT) == (state, [])


def test_the_first_evaluation_sets_the_smoothed_loss_and_a_zero_trend():
    """l(1) = L(1) and l'(1) = 0 (METHOD.md section 5), the state a checkpoint keeps."""
    state = es.smooth(es.initial_state(), 2.5, 0.7)
    assert state == es.DetectorState(num_evals=1, smoothed=2.5, trend=0.0, best=2.5, best_index=1)


def test_default_config_is_methods():
    assert DEFAULT == (0.7, 0.01, 0.01, 9, 9, 2, True)  # METHOD.md's defaults


@pytest.mark.parametrize(
    ("loss", "ratio", "signal", "reason"),
    [
        (1.0, None, es.RISING, ""),  # the norm not measured: nothing confirms the detector
        (1.0, 1.0, es.RISING, ""),  # the detector alone (noise) never ends a guarded cycle
        (1.0, 3.0, es.PLATEAU, ""),  # rule (b)'s bounds are inclusive
        (1.0, 1 / 3.0, es.RISING, ""),
        (1.0, 3.01, es.RISING, es.RISING),  # confirmed by the norm
        (1.0, 0.33, es.PLATEAU, es.PLATEAU),  # a collapse confirms too
        (1.0, 8.9, "", ""),  # the norm alone, inside kappa^2: a small init growing
        (1.0, 9.0, "", ""),
        (1.0, 1 / 9.0, "", ""),  # kappa^2's bounds are inclusive too
        (1.0, 0.2, "", ""),  # a collapse inside 1/kappa^2: the norm alone keeps the cycle
        (1.0, 0.2, es.RISING, es.RISING),
        (1.0, 9.1, "", es.BLOW_UP),  # far past rule (b): ends the cycle alone
        (1.0, 0.11, "", es.BLOW_UP),
        (1.0, 9.1, es.RISING, es.BLOW_UP),
        (1.0, math.nan, "", es.BLOW_UP),
        (1.0, math.inf, "", es.BLOW_UP),
        (math.nan, 1.0, "", es.NON_FINITE),
        (-math.inf, None, es.RISING, es.NON_FINITE),  # non-finite first
    ],
)
def test_the_guard_needs_the_norm_to_confirm_the_detector(loss, ratio, signal, reason):
    assert es.guard(loss, ratio, kappa=3.0, signal=signal) == reason
    if not signal:  # No signal is the default.
        assert es.guard(loss, ratio, kappa=3.0) == reason
    assert (es.BLOW_UP, es.NON_FINITE) == ("blow_up", "non_finite")


@given(st.lists(st.floats(-10.0, 10.0), min_size=1, max_size=30))
@settings(max_examples=50, deadline=None)
def test_the_guard_never_fires_on_finite_losses_with_a_sound_norm(losses):
    """Whatever the detector reads in the losses, a sound norm keeps a guarded cycle."""
    _, decisions = es.replay(losses, DEFAULT._replace(grace_evals=0))
    for loss, decision in zip(losses, decisions, strict=True):
        assert es.guard(loss, 2.9, kappa=3.0, signal=decision.reason) == ""
