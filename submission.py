"""AlgoPerf self-tuning submission: cyclic AdamW with soft resets and early switching.

The entry points AlgoPerf's runner calls (`get_batch_size`, `init_optimizer_state`,
`update_params`, `prepare_for_eval`, `data_selection`) wire together three small pure
packages: `schedules` (cycle plans, learning-rate shapes), `reset` (tau and the reset
strategies) and `early_switching` (the detector). See METHOD.md for the formulas.

State. `optimizer_state` is the pair `(SubmissionState, Runtime)`. The runner checkpoints
only the first half and rebuilds the second with a fresh `init_optimizer_state`, so
everything a run's future depends on lives in `SubmissionState`:
  * `opt_state`: the optax AdamW/NAdamW state (device, replicated);
  * `window`: the current cycle's plan as small fixed-shape arrays (device), from which
    the compiled step computes its learning rate: no recompilation when a cycle changes;
  * `controller`: host-side numbers (the plan, the current cycle, the detector, which
    evaluations have been read, the seed of fresh initialisations), so that every
    decision is made on the host without reading anything back from the device.
`Runtime` holds only what can be rebuilt from (workload, hyperparameters): the resolved
configuration, the optax transformation and the compiled functions.
"""

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

if __package__:  # Packaged: imported as submissions.self_tuning.<name>.submission.
    from . import early_switching, reset, schedules
    from .algoperf_compat import spec
else:  # Run from the project root: --submission_path=submission.py.
    import early_switching
    import reset
    import schedules
    from algoperf_compat import spec

# --------------------------------------------------------------------------------------
# Hyperparameters
# --------------------------------------------------------------------------------------

STRATEGY_NAMES = tuple(sorted(reset.STRATEGIES))
OPTIMIZERS = ("adamw", "nadamw")
TAU_METRICS = ("latest", "best")

# name -> (default, kind, allowed values in words). Section 2 of METHOD.md, plus the
# cycle plan, reset and detector settings.
HYPERPARAMETERS: dict[str, tuple[Any, str, str]] = {
    "learning_rate": (0.0017486387539278373, "float", "a number > 0"),
    "one_minus_beta1": (0.06733926164, "float", "a number in (0, 1)"),
    "beta2": (0.9955159689799007, "float", "a number in (0, 1)"),
    "weight_decay": (0.08121616522670176, "float", "a number >= 0"),
    "warmup_factor": (0.02, "float", "a number in (0, 1)"),
    "dropout_rate": (0.1, "float", "a number in [0, 1)"),
    "label_smoothing": (0.0, "float", "a number in [0, 1)"),
    "grad_clip": (None, "optional_float", "null (no clipping) or a number > 0"),
    "optimizer": ("adamw", "choice", f"one of {list(OPTIMIZERS)}"),
    "num_cycles": (3, "int", "an integer >= 1"),
    "cycle_budget_factor": (1.0, "float", "a number > 0"),
    "cycle_length_factors": (None, "optional_list", "null (equal) or N numbers > 0"),
    "cycle_lr_factors": ((1.0, 1.5727, 0.4289), "list", "a list of N numbers > 0"),
    "cycle_warmup_factors": ((1.0, 1.0, 1.0), "list", "a list of N numbers > 0"),
    "warmup_shape": ("linear", "choice", f"one of {list(schedules.WARMUP_SHAPES)}"),
    "decay_shape": ("cosine", "choice", f"one of {list(schedules.DECAY_SHAPES)}"),
    "reset_strategy": ("soft", "choice", f"one of {list(STRATEGY_NAMES)}"),
    "reset_alpha": (0.5, "float", "a number in [0, 1]"),
    "tau_metric": ("latest", "choice", f"one of {list(TAU_METRICS)}"),
    "failed_cycle_fresh_moments": (True, "bool", "true or false"),
    "early_switching": (True, "bool", "true or false"),
    "switch_lambda": (0.7, "float", "a number in (0, 1]"),
    "switch_eps1": (0.01, "float", "a number > 0"),
    "switch_eps2": (0.01, "float", "a number >= 0"),
    "switch_m": (9, "int", "an integer >= 1"),
    "switch_k": (9, "int", "an integer >= 1"),
    "switch_grace_evals": (2, "int", "an integer >= 0"),
    "switch_relative": (True, "bool", "true or false"),
    "stop_when_plan_ends": (True, "bool", "true or false"),
}

