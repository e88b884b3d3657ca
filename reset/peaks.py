"""How far a slow cycle raises the next peak (METHOD.md section 4, v5 and v7).

A cycle that ran to its planned end, improved, did not fail and missed the target raises
the later cycles' peaks to k x its own (`controller.raised_peaks`, under the failures'
ceiling). k is `slow_cycle_lr_factor` (3), unless the cycle is the run's first and its
steps left the params where weight decay alone would have: then the rate was too low to
move the weights at all, and k is `still_cycle_lr_factor` (10, an order of magnitude).

AdamW's step theta <- theta - eta_t (u_t + lambda theta) shrinks the params by
(1 - lambda eta_t) whatever the update u_t, so over steps [a, n)

    s = prod_{t=a}^{n-1} (1 - lambda eta_t)          (`schedules.budget.decay_shrinkage`)

is the norm ratio weight decay alone would leave, and g = r / s, with r = ||theta_n|| /
||theta_a|| the measured ratio, is the growth the gradient steps brought.
"""

import math

# A first cycle whose growth beyond weight decay lies within 1 +- STILL_GROWTH (1/(1 + d) <
# g < 1 + d) moved nothing: its gradient steps neither grew nor shrank the norm.
# Measured (METHOD.md section 4, v7; the score grid's seeds): g = 1.000-1.002 after the
# first cycle of digits lr0.1x and lr0.01x, 1.06-1.09 after every healthy first cycle
# that missed the target (digit_sums, char_lm): ln(1.01) is near the geometric mean of
# ln(1.002) and ln(1.06).
STILL_GROWTH = 0.01


def growth_beyond_decay(norm_ratio: float, shrinkage: float) -> float:
    """g = r / s: the params' norm ratio r over weight decay's shrinkage s (nan where r is
    not finite or s not a positive finite number)."""
    if not (math.isfinite(norm_ratio) and math.isfinite(shrinkage) and shrinkage > 0):
        return math.nan
    return norm_ratio / shrinkage


def slow_cycle_factor(growth: float, first_cycle: bool, slow: float, still: float) -> float:
    """k for the cycles after a slow one: `still` where the run's first cycle left its
    params' norm within a factor 1 + STILL_GROWTH of weight decay's shrinkage (`growth`, g),
    else `slow` (`still` = 1: off). Only the first cycle: it starts at the initialisation,
    which a rate that trains moves (g > 1.06 on every workload here), while a later cycle
    starts from trained weights that a good rate may hardly grow (g = 1.005-1.03 measured)."""
    band = 1.0 + STILL_GROWTH
    if still != 1.0 and first_cycle and 1.0 / band < growth < band:  # False for nan.
        return still
    return slow
