"""The hyperparameter schema: one place from which the manual's table
(docs/hyperparameters.md), the search space's check, the CLI's `--set` parsing and the
run's JSON derive."""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from cyclic_soft_reset import controller, early_switching, schedules
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
        # min_steps is not the schema's; fit_first's default is (checked above).
        assert schedules.Budget._field_defaults.keys() == {"min_steps", "fit_first"}
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
