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
  * `opt_state`: the optax AdamW/NAdamW state (device, replicated), with the cyclic
    learning-rate schedule's state inside (the current cycle's window and the step, as
    data: no recompilation when a cycle changes or a boundary moves);
  * `controller`: host-side numbers (`schedules.controller`), so that every decision is
    made on the host without reading anything back from the device.
`Runtime` holds only what can be rebuilt from (workload, hyperparameters): the resolved
configuration, the controller's settings, the optax transformation and the compiled
functions.
"""

import functools
import time
from concurrent import futures
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

if __package__:  # Packaged: imported as submissions.self_tuning.<name>.submission.
    from . import algoperf_compat as compat
    from . import hyperparameters as schema
    from . import reset, schedules
    from .schedules import controller as control
else:  # Run from the project root: --submission_path=submission.py.
    import algoperf_compat as compat
    import hyperparameters as schema
    import reset
    import schedules
    from schedules import controller as control


# sqrt(sum of squares) of a pytree: optax.tree.norm, optax.global_norm before optax 0.2.5.
_global_norm = getattr(getattr(optax, "tree", None), "norm", None) or optax.global_norm


def get_batch_size(workload_name: str) -> int:
    """The global batch size for an AlgoPerf workload name (base or variant)."""
    return compat.batch_size(workload_name)


class SubmissionState(NamedTuple):
    """optimizer_state[0]: all that a checkpoint must hold.

    start: the params and model state the current cycle started from (a
    `reset.TrainState` without optimizer state), for failure rule (b) and a rollback; on
    the device, or in host memory with `snapshot_on_host`.
    """

    opt_state: Any
    controller: control.Controller
    start: reset.TrainState


class _InitTrace:
    """Per Runtime: whether the workload's `init_model_fn` traced inside the compiled reset
    (None until the first reset tries). A cache, rebuilt by every init_optimizer_state."""

    def __init__(self):
        self.traceable = None


class _ResetAhead:
    """Per Runtime: the reset compiled ahead of its first use, in a background thread
    during the first cycle (`compile_reset_ahead`). A reset traces the workload's init
    and the strategy over every leaf, and XLA compiles that as long as the training step
    or longer; compiled while the first cycle trains, the first reset waits only for what
    is left of it. A cache, rebuilt by every init_optimizer_state.

    The compilation is specialised to the shapes, dtypes and weak types of the arguments
    it was started with (`_signature`); a reset with other arguments runs the jitted
    function instead, which compiles for them.
    """

    def __init__(self):
        self.signature = None
        self.future = None
        self.failed = False
        self.seconds = None  # Tracing, lowering and compiling, in the background thread.

    def start(self, jitted, args) -> None:
        """Lowers and compiles `jitted` for the abstract `args` in a background thread."""
        self.signature = _signature(args)
        abstract_args = jax.tree.unflatten(*self.signature)

        def compile_reset():
            began = time.perf_counter()
            compiled = jitted.lower(*abstract_args).compile()
            self.seconds = time.perf_counter() - began
            logging.info("the reset compiled ahead, in %.1f s", self.seconds)
            return compiled

        executor = futures.ThreadPoolExecutor(1, thread_name_prefix="reset-compile")
        self.future = executor.submit(compile_reset)
        executor.shutdown(wait=False)  # The thread ends with the compilation.

    def compiled_for(self, args):
        """The compiled reset, waiting for it, if it was compiled for `args`' signature;
        None if none was started, the signature differs or the compilation failed for a
        reason other than an untraceable init (logged; the jitted call then tells)."""
        if self.future is None or self.failed:
            return None
        try:
            compiled = self.future.result()
        except _UntraceableInit:
            raise
        except Exception as error:  # noqa: BLE001 -- any failure: the plain call decides.
            self.failed = True
            logging.warning("the reset compiled ahead failed (%s); compiling it now", error)
            return None
        return compiled if _signature(args) == self.signature else None


def _signature(tree):
    """(tree structure, abstract leaves): the shapes, dtypes and weak types of a tree of
    arrays, what a compiled function is specialised to."""

    def abstract(x):
        weak = bool(getattr(getattr(x, "aval", None), "weak_type", False))
        dtype = x.dtype if hasattr(x, "dtype") else np.result_type(x)
        return jax.ShapeDtypeStruct(np.shape(x), dtype, weak_type=weak)

    leaves, structure = jax.tree.flatten(tree)
    return structure, tuple(abstract(x) for x in leaves)


class _UntraceableInit(Exception):
    """The workload's init_model_fn cannot be traced under jit (it reads a traced value)."""


