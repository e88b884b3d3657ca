"""A minimal AlgoPerf-style loop for the tests: the runner's calls, evals every N steps."""

import jax
import numpy as np

import submission
from algoperf_compat import spec


class RecordingLogger:
    """A metrics logger that keeps what the submission appends."""

    def __init__(self):
        self.records = []

    def append_scalar_metrics(self, metrics, global_step):
        self.records.append((int(global_step), dict(metrics)))

    def resets(self):
        return [(step, m) for step, m in self.records if "reset/cycle" in m]


def run(
    workload,
    hyperparameters=None,
    *,
    seed: int = 0,
    batch_size: int = 64,
    num_steps: int = 100,
    eval_every: int = 10,
    eval_results=None,
    stop_at_target: bool = False,
    on_step=None,
):
    """Trains through submission.py like AlgoPerf's train_once; returns a dict of results.

    `on_step(global_step, optimizer_state, params, model_state, eval_results)` is called
    after each step (and its eval) and may return True to stop.
    """
    rng = jax.random.PRNGKey(seed)
    data_rng, opt_rng, model_rng = jax.random.split(rng, 3)
    params, model_state = workload.init_model_fn(model_rng)
    optimizer_state = submission.init_optimizer_state(
        workload, params, model_state, hyperparameters, opt_rng
    )
    batches = workload.train_batches(seed, batch_size)
    eval_results = [] if eval_results is None else eval_results
    learning_rates, global_step, reached = [], 0, None
    while global_step < num_steps:
        step_rng = jax.random.fold_in(rng, global_step)
        batch = submission.data_selection(
            workload,
            batches,
            optimizer_state,
            params,
            model_state,
            hyperparameters,
            global_step,
            step_rng,
        )
        try:
            optimizer_state, params, model_state = submission.update_params(
                workload,
                params,
                None,
                model_state,
                hyperparameters,
                batch,
                None,
                optimizer_state,
                eval_results,
                global_step,
                step_rng,
                train_state={},
            )
        except spec.TrainingCompleteError:
            break
        learning_rates.append(float(optimizer_state[0].opt_state.hyperparams["learning_rate"]))
        global_step += 1
        if global_step % eval_every == 0:
            metrics = workload.eval_model(params, model_state)
            eval_results.append((global_step, metrics))
            if reached is None and workload.has_reached_validation_target(metrics):
                reached = global_step
                if stop_at_target:
                    break
        if on_step and on_step(global_step, optimizer_state, params, model_state, eval_results):
            break
    return {
        "optimizer_state": optimizer_state,
        "params": params,
        "model_state": model_state,
        "eval_results": eval_results,
        "learning_rates": np.asarray(learning_rates),
        "global_step": global_step,
        "reached_at": reached,
    }