_CHOICES = {
    "optimizer": OPTIMIZERS,
    "warmup_shape": schedules.WARMUP_SHAPES,
    "decay_shape": schedules.DECAY_SHAPES,
    "reset_strategy": STRATEGY_NAMES,
    "tau_metric": TAU_METRICS,
}

# Open and closed bounds of the numeric hyperparameters: (low, high, low_open, high_open).
_RANGES = {
    "learning_rate": (0.0, math.inf, True, True),
    "one_minus_beta1": (0.0, 1.0, True, True),
    "beta2": (0.0, 1.0, True, True),
    "weight_decay": (0.0, math.inf, False, True),
    "warmup_factor": (0.0, 1.0, True, True),
    "dropout_rate": (0.0, 1.0, False, True),
    "label_smoothing": (0.0, 1.0, False, True),
    "grad_clip": (0.0, math.inf, True, True),
    "num_cycles": (1, math.inf, False, True),
    "cycle_budget_factor": (0.0, math.inf, True, True),
    "reset_alpha": (0.0, 1.0, False, False),
    "switch_lambda": (0.0, 1.0, True, False),
    "switch_eps1": (0.0, math.inf, True, True),
    "switch_eps2": (0.0, math.inf, False, True),
    "switch_m": (1, math.inf, False, True),
    "switch_k": (1, math.inf, False, True),
    "switch_grace_evals": (0, math.inf, False, True),
}


class Config(NamedTuple):
    """The resolved hyperparameters (every name of HYPERPARAMETERS)."""

    learning_rate: float
    one_minus_beta1: float
    beta2: float
    weight_decay: float
    warmup_factor: float
    dropout_rate: float
    label_smoothing: float
    grad_clip: float | None
    optimizer: str
    num_cycles: int
    cycle_budget_factor: float
    cycle_length_factors: tuple[float, ...] | None
    cycle_lr_factors: tuple[float, ...] | None
    cycle_warmup_factors: tuple[float, ...] | None
    warmup_shape: str
    decay_shape: str
    reset_strategy: str
    reset_alpha: float
    tau_metric: str
    failed_cycle_fresh_moments: bool
    early_switching: bool
    switch_lambda: float
    switch_eps1: float
    switch_eps2: float
    switch_m: int
    switch_k: int
    switch_grace_evals: int
    switch_relative: bool
    stop_when_plan_ends: bool


def _given_hyperparameters(hyperparameters) -> dict[str, Any]:
    """The keys present in None, a mapping, or a namedtuple (AlgoPerf passes each)."""
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


def _in_range(name: str, value: float) -> bool:
    low, high, low_open, high_open = _RANGES.get(name, (-math.inf, math.inf, 1, 1))
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    return math.isfinite(value) and above and below


def _is_number(value: Any) -> bool:
    """A real number (Python or numpy), not a bool."""
    number = isinstance(value, int | float | np.integer | np.floating)
    return number and not isinstance(value, bool | np.bool_)


def _coerce(name: str, value: Any) -> Any:
    """One hyperparameter, type-checked and range-checked; ValueError otherwise."""
    _, kind, allowed = HYPERPARAMETERS[name]
    bad = ValueError(f"hyperparameter {name!r} must be {allowed}, got {value!r}.")
    is_number = _is_number(value)
    try:
        number = float(value) if is_number else math.nan
    except OverflowError:  # An int beyond float range (10**400) is out of every range.
        number = math.inf
    if kind == "optional_float" and value is None:
        return None
    if kind in ("float", "optional_float"):
        if not is_number or not _in_range(name, number):
            raise bad
        return number
    if kind == "int":
        if not is_number or not _in_range(name, number) or number != int(value):
            raise bad
        return int(value)
    if kind == "bool":
        if not isinstance(value, bool | np.bool_):
            raise bad
        return bool(value)
    if kind == "choice":
        if not isinstance(value, str) or value not in _CHOICES[name]:
            raise bad
        return str(value)
    if kind == "optional_list" and value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence | np.ndarray):
        raise bad
    if not all(_is_number(x) and math.isfinite(x) and x > 0 for x in value):
        raise bad
    return tuple(float(x) for x in value)  # The plan checks the length against num_cycles.


