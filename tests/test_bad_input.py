"""Invalid input, row by row: the exact error, a message naming the field and what is allowed.

Each row is raised early (hyperparameters at `init_optimizer_state`; an eval entry at the
first `update_params` that sees it; a batch at the `update_params` that gets it) and
leaves nothing half-updated: the optimizer state handed in is unchanged and a further
valid call gives exactly the result of a run that never saw the bad input.
"""

import collections
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cyclic_soft_reset import hyperparameters as hp
from cyclic_soft_reset import submission
from scripts.local.workloads.tiny import TinyWorkload

ROOT = Path(__file__).resolve().parents[1]


def _must(name: str, allowed: str) -> str:
    """The message of a rejected hyperparameter: its name, then the allowed values."""
    return rf"^hyperparameter '{name}' must be {allowed}, got "


# (category, hyperparameters, error, message regex). Category "type" is a wrong type,
# "range" an out-of-range value of the right type (coverage is checked below).
POSITIVE = r"a number > 0"
OPEN_UNIT = r"a number in \(0, 1\)"
LIST_N = r"a list of N numbers > 0"
OPT_LIST_N = r"null \(equal\) or N numbers > 0"
INT_1 = r"an integer >= 1"
BOOL = r"true or false"
HP_ROWS = [
    ("type", {"learning_rate": "0.1"}, ValueError, _must("learning_rate", POSITIVE)),
    ("type", {"learning_rate": True}, ValueError, _must("learning_rate", POSITIVE)),
    ("type", {"learning_rate": None}, ValueError, _must("learning_rate", POSITIVE)),
    ("range", {"learning_rate": -1e-3}, ValueError, _must("learning_rate", POSITIVE)),
    ("range", {"learning_rate": 0.0}, ValueError, _must("learning_rate", POSITIVE)),
    ("range", {"learning_rate": math.nan}, ValueError, _must("learning_rate", POSITIVE)),
    ("range", {"learning_rate": math.inf}, ValueError, _must("learning_rate", POSITIVE)),
    ("type", {"one_minus_beta1": "0.1"}, ValueError, _must("one_minus_beta1", OPEN_UNIT)),
    ("range", {"one_minus_beta1": 0.0}, ValueError, _must("one_minus_beta1", OPEN_UNIT)),
    ("range", {"one_minus_beta1": 1.0}, ValueError, _must("one_minus_beta1", OPEN_UNIT)),
    ("type", {"beta2": "0.999"}, ValueError, _must("beta2", OPEN_UNIT)),
    ("range", {"beta2": 1.0}, ValueError, _must("beta2", OPEN_UNIT)),
    ("range", {"beta2": 1.5}, ValueError, _must("beta2", OPEN_UNIT)),
    ("range", {"beta2": 0}, ValueError, _must("beta2", OPEN_UNIT)),
    ("type", {"weight_decay": [0.1]}, ValueError, _must("weight_decay", r"a number >= 0")),
    ("range", {"weight_decay": -0.01}, ValueError, _must("weight_decay", r"a number >= 0")),
    ("type", {"warmup_factor": "0.02"}, ValueError, _must("warmup_factor", OPEN_UNIT)),
    ("range", {"warmup_factor": 0}, ValueError, _must("warmup_factor", OPEN_UNIT)),
    ("range", {"warmup_factor": 1.0}, ValueError, _must("warmup_factor", OPEN_UNIT)),
    ("type", {"dropout_rate": "0.1"}, ValueError, _must("dropout_rate", r"a number in \[0, 1\)")),
    ("range", {"dropout_rate": 1.0}, ValueError, _must("dropout_rate", r"a number in \[0, 1\)")),
    ("range", {"dropout_rate": -0.1}, ValueError, _must("dropout_rate", r"a number in \[0, 1\)")),
    ("type", {"label_smoothing": None}, ValueError, _must("label_smoothing", r"a number in \[0, 1\)")),  # noqa: E501
    ("range", {"label_smoothing": 1.0}, ValueError, _must("label_smoothing", r"a number in \[0, 1\)")),  # noqa: E501
    ("type", {"grad_clip": "1.0"}, ValueError, _must("grad_clip", r"null \(no clipping\) or a number > 0")),  # noqa: E501
    ("range", {"grad_clip": 0.0}, ValueError, _must("grad_clip", r"null \(no clipping\) or a number > 0")),  # noqa: E501
    ("range", {"grad_clip": -1.0}, ValueError, _must("grad_clip", r"null \(no clipping\) or a number > 0")),  # noqa: E501
    ("type", {"optimizer": 1}, ValueError, _must("optimizer", r"one of \['adamw', 'nadamw'\]")),
    ("type", {"optimizer": ["adamw"]}, ValueError, _must("optimizer", r"one of \['adamw', 'nadamw'\]")),  # noqa: E501
    ("range", {"optimizer": "adam"}, ValueError, _must("optimizer", r"one of \['adamw', 'nadamw'\]")),  # noqa: E501
    ("range", {"optimizer": "AdamW"}, ValueError, _must("optimizer", r"one of \['adamw', 'nadamw'\]")),  # noqa: E501
    ("type", {"moment_weights": 1}, ValueError, _must("moment_weights", BOOL)),
    ("type", {"moment_weights": "false"}, ValueError, _must("moment_weights", BOOL)),
    ("type", {"num_cycles": 2.5}, ValueError, _must("num_cycles", INT_1)),
    ("type", {"num_cycles": "3"}, ValueError, _must("num_cycles", INT_1)),
    ("type", {"num_cycles": True}, ValueError, _must("num_cycles", INT_1)),
    ("type", {"num_cycles": math.inf}, ValueError, _must("num_cycles", INT_1)),
    ("type", {"num_cycles": math.nan}, ValueError, _must("num_cycles", INT_1)),
    ("range", {"num_cycles": 0}, ValueError, _must("num_cycles", INT_1)),
    ("range", {"num_cycles": -2}, ValueError, _must("num_cycles", INT_1)),
    ("type", {"cycle_budget_factor": "1"}, ValueError, _must("cycle_budget_factor", POSITIVE)),
    ("range", {"cycle_budget_factor": 0}, ValueError, _must("cycle_budget_factor", POSITIVE)),
    ("range", {"cycle_budget_factor": -1.0}, ValueError, _must("cycle_budget_factor", POSITIVE)),
    ("type", {"cycle_length_factors": "1,1,1"}, ValueError, _must("cycle_length_factors", OPT_LIST_N)),  # noqa: E501
    ("type", {"cycle_length_factors": [1, 1, "2"]}, ValueError, _must("cycle_length_factors", OPT_LIST_N)),  # noqa: E501
    ("type", {"cycle_length_factors": {"a": 1}}, ValueError, _must("cycle_length_factors", OPT_LIST_N)),  # noqa: E501
    ("range", {"cycle_length_factors": [1, 0, 1]}, ValueError, _must("cycle_length_factors", OPT_LIST_N)),  # noqa: E501
    ("range", {"cycle_length_factors": [1, -1, 1]}, ValueError, _must("cycle_length_factors", OPT_LIST_N)),  # noqa: E501
    ("type", {"cycle_lr_factors": 1.0}, ValueError, _must("cycle_lr_factors", LIST_N)),
    ("type", {"cycle_lr_factors": None}, ValueError, _must("cycle_lr_factors", LIST_N)),
    ("type", {"cycle_lr_factors": [1, None, 1]}, ValueError, _must("cycle_lr_factors", LIST_N)),
    ("type", {"cycle_lr_factors": [True, 1, 1]}, ValueError, _must("cycle_lr_factors", LIST_N)),
    ("type", {"cycle_lr_factors": [[1], [2], [3]]}, ValueError, _must("cycle_lr_factors", LIST_N)),  # noqa: E501
    ("range", {"cycle_lr_factors": [1, 1, 0]}, ValueError, _must("cycle_lr_factors", LIST_N)),
    ("range", {"cycle_lr_factors": [1, math.nan, 1]}, ValueError, _must("cycle_lr_factors", LIST_N)),  # noqa: E501
    ("type", {"cycle_warmup_factors": "1"}, ValueError, _must("cycle_warmup_factors", LIST_N)),
    ("range", {"cycle_warmup_factors": [1, 1, -1]}, ValueError, _must("cycle_warmup_factors", LIST_N)),  # noqa: E501
    ("type", {"warmup_shape": 0}, ValueError, _must("warmup_shape", r"one of \['linear', 'cosine', 'exponential'\]")),  # noqa: E501
    ("range", {"warmup_shape": "sine"}, ValueError, _must("warmup_shape", r"one of \['linear', 'cosine', 'exponential'\]")),  # noqa: E501
    ("type", {"decay_shape": None}, ValueError, _must("decay_shape", r"one of \['cosine', 'linear', 'exponential'\]")),  # noqa: E501
    ("range", {"decay_shape": "step"}, ValueError, _must("decay_shape", r"one of \['cosine', 'linear', 'exponential'\]")),  # noqa: E501
    ("type", {"reset_strategy": 2}, ValueError, _must("reset_strategy", r"one of \['full', 'none', 'params_only', 'soft'\]")),  # noqa: E501
    ("range", {"reset_strategy": "hard"}, ValueError, _must("reset_strategy", r"one of \['full', 'none', 'params_only', 'soft'\]")),  # noqa: E501
    ("type", {"reset_alpha": "0.5"}, ValueError, _must("reset_alpha", r"a number in \[0, 1\]")),
    ("range", {"reset_alpha": 1.5}, ValueError, _must("reset_alpha", r"a number in \[0, 1\]")),
    ("range", {"reset_alpha": -0.1}, ValueError, _must("reset_alpha", r"a number in \[0, 1\]")),
    ("type", {"tau_metric": 1}, ValueError, _must("tau_metric", r"one of \['latest', 'best'\]")),  # noqa: E501
    ("range", {"tau_metric": "mean"}, ValueError, _must("tau_metric", r"one of \['latest', 'best'\]")),  # noqa: E501
    ("type", {"switched_cycle_fresh_moments": 1}, ValueError, _must("switched_cycle_fresh_moments", BOOL)),  # noqa: E501
    ("type", {"rollback_failed_cycles": "yes"}, ValueError, _must("rollback_failed_cycles", BOOL)),  # noqa: E501
    ("type", {"fail_on_non_finite": 0}, ValueError, _must("fail_on_non_finite", BOOL)),
    ("type", {"fail_on_norm": None}, ValueError, _must("fail_on_norm", BOOL)),
    ("type", {"fail_on_no_improvement": "true"}, ValueError, _must("fail_on_no_improvement", BOOL)),  # noqa: E501
    ("type", {"snapshot_on_host": 1.0}, ValueError, _must("snapshot_on_host", BOOL)),
    ("type", {"compile_reset_ahead": "yes"}, ValueError, _must("compile_reset_ahead", BOOL)),
    ("type", {"failure_kappa": "3"}, ValueError, _must("failure_kappa", r"a number > 1")),
    ("type", {"time_budget_factor": "1.5"}, ValueError, _must("time_budget_factor", POSITIVE)),
    ("range", {"time_budget_factor": 0.0}, ValueError, _must("time_budget_factor", POSITIVE)),
    ("type", {"budget_fill": [0.9]}, ValueError, _must("budget_fill", r"a number in \(0, 1\]")),
    ("range", {"budget_fill": 1.2}, ValueError, _must("budget_fill", r"a number in \(0, 1\]")),
    ("type", {"fit_first_cycle": 1}, ValueError, _must("fit_first_cycle", BOOL)),
    ("type", {"cut_cycle_cooldown": "0.2"}, ValueError, _must("cut_cycle_cooldown", r"a number in \[0, 1\)")),  # noqa: E501
    ("range", {"cut_cycle_cooldown": 1.0}, ValueError, _must("cut_cycle_cooldown", r"a number in \[0, 1\)")),  # noqa: E501
    ("range", {"cut_cycle_cooldown": -0.1}, ValueError, _must("cut_cycle_cooldown", r"a number in \[0, 1\)")),  # noqa: E501
    ("range", {"failure_kappa": 1.0}, ValueError, _must("failure_kappa", r"a number > 1")),
    ("type", {"norm_rule": 1}, ValueError, _must("norm_rule", r"one of \['alone', 'confirmed'\]")),
    ("range", {"norm_rule": "both"}, ValueError, _must("norm_rule", r"one of \['alone', 'confirmed'\]")),  # noqa: E501
    ("type", {"switch_signal": 1}, ValueError, _must("switch_signal", r"one of \['loss', 'metric'\]")),  # noqa: E501
    ("range", {"switch_signal": "accuracy"}, ValueError, _must("switch_signal", r"one of \['loss', 'metric'\]")),  # noqa: E501
    ("type", {"rollback_to": 1}, ValueError, _must("rollback_to", r"one of \['start', 'best'\]")),  # noqa: E501
    ("range", {"rollback_to": "end"}, ValueError, _must("rollback_to", r"one of \['start', 'best'\]")),  # noqa: E501
    ("type", {"past_plan_lr_factor": "1"}, ValueError, _must("past_plan_lr_factor", r"null \(the last cycle's r\) or a number > 0")),  # noqa: E501
    ("range", {"past_plan_lr_factor": 0.0}, ValueError, _must("past_plan_lr_factor", r"null \(the last cycle's r\) or a number > 0")),  # noqa: E501
    ("type", {"sound_rollback_point": 1}, ValueError, _must("sound_rollback_point", BOOL)),
    ("type", {"planned_cycle_switch": 1}, ValueError, _must("planned_cycle_switch", r"one of \['detector', 'guards'\]")),  # noqa: E501
    ("range", {"planned_cycle_switch": "norm"}, ValueError, _must("planned_cycle_switch", r"one of \['detector', 'guards'\]")),  # noqa: E501
    ("type", {"rescue_cycle_switch": 1}, ValueError, _must("rescue_cycle_switch", r"one of \['detector', 'guards'\]")),  # noqa: E501
    ("range", {"rescue_cycle_switch": "norm"}, ValueError, _must("rescue_cycle_switch", r"one of \['detector', 'guards'\]")),  # noqa: E501
    ("type", {"failed_peak_rule": 1}, ValueError, _must("failed_peak_rule", r"one of \['factor', 'norm'\]")),  # noqa: E501
    ("range", {"failed_peak_rule": "ratio"}, ValueError, _must("failed_peak_rule", r"one of \['factor', 'norm'\]")),  # noqa: E501
    ("type", {"norm_reference": 1}, ValueError, _must("norm_reference", r"one of \['failed_start', 'restored'\]")),  # noqa: E501
    ("range", {"norm_reference": "init"}, ValueError, _must("norm_reference", r"one of \['failed_start', 'restored'\]")),  # noqa: E501
    ("type", {"failed_cycle_lr_factor": "0.5"}, ValueError, _must("failed_cycle_lr_factor", r"a number in \(0, 1\]")),  # noqa: E501
    ("range", {"failed_cycle_lr_factor": 0.0}, ValueError, _must("failed_cycle_lr_factor", r"a number in \(0, 1\]")),  # noqa: E501
    ("type", {"slow_cycle_lr_factor": "3"}, ValueError, _must("slow_cycle_lr_factor", r"a number >= 1")),  # noqa: E501
    ("range", {"slow_cycle_lr_factor": 0.5}, ValueError, _must("slow_cycle_lr_factor", r"a number >= 1")),  # noqa: E501
    ("type", {"still_cycle_lr_factor": True}, ValueError, _must("still_cycle_lr_factor", r"a number >= 1")),  # noqa: E501
    ("range", {"still_cycle_lr_factor": 0.99}, ValueError, _must("still_cycle_lr_factor", r"a number >= 1")),  # noqa: E501
    ("type", {"reset_model_state": 1}, ValueError, _must("reset_model_state", r"one of \['blend', 'keep', 'fresh', 'reestimate'\]")),  # noqa: E501
    ("range", {"reset_model_state": "average"}, ValueError, _must("reset_model_state", r"one of \['blend', 'keep', 'fresh', 'reestimate'\]")),  # noqa: E501
    ("type", {"no_improvement_scale": 1}, ValueError, _must("no_improvement_scale", r"one of \['value', 'gap'\]")),  # noqa: E501
    ("range", {"no_improvement_scale": "target"}, ValueError, _must("no_improvement_scale", r"one of \['value', 'gap'\]")),  # noqa: E501
    ("type", {"tau_formula": 2}, ValueError, _must("tau_formula", r"one of \['thesis', 'relative', 'expected'\]")),  # noqa: E501
    ("range", {"tau_formula": "direction-free"}, ValueError, _must("tau_formula", r"one of \['thesis', 'relative', 'expected'\]")),  # noqa: E501
    ("type", {"switch_m": 10**400}, ValueError, _must("switch_m", INT_1)),
    ("type", {"learning_rate": 10**400}, ValueError, _must("learning_rate", r"a number > 0")),
    ("type", {"early_switching": 1}, ValueError, _must("early_switching", BOOL)),
    ("type", {"early_switching": "true"}, ValueError, _must("early_switching", BOOL)),
    ("type", {"early_switching": None}, ValueError, _must("early_switching", BOOL)),
    ("type", {"switch_lambda": "0.7"}, ValueError, _must("switch_lambda", r"a number in \(0, 1\]")),
    ("range", {"switch_lambda": 0}, ValueError, _must("switch_lambda", r"a number in \(0, 1\]")),
    ("range", {"switch_lambda": 1.01}, ValueError, _must("switch_lambda", r"a number in \(0, 1\]")),
    ("type", {"switch_eps1": "0.01"}, ValueError, _must("switch_eps1", POSITIVE)),
    ("range", {"switch_eps1": 0.0}, ValueError, _must("switch_eps1", POSITIVE)),
    ("type", {"switch_eps2": [0.01]}, ValueError, _must("switch_eps2", r"a number >= 0")),
    ("range", {"switch_eps2": -0.01}, ValueError, _must("switch_eps2", r"a number >= 0")),
    ("type", {"switch_m": 9.5}, ValueError, _must("switch_m", INT_1)),
    ("type", {"switch_m": "9"}, ValueError, _must("switch_m", INT_1)),
    ("range", {"switch_m": 0}, ValueError, _must("switch_m", INT_1)),
    ("type", {"switch_k": 2.5}, ValueError, _must("switch_k", INT_1)),
    ("range", {"switch_k": -9}, ValueError, _must("switch_k", INT_1)),
    ("type", {"switch_grace_evals": 1.5}, ValueError, _must("switch_grace_evals", r"an integer >= 0")),  # noqa: E501
    ("range", {"switch_grace_evals": -1}, ValueError, _must("switch_grace_evals", r"an integer >= 0")),  # noqa: E501
    ("type", {"switch_relative": 0}, ValueError, _must("switch_relative", BOOL)),
    ("type", {"switch_relative": "yes"}, ValueError, _must("switch_relative", BOOL)),
    ("type", {"stop_when_plan_ends": 1}, ValueError, _must("stop_when_plan_ends", BOOL)),
    ("type", {"stop_when_plan_ends": "no"}, ValueError, _must("stop_when_plan_ends", BOOL)),
    # Unknown names: the message lists every known one.
    ("name", {"lr": 0.1}, ValueError, r"unknown hyperparameter\(s\) \['lr'\]; known names: \['beta2', .*'learning_rate', .*'weight_decay'\]\.$"),  # noqa: E501
    ("name", {"learning_rate": 0.01, "momentum": 0.9, "beta_2": 0.99}, ValueError, r"unknown hyperparameter\(s\) \['beta_2', 'momentum'\]; known names: \[.*'switch_m'"),  # noqa: E501
    # Per-cycle lists whose length disagrees with num_cycles.
    ("length", {"num_cycles": 3, "cycle_lr_factors": [1.0, 2.0]}, ValueError, r"cycle_lr_factors has 2 entries but num_cycles is 3: give exactly one number per cycle"),  # noqa: E501
    ("length", {"num_cycles": 2, "cycle_warmup_factors": [1, 1, 1]}, ValueError, r"cycle_warmup_factors has 3 entries but num_cycles is 2"),  # noqa: E501
    ("length", {"num_cycles": 4, "cycle_length_factors": [1, 2, 1]}, ValueError, r"cycle_length_factors has 3 entries but num_cycles is 4"),  # noqa: E501
    ("length", {"num_cycles": 3, "cycle_lr_factors": []}, ValueError, r"cycle_lr_factors has 0 entries but num_cycles is 3"),  # noqa: E501
    # Values valid alone that do not fit together.
    ("cross", {"num_cycles": 3, "warmup_factor": 0.5, "cycle_warmup_factors": [1, 2, 1]}, ValueError, r"warmup_factor \* cycle_warmup_factors must stay below 1"),  # noqa: E501
    ("cross", {"num_cycles": 3, "cycle_length_factors": [1, 1e-9, 1]}, ValueError, r"cycle_length_factors .* give a cycle of no steps"),  # noqa: E501
]  # fmt: skip

