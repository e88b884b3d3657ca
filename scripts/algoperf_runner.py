"""AlgoPerf's own `submission_runner` on mock MNIST, on a short budget (run in AlgoPerf's venv).

    python -m scripts.algoperf_runner [our options] -- [submission_runner flags]

from the project root. It imports AlgoPerf's `submission_runner` and runs its `main`
unchanged, with only what a CI machine lacks or cannot wait for supplied around it:

* `--mock_examples N`: `tensorflow_datasets.testing.mock_data(num_examples=N)` around
  `main`, so MNIST is random data and nothing is downloaded (`0`: the real data in
  `--data_dir`, as on a cluster: `scripts/study` runs every task through this module);
* `--max_runtime_sec S` / `--eval_period_sec P`: the workload's `max_allowed_runtime_sec`
  and `eval_period_time_sec`, overridden in a subclass of the workload class the runner
  imports (the budget is 1.5 x S under `--tuning_ruleset=self`);
* `--simulated_step_sec D`: the runner's clock (`submission_runner.get_time`) advances by D
  at each call instead of reading the wall clock, so which steps are evaluated, the
  submission times and the submission's plan re-fits are the same on every run; the clock
  is saved beside each checkpoint (`simulated_clock.json`) and a resumed run reads it;
* `--preempt_after_checkpoints K`: the process exits (status 75) right after the runner's
  K-th checkpoint, as a preempted job would;
* `--fix_jax_restore`: a workaround of three bugs of AlgoPerf's JAX checkpoint restore at
  this snapshot (`algoperf/checkpoint_utils.py::maybe_restore_checkpoint`, see
  `restore_workaround`); without it `--resume_last_run` crashes on JAX.

Nothing of AlgoPerf is copied or edited on disk: the patches are attribute assignments in
this process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

PREEMPTED_STATUS = 75  # EX_TEMPFAIL: what the preempted run exits with.
CLOCK_FILE = "simulated_clock.json"


class Preempted(Exception):
    """Raised after the K-th checkpoint by `--preempt_after_checkpoints`."""


def build_parser() -> argparse.ArgumentParser:
    """Our options; everything after `--` goes to AlgoPerf's runner."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.algoperf_runner", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--mock_examples", type=int, default=10000)
    parser.add_argument("--max_runtime_sec", type=float, default=None)
    parser.add_argument("--eval_period_sec", type=float, default=None)
    parser.add_argument("--simulated_step_sec", type=float, default=None)
    parser.add_argument("--preempt_after_checkpoints", type=int, default=None)
    parser.add_argument("--fix_jax_restore", action="store_true")
    parser.add_argument(
        "--dump_restored", type=Path, default=None, help="write the state a resumed run restored"
    )
    return parser


def patch_workload_budget(runner, max_runtime_sec, eval_period_sec) -> None:
    """Makes the runner's `import_workload` return a subclass with our budget/period."""
    original = runner.workloads.import_workload

    def import_workload(*args, **kwargs):
        workload = original(*args, **kwargs)
        if kwargs.get("return_class"):
            return workload
        overrides = {}
        if max_runtime_sec is not None:
            overrides["max_allowed_runtime_sec"] = property(lambda self: max_runtime_sec)
        if eval_period_sec is not None:
            overrides["eval_period_time_sec"] = property(lambda self: eval_period_sec)
        if overrides:
            workload.__class__ = type(type(workload).__name__, (type(workload),), overrides)
        return workload

    runner.workloads.import_workload = import_workload


class SimulatedClock:
    """A clock that advances by `step` seconds at each reading; saved with checkpoints."""

    def __init__(self, step: float):
        self.step = step
        self.now = 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now

    def save(self, checkpoint_dir: str) -> None:
        """Writes the clock beside the checkpoint the runner just saved."""
        path = Path(checkpoint_dir) / CLOCK_FILE
        path.write_text(json.dumps({"now": self.now}), encoding="utf-8")

    def load(self, checkpoint_dir: str) -> None:
        """Continues from the clock of the last checkpoint, if there is one."""
        path = Path(checkpoint_dir) / CLOCK_FILE
        if path.exists():
            self.now = json.loads(path.read_text(encoding="utf-8"))["now"]


