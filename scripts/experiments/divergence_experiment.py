"""Recorded experiment: a far too high first-cycle peak and what each reset strategy does.

Run from the project root (takes a few minutes on 2 CPU cores):

    .venv/bin/python -m scripts.experiments.divergence_experiment [--seeds 0 1 2]

1. Which first-cycle learning-rate factor diverges how, on the log-link regression
   (scripts/local/workloads/log_regression.py; strategy `soft`, early switching on): the
   first step whose params are non-finite, the worst finite validation MSE before the
   first reset, the first reset, and the step the target was reached.
2. The plan [100, 1, 1] under `soft`, `full` and `none` for the whole budget: steps to
   the target (or "never") and the validation-MSE trajectory.
3. A network that "dies" without NaN: the classification MLP of
   scripts/local/workloads/tiny.py (ReLU, accuracy target 0.8) with the plan
   [300, 1, 1], under soft with and without early switching, params_only and full.

Recorded (seeds 0-2, jax 0.10.2 on CPU, through the local runner's train_once, method v2
defaults):
1. F = 1, 10 reach the target (steps 40-120). F = 30 fails finitely (worst MSE 2-4): seed 0
reaches it at 280 after two planned resets, seeds 1 and 2 never (seed 1's second cycle is
judged failed by rule (c), no improvement). F = 100 and 300 give NaN params at step 3, an
early switch at the first evaluation (step 10) with tau 1, rule (a) (non-finite) and a
rollback; seed 2 at F = 100 explodes to an MSE of 1e15 with non-finite moments, the planned
reset at 100 finds them (rule (a)). Every F >= 100 run reaches the target (steps 70-180).
2. soft reaches the target at steps 70/80/180, full at 70/80/140, none never (31 of 31
evaluations NaN for seeds 0 and 1; seed 2 stays at an MSE of ~3).
3. soft reaches the target at 130/125/130, with or without early switching: the dead first
cycle's params norm grew 5x, rule (b) marks it failed, and soft rolls it back to its start
with fresh moments (v1 soft, which blended the dead cycle's end, never reached it);
params_only 125/135/125, full 120/125/125.
"""

import argparse
import math

from cyclic_soft_reset.records import ResetRecord
from scripts.experiments import divergence as td
from scripts.local.workloads.tiny import TinyWorkload


def _fmt(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else str(x)


def _resets(resets) -> str:
    records = [ResetRecord.from_metrics(s, m) for s, m in resets]
    parts = [
        f"step {r.step} tau {r.tau:.3f}"
        + (" early" if r.early_switch else "")
        + (" non-finite" if r.non_finite else "")
        + (f" failed ({r.failure_rule}, norm x{r.param_norm_ratio:.3g})" if r.failed else "")
        for r in records
    ]
    return "; ".join(parts) or "none"


def factor_sweep(seeds) -> None:
    print("1. first-cycle factor sweep: soft, early switching on, plan [F, 1, 1]")
    for factor in (1.0, 10.0, 30.0, 100.0, 300.0):
        for seed in seeds:
            result, resets, checks = td.train(
                td.RegressionWorkload(),
                {"cycle_lr_factors": [factor, 1.0, 1.0]},
                seed=seed,
            )
            bad = [g for g, c in sorted(checks.items()) if not c["params"]]
            first_reset = resets[0][0] if resets else math.inf
            before = [v for g, v in td.validation_mse(result) if g <= first_reset]
            finite = [v for v in before if math.isfinite(v)]
            print(
                f"  F={factor:5g} seed {seed}: first non-finite params at step "
                f"{bad[0] if bad else '-'}; evals before the first reset: {len(before)}, "
                f"worst finite MSE {_fmt(max(finite)) if finite else '-'}, "
                f"non-finite {len(before) - len(finite)}; resets: {_resets(resets)}; "
                f"target at {result.target_step or 'never'}"
            )


def strategies(seeds) -> None:
    factor = td.DIVERGING_FACTOR
    print(f"2. plan [{factor:g}, 1, 1], whole budget ({td.STEP_HINT} steps), target MSE")
    print(f"   < {td.TARGET_MSE}; trajectory = validation MSE at evaluations 1, 2, 3, 5, 10, last")
    for strategy in ("soft", "full", "none"):
        for seed in seeds:
            result, resets, _ = td.train(
                td.RegressionWorkload(),
                {"reset_strategy": strategy, "cycle_lr_factors": [factor, 1.0, 1.0]},
                seed=seed,
                stop_at_target=False,
            )
            values = [v for _, v in td.validation_mse(result)]
            picks = [values[i] for i in (0, 1, 2, 4, 9, len(values) - 1)]
            finite = [v for v in values if math.isfinite(v)]
            print(
                f"  {strategy:5s} seed {seed}: target at {result.target_step or 'never'}; "
                f"trajectory {' '.join(_fmt(v) for v in picks)}; "
                f"best {_fmt(min(finite)) if finite else '-'}; "
                f"non-finite evals {len(values) - len(finite)}/{len(values)}; "
                f"resets: {_resets(resets)}"
            )


def died(seeds) -> None:
    print("3. dying ReLU classifier (workloads/tiny.py), plan [300, 1, 1], target acc 0.8")
    configs = (
        ("soft", True),
        ("soft", False),
        ("params_only", True),
        ("full", True),
    )
    for strategy, early in configs:
        for seed in seeds:
            workload = TinyWorkload(target=0.8, step_hint=300)
            result, resets, checks = td.train(
                workload,
                {
                    "reset_strategy": strategy,
                    "early_switching": early,
                    "cycle_lr_factors": [300.0, 1.0, 1.0],
                },
                seed=seed,
                eval_every=5,
            )
            accuracy = [m["validation/accuracy"] for _, m in result.eval_results]
            finite = all(c["params"] and c["opt_state"] for c in checks.values())
            print(
                f"  {strategy:11s} early switching {'on ' if early else 'off'} seed {seed}: "
                f"target at {result.target_step or 'never'}; "
                f"accuracy at the first reset "
                f"{_fmt(accuracy[resets[0][0] // 5 - 1]) if resets else '-'}, "
                f"last {_fmt(accuracy[-1])}; all finite {finite}; resets: {_resets(resets)}"
            )


def build_parser() -> argparse.ArgumentParser:
    """The command line's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 2, 3])
    return parser


def main() -> None:
    args = build_parser().parse_args()
    parts = {1: factor_sweep, 2: strategies, 3: died}
    for part in args.parts:
        parts[part](args.seeds)


if __name__ == "__main__":
    main()