CONTAINER_ROWS = [
    ("lr=0.1", ValueError, r"hyperparameters must be None, a dict or a namedtuple, got str"),
    ([("learning_rate", 0.1)], ValueError, r"must be None, a dict or a namedtuple, got list"),
    ({1: 0.1, "lr": 0.1}, ValueError, r"unknown hyperparameter\(s\) \[1, 'lr'\]; known names"),
]


def _as_namedtuple(hyperparameters: dict):
    """The form the external-tuning runner passes: a namedtuple with just these keys."""
    return collections.namedtuple("Hyperparameters", list(hyperparameters))(**hyperparameters)


@pytest.fixture(scope="module")
def workload():
    return TinyWorkload(batch_norm=True)


@pytest.fixture(scope="module")
def model(workload):
    """Host copies: each run starts from its own device arrays (update_params donates)."""
    return _copy(workload.init_model_fn(jax.random.PRNGKey(1)))


def _row_id(row):
    category, hyperparameters, _, _ = row
    return f"{category}-" + "-".join(f"{k}={v!r}"[:40] for k, v in hyperparameters.items())


@pytest.mark.parametrize("form", ["dict", "namedtuple"])
@pytest.mark.parametrize("row", HP_ROWS, ids=[_row_id(r) for r in HP_ROWS])
def test_bad_hyperparameter_raises_at_init(row, form, workload, model):
    _, hyperparameters, error, pattern = row
    given = hyperparameters if form == "dict" else _as_namedtuple(hyperparameters)
    params, model_state = model
    with pytest.raises(error, match=pattern):
        submission.init_optimizer_state(workload, params, model_state, given, jax.random.PRNGKey(0))