class Runtime(NamedTuple):
    """optimizer_state[1]: rebuilt from (workload, hyperparameters) on every start.

    reset_step: the compiled reset, the fresh initialisation traced inside it;
    reset_step_given: the same, the fresh (params, model state) given by the caller, for
    a workload whose init cannot be traced (`init_trace` remembers which one applies).
    """

    config: schema.Config
    settings: control.Settings
    strategy: reset.ResetStrategy
    tx: optax.GradientTransformation
    replicated: NamedSharding
    train_step: Any
    reset_step: Any
    num_devices: int
    reset_step_given: Any
    init_trace: _InitTrace
    ahead: _ResetAhead


def _train_step(workload, tx, config, opt_state, params, model_state, batch, rng):
    """One optimizer step at the schedule's learning rate; returns diagnostics too."""
    loss_fn = functools.partial(
        compat.mean_loss,
        workload,
        model_state=model_state,
        batch=batch,
        rng=rng,
        dropout_rate=config.dropout_rate,
        label_smoothing=config.label_smoothing,
    )
    (loss, new_model_state), grad = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grad, opt_state, params)
    params = optax.apply_updates(params, updates)
    lr = opt_state.hyperparams["learning_rate"]
    return opt_state, params, new_model_state, loss, _global_norm(grad), lr


def _reset_step(
    strategy, config, tx, workload, make_fresh, current, start, cycle, batch, rng, source
):
    """The device side of a reset: the finished cycle checked by the failure rules, the
    strategy applied, statistics re-estimated (if configured), and the schedule entering
    the new cycle at `cycle.step`.

    The fresh initialisation `make_fresh(source) -> (params, model state)` runs only when
    the strategy reads it (`strategy.uses_init`, a `lax.cond`: not for `none`, tau = 0 or
    a rollback); the fresh optimizer state is `tx.init`, which reads only shapes. Returns
    the new state, a copy of its params and model state for the next cycle's start (None
    with `snapshot_on_host`) and the `reset.FailureCheck`.
    """
    check = reset.check_cycle(
        current,
        start.params,
        cycle.no_improvement,
        config.failure_kappa,
        schema.failure_rules(config),
        confirm=cycle.switched if config.norm_rule == "confirmed" else True,
    )
    outcome = reset.CycleOutcome(cycle.tau, check.failed, cycle.switched, start)
    fresh = current
    if strategy.needs_fresh:
        params, model_state = jax.lax.cond(
            strategy.uses_init(outcome, check.finite),
            lambda s: _like(make_fresh(s), (current.params, current.model_state)),
            lambda s: (current.params, current.model_state),  # A stand-in, never read.
            source,
        )
        fresh = reset.TrainState(params, model_state, tx.init(params))
    new = strategy.apply(current, fresh, outcome)
    if config.reset_model_state == "reestimate" and strategy.name == "soft":
        estimated = reset.reestimate_ema(
            lambda s: compat.train_forward(
                workload, new.params, s, batch, rng, config.dropout_rate
            )[1],
            new.model_state,
        )
        kept = check.failed & config.rollback_failed_cycles  # Rolled back: its own statistics.
        new = new._replace(model_state=reset.tree_select(kept, new.model_state, estimated))
    window = cycle.window
    if config.failed_cycle_lr_factor != 1.0:  # The host lowers the plan alike (after_reset).
        peaks = window.peak_learning_rates
        lowered = jnp.where(check.failed, peaks * config.failed_cycle_lr_factor, peaks)
        window = window._replace(peak_learning_rates=lowered.astype(peaks.dtype))
    opt_state = schedules.enter_cycle(new.opt_state, window, cycle.step)
    new = new._replace(opt_state=opt_state)
    # A separate buffer (jit never aliases two outputs): the train step donates `new`.
    start = None if config.snapshot_on_host else reset.TrainState(new.params, new.model_state, None)
    return new, start, check


