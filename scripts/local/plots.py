"""PNG plots of a run: the learning-rate schedule and validation curves with resets.

Plain functions on plain data (lists of numbers, ``Reset`` and ``Band`` records), drawn
with matplotlib's object API on a fresh ``Figure`` each time (no pyplot state), so they
work headless and from any thread. Each ``*_figure`` function returns the ``Figure``
(tests read its titles, legend and scales); ``plot_*`` writes it as a PNG.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from cyclic_soft_reset.records import ResetRecord

PLANNED_COLOR = "tab:green"
EARLY_COLOR = "tab:red"
BOUNDARY_COLOR = "0.5"
BAND_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
BAND_STYLES = ("-", "--", "-.", ":")
HEADROOM = 0.22  # Fraction of the y span added above the curves for the reset labels.
LOG_SCALE_RATIO = 10.0  # Cycle peaks further apart than this: learning rate on a log axis.
SPREAD_LOG_RATIO = 100.0  # A curve spanning more than this (a diverged loss): log y axis.


@dataclasses.dataclass(frozen=True)
class Reset:
    """A reset reported by the submission: the cycle that starts at ``step``."""

    step: int
    cycle: int
    tau: float
    metric: float
    early_switch: bool

    @classmethod
    def of(cls, record: ResetRecord) -> Reset:
        """What a figure shows of the submission's record of a reset."""
        return cls(record.step, record.cycle, record.tau, record.metric, record.early_switch)

    @property
    def reason(self) -> str:
        """``early switch`` or ``planned``."""
        return "early switch" if self.early_switch else "planned"

    @property
    def label(self) -> str:
        """Short annotation, e.g. ``tau=0.050 (planned)``."""
        return f"\N{GREEK SMALL LETTER TAU}={self.tau:.3f} ({self.reason})"


def reset_from_metrics(step: int, metrics: Mapping[str, Any]) -> Reset | None:
    """The ``Reset`` in one logged metrics dict, or None if it holds no reset."""
    record = ResetRecord.from_metrics(step, metrics)
    return None if record is None else Reset.of(record)


def resets_from_records(records: Iterable[tuple[int, Mapping[str, Any]]]) -> list[Reset]:
    """All resets in ``(global_step, metrics)`` records, in step order."""
    found = (reset_from_metrics(step, metrics) for step, metrics in records)
    return sorted((r for r in found if r is not None), key=lambda r: r.step)