@pytest.mark.parametrize(("hyperparameters", "error", "pattern"), CONTAINER_ROWS)
def test_bad_hyperparameter_container_raises_at_init(
    hyperparameters, error, pattern, workload, model
):
    params, model_state = model
    with pytest.raises(error, match=pattern):
        submission.init_optimizer_state(
            workload, params, model_state, hyperparameters, jax.random.PRNGKey(0)
        )


def test_rows_cover_every_hyperparameter():
    """Every name has a wrong-type row, and every name with a range an out-of-range row."""
    seen = collections.defaultdict(set)
    for category, hyperparameters, _, _ in HP_ROWS:
        if len(hyperparameters) == 1:
            seen[category].update(hyperparameters)
    names = set(hp.NAMES)
    assert names - seen["type"] == set()
    ranged = {n for n, spec in hp.SPECS.items() if spec.kind != "bool"}
    assert ranged - seen["range"] == set()


def test_unknown_name_message_lists_every_known_name():
    with pytest.raises(ValueError, match="unknown hyperparameter") as info:
        hp.resolve({"lr": 0.1})
    known = str(info.value).split("known names: ")[1]
    assert all(repr(name) in known for name in hp.NAMES)


def test_valid_values_at_the_edges_are_accepted():
    """The closed ends of the ranges, and integral numbers of numpy types, pass."""
    config = hp.resolve(
        {
            "weight_decay": 0,
            "dropout_rate": 0.0,
            "reset_alpha": 1,
            "switch_lambda": 1.0,
            "switch_eps2": 0,
            "switch_grace_evals": np.int64(0),
            "num_cycles": np.int32(2),
            "early_switching": np.bool_(False),
            "grad_clip": None,
            "cycle_length_factors": np.array([1.0, 3.0]),
        }
    )
    assert config.num_cycles == 2 and config.cycle_length_factors == (1.0, 3.0)
    assert config.cycle_lr_factors == (1.0, 1.0)  # Not given, wrong default length: all ones.
    assert hp.resolve(None) == hp.resolve({})


