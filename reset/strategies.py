"""Reset strategies at a cycle boundary (METHOD.md section 4).

A strategy is a small object carrying its own parameters; its `apply(current, fresh,
outcome)` maps the state the finished cycle ends with (`current`), a fresh initialisation
(`fresh`) and how the cycle went (`CycleOutcome`: tau, failed, switched, where it started)
to the state the next cycle
starts from. States are `TrainState`s (params, model state, optimizer state). `apply` is
a pure jax function: jit it with the outcome traced and it compiles once for every reset.

| strategy      | params                        | optimizer moments                     |
| none          | theta                         | m, v                                  |
| full          | theta0                        | fresh (m = v = 0, n = 0)              |
| params_only   | theta0                        | m, v (bit for bit)                    |
| soft(alpha)   | (1 - tau) theta + tau theta0  | (1 - tau alpha) m, (1 - tau alpha) v  |

`soft` also treats the model state (batch-norm statistics: blended, kept or fresh) and
keeps the step count n. METHOD.md's decisions make it safe:
  * a failed cycle (v2: non-finite, blown-up or collapsed params, or no improvement) is
    rolled back: the next cycle starts where the failed one started, with a fresh
    optimizer state (`rollback`);
  * if any params, model state or moment entry is not finite, the result is the fresh
    state (when not rolled back), chosen by selection (`where`), never by arithmetic.

Moments are the optimizer state's `mu`, `trace` and `nu` fields (see `reset.moments`):
Adam's m and v, Lion's m, sgd's momentum buffer. Where the state also carries the moments'
weights (`w1`, `w2` of `reset.scale_by_weighted_adam`, METHOD.md section 4 v2) `soft` scales
them by the same 1 - tau alpha: the kept history then counts for what it is, and tau alpha = 1
gives exactly `full`'s optimizer state.
"""

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .moments import all_finite, check_moments, moments_finite, scale_moments


class TrainState(NamedTuple):
    """What a reset acts on."""

    params: Any
    model_state: Any
    opt_state: Any


class CycleOutcome(NamedTuple):
    """How the finished cycle went (the numbers may be traced).

    Attributes:
      tau: float32 scalar in [0, 1], the soft-reset coefficient (`reset.tau`).
      failed: bool scalar, the cycle failed (METHOD.md section 4, v2: non-finite, params
        norm blown up or collapsed, or no improvement; `reset.check_cycle`).
      switched: bool scalar, an early switch ended the cycle (not a failure by itself).
      start: the `TrainState` the cycle started from (its params and model state; the
        optimizer state is not used), for a rollback; None when not kept.
    """

    tau: Any
    failed: Any
    switched: Any = False
    start: Any = None


class ResetStrategy(NamedTuple):
    """A reset strategy: `apply(current, fresh, outcome) -> TrainState`.

    `needs_fresh` is False when `apply` ignores `fresh`, so a caller can skip the new
    initialisation (and pass `current` in its place).

    `uses_init(outcome, finite)` (a bool scalar, maybe traced; `finite`: the current
    state is all finite) says whether this reset reads `fresh.params` or
    `fresh.model_state`. When it is False the result is the same with `fresh` replaced by
    `TrainState(current.params, current.model_state, fresh optimizer state)`, so a caller
    can skip the workload's initialisation (`jax.lax.cond`) and still build the fresh
    optimizer state, which only needs the params' shapes.

    `uses_tau` is True when the result depends on `outcome.tau` (only `soft`): reports show
    tau only where it mattered.

    `rolls_back(failed)` (a bool scalar, maybe traced) says whether `apply` put a cycle
    with this failure verdict back to its start: the one place that decides it, for the
    device (the rolled-back statistics are kept) and the host (the log, the controller).

    `reestimates_model_state`: the caller re-estimates the statistics of the result
    (`reestimate_ema`, which needs the model) unless the cycle was rolled back; set with
    `_replace` on a strategy that keeps them (`model_state="keep"`).
    """

    name: str
    needs_fresh: bool
    apply: Callable[[TrainState, TrainState, CycleOutcome], TrainState]
    uses_init: Callable[[CycleOutcome, Any], Any]
    uses_tau: bool = False
    rolls_back: Callable[[Any], Any] = lambda failed: False  # noqa: E731 -- none roll back.
    reestimates_model_state: bool = False


def _always(outcome: CycleOutcome, finite) -> jax.Array:
    """The fresh initialisation is read whatever the cycle's outcome."""
    del outcome, finite
    return jnp.asarray(True)


def _never(outcome: CycleOutcome, finite) -> jax.Array:
    """The fresh initialisation is never read."""
    del outcome, finite
    return jnp.asarray(False)


def blend(current, fresh, tau):
    """(1 - tau) x + tau x0 for inexact leaves, in each leaf's dtype: optax's Polyak
    step `optax.incremental_update(x0, x, tau)`. Leaves that are not floating point
    (counters) are kept from `current`."""

    def mix(x, x0):
        if not jnp.issubdtype(jnp.result_type(x), jnp.inexact):
            return x
        return optax.incremental_update(x0, x, tau).astype(jnp.result_type(x))

    return jax.tree.map(mix, current, fresh)


