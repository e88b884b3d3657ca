"""The records of the method's events, as AlgoPerf's metrics logger holds them.

The one place that writes and reads the "reset/..." and "plan/..." metric names: the
submission logs `to_metrics()` of each record, every reader (console, plots, evidence,
the AlgoPerf checks) reads them back with `from_metrics` (`resets_in` for a whole log).
A `ResetRecord` joins the controller's `Reset` (host: when, why, tau) and the device's
`reset.FailureCheck` of the cycle it ended; a `RefitRecord` is a plan re-fitted to the
time budget (`controller.Refit`).
"""

import math
from typing import NamedTuple

from . import reset
from .controller import Controller, Refit, Reset
from .schedules import budget as time_budget
from .schedules.plan import total_steps
from .schedules.shapes import DECAY_SHAPES, WARMUP_SHAPES


def logged_number(value) -> float:
    """A float from a logged value (a number, or a CSV cell's text); nan when empty/absent
    or not a number. Every reader of logged numbers (the records below, compare) uses it."""
    if value is None or value == "":
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _flag(value) -> bool:
    """A logged 0.0/1.0 flag (nan or absent: False)."""
    number = logged_number(value)
    return bool(number) if not math.isnan(number) else False


class ResetRecord(NamedTuple):
    """One reset as it happened: the controller's `Reset` (cycle, tau, metric, early switch)
    and the device's failure check of the cycle it ended (`reset.FailureCheck`), with
    whether the strategy rolled that cycle back.

    failure_rule: the name (`reset.FAILURE_RULES`) of the first enabled rule that held,
    None when the cycle did not fail. param_norm_ratio: ||params_end|| / ||params_kept||
    (the kept state: the cycle's start, or its best). restored_metric: the target metric
    of the state a rollback restored (nan when not rolled back). unsound_metric: the
    ending cycle's best metric among the states not kept as its rollback point because
    their norm was out of bounds (`controller.keep_best`; nan if none). peak_factor: k,
    the later peaks raised to k x the ending cycle's peak (`controller.raised_peaks`; 1:
    none). growth: the ending first cycle's g = r / s, its norm's growth beyond weight
    decay's shrinkage, where the still rule read it (`reset.peaks`; nan: not read).
    """

    step: int
    cycle: int
    tau: float
    metric: float
    early_switch: bool
    non_finite: bool = False
    failed: bool = False
    failure_rule: str | None = None
    param_norm_ratio: float = math.nan
    rolled_back: bool = False
    restored_metric: float = math.nan
    unsound_metric: float = math.nan
    peak_factor: float = 1.0
    growth: float = math.nan

    @property
    def reason(self) -> str:
        """``early switch`` or ``planned``."""
        return "early switch" if self.early_switch else "planned"

    def to_metrics(self) -> dict:
        """The scalars AlgoPerf's metrics logger takes (logged at `step`): flags as 0.0/1.0,
        the rule as its index in `reset.FAILURE_RULES` (-1 when none failed)."""
        rule = -1 if self.failure_rule is None else reset.FAILURE_RULES.index(self.failure_rule)
        return {
            "reset/cycle": self.cycle,
            "reset/tau": self.tau,
            "reset/metric": self.metric,
            "reset/early_switch": float(self.early_switch),
            "reset/non_finite": float(self.non_finite),
            "reset/failed": float(self.failed),
            "reset/failure_rule": float(rule),
            "reset/param_norm_ratio": float(self.param_norm_ratio),
            "reset/rolled_back": float(self.rolled_back),
            "reset/restored_metric": float(self.restored_metric),
            "reset/unsound_metric": float(self.unsound_metric),
            "reset/peak_factor": float(self.peak_factor),
            "reset/growth": float(self.growth),
        }

    def describe(self) -> str:
        """The reset's outcome in words, for the log line after the controller's."""
        parts = [f"params norm x{self.param_norm_ratio:.3g}"]
        parts += [f"failed ({self.failure_rule})"] if self.failed else []
        parts += ["rolled back"] if self.rolled_back else []
        parts += ["non-finite state"] if self.non_finite else []
        parts += [raised] if (raised := self.raise_words()) else []
        return ", ".join(parts)

    def raise_words(self) -> str:
        """Whether the later peaks rose and what the still rule read, in words ('' where
        neither): for the log line and the main job's console alike."""
        words = [f"later peaks x{self.peak_factor:g}"] if self.peak_factor != 1.0 else []
        if math.isfinite(self.growth):
            words += [f"the first cycle's growth beyond weight decay {self.growth:.4f}"]
        return ", ".join(words)

    @classmethod
    def from_metrics(cls, step: int, metrics) -> "ResetRecord | None":
        """The reset in one logged metrics dict (numbers, or a CSV row's text), None if it
        holds none. Keys a v1 log lacks read as "did not fail"."""
        cycle = logged_number(metrics.get("reset/cycle"))
        if math.isnan(cycle):
            return None
        failed = _flag(metrics.get("reset/failed"))
        factor = logged_number(metrics.get("reset/peak_factor"))
        rule = logged_number(metrics.get("reset/failure_rule"))
        known = failed and not math.isnan(rule) and 0 <= int(rule) < len(reset.FAILURE_RULES)
        return cls(
            step=int(step),
            cycle=int(cycle),
            tau=logged_number(metrics.get("reset/tau")),
            metric=logged_number(metrics.get("reset/metric")),
            early_switch=_flag(metrics.get("reset/early_switch")),
            non_finite=_flag(metrics.get("reset/non_finite")),
            failed=failed,
            failure_rule=reset.FAILURE_RULES[int(rule)] if known else None,
            param_norm_ratio=logged_number(metrics.get("reset/param_norm_ratio")),
            rolled_back=_flag(metrics.get("reset/rolled_back")),
            restored_metric=logged_number(metrics.get("reset/restored_metric")),
            unsound_metric=logged_number(metrics.get("reset/unsound_metric")),
            peak_factor=1.0 if math.isnan(factor) else factor,  # nan: logged before v7
            growth=logged_number(metrics.get("reset/growth")),
        )