# --------------------------------------------------------------------------------------
# get_batch_size
# --------------------------------------------------------------------------------------

BATCH_SIZE_ROWS = ["imagenet", "not_a_workload", "", "OGBG", "ogbg_unknown_variant"]


@pytest.mark.parametrize("name", BATCH_SIZE_ROWS)
def test_unknown_workload_name(name):
    pattern = rf"^Unsupported workload name: '{name}'; known: \[.*'imagenet_resnet', .*'ogbg'"
    with pytest.raises(ValueError, match=pattern):
        submission.get_batch_size(name)


# --------------------------------------------------------------------------------------
# update_params: eval entries and batches
# --------------------------------------------------------------------------------------

GOOD = {"train/loss": 1.1, "validation/loss": 1.2, "validation/accuracy": 0.5}
NO_TARGET = r"^the evaluation at step 2 has no 'validation/accuracy'; it has \["
NO_LOSS = r"^the evaluation at step 2 has no 'validation/loss'; it has \["
MALFORMED = (
    r"^eval_results entries must be \(global_step, metrics\) pairs with an integer "
    r"global_step >= 0 and a dict of metrics, got "
)
EVAL_ROWS = [
    ((2, {"validation/loss": 1.2}), ValueError, NO_TARGET),
    ((2, {"validation/accuracy": 0.5}), ValueError, NO_LOSS),
    (({"0": 2, "1": {"validation/loss": 1.2}}, "0"), ValueError, NO_TARGET),  # Restored shape.
    (
        (2, dict(GOOD, **{"validation/accuracy": "high"})),
        ValueError,
        r"^the evaluation at step 2 has 'validation/accuracy' = 'high'; it must be a number",
    ),
    (
        (2, dict(GOOD, **{"validation/loss": None})),
        ValueError,
        r"^the evaluation at step 2 has 'validation/loss' = None; it must be a number",
    ),
    ((2,), ValueError, MALFORMED),
    ((2, GOOD, "extra"), ValueError, MALFORMED),
    ("step 2", ValueError, MALFORMED),
    (None, ValueError, MALFORMED),
    ((2.5, GOOD), ValueError, MALFORMED),
    (("2", GOOD), ValueError, MALFORMED),
    ((None, GOOD), ValueError, MALFORMED),
    ((-1, GOOD), ValueError, MALFORMED),
    ((2, list(GOOD.items())), ValueError, MALFORMED),
    (({"0": 2}, "0"), ValueError, MALFORMED),
    (({"0": 2, "1": "metrics"}, "0"), ValueError, MALFORMED),
]


