"""``digit_sums`` (the default): two 8x8 digits side by side, predict their sum (19 classes).

Hard enough that accuracy keeps improving for hundreds of steps, so the target needs two
cycles. Target metric ``accuracy``, higher is better.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .base import EVAL_SPLITS, SPLIT_SEED, WorkloadConfig, WorkloadEntry
from .digits import DigitsWorkload


def pair_up(
    x: np.ndarray, y: np.ndarray, first: np.ndarray, second: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate two images side by side; the label is the sum of their digits."""
    return np.concatenate([x[first], x[second]], axis=1), (y[first] + y[second]).astype(np.int32)


def fixed_pairs(
    x: np.ndarray, y: np.ndarray, num_pairs: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A fixed set of ``num_pairs`` random ordered pairs of a split's images."""
    rng = np.random.default_rng(seed)
    first, second = rng.integers(0, len(x), size=(2, num_pairs))
    return pair_up(x, y, first, second)


def random_pair_batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, seed: int
) -> Iterator[dict[str, np.ndarray]]:
    """Infinite batches of uniformly drawn ordered pairs of training images."""
    rng = np.random.default_rng(seed)
    while True:
        first, second = rng.integers(0, len(x), size=(2, batch_size))
        inputs, targets = pair_up(x, y, first, second)
        yield {"inputs": inputs, "targets": targets}


class DigitSumsWorkload(DigitsWorkload):
    """Sum of two 8x8 digits shown side by side (19 classes); target: accuracy.

    A harder task built from the same images: the network must read both digits
    and add them, so accuracy keeps improving for hundreds of steps instead of
    saturating within a few epochs. Training pairs are drawn afresh from the
    training images; validation/test (and ``eval_train``) are fixed sets of pairs of
    their own split's images. Higher is better.
    """

    num_outputs = 19
    num_eval_pairs = 2000
    default_config = WorkloadConfig(
        hidden_sizes=(512, 512, 512),
        use_batch_norm=True,
        step_hint=900,
        validation_target_value=0.93,
        test_target_value=0.92,
        eval_every_steps=25,
    )

    def _make_eval_set(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.data.arrays(split)
        seed = SPLIT_SEED + EVAL_SPLITS.index(split) + 1
        return fixed_pairs(x, y, self.num_eval_pairs, seed)

    def _train_stream(self, batch_size: int, seed: int) -> Iterator[dict[str, np.ndarray]]:
        return random_pair_batches(self.data.train_x, self.data.train_y, batch_size, seed)

    @property
    def num_train_examples(self) -> int:
        """Distinct ordered pairs of training images."""
        return len(self.data.train_x) ** 2


ENTRY = WorkloadEntry("digit_sums", DigitSumsWorkload)