class _Cycle(NamedTuple):
    """The numbers of one reset, traced by the compiled reset step."""

    tau: Any
    switched: Any
    no_improvement: Any
    window: schedules.CyclePlan
    step: Any


def _cycle(plan, index, tau=0.0, switched=False, no_improvement=False, step=0) -> _Cycle:
    """The traced numbers of a reset into cycle `index`, in the dtypes it compiles for."""
    return _Cycle(
        np.float32(tau),
        np.bool_(switched),
        np.bool_(no_improvement),
        schedules.cycle_window(plan, index),
        np.int32(step),
    )


def _source(seed, index):
    """The key source of cycle `index`'s fresh initialisation: fold_in(seed, index)."""
    return (np.asarray(seed), np.uint32(index))


def _like(tree, reference):
    """`tree` cast leafwise to `reference`'s dtypes (a `lax.cond` needs equal types)."""
    return jax.tree.map(lambda x, r: jnp.asarray(x, r.dtype), tree, reference)


def _traced_init(workload, seed_and_cycle):
    """The workload's init under trace, keyed by fold_in(seed, cycle); `_UntraceableInit`
    when it reads a traced value (a `float()`, `np.asarray`, a Python `if`)."""
    seed, cycle = seed_and_cycle
    try:
        return workload.init_model_fn(jax.random.fold_in(seed, cycle))
    except jax.errors.JAXTypeError as error:
        raise _UntraceableInit(str(error)) from error


def _given_init(fresh):
    """The fallback's fresh (params, model state), computed by a plain call outside."""
    return fresh


def _build_runtime(workload, config: schema.Config, plan: schedules.CyclePlan) -> Runtime:
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("batch"))
    tx = schema.make_optimizer(config, plan)
    train_step = jax.jit(
        functools.partial(_train_step, workload, tx, config),
        in_shardings=(replicated, replicated, replicated, batch_sharding, replicated),
        out_shardings=replicated,
        donate_argnums=(0, 1, 2),
    )
    strategy = schema.reset_strategy(config)

    def compiled_reset(make_fresh):
        # The current state is replaced, and so is the start when it lives on the device.
        return jax.jit(
            functools.partial(_reset_step, strategy, config, tx, workload, make_fresh),
            in_shardings=(replicated,) * 3 + (batch_sharding,) + (replicated,) * 2,
            out_shardings=replicated,
            donate_argnums=(0,) if config.snapshot_on_host else (0, 1),
        )

    budget = schema.time_budget(
        config, getattr(workload, "max_allowed_runtime_sec", None), workload.step_hint
    )
    settings = schema.controller_settings(
        config,
        float(workload.validation_target_value),
        compat.metric_direction(workload),
        budget,
    )
    return Runtime(
        config,
        settings,
        strategy,
        tx,
        replicated,
        train_step,
        compiled_reset(functools.partial(_traced_init, workload)),
        mesh.size,
        compiled_reset(_given_init),
        _InitTrace(),
        _ResetAhead(),
    )


# --------------------------------------------------------------------------------------
# AlgoPerf entry points
# --------------------------------------------------------------------------------------


