"""Tests of the cyclic learning-rate plans and shapes (METHOD.md section 3).

Expected values are computed here, independently of the package, from the closed-form
formulas of METHOD.md section 3 (in float64 with `math`).
"""

import math
import re

import jax
import jax.experimental
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cyclic_soft_reset import schedules
from cyclic_soft_reset.schedules import PlanSettings, make_plan

KAPPA = 5.0
WARMUP_NAMES = ("linear", "cosine", "exponential")
DECAY_NAMES = ("cosine", "linear", "exponential")


# --- an independent reference implementation of METHOD.md section 3 -------------------


def _whole(message: str) -> str:
    """A pattern that matches exactly `message` (pytest.raises searches)."""
    return f"^{re.escape(message)}$"


def ref_warmup(shape: str, x: float) -> float:
    if shape == "linear":
        return x
    if shape == "cosine":
        return 0.5 * (1.0 - math.cos(math.pi * x))
    return (math.exp(KAPPA * x) - 1.0) / (math.exp(KAPPA) - 1.0)


def ref_decay(shape: str, u: float) -> float:
    if shape == "linear":
        return 1.0 - u
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * u))
    return (math.exp(-KAPPA * u) - math.exp(-KAPPA)) / (1.0 - math.exp(-KAPPA))


def ref_lr(step, boundaries, peaks, warmup_fractions, warmup_shapes, decay_shapes) -> float:
    """eta_i * shape(s), from the table of METHOD.md section 3; 0 outside [b_0, b_N)."""
    if step < boundaries[0] or step >= boundaries[-1]:
        return 0.0
    i = max(j for j in range(len(boundaries) - 1) if boundaries[j] <= step)
    length = boundaries[i + 1] - boundaries[i]
    s = step - boundaries[i]
    w = warmup_fractions[i] * length
    if s < w:
        return peaks[i] * ref_warmup(warmup_shapes[i], s / w)
    return peaks[i] * ref_decay(decay_shapes[i], (s - w) / (length - w))


def ref_lr_of_plan(step, plan) -> float:
    return ref_lr(
        int(step),
        [int(b) for b in plan.boundaries],
        [float(p) for p in plan.peak_learning_rates],
        [float(w) for w in plan.warmup_fractions],
        [WARMUP_NAMES[int(k)] for k in plan.warmup_shapes],
        [DECAY_NAMES[int(k)] for k in plan.decay_shapes],
    )


_jitted_lr = jax.jit(schedules.learning_rate)


def lr_at(steps, plan) -> np.ndarray:
    """learning_rate at the given steps (jitted; padded to a power of two: few compiles)."""
    steps = np.asarray(steps, dtype=np.int32).reshape(-1)
    size = max(64, 1 << (len(steps) - 1).bit_length())
    padded = np.zeros(size, np.int32)
    padded[: len(steps)] = steps
    return np.asarray(_jitted_lr(jnp.asarray(padded), plan))[: len(steps)]


def assert_close_to_reference(steps, plan, values):
    """float32 against the float64 formulas: tolerance relative to the cycle's peak."""
    for step, value in zip(steps, values, strict=True):
        expected = ref_lr_of_plan(step, plan)
        peak = float(plan.peak_learning_rates[schedules.cycle_at(plan, int(step))])
        assert value == pytest.approx(expected, rel=2e-5, abs=2e-6 * peak), (step, expected)


# --- worked values ---------------------------------------------------------------------

SHAPE_PAIRS = [(w, d) for w in WARMUP_NAMES for d in DECAY_NAMES]

# T = 1000, 3 cycles: lengths 334, 333, 333; boundaries 0, 334, 667, 1000.
# warmup_factor 0.1: W = 33.4, 33.3, 33.3 (real numbers, not rounded).
WORKED_STEPS = [
    -3, 0, 1, 10, 16, 33, 34, 100, 200, 333,  # cycle 0: warm-up, warm-up end, decay, last
    334, 335, 350, 367, 368, 500, 666,  # cycle 1
    667, 668, 700, 701, 850, 999,  # cycle 2
    1000, 1001, 5000,  # after T
]  # fmt: skip


