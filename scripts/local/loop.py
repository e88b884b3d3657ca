"""A minimal AlgoPerf-style loop for the tests: the runner's calls, evals every N steps.

It also checkpoints and restores the way AlgoPerf's runner intends (flax serialization
of params, model state, optimizer_state[0], eval_results and global_step; the second
half of optimizer_state rebuilt by a fresh init_optimizer_state).
"""

import jax
import numpy as np
from flax import serialization

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


def save_checkpoint(path, optimizer_state, params, model_state, eval_results, global_step):
    """Writes what AlgoPerf's runner checkpoints: optimizer_state[0], never [1]."""
    checkpoint = {
        "params": jax.device_get(params),
        "model_state": jax.device_get(model_state),
        "optimizer_state": jax.device_get(optimizer_state[0]),
        "eval_results": list(eval_results),
        "global_step": global_step,
    }
    with open(path, "wb") as f:
        f.write(serialization.msgpack_serialize(serialization.to_state_dict(checkpoint)))


def restore_checkpoint(path, fresh_optimizer_state, params, model_state):
    """Restores onto fresh targets; eval_results come back in the runner's shape today.

    AlgoPerf's restore returns eval_results as [({'0': step, '1': metrics}, '0'), ...]
    (ALGOPERF.md): reproduced here, newest first, so the submission must parse it.
    """
    with open(path, "rb") as f:
        raw = serialization.msgpack_restore(f.read())
    optimizer_state = (
        serialization.from_state_dict(fresh_optimizer_state[0], raw["optimizer_state"]),
        fresh_optimizer_state[1],
    )
    params = serialization.from_state_dict(params, raw["params"])
    model_state = serialization.from_state_dict(model_state, raw["model_state"])
    entries = raw["eval_results"] or {}
    eval_results = [(entries[key], "0") for key in sorted(entries, key=int, reverse=True)]
    return optimizer_state, params, model_state, eval_results, int(raw["global_step"])


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
    checkpoint_at: int | None = None,
    checkpoint_path=None,
    resume_from=None,
):
    """Trains through submission.py like AlgoPerf's train_once; returns a dict of results.

    `on_step(global_step, optimizer_state, params, model_state, eval_results)` is called
    after each step (and its eval) and may return True to stop. With `checkpoint_at`, the
    state after that many steps (and the eval there) is saved to `checkpoint_path` and the
    run stops; with `resume_from`, the run continues from such a checkpoint.
    """
    rng = jax.random.PRNGKey(seed)
    data_rng, opt_rng, model_rng = jax.random.split(rng, 3)
    params, model_state = workload.init_model_fn(model_rng)
    optimizer_state = submission.init_optimizer_state(
        workload, params, model_state, hyperparameters, opt_rng
    )
    eval_results = [] if eval_results is None else eval_results
    global_step = 0
    if resume_from is not None:
        optimizer_state, params, model_state, eval_results, global_step = restore_checkpoint(
            resume_from, optimizer_state, params, model_state
        )
    batches = workload.train_batches(seed, batch_size, global_step)
    learning_rates, reached = [], None
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
        if checkpoint_at == global_step:
            save_checkpoint(
                checkpoint_path, optimizer_state, params, model_state, eval_results, global_step
            )
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