def tree_select(pred, on_true, on_false):
    """Leafwise `where(pred, a, b)` over two trees of the same structure."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def is_finite_state(state: TrainState):
    """A scalar bool array: params, model state and moments are all finite."""
    return all_finite((state.params, state.model_state)) & moments_finite(state.opt_state)


# --- the strategies -------------------------------------------------------------------


def none() -> ResetStrategy:
    """Cyclical schedule: keep theta, m and v (`fresh` is ignored)."""

    def apply(current: TrainState, fresh: TrainState, outcome: CycleOutcome) -> TrainState:
        del fresh, outcome
        return current

    return ResetStrategy("none", False, apply, _never)


def full() -> ResetStrategy:
    """Sequential schedule: the fresh state, exactly."""

    def apply(current: TrainState, fresh: TrainState, outcome: CycleOutcome) -> TrainState:
        del current, outcome
        return fresh

    return ResetStrategy("full", True, apply, _always)


def params_only() -> ResetStrategy:
    """Fresh params and model state, the optimizer state kept bit for bit."""

    def apply(current: TrainState, fresh: TrainState, outcome: CycleOutcome) -> TrainState:
        del outcome
        return TrainState(fresh.params, fresh.model_state, current.opt_state)

    return ResetStrategy("params_only", True, apply, _always)


MODEL_STATE_CHOICES = ("blend", "keep", "fresh")


def soft(
    alpha: float = 0.5,
    rollback: bool = True,
    fresh_moments_when_switched: bool = False,
    model_state: str = "blend",
) -> ResetStrategy:
    """Soft reset: theta <- (1 - tau) theta + tau theta0; m, v <- (1 - tau alpha) m, v.

    The step count n is kept (in a state with moment weights, m, v, w1, w2 are all scaled,
    and only tau alpha = 1 restarts n). After a cycle that did not fail:
      * model state (batch-norm statistics): blended with tau like the params ("blend"),
        kept ("keep") or fresh ("fresh"); re-estimating it is the caller's
        (`reset.reestimate_ema`, it needs the model);
      * with `fresh_moments_when_switched` (the v1 rule, an ablation) a cycle ended by an
        early switch hands on no momentum: the optimizer state is fresh;
      * with any non-finite entry in the current params, model state or moments the
        whole result is `fresh` (selection, never arithmetic: (1 - tau) NaN is NaN).
    After a failed cycle, with `rollback` (METHOD.md section 4, v2), the next cycle starts
    from `outcome.start` (the params and model state the failed cycle started from) with
    a fresh optimizer state. `apply` raises ValueError if the optimizer state holds no
    moments (`reset.check_moments`), or if `rollback` has no `outcome.start`.

    Args:
      alpha: in [0, 1], how much of tau the moments are reset by (thesis: 0.5); the
        schema (`hyperparameters.Spec`) checks the range, like optax leaves its
        arguments' ranges to the caller.
      rollback: roll a failed cycle back instead of blending its end (v2).
      fresh_moments_when_switched: the v1 rule "an early-switched cycle gets fresh
        moments" (an ablation).
      model_state: "blend", "keep" or "fresh".
    """
    if model_state not in MODEL_STATE_CHOICES:
        raise ValueError(
            f"model_state must be one of {list(MODEL_STATE_CHOICES)}, got {model_state!r}."
        )
    alpha, rollback = float(alpha), bool(rollback)
    fresh_moments_when_switched = bool(fresh_moments_when_switched)

    def new_model_state(current, fresh, tau):
        if model_state == "blend":
            return blend(current, fresh, tau)
        return current if model_state == "keep" else fresh

    def apply(current: TrainState, fresh: TrainState, outcome: CycleOutcome) -> TrainState:
        check_moments(current.opt_state)
        if rollback and outcome.start is None:
            raise ValueError(
                "soft(rollback=True) needs outcome.start, the TrainState the cycle started "
                "from (its params and model state)."
            )
        tau = jnp.asarray(outcome.tau, jnp.float32)
        opt_state = scale_moments(current.opt_state, 1.0 - tau * alpha)
        if fresh_moments_when_switched:
            opt_state = tree_select(outcome.switched, fresh.opt_state, opt_state)
        blended = TrainState(
            params=blend(current.params, fresh.params, tau),
            model_state=new_model_state(current.model_state, fresh.model_state, tau),
            opt_state=opt_state,
        )
        result = tree_select(is_finite_state(current), blended, fresh)
        if rollback:
            back = TrainState(outcome.start.params, outcome.start.model_state, fresh.opt_state)
            result = tree_select(outcome.failed, back, result)
        return result

    def uses_init(outcome: CycleOutcome, finite):
        """theta0 is read unless the cycle is rolled back (start + fresh moments) or, with
        a finite state and tau = 0, every blend is (1 - 0) x + 0 x0 = x exactly and the
        model state is not taken fresh."""
        tau = jnp.asarray(outcome.tau, jnp.float32)
        reads = (tau > 0) | ~jnp.asarray(finite, bool) | (model_state == "fresh")
        return reads & ~(rollback & jnp.asarray(outcome.failed, bool))

    def rolls_back(failed):
        """A failed cycle is rolled back when `rollback` is on."""
        return failed & rollback

    return ResetStrategy(
        "soft",
        True,
        apply,
        uses_init,
        uses_tau=True,
        rolls_back=rolls_back,
    )


# --- the registry ---------------------------------------------------------------------

STRATEGIES: dict[str, Callable[..., ResetStrategy]] = {
    "none": none,
    "full": full,
    "params_only": params_only,
    "soft": soft,
}


def make_strategy(name: str, **params) -> ResetStrategy:
    """The strategy registered under `name`, built with `params`.

    ValueError listing the known names for an unknown name, and naming the strategy's
    accepted parameters for an unknown parameter.
    """
    if name not in STRATEGIES:
        raise ValueError(f"reset_strategy must be one of {sorted(STRATEGIES)}, got {name!r}.")
    factory = STRATEGIES[name]
    accepted = list(inspect.signature(factory).parameters)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        takes = f"accepts only {accepted}" if accepted else "accepts no parameters"
        raise ValueError(f"reset strategy {name!r} {takes}, got {unknown}.")
    return factory(**params)
