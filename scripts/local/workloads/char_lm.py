"""``char_lm``: a small causal transformer predicting the next byte of English text.

The benchmark's language workloads (WMT, LibriSpeech's decoders) in miniature. The text
is real and already installed: the standard library's ``pydoc_data.topics`` (Python's
own documentation of its keywords and statements, ~465,000 UTF-8 bytes on Python 3.11;
it changes with the Python version), the topics concatenated in sorted key order.
Tokens are its UTF-8 bytes (vocabulary 0-255, so no mapping table to keep).

Splits are fixed and contiguous: the byte stream is cut into blocks of ``BLOCK_BYTES``;
of every ``BLOCK_PERIOD`` blocks the second-to-last is validation, the last is test, the
rest is training (so every split samples the whole alphabet of topics). An example is a
window of ``context_length`` + 1 bytes: inputs are its first ``context_length`` bytes,
targets the next byte at each position. Training windows start anywhere in the training
stream (drawn uniformly, independently per batch); validation and test are their
split's consecutive non-overlapping windows; ``eval_train`` is as many windows as
validation, evenly spaced over the training stream.

Target metric: validation ``loss``, the mean cross-entropy per predicted byte (nats);
lower is better. ``accuracy`` (next-byte accuracy) is reported too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from cyclic_soft_reset.algoperf_compat import spec

from .base import SklearnWorkload, WorkloadConfig, WorkloadEntry
from .losses import token_correct_sum, token_cross_entropy
from .models import CausalTransformer

VOCAB_SIZE = 256
BLOCK_BYTES = 1024
BLOCK_PERIOD = 40


@dataclasses.dataclass(frozen=True)
class LMConfig(WorkloadConfig):
    """``WorkloadConfig`` plus the transformer's shape; ``hidden_sizes`` holds one
    width per block (all equal: the model width)."""

    context_length: int = 64
    num_heads: int = 4


@dataclasses.dataclass(frozen=True)
class TextSplits:
    """The byte streams (uint8) of the train/validation/test splits."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def load_text() -> bytes:
    """The UTF-8 bytes of every ``pydoc_data.topics`` text, in sorted key order."""
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics)).encode("utf-8")


def split_blocks(
    data: np.ndarray, block: int = BLOCK_BYTES, period: int = BLOCK_PERIOD
) -> TextSplits:
    """Cut ``data`` into blocks; block i is validation if i % period == period - 2,
    test if i % period == period - 1, training otherwise (each split concatenated in
    order)."""
    role = (np.arange(len(data)) // block) % period
    return TextSplits(
        train=data[role < period - 2],
        validation=data[role == period - 2],
        test=data[role == period - 1],
    )


def windows(tokens: np.ndarray, starts: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs tokens[s : s + length] and targets tokens[s + 1 : s + length + 1] for
    every start s, as int32 arrays (len(starts), length)."""
    window = tokens[starts[:, None] + np.arange(length + 1)].astype(np.int32)
    return window[:, :-1], window[:, 1:]


def consecutive_windows(tokens: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """The non-overlapping windows of a stream: starts 0, length, 2 length, ..."""
    starts = np.arange((len(tokens) - 1) // length) * length
    return windows(tokens, starts, length)


def random_window_batches(
    tokens: np.ndarray, length: int, batch_size: int, seed: int
) -> Iterator[dict[str, np.ndarray]]:
    """Infinite batches of windows whose starts are uniform over the stream."""
    rng = np.random.default_rng(seed)
    while True:
        starts = rng.integers(0, len(tokens) - length, size=batch_size)
        inputs, targets = windows(tokens, starts, length)
        yield {"inputs": inputs, "targets": targets}


class CharLMWorkload(SklearnWorkload):
    """Next-byte prediction on Python's documentation with a small GPT; target: loss.

    Lower is better: the target is reached when the validation loss per byte falls
    below the target value.
    """

    target_metric_name = "loss"
    higher_is_better = False
    loss_type = spec.LossType.SOFTMAX_CROSS_ENTROPY
    loss = staticmethod(token_cross_entropy)
    num_outputs = VOCAB_SIZE
    # Measured on this project's 2-core CPU (idle): 0.013 s per training step
    # at these sizes; 800 steps of AdamW (peak 1.7e-3, warm-up + cosine) take the
    # validation loss from 5.9 to 2.22 (docs/main-job.md).
    default_config = LMConfig(
        hidden_sizes=(64, 64),
        step_hint=800,
        # Provisional: reached near the end (step ~700) of one 800-step cosine cycle.
        validation_target_value=2.25,
        test_target_value=2.25,
        step_seconds=0.015,
        eval_every_steps=50,
        eval_batch_size=256,
        batch_size=16,
    )
    config: LMConfig

    def _make_model(self) -> CausalTransformer:
        widths = set(self.config.hidden_sizes)
        if len(widths) != 1:
            raise ValueError(
                "char_lm's hidden_sizes are its transformer blocks' widths and must be "
                f"equal, got {self.config.hidden_sizes}."
            )
        width = widths.pop()
        if width % self.config.num_heads:
            raise ValueError(
                f"char_lm's width {width} must be a multiple of num_heads {self.config.num_heads}."
            )
        return CausalTransformer(
            vocab_size=VOCAB_SIZE,
            width=width,
            num_layers=len(self.config.hidden_sizes),
            num_heads=self.config.num_heads,
            context_length=self.config.context_length,
        )

    def _init_inputs(self) -> jax.Array:
        return jnp.zeros((1, self.config.context_length), jnp.int32)

    @property
    def predictions_per_example(self) -> int:
        """Every position of a window is a prediction."""
        return self.config.context_length

    def _load_splits(self) -> TextSplits:
        return split_blocks(np.frombuffer(load_text(), dtype=np.uint8))

    def _make_eval_set(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        length = self.config.context_length
        if split != "eval_train":
            return consecutive_windows(getattr(self.data, split), length)
        count = (len(self.data.validation) - 1) // length
        starts = np.linspace(0, len(self.data.train) - length - 1, count).astype(np.int64)
        return windows(self.data.train, starts, length)

    def _train_stream(self, batch_size: int, seed: int) -> Iterator[dict[str, np.ndarray]]:
        return random_window_batches(self.data.train, self.config.context_length, batch_size, seed)

    @property
    def num_train_examples(self) -> int:
        """Distinct training windows (one per start)."""
        return len(self.data.train) - self.config.context_length

    def _metric_sums(
        self, labels: jax.Array, logits: jax.Array, weights: jax.Array
    ) -> dict[str, jax.Array]:
        return {"accuracy": token_correct_sum(labels, logits, weights)}


ENTRY = WorkloadEntry(
    "char_lm",
    CharLMWorkload,
    tiny={
        "hidden_sizes": (32, 32),
        "context_length": 32,
        "step_hint": 60,
        "eval_every_steps": 10,
        "step_seconds": 0.005,
    },
)