@pytest.mark.parametrize(("warmup_shape", "decay_shape"), SHAPE_PAIRS)
def test_worked_values_against_closed_form(warmup_shape, decay_shape):
    plan = make_plan(
        1000,
        PlanSettings(
            3,
            learning_rate=0.002,
            warmup_factor=0.1,
            warmup_shape=warmup_shape,
            decay_shape=decay_shape,
        ),
    )
    np.testing.assert_array_equal(plan.boundaries, [0, 334, 667, 1000])
    peak = 0.002
    values = lr_at(WORKED_STEPS, plan)
    for step, value in zip(WORKED_STEPS, values, strict=True):
        if step < 0 or step >= 1000:
            expected = 0.0
        else:
            start, length = {0: (0, 334), 1: (334, 333), 2: (667, 333)}[
                0 if step < 334 else 1 if step < 667 else 2
            ]
            s, w = step - start, 0.1 * length
            if s < w:
                expected = peak * ref_warmup(warmup_shape, s / w)
            else:
                expected = peak * ref_decay(decay_shape, (s - w) / (length - w))
        assert value == pytest.approx(expected, rel=2e-5, abs=2e-9), step


def test_worked_literals():
    """A few values written out by hand (T = 900: cycles of 300 steps, W = 30 exactly)."""
    peak = 0.01

    def lr(step, w, d):
        plan = make_plan(900, PlanSettings(3, peak, 0.1, warmup_shape=w, decay_shape=d))
        return float(lr_at([step], plan)[0])

    # Half-way through the warm-up (s = 15 of W = 30).
    assert lr(15, "linear", "cosine") == pytest.approx(peak / 2, rel=1e-6)
    assert lr(315, "cosine", "cosine") == pytest.approx(peak / 2, rel=1e-5)
    assert lr(615, "exponential", "cosine") == pytest.approx(
        peak * (math.exp(2.5) - 1) / (math.exp(5) - 1), rel=1e-5
    )
    # The warm-up end s = W is the peak, for every decay shape.
    for d in DECAY_NAMES:
        assert lr(30, "linear", d) == pytest.approx(peak, rel=1e-6)
        assert lr(330, "linear", d) == pytest.approx(peak, rel=1e-6)
    # Half-way through the decay (u = 0.5: s = 30 + 135).
    assert lr(165, "linear", "cosine") == pytest.approx(peak / 2, rel=1e-5)
    assert lr(165, "linear", "linear") == pytest.approx(peak / 2, rel=1e-5)
    assert lr(165, "linear", "exponential") == pytest.approx(
        peak * (math.exp(-2.5) - math.exp(-5)) / (1 - math.exp(-5)), rel=1e-5
    )
    # The last step of a cycle (s = 299, u = 269 / 270).
    assert lr(299, "linear", "linear") == pytest.approx(peak / 270, rel=1e-4)


@pytest.mark.parametrize(("warmup_shape", "decay_shape"), SHAPE_PAIRS)
def test_cycles_start_and_end_at_exactly_zero(warmup_shape, decay_shape):
    plan = make_plan(
        1000,
        PlanSettings(
            3,
            0.002,
            0.1,
            cycle_length_factors=[1.0, 2.0, 1.5],
            cycle_lr_factors=[1.0, 1.5727, 0.4289],
            warmup_shape=warmup_shape,
            decay_shape=decay_shape,
        ),
    )
    b = [int(x) for x in plan.boundaries]
    # The first step of each cycle is the previous cycle's end boundary: exactly 0.
    values = lr_at(b[:-1], plan)
    assert np.all(values == 0.0), values
    # After T and before 0.
    assert np.all(lr_at([b[-1], b[-1] + 1, b[-1] + 10_000, -1], plan) == 0.0)
    # The step before each boundary is still positive (the cycle has not ended yet).
    assert np.all(lr_at([x - 1 for x in b[1:]], plan) > 0.0)
    # The same without jit.
    assert np.all(np.asarray(schedules.learning_rate(jnp.asarray(b), plan)) == 0.0)


# --- per-cycle factors ------------------------------------------------------------------


def test_proportional_lengths():
    plan = make_plan(1000, PlanSettings(3, 1.0, cycle_length_factors=[1, 2, 1]))
    np.testing.assert_array_equal(plan.boundaries, [0, 250, 750, 1000])
    plan = make_plan(100, PlanSettings(2, 1.0, cycle_length_factors=[3.0, 1.0]))
    np.testing.assert_array_equal(plan.boundaries, [0, 75, 100])
    # Uneven split: each length is within one step of T f_i / sum f.
    f = [0.3, 1.7, 1.1, 0.9]
    plan = make_plan(997, PlanSettings(4, 1.0, cycle_length_factors=f))
    lengths = np.diff(plan.boundaries)
    assert lengths.sum() == 997 and plan.boundaries[0] == 0
    assert np.all(np.abs(lengths - 997 * np.asarray(f) / sum(f)) <= 1)
    # Equal lengths by default; the first cycles take the extra steps.
    np.testing.assert_array_equal(make_plan(11, PlanSettings(3, 1.0)).boundaries, [0, 4, 8, 11])
    np.testing.assert_array_equal(schedules.equal_lengths(11, 3), [4, 4, 3])


