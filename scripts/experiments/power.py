"""How many paired seeds a healthy problem needs before a 5% difference is visible.

On a healthy problem the default and AlgoPerf's baseline run the same update rule through
the planned cycle; with batch norm they part from float rounding within a few steps and
their first evaluation past the target then moves by whole evaluation periods from seed
to seed. The gate "within 1.05x of the baseline's time" is only meaningful when that
seed-to-seed noise is small against 5%. Paired on seeds (the same seed: the same data order
and initialisation for both), with d_s = ln(t_ours,s / t_base,s) over the seeds both reach:

    sd = the sample standard deviation of d_s,
    n_5% = ((z_{1 - alpha/2} + z_{power}) sd / ln 1.05)^2     (alpha 0.05, power 0.8)

the seeds a paired test of the mean log ratio needs to tell a true 5% shift from none
(the normal approximation; a median over studies, as AlgoPerf takes, needs about pi/2 x
that). The evaluation period against the median time says how coarse one seed's t is.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from scripts.experiments.gates import runs_of
from scripts.experiments.profiles import median_time, time_to_target

EFFECT = 1.05  # The healthy gate's slack: a 5% difference in time to target.
ALPHA, POWER = 0.05, 0.8


class PairedNoise(NamedTuple):
    """The paired seeds of one healthy problem, ours against a reference contestant."""

    problem: str
    seeds: int  # seeds run by both
    both_reach: int  # seeds on which both reached the target
    identical: int  # of those, seeds with the same t (the same trajectory up to it)
    period_share: float  # one evaluation period / the reference's median t
    sd: float  # sample sd of ln(t_ours / t_ref) over the seeds both reach (nan below 2)
    needed: float  # seeds to see EFFECT at ALPHA, POWER (nan below 2 pairs)


def seeds_needed(sd: float, effect: float = EFFECT, alpha: float = ALPHA, power: float = POWER):
    """n = ((z_{1-alpha/2} + z_power) sd / ln effect)^2, at least 1 (module docstring)."""
    z = statistics.NormalDist().inv_cdf
    return max(1.0, ((z(1 - alpha / 2) + z(power)) * sd / math.log(effect)) ** 2)


def eval_period(runs: Sequence[Mapping]) -> float:
    """The median gap between consecutive evaluations' submission times over the runs."""
    gaps = [
        b["time"] - a["time"]
        for r in runs
        for a, b in zip(r["evals"], r["evals"][1:], strict=False)
        if a["time"] is not None and b["time"] is not None
    ]
    return statistics.median(gaps) if gaps else math.nan


def paired_noise(
    records: Mapping[str, Mapping], workload: str, scenario: str, ours: str, reference: str
) -> PairedNoise:
    """PairedNoise of `ours` against `reference` on one problem (module docstring)."""
    mine = {r["spec"]["seed"]: r for r in runs_of(records, workload, scenario, ours)}
    ref = {r["spec"]["seed"]: r for r in runs_of(records, workload, scenario, reference)}
    seeds = sorted(set(mine) & set(ref))
    pairs = [(time_to_target(mine[s]), time_to_target(ref[s])) for s in seeds]
    both = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
    logs = [math.log(a / b) for a, b in both]
    sd = statistics.stdev(logs) if len(logs) >= 2 else math.nan
    reference_runs = [ref[s] for s in seeds]
    median = median_time([time_to_target(r) for r in reference_runs])
    return PairedNoise(
        problem=f"{workload} {scenario}",
        seeds=len(seeds),
        both_reach=len(both),
        identical=sum(a == b for a, b in both),
        period_share=eval_period(reference_runs) / median if math.isfinite(median) else math.nan,
        sd=sd,
        needed=seeds_needed(sd) if math.isfinite(sd) else math.nan,
    )


def noise_lines(rows: Sequence[PairedNoise], ours: str, reference: str) -> list[str]:
    """A Markdown table of PairedNoise rows."""
    lines = [
        f"| problem | seeds | both reach | same t | one eval period / {reference}'s median t "
        f"| sd of ln(t_{ours} / t_{reference}) | seeds to see 5% |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        needed = f"{math.ceil(r.needed)}" if math.isfinite(r.needed) else "-"
        share = f"{r.period_share:.1%}" if math.isfinite(r.period_share) else "-"
        sd = f"{r.sd:.3f}" if math.isfinite(r.sd) else "-"
        lines.append(
            f"| {r.problem} | {r.seeds} | {r.both_reach} | {r.identical} | {share} | {sd} "
            f"| {needed} |"
        )
    return lines