def patch_checkpoints(checkpoint_utils, clock, preempt_after, dump_restored=None) -> None:
    """Wraps `save_checkpoint` (save the clock, preempt after K saves) and
    `maybe_restore_checkpoint` (load the clock; write what it restored to `dump_restored`)."""
    save, restore = checkpoint_utils.save_checkpoint, checkpoint_utils.maybe_restore_checkpoint
    saves = []

    def save_checkpoint(*args, **kwargs):
        save(*args, **kwargs)
        if clock is not None:
            clock.save(kwargs["checkpoint_dir"])
        saves.append(kwargs.get("global_step"))
        if preempt_after is not None and len(saves) >= preempt_after:
            raise Preempted(f"preempted after checkpoint {len(saves)} (step {saves[-1]})")

    def maybe_restore_checkpoint(*args, **kwargs):
        if clock is not None:
            clock.load(kwargs["checkpoint_dir"])
        restored = restore(*args, **kwargs)
        if dump_restored is not None and restored[5] > 0:  # A checkpoint was found.
            write_state(dump_restored, restored)
        return restored

    checkpoint_utils.save_checkpoint = save_checkpoint
    checkpoint_utils.maybe_restore_checkpoint = maybe_restore_checkpoint


class _RestoredEvalResults:
    """The saved evaluations, shaped for the runner's `[(value, key) for key, value in
    ....items()]`: `items()` yields `(metrics, step)`, so the runner gets `(step, metrics)`."""

    def __init__(self, saved: dict):
        pairs = [saved[k] for k in sorted(saved, key=int)]  # {'0': {'0': step, '1': metrics}}
        self.pairs = [(int(p["0"]), {k: _scalar(v) for k, v in p["1"].items()}) for p in pairs]

    def items(self):
        return [(metrics, step) for step, metrics in self.pairs]


def _scalar(value):
    """A restored metric (a 0-d numpy array) as a Python number, as the runner logged it."""
    try:
        return value.item()
    except AttributeError:
        return value


def restore_workaround(checkpoint_utils) -> None:
    """Works around AlgoPerf's JAX restore at this snapshot (upstream bugs, not ours):

    1. `maybe_restore_checkpoint` gives flax `eval_results: None` as the restore target, so
       the evaluations come back as `None` and the runner crashes on `None.items()`
       (`AttributeError: 'NoneType' object has no attribute 'items'`). We read them from
       the same checkpoint without a target (a dict `{'0': {'0': step, '1': metrics}}`)
       and hand the runner `(step, metrics)` pairs in order (`_RestoredEvalResults`).
    2. it calls `replicate_checkpoint` with `replicate=True` (pmap-era code): the restored
       params and optimizer state get a leading device axis `(1, ...)`, which 0.6's jit +
       sharding code does not expect. We restore them unreplicated, as they were saved.
    3. its restore target for `train_state` holds the int 0 for every time, and flax casts
       the restored values to the target's types: `accumulated_submission_time`,
       `last_eval_time`, ... come back truncated to whole seconds. We take the saved
       values from the same untargeted read as in 1 (`_saved_times`).
    """
    flax_checkpoints = checkpoint_utils.flax_checkpoints
    restore, replicate = flax_checkpoints.restore_checkpoint, checkpoint_utils.replicate_checkpoint

    def restore_checkpoint(ckpt_dir, target=None, **kwargs):
        restored = restore(ckpt_dir, target=target, **kwargs)
        if isinstance(target, dict) and target.get("eval_results", 0) is None:
            raw = restore(ckpt_dir, target=None, **kwargs)
            if isinstance(raw, dict) and isinstance(raw.get("eval_results"), dict):
                restored["eval_results"] = _RestoredEvalResults(raw["eval_results"])
                restored["train_state"] = _saved_times(restored["train_state"], raw)
        return restored

    def replicate_checkpoint(latest, pytree_keys, replicate_flag=True):
        return replicate(latest, pytree_keys, replicate=False)

    checkpoint_utils.flax_checkpoints = _Namespace(flax_checkpoints, restore_checkpoint)
    checkpoint_utils.replicate_checkpoint = replicate_checkpoint


