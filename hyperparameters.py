"""The hyperparameters: each one's name, default, type, allowed values and meaning, once.

`Config` is a frozen dataclass; every field carries a `Spec` in its metadata. Everything
else derives from it: validation (`resolve`), the manual's table (`markdown_table`,
docs/hyperparameters.md), the check of `tuning_search_space.json` (`check_search_space`),
the local CLI's `--set name=value` parsing (`parse_cli_value`) and the JSON a run writes
(`to_json`).
Each value's own range is checked here and only here (`Spec`, `coerce`); rules that tie
fields together are checked where the math lives: `schedules.check_plan_settings`,
`reset.adamw`.
"""

import dataclasses
import json
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import optax

from . import controller, early_switching, reset, schedules
from .hyperparameter_spec import (
    _POSITIVE,
    _UNIT_HALF_OPEN,
    _UNIT_OPEN,
    _UNIT_UPPER,
    Spec,
    _hp,
    is_real,
)
from .hyperparameter_spec import markdown_table as spec_table

OPTIMIZERS = ("adamw", "nadamw")
# How a failed cycle lowers the later peaks (`failed_peak_rule`, `steps.lowering`).
FAILED_PEAK_RULES = ("factor", "norm")

# v2's values where v3 changed the defaults (METHOD.md s7): `{**V2_DEFAULTS, ...}` runs v2.
V2_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    dict(num_cycles=3, optimizer="adamw", budget_fill=0.95, norm_rule="alone")
    | dict(tau_formula="thesis", failed_cycle_lr_factor=1.0, switch_signal="loss")
    | dict(rollback_to="start", failed_peak_rule="factor", slow_cycle_lr_factor=1.0)
    | dict(still_cycle_lr_factor=1.0)
    | dict(planned_cycle_switch="detector", rescue_cycle_switch="detector")
)


# The defaults that the libraries' own records state (METHOD.md sections 3 and 5): read
# from there, so that each number is written once.
_PLAN = schedules.PlanSettings._field_defaults
_DETECTOR = early_switching.DetectorConfig()


