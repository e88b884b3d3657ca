"""AlgoPerf self-tuning submission: cyclic AdamW with soft resets and early switching.

The entry points AlgoPerf's runner calls (`get_batch_size`, `init_optimizer_state`,
`update_params`, `prepare_for_eval`, `data_selection`) adapt AlgoPerf's types to ours and
wire the parts together: `hyperparameters` (the schema, imported as `schema`),
`schedules` (cycle plans, shapes and the controller that decides when a cycle ends),
`reset` (tau and the reset strategies) and `early_switching` (the detector).
docs/METHOD.md has the formulas.

State. `optimizer_state` is the pair `(SubmissionState, Runtime)`. The runner checkpoints
only the first half and rebuilds the second with a fresh `init_optimizer_state`, so
everything a run's future depends on lives in `SubmissionState`:
  * `opt_state`: the optax AdamW/NAdamW state (device, replicated);
  * `window`: the current cycle's plan as small fixed-shape arrays (device), from which
    the compiled step computes its learning rate: no recompilation when a cycle changes;
  * `controller`: host-side numbers (`schedules.controller`), so that every decision is
    made on the host without reading anything back from the device.
`Runtime` holds only what can be rebuilt from (workload, hyperparameters): the resolved
configuration, the controller's settings, the optax transformation and the compiled
functions.
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

if __package__:  # Packaged: imported as submissions.self_tuning.<name>.submission.
    from . import hyperparameters as schema
    from . import reset, schedules
    from .algoperf_compat import read_evaluations, spec
    from .schedules import controller as control
else:  # Run from the project root: --submission_path=submission.py.
    import hyperparameters as schema
    import reset
    import schedules
    from algoperf_compat import read_evaluations, spec
    from schedules import controller as control


def get_batch_size(workload_name: str) -> int:
    """The global batch size for an AlgoPerf workload name (base or variant)."""
    if workload_name not in schema.BATCH_SIZES:
        raise ValueError(
            f"Unsupported workload name: {workload_name!r}; known: {sorted(schema.BATCH_SIZES)}."
        )
    return schema.BATCH_SIZES[workload_name]


def adamw(
    learning_rate: float,
    b1: float,
    b2: float,
    eps: float,
    weight_decay: float,
    grad_clip: float | None = None,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    """AdamW (decoupled weight decay), or NAdamW with `nesterov`, from optax parts.

    u = -eta (m_hat / (sqrt(v_hat) + eps) + lambda theta), gradients first clipped to
    global norm `grad_clip` when given.
    """
    parts = [] if grad_clip is None else [optax.clip_by_global_norm(grad_clip)]
    parts += [
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps, nesterov=nesterov),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    ]
    return optax.chain(*parts)


def make_optimizer(config: schema.Config) -> optax.GradientTransformation:
    """The optimizer with its learning rate injected (set by the train step)."""
    return optax.inject_hyperparams(adamw, static_args=("grad_clip", "nesterov"))(
        learning_rate=0.0,
        b1=1.0 - config.one_minus_beta1,
        b2=config.beta2,
        eps=1e-8,
        weight_decay=config.weight_decay,
        grad_clip=config.grad_clip,
        nesterov=config.optimizer == "nadamw",
    )


def metric_direction(workload) -> bool:
    """True when the target metric is higher-is-better, asked of the workload itself.

    Probes `has_reached_validation_target` one unit of the target's scale above and
    below the target; exactly one of them must count as reached.
    """
    key = f"validation/{workload.target_metric_name}"
    target = float(workload.validation_target_value)
    delta = max(abs(target), 1.0)

    def reached(value):
        probe = {key: value, "validation/loss": value}
        return bool(workload.has_reached_validation_target(probe))

    above, below = reached(target + delta), reached(target - delta)
    if above == below:
        raise ValueError(
            f"cannot tell the direction of {key!r}: has_reached_validation_target gave "
            f"{above} both above and below the target {target}."
        )
    return above


class SubmissionState(NamedTuple):
    """optimizer_state[0]: all that a checkpoint must hold."""

    opt_state: Any
    window: schedules.CyclePlan
    controller: control.Controller


class Runtime(NamedTuple):
    """optimizer_state[1]: rebuilt from (workload, hyperparameters) on every start."""

    config: schema.Config
    settings: control.Settings
    tx: optax.GradientTransformation
    replicated: NamedSharding
    train_step: Any
    reset_step: Any
    num_devices: int

    @property
    def higher_is_better(self) -> bool:
        return self.settings.higher_is_better


def mean_loss(workload, params, model_state, batch, rng, dropout_rate, label_smoothing=0.0):
    """The batch's mean training loss and the new model state (a forward pass in TRAIN mode).

    Loss = summed per-example loss / number of valid examples, as the workload defines it.
    """
    logits, new_model_state = workload.model_fn(
        params,
        batch,
        model_state,
        spec.ForwardPassMode.TRAIN,
        rng,
        update_batch_norm=True,
        dropout_rate=dropout_rate,
    )
    losses = workload.loss_fn(
        label_batch=batch["targets"],
        logits_batch=logits,
        mask_batch=batch.get("weights"),
        label_smoothing=label_smoothing,
    )
    return losses["summed"] / losses["n_valid_examples"], new_model_state


def _train_step(workload, tx, config, opt_state, window, params, model_state, batch, rng, step):
    """One AdamW step at the plan's learning rate for `step`; returns diagnostics too."""
    loss_fn = functools.partial(
        mean_loss,
        workload,
        model_state=model_state,
        batch=batch,
        rng=rng,
        dropout_rate=config.dropout_rate,
        label_smoothing=config.label_smoothing,
    )
    (loss, new_model_state), grad = jax.value_and_grad(loss_fn, has_aux=True)(params)
    lr = schedules.learning_rate(step, window)
    hyperparams = dict(opt_state.hyperparams, learning_rate=lr)
    opt_state = opt_state._replace(hyperparams=hyperparams)
    updates, opt_state = tx.update(grad, opt_state, params)
    params = optax.apply_updates(params, updates)
    grad_norm = jnp.sqrt(sum(jnp.vdot(g, g) for g in jax.tree.leaves(grad)))
    return opt_state, params, new_model_state, loss, grad_norm, lr


