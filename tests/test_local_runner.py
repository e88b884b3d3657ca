"""The local runner: AlgoPerf's train_once semantics, driving real submissions."""

import functools
import math
import types

import jax
import numpy as np
import optax
import pytest
from flax import serialization

from cyclic_soft_reset import submission
from cyclic_soft_reset.algoperf_compat import parse_eval_results, spec
from scripts.local import runner as local_runner
from scripts.local import workloads

# No time budget (an infinite runtime): the submission's plan stays in steps, so that these
# tests of the runner's mechanics do not depend on the machine's speed.
TINY = {"hidden_sizes": (32, 32), "step_hint": 30, "max_allowed_runtime_sec": math.inf}


def tiny(name="digits", **overrides):
    return workloads.make_workload(name, **{**TINY, **overrides})


def plain_sgd_submission(calls, with_train_state):
    """A small real submission (SGD) that records which entry point ran when."""

    def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
        calls.append(("init_optimizer_state", None))
        return optax.sgd(0.05).init(model_params), None

    def data_selection(
        workload,
        input_queue,
        optimizer_state,
        params,
        model_state,
        hyperparameters,
        global_step,
        rng,
    ):
        calls.append(("data_selection", global_step))
        return next(input_queue)

    @functools.partial(jax.jit, static_argnums=0)
    def step(workload, params, model_state, opt_state, batch, rng):
        def loss(p):
            logits, new_state = workload.model_fn(
                p, batch, model_state, spec.ForwardPassMode.TRAIN, rng, True, 0.0
            )
            out = workload.loss_fn(batch["targets"], logits)
            return out["summed"] / out["n_valid_examples"], new_state

        (_, new_state), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = optax.sgd(0.05).update(grads, opt_state)
        return optax.apply_updates(params, updates), new_state, opt_state

    def update(
        workload,
        current_param_container,
        model_state,
        optimizer_state,
        batch,
        rng,
        global_step,
        train_state,
    ):
        calls.append(("update_params", global_step, train_state))
        params, new_state, opt_state = step(
            workload, current_param_container, model_state, optimizer_state[0], batch, rng
        )
        return (opt_state, None), params, new_state

    if with_train_state:

        def update_params(
            workload,
            current_param_container,
            current_params_types,
            model_state,
            hyperparameters,
            batch,
            loss_type,
            optimizer_state,
            eval_results,
            global_step,
            rng,
            train_state=None,
        ):
            return update(
                workload,
                current_param_container,
                model_state,
                optimizer_state,
                batch,
                rng,
                global_step,
                train_state,
            )
    else:

        def update_params(
            workload,
            current_param_container,
            current_params_types,
            model_state,
            hyperparameters,
            batch,
            loss_type,
            optimizer_state,
            eval_results,
            global_step,
            rng,
        ):
            return update(
                workload,
                current_param_container,
                model_state,
                optimizer_state,
                batch,
                rng,
                global_step,
                "absent",
            )

    def prepare_for_eval(
        workload,
        current_param_container,
        current_params_types,
        model_state,
        hyperparameters,
        loss_type,
        optimizer_state,
        eval_results,
        global_step,
        rng,
    ):
        calls.append(("prepare_for_eval", global_step))
        return optimizer_state, current_param_container, model_state

    return types.SimpleNamespace(
        get_batch_size=lambda name: 32,
        init_optimizer_state=init_optimizer_state,
        data_selection=data_selection,
        update_params=update_params,
        prepare_for_eval=prepare_for_eval,
    )


def _algoperf_keys(seed: int, self_tuning: bool):
    """AlgoPerf 0.6's rule, stated from its submission_runner.py: score_submission_on_workload
    passes PRNGKey(seed) as it is under self-tuning and the first of its two splits under
    external tuning; train_once splits that into (data, opt_init, model_init, rng)."""
    key = jax.random.PRNGKey(seed)
    if not self_tuning:
        key = jax.random.split(key)[0]
    return tuple(jax.random.split(key, 4))


