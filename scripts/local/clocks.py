"""The local runner's clocks: the wall clock (AlgoPerf's), and a simulated clock of the
hardware a workload's budget was set for (deterministic whatever the machine's load;
faster or slower hardware with ``speed``)."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np


class WallClock:
    """Real time (``time.time``), as AlgoPerf's runner reads it."""

    simulated = False

    def now(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    def after_step(self, global_step: int, resets: int) -> None:
        """Nothing: the step's time has passed by itself."""

    def after_eval(self) -> None:
        """Nothing: the evaluation's time has passed by itself."""


@dataclasses.dataclass
class SimulatedClock:
    """A clock that advances by what the hardware it plays would take, and only then.

    Step k (0-based) takes ``seconds_per_step`` x exp(noise x z_k), z_k ~ N(0, 1) drawn
    from (seed, k) so that a resumed run draws the same; plus ``compile_seconds`` at step
    0 and ``seconds_per_reset`` for each reset the submission made in it. An evaluation
    takes ``seconds_per_eval`` (untimed by the runner, but it delays the next one, as in
    AlgoPerf). ``time`` starts at an epoch-like 1e9 s: AlgoPerf's runner starts
    ``last_eval_time`` at 0, so its first evaluation follows the first step, and this
    clock keeps that.
    """

    seconds_per_step: float
    seconds_per_eval: float = 0.0
    seconds_per_reset: float = 0.0
    compile_seconds: float = 0.0
    noise: float = 0.0
    seed: int = 0
    time: float = 1.0e9

    simulated = True

    def __post_init__(self) -> None:
        for name in (
            "seconds_per_step",
            "seconds_per_eval",
            "seconds_per_reset",
            "compile_seconds",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"SimulatedClock.{name} must be a number >= 0, got {value!r}.")
        if not self.seconds_per_step > 0:
            raise ValueError(
                f"SimulatedClock.seconds_per_step must be > 0, got {self.seconds_per_step!r}."
            )
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise ValueError(f"SimulatedClock.noise must be a number >= 0, got {self.noise!r}.")

    def now(self) -> float:
        """The simulated seconds since the epoch."""
        return self.time

    def step_seconds(self, global_step: int, resets: int) -> float:
        """What step ``global_step`` (0-based) took, with ``resets`` resets in it."""
        factor = 1.0
        if self.noise:
            z = np.random.default_rng((self.seed, global_step)).standard_normal()
            factor = math.exp(self.noise * z)
        compile_ = self.compile_seconds if global_step == 0 else 0.0
        return self.seconds_per_step * factor + compile_ + resets * self.seconds_per_reset

    def after_step(self, global_step: int, resets: int) -> None:
        """Advance by step ``global_step``'s seconds."""
        self.time += self.step_seconds(global_step, resets)

    def after_eval(self) -> None:
        """Advance by one evaluation's seconds."""
        self.time += self.seconds_per_eval


def reference_clock(
    workload: Any,
    speed: float = 1.0,
    *,
    compile_steps: float = 10.0,
    reset_steps: float = 2.0,
    noise: float = 0.0,
    seed: int = 0,
) -> SimulatedClock:
    """The simulated clock of hardware ``speed`` times as fast as the reference that a
    workload's budget was set for: s = max_allowed_runtime_sec / step_hint / speed seconds
    per step (AlgoPerf sets a budget from the steps a reference run takes in it), the
    first step's compilation ``compile_steps`` x s, a reset ``reset_steps`` x s,
    evaluations untimed and instantaneous, step times x exp(noise x N(0, 1))."""
    if not (math.isfinite(speed) and speed > 0):
        raise ValueError(f"speed must be a number > 0, got {speed!r}.")
    seconds = float(workload.max_allowed_runtime_sec) / float(workload.step_hint) / speed
    return SimulatedClock(
        seconds_per_step=seconds,
        seconds_per_reset=reset_steps * seconds,
        compile_seconds=compile_steps * seconds,
        noise=noise,
        seed=seed,
    )