def test_peak_multipliers():
    eta = 0.0017486387539278373
    r = [1.0, 1.5727, 0.4289]
    plan = make_plan(900, PlanSettings(3, eta, 0.1, cycle_lr_factors=r, decay_shape="linear"))
    np.testing.assert_allclose(plan.peak_learning_rates, [eta * x for x in r], rtol=1e-15)
    # Each cycle peaks at its own eta_i at the warm-up end (W = 30).
    values = lr_at([30, 330, 630], plan)
    np.testing.assert_allclose(values, [eta * x for x in r], rtol=1e-6)
    # And never exceeds it inside the cycle.
    for i, start in enumerate((0, 300, 600)):
        inside = lr_at(np.arange(start, start + 300), plan)
        assert inside.max() <= np.float32(eta * r[i])


def test_warmup_multipliers():
    q = [1.0, 2.0, 0.5]
    plan = make_plan(900, PlanSettings(3, 1.0, 0.1, cycle_warmup_factors=q))
    np.testing.assert_allclose(plan.warmup_fractions, [0.1, 0.2, 0.05], rtol=1e-15)
    # W_i = 30, 60, 15 steps: linear warm-up reaches the peak exactly there.
    for start, w in ((0, 30), (300, 60), (600, 15)):
        before, at = lr_at([start + w - 1, start + w], plan)
        assert before == pytest.approx((w - 1) / w, rel=1e-6)
        assert at == pytest.approx(1.0, rel=1e-6)


def test_cycle_window_matches_full_plan():
    plan = make_plan(
        1000,
        PlanSettings(
            3,
            0.003,
            0.05,
            cycle_length_factors=[2, 1, 1.5],
            cycle_lr_factors=[1.0, 0.5, 2.0],
            cycle_warmup_factors=[1.0, 3.0, 0.5],
            warmup_shape="cosine",
            decay_shape="exponential",
        ),
    )
    steps = np.arange(-2, 1003)
    full = lr_at(steps, plan)
    for i in range(3):
        window = schedules.cycle_window(plan, i)
        assert window.boundaries.dtype == np.int32
        assert window.peak_learning_rates.dtype == np.float32
        assert window.warmup_fractions.dtype == np.float32
        assert window.warmup_shapes.dtype == np.int32 and window.decay_shapes.dtype == np.int32
        assert schedules.num_cycles(window) == 1
        b0, b1 = int(plan.boundaries[i]), int(plan.boundaries[i + 1])
        inside = (steps >= b0) & (steps < b1)
        windowed = lr_at(steps, window)
        np.testing.assert_array_equal(windowed[inside], full[inside])
        assert np.all(windowed[~inside] == 0.0)


# --- cycle_at, plan_used_up, replans ------------------------------------------------


def test_cycle_at_and_plan_used_up():
    plan = make_plan(1000, PlanSettings(3, 1.0))
    cases = {-5: 0, 0: 0, 333: 0, 334: 1, 666: 1, 667: 2, 999: 2, 1000: 2, 5000: 2}
    for step, i in cases.items():
        assert schedules.cycle_at(plan, step) == i, step
    assert not schedules.plan_used_up(plan, 999)
    assert schedules.plan_used_up(plan, 1000)
    assert schedules.plan_used_up(plan, 1001)
    assert schedules.num_cycles(plan) == 3 and schedules.total_steps(plan) == 1000


