"""The soft-reset coefficient tau (METHOD.md section 4)."""

import math

TAU_METRICS = ("latest", "best")
TAU_FORMULAS = ("thesis", "relative", "expected")


def tau(metric: float | None, target: float, higher_is_better: bool) -> float:
    """How far the last cycle fell short of the target, in [0, 1].

    Higher is better (accuracy, mAP, BLEU, SSIM):  tau = max(y* - y, 0) / y*.
    Lower is better (loss, WER), the mirror:       tau = max(y - y*, 0) / y
                                                       = max(0, 1 - y* / y).
    Clipped to [0, 1]; a missing or non-finite y gives 1 (nothing learnt worth keeping).

    Args:
      metric: y, the latest validation value of the target metric (None if missing).
      target: y*, the workload's validation target (positive and finite).
      higher_is_better: the metric's direction, as the workload reports it.
    """
    if not (math.isfinite(target) and target > 0):
        raise ValueError(f"target must be a positive finite number, got {target!r}.")
    if metric is None or not math.isfinite(metric):
        return 1.0
    if higher_is_better:
        shortfall = max(target - metric, 0.0) / target
    else:
        # 1 - y*/y rather than (y - y*)/y: the same number, but monotone in y in floating
        # point too ((y - y*)/y can drop by one ulp as y grows, e.g. y = 2.7126691902802715
        # -> its successor with y* = 0.4487980472198576).
        shortfall = 1.0 - target / metric if metric > 0 else 0.0
    return min(max(shortfall, 0.0), 1.0)


def better_metric(best: float, value: float, higher_is_better: bool) -> float:
    """The better of a running best and a new value; non-finite values never count.

    nan stands for "none yet": better_metric(nan, y) = y for finite y.
    """
    if not math.isfinite(value):
        return best
    if not math.isfinite(best):
        return value
    return max(best, value) if higher_is_better else min(best, value)


def tau_metric(latest: float, cycle_best: float, source: str) -> float:
    """The y that tau is computed from: the latest evaluation, or the cycle's best.

    `source` is "latest" (METHOD.md section 4: the latest validation value before the
    reset) or "best" (the best finite value evaluated inside the cycle, an ablation); a
    cycle without a finite evaluation falls back to the latest value.
    """
    if source == "latest":
        return latest
    if source == "best":
        return cycle_best if math.isfinite(cycle_best) else latest
    raise ValueError(f"tau_metric must be one of {list(TAU_METRICS)}, got {source!r}.")


def tau_relative(metric: float | None, target: float, first: float | None) -> float:
    """The direction-free tau: the fraction of the way to the target still missing.

        tau = clip((y - y*) / (y0 - y*), 0, 1)

    with y0 the run's first evaluation (the untrained model): 1 at y0, 0 at or beyond
    the target, for a higher- or a lower-is-better metric alike (METHOD.md section 4, v2
    ablation). A missing or non-finite y gives 1; so does a y0 that is missing,
    non-finite or already at the target (no way measured).
    """
    if metric is None or not math.isfinite(metric):
        return 1.0
    if first is None or not math.isfinite(first) or first == target:
        return 1.0
    return min(max((metric - target) / (first - target), 0.0), 1.0)


def tau_expected(
    metric: float | None, target: float, first: float | None, fraction: float
) -> float:
    """tau as the shortfall against the progress expected by now (METHOD.md section 7 v3).

    A target set at the end of a full run is far away a third of the way in, by design;
    what a cycle can be blamed for is falling behind a steady pace towards it. With
    p = (y - y0) / (y* - y0) the share of the way from the run's first evaluation y0 to
    the target done, and f in (0, 1] the share of the plan spent at the reset:

        tau = clip(1 - p / f, 0, 1)

    0 for a cycle on or ahead of pace (nothing blended), 1 for one that learnt nothing or
    went backwards; at the plan's end (f = 1) it is `tau_relative`. A missing or
    non-finite y gives 1, and so does a y0 missing, non-finite or at the target.
    """
    if metric is None or not math.isfinite(metric):
        return 1.0
    if first is None or not math.isfinite(first) or first == target:
        return 1.0
    progress = (metric - first) / (target - first)
    pace = min(max(float(fraction), 1e-9), 1.0)
    return min(max(1.0 - progress / pace, 0.0), 1.0)


IMPROVEMENT_SCALES = ("value", "gap")


def improved(
    best: float,
    start: float,
    higher_is_better: bool,
    tolerance: float,
    target: float | None = None,
) -> bool:
    """Whether `best` is better than `start` by more than a margin: tolerance x |start|,
    or, given the `target`, tolerance x |start - target| (the gap still to close: near the
    target a margin of the value itself would ask for more than is left to gain).

    nan stands for "none": no finite best is no improvement; no finite start (nothing to
    compare with) counts as improved.
    """
    if not math.isfinite(start):
        return True
    if not math.isfinite(best):
        return False
    margin = tolerance * abs(start if target is None else start - target)
    return best > start + margin if higher_is_better else best < start - margin
