"""A local stand-in for AlgoPerf's ``submission_runner.train_once``.

It drives a submission module exactly through the functions AlgoPerf calls
(``get_batch_size``, ``init_optimizer_state``, ``data_selection``, ``update_params``,
``prepare_for_eval``) with the runner's random-key derivation, timing and stopping
rules, and never reimplements any part of the submission. Differences, all
deliberate:

* time is read from a ``clock``: the wall clock (AlgoPerf's), or a ``SimulatedClock``
  (seconds per step, evaluation and reset, optionally noisy) that makes a run's timing
  deterministic and lets a laptop play slow or fast hardware; evaluations come every
  ``eval_period_time_sec`` seconds of that clock (AlgoPerf's rule) or, for studies
  that want a fixed rhythm, every N steps;
* training stops once the *validation* target is reached (AlgoPerf waits for the
  test target as well), unless ``stop_at_target=False``;
* the timed region ends with ``jax.block_until_ready`` on the new parameters, so the
  submission time counts the computation, not only its dispatch;
* checkpoints are saved only where asked (``checkpoint_path`` with
  ``checkpoint_every_steps``/``checkpoint_at_steps``), not after every evaluation; they
  hold what AlgoPerf's runner saves (``optimizer_state[0]``, never ``[1]``) plus the
  number of input batches drawn, and a run resumed from one (``resume_from``) in a
  fresh process continues bit for bit: the input queue is fast-forwarded past the
  batches already drawn and every step's keys depend only on (seed, step);
* ``hooks.after_step`` may stop the run (the local stand-in for a preemption);
* an embedded workload's global batch size comes from the workload registry
  (``scripts/local/workloads``), any other name's from the submission's
  ``get_batch_size``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
from collections.abc import Callable, Collection
from types import MappingProxyType
from typing import Any

import jax

from cyclic_soft_reset.algoperf_compat import spec
from scripts.local import workloads
from scripts.local.checkpoints import Checkpoint, CountingQueue, restore_checkpoint, save_checkpoint
from scripts.local.clocks import SimulatedClock, WallClock
from scripts.local.clocks import reference_clock as reference_clock  # For runner.reference_clock.

SELF_TUNING_BUDGET_FACTOR = 1.5


def _cycle(submission_module: Any, optimizer_state: Any) -> int:
    """The submission's current cycle, when it says (``plan_summary``); else 0."""
    summary = getattr(submission_module, "plan_summary", None)
    return int(summary(optimizer_state)["cycle"]) if summary is not None else 0


@dataclasses.dataclass
class MetricsRecorder:
    """In-memory metrics logger with AlgoPerf's ``append_scalar_metrics`` interface.

    ``records`` holds ``(global_step, metrics, is_eval)`` in arrival order: what the
    submission reports through ``workload.metrics_logger`` and the runner's evals.
    """

    records: list[tuple[int, dict[str, Any], bool]] = dataclasses.field(default_factory=list)

    def append_scalar_metrics(
        self,
        metrics: dict[str, Any],
        global_step: int,
        preemption_count: int | None = None,
        is_eval: bool = False,
    ) -> None:
        """Store a copy of ``metrics`` (with ``global_step``/``preemption_count``)."""
        row = {key: _to_python(value) for key, value in metrics.items()}
        row["global_step"] = int(global_step)
        if preemption_count is not None:
            row["preemption_count"] = int(preemption_count)
        self.records.append((int(global_step), row, bool(is_eval)))

    def finish(self) -> None:
        """Nothing to flush (AlgoPerf's logger closes its writers here)."""