def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    """Validates everything and returns (SubmissionState, Runtime).

    Invalid hyperparameters, plans, an optimizer without moments to reset, or a workload
    whose metric direction cannot be told fail here, before the first step.
    """
    config = schema.resolve(hyperparameters)
    plan = schema.make_plan(config, workload.step_hint)
    runtime = _build_runtime(workload, config, plan)
    opt_state = jax.device_put(runtime.tx.init(model_params), runtime.replicated)
    reset.check_moments(opt_state)
    key = jax.random.key_data(rng) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng
    logging.info(
        "cyclic AdamW: %d cycles, boundaries %s, peaks %s, reset %s",
        schedules.num_cycles(plan),
        plan.boundaries.tolist(),
        plan.peak_learning_rates.tolist(),
        config.reset_strategy,
    )
    start = _snapshot(reset.TrainState(model_params, model_state, None), config, runtime)
    return SubmissionState(opt_state, control.start(plan, key), start), runtime


def _snapshot(state: reset.TrainState, config, runtime) -> reset.TrainState:
    """A copy of params and model state that later steps cannot donate away: in host
    memory (numpy) with `snapshot_on_host`, else on the device."""
    if config.snapshot_on_host:
        return jax.device_get(state)
    return jax.tree.map(jnp.copy, jax.device_put(state, runtime.replicated))


def _reset(workload, runtime, state, params, model_state, action, batch, rng):
    """The device work of a reset the controller decided: the strategy applied to the
    current state, the cycle's start and a fresh initialisation keyed by (seed, cycle)."""
    config = runtime.config
    current = reset.TrainState(params, model_state, state.opt_state)
    cycle = _cycle(
        state.controller.plan,
        action.cycle,
        action.tau,
        action.early,
        action.no_improvement,
        action.step,
    )
    new, start, check = _run_reset_step(
        workload, runtime, current, state.start, cycle, batch, rng, state.controller.seed, action
    )
    failed, finite, ratio, rule = jax.device_get(check)  # One small read, at resets only.
    why = reset.FAILURE_RULES[rule] if failed else ""
    rolled_back = bool(failed) and runtime.strategy.name == "soft"
    rolled_back &= config.rollback_failed_cycles
    logging.info(
        "%s, strategy %s, params norm x%.3g%s%s%s",
        control.describe(action),
        runtime.strategy.name,
        ratio,
        f", failed ({why})" if failed else "",
        ", rolled back" if rolled_back else "",
        "" if finite else ", non-finite state",
    )
    if workload.metrics_logger is not None:
        workload.metrics_logger.append_scalar_metrics(
            {
                "reset/cycle": action.cycle,
                "reset/tau": action.tau,
                "reset/metric": action.metric,
                "reset/early_switch": float(action.early),
                "reset/non_finite": float(not finite),
                "reset/failed": float(failed),
                "reset/failure_rule": float(rule),
                "reset/param_norm_ratio": float(ratio),
                "reset/rolled_back": float(rolled_back),
            },
            action.step,
        )
    controller = control.after_reset(
        state.controller, rolled_back, bool(failed), config.failed_cycle_lr_factor
    )
    if config.snapshot_on_host:
        start = jax.device_get(reset.TrainState(new.params, new.model_state, None))
    state = state._replace(opt_state=new.opt_state, controller=controller, start=start)
    return state, new.params, new.model_state


def _run_reset_step(workload, runtime, current, start, cycle, batch, rng, seed, action):
    """`runtime.reset_step`, the fresh initialisation traced inside it; for a workload
    whose init cannot be traced, `runtime.reset_step_given` with a plain call's result
    (decided at the first reset, logged once)."""
    seed_and_cycle = _source(seed, action.cycle)
    if runtime.init_trace.traceable is not False:
        args = (current, start, cycle, batch, rng, seed_and_cycle)
        try:
            compiled = runtime.ahead.compiled_for(args)
            out = (runtime.reset_step if compiled is None else compiled)(*args)
            runtime.init_trace.traceable = True
            return out
        except _UntraceableInit as error:  # Raised while tracing: nothing was donated yet.
            runtime.init_trace.traceable = False
            logging.warning(
                "the workload's init_model_fn cannot be traced under jit (%s); every reset "
                "calls it outside the compiled reset instead",
                str(error).splitlines()[0],
            )
    fresh = None  # `none` reads nothing fresh.
    if runtime.strategy.needs_fresh:
        fresh = workload.init_model_fn(jax.random.fold_in(*seed_and_cycle))
    return runtime.reset_step_given(current, start, cycle, batch, rng, fresh)