def _saved_times(train_state: dict, raw: dict) -> dict:
    """train_state with the saved values: restored against the runner's target, whose
    times are the int 0, the saved float times come back cast to int (truncated)."""
    saved = raw.get("train_state") or {}
    return {k: v if saved.get(k) is None else saved[k] for k, v in train_state.items()}


class _Namespace:
    """flax's `checkpoints` module with `restore_checkpoint` replaced (the module is shared
    with everything else in the process, so it is not edited)."""

    def __init__(self, module, restore_checkpoint):
        self._module = module
        self.restore_checkpoint = restore_checkpoint

    def __getattr__(self, name):
        return getattr(self._module, name)


STATE_KEYS = (
    "optimizer_state",
    "model_params",
    "model_state",
    "train_state",
    "eval_results",
    "global_step",
    "preemption_count",
)


def write_state(path: Path, restored) -> None:
    """The state `maybe_restore_checkpoint` returned, as flax saves a checkpoint (its state
    dict, msgpack), with `optimizer_state[0]` only and the preemption count it was saved
    with, so that it compares with the checkpoint file key by key."""
    from flax import serialization

    state = dict(zip(STATE_KEYS, restored, strict=True))
    state["optimizer_state"] = state["optimizer_state"][0]
    state["eval_results"] = tuple(state["eval_results"])
    state["preemption_count"] -= 1  # The runner returns the saved count + 1.
    path.write_bytes(serialization.msgpack_serialize(serialization.to_state_dict(state)))


NOT_RESTORED = "train_state/last_step_end_time"


def compare_restored(checkpoint: Path, dumped: Path) -> list[str]:
    """The keys where the state a resumed run restored (`write_state`) differs from the
    checkpoint file of another run, bit for bit; [] when equal."""
    import numpy as np
    from flax import serialization
    from flax.training import checkpoints

    saved = serialization.to_state_dict(checkpoints.restore_checkpoint(checkpoint, target=None))
    restored = serialization.msgpack_restore(dumped.read_bytes())
    flat_saved, flat_restored = _flatten(saved), _flatten(restored)
    # The runner restores train_state with `last_step_end_time: None` as the target (it
    # sets it to the start time right after), so that one value is not restored.
    flat_saved.pop(NOT_RESTORED, None)
    flat_restored.pop(NOT_RESTORED, None)
    differ = sorted(set(flat_saved) ^ set(flat_restored))
    for key in sorted(set(flat_saved) & set(flat_restored)):
        a, b = np.asarray(flat_saved[key]), np.asarray(flat_restored[key])
        if not (a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()):
            differ.append(key)
    return differ


def _flatten(tree, prefix="") -> dict:
    """A nested state dict as {'a/b/c': leaf}."""
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}/"))
        return out
    if tree is None:  # An empty node (optax's EmptyState): orbax gives None, flax {}.
        return {}
    return {prefix.rstrip("/"): tree}


def main(argv: Sequence[str] | None = None) -> int:
    """Runs AlgoPerf's `submission_runner.main` with the patches our options ask for."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = build_parser().parse_args(argv[:split])
    runner_argv = ["submission_runner", *argv[split + 1 :]]

    import submission_runner as runner
    import tensorflow_datasets as tfds
    from absl import app
    from algoperf import checkpoint_utils

    patch_workload_budget(runner, args.max_runtime_sec, args.eval_period_sec)
    clock = None
    if args.simulated_step_sec is not None:
        clock = SimulatedClock(args.simulated_step_sec)
        runner.get_time = clock
    if args.fix_jax_restore:
        restore_workaround(checkpoint_utils)
    patch_checkpoints(checkpoint_utils, clock, args.preempt_after_checkpoints, args.dump_restored)
    data = tfds.testing.mock_data(num_examples=args.mock_examples)
    try:
        with data if args.mock_examples > 0 else contextlib.nullcontext():
            app.run(runner.main, argv=runner_argv)
    except Preempted as stop:
        print(f"algoperf_runner: {stop}", file=sys.stderr, flush=True)
        os._exit(PREEMPTED_STATUS)  # As a killed job: no cleanup, no final checkpoint.
    except SystemExit as done:
        return int(done.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
