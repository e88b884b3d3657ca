"""The local runner's checkpoints: what AlgoPerf's runner saves and restores (flax
msgpack), plus the input batches drawn and a simulated clock's time, so that a run
resumed in a fresh process continues bit for bit."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jax
from flax import serialization


class CountingQueue(Iterator[Any]):
    """The runner's input queue, counting the batches drawn (for checkpoints)."""

    def __init__(self, queue: Any, drawn: int = 0) -> None:
        self._queue = iter(queue)
        self.drawn = drawn

    def __next__(self) -> Any:
        batch = next(self._queue)
        self.drawn += 1
        return batch


class Checkpoint(NamedTuple):
    """What a checkpoint holds: AlgoPerf's fields (its ``optimizer_state`` is the whole
    pair here; only ``optimizer_state[0]`` is written), the number of batches drawn from
    the input queue, so that a resumed run sees the batches it would have, and a simulated
    clock's time (nan for the wall clock)."""

    optimizer_state: Any
    params: Any
    model_state: Any
    train_state: dict[str, Any]
    eval_results: list
    global_step: int
    preemption_count: int
    input_batches: int
    clock_time: float = math.nan


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> None:
    """Write what AlgoPerf's runner checkpoints (flax msgpack), atomically.

    The keys are AlgoPerf's (``model_params``, ``optimizer_state`` = ``optimizer_state[0]``
    only, never ``[1]``, ``model_state``, ``train_state``, ``eval_results`` as a tuple,
    ``global_step``, ``preemption_count``) plus ``input_batches`` and ``clock_time``.
    """
    c = checkpoint
    state = {
        "model_params": jax.device_get(c.params),
        "optimizer_state": jax.device_get(c.optimizer_state[0]),
        "model_state": jax.device_get(c.model_state),
        "train_state": dict(c.train_state),
        "eval_results": tuple(c.eval_results),
        "global_step": int(c.global_step),
        "preemption_count": int(c.preemption_count),
        "input_batches": int(c.input_batches),
        "clock_time": float(c.clock_time),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(serialization.msgpack_serialize(serialization.to_state_dict(state)))
    os.replace(partial, path)


def restore_checkpoint(
    path: str | os.PathLike,
    optimizer_state: Any,
    params: Any,
    model_state: Any,
    train_state: dict[str, Any],
) -> Checkpoint:
    """Restore a checkpoint onto fresh targets, as AlgoPerf's ``maybe_restore_checkpoint``.

    ``optimizer_state[1]`` stays the fresh one's; eval_results come back in the shape
    AlgoPerf's restore gives them today, ``[({'0': step, '1': metrics}, '0'),
    ({'0': step, '1': metrics}, '1'), ...]`` (the flax state dict of each saved
    ``(step, metrics)`` and its index, oldest first), and the preemption count goes up
    by one. A checkpoint without ``input_batches`` (AlgoPerf's own) counts one batch per
    step.
    """
    raw = serialization.msgpack_restore(Path(path).read_bytes())
    global_step = int(raw["global_step"])
    return Checkpoint(
        optimizer_state=(serialization.from_state_dict(optimizer_state[0], raw["optimizer_state"]),)
        + tuple(optimizer_state[1:]),
        params=serialization.from_state_dict(params, raw["model_params"]),
        model_state=serialization.from_state_dict(model_state, raw["model_state"]),
        train_state=serialization.from_state_dict(train_state, raw["train_state"]),
        eval_results=[(value, key) for key, value in (raw["eval_results"] or {}).items()],
        global_step=global_step,
        preemption_count=int(raw["preemption_count"]) + 1,
        input_batches=int(raw.get("input_batches", global_step)),
        clock_time=float(raw.get("clock_time", math.nan)),
    )
