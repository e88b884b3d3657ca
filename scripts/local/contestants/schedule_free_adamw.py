"""The field's leader as a contestant: Schedule-Free AdamW, AlgoPerf's 2026 self-tuning winner.

The algorithm and fixed setting of the JAX port in AlgoPerf's submissions repository
(`mlcommons/submissions_algorithms`, `submissions/self_tuning/schedule_free_adamw_jax_v2`),
written for this project on optax's `contrib.schedule_free_adamw` (Defazio et al. 2024,
"The Road Less Scheduled", arXiv 2405.15682). With g the gradient at y, c_t the averaging
weight (warm-up rate squared, `weight_lr_power` 2) and b1 the momentum:

    z <- z - eta_t (AdamW step at y),   x <- (1 - c_t) x + c_t z,
    y  = (1 - b1) z + b1 x                     (where gradients are taken)

with eta_t a linear warm-up over int(0.75 x warmup_factor x step_hint) steps, then
constant: no schedule, no step_hint beyond the warm-up. How the port runs it:

* **Evaluation at x.** `prepare_for_eval` hands the runner x = (y - (1 - b1) z) / b1
  (`schedule_free_eval_params`) and marks the state as holding x; the next update first
  turns it back into y = (1 - b1) z + b1 x. (AlgoPerf's runner keeps the parameters that
  `prepare_for_eval` returns.) The flag is a device value, read inside the jitted step.
* **Batch norm at x.** Every third step (global_step % 3 == 0) on a model with state, the
  running statistics are updated by a training-mode forward pass at x; the pass at y that
  gives the gradient leaves them as they were.
* Self-tuning: no label smoothing, no gradient clipping (the port reads them from the
  hyperparameters, which are None under self-tuning), the workload's own dropout.

Optax 0.2.8 has `contrib.schedule_free_adamw`, 0.2.2 has not: under AlgoPerf 0.6 pins (optax
0.2.2) `UNAVAILABLE` says why and `init_optimizer_state` raises it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from cyclic_soft_reset.algoperf_compat import spec

# The baseline's batch sizes (the port's table is the same) and its input: the next batch.
from scripts.local.contestants.nadamw_baseline import data_selection, get_batch_size  # noqa: F401

# The port's fixed self-tuning setting (its HPARAMS; label_smoothing there is never read).
HPARAMS = {
    "learning_rate": 0.0025,
    "one_minus_beta1": 0.1,
    "beta2": 0.9955159689799007,
    "weight_decay": 0.08121616522670176,
    "warmup_factor": 0.02,
    "weight_lr_power": 2.0,
    "eps": 1e-8,
}
BN_EVERY = 3  # Batch-norm statistics are refreshed at x every third step.

_SCHEDULE_FREE = getattr(getattr(optax, "contrib", None), "schedule_free_adamw", None)
UNAVAILABLE = (
    None
    if _SCHEDULE_FREE is not None
    else f"optax {optax.__version__} has no contrib.schedule_free_adamw; "
    "Schedule-Free AdamW needs a newer optax than AlgoPerf 0.6 pins (0.2.2)"
)


def warmup_steps(step_hint: int, warmup_factor: float = HPARAMS["warmup_factor"]) -> int:
    """int(0.75 x warmup_factor x step_hint), as the port sets optax's warmup_steps."""
    return int(warmup_factor * step_hint * 0.75)


def schedule_free(step_hint: int, hparams: dict[str, float] = HPARAMS):
    """Optax's Schedule-Free AdamW at the port's setting; RuntimeError where optax lacks it."""
    if UNAVAILABLE:
        raise RuntimeError(UNAVAILABLE)
    return _SCHEDULE_FREE(
        learning_rate=hparams["learning_rate"],
        warmup_steps=warmup_steps(step_hint, hparams["warmup_factor"]),
        b1=1.0 - hparams["one_minus_beta1"],
        b2=hparams["beta2"],
        eps=hparams["eps"],
        weight_decay=hparams["weight_decay"],
        weight_lr_power=hparams["weight_lr_power"],
    )


