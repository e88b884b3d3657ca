"""Checks that ordinary update_params calls make no device-to-host transfer.

Runs a few warm-up steps, then `--steps` ordinary steps (no reset, no 100-step logging)
under `jax.transfer_guard_device_to_host("disallow")`: any `float()`, `.item()` or
`np.asarray` of a device value inside them raises. On a GPU or TPU this is a real
check; on CPU the guard never fires (host memory is the device's memory), and
tests/test_submission.py shows the same property by timing instead.

    python -m scripts.check_transfers
"""

import argparse

import jax

from cyclic_soft_reset import submission
from scripts.local import workloads


def build_parser() -> argparse.ArgumentParser:
    """The command line's options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="digits", choices=list(workloads.WORKLOAD_NAMES))
    parser.add_argument("--steps", type=int, default=50)
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)

    workload = workloads.make_workload(args.workload)
    rng = jax.random.PRNGKey(0)
    params, model_state = workload.init_model_fn(rng)
    queue = workload._build_input_queue(rng, "train", None, 128)
    hyperparameters = {"cycle_budget_factor": 100.0}  # No boundary within the check.
    state = submission.init_optimizer_state(workload, params, model_state, hyperparameters, rng)
    metric = f"validation/{workload.target_metric_name}"
    eval_results = [(1, {"validation/loss": 2.0, metric: 0.1})]

    def step(t, state, params, model_state):
        batch = next(queue)
        if t % 10 == 0:  # An evaluation: the controller reads it and re-fits the plan.
            eval_results.append((t, {"validation/loss": 2.0 - t / 1000, metric: 0.1}))
        train_state = {"accumulated_submission_time": 0.01 * t}  # As the runner passes it.
        return submission.update_params(
            workload, params, None, model_state, hyperparameters, batch, None, state,
            eval_results, t, jax.random.fold_in(rng, t), train_state,
        )  # fmt: skip

    for t in range(1, 4):  # Start-up: the first call may read the device once.
        state, params, model_state = step(t, state, params, model_state)
    jax.block_until_ready(params)
    with jax.transfer_guard_device_to_host("disallow"):
        for t in range(4, 4 + args.steps):
            if t % 100 == 0:
                continue
            state, params, model_state = step(t, state, params, model_state)
        jax.block_until_ready(params)
    platform = jax.devices()[0].platform
    samples = int(state[0].controller.time_samples.shape[0]) - 1  # The origin excepted.
    print(
        f"{args.steps} ordinary steps ({samples} of them reading an evaluation and re-fitting "
        f"the plan to the time budget) on {jax.device_count()} x {platform} under "
        f"transfer_guard_device_to_host('disallow'): no device-to-host transfer"
        + (" (vacuous on cpu)" if platform == "cpu" else "")
    )


if __name__ == "__main__":
    main()