def _batches(workload, n):
    stream = workload.train_batches(0, 16)
    return [next(stream) for _ in range(n)]


def _step(workload, optimizer_state, params, model_state, batch, eval_results, step):
    return submission.update_params(
        workload,
        params,
        None,
        model_state,
        None,
        batch,
        None,
        optimizer_state,
        eval_results,
        step,
        jax.random.fold_in(jax.random.PRNGKey(0), step),
        train_state={},
    )


def _start(workload, model, runtime=None):
    """A fresh optimizer state (re-paired with `runtime` to reuse its compiled step)."""
    params, model_state = jax.tree.map(jnp.asarray, model)
    state, own = submission.init_optimizer_state(
        workload, params, model_state, None, jax.random.PRNGKey(0)
    )
    return (state, runtime or own), params, model_state


def _copy(tree):
    return jax.tree.map(np.array, tree)


def _assert_unchanged(before, after):
    for leaf in jax.tree.leaves(after):
        assert not (isinstance(leaf, jax.Array) and leaf.is_deleted()), "a buffer was donated"
    jax.tree.map(np.testing.assert_array_equal, before, _copy(after))


@pytest.fixture(scope="module")
def reference(workload, model):
    """Four valid steps, an evaluation after the second: the params and the runtime."""
    batches = _batches(workload, 4)
    optimizer_state, params, model_state = _start(workload, model)
    for step in range(4):
        evals = [(2, GOOD)] if step >= 2 else []
        optimizer_state, params, model_state = _step(
            workload, optimizer_state, params, model_state, batches[step], evals, step
        )
    return _copy((params, model_state)), optimizer_state[1], batches