def resolve_hyperparameters(hyperparameters=None) -> Config:
    """Defaults overridden by each given key, validated; ValueError names the field.

    `hyperparameters` is None (self-tuning: all defaults), a dict, or a namedtuple that
    may hold only some keys. Per-cycle lists that are not given become all ones when
    `num_cycles` differs from their default length (METHOD.md section 3).
    """
    given = _given_hyperparameters(hyperparameters)
    unknown = sorted(set(given) - set(HYPERPARAMETERS), key=str)
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown}; known names: {sorted(HYPERPARAMETERS)}."
        )
    values = {name: _coerce(name, v) for name, v in given.items()}
    for name, (default, _, _) in HYPERPARAMETERS.items():
        values.setdefault(name, default)
    for name in ("cycle_lr_factors", "cycle_warmup_factors"):
        if name not in given and len(values[name]) != values["num_cycles"]:
            values[name] = None
    config = Config(**values)
    _make_plan(config, step_hint=10**6)  # Cross-field checks (list lengths, shapes).
    return config


# --------------------------------------------------------------------------------------
# Batch sizes (the AlgoPerf NAdamW baselines' global batch sizes)
# --------------------------------------------------------------------------------------

_BASE_BATCH_SIZES = {
    "criteo1tb": 262_144,
    "fastmri": 32,
    "imagenet_resnet": 1024,
    "imagenet_vit": 1024,
    "librispeech_conformer": 256,
    "librispeech_deepspeech": 256,
    "ogbg": 512,
    "wmt": 128,
    "mnist": 16,
    "cifar": 128,
}
_VARIANTS = {
    "criteo1tb": ("test", "layernorm", "embed_init", "resnet"),
    "fastmri": ("model_size", "tanh", "layernorm"),
    "imagenet_resnet": ("large_bn_init",),
    "imagenet_vit": ("glu", "post_ln", "map"),
    "librispeech_conformer": ("attention_temperature", "layernorm", "gelu"),
    "librispeech_deepspeech": ("tanh", "no_resnet", "norm_and_spec_aug"),
    "ogbg": ("gelu", "silu", "model_size"),
    "wmt": ("post_ln", "attention_temp", "glu_tanh"),
}
BATCH_SIZES = {
    **_BASE_BATCH_SIZES,
    **{f"{base}_{v}": _BASE_BATCH_SIZES[base] for base, vs in _VARIANTS.items() for v in vs},
    "imagenet_resnet_silu": 512,
    "imagenet_resnet_gelu": 512,
    # The embedded workloads of scripts/workloads.py.
    "digit_sums": 128,
    "digits": 128,
    "breast_cancer": 64,
}


def get_batch_size(workload_name: str) -> int:
    """The global batch size for an AlgoPerf workload name (base or variant)."""
    if workload_name not in BATCH_SIZES:
        raise ValueError(
            f"Unsupported workload name: {workload_name!r}; known: {sorted(BATCH_SIZES)}."
        )
    return BATCH_SIZES[workload_name]


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------


def _make_plan(config: Config, step_hint: int) -> schedules.CyclePlan:
    """The plan over T = max(N, round(cycle_budget_factor x step_hint)) steps."""
    total = max(config.num_cycles, round(config.cycle_budget_factor * step_hint))
    return schedules.make_plan(
        total_steps=total,
        num_cycles=config.num_cycles,
        learning_rate=config.learning_rate,
        warmup_factor=config.warmup_factor,
        cycle_length_factors=config.cycle_length_factors,
        cycle_lr_factors=config.cycle_lr_factors,
        cycle_warmup_factors=config.cycle_warmup_factors,
        warmup_shape=config.warmup_shape,
        decay_shape=config.decay_shape,
    )


