"""The cyclic learning rate as an optax stateful schedule.

    lr(t) = learning_rate(t, window)

where t is the global step of the next update and `window` is one cycle
[b_i, b_{i+1}) of a plan, cut out by `cycle_window(plan, i)` (METHOD.md section 3). Both
live in the optimizer state (`CyclicScheduleState`), not in the compiled function, so

    tx = optax.inject_hyperparams(optax.adamw)(learning_rate=cyclic_schedule(plan), ...)

reads its learning rate from data: entering the next cycle, or moving a boundary after an
early switch, is `enter_cycle(opt_state, window, step)`, never a recompilation.

The schedule steps t <- t + 1 on every update and never leaves its window by itself: at a
boundary the caller enters the next cycle (after the window's end the rate is 0). A fresh
`tx.init` starts at cycle 0, step 0 (or the factory's cycle and step), so after any reset,
a `full` one included, the caller calls `enter_cycle` to put the schedule at the new cycle
and the current step.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .plan import CyclePlan, cycle_window, num_cycles
from .shapes import DECAY, WARMUP, select


def learning_rate(step, plan: CyclePlan):
    """The plan's learning rate at `step` (a scalar or an array of steps).

    eta_i * warmup(s / W_i) for s < W_i, eta_i * decay(u) after, 0 outside [b_0, b_N).
    Pure and jit-compatible in both arguments: the plan's numbers are traced arrays.
    """
    b = jnp.asarray(plan.boundaries)
    step = jnp.asarray(step)
    n = b.shape[0] - 1
    i = jnp.clip(jnp.searchsorted(b, step, side="right") - 1, 0, n - 1)
    peak = jnp.asarray(plan.peak_learning_rates)[i]
    start, end = b[i], b[i + 1]
    length = (end - start).astype(peak.dtype)
    s = (step - start).astype(peak.dtype)
    warm = jnp.asarray(plan.warmup_fractions)[i] * length
    in_warmup = s < warm
    # Guard the unused branch of each `where` against 0/0.
    x = s / jnp.where(in_warmup, warm, 1.0)
    u = jnp.where(in_warmup, 0.0, (s - warm) / jnp.maximum(length - warm, 1e-12))
    value = jnp.where(
        in_warmup,
        select(tuple(WARMUP.values()), jnp.asarray(plan.warmup_shapes)[i], x),
        select(tuple(DECAY.values()), jnp.asarray(plan.decay_shapes)[i], jnp.clip(u, 0.0, 1.0)),
    )
    inside = (step >= b[0]) & (step < b[n])
    return jnp.where(inside, peak * value, jnp.zeros_like(peak))


# The dtypes of a window (as `cycle_window` makes it): fixed, so nothing recompiles.
WINDOW_DTYPES = CyclePlan(
    boundaries=jnp.int32,
    peak_learning_rates=jnp.float32,
    warmup_fractions=jnp.float32,
    warmup_shapes=jnp.int32,
    decay_shapes=jnp.int32,
)


class CyclicScheduleState(NamedTuple):
    """The state of a `CyclicSchedule`.

    Attributes:
      step: int32 scalar, t, the global step of the next update.
      window: the current cycle, a one-cycle `CyclePlan` (`cycle_window(plan, i)`):
        boundaries (2,) int32, the other fields (1,) int32 / float32.
    """

    step: jax.Array
    window: CyclePlan


def _as_window(window: CyclePlan) -> CyclePlan:
    """`window` as jax arrays of the fixed window dtypes; ValueError unless one cycle."""
    if not isinstance(window, CyclePlan):
        raise ValueError(
            f"window must be a CyclePlan (schedules.cycle_window(plan, i)), got {type(window)}."
        )
    shapes = [jnp.shape(x) for x in window]
    if shapes != [(2,), (1,), (1,), (1,), (1,)]:
        raise ValueError(
            "window must hold exactly one cycle, as schedules.cycle_window(plan, i) "
            f"makes it (boundaries of shape (2,), the rest (1,)), got shapes {shapes}."
        )
    return CyclePlan(*(jnp.asarray(x, d) for x, d in zip(window, WINDOW_DTYPES, strict=True)))


def _as_step(step) -> jax.Array:
    if isinstance(step, bool) or jnp.shape(step) != ():
        raise ValueError(f"step must be an integer scalar, got {step!r}.")
    return jnp.asarray(step, jnp.int32)


class CyclicSchedule:
    """optax's `StatefulSchedule` protocol for the cyclic learning rate.

    init() -> CyclicScheduleState(t_0, window_i);
    update(state) -> state with t <- t + 1;
    __call__(state) -> learning_rate(t, window), eta_i * shape(t - b_i) inside the window.
    """

    def __init__(self, window: CyclePlan, step):
        # Host copies: every init() makes new device arrays, so a caller that donates one
        # optimizer state (a jitted step) never deletes the buffers of the next tx.init.
        self.window = jax.tree.map(np.asarray, _as_window(window))
        self.step = np.asarray(_as_step(step))

    def init(self) -> CyclicScheduleState:
        """The state at the factory's cycle and step (new arrays each time)."""
        return CyclicScheduleState(
            step=jnp.asarray(self.step), window=jax.tree.map(jnp.asarray, self.window)
        )

    def update(self, state: CyclicScheduleState, **extra_args) -> CyclicScheduleState:
        """t <- t + 1; the window is kept."""
        del extra_args
        return state._replace(step=optax.safe_int32_increment(state.step))

    def __call__(self, state: CyclicScheduleState, **extra_args) -> jax.Array:
        """learning_rate(t, window): the rate of the update at step t."""
        del extra_args
        return learning_rate(state.step, state.window)


