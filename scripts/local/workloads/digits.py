"""``digits``: scikit-learn's 8x8 handwritten digits, 10 classes; target: accuracy."""

from __future__ import annotations

import jax
import numpy as np
from sklearn import datasets as sk_datasets

from cyclic_soft_reset.algoperf_compat import spec

from .base import DataSplits, SklearnWorkload, WorkloadConfig, WorkloadEntry, make_splits
from .losses import correct_sum, softmax_cross_entropy


class DigitsWorkload(SklearnWorkload):
    """8x8 digits (1797 images), MLP with batch norm; target: validation accuracy.

    Higher is better: the target is reached when accuracy exceeds the target value.
    """

    target_metric_name = "accuracy"
    higher_is_better = True
    loss_type = spec.LossType.SOFTMAX_CROSS_ENTROPY
    loss = staticmethod(softmax_cross_entropy)
    num_outputs = 10
    default_config = WorkloadConfig(
        hidden_sizes=(512, 512, 512),
        use_batch_norm=True,
        step_hint=300,
        validation_target_value=0.97,
        test_target_value=0.96,
        eval_every_steps=10,
    )

    def _load_splits(self) -> DataSplits:
        bunch = sk_datasets.load_digits()
        return make_splits(bunch.data.astype(np.float64), bunch.target)

    def _metric_sums(
        self, labels: jax.Array, logits: jax.Array, weights: jax.Array
    ) -> dict[str, jax.Array]:
        return {"accuracy": correct_sum(labels, logits, weights)}


ENTRY = WorkloadEntry("digits", DigitsWorkload)
