"""The early-switch detector (METHOD.md section 5).

Within a cycle, after evaluation t = 1, 2, ... with validation loss L(t):

    l(t)  = lambda L(t) + (1 - lambda) l(t-1),   l(1) = L(1)     smoothed loss
    l'(t) = l(t) - l(t-1),                         l'(1) = 0       its trend

    S(t) = 1  if l'(t) >= eps1                                            (rising)
    S(t) = 1  if t - argmin_{x<=t} l(x) >= k  and
                 m l'(t) + l(t) >= min_{x<=t} l(x) + eps2                 (plateau)
    S(t) = 0  otherwise.

With `relative` tolerances eps1 and eps2 are scaled by |l(t-1)| and |min l|. During the
first `grace_evals` evaluations of a cycle the detector only records (updates l, l' and
the minimum) and never switches. A non-finite loss switches at once.

The detector is a pure function on a small NamedTuple of Python numbers, so its state
can live in a checkpoint and a run's decisions can be rebuilt from its history
(`replay`). A new cycle starts from `initial_state()`.
"""

import math
from collections.abc import Iterable
from typing import NamedTuple

RISING = "rising"
PLATEAU = "plateau"
NON_FINITE = "non_finite"
BLOW_UP = "blow_up"


class DetectorConfig(NamedTuple):
    """Detector settings: lambda in (0, 1], eps1 > 0, eps2 >= 0, integers m >= 1, k >= 1,
    grace_evals >= 0. METHOD.md's defaults, which the schema (`hyperparameters.Config`, the
    `switch_*` fields) reads from here; the schema checks the ranges too (the detector
    takes its settings as given, like optax its arguments)."""

    lambda_: float = 0.7
    eps1: float = 0.01
    eps2: float = 0.01
    m: int = 9
    k: int = 9
    grace_evals: int = 2
    relative: bool = True


class DetectorState(NamedTuple):
    """t (evaluations seen in this cycle), l(t), l'(t), min l and its argmin."""

    num_evals: int = 0
    smoothed: float = 0.0
    trend: float = 0.0
    best: float = math.inf
    best_index: int = 0


class Decision(NamedTuple):
    """One evaluation's outcome: S(t) and which case fired ('' when none)."""

    switch: bool
    reason: str


def initial_state() -> DetectorState:
    """The state at the start of a cycle: no evaluation seen."""
    return DetectorState()


def smooth(previous: DetectorState, loss: float, lambda_: float) -> DetectorState:
    """Adds evaluation t: l(t), l'(t), and the running minimum of l with its argmin."""
    t = previous.num_evals + 1
    if t == 1:
        smoothed, trend = loss, 0.0
    else:
        smoothed = lambda_ * loss + (1.0 - lambda_) * previous.smoothed
        trend = smoothed - previous.smoothed
    if smoothed < previous.best:
        best, best_index = smoothed, t
    else:
        best, best_index = previous.best, previous.best_index
    return DetectorState(t, smoothed, trend, best, best_index)


def switch_signal(previous: DetectorState, state: DetectorState, config: DetectorConfig) -> str:
    """S(t) as the case that fired: RISING, PLATEAU or '' (no switch)."""
    t = state.num_evals
    scale1 = abs(previous.smoothed) if config.relative and t > 1 else 1.0
    scale2 = abs(state.best) if config.relative else 1.0
    if t > 1 and state.trend >= config.eps1 * scale1:
        return RISING
    if (
        t - state.best_index >= config.k
        and config.m * state.trend + state.smoothed >= state.best + config.eps2 * scale2
    ):
        return PLATEAU
    return ""


def update(
    state: DetectorState, loss: float, config: DetectorConfig
) -> tuple[DetectorState, bool, str]:
    """(detector state, new validation loss) -> (new state, switch?, reason)."""
    loss = float(loss)
    if not math.isfinite(loss):
        return state._replace(num_evals=state.num_evals + 1), True, NON_FINITE
    new = smooth(state, loss, config.lambda_)
    if new.num_evals <= config.grace_evals:
        return new, False, ""
    reason = switch_signal(state, new, config)
    return new, bool(reason), reason


def guard(loss: float, norm_ratio: float | None, kappa: float, signal: str = "") -> str:
    """Whether a guarded cycle ends (METHOD.md section 5, v5), from L(t), the params' norm
    ratio r = ||theta|| / ||theta_start|| at this evaluation (None: not measured) and the
    detector's `signal` (RISING or PLATEAU where it fired, else ''):

        NON_FINITE   if L(t) is not finite,
        BLOW_UP      if r is outside [1/kappa^2, kappa^2] (a non-finite r too),
        signal       if r is outside [1/kappa, kappa] (the detector confirmed by the norm),
        ''           otherwise.

    kappa is failure rule (b)'s: rule (b) needs a switch to confirm it, a switch here needs
    rule (b)'s norm, and only a blow-up far past it (kappa^2) ends the cycle alone."""
    if not math.isfinite(float(loss)):
        return NON_FINITE
    if norm_ratio is None:
        return ""
    if not 1.0 / kappa**2 <= norm_ratio <= kappa**2:
        return BLOW_UP
    return signal if signal and not 1.0 / kappa <= norm_ratio <= kappa else ""


def replay(
    losses: Iterable[float], config: DetectorConfig, state: DetectorState | None = None
) -> tuple[DetectorState, list[Decision]]:
    """Feeds one cycle's losses in order; returns the final state and every decision.

    Evaluations after the first switch are still fed (the caller decides whether a
    cycle ends at the first one), so a history can be inspected in full.
    """
    state = initial_state() if state is None else state
    decisions = []
    for loss in losses:
        state, switch, reason = update(state, loss, config)
        decisions.append(Decision(switch, reason))
    return state, decisions
