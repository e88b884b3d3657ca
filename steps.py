"""The compiled steps: one AdamW training step, and the device side of a reset.

`train_step` is one optimizer step at the schedule's learning rate. `ResetStep` is a
reset as one compiled function: the finished cycle checked by the failure rules
(`reset.check_cycle`), the strategy applied to the current state, the cycle's start and a
fresh initialisation traced inside (keyed by fold_in(seed, cycle)), statistics
re-estimated where the strategy asks, and the schedule entering the new cycle. It owns
its fallback for a workload whose init cannot be traced (the init then runs as a plain
call outside, decided at the first reset) and its compilation ahead of the first reset
(`compile_ahead`), with the example arguments that compilation needs.

Nothing here decides anything: the controller (`controller.py`) says when and with which
tau; the strategy says what a reset does and whether it rolls a failed cycle back.
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from . import algoperf_compat as compat
from . import hyperparameters as schema
from . import reset, schedules
from .compile_ahead import CompileAhead


def train_step(workload, tx, config, opt_state, params, model_state, batch, rng):
    """One optimizer step at the schedule's learning rate; returns diagnostics too:
    (opt_state, params, model_state, loss, ||grad||_2, learning rate)."""
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
    return opt_state, params, new_model_state, loss, reset.global_norm(grad), lr


def compile_train_step(workload, tx, config, replicated, batch_sharding):
    """`train_step` jitted: the state donated, the batch split over the devices."""
    return jax.jit(
        functools.partial(train_step, workload, tx, config),
        in_shardings=(replicated, replicated, replicated, batch_sharding, replicated),
        out_shardings=replicated,
        donate_argnums=(0, 1, 2),
    )


@functools.partial(jax.jit, donate_argnums=0)
def _enter_window(opt_state, window, step):
    return schedules.enter_cycle(opt_state, window, step)


def move_window(opt_state, window: schedules.CyclePlan, step: int, replicated):
    """opt_state with its schedule at `step` in the one-cycle `window`: the current cycle
    changed without a reset (the first cycle fitted to the time budget, or cooling down
    before the budget cuts it: `controller.refit`). Data only, placed like the training
    step's state: it compiles once per run."""
    window = jax.device_put(window, replicated)
    return _enter_window(opt_state, window, jax.device_put(np.int32(step), replicated))


def is_placed(tree, sharding) -> bool:
    """Whether the tree's first leaf already has `sharding` (a cheap host-side check).

    Params fresh from `init_model_fn` or a checkpoint are not: placing them once keeps
    the compiled step's input types identical on every call (one compilation).
    """
    leaves = jax.tree.leaves(tree)
    return not leaves or getattr(leaves[0], "sharding", None) == sharding


def snapshot(params, model_state, config, replicated) -> reset.TrainState:
    """A copy of params and model state (what a rollback restores) that later steps
    cannot donate away: in host memory (numpy) with `config.snapshot_on_host`, else on
    the device."""
    state = reset.TrainState(params, model_state, None)
    if config.snapshot_on_host:
        return jax.device_get(state)
    return jax.tree.map(jnp.copy, jax.device_put(state, replicated))


class Cycle(NamedTuple):
    """The numbers of one reset, traced by the compiled reset step."""

    tau: Any
    switched: Any
    no_improvement: Any
    window: schedules.CyclePlan
    step: Any
    start_norm: Any  # ||params|| where the ending cycle started: failure rule (b)'s reference
    failed_peak: Any  # the ending cycle's peak: if it failed, later peaks are capped below it


@jax.jit
def _global_norm(params):
    return reset.global_norm(params)


def norm_to_keep(params, evaluations, settings) -> float | None:
    """The params' global norm, read to the host, where the controller asks for it: to keep
    this state as the rollback point only if its norm is sound (`controller.keep_best`,
    with `rollback_to = "best"` and `keep_kappa`), to raise the next peaks only after a
    cycle with a sound norm (`controller.raised_peaks`, a slow or still factor above 1),
    or to end a guarded cycle whose norm left its bounds (`guarded_cycles`); only when new
    evaluations arrived (the runner has just evaluated these params, so the read waits for
    nothing); else None."""
    keeps = settings.keep_kappa is not None and settings.rollback_to == "best"
    raises = max(settings.slow_cycle_lr_factor, settings.still_cycle_lr_factor) != 1.0
    guards = settings.guarded_cycles or settings.guarded_from < float("inf")
    if evaluations is None or not (keeps or raises or guards):
        return None
    return float(_global_norm(params))