def _new_axes(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Any]:
    fig = Figure(figsize=(11, 4.8), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    _style_axes(ax, title, xlabel, ylabel)
    return fig, ax


def _style_axes(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    """Title, axis labels and a light grid."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)


def _legend_outside(ax: Any) -> None:
    """The legend to the right of the axes, where it cannot hide a curve."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8)


def _add_headroom(ax: Any, fraction: float = HEADROOM) -> None:
    """Raise the top of the y axis by ``fraction`` of its span (in log space on a log
    axis): the band where the reset labels go, above every curve."""
    low, high = ax.get_ylim()
    if ax.get_yscale() == "log":
        ax.set_ylim(low, high * (high / low) ** fraction)
    else:
        ax.set_ylim(low, high + fraction * (high - low))


def _mark_resets(
    ax: Any, resets: Sequence[Reset], show_tau: bool, color: str | None = None
) -> None:
    """A vertical line per reset (one legend entry per kind: planned boundary or early
    switch); with ``show_tau`` each is labelled with its tau in the band above the curves
    (``_add_headroom`` first). ``color`` overrides the kind's colour (comparisons)."""
    labelled: set[bool] = set()
    for reset in resets:
        kind_color = EARLY_COLOR if reset.early_switch else PLANNED_COLOR
        line_color = color or kind_color
        label = None
        if reset.early_switch not in labelled:
            labelled.add(reset.early_switch)
            label = (
                "reset by an early switch" if reset.early_switch else "reset at a planned boundary"
            )
        ax.axvline(
            reset.step,
            color=line_color,
            linestyle=":" if reset.early_switch else "--",
            linewidth=1.2,
            label=label,
        )
        if show_tau and math.isfinite(reset.tau):
            ax.annotate(
                f"\N{GREEK SMALL LETTER TAU}={reset.tau:.3f}",
                xy=(reset.step, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -4),
                textcoords="offset points",
                rotation=90,
                va="top",
                ha="left",
                fontsize=8,
                color=line_color,
            )


def _label_marks(ax: Any, resets: Sequence[Reset], show_tau: bool) -> None:
    """Once the curves are drawn: room above them, the resets, the legend outside."""
    _add_headroom(ax)
    _mark_resets(ax, resets, show_tau)
    _legend_outside(ax)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def cycle_peaks(
    steps: Sequence[int], rates: Sequence[float], boundaries: Sequence[int]
) -> list[float]:
    """The largest learning rate of each cycle ``[b_i, b_{i+1})`` that has steps."""
    steps, rates = np.asarray(steps), np.asarray(rates, float)
    peaks = []
    for start, end in zip(boundaries[:-1], boundaries[1:], strict=True):
        inside = rates[(steps >= start) & (steps < end)]
        if inside.size:
            peaks.append(float(np.nanmax(inside)))
    return peaks


def wants_log_scale(peaks: Sequence[float], ratio: float = LOG_SCALE_RATIO) -> bool:
    """True when the positive cycle peaks differ by more than ``ratio`` (10x)."""
    positive = [p for p in peaks if p > 0 and math.isfinite(p)]
    return len(positive) > 1 and max(positive) > ratio * min(positive)


def log_y_when_spread(ax: Any, values: Iterable[float]) -> None:
    """A log y axis when every finite value is positive and the largest is more than
    SPREAD_LOG_RATIO x the smallest: a loss spike 1000x high no longer flattens the rest."""
    finite = [v for v in values if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) > SPREAD_LOG_RATIO * min(finite):
        ax.set_yscale("log")


def learning_rate_figure(
    steps: Sequence[int],
    learning_rates: Sequence[float],
    boundaries: Sequence[int],
    *,
    title: str,
    planned: tuple[Sequence[int], Sequence[float]] | None = None,
    resets: Sequence[Reset] = (),
    end_step: int | None = None,
    logged: Sequence[tuple[int, float]] = (),
    show_tau: bool = True,
) -> Figure:
    """Learning rate against step, the cycle boundaries as thin grey lines.

    With ``end_step`` the schedule is solid up to it and the rest of the plan, never
    run, dashed grey (said in the legend). ``planned`` is the initial plan (dotted),
    drawn when it differs from the final one (after early switches); ``resets`` are
    marked (with tau when ``show_tau``); ``logged`` are ``(step, lr)`` values the
    submission logged. The y axis is logarithmic when the cycles' peaks differ by more
    than 10x.
    """
    fig, ax = _new_axes(title, "step", "learning rate")
    steps, rates = np.asarray(steps), np.asarray(learning_rates, float)
    if planned is not None and not (
        len(planned[0]) == len(steps) and np.array_equal(np.asarray(planned[1], float), rates)
    ):
        ax.plot(
            *planned,
            color="0.6",
            linestyle=":",
            label="first plan (before re-fits and switches)",
        )
    run = steps <= end_step if end_step is not None else np.ones(len(steps), bool)
    ax.plot(
        steps[run],
        rates[run],
        color="tab:blue",
        label="learning rate as run" if end_step is not None else "planned learning rate",
    )
    if end_step is not None and not run.all():
        ax.plot(
            steps[steps >= end_step],
            rates[steps >= end_step],
            color="0.55",
            linestyle="--",
            label=f"plan, not run (after step {end_step})",
        )
    for i, boundary in enumerate(boundaries):
        ax.axvline(
            boundary,
            color=BOUNDARY_COLOR,
            linewidth=0.8,
            alpha=0.6,
            label="cycle boundary of the plan" if i == 0 else None,
        )
    if logged:
        xs, ys = zip(*logged, strict=True)
        ax.scatter(
            xs, ys, s=12, color="black", zorder=3, label="learning rate logged by submission.py"
        )
    if end_step is not None:
        ax.axvline(
            end_step, color="black", linewidth=1.5, label=f"training stopped (step {end_step})"
        )
    peaks = cycle_peaks(steps, rates, boundaries)
    if wants_log_scale(peaks):
        positive = [p for p in peaks if p > 0]
        ax.set_yscale("log")
        ax.set_ylim(min(positive) * 1e-2, max(positive) * 1.5)
    _label_marks(ax, resets, show_tau)
    return fig


def plot_learning_rate(path: str | Path, *args: Any, **kwargs: Any) -> Path:
    """``learning_rate_figure(...)`` written to ``path`` as PNG."""
    return _save(learning_rate_figure(*args, **kwargs), path)


def metric_figure(
    steps: Sequence[int],
    values: Sequence[float],
    *,
    ylabel: str,
    title: str,
    target: float | None = None,
    resets: Sequence[Reset] = (),
    extra: Mapping[str, tuple[Sequence[int], Sequence[float]]] | None = None,
    show_tau: bool = True,
) -> Figure:
    """A validation curve with the target (horizontal) and each reset (vertical, with
    tau when ``show_tau``); ``extra`` curves (e.g. the train metric) in grey."""
    fig, ax = _new_axes(title, "step", ylabel)
    for name, (xs, ys) in (extra or {}).items():
        ax.plot(xs, ys, color="0.6", linewidth=1.0, label=name)
    ax.plot(steps, values, marker=".", color="tab:blue", label=ylabel)
    if target is not None:
        ax.axhline(target, color="tab:orange", linestyle="-.", label=f"target {target:g}")
    curves = [values, *(ys for _, ys in (extra or {}).values())]
    log_y_when_spread(
        ax, [v for ys in curves for v in ys] + ([target] if target is not None else [])
    )
    _label_marks(ax, resets, show_tau)
    return fig


def plot_metric(path: str | Path, *args: Any, **kwargs: Any) -> Path:
    """``metric_figure(...)`` written to ``path`` as PNG."""
    return _save(metric_figure(*args, **kwargs), path)


@dataclasses.dataclass(frozen=True)
class Band:
    """One variant's curve over seeds: the median and the min-max band at each step,
    and every seed's resets (labelled with tau when ``show_tau``)."""

    label: str
    steps: tuple[int, ...]
    median: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    seeds: int
    resets: tuple[Reset, ...] = ()
    show_tau: bool = False


def comparison_figure(
    panels: Sequence[tuple[str, str, float | None, Sequence[Band]]], *, title: str
) -> Figure:
    """One axes per panel ``(axes title, y label, target or None, bands)``, stacked, the
    step axis shared: each band's median as a line, its min-max over seeds shaded, its
    resets as vertical lines in its colour (dashed: planned boundary, dotted: early
    switch) with tau above the curves where the strategy uses tau and one seed is drawn."""
    fig = Figure(figsize=(11, 3.6 * len(panels) + 0.6), dpi=100, layout="constrained")
    fig.suptitle(title)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (axes_title, ylabel, target, bands) in zip(axes, panels, strict=True):
        _style_axes(ax, axes_title, "step" if ax is axes[-1] else "", ylabel)
        for index, band in enumerate(bands):
            color = BAND_COLORS[index % len(BAND_COLORS)]
            spread = "" if band.seeds == 1 else f", median of {band.seeds} seeds, min-max shaded"
            # The first band (the method) on top and widest: where curves coincide (before
            # the first reset) it stays visible; the others differ in line style too.
            ax.plot(
                band.steps,
                band.median,
                color=color,
                linestyle=BAND_STYLES[index % len(BAND_STYLES)],
                linewidth=2.4 if index == 0 else 1.5,
                zorder=3 + len(bands) - index,
                label=f"{band.label}{spread}",
            )
            if band.seeds > 1:
                ax.fill_between(
                    band.steps, band.low, band.high, color=color, alpha=0.18, linewidth=0
                )
        if target is not None:
            ax.axhline(
                target, color="black", linestyle="-.", linewidth=1.0, label=f"target {target:g}"
            )
        spread = [v for b in bands for v in (*b.low, *b.high, *b.median)]
        log_y_when_spread(ax, spread + ([target] if target is not None else []))
        _add_headroom(ax, HEADROOM * max(1, sum(b.show_tau for b in bands)))
        for index, band in enumerate(bands):
            color = BAND_COLORS[index % len(BAND_COLORS)]
            _mark_band_resets(ax, band, color, slot=sum(b.show_tau for b in bands[:index]))
        _legend_outside(ax)
    return fig


def _mark_band_resets(ax: Any, band: Band, color: str, slot: int) -> None:
    """A band's resets in its colour, one legend entry per kind; tau (one seed only)
    written horizontally in the band's own row of the space above the curves."""
    labelled: set[bool] = set()
    for reset in band.resets:
        label = None
        if reset.early_switch not in labelled:
            labelled.add(reset.early_switch)
            kind = (
                "reset by an early switch" if reset.early_switch else "reset at a planned boundary"
            )
            label = f"{band.label}: {kind}"
        ax.axvline(
            reset.step,
            color=color,
            linestyle=":" if reset.early_switch else "--",
            linewidth=1.0,
            alpha=0.8,
            label=label,
        )
        if band.show_tau and band.seeds == 1 and math.isfinite(reset.tau):
            ax.annotate(
                f"\N{GREEK SMALL LETTER TAU}={reset.tau:.3f}",
                xy=(reset.step, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -4 - 11 * slot),
                textcoords="offset points",
                va="top",
                ha="left",
                fontsize=8,
                color=color,
            )


def plot_comparison(path: str | Path, *args: Any, **kwargs: Any) -> Path:
    """``comparison_figure(...)`` written to ``path`` as PNG."""
    return _save(comparison_figure(*args, **kwargs), path)