def _detector_config(config: Config) -> early_switching.DetectorConfig:
    return early_switching.validate_config(
        early_switching.DetectorConfig(
            lambda_=config.switch_lambda,
            eps1=config.switch_eps1,
            eps2=config.switch_eps2,
            m=config.switch_m,
            k=config.switch_k,
            grace_evals=config.switch_grace_evals,
            relative=config.switch_relative,
        )
    )


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


def make_optimizer(config: Config) -> optax.GradientTransformation:
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


class Controller(NamedTuple):
    """Host-side state: plain numbers, read and written without touching the device.

    plan: the current cycle plan (boundaries move on an early switch).
    cycle: index of the current cycle.
    evals_seen: len(eval_results) when last read; last_eval_step: its newest step.
    last_metric: latest validation target metric (nan before the first evaluation).
    cycle_best_metric: the best finite target metric evaluated since the current cycle
      started (nan if none), for `tau_metric = "best"`.
    detector: the early-switch detector's state for the current cycle.
    seed: key data from which each fresh initialisation's key is folded.
    """

    plan: schedules.CyclePlan
    cycle: int
    evals_seen: int
    last_eval_step: int
    last_metric: float
    cycle_best_metric: float
    detector: early_switching.DetectorState
    seed: np.ndarray


class SubmissionState(NamedTuple):
    """optimizer_state[0]: all that a checkpoint must hold."""

    opt_state: Any
    window: schedules.CyclePlan
    controller: Controller


class Runtime(NamedTuple):
    """optimizer_state[1]: rebuilt from (workload, hyperparameters) on every start."""

    config: Config
    detector_config: early_switching.DetectorConfig
    higher_is_better: bool
    tx: optax.GradientTransformation
    replicated: NamedSharding
    train_step: Any
    reset_step: Any
    num_devices: int


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


def _build_runtime(workload, config: Config) -> Runtime:
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
    return Runtime(
        config=config,
        detector_config=_detector_config(config),
        higher_is_better=metric_direction(workload),
        tx=tx,
        replicated=replicated,
        train_step=train_step,
        reset_step=reset_step,
        num_devices=mesh.size,
    )


# --------------------------------------------------------------------------------------
# AlgoPerf entry points
# --------------------------------------------------------------------------------------


def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    """Validates everything and returns (SubmissionState, Runtime).

    Invalid hyperparameters, plans, or a workload whose metric direction cannot be
    told fail here, before the first step.
    """
    del model_state
    config = resolve_hyperparameters(hyperparameters)
    runtime = _build_runtime(workload, config)
    plan = _make_plan(config, workload.step_hint)
    opt_state = jax.device_put(runtime.tx.init(model_params), runtime.replicated)
    if not reset.moment_states(opt_state):
        raise ValueError("the optimizer state holds no Adam moments (mu, nu) to reset.")
    key = jax.random.key_data(rng) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng
    controller = Controller(
        plan=plan,
        cycle=0,
        evals_seen=0,
        last_eval_step=-1,
        last_metric=math.nan,
        cycle_best_metric=math.nan,
        detector=early_switching.initial_state(),
        seed=np.asarray(key, dtype=np.uint32),
    )
    window = jax.device_put(schedules.cycle_window(plan, 0), runtime.replicated)
    logging.info(
        "cyclic AdamW: %d cycles, boundaries %s, peaks %s, reset %s",
        schedules.num_cycles(plan),
        plan.boundaries.tolist(),
        plan.peak_learning_rates.tolist(),
        config.reset_strategy,
    )
    return SubmissionState(opt_state, window, controller), runtime


def _to_host(controller: Controller) -> Controller:
    """The controller as host numbers: itself, unless restored from a checkpoint."""
    if type(controller.cycle) is int and type(controller.plan.boundaries) is np.ndarray:
        return controller  # Every call but the first after a restore.
    return Controller(
        plan=schedules.CyclePlan(*(np.asarray(x) for x in controller.plan)),
        cycle=int(controller.cycle),
        evals_seen=int(controller.evals_seen),
        last_eval_step=int(controller.last_eval_step),
        last_metric=float(controller.last_metric),
        cycle_best_metric=float(controller.cycle_best_metric),
        detector=early_switching.DetectorState(
            int(controller.detector.num_evals),
            float(controller.detector.smoothed),
            float(controller.detector.trend),
            float(controller.detector.best),
            int(controller.detector.best_index),
        ),
        seed=np.asarray(controller.seed, dtype=np.uint32),
    )