def _reset_step(strategy: reset.ResetStrategy, current, fresh, tau, alpha, failed):
    """The strategy's result and whether `current` was finite (for the log)."""
    finite = reset.is_finite_state(current)
    return strategy.apply(current, fresh, tau, alpha, failed), finite


def _build_runtime(workload, config: schema.Config) -> Runtime:
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("batch"))
    tx = make_optimizer(config)
    train_step = jax.jit(
        functools.partial(_train_step, workload, tx, config),
        in_shardings=(replicated, replicated, replicated, replicated)
        + (batch_sharding, replicated, replicated),
        out_shardings=replicated,
        donate_argnums=(0, 2, 3),
    )
    strategy = reset.get_strategy(config.reset_strategy)
    reset_step = jax.jit(
        functools.partial(_reset_step, strategy),
        in_shardings=replicated,
        out_shardings=replicated,
        donate_argnums=(0,) if strategy.needs_fresh else (),
    )
    settings = control.Settings(
        target=float(workload.validation_target_value),
        higher_is_better=metric_direction(workload),
        detector=schema.detector_config(config),
        early_switching=config.early_switching,
        stop_when_plan_ends=config.stop_when_plan_ends,
        tau_metric=config.tau_metric,
    )
    return Runtime(config, settings, tx, replicated, train_step, reset_step, mesh.size)


# --------------------------------------------------------------------------------------
# AlgoPerf entry points
# --------------------------------------------------------------------------------------


def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    """Validates everything and returns (SubmissionState, Runtime).

    Invalid hyperparameters, plans, or a workload whose metric direction cannot be
    told fail here, before the first step.
    """
    del model_state
    config = schema.resolve(hyperparameters)
    runtime = _build_runtime(workload, config)
    plan = schema.make_plan(config, workload.step_hint)
    opt_state = jax.device_put(runtime.tx.init(model_params), runtime.replicated)
    if not reset.moment_states(opt_state):
        raise ValueError("the optimizer state holds no Adam moments (mu, nu) to reset.")
    key = jax.random.key_data(rng) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng
    window = jax.device_put(schedules.cycle_window(plan, 0), runtime.replicated)
    logging.info(
        "cyclic AdamW: %d cycles, boundaries %s, peaks %s, reset %s",
        schedules.num_cycles(plan),
        plan.boundaries.tolist(),
        plan.peak_learning_rates.tolist(),
        config.reset_strategy,
    )
    return SubmissionState(opt_state, window, control.start(plan, key)), runtime


def _reset(workload, runtime, state, params, model_state, action: control.Reset):
    """The device work of a reset the controller decided: the strategy applied to the
    current state and a fresh initialisation keyed by (seed, cycle); the new window."""
    config = runtime.config
    # METHOD.md section 4: a failed cycle hands on no momentum (ablation switch).
    failed = action.early and config.failed_cycle_fresh_moments
    current = reset.TrainState(params, model_state, state.opt_state)
    strategy = reset.get_strategy(config.reset_strategy)
    fresh = current  # `none` ignores it: no new initialisation, nothing donated.
    if strategy.needs_fresh:
        key = jax.random.fold_in(jnp.asarray(state.controller.seed), action.cycle)
        fresh_params, fresh_model_state = workload.init_model_fn(key)
        fresh = reset.TrainState(fresh_params, fresh_model_state, runtime.tx.init(fresh_params))
    (params, model_state, opt_state), finite = runtime.reset_step(
        current, fresh, np.float32(action.tau), np.float32(config.reset_alpha), np.bool_(failed)
    )
    finite = bool(finite)
    window = jax.device_put(
        schedules.cycle_window(state.controller.plan, action.cycle), runtime.replicated
    )
    logging.info(
        "reset at step %d: cycle %d starts, %s, tau %.4f (metric %s), until step %d, strategy %s%s",
        action.step,
        action.cycle,
        "early switch" if action.early else "planned",
        action.tau,
        action.metric,
        action.end,
        config.reset_strategy,
        "" if finite else " (non-finite state: full reset)",
    )
    if workload.metrics_logger is not None:
        workload.metrics_logger.append_scalar_metrics(
            {
                "reset/cycle": action.cycle,
                "reset/tau": action.tau,
                "reset/metric": action.metric,
                "reset/early_switch": float(action.early),
                "reset/non_finite": float(not finite),
            },
            action.step,
        )
    return state._replace(opt_state=opt_state, window=window), params, model_state


