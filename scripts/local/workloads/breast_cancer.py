"""``breast_cancer``: Wisconsin diagnostic data, binary; target: validation cross-entropy.

Sigmoid cross-entropy; target metric ``loss`` (as Criteo's), lower is better.
"""

from __future__ import annotations

import jax
import numpy as np
from sklearn import datasets as sk_datasets

from cyclic_soft_reset.algoperf_compat import spec

from .base import DataSplits, SklearnWorkload, WorkloadConfig, WorkloadEntry, make_splits
from .losses import binary_error_sum, sigmoid_cross_entropy


class BreastCancerWorkload(SklearnWorkload):
    """Wisconsin breast cancer (569 cases), MLP; target: validation cross-entropy.

    Lower is better: the target is reached when the loss falls below the target.
    """

    target_metric_name = "loss"
    higher_is_better = False
    loss_type = spec.LossType.SIGMOID_CROSS_ENTROPY
    loss = staticmethod(sigmoid_cross_entropy)
    num_outputs = 1
    default_config = WorkloadConfig(
        hidden_sizes=(256, 256, 256),
        use_batch_norm=False,
        step_hint=300,
        validation_target_value=0.13,
        test_target_value=0.2,
        step_seconds=0.005,
        eval_every_steps=5,
        batch_size=64,
    )

    def _load_splits(self) -> DataSplits:
        bunch = sk_datasets.load_breast_cancer()
        return make_splits(bunch.data.astype(np.float64), bunch.target)

    def _metric_sums(
        self, labels: jax.Array, logits: jax.Array, weights: jax.Array
    ) -> dict[str, jax.Array]:
        return {"error_rate": binary_error_sum(labels, logits, weights)}


ENTRY = WorkloadEntry("breast_cancer", BreastCancerWorkload)