@pytest.mark.parametrize("self_tuning", [True, False])
def test_keys_are_derived_as_algoperfs_runner_derives_them_in_each_ruleset(self_tuning):
    """The local runner's keys per ruleset are AlgoPerf's (tests/test_algoperf_runner_keys.py
    checks the same against AlgoPerf's own runner); the two rulesets differ."""
    for seed in (1, 5, 2**31 + 3):
        got = local_runner.derive_rngs(seed, self_tuning)
        for a, b in zip(got, _algoperf_keys(seed, self_tuning), strict=True):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(local_runner.derive_rngs(5)[2], _algoperf_keys(5, False)[2])


def test_a_run_inits_the_model_with_the_self_tuning_rulesets_key():
    """train_once (self-tuning by default) initialises the model from AlgoPerf's
    self-tuning model_init_rng, not external tuning's."""
    seen = []
    workload = tiny()
    init = workload.init_model_fn
    workload.init_model_fn = lambda rng: (seen.append(np.asarray(rng)), init(rng))[1]
    local_runner.train_once(
        workload, plain_sgd_submission([], True), None, 5, global_batch_size=8, max_global_steps=1
    )
    np.testing.assert_array_equal(seen[0], _algoperf_keys(5, True)[2])


def test_step_keys_fold_in_the_step_and_split_in_four():
    rng = _algoperf_keys(5, True)[3]
    per_step = jax.random.split(jax.random.fold_in(rng, 7), 4)
    got = local_runner.step_rngs(rng, 7)
    for a, b in zip(got, per_step, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("with_train_state", [True, False])
def test_calls_entry_points_in_runner_order(with_train_state):
    calls = []
    sub = plain_sgd_submission(calls, with_train_state)
    result = local_runner.train_once(
        tiny(),
        sub,
        None,
        0,
        workload_name="mnist",  # Not embedded: the batch size is get_batch_size's.
        eval_every_steps=2,
        max_global_steps=4,
    )
    names = [c[0] for c in calls]
    assert names == [
        "init_optimizer_state",
        "data_selection",
        "update_params",
        "data_selection",
        "update_params",
        "prepare_for_eval",
        "data_selection",
        "update_params",
        "data_selection",
        "update_params",
        "prepare_for_eval",
    ]
    updates = [c for c in calls if c[0] == "update_params"]
    assert [c[1] for c in updates] == [0, 1, 2, 3]
    if with_train_state:
        state = updates[-1][2]
        assert isinstance(state, types.MappingProxyType)
        assert state["accumulated_submission_time"] > 0
    else:
        assert updates[-1][2] == "absent"
    assert [s for s, _ in result.eval_results] == [2, 4]
    assert result.global_batch_size == 32  # From get_batch_size.
    assert result.stop_reason == "max_steps"


def test_embedded_workloads_take_their_batch_size_from_the_registry():
    sub = types.SimpleNamespace(get_batch_size=lambda name: 32)
    for name in workloads.WORKLOAD_NAMES:
        want = workloads.make_workload(name, **TINY).config.batch_size
        assert local_runner.resolve_batch_size(sub, name, None) == want
    assert local_runner.resolve_batch_size(sub, "breast_cancer", None) == 64
    assert local_runner.resolve_batch_size(sub, "mnist", None) == 32
    assert local_runner.resolve_batch_size(sub, "digits", 16) == 16


@pytest.mark.slow
def test_eval_results_carry_runner_fields_and_are_reproducible():
    def run(seed):
        return local_runner.train_once(
            tiny(),
            submission,
            None,
            seed,
            global_batch_size=64,
            eval_every_steps=5,
            max_global_steps=15,
        )

    a, b, c = run(0), run(0), run(1)
    assert [s for s, _ in a.eval_results] == [5, 10, 15]
    times = [m["accumulated_submission_time"] for _, m in a.eval_results]
    assert times == sorted(times) and times[0] > 0
    for _, m in a.eval_results:
        assert m["score"] == m["accumulated_submission_time"]
        for key in ("total_duration", "accumulated_eval_time", "accumulated_logging_time"):
            assert key in m
        assert {"validation/accuracy", "validation/loss", "test/accuracy"} <= set(m)
    losses = [m["validation/loss"] for _, m in a.eval_results]
    assert losses == [m["validation/loss"] for _, m in b.eval_results]
    assert losses != [m["validation/loss"] for _, m in c.eval_results]
    evals = [rec for _, rec, is_eval in a.metrics_logger.records if is_eval]
    assert [r["global_step"] for r in evals] == [5, 10, 15]
    assert all(r["preemption_count"] == 0 for r in evals)


@pytest.mark.slow
def test_plan_end_stops_with_final_eval_and_logs_resets():
    result = local_runner.train_once(
        tiny(),
        submission,
        {"early_switching": False, "stop_when_plan_ends": True, "num_cycles": 3},
        0,
        global_batch_size=64,
        eval_every_steps=4,
        stop_at_target=False,
    )
    assert result.stop_reason == "training_complete"
    assert result.global_step == 31  # The step that raised still counts, as in AlgoPerf.
    assert result.eval_results[-1][0] == 31
    records = result.metrics_logger.records
    resets = [(s, m) for s, m, _ in records if "reset/cycle" in m]
    assert [(s, m["reset/cycle"]) for s, m in resets] == [(10, 1), (20, 2)]
    for _, m in resets:
        assert {"reset/tau", "reset/metric", "reset/early_switch"} <= set(m)
        assert m["reset/early_switch"] == 0.0
    periodic = [m for s, m, _ in records if "learning_rate" in m]
    assert periodic and {"loss", "grad_norm", "cycle"} <= set(periodic[0])
    assert records[-1][1] == {
        "score": pytest.approx(result.train_state["accumulated_submission_time"]),
        "global_step": 31,
        "preemption_count": 0,
    }


def test_stops_when_validation_target_is_reached():
    workload = tiny(validation_target_value=0.0)  # Any accuracy above 0 reaches it.
    result = local_runner.train_once(
        workload,
        submission,
        None,
        0,
        global_batch_size=64,
        eval_every_steps=3,
    )
    assert result.stop_reason == "target_reached"
    assert result.target_step == 3 == result.global_step
    assert result.target_submission_time == result.eval_results[0][1]["score"]


def test_time_based_evaluation_and_budget():
    every_step = local_runner.train_once(
        tiny(),
        submission,
        None,
        0,
        global_batch_size=64,
        eval_period_time_sec=0.0,
        max_global_steps=3,
    )
    assert [s for s, _ in every_step.eval_results] == [1, 2, 3]
    rarely = local_runner.train_once(
        tiny(),
        submission,
        None,
        0,
        global_batch_size=64,
        eval_period_time_sec=1e6,
        max_global_steps=3,
    )
    assert [s for s, _ in rarely.eval_results] == [1, 3]  # First step, then the end.
    out_of_time = local_runner.train_once(
        tiny(),
        submission,
        None,
        0,
        global_batch_size=64,
        eval_every_steps=1,
        max_runtime_sec=1e-9,
    )
    assert out_of_time.stop_reason == "time_budget"
    assert out_of_time.global_step == 1 and out_of_time.eval_results == []


@pytest.mark.slow
def test_checkpoint_every_n_steps_and_resume_continue_bit_for_bit(tmp_path):
    """A run stopped by its hook (a preemption) and resumed from its last checkpoint
    ends exactly as the uninterrupted run: same shuffled batches, keys, evaluations."""
    run = dict(global_batch_size=64, eval_every_steps=4, max_global_steps=25)
    full = local_runner.train_once(tiny(use_batch_norm=True), submission, None, 0, **run)
    path = tmp_path / "run" / "checkpoint"
    stopped = local_runner.train_once(
        tiny(use_batch_norm=True),
        submission,
        None,
        0,
        checkpoint_path=path,
        checkpoint_every_steps=5,
        hooks=local_runner.RunnerHooks(after_step=lambda step, *_: step == 13),
        **run,
    )
    assert (stopped.stop_reason, stopped.global_step) == ("stopped_by_hook", 13)
    assert [s for s, _ in stopped.eval_results] == [4, 8, 12]  # No final evaluation.
    raw = serialization.msgpack_restore(path.read_bytes())
    # AlgoPerf's checkpoint (optimizer_state[0] only), the batches drawn and a simulated
    # clock's time (nan: the wall clock).
    assert set(raw) == {
        "clock_time",
        "model_params",
        "optimizer_state",
        "model_state",
        "train_state",
        "eval_results",
        "global_step",
        "preemption_count",
        "input_batches",
    }
    assert (raw["global_step"], raw["preemption_count"], raw["input_batches"]) == (10, 0, 10)
    assert set(raw["optimizer_state"]) == set(stopped.optimizer_state[0]._fields)
    assert set(raw["train_state"]) == set(local_runner.initial_train_state())
    resumed = local_runner.train_once(
        tiny(use_batch_norm=True), submission, None, 0, resume_from=path, **run
    )
    assert (resumed.stop_reason, resumed.global_step) == ("max_steps", 25)
    assert resumed.preemption_count == 1
    assert resumed.eval_results[0] == ({"0": 4, "1": stopped.eval_results[0][1]}, "0")
    resumed_evals = parse_eval_results(resumed.eval_results)
    assert [s for s, _ in resumed_evals] == [s for s, _ in full.eval_results]
    for (_, got), (_, want) in zip(resumed_evals[2:], full.eval_results[2:], strict=True):
        assert got["validation/loss"] == want["validation/loss"]
    for got, want in zip(
        jax.tree.leaves((resumed.params, resumed.model_state)),
        jax.tree.leaves((full.params, full.model_state)),
        strict=True,
    ):
        np.testing.assert_array_equal(got, want)
    preempted = [r for _, r, is_eval in resumed.metrics_logger.records if is_eval]
    assert [r["global_step"] for r in preempted] == [12, 16, 20, 24, 25]
    assert all(r["preemption_count"] == 1 for r in preempted)


@pytest.mark.slow
def test_two_preemptions_continue_bit_for_bit(tmp_path):
    """Preempted twice: the second restore wraps the first restore's entries once more
    (`({'0': {'0': step, '1': metrics}, '1': '0'}, '0')`), and the submission still reads
    them; the run ends exactly as the uninterrupted one."""
    run = dict(global_batch_size=64, eval_every_steps=4, max_global_steps=25)
    full = local_runner.train_once(tiny(use_batch_norm=True), submission, None, 0, **run)
    path = tmp_path / "checkpoint"
    common = dict(checkpoint_path=path, checkpoint_every_steps=5, **run)
    for stop_at, resume in ((7, None), (16, path)):
        local_runner.train_once(
            tiny(use_batch_norm=True),
            submission,
            None,
            0,
            resume_from=resume,
            hooks=local_runner.RunnerHooks(after_step=lambda step, *_, s=stop_at: step == s),
            **common,
        )
    resumed = local_runner.train_once(
        tiny(use_batch_norm=True), submission, None, 0, resume_from=path, **run
    )
    assert resumed.preemption_count == 2
    first = resumed.eval_results[0]
    assert isinstance(first[0], dict) and isinstance(first[0]["0"], dict)  # Wrapped twice.
    got = [(s, m["validation/loss"]) for s, m in parse_eval_results(resumed.eval_results)]
    assert got == [(s, m["validation/loss"]) for s, m in full.eval_results]
    for got, want in zip(
        jax.tree.leaves(resumed.params), jax.tree.leaves(full.params), strict=True
    ):
        np.testing.assert_array_equal(got, want)


def test_rejects_bad_batch_and_eval_settings():
    with pytest.raises(ValueError, match="workload_name or global_batch_size"):
        local_runner.train_once(tiny(), submission, None, 0, max_global_steps=1)
    with pytest.raises(ValueError, match="eval_every_steps"):
        local_runner.train_once(
            tiny(), submission, None, 0, global_batch_size=64, eval_every_steps=0
        )
    with pytest.raises(ValueError, match="need checkpoint_path"):
        local_runner.train_once(
            tiny(), submission, None, 0, global_batch_size=64, checkpoint_every_steps=5
        )
    budgeted = tiny(max_allowed_runtime_sec=60.0)
    assert local_runner.runtime_budget(budgeted, None, self_tuning=True) == 1.5 * 60
    assert local_runner.runtime_budget(tiny(), 7.0, self_tuning=True) == 7.0