@dataclasses.dataclass(frozen=True)
class Config:
    """The resolved hyperparameters. METHOD.md section 2, the cycle plan (section 3), the
    reset (section 4) and the early-switch detector (section 5)."""

    learning_rate: float = _hp(
        0.0017486387539278373,
        "float",
        "base peak learning rate η; cycle i peaks at η × `cycle_lr_factors[i]`",
        **_POSITIVE,
    )
    one_minus_beta1: float = _hp(
        0.06733926164, "float", "1 − β1, Adam's first-moment decay", **_UNIT_OPEN
    )
    beta2: float = _hp(0.9955159689799007, "float", "β2, Adam's second-moment decay", **_UNIT_OPEN)
    weight_decay: float = _hp(
        0.08121616522670176, "float", "decoupled (AdamW) weight decay", low=0.0
    )
    warmup_factor: float = _hp(
        _PLAN["warmup_factor"],
        "float",
        "fraction of a cycle spent warming up (× `cycle_warmup_factors[i]`; the product "
        "must stay below 1)",
        **_UNIT_OPEN,
    )
    dropout_rate: float = _hp(
        0.1, "float", "dropout rate handed to the workload's `model_fn`", **_UNIT_HALF_OPEN
    )
    label_smoothing: float = _hp(
        0.0, "float", "label smoothing handed to the workload's `loss_fn`", **_UNIT_HALF_OPEN
    )
    grad_clip: float | None = _hp(
        None,
        "float",
        "clip gradients to this global norm before Adam",
        null="no clipping",
        **_POSITIVE,
    )
    optimizer: str = _hp(
        "nadamw", "choice", "AdamW, or NAdamW (Nesterov momentum)", choices=OPTIMIZERS
    )
    moment_weights: bool = _hp(
        True,
        "bool",
        "bias correction by per-moment weights that resets scale with the moments "
        "(METHOD.md §4 v2); false: optax's 1 − β^n (v1, an ablation)",
    )
    num_cycles: int = _hp(
        1,
        "int",
        "N, the cycles in the plan; per-cycle lists not given become all ones when N "
        "differs from their default length",
        low=1,
    )
    cycle_budget_factor: float = _hp(
        1.0, "float", "planned total T = max(N, round(factor × step_hint)) steps", **_POSITIVE
    )
    cycle_length_factors: tuple[float, ...] | None = _hp(
        None, "list", "relative cycle lengths (null: equal lengths)", null="equal"
    )
    cycle_lr_factors: tuple[float, ...] | None = _hp(
        (1.0,), "list", "r_i: cycle i peaks at `learning_rate` × r_i"
    )
    cycle_warmup_factors: tuple[float, ...] | None = _hp(
        (1.0,), "list", "q_i: cycle i warms up for `warmup_factor` × q_i of its steps"
    )
    warmup_shape: str = _hp(
        _PLAN["warmup_shape"],
        "choice",
        "shape of the rise from 0 to the cycle's peak",
        choices=schedules.WARMUP_SHAPES,
    )
    decay_shape: str = _hp(
        _PLAN["decay_shape"],
        "choice",
        "shape of the fall from the peak to 0 at the cycle's end",
        choices=schedules.DECAY_SHAPES,
    )
    reset_strategy: str = _hp(
        "soft",
        "choice",
        "what a cycle boundary does: keep all (`none`), restart (`full`), fresh params with "
        "kept moments (`params_only`), blend by τ (`soft`)",
        choices=tuple(sorted(reset.STRATEGIES)),
    )
    reset_alpha: float = _hp(
        0.5,
        "float",
        "α: `soft` scales the Adam moments by (1 − τα)",
        low=0.0,
        high=1.0,
        high_open=False,
    )
    tau_metric: str = _hp(
        "latest",
        "choice",
        "y in τ: the latest evaluation before the reset (METHOD.md), or the best evaluation "
        "inside the ending cycle (an ablation)",
        choices=reset.TAU_METRICS,
    )
    tau_formula: str = _hp(
        "expected",
        "choice",
        "τ from the target alone, max(y* − y, 0)/y* (`thesis`), or the share of the way from "
        "the run's first evaluation y0 to the target still missing, clip((y − y*)/(y0 − y*), "
        "0, 1) (`relative`), or the shortfall against a steady pace to the target over the "
        "plan, clip(1 − p/f, 0, 1), p that share done, f the plan's share spent (`expected`)",
        choices=reset.TAU_FORMULAS,
    )
    rollback_failed_cycles: bool = _hp(
        True,
        "bool",
        "`soft` starts the cycle after a failed one from where the failed one started, with "
        "fresh moments (METHOD.md §4 v2); false: blend its end (v1)",
    )
    rollback_to: str = _hp(
        "best",
        "choice",
        "a rollback restores the cycle's `start`, or its `best` evaluated state (it never "
        "discards what the cycle learned; METHOD.md §7 v3)",
        choices=controller.ROLLBACK_TARGETS,
    )
    fail_on_non_finite: bool = _hp(
        True, "bool", "failure rule (a): a non-finite value in the params, statistics or moments"
    )
    fail_on_norm: bool = _hp(
        True,
        "bool",
        "failure rule (b): the params' norm at the cycle's end outside [1/κ, κ] × at its start",
    )
    failure_kappa: float = _hp(3.0, "float", "κ of failure rule (b)", low=1.0, low_open=True)
    norm_rule: str = _hp(
        "confirmed",
        "choice",
        "failure rule (b) decides `alone`, or only `confirmed` by an early switch of the "
        "same cycle (a cycle that learned while its norm grew from a small init is not failed; "
        "METHOD.md §7 v3)",
        choices=reset.NORM_RULES,
    )
    past_plan_lr_factor: float | None = _hp(
        None,
        "float",
        "r of the cycles past the plan (under the failed cycles' ceiling)",
        null="the last cycle's r",
        **_POSITIVE,
    )
    sound_rollback_point: bool = _hp(
        True,
        "bool",
        "with `rollback_to` `best`, a state whose params' norm is outside [1/κ, κ] × the "
        "cycle's start norm (rule (b)'s bounds) never becomes the rollback point",
    )
    norm_reference: str = _hp(
        "failed_start",
        "choice",
        "rule (b)'s reference after a rollback: the failed cycle's "
        "start norm, or the `restored` state's",
        choices=controller.NORM_REFERENCES,
    )
    failed_cycle_lr_factor: float = _hp(
        0.5,
        "float",
        "after a failed cycle of peak p no later cycle peaks above this × p (the next cycle "
        "must not repeat the failure; 1: the same peaks)",
        **_UNIT_UPPER,
    )
    failed_peak_rule: str = _hp(
        "norm",
        "choice",
        "a failed cycle's peak p caps later peaks at `failed_cycle_lr_factor` × p (`factor`), "
        "or where rule (b) failed it at min(factor, 1/s) × p, s = max(r, 1/r) the norm's "
        "blow-up or collapse (`norm`)",
        choices=FAILED_PEAK_RULES,
    )
    slow_cycle_lr_factor: float = _hp(
        3.0,
        "float",
        "after a cycle that ran to its planned end, improved, did not fail and missed the "
        "target, its params' norm within [1/κ, κ] × its start's, later cycles peak at this × "
        "its peak, under the failed cycles' ceiling (a bracket; 1: the same peaks)",
        low=1.0,
    )
    still_cycle_lr_factor: float = _hp(
        10.0,
        "float",
        "the factor instead where that cycle was the run's first and its params' norm ended "
        "within 1% of what weight decay alone leaves, ∏(1 − λ η_t) × its start's: its steps "
        "moved nothing, the rate is far too low (1: `slow_cycle_lr_factor` there too)",
        low=1.0,
    )
    fail_on_no_improvement: bool = _hp(
        True,
        "bool",
        "failure rule (c): the cycle's best evaluation no better than the last before it "
        "began, within `switch_eps2` relative",
    )
    no_improvement_scale: str = _hp(
        "gap",
        "choice",
        "rule (c)'s margin: `switch_eps2` × the start's value (`value`), or × its gap to the "
        "target (`gap`)",
        choices=reset.IMPROVEMENT_SCALES,
    )
    reset_model_state: str = _hp(
        "blend",
        "choice",
        "batch-norm statistics after a `soft` reset of a cycle that did not fail: blended "
        "with τ, kept, fresh, or re-estimated from the current batch under the new params "
        "(two forward passes)",
        choices=(*reset.MODEL_STATE_CHOICES, "reestimate"),
    )
    switched_cycle_fresh_moments: bool = _hp(
        False,
        "bool",
        "`soft` after an early switch takes fresh Adam moments (the v1 rule, an ablation)",
    )
    snapshot_on_host: bool = _hp(
        False,
        "bool",
        "keep the state a rollback restores (`rollback_to`) in host memory, not on the device",
    )
    compile_reset_ahead: bool = _hp(
        True,
        "bool",
        "compile the reset in a background thread during the first cycle, so that the first "
        "reset does not wait for XLA",
    )
    early_switching: bool = _hp(True, "bool", "let the detector end a failing cycle early")
    planned_cycle_switch: str = _hp(
        "guards",
        "choice",
        "what may end a planned cycle early: the `detector`, or the `guards`: a non-finite "
        "evaluation, the norm out of [1/κ², κ²] × the start's, or the detector with it out of "
        "[1/κ, κ]",
        choices=controller.PLANNED_CYCLE_SWITCHES,
    )
    rescue_cycle_switch: str = _hp(
        "guards",
        "choice",
        "what may end a cycle past the plan (a rescue) early: `planned_cycle_switch`'s choices",
        choices=controller.PLANNED_CYCLE_SWITCHES,
    )
    switch_signal: str = _hp(
        "metric",
        "choice",
        "what the detector smooths: the validation `loss` (METHOD.md §5), or the target "
        "`metric` as a loss (−y where higher is better; what the benchmark scores, §7 v3)",
        choices=controller.SWITCH_SIGNALS,
    )
    switch_lambda: float = _hp(
        _DETECTOR.lambda_, "float", "λ, the EMA weight of the newest validation loss", **_UNIT_UPPER
    )
    switch_eps1: float = _hp(
        _DETECTOR.eps1, "float", "switch when the smoothed loss rises by at least this", **_POSITIVE
    )
    switch_eps2: float = _hp(
        _DETECTOR.eps2, "float", "tolerance above the best smoothed loss in the stall test", low=0.0
    )
    switch_m: int = _hp(
        _DETECTOR.m, "int", "m, evaluations the trend is extrapolated in the stall test", low=1
    )
    switch_k: int = _hp(
        _DETECTOR.k,
        "int",
        "k, evaluations past the best smoothed loss before the stall test can fire",
        low=1,
    )
    switch_grace_evals: int = _hp(
        _DETECTOR.grace_evals,
        "int",
        "evaluations at the start of each cycle during which the detector only records",
        low=0,
    )
    switch_relative: bool = _hp(
        _DETECTOR.relative,
        "bool",
        "`switch_eps1`/`switch_eps2` relative to the loss's magnitude (else absolute)",
    )
    stop_when_plan_ends: bool = _hp(
        False,
        "bool",
        "end training (`TrainingCompleteError`) at the plan's end (for studies); false: "
        "more cycles like the last until the runner's budget ends the run",
    )
    time_budget_factor: float = _hp(
        1.5,
        "float",
        "B = factor × the workload's `max_allowed_runtime_sec`: the submission seconds the "
        "plan is fitted to (1.5 under self-tuning in AlgoPerf 0.6)",
        **_POSITIVE,
    )
    budget_fill: float = _hp(
        1.0 / 1.5,
        "float",
        "the last planned cycle ends its decay where this fraction of B is spent (the plan "
        "is re-fitted at evaluations from the runner's `train_state`)",
        **_UNIT_UPPER,
    )
    fit_first_cycle: bool = _hp(
        False,
        "bool",
        "shorten the first cycle when the step time says it would end over 10% after "
        "`budget_fill` of B (slow hardware; an option: it lost reach there, METHOD.md §3)",
    )
    cut_cycle_cooldown: float = _hp(
        schedules.Budget._field_defaults["cooldown"],
        "float",
        "where B would cut the first cycle with over 10% of it left (slow hardware), its "
        "last fraction of the steps that fit anneals linearly to 0 where B is spent (0: cut)",
        **_UNIT_HALF_OPEN,
    )


