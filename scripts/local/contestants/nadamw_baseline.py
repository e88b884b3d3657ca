"""The reference contestant: AlgoPerf's self-tuning NAdamW baseline, as an AlgoPerf submission.

The algorithm of AlgoPerf's `algorithms/baselines/self_tuning/jax_nadamw_full_budget.py`
(0.6; its JAX file fails at AlgoPerf's head, ../shared/ALGOPERF.md, so the working
external-tuning twin given the same HPARAMS is the reference), written for this project so
that the grids and CI have the baseline without AlgoPerf installed:

* NAdamW (Dozat's NAdam without momentum decay, arXiv 1910.05446 Table 1), with g the
  gradient, n the step count (1 at the first update):

      m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
      m_hat = (b1 m + (1 - b1) g) / (1 - b1^n),   v_hat = v / (1 - b2^n)
      theta <- theta - eta(t) (m_hat / (sqrt(v_hat) + eps) + lambda theta)

  (weight decay multiplied by the scheduled rate, as AlgoPerf's `nadamw`);
* eta(t): linear warm-up from 0 over W = int(warmup_factor x step_hint) steps to the peak,
  then a cosine to 0 at step_hint, and 0 after it (optax's cosine_decay_schedule), with t
  the number of updates applied so far (the first update uses eta(0) = 0);
* the fixed self-tuning HPARAMS (no label smoothing, no gradient clipping: the self-tuning
  file's `hasattr(dict, ...)` checks are always false, so it never uses them).

`tests/test_algoperf.py` checks it against AlgoPerf's own file, step for step, when AlgoPerf
is installed. It takes `hyperparameters` only to ignore them (self-tuning: None).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from cyclic_soft_reset.algoperf_compat import batch_size, spec

# AlgoPerf 0.6's self-tuning NAdamW HPARAMS (its baseline's fixed setting).
HPARAMS = {
    "dropout_rate": 0.1,
    "learning_rate": 0.0017486387539278373,
    "one_minus_beta1": 0.06733926164,
    "beta2": 0.9955159689799007,
    "weight_decay": 0.08121616522670176,
    "warmup_factor": 0.02,
}
EPS = 1e-8


class NadamState(NamedTuple):
    """State of `scale_by_nadam`: the step count n and the moments m, v."""

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates


def scale_by_nadam(b1: float, b2: float, eps: float = EPS) -> optax.GradientTransformation:
    """m_hat / (sqrt(v_hat) + eps) with NAdam's look-ahead first moment (module docstring)."""

    def init_fn(params):
        def zeros():
            return jax.tree.map(jnp.zeros_like, params)

        return NadamState(jnp.zeros([], jnp.int32), zeros(), zeros())

    def update_fn(grads, state, params=None):
        del params
        mu = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, grads, state.mu)
        nu = jax.tree.map(lambda g, v: (1 - b2) * g**2 + b2 * v, grads, state.nu)
        count = state.count + 1
        c1, c2 = 1 - b1**count, 1 - b2**count
        mu_hat = jax.tree.map(lambda g, m: ((1 - b1) * g + b1 * m) / c1.astype(m.dtype), grads, mu)
        updates = jax.tree.map(
            lambda m, v: m / (jnp.sqrt(v / c2.astype(v.dtype)) + eps), mu_hat, nu
        )
        return updates, NadamState(count, mu, nu)

    return optax.GradientTransformation(init_fn, update_fn)


def warmup_cosine(peak: float, warmup_factor: float, step_hint: int) -> optax.Schedule:
    """eta(t): 0 -> peak linearly over int(warmup_factor x step_hint) steps, then a cosine
    to 0 at step_hint, 0 after."""
    warmup = int(warmup_factor * step_hint)
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, peak, warmup),
            optax.cosine_decay_schedule(peak, max(step_hint - warmup, 1)),
        ],
        [warmup],
    )


def nadamw(step_hint: int, hparams: dict[str, float]) -> optax.GradientTransformation:
    """NAdamW at the warm-up + cosine schedule, weight decay scaled by the schedule."""
    schedule = warmup_cosine(hparams["learning_rate"], hparams["warmup_factor"], step_hint)
    return optax.chain(
        scale_by_nadam(1.0 - hparams["one_minus_beta1"], hparams["beta2"]),
        optax.add_decayed_weights(hparams["weight_decay"]),
        optax.scale_by_learning_rate(schedule),
    )


def get_batch_size(workload_name: str) -> int:
    """AlgoPerf's baseline batch sizes (the same table as the project's submission)."""
    return batch_size(workload_name)


def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    """(NAdamW state, the jitted train step)."""
    del model_state, hyperparameters, rng
    tx = nadamw(int(workload.step_hint), HPARAMS)
    train_step = jax.jit(
        lambda opt_state, params, model_state, batch, rng: _train_step(
            workload, tx, opt_state, params, model_state, batch, rng
        ),
        donate_argnums=(0, 1, 2),
    )
    return tx.init(jax.tree.map(jnp.zeros_like, model_params)), train_step


def _train_step(workload, tx, opt_state, params, model_state, batch, rng):
    """One NAdamW step on the mean loss over the batch's valid examples."""

    def loss_fn(p):
        logits, new_model_state = workload.model_fn(
            p,
            batch,
            model_state,
            spec.ForwardPassMode.TRAIN,
            rng,
            update_batch_norm=True,
            dropout_rate=HPARAMS["dropout_rate"],
        )
        losses = workload.loss_fn(batch["targets"], logits, batch.get("weights"))
        return losses["summed"] / losses["n_valid_examples"], new_model_state

    (loss, new_model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return opt_state, optax.apply_updates(params, updates), new_model_state, loss


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
    """One NAdamW step (the baseline reads neither evaluations nor train_state)."""
    del current_params_types, hyperparameters, loss_type, eval_results, train_state
    opt_state, train_step = optimizer_state
    opt_state, params, model_state, loss = train_step(
        opt_state, current_param_container, model_state, batch, rng
    )
    if global_step % 100 == 0 and workload.metrics_logger is not None:
        workload.metrics_logger.append_scalar_metrics({"loss": float(loss)}, global_step)
    return (opt_state, train_step), params, model_state


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
    """Nothing to prepare."""
    return optimizer_state, current_param_container, model_state


def data_selection(
    workload,
    input_queue: Iterator[Any],
    optimizer_state,
    current_param_container,
    model_state,
    hyperparameters,
    global_step,
    rng,
):
    """The runner's next batch."""
    return next(input_queue)