def parse_eval_results(eval_results) -> list[tuple[int, dict]]:
    """(global_step, metrics) pairs sorted by step.

    Accepts the runner's live list of `(step, metrics)` and the shape its checkpoint
    restore produces today, `({'0': step, '1': metrics}, '0')` entries (ALGOPERF.md).
    """
    pairs = []
    for entry in eval_results:
        step, metrics, inner = None, None, entry
        if isinstance(entry, tuple | list) and len(entry) == 2:
            first, second = entry
            if isinstance(second, Mapping) and not isinstance(first, Mapping):
                step, metrics = first, second
            inner = first
        if metrics is None and isinstance(inner, Mapping) and "0" in inner and "1" in inner:
            step, metrics = inner["0"], inner["1"]
        step = _eval_step(step)
        if step is None or not isinstance(metrics, Mapping):
            raise ValueError(
                "eval_results entries must be (global_step, metrics) pairs with an integer "
                f"global_step >= 0 and a dict of metrics, got {str(entry)[:200]}."
            )
        pairs.append((step, dict(metrics)))
    return sorted(pairs, key=lambda pair: pair[0])


def _eval_step(value) -> int | None:
    """An evaluation's global step as an int >= 0 (Python, numpy or 0-d array), else None."""
    try:
        array = np.asarray(value)
    except Exception:  # Not array-like, so not a step.
        return None
    if array.ndim or array.dtype.kind not in "iuf" or not np.isfinite(array) or array < 0:
        return None
    return int(array) if array == np.round(array) else None


def _metric(metrics: Mapping, key: str, step: int) -> float:
    if key not in metrics:
        raise ValueError(f"the evaluation at step {step} has no {key!r}; it has {sorted(metrics)}.")
    try:
        return float(metrics[key])
    except (TypeError, ValueError):
        raise ValueError(
            f"the evaluation at step {step} has {key!r} = {metrics[key]!r}; it must be a number."
        ) from None


def _read_evaluations(controller, eval_results, workload, runtime):
    """Feeds new evaluations to the detector; returns (controller, switched_at or None).

    An evaluation at step g feeds the detector when b_c < g < b_{c+1} (one on a
    boundary belongs to the planned reset) and a cycle can follow the current one. A
    switch moves b_{c+1} to g.
    """
    config = runtime.config
    metric_key = f"validation/{workload.target_metric_name}"
    new = [(g, m) for g, m in parse_eval_results(eval_results) if g > controller.last_eval_step]
    plan, detector, switched_at = controller.plan, controller.detector, None
    last_metric, last_step = controller.last_metric, controller.last_eval_step
    best = controller.cycle_best_metric
    for g, metrics in new:
        last_metric, last_step = _metric(metrics, metric_key, g), g
        best = reset.better_metric(best, last_metric, runtime.higher_is_better)
        loss = _metric(metrics, "validation/loss", g)
        c = controller.cycle
        inside = plan.boundaries[c] < g < plan.boundaries[c + 1]
        can_follow = c + 1 < schedules.num_cycles(plan) or not config.stop_when_plan_ends
        if not (config.early_switching and inside and can_follow and switched_at is None):
            continue
        detector, switch, reason = early_switching.update(detector, loss, runtime.detector_config)
        if switch:
            logging.info("early switch at step %d (%s), loss %.6g", g, reason, loss)
            plan, switched_at = schedules.replan_after_switch(plan, g), g
    controller = controller._replace(
        plan=plan,
        detector=detector,
        evals_seen=len(eval_results),
        last_eval_step=last_step,
        last_metric=last_metric,
        cycle_best_metric=best,
    )
    return controller, switched_at