FIELDS: tuple[dataclasses.Field, ...] = dataclasses.fields(Config)
NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
SPECS: dict[str, Spec] = {f.name: f.metadata["spec"] for f in FIELDS}
DEFAULTS: dict[str, Any] = {f.name: f.default for f in FIELDS}
_PER_CYCLE = tuple(n for n, s in SPECS.items() if s.kind == "list")


def coerce(name: str, value: Any) -> Any:
    """One hyperparameter, type- and range-checked; ValueError naming it otherwise."""
    return SPECS[name].coerce(name, value)


def given_hyperparameters(hyperparameters: Any) -> dict[str, Any]:
    """The keys present in None, a mapping or a namedtuple (AlgoPerf passes each)."""
    if hyperparameters is None:
        return {}
    if isinstance(hyperparameters, Mapping):
        return dict(hyperparameters)
    if hasattr(hyperparameters, "_asdict"):
        return dict(hyperparameters._asdict())
    raise ValueError(
        "hyperparameters must be None, a dict or a namedtuple, got "
        f"{type(hyperparameters).__name__}."
    )


def resolve(hyperparameters: Any = None) -> Config:
    """Defaults overridden by each given key, validated; ValueError names the field.

    `hyperparameters` is None (self-tuning: all defaults), a dict, or a namedtuple that
    may hold only some keys. Per-cycle lists that are not given become all ones when
    `num_cycles` differs from their default length (METHOD.md section 3).
    """
    given = given_hyperparameters(hyperparameters)
    unknown = sorted(set(given) - set(NAMES), key=str)
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {unknown}; known names: {sorted(NAMES)}.")
    values = {**DEFAULTS, **{name: coerce(name, v) for name, v in given.items()}}
    for name in _PER_CYCLE:
        default = DEFAULTS[name]
        if name not in given and default is not None and len(default) != values["num_cycles"]:
            values[name] = (1.0,) * values["num_cycles"]
    config = Config(**values)
    schedules.check_plan_settings(plan_settings(config))
    reset.adamw(config.learning_rate, **optimizer_settings(config))  # Its cross-field checks.
    return config


