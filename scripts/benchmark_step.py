"""Times submission.update_params against a plain jitted optax.adamw step.

Both run the same model, batch, loss and shardings, side by side in one process:
rounds alternate between the two (the order flips every round), each round times
`--steps` consecutive steps ending in a block_until_ready, and the script prints the
median per-step time of each and the median of the per-round ratios
(ours / plain AdamW). The cycle plan is stretched so that no reset falls inside the
timed steps: this measures the cost of an ordinary step (scheduling, host-side
bookkeeping, the extra state), not of resets.

    python -m scripts.benchmark_step                       # CPU-sized default
    python -m scripts.benchmark_step --hidden 4096,4096,4096 --batch_size 1024   # GPU
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cyclic_soft_reset import hyperparameters, submission
from cyclic_soft_reset.algoperf_compat import mean_loss
from scripts.local import workloads


def plain_adamw_step(workload, tx, dropout_rate):
    """A jitted AdamW step with the shardings and donation the submission uses."""
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("batch"))

    def step(opt_state, params, model_state, batch, rng):
        def loss_fn(p):  # The same loss as the submission's step.
            return mean_loss(workload, p, model_state, batch, rng, dropout_rate)

        (loss, new_model_state), grad = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grad, opt_state, params)
        return opt_state, optax.apply_updates(params, updates), new_model_state, loss

    return jax.jit(
        step,
        in_shardings=(replicated, replicated, replicated, sharded, replicated),
        out_shardings=replicated,
        donate_argnums=(0, 1, 2),
    ), replicated


def copy_tree(tree):
    return jax.tree.map(jnp.copy, tree)


def build_parser() -> argparse.ArgumentParser:
    """The command line's options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="digits", choices=list(workloads.WORKLOAD_NAMES))
    parser.add_argument("--hidden", default="1024,1024,1024", help="hidden layer widths")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=9)
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)

    hidden = tuple(int(h) for h in args.hidden.split(","))
    workload = workloads.make_workload(args.workload, hidden_sizes=hidden)
    overrides = {"cycle_budget_factor": 1e4}  # One long cycle: no reset while timing.
    config = hyperparameters.resolve(overrides)
    rng = jax.random.PRNGKey(0)
    params, model_state = workload.init_model_fn(rng)
    batch = next(workload._build_input_queue(rng, "train", None, args.batch_size))

    # Ours, through the public entry points.
    ours_state = submission.init_optimizer_state(
        workload, copy_tree(params), copy_tree(model_state), overrides, rng
    )
    ours = [ours_state, copy_tree(params), copy_tree(model_state)]
    # Plain AdamW with the same numbers and a constant learning rate.
    tx = optax.adamw(
        config.learning_rate,
        b1=1 - config.one_minus_beta1,
        b2=config.beta2,
        eps=1e-8,
        weight_decay=config.weight_decay,
    )
    plain_step, replicated = plain_adamw_step(workload, tx, config.dropout_rate)
    plain = jax.device_put([tx.init(params), copy_tree(params), copy_tree(model_state)], replicated)
    step_counter = {"ours": 0}

    def run_ours(n):
        for _ in range(n):
            t = step_counter["ours"] = step_counter["ours"] + 1
            ours[:] = submission.update_params(
                workload, ours[1], None, ours[2], overrides, batch, None, ours[0],
                [], t, jax.random.fold_in(rng, t),
            )  # fmt: skip
        jax.block_until_ready(ours[1])

    def run_plain(n):
        for t in range(n):
            opt_state, p, m, _ = plain_step(*plain, batch, jax.random.fold_in(rng, t))
            plain[:] = [opt_state, p, m]
        jax.block_until_ready(plain[1])

    run_ours(3), run_plain(3)  # Compile and warm up.
    times = {"ours": [], "plain": []}
    for r in range(args.rounds):
        order = [("ours", run_ours), ("plain", run_plain)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fn(args.steps)
            times[name].append((time.perf_counter() - start) / args.steps)
    ratios = [o / p for o, p in zip(times["ours"], times["plain"], strict=True)]
    print(
        f"devices: {jax.device_count()} x {jax.devices()[0].platform}, workload "
        f"{args.workload}, hidden {hidden}, batch {args.batch_size}, "
        f"{args.rounds} rounds x {args.steps} steps"
    )
    print(f"plain optax.adamw step: {statistics.median(times['plain']) * 1e3:9.3f} ms (median)")
    print(f"submission.update_params: {statistics.median(times['ours']) * 1e3:7.3f} ms (median)")
    print(f"ratio ours / plain: median {statistics.median(ratios):.4f} "
          f"(rounds: {', '.join(f'{x:.3f}' for x in ratios)})")  # fmt: skip


if __name__ == "__main__":
    main()
