"""AlgoPerf self-tuning submission: AlgoPerf's NAdamW cycle, then soft resets and early switching.

AlgoPerf's entry points (`get_batch_size`, `init_optimizer_state`, `update_params`,
`prepare_for_eval`, `data_selection`), wiring only: AlgoPerf's types in, ours out. The
schema (`hyperparameters`, as `schema`) resolves the configuration; the controller
(`controller`, host numbers only) decides when a cycle ends and with which tau; the
compiled steps (`steps`: the NAdamW/AdamW step and the `ResetStep`) do the device work;
docs/METHOD.md has the formulas.

State. `optimizer_state` is `(SubmissionState, Runtime)`. The runner checkpoints only the
first half and rebuilds the second with a fresh `init_optimizer_state`, so everything a
run's future depends on lives in `SubmissionState`: `opt_state` (the optax state, with the
cyclic schedule's window and step inside as data: no recompilation when a cycle changes)
and `controller` (host numbers: no decision reads the device). `Runtime` holds what can be
rebuilt from (workload, hyperparameters): the configuration, the controller's settings,
the optax transformation and the compiled steps.
"""

import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

PACKAGE = "cyclic_soft_reset"  # The installed name (pyproject.toml).


def _register_checkout(module: ModuleType) -> None:
    """The folder holding `module` (this file) as the package PACKAGE, and `module` as
    PACKAGE.submission, in sys.modules; ImportError if either already comes from elsewhere
    (a second copy would bring a second SubmissionState class)."""
    folder = os.path.dirname(os.path.realpath(module.__file__))
    package = sys.modules.get(PACKAGE)
    if package is None:
        spec = importlib.machinery.ModuleSpec(PACKAGE, None, is_package=True)
        spec.submodule_search_locations = [folder]
        package = sys.modules[PACKAGE] = importlib.util.module_from_spec(spec)
    elif folder not in map(os.path.realpath, getattr(package, "__path__", ())):
        raise ImportError(
            f"{module.__file__} is loaded by its path, but {PACKAGE} is already imported from "
            f"{list(getattr(package, '__path__', []))}: load that folder's submission.py, or "
            f"install this folder (pip install -e {folder}) and import {PACKAGE}.submission."
        )
    if sys.modules.setdefault(f"{PACKAGE}.submission", module) is not module:
        raise ImportError(
            f"{module.__file__} is loaded by its path, but this process already imported it "
            f"as {PACKAGE}.submission: use that module."
        )
    package.submission = module


# AlgoPerf's runner imports this file by its path (--submission_path=submission.py: the
# top-level module `submission`, no package). Then (PEP 366) the checkout becomes the
# package cyclic_soft_reset, and __package__ (with __spec__, which Python 3.12+ checks)
# names it for the relative imports below. Installed or packaged, __package__ is set.
if not __package__:
    _register_checkout(sys.modules[__name__])
    __spec__ = importlib.util.spec_from_file_location(f"{PACKAGE}.submission", __file__)
    __package__ = PACKAGE

from . import algoperf_compat as compat
from . import controller as control
from . import hyperparameters as schema
from . import records, reset, schedules, steps


def get_batch_size(workload_name: str) -> int:
    """The global batch size for an AlgoPerf workload name (base or variant)."""
    return compat.batch_size(workload_name)


class SubmissionState(NamedTuple):
    """optimizer_state[0]: all that a checkpoint must hold.

    start: the params and model state a rollback of the current cycle restores (a
    `reset.TrainState` without optimizer state): where the cycle started, or with
    `rollback_to = "best"` its best evaluated state; also failure rule (b)'s reference. On
    the device, or in host memory with `snapshot_on_host`.
    """

    opt_state: Any
    controller: control.Controller
    start: reset.TrainState


class Runtime(NamedTuple):
    """optimizer_state[1], rebuilt from (workload, hyperparameters) on every start: the
    compiled NAdamW/AdamW step and reset (`steps.ResetStep`, init-tracing fallback included)."""

    config: schema.Config
    settings: control.Settings
    strategy: reset.ResetStrategy
    tx: optax.GradientTransformation
    replicated: NamedSharding
    train_step: Any
    reset_step: steps.ResetStep
    num_devices: int


