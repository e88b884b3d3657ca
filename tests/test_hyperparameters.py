"""The hyperparameter schema: one place from which the manual's table
(docs/hyperparameters.md), the search space's check, the CLI's `--set` parsing and the
run's JSON derive."""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from cyclic_soft_reset import controller, early_switching, reset, schedules
from cyclic_soft_reset import hyperparameters as hp

ROOT = Path(__file__).resolve().parents[1]


def _docs_table() -> str:
    lines = (ROOT / "docs" / "hyperparameters.md").read_text().splitlines()
    start = lines.index("| name | default | allowed values | meaning |")
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join(lines[start:end])


def test_docs_table_is_what_the_schema_generates():
    assert _docs_table() == hp.markdown_table(), (
        "docs/hyperparameters.md's table is stale: paste hyperparameters.markdown_table()"
    )


def test_every_field_has_a_spec_and_its_default_is_valid():
    for field in dataclasses.fields(hp.Config):
        spec = field.metadata["spec"]
        assert spec.description and spec.allowed()
        assert hp.coerce(field.name, field.default) == field.default
    assert hp.resolve(None) == hp.Config()


def test_a_field_declared_like_configs_carries_its_default_and_spec():
    """Config's fields are declared with `_hp(default, kind, description, **range)`: the
    dataclass default, and the Spec in the field's metadata under "spec", where SPECS,
    validation and the manual's table read it. (Config itself is built at import; this
    declares a new dataclass now, as a new hyperparameter would be declared.)"""

    @dataclasses.dataclass(frozen=True)
    class Declared:
        rate: float = hp._hp(
            0.25, "float", "a rate", low=0.0, high=1.0, low_open=True, high_open=False
        )

    (field,) = dataclasses.fields(Declared)
    assert Declared().rate == 0.25 and field.default == 0.25
    spec = field.metadata["spec"]
    assert spec == hp.Spec("float", "a rate", low=0.0, high=1.0, low_open=True, high_open=False)
    assert spec.allowed() == "a number in (0, 1]" and not spec.contains(0.0)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        hp.resolve(None).learning_rate = 1.0


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("learning_rate", "a number > 0"),
        ("weight_decay", "a number >= 0"),
        ("beta2", "a number in (0, 1)"),
        ("dropout_rate", "a number in [0, 1)"),
        ("reset_alpha", "a number in [0, 1]"),
        ("switch_lambda", "a number in (0, 1]"),
        ("num_cycles", "an integer >= 1"),
        ("switch_grace_evals", "an integer >= 0"),
        ("grad_clip", "null (no clipping) or a number > 0"),
        ("cycle_length_factors", "null (equal) or N numbers > 0"),
        ("cycle_lr_factors", "a list of N numbers > 0"),
        ("early_switching", "true or false"),
        ("reset_strategy", "one of ['full', 'none', 'params_only', 'soft']"),
        ("warmup_shape", f"one of {list(schedules.WARMUP_SHAPES)}"),
    ],
)
def test_allowed_values_in_words_come_from_the_range(name, allowed):
    assert hp.SPECS[name].allowed() == allowed


@pytest.mark.parametrize(
    ("name", "value", "ok"),
    [
        ("reset_alpha", 0.0, True),
        ("reset_alpha", 1.0, True),
        ("reset_alpha", 1.0000001, False),
        ("switch_lambda", 0.0, False),
        ("switch_lambda", 1.0, True),
        ("dropout_rate", 1.0, False),
        ("beta2", 0.0, False),
        ("num_cycles", 2.0, True),
        ("num_cycles", 2.5, False),
        ("num_cycles", 10**400, False),
        ("learning_rate", math.inf, False),
        ("grad_clip", None, True),
        ("cycle_lr_factors", None, False),
        ("cycle_length_factors", None, True),
        ("cycle_lr_factors", [1, 2, 0], False),
        ("early_switching", 1, False),
        ("optimizer", "sgd", False),
    ],
)
def test_coerce_accepts_exactly_the_range(name, value, ok):
    if ok:
        hp.coerce(name, value)
    else:
        with pytest.raises(ValueError, match=f"hyperparameter '{name}' must be "):
            hp.coerce(name, value)


def test_cross_field_rules_are_checked_without_building_a_plan():
    with pytest.raises(ValueError, match="cycle_lr_factors has 2 entries but num_cycles is 3"):
        hp.resolve({"num_cycles": 3, "cycle_lr_factors": [1.0, 2.0]})
    with pytest.raises(ValueError, match="warmup_factor \\* cycle_warmup_factors"):
        hp.resolve({"num_cycles": 3, "warmup_factor": 0.6, "cycle_warmup_factors": [1, 2, 1]})
    # Per-cycle lists that were not given follow num_cycles (METHOD.md section 3).
    config = hp.resolve({"num_cycles": 4})
    assert config.cycle_lr_factors == config.cycle_warmup_factors == (1.0,) * 4