def _next_cycle(workload, runtime, state, params, model_state, global_step, early):
    """Starts cycle c + 1 at `global_step`: the reset, a fresh detector and window."""
    config, controller = runtime.config, state.controller
    cycle = controller.cycle + 1
    latest, best = controller.last_metric, controller.cycle_best_metric
    metric = reset.tau_metric(latest, best, config.tau_metric)
    tau = reset.tau(metric, workload.validation_target_value, runtime.higher_is_better)
    # METHOD.md section 4: a failed cycle hands on no momentum (ablation switch).
    failed = early and config.failed_cycle_fresh_moments
    current = reset.TrainState(params, model_state, state.opt_state)
    strategy = reset.get_strategy(config.reset_strategy)
    fresh = current  # `none` ignores it: no new initialisation, nothing donated.
    if strategy.needs_fresh:
        key = jax.random.fold_in(jnp.asarray(controller.seed), cycle)
        fresh_params, fresh_model_state = workload.init_model_fn(key)
        fresh = reset.TrainState(fresh_params, fresh_model_state, runtime.tx.init(fresh_params))
    (params, model_state, opt_state), finite = runtime.reset_step(
        current, fresh, np.float32(tau), np.float32(config.reset_alpha), np.bool_(failed)
    )
    finite = bool(finite)
    controller = controller._replace(
        cycle=cycle, cycle_best_metric=math.nan, detector=early_switching.initial_state()
    )
    window = jax.device_put(schedules.cycle_window(controller.plan, cycle), runtime.replicated)
    logging.info(
        "reset at step %d: cycle %d starts, %s, tau %.4f (metric %s), %s, strategy %s%s",
        global_step,
        cycle,
        "early switch" if early else "planned",
        tau,
        metric,
        f"until step {int(controller.plan.boundaries[cycle + 1])}",
        config.reset_strategy,
        "" if finite else " (non-finite state: full reset)",
    )
    if workload.metrics_logger is not None:
        workload.metrics_logger.append_scalar_metrics(
            {
                "reset/cycle": cycle,
                "reset/tau": tau,
                "reset/metric": metric,
                "reset/early_switch": float(early),
                "reset/non_finite": float(not finite),
            },
            global_step,
        )
    return SubmissionState(opt_state, window, controller), params, model_state


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
    """One training step, preceded by a reset when a cycle boundary is reached.

    Host side (no device read): read new evaluations (the detector may end the cycle
    now), start the next cycle if `global_step` reached its boundary, stop when the plan
    is used up. Device side: one compiled AdamW step at the plan's learning rate.
    """
    del current_params_types, hyperparameters, loss_type, train_state
    state, runtime = optimizer_state
    config = runtime.config
    _check_batch(batch, runtime.num_devices)
    controller = _to_host(state.controller)
    switched_at = None
    if len(eval_results) != controller.evals_seen:
        controller, switched_at = _read_evaluations(controller, eval_results, workload, runtime)
    state = state._replace(controller=controller)
    if not isinstance(state.window.boundaries, jax.Array):  # Restored from a checkpoint.
        state = state._replace(window=jax.device_put(state.window, runtime.replicated))
    params = current_param_container
    if not _is_placed(params, runtime.replicated):  # The first call after a start/restore.
        params, model_state = jax.device_put((params, model_state), runtime.replicated)
    while global_step >= state.controller.plan.boundaries[state.controller.cycle + 1]:
        plan = state.controller.plan
        if state.controller.cycle + 1 == schedules.num_cycles(plan):
            if config.stop_when_plan_ends:
                raise spec.TrainingCompleteError(
                    f"the cycle plan ended at step {schedules.total_steps(plan)}."
                )
            state = state._replace(
                controller=state.controller._replace(plan=schedules.extend_plan(plan))
            )
        # The boundary an early switch just moved (to the evaluation's step) ends a failed cycle.
        early = (
            switched_at is not None
            and int(plan.boundaries[state.controller.cycle + 1]) == switched_at
        )
        state, params, model_state = _next_cycle(
            workload, runtime, state, params, model_state, global_step, early
        )
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
    controller = _to_host(state.controller)
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
    plan = _to_host(optimizer_state[0].controller).plan
    return np.asarray(schedules.learning_rate(np.asarray(steps), plan))