def _bad_call_then_finish(workload, model, reference, bad_call):
    """Steps 0-1, `bad_call(state...)` at step 2 (must raise), then steps 2-3 as usual."""
    expected, runtime, batches = reference
    optimizer_state, params, model_state = _start(workload, model, runtime)
    for step in range(2):
        optimizer_state, params, model_state = _step(
            workload, optimizer_state, params, model_state, batches[step], [], step
        )
    before = _copy((optimizer_state[0], params, model_state))
    bad_call(optimizer_state, params, model_state)
    _assert_unchanged(before, (optimizer_state[0], params, model_state))
    for step in (2, 3):
        optimizer_state, params, model_state = _step(
            workload, optimizer_state, params, model_state, batches[step], [(2, GOOD)], step
        )
    jax.tree.map(np.testing.assert_array_equal, expected, _copy((params, model_state)))


@pytest.mark.parametrize(
    ("entry", "error", "pattern"), EVAL_ROWS, ids=[repr(r[0])[:50] for r in EVAL_ROWS]
)
def test_bad_eval_entry_raises_at_first_sight_and_changes_nothing(
    entry, error, pattern, workload, model, reference
):
    batches = reference[2]

    def bad_call(optimizer_state, params, model_state):
        with pytest.raises(error, match=pattern):
            _step(workload, optimizer_state, params, model_state, batches[2], [entry], 2)

    _bad_call_then_finish(workload, model, reference, bad_call)