def test_the_shipped_search_space_is_valid():
    hp.check_search_space(json.loads((ROOT / "tuning_search_space.json").read_text()))


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"lr": {"min": 1e-4, "max": 1e-3}}, "unknown hyperparameter 'lr'"),
        ({"reset_alpha": {"min": 0.5, "max": 1.5}}, "'reset_alpha' must be a number in"),
        ({"num_cycles": {"feasible_points": [2, 0]}}, "'num_cycles' must be an integer"),
        ({"beta2": {"scaling": "log"}}, "'beta2' needs 'feasible_points' or 'min' and 'max'"),
    ],
)
def test_a_bad_search_space_names_the_field(space, message):
    with pytest.raises(ValueError, match=message):
        hp.check_search_space(space)


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("learning_rate", "3e-3", 3e-3),
        ("num_cycles", "4", 4),
        ("early_switching", "false", False),
        ("grad_clip", "null", None),
        ("decay_shape", "linear", "linear"),
        ("cycle_lr_factors", "[1, 2, 0.5]", (1.0, 2.0, 0.5)),
    ],
)
def test_cli_values_are_parsed_then_checked(name, text, value):
    assert hp.parse_cli_value(name, text) == value


def test_cli_value_errors_name_the_field():
    with pytest.raises(ValueError, match="hyperparameter 'early_switching' must be true or"):
        hp.parse_cli_value("early_switching", "yes")
    with pytest.raises(ValueError, match="unknown hyperparameter 'lr'; known names"):
        hp.parse_cli_value("lr", "0.1")


def test_json_round_trip_resolves_to_the_same_config():
    config = hp.resolve({"num_cycles": 2, "cycle_length_factors": [1, 3]})
    written = json.loads(json.dumps(hp.to_json(config)))
    assert written["cycle_length_factors"] == [1.0, 3.0]
    assert written["cycle_lr_factors"] == [1.0, 1.0]  # Resolved, not null.
    assert hp.resolve({k: v for k, v in written.items() if v is not None}) == config


# Values the libraries take as given (they check only what ties fields together): the
# schema refuses each, naming the hyperparameter (the detector's, the plan's, soft's alpha).
_OUT_OF_RANGE = [
    ("switch_lambda", [0.0, -0.5, 1.5, math.nan]),
    ("switch_eps1", [0.0, -0.01, math.nan]),
    ("switch_eps2", [-0.01, math.nan]),
    ("switch_m", [0, 2.5, True]),
    ("switch_k", [0, 9.5]),
    ("switch_grace_evals", [-1, 1.5]),
    ("switch_relative", ["yes", 1]),
    ("reset_alpha", [-0.1, 1.01, math.nan, math.inf, "0.5", True, None]),
    ("learning_rate", [0.0, -1e-3, math.nan, math.inf, "0.1"]),
    ("warmup_factor", [0.0, 1.0, -0.1, math.nan, "x"]),
    ("num_cycles", [0, -2, 3.5]),
    ("cycle_lr_factors", [[1.0, 0.0, 1.0], [1, math.inf, 1], "1,1,1"]),
    ("cycle_length_factors", [[1, -1, 1]]),
    ("cycle_warmup_factors", [[1, math.nan, 1]]),
]


@pytest.mark.parametrize(
    ("name", "value"), [(name, v) for name, values in _OUT_OF_RANGE for v in values]
)
def test_the_schema_checks_each_value_the_libraries_take_as_given(name, value):
    given = {name: value, "num_cycles": 3} if name.startswith("cycle_") else {name: value}
    with pytest.raises(ValueError, match=rf"hyperparameter '{name}' must be .*, got"):
        hp.resolve(given)


