"""Our submission against AlgoPerf's external-tuning NAdamW baseline on AlgoPerf's own
workloads (JAX), with fake batches of each workload's real shapes (no dataset).

    python -m scripts.benchmark_algoperf                        # CPU-sized defaults
    python -m scripts.benchmark_algoperf --workloads ogbg,wmt --batch_sizes 512,128   # GPU

Needs `algoperf` installed (its workloads, and the baseline module, imported by path from
its work tree: `--baseline`). Per workload, in one process:
  * ordinary steps: blocks of `--steps` steps of the baseline's `update_params` and of
    ours alternate (the order flips every round); the median per-round ratio of step
    times, ours / baseline, is printed;
  * resets: the plan's cycles are `--cycle` steps long; the run jumps to the first two
    boundaries (global_step = cycle, then 2 x cycle), with evaluations that give tau > 0
    and an improving cycle, so each reset reads a fresh initialisation. A reset's cost is
    the time of that call less the median ordinary step, in units of ordinary steps. The
    reset is compiled ahead, in a background thread, during the first cycle
    (`compile_reset_ahead`); a real first cycle is thousands of steps, so the benchmark
    waits for that compilation before its timed steps, and prints its duration beside
    the step's compilation. `--no_ahead` compiles the reset at the first reset instead;
  * compilations (XLA backend compiles) after the first reset, to the end of the run;
  * memory: XLA's accounting of our compiled step and reset (`scripts.benchmark_memory`:
    peak = resident + non-resident arguments + new outputs + temporaries), and the
    device's own peak counter where the backend has one (GPU, TPU).
Models keep their real parameters (a reset's work is proportional to them); on a CPU the
batch is made smaller, WMT's sequences shorter and ImageNet's images smaller
(`--seq_len`, `--image_size`), so that a step takes seconds, not minutes. A smaller
step makes a reset look costlier in units of steps, not cheaper.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np

from cyclic_soft_reset import hyperparameters as schema
from cyclic_soft_reset import reset, steps, submission
from cyclic_soft_reset.algoperf_compat import HAVE_ALGOPERF, metric_direction
from scripts import benchmark_memory

WORKLOADS = ("ogbg", "wmt", "imagenet_resnet")
GPU_BATCH = {"ogbg": 512, "wmt": 128, "imagenet_resnet": 256}  # Our get_batch_size's scale.
CPU_BATCH = {"ogbg": 64, "wmt": 2, "imagenet_resnet": 4}
BASELINE = "algorithms/baselines/external_tuning/jax_nadamw_full_budget.py"

_COMPILES = []  # Filled by the listener main() registers; read between phases.


def _on_event(name, *args, **kwargs):
    if name == "/jax/core/compile/backend_compile_duration":
        _COMPILES.append(name)


def load_baseline(path: Path):
    """AlgoPerf's baseline submission module, imported from its file."""
    spec = importlib.util.spec_from_file_location("algoperf_nadamw_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_workload(name: str, cycle: int):
    """The AlgoPerf JAX workload `name`, its step hint set to the default number of
    cycles of `cycle` steps (the plan's first boundary at `cycle`, and a reset at
    2 x cycle: the second boundary or the plan's end); no metrics logger."""
    if name == "ogbg":
        from algoperf.workloads.ogbg.ogbg_jax.workload import OgbgWorkload as cls
    elif name == "wmt":
        from algoperf.workloads.wmt.wmt_jax.workload import WmtWorkload as cls
    elif name == "imagenet_resnet":
        from algoperf.workloads.imagenet_resnet.imagenet_jax.workload import (
            ImagenetResNetWorkload as cls,
        )
    else:
        raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")
    steps = schema.DEFAULTS["num_cycles"] * cycle
    short = type(f"Short{cls.__name__}", (cls,), {"step_hint": property(lambda _: steps)})
    workload = short()
    workload.metrics_logger = None
    return workload


def fake_batch(name: str, workload, batch_size: int, seq_len: int, image_size: int, seed=0):
    """A batch of the workload's input pipeline's shapes and dtypes, random values."""
    rng = np.random.default_rng(seed)
    if name == "wmt":
        tokens = lambda: rng.integers(1, 32000, (batch_size, seq_len)).astype(np.int32)  # noqa: E731
        return {
            "inputs": tokens(),
            "targets": tokens(),
            "weights": (rng.random((batch_size, seq_len)) < 0.8).astype(np.float32),
        }
    if name == "imagenet_resnet":
        return {
            "inputs": rng.normal(size=(batch_size, image_size, image_size, 3)).astype(np.float32),
            "targets": rng.integers(0, 1000, batch_size).astype(np.int32),
        }
    if name == "ogbg":
        return _ogbg_batch(workload, batch_size, rng)
    raise ValueError(name)


def _ogbg_batch(workload, batch_size: int, rng):
    """What ogbg's input pipeline yields for one device: `batch_size` graphs of the
    average size (26 nodes, 56 directed edges), padded as jraph.dynamically_batch pads."""
    import jraph
    from algoperf.workloads.ogbg import input_pipeline as pipeline

    nodes, edges = pipeline.AVG_NODES_PER_GRAPH, pipeline.AVG_EDGES_PER_GRAPH
    n = batch_size
    senders = (np.arange(n)[:, None] * nodes + rng.integers(0, nodes, (n, edges))).ravel()
    receivers = (np.arange(n)[:, None] * nodes + rng.integers(0, nodes, (n, edges))).ravel()
    graph = jraph.GraphsTuple(
        n_node=np.full(n, nodes, np.int32),
        n_edge=np.full(n, edges, np.int32),
        nodes=rng.normal(size=(n * nodes, 9)).astype(np.float32),
        edges=rng.normal(size=(n * edges, 3)).astype(np.float32),
        globals=(rng.random((n, workload._num_outputs)) < 0.5).astype(np.float32),
        senders=senders.astype(np.int32),
        receivers=receivers.astype(np.int32),
    )
    padded = jraph.pad_with_graphs(graph, n * nodes + 1, n * edges, n + 1)
    labels, weights = pipeline._get_weights_by_nan_and_padding(
        padded.globals, jraph.get_graph_padding_mask(padded)
    )
    return {"inputs": padded._replace(globals={}), "targets": labels, "weights": weights}


def evaluations(workload, cycle: int) -> list:
    """Fabricated evaluations: each cycle improves on the last, all below the target
    (tau > 0 at every reset, no cycle failed)."""
    target, higher = float(workload.validation_target_value), metric_direction(workload)
    key = f"validation/{workload.target_metric_name}"
    results = []
    for i, step in enumerate((1, cycle - 1, 2 * cycle - 1)):
        value = target * (0.3 + 0.2 * i) if higher else target * (3.0 - 0.5 * i)
        results.append((step, {key: value, "validation/loss": 2.0 - 0.5 * i}))
    return results


class Trainer:
    """One submission's update_params on its own copy of the params."""

    def __init__(self, module, workload, params, model_state, hyperparameters, batch, rng):
        self.module, self.workload, self.batch, self.rng = module, workload, batch, rng
        self.hyperparameters = hyperparameters
        self.params = jax.tree.map(jnp.copy, params)
        self.model_state = jax.tree.map(jnp.copy, model_state)
        self.state = module.init_optimizer_state(
            workload, self.params, self.model_state, hyperparameters, rng
        )
        self.eval_results = []

    def step(self, global_step: int) -> float:
        """Seconds of one update_params call at `global_step`, until its results are ready."""
        start = time.perf_counter()
        self.state, self.params, self.model_state = self.module.update_params(
            self.workload, self.params, None, self.model_state, self.hyperparameters,
            self.batch, None, self.state, self.eval_results, global_step, self.rng,
        )  # fmt: skip
        jax.block_until_ready((self.params, self.model_state))
        return time.perf_counter() - start

    def block(self, first: int, steps: int) -> float:
        """Median seconds per step over `steps` calls from `first`."""
        return statistics.median(self.step(t) for t in range(first, first + steps))


def bench(name: str, batch_size: int, args, baseline) -> dict:
    workload = make_workload(name, args.cycle)
    rng = jax.random.PRNGKey(0)
    params, model_state = workload.init_model_fn(rng)
    batch = fake_batch(name, workload, batch_size, args.seq_len, args.image_size)
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    config = schema.resolve(None)
    base_hparams = collections.namedtuple(
        "H",
        "learning_rate one_minus_beta1 beta2 weight_decay warmup_factor dropout_rate "
        "label_smoothing",
    )(
        config.learning_rate,
        config.one_minus_beta1,
        config.beta2,
        config.weight_decay,
        config.warmup_factor,
        config.dropout_rate,
        config.label_smoothing,
    )
    base = Trainer(baseline, workload, params, model_state, base_hparams, batch, rng)
    ours_hparams = {"early_switching": False, "compile_reset_ahead": not args.no_ahead}
    ours = Trainer(submission, workload, params, model_state, ours_hparams, batch, rng)
    del params, model_state
    ours.eval_results = evaluations(workload, args.cycle)[:1]

    first = {"baseline": base.step(1), "ours": ours.step(1)}  # Compiles each step.
    ahead = ours.state[1].reset_step.ahead
    if ahead.future is not None:
        ahead.future.result()  # As in a run's first cycle, thousands of steps long.
    ratios, times = [], {"baseline": [], "ours": []}
    t_ours = t_base = 2
    for r in range(args.rounds):
        order = ("baseline", "ours") if r % 2 == 0 else ("ours", "baseline")
        for who in order:
            if who == "ours":
                # Ordinary steps read nothing back from the device (a real check on an
                # accelerator; on CPU host memory is device memory and the guard is moot).
                with jax.transfer_guard_device_to_host("disallow"):
                    times["ours"].append(ours.block(t_ours, args.steps))
                t_ours += args.steps
            else:
                times["baseline"].append(base.block(t_base, args.steps))
                t_base += args.steps
        ratios.append(times["ours"][-1] / times["baseline"][-1])
    step_s = statistics.median(times["ours"])

    resets, compiles_after_first = [], None
    for i, boundary in enumerate((args.cycle, 2 * args.cycle)):
        ours.eval_results = evaluations(workload, args.cycle)[: i + 2]
        resets.append(ours.step(boundary) - step_s)
        if i == 0:
            compiles_after_first = len(_COMPILES)
        ours.block(boundary + 1, 3)
    compiles = len(_COMPILES) - compiles_after_first
    summary = submission.plan_summary(ours.state)
    assert summary["cycle"] == 2, f"expected two resets, the plan says {summary}"

    out = {
        "name": name,
        "batch": batch_size,
        "params": num_params,
        "step_baseline": statistics.median(times["baseline"]),
        "step_ours": step_s,
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "compile_step": first["ours"] - step_s,
        "resets": [t / step_s for t in resets],
        "reset_seconds": resets,
        "compiles_after_first_reset": compiles,
        "compile_reset_ahead": ahead.seconds,
    }
    out.update(memory(ours, workload, batch, rng))
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["device_peak"] = stats["peak_bytes_in_use"]
    return out


def memory_only(name: str, batch_size: int, args) -> dict:
    """XLA's accounting of our step and reset at the given shapes, compiled, never run: a
    CPU can tell the memory of a GPU-sized batch without the time to train on it."""
    workload = make_workload(name, args.cycle)
    rng = jax.random.PRNGKey(0)
    params, model_state = workload.init_model_fn(rng)
    batch = fake_batch(name, workload, batch_size, args.seq_len, args.image_size)
    ours = Trainer(
        submission, workload, params, model_state, {"early_switching": False}, batch, rng
    )
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    return {"name": name, "batch": batch_size, "params": num_params} | memory(
        ours, workload, batch, rng
    )


def memory(trainer: Trainer, workload, batch, rng) -> dict:
    """XLA's accounting of our compiled step and reset (compiled again, after the count)."""
    state, runtime = trainer.state
    params, model_state = trainer.params, trainer.model_state
    nbytes = benchmark_memory.nbytes
    resident = nbytes((params, model_state, state.opt_state, state.start))
    start = time.perf_counter()
    step = benchmark_memory.analysis(
        runtime.train_step, state.opt_state, params, model_state, batch, rng
    )
    compile_step = time.perf_counter() - start
    plan = state.controller.plan
    cycle = steps.cycle_args(plan, 1, tau=0.3, step=plan.boundaries[1])
    current = reset.TrainState(params, model_state, state.opt_state)
    source = steps.init_source(state.controller.seed, 1)
    start = time.perf_counter()
    at_reset = benchmark_memory.analysis(
        runtime.reset_step.traced, current, state.start, cycle, batch, rng, source
    )
    compile_reset = time.perf_counter() - start
    out = {
        "resident": resident,
        "param_bytes": nbytes(params),
        "compile_seconds": (compile_step, compile_reset),  # Tracing, lowering, compiling.
    }
    for key, stats in (("peak_step", step), ("peak_reset", at_reset)):
        if stats is not None:
            _, output, alias, temp = stats
            out[key] = resident + nbytes(batch) + (output - alias) + temp
    return out


def report(row: dict, args) -> None:
    mib = lambda b: f"{b / 2**20:.1f} MiB"  # noqa: E731
    print(f"\n== {row['name']}: batch {row['batch']}, {row['params'] / 1e6:.2f} M params")
    if "ratio" not in row:  # --memory_only
        extra = (row["peak_reset"] - row["peak_step"]) / row["param_bytes"]
        print(
            f"  memory (XLA accounting, compiled only): resident {mib(row['resident'])}, peak "
            f"step {mib(row['peak_step'])}, peak reset {mib(row['peak_reset'])} ({extra:+.2f} "
            f"params copies vs the step; params {mib(row['param_bytes'])})"
        )
        step_s, reset_s = row["compile_seconds"]
        print(
            f"  compilation: step {step_s:.1f} s, reset {reset_s:.1f} s "
            f"({reset_s / step_s:.2f} x the step's; the first reset's cost beyond a later one)"
        )
        return
    print(
        f"  ordinary step: baseline {row['step_baseline'] * 1e3:.1f} ms, ours "
        f"{row['step_ours'] * 1e3:.1f} ms, median ratio ours/baseline {row['ratio']:.3f} "
        f"(rounds {min(row['ratios']):.3f} to {max(row['ratios']):.3f})"
    )
    first, later = row["resets"]
    ahead = row["compile_reset_ahead"]
    how = (
        f"compiled ahead in {ahead:.2f} s, {ahead / row['compile_step']:.2f} x"
        if ahead is not None
        else "compiling the reset; beside"
    )
    print(
        f"  reset: first {first:.1f} steps ({row['reset_seconds'][0]:.2f} s, {how} the "
        f"step's compilation, {row['compile_step']:.2f} s), later {later:.1f} steps "
        f"({row['reset_seconds'][1]:.3f} s)"
    )
    print(f"  compilations after the first reset: {row['compiles_after_first_reset']}")
    if "peak_reset" in row:
        extra = (row["peak_reset"] - row["peak_step"]) / row["param_bytes"]
        print(
            f"  memory (XLA accounting): resident {mib(row['resident'])}, peak step "
            f"{mib(row['peak_step'])}, peak reset {mib(row['peak_reset'])} "
            f"({extra:+.2f} params copies vs the step; params {mib(row['param_bytes'])})"
        )
    if "device_peak" in row:
        print(f"  device peak_bytes_in_use (process, both submissions): {mib(row['device_peak'])}")


def build_parser() -> argparse.ArgumentParser:
    """The command line's options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument(
        "--batch_sizes", default=None, help="comma-separated, one per workload (default by device)"
    )
    parser.add_argument("--seq_len", type=int, default=None, help="WMT (default 256; CPU 64)")
    parser.add_argument(
        "--image_size", type=int, default=None, help="ImageNet (default 224; CPU 64)"
    )
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=6, help="timed blocks per submission")
    parser.add_argument("--cycle", type=int, default=100_000, help="steps per cycle")
    parser.add_argument(
        "--baseline", default=None, help=f"the baseline (default <algoperf>/{BASELINE})"
    )
    parser.add_argument(
        "--no_ahead",
        action="store_true",
        help="compile the reset at the first reset, not ahead in the background",
    )
    parser.add_argument(
        "--memory_only",
        action="store_true",
        help="only XLA's memory accounting of our step and reset, compiled and not run "
        "(e.g. GPU shapes on a CPU: --batch_sizes 512,128,256 --seq_len 256 --image_size 224)",
    )
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not HAVE_ALGOPERF:
        print(
            "benchmark_algoperf needs AlgoPerf installed (pip install -e <algoperf work tree>, "
            "with its jax extras); it is not.",
            file=sys.stderr,
        )
        return 2
    import algoperf

    platform = jax.devices()[0].platform
    on_cpu = platform == "cpu"
    names = args.workloads.split(",")
    sizes = (
        [int(b) for b in args.batch_sizes.split(",")]
        if args.batch_sizes
        else [(CPU_BATCH if on_cpu else GPU_BATCH)[n] for n in names]
    )
    args.seq_len = args.seq_len or (64 if on_cpu else 256)
    args.image_size = args.image_size or (64 if on_cpu else 224)
    path = Path(args.baseline or Path(algoperf.__file__).resolve().parents[1] / BASELINE)
    baseline = load_baseline(path)
    jax.monitoring.register_event_duration_secs_listener(_on_event)
    print(
        f"jax {jax.__version__}, {jax.device_count()} x {platform} "
        f"({jax.devices()[0].device_kind}); baseline {path}"
    )
    print(
        f"real models; batches {dict(zip(names, sizes, strict=True))}, WMT sequences of "
        f"{args.seq_len} tokens (real: 256), ImageNet images {args.image_size}px (real: 224); "
        + ("memory only" if args.memory_only else f"{args.rounds} rounds of {args.steps} steps")
    )
    for name, size in zip(names, sizes, strict=True):
        row = (
            memory_only(name, size, args) if args.memory_only else bench(name, size, args, baseline)
        )
        report(row, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
