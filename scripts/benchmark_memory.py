"""Device memory of an ordinary step and of a reset, with the cycle's start (the rollback
snapshot) kept on the device or in host memory.

    python -m scripts.benchmark_memory [--workload digits] [--hidden 1024,1024,1024]

Two numbers per setting, from XLA's own accounting of the compiled functions
(`compiled.memory_analysis()`, available on CPU and GPU alike), so that they do not depend
on what else the machine runs:
  * resident: the bytes the run keeps on the device between steps: params, model state,
    optimizer state, and the snapshot when it is on the device;
  * peak of a call: resident + the call's arguments that are not resident (the batch; at a
    reset, the fresh initialisation and a snapshot brought from the host) + its outputs
    that do not reuse a donated input + its temporaries.
With the device's own counter (`memory_stats()['peak_bytes_in_use']`, GPU and TPU) it
prints the measured peak too.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from cyclic_soft_reset import hyperparameters, reset, steps, submission
from scripts.local import workloads


def nbytes(tree) -> int:
    return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def analysis(jitted, *args):
    """(argument, output, alias, temp) bytes of the compiled call."""
    stats = jitted.lower(*args).compile().memory_analysis()
    if stats is None:
        return None
    return (
        stats.argument_size_in_bytes,
        stats.output_size_in_bytes,
        stats.alias_size_in_bytes,
        stats.temp_size_in_bytes,
    )


def measure(workload, on_host: bool, batch_size: int) -> dict[str, float]:
    rng = jax.random.PRNGKey(0)
    params, model_state = workload.init_model_fn(rng)
    # A plan of 3 cycles, so that there is a reset into cycle 1 to measure.
    hp = {"snapshot_on_host": on_host, "num_cycles": 3}
    optimizer_state = submission.init_optimizer_state(workload, params, model_state, hp, rng)
    state, runtime = optimizer_state
    batch = next(workload._build_input_queue(rng, "train", None, batch_size))
    params, model_state = jax.device_put((params, model_state), runtime.replicated)
    resident = nbytes((params, model_state, state.opt_state))
    snapshot = nbytes((state.start.params, state.start.model_state))
    if not on_host:
        resident += snapshot
    step_args = (state.opt_state, params, model_state, batch, rng)
    step = analysis(runtime.train_step, *step_args)
    plan = state.controller.plan
    cycle = steps.cycle_args(plan, 1, tau=0.3, step=plan.boundaries[1])
    current = reset.TrainState(params, model_state, state.opt_state)
    source = steps.init_source(state.controller.seed, 1)  # The fresh init's key.
    reset_args = (current, state.start, cycle, batch, rng, source)
    at_reset = analysis(runtime.reset_step.traced, *reset_args)
    out = {"resident": resident, "snapshot": snapshot, "params": nbytes(params)}
    for name, stats, extra in (
        ("step", step, nbytes(batch)),
        ("reset", at_reset, nbytes(batch) + (snapshot if on_host else 0)),
    ):
        if stats is not None:
            _, output, alias, temp = stats
            out[f"peak_{name}"] = resident + extra + (output - alias) + temp
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command line's options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="digits", choices=list(workloads.WORKLOAD_NAMES))
    parser.add_argument("--hidden", default="1024,1024,1024", help="hidden layer widths")
    parser.add_argument("--batch_size", type=int, default=256)
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    hyperparameters.resolve(None)
    print(
        f"devices: {jax.device_count()} x {jax.devices()[0].platform}, workload "
        f"{args.workload}, hidden {hidden}, batch {args.batch_size}"
    )
    print(
        f"{'snapshot':10s} {'resident':>12s} {'peak step':>12s} {'peak reset':>12s} "
        f"{'reset - step':>14s}"
    )
    rows = {}
    for on_host in (False, True):
        workload = workloads.make_workload(args.workload, hidden_sizes=hidden)
        rows[on_host] = row = measure(workload, on_host, args.batch_size)
        where = "host" if on_host else "device"
        mib = {k: v / 2**20 for k, v in row.items()}
        extra = (row.get("peak_reset", 0) - row.get("peak_step", 0)) / row["params"]
        print(
            f"{where:10s} {mib['resident']:10.2f} MiB {mib.get('peak_step', 0):8.2f} MiB "
            f"{mib.get('peak_reset', 0):8.2f} MiB {extra:+8.2f} params"
        )
    print(f"the snapshot: {rows[False]['snapshot'] / 2**20:.2f} MiB (one copy of params + stats)")


if __name__ == "__main__":
    main()