def test_library_defaults_are_the_schemas():
    """Each default that a library's record still carries is the schema's: the records the
    schema builds from its defaults hold the records' own defaults, and a plan made from
    `PlanSettings`' defaults is the schema's default plan (None there means all ones)."""
    for config in (hp.Config(), hp.resolve(dict(hp.V2_DEFAULTS))):
        built = {
            early_switching.DetectorConfig: hp.detector_config(config),
            controller.Settings: hp.controller_settings(config, 0.5, True),
            schedules.Budget: hp.time_budget(config, 100.0, 1000)._replace(min_steps=1),
            schedules.PlanSettings: hp.plan_settings(config),
        }
        for record, value in built.items():
            for field, default in record._field_defaults.items():
                if default is not None:
                    assert getattr(value, field) == default, (record.__name__, field)
        # min_steps is not the schema's; fit_first's and cooldown's defaults are (above).
        assert schedules.Budget._field_defaults.keys() == {"min_steps", "fit_first", "cooldown"}
        own = schedules.PlanSettings(config.num_cycles, config.learning_rate)
        for a, b in zip(schedules.make_plan(1000, own), hp.make_plan(config, 1000), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "flags, rules",
    [
        ({}, ("non_finite", "norm", "no_improvement")),
        ({"fail_on_norm": False}, ("non_finite", "no_improvement")),
        ({"fail_on_non_finite": False, "fail_on_no_improvement": False}, ("norm",)),
    ],
)
def test_the_enabled_failure_rules_in_their_order(flags, rules):
    assert hp.failure_rules(hp.resolve(flags)) == rules


@pytest.mark.parametrize(
    "given, name, rolls_back, reestimates",
    [
        ({}, "soft", True, False),
        ({"rollback_failed_cycles": False}, "soft", False, False),
        ({"reset_model_state": "reestimate"}, "soft", True, True),
        ({"reset_strategy": "full", "reset_model_state": "reestimate"}, "full", False, False),
        ({"reset_strategy": "none"}, "none", False, False),
    ],
)
def test_the_reset_strategy_carries_the_schemas_choices(given, name, rolls_back, reestimates):
    """The strategy named, whether it rolls a failed cycle back, and whether the reset
    step re-estimates the statistics (only `soft` asks)."""
    strategy = hp.reset_strategy(hp.resolve(given))
    assert strategy.name == name
    assert bool(strategy.rolls_back(True)) is rolls_back
    assert not bool(strategy.rolls_back(False))
    assert strategy.reestimates_model_state is reestimates


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("early_switching", "True", True),
        ("early_switching", "False", False),
        ("grad_clip", "None", None),
    ],
)
def test_cli_takes_pythons_true_false_none(name, text, value):
    """`--set early_switching=False` works like `false` (the docstring's promise)."""
    assert hp.parse_cli_value(name, text) is value


def test_the_controller_gets_the_schemas_choices():
    """Each controller setting is the config's (none left at a library default), and the
    workload's target, direction and budget are passed through."""
    given = {
        "early_switching": False,
        "stop_when_plan_ends": True,
        "tau_metric": "best",
        "tau_formula": "relative",
        "no_improvement_scale": "value",
        "switch_signal": "loss",
        "rollback_to": "start",
        "switch_lambda": 0.3,
        "past_plan_lr_factor": 2.0,
        "norm_reference": "restored",
        "failure_kappa": 4.0,
        "planned_cycle_switch": "guards",
        "rescue_cycle_switch": "guards",
        "num_cycles": 2,
        "slow_cycle_lr_factor": 3.0,
        "still_cycle_lr_factor": 5.0,
        "weight_decay": 0.25,
    }
    config = hp.resolve(given)
    budget = schedules.Budget(seconds=100.0, fill=0.5, min_steps=7)
    settings = hp.controller_settings(config, 0.25, False, budget)
    assert settings == controller.Settings(
        target=0.25,
        higher_is_better=False,
        detector=early_switching.DetectorConfig()._replace(lambda_=0.3),
        early_switching=False,
        stop_when_plan_ends=True,
        tau_metric="best",
        tau_formula="relative",
        improvement_scale="value",
        switch_signal="loss",
        rollback_to="start",
        budget=budget,
        past_plan_peak=2.0 * config.learning_rate,
        norm_reference="restored",
        keep_kappa=4.0,
        guarded_cycles=2,
        guarded_from=2,
        slow_cycle_lr_factor=3.0,
        failure_kappa=4.0,
        still_cycle_lr_factor=5.0,
        weight_decay=0.25,
    )
    assert hp.controller_settings(config, 0.9, True).higher_is_better is True
    detector = hp.resolve({**given, "planned_cycle_switch": "detector"})
    assert hp.controller_settings(detector, 0.9, True).guarded_cycles == 0
    rescues = hp.resolve({**given, "rescue_cycle_switch": "detector"})
    assert hp.controller_settings(rescues, 0.9, True).guarded_from == math.inf
    unguarded = hp.resolve({**given, "sound_rollback_point": False})
    assert hp.controller_settings(unguarded, 0.9, True).keep_kappa is None