def lowering(check: reset.FailureCheck, config):
    """The factor a failed cycle's peak is lowered by for the later cycles' ceiling:
    `failed_cycle_lr_factor`, and with `failed_peak_rule = "norm"` where rule (b) failed
    it, by the norm's blow-up or collapse s = max(r, 1/r) too: min(factor, 1/s). Host
    numbers or traced alike (the device and `controller.after_reset` agree)."""
    factor = config.failed_cycle_lr_factor
    if config.failed_peak_rule != "norm":
        return factor
    spread = jnp.maximum(check.norm_ratio, 1.0 / check.norm_ratio)
    by_norm = jnp.minimum(factor, 1.0 / spread)
    return jnp.where(check.rule == reset.FAILURE_RULES.index("norm"), by_norm, factor)


def cycle_args(
    plan, index, tau=0.0, switched=False, no_improvement=False, step=0, start_norm=1.0
) -> Cycle:
    """The traced numbers of a reset into cycle `index`, in the dtypes it compiles for."""
    return Cycle(
        np.float32(tau),
        np.bool_(switched),
        np.bool_(no_improvement),
        schedules.cycle_window(plan, index),
        np.int32(step),
        np.float32(start_norm),
        np.float32(plan.peak_learning_rates[max(index - 1, 0)]),
    )


def init_source(seed, index):
    """The key source of cycle `index`'s fresh initialisation: fold_in(seed, index)."""
    return (np.asarray(seed), np.uint32(index))


def _like(tree, reference):
    """`tree` cast leafwise to `reference`'s dtypes (a `lax.cond` needs equal types)."""
    return jax.tree.map(lambda x, r: jnp.asarray(x, r.dtype), tree, reference)


class UntraceableInit(Exception):
    """The workload's init_model_fn cannot be traced under jit (it reads a traced value)."""


def _traced_init(workload, seed_and_cycle):
    """The workload's init under trace, keyed by fold_in(seed, cycle); `UntraceableInit`
    when it reads a traced value (a `float()`, `np.asarray`, a Python `if`)."""
    seed, cycle = seed_and_cycle
    try:
        return workload.init_model_fn(jax.random.fold_in(seed, cycle))
    except jax.errors.JAXTypeError as error:
        raise UntraceableInit(str(error)) from error


def _given_init(fresh):
    """The fallback's fresh (params, model state), computed by a plain call outside."""
    return fresh