def plan_settings(config: Config) -> schedules.PlanSettings:
    """The plan's settings (all but T), `schedules.PlanSettings`' fields by name."""
    return schedules.PlanSettings(*(getattr(config, f) for f in schedules.PlanSettings._fields))


def total_planned_steps(config: Config, step_hint: int) -> int:
    """T0 = max(N, round(cycle_budget_factor x step_hint)), the first plan's length."""
    return max(config.num_cycles, round(config.cycle_budget_factor * step_hint))


def make_plan(config: Config, step_hint: int) -> schedules.CyclePlan:
    """The first plan: T0 steps (`total_planned_steps`), re-fitted to time later."""
    return schedules.make_plan(total_planned_steps(config, step_hint), plan_settings(config))


def detector_config(config: Config) -> early_switching.DetectorConfig:
    """The early-switch detector's settings: field f is the schema's `switch_f`."""
    fields = early_switching.DetectorConfig._fields
    return early_switching.DetectorConfig(
        *(getattr(config, "switch_" + f.rstrip("_")) for f in fields)
    )


def make_optimizer(config: Config, plan: schedules.CyclePlan) -> optax.GradientTransformation:
    """AdamW/NAdamW whose learning rate is the cyclic schedule, injected by optax: the
    current cycle (its window) and the step live in the optimizer state, as data."""
    static = ("grad_clip", "nesterov", "moment_weights")
    return optax.inject_hyperparams(reset.adamw, static_args=static)(
        learning_rate=schedules.cyclic_schedule(plan), **optimizer_settings(config)
    )