@pytest.mark.parametrize(
    ("given", "nesterov"), [({"optimizer": "nadamw"}, True), ({"optimizer": "adamw"}, False)]
)
def test_the_optimizer_gets_the_schemas_values(given, nesterov):
    """b1 = 1 - one_minus_beta1, eps 1e-8 (AlgoPerf's baseline), NAdamW = Nesterov; the
    clip and the weights as given."""
    config = hp.resolve(
        {
            **given,
            "one_minus_beta1": 0.25,
            "beta2": 0.99,
            "weight_decay": 0.125,
            "grad_clip": 2.0,
            "moment_weights": nesterov,  # nadamw needs them; adamw runs without.
        }
    )
    assert hp.optimizer_settings(config) == {
        "b1": 0.75,
        "b2": 0.99,
        "eps": 1e-8,
        "weight_decay": 0.125,
        "grad_clip": 2.0,
        "nesterov": nesterov,
        "moment_weights": nesterov,
    }


def test_only_the_numbers_are_in_the_optimizer_state():
    """inject_hyperparams keeps the numeric hyperparameters in the state (data, no
    recompile when they change); the clip, Nesterov and the moment weights are static."""
    config = hp.resolve({"grad_clip": 1.0})
    plan = hp.make_plan(config, 100)
    state = hp.make_optimizer(config, plan).init({"w": np.zeros(3, np.float32)})
    assert set(state.hyperparams) == {"learning_rate", "b1", "b2", "eps", "weight_decay"}


@pytest.mark.parametrize(
    ("given", "runtime", "step_hint", "expected"),
    [
        # T0 = round(2 x 1000) = 2000, N = 4: cycles of 500, the shortest 0.25 x 500 = 125.
        (
            {"num_cycles": 4, "cycle_budget_factor": 2.0, "time_budget_factor": 2.0},
            300.0,
            1000,
            schedules.Budget(seconds=600.0, fill=2 / 3, min_steps=125),
        ),
        # T0 = max(N, round(0.5 x 2)) = 3 steps, N = 3: 0.25 x 1 rounds to 0, at least 1.
        (
            {"num_cycles": 3, "cycle_budget_factor": 0.5, "budget_fill": 0.5},
            0.5,
            2,
            schedules.Budget(seconds=0.75, fill=0.5, min_steps=1),
        ),
        ({"fit_first_cycle": True}, 10, 400, schedules.Budget(15.0, 2 / 3, 100, True)),
        ({"cut_cycle_cooldown": 0.3}, 10, 400, schedules.Budget(15.0, 2 / 3, 100, cooldown=0.3)),
        ({"cut_cycle_cooldown": 0.0}, 10, 400, schedules.Budget(15.0, 2 / 3, 100, cooldown=0.0)),
    ],
)
def test_the_time_budget_from_the_workloads_runtime(given, runtime, step_hint, expected):
    """B = time_budget_factor x max_runtime_sec, filled to budget_fill; the shortest cycle
    after the plan is a quarter of the first plan's mean cycle, at least one step."""
    budget = hp.time_budget(hp.resolve(given), runtime, step_hint)
    assert budget._replace(fill=pytest.approx(budget.fill)) == expected


@pytest.mark.parametrize("runtime", [0, 0.0, -1.0, math.inf, math.nan, None, True, "100"])
def test_no_time_budget_without_a_positive_finite_runtime(runtime):
    """A workload that states no usable runtime: the plan stays in steps."""
    assert hp.time_budget(hp.Config(), runtime, 1000) is None


def test_the_runs_json_holds_plain_lists():
    """to_json gives JSON's own types (what json.load of the written file returns)."""
    config = hp.resolve({"num_cycles": 2, "cycle_length_factors": [1, 3]})
    plain = hp.to_json(config)
    assert plain == json.loads(json.dumps(plain))
    assert plain["cycle_length_factors"] == [1.0, 3.0]


@pytest.mark.parametrize(
    ("choice", "mean"), [("blend", 1.0), ("keep", 2.0), ("fresh", 0.0), ("reestimate", 2.0)]
)
def test_a_soft_reset_treats_the_statistics_as_reset_model_state_says(choice, mean):
    """After a cycle that did not fail, tau = 0.5: the statistics blended half way, kept,
    fresh, or kept for the reset step to re-estimate."""
    config = hp.resolve({"reset_model_state": choice})
    params = {"w": np.ones(2, np.float32)}
    opt_state = reset.adamw(0.1, **hp.optimizer_settings(config)).init(params)
    current = reset.TrainState(params, {"mean": np.float32(2.0)}, opt_state)
    fresh = reset.TrainState(params, {"mean": np.float32(0.0)}, opt_state)
    outcome = reset.CycleOutcome(tau=0.5, failed=False, start=current)
    result = hp.reset_strategy(config).apply(current, fresh, outcome)
    assert float(result.model_state["mean"]) == mean