@dataclasses.dataclass(frozen=True)
class RunnerHooks:
    """Untimed callbacks for progress display and logging; all optional.

    ``before_training(optimizer_state)`` runs once after ``init_optimizer_state`` (and
    the restore, if any); ``after_eval(global_step, eval_result, optimizer_state)`` after
    each evaluation; ``after_step(global_step, optimizer_state, params, model_state,
    eval_results)`` after every step (after its eval and checkpoint) and stops the run
    when it returns a true value (stop reason ``"stopped_by_hook"``: no final
    evaluation, like a preemption). They must not modify what they are given, except
    that ``after_step`` may append entries to ``eval_results``, the runner's live list
    (the submission reads them at the next step: tests fabricate evaluations so).
    """

    before_training: Callable[[Any], None] | None = None
    after_eval: Callable[[int, dict[str, Any], Any], None] | None = None
    after_step: Callable[[int, Any, Any, Any, list], bool | None] | None = None


@dataclasses.dataclass
class RunResult:
    """What a training run produced."""

    eval_results: list[tuple[int, dict[str, Any]]]
    global_step: int
    train_state: dict[str, Any]
    stop_reason: str
    optimizer_state: Any
    params: Any
    model_state: Any
    metrics_logger: Any
    global_batch_size: int
    target_step: int | None = None
    target_submission_time: float | None = None
    preemption_count: int = 0


@dataclasses.dataclass(frozen=True)
class EvalSchedule:
    """Evaluate every ``every_steps`` steps, or else every ``period_sec`` seconds."""

    every_steps: int | None
    period_sec: float

    def is_due(self, global_step: int, now: float, last_eval_time: float) -> bool:
        """Whether an evaluation is due after step ``global_step`` (1-based count)."""
        if self.every_steps is not None:
            return global_step % self.every_steps == 0
        return (now - last_eval_time) >= self.period_sec


def _to_python(value: Any) -> Any:
    """Turn 0-d arrays and NumPy scalars into Python numbers (others unchanged)."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


def derive_rngs(rng_seed: int, self_tuning: bool = True) -> tuple[Any, Any, Any, Any]:
    """``(data_rng, opt_init_rng, model_init_rng, rng)`` exactly as AlgoPerf 0.6's runner.

    ``score_submission_on_workload`` makes ``PRNGKey(seed)``; under external tuning it
    keeps the first of two splits of it (the tuning loop), under self-tuning it passes
    the key as it is. ``train_once`` splits that key into four. (AlgoPerf draws a random
    seed when the seed is 0; here seed 0 stays 0, so that runs repeat.)
    """
    rng = jax.random.PRNGKey(rng_seed)
    if not self_tuning:
        rng, _ = jax.random.split(rng, 2)
    data_rng, opt_init_rng, model_init_rng, rng = jax.random.split(rng, 4)
    return data_rng, opt_init_rng, model_init_rng, rng


def step_rngs(rng: Any, global_step: int) -> tuple[Any, Any, Any, Any]:
    """Per-step ``(data_select, update, prep_eval, eval)`` keys, as the runner."""
    step_rng = jax.random.fold_in(rng, global_step)
    data_select_rng, update_rng, prep_eval_rng, eval_rng = jax.random.split(step_rng, 4)
    return data_select_rng, update_rng, prep_eval_rng, eval_rng


def resolve_batch_size(
    submission_module: Any, workload_name: str | None, override: int | None
) -> int:
    """Global batch size: ``override``, else the workload registry's for an embedded
    workload, else the submission's ``get_batch_size`` (as AlgoPerf's runner).

    Raises ValueError unless it is divisible by the number of local devices.
    """
    if override is not None:
        batch_size = int(override)
    elif workload_name is None:
        raise ValueError("Pass workload_name or global_batch_size.")
    elif workloads.batch_size(workload_name) is not None:
        batch_size = workloads.batch_size(workload_name)
    else:
        batch_size = int(submission_module.get_batch_size(workload_name))
    devices = jax.local_device_count()
    if batch_size % devices:
        raise ValueError(
            f"The global batch size ({batch_size}) has to be divisible by the "
            f"number of devices ({devices})."
        )
    return batch_size


def resolve_eval_batch_size(
    submission_module: Any, workload: Any, workload_name: str | None
) -> int:
    """The submission's ``get_eval_batch_size`` if it has one, else the workload's."""
    if hasattr(submission_module, "get_eval_batch_size") and workload_name:
        return int(submission_module.get_eval_batch_size(workload_name))
    return int(workload.eval_batch_size)


def runtime_budget(workload: Any, override: float | None, self_tuning: bool) -> float:
    """Seconds of submission time allowed (1.5x the workload's under self-tuning; no limit
    for a workload that states none)."""
    if override is not None:
        return float(override)
    if workload.max_allowed_runtime_sec is None:
        return math.inf
    factor = SELF_TUNING_BUDGET_FACTOR if self_tuning else 1.0
    return factor * float(workload.max_allowed_runtime_sec)


def initial_train_state() -> dict[str, Any]:
    """The runner's bookkeeping dictionary at the start of training."""
    return {
        "validation_goal_reached": False,
        "test_goal_reached": False,
        "is_time_remaining": True,
        "last_eval_time": 0,
        "training_complete": False,
        "accumulated_submission_time": 0,
        "accumulated_eval_time": 0,
        "accumulated_logging_time": 0,
        "last_step_end_time": None,
    }