def cyclic_schedule(plan: CyclePlan, cycle: int = 0, step: int | None = None) -> CyclicSchedule:
    """A `CyclicSchedule` that starts in cycle `cycle` of `plan` at global step `step`.

    Args:
      plan: the cycle plan (`schedules.make_plan`).
      cycle: i, the cycle to start in, 0 <= i < N.
      step: t_0, the global step of the first update; None for the cycle's start b_i.
    """
    n = num_cycles(plan)
    if isinstance(cycle, bool) or not isinstance(cycle, int | np.integer) or not 0 <= cycle < n:
        raise ValueError(f"cycle must be an integer in [0, {n - 1}], got {cycle!r}.")
    if step is None:
        step = int(plan.boundaries[cycle])
    return CyclicSchedule(cycle_window(plan, cycle), step)


def _is_schedule_state(path, value) -> bool:
    del path
    return isinstance(value, CyclicScheduleState)


def schedule_states(opt_state) -> list[CyclicScheduleState]:
    """Every `CyclicScheduleState` inside opt_state (found by type), in tree order."""
    found = optax.tree_utils.tree_get_all_with_path(
        opt_state, CyclicScheduleState.__name__, _is_schedule_state
    )
    return [value for _, value in found]


def enter_cycle(opt_state, window: CyclePlan, step):
    """opt_state with every `CyclicScheduleState` set to (step, window).

    The schedule's next update then uses learning_rate(step, window). Jit-compatible:
    window and step may be traced, and as they keep their shapes and dtypes (int32 /
    float32), a jitted caller compiles once for every cycle and every boundary.

    Args:
      opt_state: an optimizer state holding a `cyclic_schedule` (through
        `optax.inject_hyperparams`), anywhere.
      window: the cycle to enter, `schedules.cycle_window(plan, i)`.
      step: the global step of the next update (usually b_i, the cycle's start).

    Raises:
      ValueError: the opt_state holds no `CyclicScheduleState`, or window is not one cycle.
    """
    if not schedule_states(opt_state):
        raise ValueError(
            "the optimizer state holds no CyclicScheduleState: build the optimizer with "
            "optax.inject_hyperparams(...)(learning_rate=schedules.cyclic_schedule(plan))."
        )
    new_state = CyclicScheduleState(step=_as_step(step), window=_as_window(window))
    return optax.tree_utils.tree_set(
        opt_state, _is_schedule_state, **{CyclicScheduleState.__name__: new_state}
    )