def y_from_x(x, z, b1):
    """y = (1 - b1) z + b1 x: the training point from the evaluation point."""
    return jax.tree.map(lambda xi, zi: (1.0 - b1) * zi + b1 * xi, x, z)


def x_from_y(y, z, b1):
    """x = (y - (1 - b1) z) / b1: the evaluation point (optax's schedule_free_eval_params)."""
    return jax.tree.map(lambda yi, zi: (yi - (1.0 - b1) * zi) / b1, y, z)


def _select(flag, when_true, when_false):
    """Leafwise where(flag, a, b): the branch is taken on the device, not the host."""
    return jax.tree.map(lambda a, b: jnp.where(flag, a, b), when_true, when_false)


def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    """((Schedule-Free state, holding-x flag), the jitted train step)."""
    del model_state, hyperparameters, rng
    tx = schedule_free(int(workload.step_hint))

    def step(refresh_bn):
        return jax.jit(
            lambda state, params, model_state, batch, rng: _train_step(
                workload, tx, refresh_bn, state, params, model_state, batch, rng
            ),
            donate_argnums=(0, 1, 2),
        )

    steps = {False: step(False), True: step(True)}
    # z starts as a copy of the params: the step donates both, so they must not share buffers.
    sf_state = tx.init(jax.tree.map(jnp.copy, model_params))
    return (sf_state, jnp.zeros([], jnp.bool_)), steps


def _train_step(workload, tx, refresh_bn, state, params, model_state, batch, rng):
    """One Schedule-Free AdamW step at y (module docstring), params given as y or x."""
    sf_state, holding_x = state
    b1 = sf_state.b1
    y = _select(holding_x, y_from_x(params, sf_state.z, b1), params)
    if refresh_bn:
        _, model_state = workload.model_fn(
            x_from_y(y, sf_state.z, b1),
            batch,
            model_state,
            spec.ForwardPassMode.TRAIN,
            rng,
            update_batch_norm=True,
        )

    def loss_fn(p):
        logits, _ = workload.model_fn(
            p, batch, model_state, spec.ForwardPassMode.TRAIN, rng, update_batch_norm=True
        )
        losses = workload.loss_fn(batch["targets"], logits, batch.get("weights"))
        return losses["summed"] / losses["n_valid_examples"]

    loss, grads = jax.value_and_grad(loss_fn)(y)
    updates, sf_state = tx.update(grads, sf_state, y)
    new_state = (sf_state, jnp.zeros([], jnp.bool_))
    return new_state, optax.apply_updates(y, updates), model_state, loss


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
    """One step; the batch-norm refresh at x on every BN_EVERY-th step of a model with state."""
    del current_params_types, hyperparameters, loss_type, eval_results
    state, steps = optimizer_state
    refresh_bn = bool(jax.tree.leaves(model_state)) and global_step % BN_EVERY == 0
    state, params, model_state, loss = steps[refresh_bn](
        state, current_param_container, model_state, batch, rng
    )
    if global_step % 100 == 0 and workload.metrics_logger is not None:
        workload.metrics_logger.append_scalar_metrics({"loss": float(loss)}, global_step)
    return (state, steps), params, model_state


@jax.jit
def _to_eval_point(state, params):
    """(state marked as holding x, x); params already at x stay as they are."""
    sf_state, holding_x = state
    x = _select(holding_x, params, x_from_y(params, sf_state.z, sf_state.b1))
    return (sf_state, jnp.ones([], jnp.bool_)), x


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
    """The runner evaluates (and keeps) x; the next update turns it back into y."""
    del workload, current_params_types, hyperparameters, loss_type, eval_results
    del global_step, rng
    state, steps = optimizer_state
    state, x = _to_eval_point(state, current_param_container)
    return (state, steps), x, model_state