def optimizer_settings(config: Config) -> dict[str, Any]:
    """`reset.adamw`'s arguments but the learning rate."""
    b1, nesterov = 1.0 - config.one_minus_beta1, config.optimizer == "nadamw"
    return dict(b1=b1, b2=config.beta2, eps=1e-8, weight_decay=config.weight_decay) | dict(
        grad_clip=config.grad_clip, nesterov=nesterov, moment_weights=config.moment_weights
    )


# A re-fitted cycle is at least this fraction of the first plan's mean cycle length.
MIN_CYCLE_FRACTION = 0.25


def time_budget(config: Config, max_runtime_sec: Any, step_hint: int) -> schedules.Budget | None:
    """The plan's time budget: B = time_budget_factor x max_runtime_sec seconds, filled to
    `budget_fill`, re-fitted cycles at least MIN_CYCLE_FRACTION x T0 / N steps long; None
    when the workload states no positive runtime (the plan then stays in steps)."""
    if not (is_real(max_runtime_sec) and 0 < max_runtime_sec < math.inf):
        return None
    mean_cycle = total_planned_steps(config, step_hint) / config.num_cycles
    return schedules.Budget(
        seconds=config.time_budget_factor * float(max_runtime_sec),
        fill=config.budget_fill,
        min_steps=max(1, round(MIN_CYCLE_FRACTION * mean_cycle)),
        fit_first=config.fit_first_cycle,
        cooldown=config.cut_cycle_cooldown,
    )