def _build_runtime(workload, config: schema.Config, plan: schedules.CyclePlan) -> Runtime:
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("batch"))
    tx = schema.make_optimizer(config, plan)
    strategy = schema.reset_strategy(config)
    runtime_seconds = getattr(workload, "max_allowed_runtime_sec", None)
    budget = schema.time_budget(config, runtime_seconds, workload.step_hint)
    target = float(workload.validation_target_value)
    direction = compat.metric_direction(workload)
    settings = schema.controller_settings(config, target, direction, budget)
    train_step = steps.compile_train_step(workload, tx, config, replicated, batch_sharding)
    reset_step = steps.ResetStep(workload, config, tx, strategy, replicated, batch_sharding)
    return Runtime(config, settings, strategy, tx, replicated, train_step, reset_step, mesh.size)


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
        "%s, %d planned cycle(s): boundaries %s, peaks %s; %s resets; after the plan, %s",
        config.optimizer,
        schedules.num_cycles(plan),
        plan.boundaries.tolist(),
        plan.peak_learning_rates.tolist(),
        config.reset_strategy,
        "training ends" if config.stop_when_plan_ends else "cycles until the target or budget",
    )
    start = steps.snapshot(model_params, model_state, runtime.config, runtime.replicated)
    norm = float(reset.global_norm(model_params))  # Failure rule (b)'s first reference.
    return SubmissionState(opt_state, control.start(plan, key, norm), start), runtime


def _reset(workload, runtime, state, params, model_state, action, batch, rng):
    """The device work of a reset the controller decided: the strategy applied to the
    current state, the kept state (the cycle's start, or its best) and a fresh
    initialisation keyed by (seed, cycle)."""
    current = reset.TrainState(params, model_state, state.opt_state)
    controller = state.controller
    new, start, check, norm = runtime.reset_step(
        current, state.start, action, controller, batch, rng
    )
    check, norm = jax.device_get((check, norm))  # One small read, at resets only.
    rolled_back = runtime.strategy.rolls_back(bool(check.failed))
    record = records.reset_record(action, check, rolled_back, controller.previous_start_metric)
    name = runtime.strategy.name
    logging.info("%s, strategy %s, %s", control.describe(action), name, record.describe())
    if workload.metrics_logger is not None:
        workload.metrics_logger.append_scalar_metrics(record.to_metrics(), action.step)
    outcome = (rolled_back, record.failed, float(steps.lowering(check, runtime.config)), norm)
    controller = control.after_reset(controller, *outcome, runtime.settings.norm_reference)
    if start is None:
        start = steps.snapshot(new.params, new.model_state, runtime.config, runtime.replicated)
    state = state._replace(opt_state=new.opt_state, controller=controller, start=start)
    return state, new.params, new.model_state


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
    norm = steps.norm_to_keep(current_param_container, evaluations, runtime.settings)
    controller, decision = control.decide(
        controller, evaluations, global_step, runtime.settings, seconds, norm
    )
    if decision.switch is not None:
        logging.info("early switch at step %d (%s), loss %.6g", *decision.switch)
    if decision.refit is not None:
        refit = records.RefitRecord.of(decision.refit, runtime.settings.budget)
        logging.info("%s", refit.describe())
        if workload.metrics_logger is not None:
            workload.metrics_logger.append_scalar_metrics(refit.to_metrics(), refit.step)
        if decision.refit.window is not None:  # Its decay now ends inside the budget.
            window = (decision.refit.window, global_step, runtime.replicated)
            state = state._replace(opt_state=steps.move_window(state.opt_state, *window))
    if decision.stop is not None:
        raise compat.spec.TrainingCompleteError(decision.stop)
    params = current_param_container
    if not steps.is_placed(params, runtime.replicated):  # The first call after a start/restore.
        params, model_state = jax.device_put((params, model_state), runtime.replicated)
    state = state._replace(controller=controller)
    if decision.keep and runtime.strategy.rolls_back(True):  # Only a rollback reads it:
        state = state._replace(
            start=steps.snapshot(params, model_state, runtime.config, runtime.replicated)
        )  # the best state.
    for action in decision.resets:
        state, params, model_state = _reset(
            workload, runtime, state, params, model_state, action, batch, rng
        )
    opt_state, params, model_state, loss, grad_norm, lr = runtime.train_step(
        state.opt_state, params, model_state, batch, rng
    )
    if runtime.config.compile_reset_ahead:
        # After the step's own compilation; the arguments' shapes are those of a reset's.
        current = reset.TrainState(params, model_state, opt_state)
        controller = state.controller
        runtime.reset_step.compile_ahead(
            current, state.start, controller.plan, controller.seed, batch, rng
        )
    if global_step % 100 == 0 and workload.metrics_logger is not None:
        values = {"loss": loss, "grad_norm": grad_norm, "learning_rate": lr}
        values = {name: float(x) for name, x in values.items()} | {"cycle": state.controller.cycle}
        workload.metrics_logger.append_scalar_metrics(values, global_step)
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
    return records.plan_summary(control.as_host(optimizer_state[0].controller))


def learning_rates(optimizer_state, at_steps) -> np.ndarray:
    """The current plan's learning rate at each of `at_steps` (for plots and tools)."""
    plan = control.as_host(optimizer_state[0].controller).plan
    return np.asarray(schedules.learning_rate(np.asarray(at_steps), plan))