def test_replan_splits_rest_equally():
    plan = make_plan(
        1000, PlanSettings(3, 1.0, cycle_lr_factors=[1.0, 2.0, 3.0], warmup_shape="cosine")
    )
    new = schedules.replan_after_switch(plan, 100)  # in cycle 0: 900 steps left for 2 cycles
    np.testing.assert_array_equal(new.boundaries, [0, 100, 550, 1000])
    np.testing.assert_array_equal(new.peak_learning_rates, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(new.warmup_shapes, plan.warmup_shapes)
    # Uneven: the earlier cycle gets the extra step.
    new = schedules.replan_after_switch(plan, 101)
    np.testing.assert_array_equal(new.boundaries, [0, 101, 551, 1000])
    # Switch in cycle 1: the earlier boundaries stay, cycle 2 takes the rest.
    new = schedules.replan_after_switch(plan, 400)
    np.testing.assert_array_equal(new.boundaries, [0, 334, 400, 1000])
    # A second switch on the replanned plan.
    newer = schedules.replan_after_switch(new, 401)
    assert schedules.num_cycles(newer) == 4  # 401 lies in the last cycle: one appended
    np.testing.assert_array_equal(newer.boundaries, [0, 334, 400, 401, 1001])
    # The new plan's learning rate restarts at 0 at the switch.
    assert float(lr_at([400], new)[0]) == 0.0


def test_replan_never_gives_an_empty_cycle():
    """The tightest case: every following cycle gets at least one step.

    (With a valid plan, T - step >= the number of following cycles always holds, so the
    'drop cycles that cannot get a step' branch cannot trigger; nothing is dropped.)
    """
    plan = make_plan(5, PlanSettings(4, 1.0))  # lengths 2, 1, 1, 1
    np.testing.assert_array_equal(plan.boundaries, [0, 2, 3, 4, 5])
    new = schedules.replan_after_switch(plan, 1)
    np.testing.assert_array_equal(new.boundaries, [0, 1, 3, 4, 5])
    plan = make_plan(6, PlanSettings(3, 1.0, cycle_length_factors=[4, 1, 1]))
    np.testing.assert_array_equal(plan.boundaries, [0, 4, 5, 6])
    new = schedules.replan_after_switch(plan, 3)
    np.testing.assert_array_equal(new.boundaries, [0, 3, 5, 6])
    assert np.all(np.diff(new.boundaries) >= 1)


def test_replan_in_last_cycle_appends_a_cycle():
    plan = make_plan(
        1000, PlanSettings(3, 1.0, cycle_lr_factors=[1.0, 2.0, 3.0], cycle_warmup_factors=[1, 2, 3])
    )
    new = schedules.replan_after_switch(plan, 800)
    np.testing.assert_array_equal(new.boundaries, [0, 334, 667, 800, 1133])
    np.testing.assert_array_equal(new.peak_learning_rates, [1.0, 2.0, 3.0, 3.0])
    np.testing.assert_allclose(new.warmup_fractions, [0.02, 0.04, 0.06, 0.06])
    assert schedules.total_steps(new) == 800 + 333


def test_replan_rejects_steps_outside_or_on_a_boundary():
    plan = make_plan(1000, PlanSettings(3, 1.0))
    for step in (0, -1, 1000, 1001):
        message = f"step must lie strictly inside the plan (0, 1000), got {step}."
        with pytest.raises(ValueError, match=_whole(message)):
            schedules.replan_after_switch(plan, step)
    for step in (334, 667):
        with pytest.raises(ValueError, match="boundary"):
            schedules.replan_after_switch(plan, step)


def test_extend_plan_repeats_the_last_cycles_length_whatever_the_number_of_cycles():
    for factors, boundaries in (
        ([1, 1, 1, 2], [0, 80, 160, 240, 400, 560]),
        ([1, 3], [0, 100, 400, 700]),
    ):
        plan = make_plan(400, PlanSettings(len(factors), 1.0, cycle_length_factors=factors))
        assert schedules.extend_plan(plan).boundaries.tolist() == boundaries


def test_cycle_window_dtypes_are_fixed_whatever_the_plans():
    """A plan in numpy's default dtypes (int64, float64: built by hand, or read back from
    a checkpoint) gives windows of the same dtypes, so the compiled step never sees a new
    one."""
    plan = make_plan(300, PlanSettings(3, 1.0))
    wide = schedules.CyclePlan(*(np.asarray(x, np.asarray(x).dtype.kind + "8") for x in plan))
    assert [x.dtype for x in wide] == [np.int64, np.float64, np.float64, np.int64, np.int64]
    fixed = [np.int32, np.float32, np.float32, np.int32, np.int32]
    for i in range(3):
        assert [x.dtype for x in schedules.cycle_window(wide, i)] == fixed


def test_extend_plan():
    plan = make_plan(
        1000, PlanSettings(3, 1.0, cycle_lr_factors=[1.0, 2.0, 3.0], decay_shape="linear")
    )
    ext = schedules.extend_plan(plan)
    np.testing.assert_array_equal(ext.boundaries, [0, 334, 667, 1000, 1333])
    np.testing.assert_array_equal(ext.peak_learning_rates, [1.0, 2.0, 3.0, 3.0])
    np.testing.assert_array_equal(ext.decay_shapes, [1, 1, 1, 1])
    assert schedules.plan_used_up(plan, 1000) and not schedules.plan_used_up(ext, 1000)
    # The extra cycle repeats the last one's values, shifted by its length.
    np.testing.assert_array_equal(
        lr_at(np.arange(1000, 1333), ext), lr_at(np.arange(667, 1000), ext)
    )


# --- invalid plans ----------------------------------------------------------------------

INVALID = [
    (dict(cycle_lr_factors=[1.0, 1.0]), r"cycle_lr_factors has 2 entries but num_cycles is 3"),
    (dict(cycle_warmup_factors=[1, 1, 1, 1]), r"cycle_warmup_factors has 4 entries"),
    (dict(cycle_length_factors=[1.0]), r"cycle_length_factors has 1 entries"),
    (dict(cycle_lr_factors="1,1,1"), r"cycle_lr_factors must be a list of 3 numbers"),
    (
        dict(warmup_factor=0.5, cycle_warmup_factors=[1, 2, 1]),
        _whole(
            "warmup_factor * cycle_warmup_factors must stay below 1 (a cycle needs decay "
            "steps), got [0.5, 1.0, 0.5]."
        ),
    ),
    (
        dict(warmup_shape="step"),
        r"warmup_shape must be one of \['linear', 'cosine', 'exponential'\], got 'step'",
    ),
    (
        dict(decay_shape="constant"),
        r"decay_shape must be one of \['cosine', 'linear', 'exponential'\], got 'constant'",
    ),
    (dict(total_steps=2), r"total_steps must be at least num_cycles \(3\)"),
    (dict(total_steps=100.0), r"total_steps must be a positive integer"),
    (dict(total_steps=True), r"total_steps must be a positive integer"),
    (dict(num_cycles=0), r"num_cycles at least 1"),
    (dict(total_steps=10, cycle_length_factors=[100, 1, 1]), r"cycle_length_factors .* no steps"),
]


@pytest.mark.parametrize(("overrides", "message"), INVALID)
def test_invalid_plans_raise_naming_the_field(overrides, message):
    kwargs = dict(total_steps=100, num_cycles=3, learning_rate=1.0)
    kwargs.update(overrides)
    with pytest.raises(ValueError, match=message):
        make_plan(kwargs.pop("total_steps"), PlanSettings(**kwargs))


@pytest.mark.parametrize(("overrides", "message"), INVALID[:7])
def test_settings_are_checked_without_a_plan(overrides, message):
    """The schema checks the settings before any plan exists (`check_plan_settings`, from
    `hyperparameters.resolve`): the same errors, naming the same field."""
    with pytest.raises(ValueError, match=message):
        schedules.check_plan_settings(PlanSettings(3, 1.0, **overrides))


def test_valid_edge_plans():
    plan = make_plan(1, PlanSettings(1, 1.0, warmup_factor=0.999))
    np.testing.assert_array_equal(plan.boundaries, [0, 1])
    assert float(lr_at([0], plan)[0]) == 0.0
    plan = make_plan(3, PlanSettings(3, 1.0))
    np.testing.assert_array_equal(plan.boundaries, [0, 1, 2, 3])
    assert np.all(lr_at([0, 1, 2, 3], plan) == 0.0)  # one-step cycles never move params


# --- properties -------------------------------------------------------------------------


@st.composite
def plans(draw, max_cycles=5):
    n = draw(st.integers(1, max_cycles))
    total = draw(st.integers(20 * n, 3000))
    factor = st.floats(0.5, 2.0)
    return make_plan(
        total,
        PlanSettings(
            n,
            learning_rate=draw(st.floats(1e-5, 10.0)),
            warmup_factor=draw(st.floats(1e-3, 0.45)),
            cycle_length_factors=draw(st.lists(factor, min_size=n, max_size=n)),
            cycle_lr_factors=draw(st.lists(factor, min_size=n, max_size=n)),
            cycle_warmup_factors=draw(st.lists(factor, min_size=n, max_size=n)),
            warmup_shape=draw(st.sampled_from(WARMUP_NAMES)),
            decay_shape=draw(st.sampled_from(DECAY_NAMES)),
        ),
    )


@settings(max_examples=40, deadline=None)
@given(plan=plans(), data=st.data())
def test_lr_between_zero_and_cycle_peak(plan, data):
    # Per-cycle shapes too (the plan holds them as data).
    n = schedules.num_cycles(plan)
    shape_idx = st.lists(st.integers(0, 2), min_size=n, max_size=n)
    plan = plan._replace(
        warmup_shapes=np.asarray(data.draw(shape_idx), np.int32),
        decay_shapes=np.asarray(data.draw(shape_idx), np.int32),
    )
    total = schedules.total_steps(plan)
    steps = data.draw(st.lists(st.integers(-5, total + 5), min_size=32, max_size=32))
    steps += [int(b) for b in plan.boundaries] + [int(b) - 1 for b in plan.boundaries[1:]]
    steps = steps[:48] + [0] * (48 - len(steps[:48]))  # a fixed shape: few compilations
    values = np.asarray(_jitted_lr(jnp.asarray(steps), plan))
    peaks = np.float32(plan.peak_learning_rates)[[schedules.cycle_at(plan, s) for s in steps]]
    assert np.all(values >= 0.0)
    assert np.all(values <= peaks), (values - peaks).max()
    assert_close_to_reference(steps, plan, values)


@settings(max_examples=40, deadline=None)
@given(plan=plans(max_cycles=4), data=st.data())
def test_replans_keep_boundaries_increasing(plan, data):
    for _ in range(data.draw(st.integers(1, 6))):
        b = plan.boundaries
        inner = sorted(set(range(int(b[0]) + 1, int(b[-1]))) - {int(x) for x in b})
        if not inner:
            break
        step = data.draw(st.sampled_from(inner))
        i = schedules.cycle_at(plan, step)
        last = i == schedules.num_cycles(plan) - 1
        new = schedules.replan_after_switch(plan, step)
        nb = new.boundaries
        n_new = schedules.num_cycles(new)
        assert np.all(np.diff(nb) >= 1), nb
        assert nb[0] == 0
        np.testing.assert_array_equal(nb[: i + 1], b[: i + 1])
        assert nb[i + 1] == step
        if last:
            assert n_new == i + 2
            assert schedules.total_steps(new) == step + (b[-1] - b[-2])
        else:
            assert n_new == schedules.num_cycles(plan)
            assert schedules.total_steps(new) == schedules.total_steps(plan)
            rest = np.diff(nb[i + 1 :])
            assert rest.max() - rest.min() <= 1  # split equally
            assert np.all(rest[:-1] >= rest[1:])  # the earlier ones take the extra steps
        assert int(np.diff(nb).sum()) == schedules.total_steps(new)
        for field in plan._fields[1:]:
            assert len(getattr(new, field)) == n_new
        plan = new


# --- jit: one trace for every plan with the same number of cycles ------------------------


def test_learning_rate_jit_traces_once_for_many_plans():
    traces = []

    def counted(step, plan):
        traces.append(1)  # a Python side effect: runs only while tracing
        return schedules.learning_rate(step, plan)

    jitted = jax.jit(counted)
    direct = jax.jit(schedules.learning_rate)
    base = make_plan(1000, PlanSettings(3, 0.002, 0.1))
    mixed = base._replace(
        warmup_shapes=np.array([0, 1, 2], np.int32), decay_shapes=np.array([2, 0, 1], np.int32)
    )
    plans_ = [
        base,
        make_plan(
            2000,
            PlanSettings(3, 0.5, 0.3, cycle_length_factors=[1, 3, 2], warmup_shape="exponential"),
        ),
        make_plan(
            1500, PlanSettings(3, 1e-4, 0.02, cycle_lr_factors=[1, 2, 0.1], decay_shape="linear")
        ),
        schedules.replan_after_switch(base, 123),
        mixed,
    ]
    steps = jnp.arange(-5, 2010, 7)
    cached_before = direct._cache_size()
    for plan in plans_:
        got = np.asarray(jitted(steps, plan))
        np.testing.assert_array_equal(got, np.asarray(direct(steps, plan)))
        assert_close_to_reference(np.asarray(steps), plan, got)
    assert len(traces) == 1
    # The compiled-function cache is shared by every jax.jit of the same function, so
    # count the entries this test adds (its step array has a shape no other test uses).
    assert direct._cache_size() - cached_before == 1
    # Windows (the submission's compiled step reads one) never retrace either.
    windows = [schedules.cycle_window(p, i) for p in plans_[:3] for i in range(3)]
    for window in windows:
        jitted(steps, window)
    assert len(traces) == 2


# --- the optax stateful schedule ----------------------------------------------------------


def test_cyclic_schedule_is_an_optax_stateful_schedule():
    plan = make_plan(300, PlanSettings(3, 0.01, 0.1, cycle_lr_factors=[1.0, 2.0, 0.5]))
    schedule = schedules.cyclic_schedule(plan)
    assert isinstance(schedule, optax.schedules.StatefulSchedule)
    state = schedule.init()
    assert isinstance(state, schedules.CyclicScheduleState)
    assert state.step.dtype == jnp.int32 and state.step.shape == () and int(state.step) == 0
    for got, want in zip(state.window, schedules.cycle_window(plan, 0), strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    later = schedule.update(schedule.update(state, loss=1.0))  # extra args are ignored
    assert int(later.step) == 2 and later.window is state.window
    assert float(schedule(later)) == float(schedules.learning_rate(2, state.window))
    # Starting in a later cycle: at its start b_i unless a step is given.
    state = schedules.cyclic_schedule(plan, cycle=1).init()
    assert int(state.step) == 100 and list(state.window.boundaries) == [100, 200]
    assert int(schedules.cyclic_schedule(plan, cycle=2, step=250).init().step) == 250


@pytest.mark.parametrize("cycle", [-1, 3, 1.0, True, "1"])
def test_cyclic_schedule_rejects_bad_cycle(cycle):
    with pytest.raises(ValueError, match=r"cycle must be an integer in \[0, 2\]"):
        schedules.cyclic_schedule(make_plan(300, PlanSettings(3, 1.0)), cycle=cycle)


def test_enter_cycle_errors():
    plan = make_plan(300, PlanSettings(3, 1.0))
    params = {"w": jnp.ones(2)}
    window = schedules.cycle_window(plan, 1)
    no_state = _whole(
        "the optimizer state holds no CyclicScheduleState: build the optimizer with "
        "optax.inject_hyperparams(...)(learning_rate=schedules.cyclic_schedule(plan))."
    )
    with pytest.raises(ValueError, match=no_state):
        schedules.enter_cycle(optax.adamw(0.1).init(params), window, 100)
    with pytest.raises(ValueError, match=no_state):
        schedules.enter_cycle(optax.inject_hyperparams(optax.adamw)(0.1).init(params), window, 0)
    opt_state = optax.inject_hyperparams(optax.adamw)(schedules.cyclic_schedule(plan)).init(params)
    not_one = _whole(
        "window must hold exactly one cycle, as schedules.cycle_window(plan, i) makes it "
        "(boundaries of shape (2,), the rest (1,)), got shapes [(4,), (3,), (3,), (3,), (3,)]."
    )
    with pytest.raises(ValueError, match=not_one):
        schedules.enter_cycle(opt_state, plan, 100)  # the whole plan, not a window
    not_a_plan = _whole(
        "window must be a CyclePlan (schedules.cycle_window(plan, i)), got <class 'tuple'>."
    )
    with pytest.raises(ValueError, match=not_a_plan):
        schedules.enter_cycle(opt_state, tuple(window), 100)
    with pytest.raises(ValueError, match="step must be an integer scalar"):
        schedules.enter_cycle(opt_state, window, np.arange(2))


def test_enter_cycle_keeps_the_window_dtypes_with_64_bit_types():
    """With jax's 64-bit types on, a window in numpy's default dtypes (int64, float64)
    still enters the state as int32 / float32: the state a jitted step was compiled for."""
    enable_x64 = jax.enable_x64 if hasattr(jax, "enable_x64") else jax.experimental.enable_x64
    plan = make_plan(300, PlanSettings(3, 1.0))
    wide = schedules.CyclePlan(
        *(np.asarray(x, np.asarray(x).dtype.kind + "8") for x in schedules.cycle_window(plan, 1))
    )
    with enable_x64(True):
        tx = optax.inject_hyperparams(optax.adamw)(schedules.cyclic_schedule(plan))
        opt_state = schedules.enter_cycle(tx.init({"w": jnp.ones(2)}), wide, 100)
        (state,) = schedules.schedule_states(opt_state)
        dtypes = [x.dtype for x in state.window]
        assert dtypes == [jnp.int32, jnp.float32, jnp.float32, jnp.int32, jnp.int32]
        assert state.step.dtype == jnp.int32 and int(state.step) == 100
        # The rate the optimizer reads is in the window's float32 too.
        rate = schedules.learning_rate(jnp.asarray(110), state.window)
        assert rate.dtype == jnp.float32 and float(rate) > 0.0


def _toy_problem():
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), "b": jnp.zeros(3)}
    x = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(8, 3)), jnp.float32)

    def grads(params):
        return jax.grad(lambda p: jnp.mean((x @ p["w"] + p["b"] - y) ** 2))(params)

    return params, grads