def reset_step(
    strategy, config, tx, workload, make_fresh, current, start, cycle, batch, rng, source
):
    """The device side of a reset: the finished cycle checked by the failure rules, the
    strategy applied, statistics re-estimated (where the strategy asks), and the schedule
    entering the new cycle at `cycle.step`.

    The fresh initialisation `make_fresh(source) -> (params, model state)` runs only when
    the strategy reads it (`strategy.uses_init`, a `lax.cond`: not for `none`, tau = 0 or
    a rollback); the fresh optimizer state is `tx.init`, which reads only shapes. `start`
    is the state a rollback restores (the cycle's start, or its best). Returns the new
    state, a copy of its params and model state for the next cycle's start (None with
    `snapshot_on_host`), the `reset.FailureCheck` and the new params' global norm.
    """
    check = reset.check_cycle(
        current,
        cycle.start_norm,
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
    if strategy.reestimates_model_state:
        estimated = reset.reestimate_ema(
            lambda s: compat.train_forward(
                workload, new.params, s, batch, rng, config.dropout_rate
            )[1],
            new.model_state,
        )
        kept = strategy.rolls_back(check.failed)  # Rolled back: its own statistics.
        new = new._replace(model_state=reset.tree_select(kept, new.model_state, estimated))
    window = cycle.window
    if config.failed_cycle_lr_factor != 1.0 or config.failed_peak_rule == "norm":
        peaks = window.peak_learning_rates  # The host caps the plan alike (after_reset).
        low = lowering(check, config)
        ceiling = jnp.minimum(peaks, cycle.failed_peak * low)
        lowered = jnp.where(check.failed & (low != 1.0), ceiling, peaks)
        window = window._replace(peak_learning_rates=lowered.astype(peaks.dtype))
    opt_state = schedules.enter_cycle(new.opt_state, window, cycle.step)
    new = new._replace(opt_state=opt_state)
    # A separate buffer (jit never aliases two outputs): the train step donates `new`.
    start = None if config.snapshot_on_host else reset.TrainState(new.params, new.model_state, None)
    return new, start, check, reset.global_norm(new.params)


class ResetStep:
    """A reset as one compiled function, per Runtime (rebuilt by every
    init_optimizer_state).

    traced: the compiled reset, the fresh initialisation traced inside it; given: the
    same, the fresh (params, model state) given by the caller, for a workload whose init
    cannot be traced; traceable: which one applies (None until the first reset tries);
    ahead: `traced` compiled in a background thread during the first cycle.
    """

    def __init__(self, workload, config, tx, strategy, replicated, batch_sharding):
        self.workload = workload
        self.strategy = strategy
        self.traceable = None
        self.ahead = CompileAhead("reset", reraise=(UntraceableInit,))

        def compiled(make_fresh):
            # The current state is replaced, and so is the start when it lives on the device.
            return jax.jit(
                functools.partial(reset_step, strategy, config, tx, workload, make_fresh),
                in_shardings=(replicated,) * 3 + (batch_sharding,) + (replicated,) * 2,
                out_shardings=replicated,
                donate_argnums=(0,) if config.snapshot_on_host else (0, 1),
            )

        self.traced = compiled(functools.partial(_traced_init, workload))
        self.given = compiled(_given_init)

    @staticmethod
    def example_args(current, start, plan, seed, batch, rng):
        """Arguments of the shapes and dtypes of every reset of this run (cycle 1's)."""
        return (current, start, cycle_args(plan, 0), batch, rng, init_source(seed, 0))

    def compile_ahead(self, current, start, plan, seed, batch, rng) -> None:
        """Starts compiling `traced` in the background (once), for arguments like these."""
        if self.ahead.future is None:
            self.ahead.start(self.traced, self.example_args(current, start, plan, seed, batch, rng))

    def __call__(self, current, start, action, controller, batch, rng):
        """The reset `action` (a `controller.Reset`) into its cycle of the controller's plan
        (its seed keys the fresh init; its `start_norm` is rule (b)'s reference): `traced`,
        or `given` with a plain call's result for a workload whose init cannot be traced
        (decided at the first reset, logged once). Returns (new state, new start,
        `reset.FailureCheck`, the new params' norm)."""
        plan, seed = controller.plan, controller.seed
        cycle = cycle_args(
            plan,
            action.cycle,
            action.tau,
            action.early,
            action.no_improvement,
            action.step,
            controller.start_norm,
        )
        index = action.cycle
        seed_and_cycle = init_source(seed, index)
        if self.traceable is not False:
            args = (current, start, cycle, batch, rng, seed_and_cycle)
            try:
                compiled = self.ahead.compiled_for(args)
                out = (self.traced if compiled is None else compiled)(*args)
                self.traceable = True
                return out
            except UntraceableInit as error:  # Raised while tracing: nothing was donated yet.
                self.traceable = False
                logging.warning(
                    "the workload's init_model_fn cannot be traced under jit (%s); every reset "
                    "calls it outside the compiled reset instead",
                    str(error).splitlines()[0],
                )
        fresh = None  # `none` reads nothing fresh.
        if self.strategy.needs_fresh:
            fresh = self.workload.init_model_fn(jax.random.fold_in(*seed_and_cycle))
        return self.given(current, start, cycle, batch, rng, fresh)