def reset_record(
    action: Reset, check, rolled_back: bool, restored_metric: float = math.nan
) -> ResetRecord:
    """The record of the reset `action` once the device has done it: `check` is the
    `reset.FailureCheck` read back to the host (failed, finite, ratio, rule index);
    `restored_metric` the kept state's metric, recorded when rolled back."""
    failed, finite, ratio, rule = check
    return ResetRecord(
        step=action.step,
        cycle=action.cycle,
        tau=action.tau,
        metric=action.metric,
        early_switch=action.early,
        non_finite=not finite,
        failed=bool(failed),
        failure_rule=reset.FAILURE_RULES[rule] if failed else None,
        param_norm_ratio=float(ratio),
        rolled_back=bool(rolled_back),
        restored_metric=float(restored_metric) if rolled_back else math.nan,
        unsound_metric=float(action.unsound_metric),
        peak_factor=float(action.peak_factor),
        growth=float(action.growth),
    )


def resets_in(records) -> list[ResetRecord]:
    """Every reset in `(step, metrics, ...)` logger records, in step order."""
    found = (ResetRecord.from_metrics(r[0], r[1]) for r in records)
    return sorted((r for r in found if r is not None), key=lambda r: r.step)


class RefitRecord(NamedTuple):
    """A plan re-fit as logged: at `step`, `seconds_per_step` measured, `budget_spent` the
    fraction of the time budget spent; the plan now ends at step `end`; `window_end`: where
    the current cycle's rate now reaches 0 when its window moved (the first cycle fitted to
    the budget, or cooling down before the budget cuts it), else -1."""

    step: int
    seconds_per_step: float
    end: int
    budget_spent: float
    window_end: int = -1

    @classmethod
    def of(cls, refit: Refit, budget: time_budget.Budget) -> "RefitRecord":
        """The record of `refit` against the run's time budget."""
        window_end = -1 if refit.window is None else int(refit.window.boundaries[1])
        spent = refit.seconds / budget.seconds
        return cls(refit.step, refit.seconds_per_step, refit.end, spent, window_end)

    def describe(self) -> str:
        """The re-fit in words, for the log."""
        moved = f"; the current cycle now decays to 0 by step {self.window_end}"
        return (
            f"plan re-fitted at step {self.step} ({self.seconds_per_step:.4g} s per step, "
            f"{100 * self.budget_spent:.0f}% of the budget spent): ends at step {self.end}"
            + (moved if self.window_end >= 0 else "")
        )

    def to_metrics(self) -> dict:
        """The scalars AlgoPerf's metrics logger takes (logged at `step`)."""
        return {
            "plan/seconds_per_step": self.seconds_per_step,
            "plan/end": self.end,
            "plan/budget_spent": self.budget_spent,
            "plan/window_end": self.window_end,
        }

    @classmethod
    def from_metrics(cls, step: int, metrics) -> "RefitRecord | None":
        """The re-fit in one logged metrics dict, None if it holds none."""
        end = logged_number(metrics.get("plan/end"))
        if math.isnan(end):
            return None
        window_end = logged_number(metrics.get("plan/window_end"))  # nan: logged before v6
        return cls(
            int(step),
            logged_number(metrics.get("plan/seconds_per_step")),
            int(end),
            logged_number(metrics.get("plan/budget_spent")),
            -1 if math.isnan(window_end) else int(window_end),
        )


def plan_summary(controller: Controller) -> dict:
    """The current plan and cycle in plain Python numbers (for plots and logs)."""
    plan = controller.plan
    return {
        "boundaries": [int(b) for b in plan.boundaries],
        "peak_learning_rates": [float(x) for x in plan.peak_learning_rates],
        "warmup_fractions": [float(x) for x in plan.warmup_fractions],
        "warmup_shape": WARMUP_SHAPES[int(plan.warmup_shapes[0])],
        "decay_shape": DECAY_SHAPES[int(plan.decay_shapes[0])],
        "cycle": controller.cycle,
        "planned_total_steps": total_steps(plan),
        "cooldown_end": controller.cooldown_end,
    }
