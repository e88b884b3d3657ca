"""PNG plots of a run: the learning-rate schedule and validation curves with resets.

Plain functions on plain data (lists of numbers and ``Reset`` records), drawn with
matplotlib's object API on a fresh ``Figure`` each time (no pyplot state), so they
work headless and from any thread.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

PLANNED_COLOR = "tab:green"
EARLY_COLOR = "tab:red"
BOUNDARY_COLOR = "0.5"


@dataclasses.dataclass(frozen=True)
class Reset:
    """A reset reported by the submission: the cycle that starts at ``step``."""

    step: int
    cycle: int
    tau: float
    metric: float
    early_switch: bool

    @property
    def reason(self) -> str:
        """``early switch`` or ``planned``."""
        return "early switch" if self.early_switch else "planned"

    @property
    def label(self) -> str:
        """Short annotation, e.g. ``tau=0.050 (planned)``."""
        return f"\N{GREEK SMALL LETTER TAU}={self.tau:.3f} ({self.reason})"


def _number(value: Any) -> float | None:
    """A finite-or-not float from a number or numeric string; None if empty/invalid."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def reset_from_metrics(step: int, metrics: Mapping[str, Any]) -> Reset | None:
    """The ``Reset`` in one logged metrics dict, or None if it holds no reset."""
    cycle = _number(metrics.get("reset/cycle"))
    if cycle is None or math.isnan(cycle):
        return None
    tau = _number(metrics.get("reset/tau"))
    metric = _number(metrics.get("reset/metric"))
    early = _number(metrics.get("reset/early_switch"))
    return Reset(
        step=int(step),
        cycle=int(cycle),
        tau=float("nan") if tau is None else tau,
        metric=float("nan") if metric is None else metric,
        early_switch=bool(early) if early is not None and not math.isnan(early) else False,
    )


def resets_from_records(records: Iterable[tuple[int, Mapping[str, Any]]]) -> list[Reset]:
    """All resets in ``(global_step, metrics)`` records, in step order."""
    found = (reset_from_metrics(step, metrics) for step, metrics in records)
    return sorted((r for r in found if r is not None), key=lambda r: r.step)


def _new_axes(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Any]:
    fig = Figure(figsize=(9, 4.8), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _mark_resets(ax: Any, resets: Sequence[Reset]) -> None:
    """Vertical line per reset, labelled with tau and its reason near the top."""
    for reset in resets:
        color = EARLY_COLOR if reset.early_switch else PLANNED_COLOR
        ax.axvline(reset.step, color=color, linestyle="--", linewidth=1.2)
        ax.annotate(
            reset.label,
            xy=(reset.step, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(4, -6),
            textcoords="offset points",
            rotation=90,
            va="top",
            ha="left",
            fontsize=8,
            color=color,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
        )


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plot_learning_rate(
    path: str | Path,
    steps: Sequence[int],
    learning_rates: Sequence[float],
    boundaries: Sequence[int],
    *,
    title: str,
    planned: tuple[Sequence[int], Sequence[float]] | None = None,
    resets: Sequence[Reset] = (),
    end_step: int | None = None,
    logged: Sequence[tuple[int, float]] = (),
) -> Path:
    """Learning rate against step with cycle boundaries as vertical lines.

    ``planned`` is an optional ``(steps, rates)`` curve of the original plan drawn
    faintly behind; ``resets`` are marked with tau; ``end_step`` marks where
    training stopped; ``logged`` are ``(step, lr)`` values the submission reported.
    """
    fig, ax = _new_axes(title, "step", "learning rate")
    if planned is not None:
        ax.plot(*planned, color="0.7", linestyle=":", label="initial plan")
    ax.plot(steps, learning_rates, color="tab:blue", label="schedule")
    for boundary in boundaries:
        ax.axvline(boundary, color=BOUNDARY_COLOR, linewidth=0.8, alpha=0.6)
    _mark_resets(ax, resets)
    if logged:
        xs, ys = zip(*logged, strict=True)
        ax.scatter(xs, ys, s=12, color="black", zorder=3, label="reported")
    if end_step is not None:
        ax.axvline(end_step, color="black", linewidth=1.5, label=f"end ({end_step})")
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def plot_metric(
    path: str | Path,
    steps: Sequence[int],
    values: Sequence[float],
    *,
    ylabel: str,
    title: str,
    target: float | None = None,
    resets: Sequence[Reset] = (),
    extra: Mapping[str, tuple[Sequence[int], Sequence[float]]] | None = None,
) -> Path:
    """A validation curve with the target (horizontal) and each reset (vertical)."""
    fig, ax = _new_axes(title, "step", ylabel)
    for name, (xs, ys) in (extra or {}).items():
        ax.plot(xs, ys, color="0.6", linewidth=1.0, label=name)
    ax.plot(steps, values, marker=".", color="tab:blue", label=ylabel)
    if target is not None:
        ax.axhline(target, color="tab:orange", linestyle="-.", label=f"target {target:g}")
    _mark_resets(ax, resets)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)
