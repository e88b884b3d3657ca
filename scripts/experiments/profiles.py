"""AlgoPerf's performance profiles and score, on grid records (our code; `algoperf_score.py`
runs AlgoPerf's own scorer on the same records).

Per run, t = the submission time of the first evaluation that meets the validation target
(infinite if none); per problem, the median over studies; r = t / t_best against the best
variant, infinite where r > 4; rho(x) = the fraction of problems with r <= x; the score is
the area under rho over [1, 4], divided by 3. Pure functions of the records; nothing here
trains, and nothing imports the grid or the reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MAX_RATIO = 4.0  # AlgoPerf's max_tau: slower than 4x the best counts as never.


PROFILE_POINTS = 100  # AlgoPerf's num_points for the trapezoid.


def time_to_target(record: Mapping[str, Any]) -> float:
    """t of one run: the submission seconds at its first evaluation on target, else inf."""
    t = record.get("target_time")
    return math.inf if t is None else float(t)


def median_time(times: Sequence[float]) -> float:
    """The median over studies (inf counts as the largest value, as numpy's median of
    AlgoPerf's table does): inf when half or more of the runs missed, nan for none."""
    if not times:
        return math.nan
    values = np.sort(np.asarray(times, dtype=np.float64))
    n = len(values)
    middle = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
    return float(middle)


def ratios(times: Mapping[str, Mapping[Any, float]]) -> dict[str, dict[Any, float]]:
    """r[v][p] = t[v][p] / min_v t[v][p], inf where no variant reached problem p or where
    r > MAX_RATIO. `times[v][p]` is variant v's median time on problem p."""
    problems = {p for per in times.values() for p in per}
    best = {p: min(per.get(p, math.inf) for per in times.values()) for p in problems}
    out: dict[str, dict[Any, float]] = {}
    for variant, per in times.items():
        out[variant] = {}
        for p in problems:
            t = per.get(p, math.inf)
            r = t / best[p] if math.isfinite(best[p]) and math.isfinite(t) else math.inf
            out[variant][p] = r if r <= MAX_RATIO else math.inf
    return out


def profile(variant_ratios: Mapping[Any, float], xs: np.ndarray) -> np.ndarray:
    """rho(x) = the fraction of problems with r <= x, at each x."""
    r = np.asarray(list(variant_ratios.values()), dtype=np.float64)
    return np.array([np.mean(r <= x) for x in xs]) if len(r) else np.zeros(len(xs))


def benchmark_score(variant_ratios: Mapping[Any, float]) -> float:
    """The area under rho over [1, MAX_RATIO] / (MAX_RATIO - 1), by the trapezoid rule
    over PROFILE_POINTS points: 1 for the best on every problem, 0 for never within 4x."""
    xs = np.linspace(1.0, MAX_RATIO, PROFILE_POINTS)
    rho = profile(variant_ratios, xs)
    area = float(np.sum((rho[1:] + rho[:-1]) / 2 * np.diff(xs)))
    return area / (MAX_RATIO - 1.0)


def problem_times(
    records: Mapping[str, Mapping[str, Any]], variants: Sequence[str]
) -> dict[str, dict[tuple[str, str], float]]:
    """times[v][(workload, scenario)] = the median over seeds of t, from grid records."""
    runs: dict[str, dict[tuple[str, str], list[float]]] = {v: {} for v in variants}
    for record in records.values():
        spec = record["spec"]
        if spec["variant"] in runs:
            problem = (spec["workload"], spec["scenario"])
            runs[spec["variant"]].setdefault(problem, []).append(time_to_target(record))
    return {v: {p: median_time(ts) for p, ts in per.items()} for v, per in runs.items()}


def score_table(
    records: Mapping[str, Mapping[str, Any]], variants: Sequence[str], labels: Mapping[str, str]
) -> tuple[list[str], dict[str, float], dict[str, dict[Any, float]]]:
    """The Markdown table of the score per variant (best first) with each problem's
    ratio, the scores and the ratios."""
    times = problem_times(records, variants)
    r = ratios(times)
    scores = {v: benchmark_score(r[v]) for v in variants if r.get(v)}
    problems = sorted({p for per in r.values() for p in per})
    head = ["variant", "score"] + [f"{w} {s}" for w, s in problems]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for v in sorted(scores, key=lambda v: -scores[v]):
        cells = [labels.get(v, v), f"{scores[v]:.3f}"]
        for p in problems:
            t, ratio = times[v].get(p, math.nan), r[v][p]
            cells.append("never" if not math.isfinite(ratio) else f"{ratio:.2f} ({t:.3g} s)")
        lines.append("| " + " | ".join(cells) + " |")
    return lines, scores, r


def reach_table(
    records: Mapping[str, Mapping[str, Any]], variants: Sequence[str], labels: Mapping[str, str]
) -> list[str]:
    """The Markdown table of seeds reaching the target, k/n, per variant and problem (the
    reach counts behind the medians: a median of never hides how many seeds got there)."""
    counts: dict[str, dict[tuple[str, str], list[bool]]] = {v: {} for v in variants}
    for record in records.values():
        spec = record["spec"]
        if spec["variant"] in counts:
            problem = (spec["workload"], spec["scenario"])
            reached = math.isfinite(time_to_target(record))
            counts[spec["variant"]].setdefault(problem, []).append(reached)
    problems = sorted({p for per in counts.values() for p in per})
    head = ["variant", "all"] + [f"{w} {s}" for w, s in problems]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for v in variants:
        runs = [r for p in problems for r in counts[v].get(p, [])]
        cells = [labels.get(v, v), f"{sum(runs)}/{len(runs)}"]
        cells += [f"{sum(counts[v].get(p, []))}/{len(counts[v].get(p, []))}" for p in problems]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def draw_profiles(
    variant_ratios: Mapping[str, Mapping[Any, float]],
    scores: Mapping[str, float],
    labels: Mapping[str, str],
    path: Path,
    title: str,
    highlight: str | None = None,
) -> Path:
    """rho(x) over [1, 4] per variant, labelled with its score, best first; `highlight`
    (the default) thick, black and on top; written to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = np.linspace(1.0, MAX_RATIO, PROFILE_POINTS)
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    styles = ("-", "--", "-.", ":")
    colors = plt.get_cmap("tab20").colors
    order = [*range(0, 20, 2), *range(1, 20, 2)]  # tab20's dark tones, then its light ones.
    for i, v in enumerate(sorted(scores, key=lambda v: -scores[v])):
        chosen = v == highlight
        ax.step(
            xs,
            profile(variant_ratios[v], xs),
            where="post",
            linestyle="-" if chosen else styles[i % len(styles)],
            linewidth=3.0 if chosen else 1.5,
            color="black" if chosen else colors[order[i % 20]],
            zorder=3 if chosen else 2,
            label=f"{labels.get(v, v)}: {scores[v]:.3f}",
        )
    ax.set_xlim(1.0, MAX_RATIO)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("x: time to target / the best variant's time on the problem")
    ax.set_ylabel("fraction of problems with ratio <= x")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(title="variant: score", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