def test_bad_eval_entry_after_good_ones_is_still_caught(workload, model, reference):
    batches = reference[2]

    def bad_call(optimizer_state, params, model_state):
        evals = [(1, GOOD), (2, {"validation/accuracy": 0.5})]
        with pytest.raises(ValueError, match=NO_LOSS):
            _step(workload, optimizer_state, params, model_state, batches[2], evals, 2)

    _bad_call_then_finish(workload, model, reference, bad_call)


BATCH_ROWS = [
    ("0-d targets", lambda b: dict(b, targets=np.int32(1))),
    ("0-d inputs", lambda b: dict(b, inputs=np.float32(0.0))),
]


@pytest.mark.parametrize(("name", "spoil"), BATCH_ROWS, ids=[r[0] for r in BATCH_ROWS])
def test_batch_without_a_divisible_leading_axis_changes_nothing(
    name, spoil, workload, model, reference
):
    batches = reference[2]
    pattern = (
        r"^the batch's leading dimension \(\) must be divisible by the number of devices "
        r"\(1\): choose a global batch size that is a multiple of 1"
    )

    def bad_call(optimizer_state, params, model_state):
        with pytest.raises(ValueError, match=pattern):
            _step(workload, optimizer_state, params, model_state, spoil(batches[2]), [], 2)

    _bad_call_then_finish(workload, model, reference, bad_call)


