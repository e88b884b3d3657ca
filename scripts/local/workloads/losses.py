"""Losses and metric sums shared by every embedded workload (one implementation each).

Pure JAX/optax, no project imports: the packaged-submission test copies ``scripts/local``
(the runner and the workloads) away from the project and relies on that.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def masked_sums(per_example: jax.Array, mask: jax.Array | None) -> dict[str, jax.Array]:
    """AlgoPerf's loss dict: ``{'summed', 'n_valid_examples', 'per_example'}`` under an
    optional 0/1 mask."""
    if mask is not None:
        per_example = per_example * mask
        n_valid = jnp.sum(mask)
    else:
        n_valid = jnp.asarray(per_example.shape[0], per_example.dtype)
    return {
        "summed": jnp.sum(per_example),
        "n_valid_examples": n_valid,
        "per_example": per_example,
    }


def softmax_cross_entropy(
    labels: jax.Array,
    logits: jax.Array,
    mask: jax.Array | None = None,
    label_smoothing: float = 0.0,
) -> dict[str, jax.Array]:
    """AlgoPerf-style masked softmax cross-entropy with label smoothing."""
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    per_example = -jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1)
    return masked_sums(per_example, mask)


def sigmoid_cross_entropy(
    labels: jax.Array,
    logits: jax.Array,
    mask: jax.Array | None = None,
    label_smoothing: float = 0.0,
) -> dict[str, jax.Array]:
    """Masked binary cross-entropy on a single logit, with label smoothing."""
    logits = jnp.reshape(logits, (logits.shape[0],))
    targets = labels.astype(logits.dtype)
    targets = targets * (1.0 - label_smoothing) + 0.5 * label_smoothing
    per_example = optax.sigmoid_binary_cross_entropy(logits, targets)
    return masked_sums(per_example, mask)


def correct_sum(labels: jax.Array, logits: jax.Array, weights: jax.Array) -> jax.Array:
    """Weighted count of examples whose arg-max class is the label (accuracy's sum)."""
    return jnp.sum((jnp.argmax(logits, axis=-1) == labels) * weights)


def binary_error_sum(labels: jax.Array, logits: jax.Array, weights: jax.Array) -> jax.Array:
    """Weighted count of wrong signs of a single logit (error rate's sum)."""
    predicted = jnp.reshape(logits, (logits.shape[0],)) > 0
    return jnp.sum((predicted != (labels > 0)) * weights)


def token_cross_entropy(
    labels: jax.Array,
    logits: jax.Array,
    mask: jax.Array | None = None,
    label_smoothing: float = 0.0,
) -> dict[str, jax.Array]:
    """Softmax cross-entropy per predicted token (a language model's, as WMT's).

    ``labels`` (batch[, length]) index the last axis of ``logits``; a mask of shape
    (batch,) weighs whole sequences and is broadcast over their tokens. ``summed`` is
    the sum over valid tokens, ``n_valid_examples`` their count (every token when no
    mask), so summed / n_valid_examples is the mean loss per token.
    """
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    per_token = -jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1)
    weights = jnp.ones_like(per_token) if mask is None else jnp.asarray(mask, per_token.dtype)
    weights = jnp.broadcast_to(
        weights.reshape(weights.shape + (1,) * (per_token.ndim - weights.ndim)), per_token.shape
    )
    return {
        "summed": jnp.sum(per_token * weights),
        "n_valid_examples": jnp.sum(weights),
        "per_example": per_token * weights,
    }


def token_correct_sum(labels: jax.Array, logits: jax.Array, weights: jax.Array) -> jax.Array:
    """Weighted count of tokens whose arg-max is the label; per-sequence weights
    (batch,) are broadcast over the tokens (next-token accuracy's sum)."""
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(weights.dtype)
    weights = weights.reshape(weights.shape + (1,) * (correct.ndim - weights.ndim))
    return jnp.sum(correct * weights)