def train_once(
    workload: Any,
    submission_module: Any,
    hyperparameters: Any,
    rng_seed: int,
    *,
    workload_name: str | None = None,
    global_batch_size: int | None = None,
    eval_every_steps: int | None = None,
    eval_period_time_sec: float | None = None,
    max_global_steps: int | None = None,
    max_runtime_sec: float | None = None,
    metrics_logger: Any = None,
    self_tuning: bool = True,
    stop_at_target: bool = True,
    data_dir: str | None = None,
    hooks: RunnerHooks | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every_steps: int | None = None,
    checkpoint_at_steps: Collection[int] = (),
    resume_from: str | os.PathLike | None = None,
    clock: WallClock | SimulatedClock | None = None,
) -> RunResult:
    """Train ``workload`` with ``submission_module`` as AlgoPerf's runner would.

    Evaluations run every ``eval_every_steps`` steps when given, else every
    ``eval_period_time_sec`` (default: the workload's) seconds, and always when
    training completes. Stops when the validation target is reached (if
    ``stop_at_target``), the submission time exceeds the budget, ``max_global_steps``
    steps were taken, the submission raises ``spec.TrainingCompleteError`` or
    ``hooks.after_step`` returns a true value.

    Checkpoints (``save_checkpoint``) go to ``checkpoint_path`` (overwritten) after
    every ``checkpoint_every_steps``-th step and after the steps in
    ``checkpoint_at_steps``, after the step's evaluation (as AlgoPerf saves after an
    evaluation); the time counts as logging time. With ``resume_from``, the run
    continues from such a checkpoint instead of step 0.

    Time comes from ``clock`` (default: the wall clock). As in AlgoPerf, the budget is
    checked only after a step that an evaluation follows.
    """
    hooks = hooks or RunnerHooks()
    clock = clock or WallClock()
    if eval_every_steps is not None and eval_every_steps < 1:
        raise ValueError(f"eval_every_steps must be >= 1, got {eval_every_steps}.")
    if checkpoint_every_steps is not None and checkpoint_every_steps < 1:
        raise ValueError(f"checkpoint_every_steps must be >= 1, got {checkpoint_every_steps}.")
    if (checkpoint_every_steps is not None or checkpoint_at_steps) and checkpoint_path is None:
        raise ValueError("checkpoint_every_steps/checkpoint_at_steps need checkpoint_path.")
    checkpoint_at_steps = frozenset(int(step) for step in checkpoint_at_steps)
    schedule = EvalSchedule(
        every_steps=eval_every_steps,
        period_sec=float(
            workload.eval_period_time_sec if eval_period_time_sec is None else eval_period_time_sec
        ),
    )
    batch_size = resolve_batch_size(submission_module, workload_name, global_batch_size)
    eval_batch_size = resolve_eval_batch_size(submission_module, workload, workload_name)
    budget = runtime_budget(workload, max_runtime_sec, self_tuning)
    prepare_for_eval = getattr(submission_module, "prepare_for_eval", None)
    update_params = submission_module.update_params
    needs_train_state = "train_state" in inspect.signature(update_params).parameters

    data_rng, opt_init_rng, model_init_rng, rng = derive_rngs(rng_seed, self_tuning)
    input_queue = CountingQueue(
        workload._build_input_queue(
            data_rng, "train", data_dir=data_dir, global_batch_size=batch_size
        )
    )
    model_params, model_state = workload.init_model_fn(model_init_rng)
    optimizer_state = submission_module.init_optimizer_state(
        workload, model_params, model_state, hyperparameters, opt_init_rng
    )
    train_state = initial_train_state()
    eval_results: list = []
    global_step = preemption_count = 0
    if resume_from is not None:
        restored = restore_checkpoint(
            resume_from, optimizer_state, model_params, model_state, train_state
        )
        optimizer_state, model_params = restored.optimizer_state, restored.params
        model_state, train_state = restored.model_state, restored.train_state
        eval_results, global_step = restored.eval_results, restored.global_step
        preemption_count = restored.preemption_count
        for _ in range(restored.input_batches):  # Batch k depends on data_rng only.
            next(input_queue)
        if clock.simulated and math.isfinite(restored.clock_time):  # Where it stopped.
            clock.time = restored.clock_time
    logger = metrics_logger if metrics_logger is not None else MetricsRecorder()
    workload.attach_metrics_logger(logger)

    if hooks.before_training is not None:
        hooks.before_training(optimizer_state)
    stop_reason = ""
    target_step = target_time = None
    global_start_time = clock.now()
    train_state["last_step_end_time"] = global_start_time
    cycle = _cycle(submission_module, optimizer_state) if clock.simulated else 0

    while (
        train_state["is_time_remaining"]
        and not (stop_at_target and train_state["validation_goal_reached"])
        and not train_state["training_complete"]
    ):
        data_select_rng, update_rng, prep_eval_rng, eval_rng = step_rngs(rng, global_step)
        batch = submission_module.data_selection(
            workload,
            input_queue,
            optimizer_state,
            model_params,
            model_state,
            hyperparameters,
            global_step,
            data_select_rng,
        )
        try:
            optimizer_state, model_params, model_state = update_params(
                workload=workload,
                current_param_container=model_params,
                current_params_types=workload.model_params_types,
                model_state=model_state,
                hyperparameters=hyperparameters,
                batch=batch,
                loss_type=workload.loss_type,
                optimizer_state=optimizer_state,
                eval_results=eval_results,
                global_step=global_step,
                rng=update_rng,
                **({"train_state": MappingProxyType(train_state)} if needs_train_state else {}),
            )
            jax.block_until_ready((model_params, model_state))
        except spec.TrainingCompleteError:
            train_state["training_complete"] = True
            stop_reason = "training_complete"
        if clock.simulated:  # The resets of this step: the cycles it entered.
            cycle, before = _cycle(submission_module, optimizer_state), cycle
            clock.after_step(global_step, cycle - before)
        global_step += 1
        if max_global_steps is not None and global_step == max_global_steps:
            train_state["training_complete"] = True
            stop_reason = stop_reason or "max_steps"

        step_end_time = clock.now()
        train_state["accumulated_submission_time"] += (
            step_end_time - train_state["last_step_end_time"]
        )
        eval_due = train_state["training_complete"] or schedule.is_due(
            global_step, step_end_time, train_state["last_eval_time"]
        )
        if eval_due and prepare_for_eval is not None:
            del batch
            prep_start = clock.now()
            optimizer_state, model_params, model_state = prepare_for_eval(
                workload=workload,
                current_param_container=model_params,
                current_params_types=workload.model_params_types,
                model_state=model_state,
                hyperparameters=hyperparameters,
                loss_type=workload.loss_type,
                optimizer_state=optimizer_state,
                eval_results=eval_results,
                global_step=global_step,
                rng=prep_eval_rng,
            )
            jax.block_until_ready((model_params, model_state))
            train_state["accumulated_submission_time"] += clock.now() - prep_start
        if eval_due:  # AlgoPerf checks the budget only where it may evaluate.
            train_state["is_time_remaining"] = train_state["accumulated_submission_time"] < budget
        if not train_state["is_time_remaining"]:
            stop_reason = stop_reason or "time_budget"
        if eval_due and train_state["is_time_remaining"]:
            result = _timed_eval(
                clock,
                workload,
                train_state,
                eval_batch_size,
                model_params,
                model_state,
                eval_rng,
                data_dir,
                global_step,
                global_start_time,
            )
            eval_results.append((global_step, result))
            if train_state["validation_goal_reached"] and target_step is None:
                target_step = global_step
                target_time = result["accumulated_submission_time"]
                if stop_at_target:
                    stop_reason = stop_reason or "target_reached"
            logging_start = clock.now()
            logger.append_scalar_metrics(
                dict(result),
                global_step=global_step,
                preemption_count=preemption_count,
                is_eval=True,
            )
            train_state["accumulated_logging_time"] += clock.now() - logging_start
            if hooks.after_eval is not None:
                hooks.after_eval(global_step, result, optimizer_state)
        if global_step in checkpoint_at_steps or (
            checkpoint_every_steps is not None and global_step % checkpoint_every_steps == 0
        ):
            checkpoint_start = clock.now()
            checkpoint = Checkpoint(
                optimizer_state,
                model_params,
                model_state,
                train_state,
                eval_results,
                global_step,
                preemption_count,
                input_queue.drawn,
                clock.now() if clock.simulated else math.nan,
            )
            save_checkpoint(checkpoint_path, checkpoint)
            train_state["accumulated_logging_time"] += clock.now() - checkpoint_start
        if hooks.after_step is not None and hooks.after_step(
            global_step, optimizer_state, model_params, model_state, eval_results
        ):
            stop_reason = stop_reason or "stopped_by_hook"
            break
        train_state["last_step_end_time"] = clock.now()

    logger.append_scalar_metrics(
        {"score": train_state["accumulated_submission_time"]},
        global_step=global_step,
        preemption_count=preemption_count,
    )
    return RunResult(
        eval_results=eval_results,
        global_step=global_step,
        train_state=train_state,
        stop_reason=stop_reason or "stopped",
        optimizer_state=optimizer_state,
        params=model_params,
        model_state=model_state,
        metrics_logger=logger,
        global_batch_size=batch_size,
        target_step=target_step,
        target_submission_time=target_time,
        preemption_count=preemption_count,
    )