def _log_refit(workload, refit: control.Refit, budget) -> None:
    """The plan re-fitted to the time budget: to the log and the metrics logger."""
    logging.info(
        "plan re-fitted at step %d (%.4g s per step, %.0f%% of the budget spent): ends at step %d",
        refit.step,
        refit.seconds_per_step,
        100 * refit.seconds / budget.seconds,
        refit.end,
    )
    if workload.metrics_logger is not None:
        workload.metrics_logger.append_scalar_metrics(
            {
                "plan/seconds_per_step": refit.seconds_per_step,
                "plan/end": refit.end,
                "plan/budget_spent": refit.seconds / budget.seconds,
            },
            refit.step,
        )


def _is_placed(tree, sharding) -> bool:
    """Whether the tree's first leaf already has `sharding` (a cheap host-side check).

    Params fresh from `init_model_fn` or a checkpoint are not: placing them once keeps
    the compiled step's input types identical on every call (one compilation).
    """
    leaves = jax.tree.leaves(tree)
    return not leaves or getattr(leaves[0], "sharding", None) == sharding


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
    end the cycle now; the plan is re-fitted to the time budget from the submission
    seconds in `train_state`) and decides whether `global_step` starts the next cycle, or
    ends the run when the plan is used up and `stop_when_plan_ends`. Device side: each
    reset, then one compiled AdamW step at the plan's learning rate.
    """
    del current_params_types, hyperparameters, loss_type
    state, runtime = optimizer_state
    compat.check_batch(batch, runtime.num_devices)
    controller = control.as_host(state.controller)
    evaluations = None  # None: nothing new to read (the cheap check of every step).
    if len(eval_results) != controller.evals_seen:
        pairs = compat.read_evaluations(eval_results, workload.target_metric_name)
        evaluations = [control.Evaluation(*e) for e in pairs]
    seconds = compat.submission_seconds(train_state)
    controller, decision = control.decide(
        controller, evaluations, global_step, runtime.settings, seconds
    )
    if decision.switch is not None:
        logging.info("early switch at step %d (%s), loss %.6g", *decision.switch)
    if decision.refit is not None:
        _log_refit(workload, decision.refit, runtime.settings.budget)
    if decision.stop is not None:
        raise compat.spec.TrainingCompleteError(decision.stop)
    params = current_param_container
    if not _is_placed(params, runtime.replicated):  # The first call after a start/restore.
        params, model_state = jax.device_put((params, model_state), runtime.replicated)
    state = state._replace(controller=controller)
    for action in decision.resets:
        state, params, model_state = _reset(
            workload, runtime, state, params, model_state, action, batch, rng
        )
    opt_state, params, model_state, loss, grad_norm, lr = runtime.train_step(
        state.opt_state, params, model_state, batch, rng
    )
    if runtime.config.compile_reset_ahead and runtime.ahead.future is None:
        # After the step's own compilation; the arguments' shapes are those of a reset's.
        current = reset.TrainState(params, model_state, opt_state)
        plan, seed = state.controller.plan, state.controller.seed
        args = (current, state.start, _cycle(plan, 0), batch, rng, _source(seed, 0))
        runtime.ahead.start(runtime.reset_step, args)
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


def plan_summary(optimizer_state) -> dict:
    """The current plan in plain numbers, for plots and tools (AlgoPerf never calls it)."""
    return control.summary(control.as_host(optimizer_state[0].controller))


def learning_rates(optimizer_state, steps) -> np.ndarray:
    """The current plan's learning rate at each of `steps` (for plots and tools)."""
    plan = control.as_host(optimizer_state[0].controller).plan
    return np.asarray(schedules.learning_rate(np.asarray(steps), plan))
