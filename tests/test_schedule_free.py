"""Schedule-Free AdamW, the field's leader as a contestant (scripts/local/contestants/
schedule_free_adamw.py), checked against optax's own functions and the JAX port's rules:

* the update rule: our steps move the params as a plain loop of optax's
  `contrib.schedule_free_adamw` at the port's literal setting does;
* evaluation at x: the runner gets optax's `schedule_free_eval_params`, and evaluating
  (then turning x back into y) leaves training as it was, to float rounding;
* batch norm: the running statistics change on every third step only, and then equal a
  training-mode pass at x;
* where optax lacks it (AlgoPerf 0.6's pins, optax 0.2.2), a clear reason, and the score
  leaves it out of the race saying why.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cyclic_soft_reset.algoperf_compat import spec
from scripts.local import workloads
from scripts.local.contestants import load_submission, unavailable
from scripts.local.contestants import schedule_free_adamw as sf

needs_sf = pytest.mark.skipif(bool(sf.UNAVAILABLE), reason=sf.UNAVAILABLE or "")
STEPS = 12


def _setup(name="digits", seed=0):
    # step_hint 600: a warm-up of 9 steps (at the tiny size's 60 it would be 0 steps).
    workload = workloads.make_workload(name, **{**workloads.tiny_overrides(name), "step_hint": 600})
    params, model_state = workload.init_model_fn(jax.random.PRNGKey(seed))
    queue = workload._build_input_queue(jax.random.PRNGKey(seed + 1), "train", None, 32)
    batches = [next(queue) for _ in range(STEPS)]
    return workload, params, model_state, batches


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


def _train(workload, params, model_state, batches, eval_after=()):
    """Our contestant's steps through its interface, preparing for evaluation after the
    steps in `eval_after`; (final optimizer state, params, model state, the states before
    each step, the params handed to each evaluation)."""
    opt = sf.init_optimizer_state(workload, _copy(params), model_state, None, None)
    params, model_state = _copy(params), _copy(model_state)
    before, evaluated = [], {}
    for step, batch in enumerate(batches):
        before.append((_copy(opt[0]), _copy(params), _copy(model_state)))
        rng = jax.random.PRNGKey(step)
        opt, params, model_state = sf.update_params(
            workload, params, None, model_state, None, batch, None, opt, [], step, rng
        )
        for _ in range(step in eval_after):
            opt, params, model_state = sf.prepare_for_eval(
                workload, params, None, model_state, None, None, opt, [], step + 1, None
            )
            evaluated[step] = _copy(params)
    return opt[0], params, model_state, before, evaluated


def _close(a, b, rtol=1e-5, atol=1e-6):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


@needs_sf
@pytest.mark.slow  # Compiles the contestant's steps: seconds each.
def test_steps_are_optax_schedule_free_adamw_at_the_ports_setting():
    workload, params, model_state, batches = _setup("breast_cancer")  # no batch norm
    assert not jax.tree.leaves(model_state)
    _, ours, _, _, _ = _train(workload, params, model_state, batches)

    # The port's literal numbers, written out again: an independent path to the same steps.
    tx = optax.contrib.schedule_free_adamw(
        learning_rate=0.0025,
        warmup_steps=int(0.02 * workload.step_hint * 0.75),
        b1=0.9,
        b2=0.9955159689799007,
        eps=1e-8,
        weight_decay=0.08121616522670176,
        weight_lr_power=2,
    )

    @jax.jit
    def step_fn(y, state, batch, rng):
        def loss(p):
            logits, _ = workload.model_fn(p, batch, None, spec.ForwardPassMode.TRAIN, rng, True)
            out = workload.loss_fn(batch["targets"], logits, batch.get("weights"))
            return out["summed"] / out["n_valid_examples"]

        updates, state = tx.update(jax.grad(loss)(y), state, y)
        return optax.apply_updates(y, updates), state

    y, state = _copy(params), tx.init(_copy(params))
    for step, batch in enumerate(batches):
        y, state = step_fn(y, state, batch, jax.random.PRNGKey(step))
    assert sf.warmup_steps(workload.step_hint) == int(0.015 * workload.step_hint)
    _close(ours, y)
    assert not _equal(ours, params)


@needs_sf
@pytest.mark.slow  # Compiles the contestant's steps: seconds each.
def test_evaluation_is_at_x_and_leaves_training_as_it_was():
    # No batch norm: there a bias before the normalisation gets only rounding noise as its
    # gradient, which Adam scales to full steps, so last-bit differences grow at once.
    workload, params, model_state, batches = _setup("breast_cancer")
    _, plain, plain_state, before, _ = _train(workload, params, model_state, batches)
    _, params_e, state_e, _, evaluated = _train(
        workload, params, model_state, batches, eval_after=(1, 4, 5)
    )
    for step in (1, 4, 5):  # x from the plain run's state after that step.
        opt, y, _ = before[step + 1]
        _close(evaluated[step], optax.contrib.schedule_free_eval_params(opt[0], y))
        assert not _equal(evaluated[step], y)
    # The next steps start again from y: the runs end alike (to float rounding).
    _close(params_e, plain)
    _close(state_e, plain_state)


def _equal(a, b) -> bool:
    return jax.tree.all(jax.tree.map(lambda u, v: bool(jnp.all(u == v)), a, b))


@needs_sf
@pytest.mark.slow  # Compiles the contestant's steps: seconds each.
def test_preparing_twice_gives_the_same_x():
    workload, params, model_state, batches = _setup()
    opt, y, model_state, _, evaluated = _train(
        workload, params, model_state, batches[:3], eval_after=(2,)
    )
    once = evaluated[2]
    _, twice, _ = sf.prepare_for_eval(
        workload, _copy(y), None, model_state, None, None, (_copy(opt), None), [], 3, None
    )
    _close(twice, once, rtol=0, atol=0)


@needs_sf
@pytest.mark.slow  # Compiles the contestant's steps: seconds each.
def test_batch_norm_statistics_refresh_at_x_every_third_step():
    workload, params, model_state, batches = _setup("digits")
    assert jax.tree.leaves(model_state)
    _, _, final_state, before, _ = _train(workload, params, model_state, batches)
    after = [b[2] for b in before[1:]] + [final_state]
    for step, (opt, y, stats) in enumerate(before):
        assert (not _equal(after[step], stats)) == (step % sf.BN_EVERY == 0), step
        if step % sf.BN_EVERY == 0:
            x = optax.contrib.schedule_free_eval_params(opt[0], y)
            _, expected = workload.model_fn(
                x, batches[step], stats, spec.ForwardPassMode.TRAIN, jax.random.PRNGKey(step), True
            )  # fmt: skip
            _close(after[step], expected)


def test_a_missing_optax_function_is_a_reason_not_a_crash():
    if sf.UNAVAILABLE is None:  # The newest optax: the contestant runs.
        assert unavailable("schedule_free_adamw") is None
        assert load_submission("schedule_free_adamw") is not None
        return
    # AlgoPerf 0.6's pins (optax 0.2.2): the reason names the version and what is missing.
    assert optax.__version__ in sf.UNAVAILABLE and "schedule_free_adamw" in sf.UNAVAILABLE
    assert unavailable("schedule_free_adamw") == sf.UNAVAILABLE
    workload, params, model_state, _ = _setup()
    with pytest.raises(RuntimeError, match="schedule_free_adamw"):
        sf.init_optimizer_state(workload, params, model_state, None, None)


def test_the_score_leaves_an_unavailable_contestant_out_saying_why():
    from scripts.experiments.score import runnable

    kept, skipped = runnable(["baseline", "schedule-free", "default"])
    if sf.UNAVAILABLE is None:
        assert (kept, skipped) == (["baseline", "schedule-free", "default"], {})
    else:
        assert kept == ["baseline", "default"]
        assert skipped == {"schedule-free": sf.UNAVAILABLE}
