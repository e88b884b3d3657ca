"""The design of the evidence experiment: variants, scenarios, study settings, grids, runs.

Both the runner (``scripts/experiments/evidence.py``) and the report
(``scripts/experiments/evidence_report.py``) read it; it imports neither.

Variants are the four reset strategies (everything else at its default) and ablations
of our decisions, each ``soft`` with one hyperparameter changed. Scenarios are
*healthy* (the defaults: the target needs more than one cycle), *failed first cycle*
(its peak learning rate far too high) and *noisy* (a small validation subset).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import hyperparameters
from scripts.local.workloads import WORKLOAD_NAMES, tiny_overrides


class Variant(NamedTuple):
    """A reset strategy, or an ablation: ``soft`` with one decision changed."""

    group: str  # "strategy" or "ablation"
    label: str
    overrides: Mapping[str, Any]


# Per-cycle peaks r_i of the thesis's three cycles (METHOD.md section 3).
THESIS_PEAK_FACTORS = (1.0, 1.5727, 0.4289)

# The grid behind docs/evidence.md ran `soft` and its ablations with failure rule (c)'s
# margin of the start's value, the default until that grid chose the margin of the gap to
# the target ("soft-rule-c-gap", the default since: METHOD.md section 4). They are pinned
# to it, so that this design reproduces the recorded runs.
AS_RUN = {"no_improvement_scale": "value"}

VARIANTS: dict[str, Variant] = {
    "none": Variant("strategy", "none (cyclic)", {"reset_strategy": "none"}),
    "full": Variant("strategy", "full (sequential)", {"reset_strategy": "full"}),
    "params_only": Variant("strategy", "params_only", {"reset_strategy": "params_only"}),
    "soft": Variant("strategy", "soft (v2 as run: rule (c) margin of the value)", AS_RUN),
    # Method v2's decisions, one at a time (METHOD.md section 4).
    "soft-v1": Variant(
        "ablation",
        "v1: blend failed cycles, v1 moments",
        {"rollback_failed_cycles": False, "moment_weights": False},
    ),
    "soft-rollback-off": Variant("ablation", "rollback off", {"rollback_failed_cycles": False}),
    "soft-rule-a-off": Variant(
        "ablation", "rule (a) non-finite off", {"fail_on_non_finite": False}
    ),
    "soft-rule-b-off": Variant("ablation", "rule (b) norm off", {"fail_on_norm": False}),
    "soft-rule-c-off": Variant(
        "ablation", "rule (c) no improvement off", {"fail_on_no_improvement": False}
    ),
    "soft-rule-c-gap": Variant(
        "ablation", "rule (c) margin of the gap (the default now)", {"no_improvement_scale": "gap"}
    ),
    "soft-kappa2": Variant("ablation", "kappa = 2", {"failure_kappa": 2.0}),
    "soft-kappa5": Variant("ablation", "kappa = 5", {"failure_kappa": 5.0}),
    "soft-weights-off": Variant("ablation", "moment weights off", {"moment_weights": False}),
    "soft-switch-moments": Variant(
        "ablation", "v1 early-switch moments rule", {"switched_cycle_fresh_moments": True}
    ),
    "soft-stats-keep": Variant("ablation", "statistics kept", {"reset_model_state": "keep"}),
    "soft-stats-fresh": Variant("ablation", "statistics fresh", {"reset_model_state": "fresh"}),
    "soft-stats-reestimate": Variant(
        "ablation", "statistics re-estimated", {"reset_model_state": "reestimate"}
    ),
    "soft-tau-relative": Variant("ablation", "tau relative to y0", {"tau_formula": "relative"}),
    # The detector (v1 ablations that decided something; the others tied everywhere).
    "soft-switching-off": Variant("ablation", "early switching off", {"early_switching": False}),
    "soft-grace0": Variant("ablation", "grace 0", {"switch_grace_evals": 0}),
    # Plan families (METHOD.md section 3 v2): soft resets, everything at its default but
    # the plan, all re-fitted to the time budget. "plan-3" (3 equal cycles) is the default
    # plan since the 10-seed score grid; before, 3 cycles with the thesis's peaks.
    "plan-1": Variant("plan", "1 cycle (the baseline's shape)", {"num_cycles": 1}),
    "plan-2": Variant("plan", "2 equal cycles", {"num_cycles": 2}),
    "plan-2-short-first": Variant(
        "plan",
        "2 cycles, T0 = 0.5 step_hint (a shorter first cycle)",
        {"num_cycles": 2, "cycle_budget_factor": 0.5},
    ),
    "plan-2-long-first": Variant(
        "plan",
        "2 cycles, T0 = 1.5 step_hint (a longer first cycle)",
        {"num_cycles": 2, "cycle_budget_factor": 1.5},
    ),
    "plan-2-stop": Variant(
        "plan", "2 cycles, no cycle after the plan", {"num_cycles": 2, "stop_when_plan_ends": True}
    ),
    "plan-3": Variant("plan", "3 equal cycles (the default)", {}),
    "plan-3-short-first": Variant(
        "plan", "3 cycles, T0 = 0.5 step_hint (a shorter first cycle)", {"cycle_budget_factor": 0.5}
    ),
    "plan-3-long-first": Variant(
        "plan", "3 cycles, T0 = 1.5 step_hint (a longer first cycle)", {"cycle_budget_factor": 1.5}
    ),
    "plan-3-stop": Variant(
        "plan", "3 cycles, no cycle after the plan", {"stop_when_plan_ends": True}
    ),
    "plan-3-thesis": Variant(
        "plan",
        "3 cycles, the thesis's peaks (the former default)",
        {"cycle_lr_factors": THESIS_PEAK_FACTORS},
    ),
    "plan-4": Variant("plan", "4 equal cycles", {"num_cycles": 4}),
}
VARIANTS = {
    name: v._replace(overrides={**AS_RUN, **v.overrides}) if v.group == "ablation" else v
    for name, v in VARIANTS.items()
}
STRATEGY_VARIANTS = tuple(k for k, v in VARIANTS.items() if v.group == "strategy")
PLAN_VARIANTS = tuple(k for k, v in VARIANTS.items() if v.group == "plan")
ABLATION_VARIANTS = tuple(k for k, v in VARIANTS.items() if v.group == "ablation")
# The detector's variants: soft's reset, a different detector. Each is the same run as
# "soft-switching-off" up to its first switch, which makes that run the counterfactual.
DETECTOR_VARIANTS = ("soft", "soft-grace0")
COUNTERFACTUAL = "soft-switching-off"

# First-cycle peak factor of the "failed" scenario: 1000 x the base learning rate
# (peak 1.75; 100x does not break the batch-norm networks). The thesis: about 0.05 (30x).
FAILED_PEAK_FACTOR = 1000.0
# Validation examples in the "noisy" scenario (the binomial standard error of an
# accuracy near the target is about 2.5 points at 100 examples; char_lm's examples are
# 64-byte windows, 20 of them 1,280 predictions).
NOISY_VALIDATION_EXAMPLES = {"digit_sums": 100, "digits": 60, "breast_cancer": 40, "char_lm": 20}


# Per-workload settings shared by every scenario, so that in the healthy scenario the
# target needs more than one cycle's learning: digits and breast_cancer reach their
# default targets within the first of three 100-step cycles (steps 60 and 10, seed 0),
# so their study has a shorter step_hint (and with it a smaller time budget).
STUDY_SETTINGS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # workload: (workload options, hyperparameters)
    "digit_sums": ({}, {}),
    "digits": ({"eval_every_steps": 5, "step_hint": 90}, {}),
    "breast_cancer": ({"validation_target_value": 0.1, "step_hint": 60}, {}),
    "char_lm": ({}, {}),
}

# The simulated clock of every run (`scripts.local.runner.reference_clock`): the reference
# hardware of each workload, compiling for 10 steps' time, a reset costing 2.
CLOCK = {"speed": 1.0, "compile_steps": 10.0, "reset_steps": 2.0, "noise": 0.0}


class Scenario(NamedTuple):
    """Workload options and hyperparameters that set up a situation."""

    label: str
    description: str
    workload_options: Callable[[str], dict[str, Any]]
    hyperparameters: Mapping[str, Any]


SCENARIOS: dict[str, Scenario] = {
    "healthy": Scenario(
        "healthy",
        "the study settings, nothing broken",
        lambda workload: {},
        {},
    ),
    "failed": Scenario(
        "failed first cycle",
        f"the first cycle's peak is {FAILED_PEAK_FACTOR:g}x the base learning rate",
        lambda workload: {},
        {},  # The first peak: RunSpec.hyperparameters, whatever the number of cycles.
    ),
    "noisy": Scenario(
        "noisy validation",
        "validation metrics on a small subset: "
        + ", ".join(f"{w} {n}" for w, n in NOISY_VALIDATION_EXAMPLES.items())
        + " examples",
        lambda workload: {"validation_examples": NOISY_VALIDATION_EXAMPLES[workload]},
        {},
    ),
}

WORKLOADS = WORKLOAD_NAMES
# Tiny models for the small grid: the registry's tiny models, with a few evaluations per
# cycle; seconds per run.
TINY_OPTIONS = {
    name: {**tiny_overrides(name), "step_hint": 150, "eval_every_steps": 5} for name in WORKLOADS
}
GRIDS = {
    "full": {
        "workloads": WORKLOADS,
        "seeds": 5,
        "tiny": False,
        "variants": STRATEGY_VARIANTS + ABLATION_VARIANTS,
    },
    # A smoke-sized grid (tiny models, 2 seeds) for the test suite.
    "small": {"workloads": WORKLOADS, "seeds": 2, "tiny": True},
    # The plan families and the strategies, scored as AlgoPerf scores (docs/score.md).
    "score": {
        "workloads": WORKLOADS,
        "seeds": 10,
        "tiny": False,
        "scenarios": ("healthy", "failed"),
        "variants": ("none", "full", *PLAN_VARIANTS),
    },
}


class RunSpec(NamedTuple):
    """One run of the grid."""

    workload: str
    scenario: str
    variant: str
    seed: int
    tiny: bool = False

    @property
    def key(self) -> str:
        """A file-safe unique name."""
        size = "tiny-" if self.tiny else ""
        return f"{size}{self.workload}__{self.scenario}__{self.variant}__seed{self.seed}"

    def hyperparameters(self) -> dict[str, Any]:
        """The workload's study settings, the scenario's, then the variant's on top. In
        the failed scenario the first cycle peaks at FAILED_PEAK_FACTOR x the base rate,
        the later cycles at the variant's peaks (ones unless it names them)."""
        merged = {
            **STUDY_SETTINGS[self.workload][1],
            **SCENARIOS[self.scenario].hyperparameters,
            **VARIANTS[self.variant].overrides,
        }
        if self.scenario == "failed":
            num_cycles = merged.get("num_cycles", hyperparameters.DEFAULTS["num_cycles"])
            peaks = merged.get("cycle_lr_factors") or (1.0,) * num_cycles
            merged["cycle_lr_factors"] = [FAILED_PEAK_FACTOR, *peaks[1:]]
        return merged

    def workload_options(self) -> dict[str, Any]:
        """Options of ``scripts.local.workloads.make_workload`` for this run."""
        options = dict(TINY_OPTIONS[self.workload]) if self.tiny else {}
        return {
            **options,
            **STUDY_SETTINGS[self.workload][0],
            **SCENARIOS[self.scenario].workload_options(self.workload),
        }


def grid(
    workloads: Sequence[str],
    scenarios: Sequence[str],
    variants: Sequence[str],
    seeds: Sequence[int],
    tiny: bool = False,
) -> list[RunSpec]:
    """Every combination, validated (unknown names fail before anything runs)."""
    for kind, names, known in (
        ("workload", workloads, WORKLOADS),
        ("scenario", scenarios, SCENARIOS),
        ("variant", variants, VARIANTS),
    ):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown {kind}(s) {unknown}; valid: {list(known)}.")
    return [
        RunSpec(w, sc, v, s, tiny)
        for w in workloads
        for sc in scenarios
        for v in variants
        for s in seeds
    ]