def test_inject_hyperparams_follows_the_plan_bitwise_and_never_recompiles():
    # Three cycles; the first ends early (a switch at step 13): the plan moves, the
    # compiled step and enter_cycle do not recompile, and at every step the optimizer
    # uses exactly learning_rate(step, window of that cycle).
    plan = make_plan(
        60, PlanSettings(3, 0.05, 0.2, cycle_lr_factors=[1.0, 1.6, 0.4], decay_shape="linear")
    )
    params, grads = _toy_problem()
    kwargs = dict(b1=0.9, b2=0.99, weight_decay=0.08)
    tx = optax.inject_hyperparams(optax.adamw)(
        learning_rate=schedules.cyclic_schedule(plan), **kwargs
    )
    # Today's way (the learning rate set by hand into a constant-injected adamw).
    by_hand = optax.inject_hyperparams(optax.adamw)(learning_rate=0.0, **kwargs)

    @jax.jit
    def step(params, opt_state):
        updates, opt_state = tx.update(grads(params), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    @jax.jit
    def step_by_hand(params, opt_state, window, t):
        lr = schedules.learning_rate(t, window)
        opt_state = opt_state._replace(hyperparams=dict(opt_state.hyperparams, learning_rate=lr))
        updates, opt_state = by_hand.update(grads(params), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    enter = jax.jit(schedules.enter_cycle)
    lr = jax.jit(schedules.learning_rate)
    opt_state, hand_params, hand_state = tx.init(params), params, by_hand.init(params)
    cycle, seen = 0, []
    for t in range(schedules.total_steps(plan)):
        if t == 13:  # an early switch: cycle 0 ends here, the later cycles are re-planned
            plan = schedules.replan_after_switch(plan, t)
        if t == plan.boundaries[cycle + 1]:
            cycle += 1
            opt_state = enter(opt_state, schedules.cycle_window(plan, cycle), t)
        window = schedules.cycle_window(plan, cycle)
        params, opt_state = step(params, opt_state)
        hand_params, hand_state = step_by_hand(hand_params, hand_state, window, t)
        used = np.asarray(opt_state.hyperparams["learning_rate"])
        assert used.tobytes() == np.asarray(lr(t, window)).tobytes(), t
        seen.append(float(used))
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(hand_params), strict=True):
            assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), t
    assert cycle == 2 and list(plan.boundaries) == [0, 13, 37, 60]
    assert seen[0] == seen[13] == seen[37] == 0.0  # every cycle starts at 0
    assert max(seen[13:37]) > max(seen[:13]) > max(seen[37:]) > 0
    assert step._cache_size() == 1 and enter._cache_size() == 1