_EIGHT_DEVICES = """
import json, sys
sys.path[:0] = [{root!r}]
import jax, numpy as np
from cyclic_soft_reset import submission
from scripts.local.workloads.tiny import TinyWorkload

workload = TinyWorkload(batch_norm=True)
stream = workload.train_batches(0, 16)
batches = [next(stream) for _ in range(2)]
out = {{"devices": jax.device_count()}}

initial = jax.tree.map(np.array, workload.init_model_fn(jax.random.PRNGKey(1)))

def run(bad, runtime=None):
    params, model_state = jax.tree.map(jax.numpy.asarray, initial)
    opt = submission.init_optimizer_state(workload, params, model_state, None, jax.random.key(0))
    opt = (opt[0], runtime or opt[1])  # Re-paired: the second run reuses the compiled step.
    for step in range(2):
        if bad and step == 1:
            before = jax.tree.map(np.array, (opt[0], params, model_state))
            small = jax.tree.map(lambda x: x[:12], batches[step])
            try:
                submission.update_params(workload, params, None, model_state, None, small,
                                         None, opt, [], step, jax.random.PRNGKey(step))
            except ValueError as e:
                out["error"] = str(e)
            after = (opt[0], params, model_state)
            out["donated"] = any(getattr(x, "is_deleted", lambda: False)()
                                 for x in jax.tree.leaves(after))
            same = jax.tree.map(lambda a, b: bool(np.array_equal(a, np.array(b), equal_nan=True)),
                                before, after)
            out["unchanged"] = all(jax.tree.leaves(same))
        opt, params, model_state = submission.update_params(
            workload, params, None, model_state, None, batches[step], None, opt, [], step,
            jax.random.PRNGKey(step))
    return jax.tree.map(np.array, (params, model_state)), opt[1]

clean, runtime = run(False)
spoiled, _ = run(True, runtime)
out["same_result"] = all(jax.tree.leaves(jax.tree.map(np.array_equal, clean, spoiled)))
print(json.dumps(out))
"""


@pytest.mark.slow
def test_batch_not_divisible_by_eight_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    env["JAX_PLATFORMS"] = "cpu"
    script = _EIGHT_DEVICES.format(root=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8
    assert out["error"].startswith("the batch's leading dimension (12,) must be divisible")
    assert "number of devices (8)" in out["error"] and "multiple of 8" in out["error"]
    assert out["unchanged"] and not out["donated"]
    assert out["same_result"]