def controller_settings(
    config: Config,
    target: float,
    higher_is_better: bool,
    budget: schedules.Budget | None = None,
) -> controller.Settings:
    """The cycle controller's settings: the config's, the workload's target and the time
    budget (`time_budget`; None: the plan stays in steps)."""
    past = config.past_plan_lr_factor  # eta x r past the plan (None: the last cycle's)
    return controller.Settings(
        target=target,
        higher_is_better=higher_is_better,
        detector=detector_config(config),
        early_switching=config.early_switching,
        stop_when_plan_ends=config.stop_when_plan_ends,
        tau_metric=config.tau_metric,
        tau_formula=config.tau_formula,
        improvement_scale=config.no_improvement_scale,
        switch_signal=config.switch_signal,
        rollback_to=config.rollback_to,
        budget=budget,
        past_plan_peak=None if past is None else config.learning_rate * past,
        slow_cycle_lr_factor=config.slow_cycle_lr_factor,
        still_cycle_lr_factor=config.still_cycle_lr_factor,
        weight_decay=config.weight_decay,
        failure_kappa=config.failure_kappa,
        norm_reference=config.norm_reference,
        keep_kappa=config.failure_kappa if config.sound_rollback_point else None,
        guarded_cycles=config.num_cycles if config.planned_cycle_switch == "guards" else 0,
        guarded_from=config.num_cycles if config.rescue_cycle_switch == "guards" else math.inf,
    )


def reset_strategy(config: Config) -> reset.ResetStrategy:
    """The reset strategy object, with its own parameters (only `soft` has any)."""
    params = {}
    if config.reset_strategy == "soft":
        params = {
            "alpha": config.reset_alpha,
            "rollback": config.rollback_failed_cycles,
            "fresh_moments_when_switched": config.switched_cycle_fresh_moments,
            # Re-estimation needs the model: the reset step does it on the kept statistics.
            "model_state": "keep"
            if config.reset_model_state == "reestimate"
            else config.reset_model_state,
        }
    strategy = reset.make_strategy(config.reset_strategy, **params)
    # The strategy carries the request; the reset step, which has the model, does it.
    reestimate = config.reset_strategy == "soft" and config.reset_model_state == "reestimate"
    return strategy._replace(reestimates_model_state=reestimate)


# Each failure rule's switch in the schema, by the rule's name (`reset.FAILURE_RULES`).
FAILURE_RULE_FLAGS = {
    "non_finite": "fail_on_non_finite",
    "norm": "fail_on_norm",
    "no_improvement": "fail_on_no_improvement",
}


def failure_rules(config: Config) -> tuple[str, ...]:
    """The enabled failure rules (`reset.FAILURE_RULES` names, in that order)."""
    return tuple(r for r in reset.FAILURE_RULES if getattr(config, FAILURE_RULE_FLAGS[r]))


def to_json(config: Config) -> dict[str, Any]:
    """The config as JSON-able plain values (tuples become lists)."""
    return {
        name: list(value) if isinstance(value, tuple) else value
        for name, value in dataclasses.asdict(config).items()
    }


def parse_cli_value(name: str, text: str) -> Any:
    """`--set name=text`: the text read as JSON (numbers, true/false, null, lists; Python's
    True/False/None too), a bare word as a string, then checked like any hyperparameter.
    ValueError names the field."""
    if name not in SPECS:
        raise ValueError(f"unknown hyperparameter {name!r}; known names: {sorted(NAMES)}.")
    aliases = {"True": True, "False": False, "None": None}
    try:
        value = aliases[text] if text in aliases else json.loads(text)
    except json.JSONDecodeError:
        value = text
    return coerce(name, value)


def check_search_space(space: Mapping[str, Any]) -> None:
    """A `tuning_search_space.json` mapping: known names, and every point it can draw
    (`feasible_points`, or `min` and `max` of a range) allowed. ValueError otherwise."""
    for name, entry in space.items():
        if name not in SPECS:
            raise ValueError(
                f"search space: unknown hyperparameter {name!r}; known: {sorted(NAMES)}."
            )
        if "feasible_points" in entry:
            points = entry["feasible_points"]
        elif {"min", "max"} <= set(entry):
            points = [entry["min"], entry["max"]]
        else:
            raise ValueError(
                f"search space: {name!r} needs 'feasible_points' or 'min' and 'max', got "
                f"{sorted(entry)}."
            )
        for point in points:
            coerce(name, point)


def markdown_table() -> str:
    """docs/hyperparameters.md's table: name, default, allowed values, meaning."""
    return spec_table(SPECS, DEFAULTS)