def test_enter_cycle_after_a_fresh_init():
    # A fresh tx.init (a full reset) restarts the schedule at cycle 0, step 0;
    # enter_cycle puts it at the new cycle and the current step, wherever it sits.
    plan = make_plan(300, PlanSettings(3, 0.01, 0.1))
    params, _ = _toy_problem()
    inner = lambda learning_rate: optax.chain(  # noqa: E731
        optax.clip_by_global_norm(1.0), optax.adamw(learning_rate)
    )
    tx = optax.inject_hyperparams(inner)(learning_rate=schedules.cyclic_schedule(plan))
    fresh = tx.init(params)
    (state,) = schedules.schedule_states(fresh)
    assert int(state.step) == 0 and list(state.window.boundaries) == [0, 100]
    entered = schedules.enter_cycle(fresh, schedules.cycle_window(plan, 2), 200)
    (state,) = schedules.schedule_states(entered)
    assert int(state.step) == 200 and list(state.window.boundaries) == [200, 300]
    assert state.step.dtype == jnp.int32 and state.window.peak_learning_rates.dtype == jnp.float32
    # Nothing else changed (the same leaves, object for object, outside the schedule).
    assert jax.tree.structure(entered) == jax.tree.structure(fresh)
    kept = (entered.count, entered.hyperparams, entered.inner_state)
    before = (fresh.count, fresh.hyperparams, fresh.inner_state)
    assert all(a is b for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(before), strict=True))