def _is_placed(tree, sharding) -> bool:
    """Whether the tree's first leaf already has `sharding` (a cheap host-side check).

    Params fresh from `init_model_fn` or a checkpoint are not: placing them once keeps
    the compiled step's input types identical on every call (one compilation).
    """
    leaves = jax.tree.leaves(tree)
    return not leaves or getattr(leaves[0], "sharding", None) == sharding


def _check_batch(batch, num_devices: int) -> None:
    for x in jax.tree.leaves(batch):
        if np.ndim(x) == 0 or np.shape(x)[0] % num_devices:
            raise ValueError(
                f"the batch's leading dimension {np.shape(x)[:1]} must be divisible by "
                f"the number of devices ({num_devices}): choose a global batch size "
                f"that is a multiple of {num_devices}."
            )


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
    """One training step, preceded by the resets the controller decides.

    Host side (no device read): the controller reads new evaluations (the detector may
    end the cycle now) and decides whether `global_step` starts the next cycle, or ends
    the run when the plan is used up. Device side: each reset, then one compiled AdamW
    step at the plan's learning rate.
    """
    del current_params_types, hyperparameters, loss_type, train_state
    state, runtime = optimizer_state
    _check_batch(batch, runtime.num_devices)
    controller = control.as_host(state.controller)
    evaluations = None  # None: nothing new to read (the cheap check of every step).
    if len(eval_results) != controller.evals_seen:
        pairs = read_evaluations(eval_results, workload.target_metric_name)
        evaluations = [control.Evaluation(*e) for e in pairs]
    controller, decision = control.decide(controller, evaluations, global_step, runtime.settings)
    if decision.stop is not None:
        raise spec.TrainingCompleteError(decision.stop)
    if not isinstance(state.window.boundaries, jax.Array):  # Restored from a checkpoint.
        state = state._replace(window=jax.device_put(state.window, runtime.replicated))
    params = current_param_container
    if not _is_placed(params, runtime.replicated):  # The first call after a start/restore.
        params, model_state = jax.device_put((params, model_state), runtime.replicated)
    state = state._replace(controller=controller)
    for action in decision.resets:
        state, params, model_state = _reset(workload, runtime, state, params, model_state, action)
    opt_state, params, model_state, loss, grad_norm, lr = runtime.train_step(
        state.opt_state,
        state.window,
        params,
        model_state,
        batch,
        rng,
        np.int32(global_step),
    )
    if global_step % 100 == 0 and workload.metrics_logger is not None:
        workload.metrics_logger.append_scalar_metrics(
            {
                "loss": float(loss),
                "grad_norm": float(grad_norm),
                "learning_rate": float(lr),
                "cycle": state.controller.cycle,
            },
            global_step,
        )
    return (state._replace(opt_state=opt_state), runtime), params, model_state


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
    """Nothing to prepare: the params are evaluated as they are."""
    del workload, current_params_types, hyperparameters, loss_type
    del eval_results, global_step, rng
    return optimizer_state, current_param_container, model_state


def data_selection(
    workload,
    input_queue,
    optimizer_state,
    current_param_container,
    model_state,
    hyperparameters,
    global_step,
    rng,
):
    """The next batch of the runner's shuffled input queue."""
    del workload, optimizer_state, current_param_container, model_state
    del hyperparameters, global_step, rng
    return next(input_queue)


# --------------------------------------------------------------------------------------
# Introspection for plots and tools (not called by AlgoPerf)
# --------------------------------------------------------------------------------------


def plan_summary(optimizer_state) -> dict:
    """The current plan in plain Python numbers."""
    state, runtime = optimizer_state
    controller = control.as_host(state.controller)
    plan = controller.plan
    return {
        "boundaries": [int(b) for b in plan.boundaries],
        "peak_learning_rates": [float(x) for x in plan.peak_learning_rates],
        "warmup_fractions": [float(x) for x in plan.warmup_fractions],
        "warmup_shape": runtime.config.warmup_shape,
        "decay_shape": runtime.config.decay_shape,
        "cycle": controller.cycle,
        "planned_total_steps": schedules.total_steps(plan),
    }


def learning_rates(optimizer_state, steps) -> np.ndarray:
    """The current plan's learning rate at each of `steps`."""
    plan = control.as_host(optimizer_state[0].controller).plan
    return np.asarray(schedules.learning_rate(np.asarray(steps), plan))
