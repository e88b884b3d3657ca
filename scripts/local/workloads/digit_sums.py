"""``digit_sums`` (the default): two 8x8 digits side by side, predict their sum (19 classes).

Hard enough that accuracy keeps improving for hundreds of steps, so the target needs two
cycles. Target metric ``accuracy``, higher is better.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .base import (
    EVAL_SPLITS,
    SPLIT_SEED,
    WorkloadConfig,
    WorkloadEntry,
    fixed_pairs,
    random_pair_batches,
)
from .digits import DigitsWorkload


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