def _timed_eval(
    clock: WallClock | SimulatedClock,
    workload: Any,
    train_state: dict[str, Any],
    eval_batch_size: int,
    model_params: Any,
    model_state: Any,
    eval_rng: Any,
    data_dir: str | None,
    global_step: int,
    global_start_time: float,
) -> dict[str, Any]:
    """Run ``workload.eval_model`` (untimed), update ``train_state``, add the times.

    Mutates ``train_state`` (goals, ``last_eval_time``, ``accumulated_eval_time``) as
    the runner does and returns the evaluation result with ``score``,
    ``total_duration`` and the accumulated times added.
    """
    eval_start = clock.now()
    result = dict(
        workload.eval_model(
            eval_batch_size,
            model_params,
            model_state,
            eval_rng,
            data_dir,
            None,
            global_step,
        )
    )
    train_state["validation_goal_reached"] = bool(
        workload.has_reached_validation_target(result) or train_state["validation_goal_reached"]
    )
    train_state["test_goal_reached"] = bool(
        workload.has_reached_test_target(result) or train_state["test_goal_reached"]
    )
    clock.after_eval()
    eval_end = clock.now()
    train_state["last_eval_time"] = eval_end
    train_state["accumulated_eval_time"] += eval_end - eval_start
    result["score"] = train_state["accumulated_submission_time"]
    result["total_duration"] = eval_end - global_start_time
    result["accumulated_submission_time"] = train_state["accumulated_submission_time"]
    result["accumulated_eval_time"] = train_state["accumulated_eval_time"]
    result["accumulated_logging_time"] = train_state["accumulated_logging_time"]
    return result
