"""Why `soft` does not recover from a failed first cycle on digits and breast_cancer.

Two probes behind the evidence report's failed-cycle rows (docs/evidence.md), each on the
report's "failed first cycle" runs (seeds 0-1), through the local runner and the real
submission:

    .venv/bin/python -m scripts.experiments.probe_failed_resets

1. digits (batch norm): accuracy one step after the planned reset at step 30, evaluated
   with the model state the strategy produced, and with batch-norm statistics
   re-estimated on 30 training batches (same params). A large gap means the blended
   running statistics, not the blended weights, cost the accuracy.
2. breast_cancer (no batch norm): at the reset (step 20), tau, the global norm of the
   params before the reset, of the fresh init, and of what (1 - tau) keeps of the old
   params. When that residue is negligible, soft's params are the fresh ones and what
   separates it from `full` is the optimizer state it keeps: (1 - tau alpha) of the
   moments and the step count.

Recorded (jax 0.10.2, CPU): 1. soft 0.320 / 0.331 with its statistics, 0.797 / 0.805
re-estimated (none 0.794 / 0.749 and 0.858 / 0.827; full 0.142 / 0.120 and 0.159 /
0.134). 2. tau 0.9999996 / 0.9999986, |theta| 1064 / 1043, |theta0| 27.7, residue
0.00046 / 0.0015.
"""

import argparse

import jax
import numpy as np

from cyclic_soft_reset import submission
from cyclic_soft_reset.algoperf_compat import spec
from cyclic_soft_reset.records import resets_in
from scripts.experiments.design import RunSpec
from scripts.local import runner, workloads


def _norm(tree) -> float:
    return float(np.sqrt(sum(np.sum(np.square(np.asarray(x))) for x in jax.tree.leaves(tree))))


def _run(workload_name, variant, seed, steps):
    run = RunSpec(workload_name, "failed", variant, seed)
    workload = workloads.make_workload(workload_name, **run.workload_options())
    recorder = runner.MetricsRecorder()
    result = runner.train_once(
        workload,
        submission,
        run.hyperparameters(),
        seed,
        workload_name=workload_name,
        eval_every_steps=workload.eval_every_steps,
        max_global_steps=steps,
        stop_at_target=False,
        metrics_logger=recorder,
    )
    resets = resets_in(recorder.records)
    return workload, result, resets


def _accuracy(workload, params, model_state) -> float:
    metrics = workload.eval_model(256, params, model_state, jax.random.PRNGKey(0), None, None, 0)
    return metrics["validation/accuracy"]


def batch_norm_statistics(seeds=(0, 1)) -> None:
    print("1. digits, failed first cycle: validation accuracy one step after the reset at 30")
    for variant in ("soft", "none", "full"):
        for seed in seeds:
            workload, result, _ = _run("digits", variant, seed, steps=31)
            params, state = result.params, result.model_state

            batches = workload._build_input_queue(jax.random.PRNGKey(1), "train", None, 128)
            estimated = state
            for _ in range(30):  # Momentum 0.9: the old statistics weigh 0.9^30 = 4%.
                _, estimated = workload.model_fn(
                    params,
                    next(batches),
                    estimated,
                    spec.ForwardPassMode.TRAIN,
                    jax.random.PRNGKey(2),
                    True,
                    0.0,
                )
            print(
                f"  {variant:5s} seed {seed}: with its batch-norm statistics "
                f"{_accuracy(workload, params, state):.3f}, "
                f"re-estimated {_accuracy(workload, params, estimated):.3f}"
            )


def residual_params(seeds=(0, 1)) -> None:
    print("2. breast_cancer, failed first cycle: the params at the reset (step 20)")
    for seed in seeds:
        workload, before, _ = _run("breast_cancer", "soft", seed, steps=20)
        _, _, resets = _run("breast_cancer", "soft", seed, steps=21)
        tau = resets[0].tau
        key = jax.random.fold_in(np.asarray(before.optimizer_state[0].controller.seed), 1)
        fresh, _ = workload.init_model_fn(key)
        old = _norm(before.params)
        print(
            f"  seed {seed}: tau {tau:.7f}; |theta| {old:.4g}, |theta0| {_norm(fresh):.4g}, "
            f"kept (1 - tau)|theta| {(1 - tau) * old:.4g}"
        )


def build_parser() -> argparse.ArgumentParser:
    """The command line: no options (the probes' settings are the evidence grid's)."""
    return argparse.ArgumentParser(
        prog="python -m scripts.experiments.probe_failed_resets",
        description=__doc__.splitlines()[0],
    )


if __name__ == "__main__":
    build_parser().parse_args()
    batch_norm_statistics()
    residual_params()
