"""The embedded workloads' networks (Flax linen) and what describes their parameters.

``MLP`` serves the scikit-learn workloads, ``CausalTransformer`` the character-level
language model. ``dropout`` takes a traced rate (submissions jit the rate as an
argument), which ``nn.Dropout`` does not. ``scale_params`` implements the held-out
variants' reparametrisation w = c * v (``WorkloadConfig.param_scale``).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cyclic_soft_reset.algoperf_compat import spec


def dropout(module: nn.Module, x: jax.Array, rate: float | jax.Array, train: bool) -> jax.Array:
    """Inverted dropout whose rate may be a traced value (unlike ``nn.Dropout``)."""
    if not train or (isinstance(rate, int | float) and rate == 0.0):
        return x
    keep_prob = 1.0 - jnp.asarray(rate, x.dtype)
    keep = jax.random.bernoulli(module.make_rng("dropout"), keep_prob, x.shape)
    return jnp.where(keep, x / jnp.maximum(keep_prob, 1e-6), jnp.zeros_like(x))


class MLP(nn.Module):
    """Dense -> [BatchNorm] -> ReLU -> dropout blocks, then a dense output layer."""

    hidden_sizes: tuple[int, ...]
    num_outputs: int
    use_batch_norm: bool = False

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool, dropout_rate: float | jax.Array = 0.0
    ) -> jax.Array:
        """Return logits of shape ``(batch, num_outputs)``."""
        for width in self.hidden_sizes:
            x = nn.Dense(width)(x)
            if self.use_batch_norm:
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            x = nn.relu(x)
            x = dropout(self, x, dropout_rate, train)
        return nn.Dense(self.num_outputs, name="output")(x)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + drop(attn(LN(x))), then x + drop(MLP(LN(x))).

    The feed-forward layer is 4x wide with a GELU, as in GPT-2.
    """

    width: int
    num_heads: int

    @nn.compact
    def __call__(
        self, x: jax.Array, mask: jax.Array, *, train: bool, dropout_rate: float | jax.Array
    ) -> jax.Array:
        """Return the block's output, the shape of ``x``: (batch, length, width)."""
        h = nn.LayerNorm()(x)
        # Dropout is ours (a traced rate) on the residual branches, none inside attention.
        h = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, deterministic=True)(
            h, h, mask=mask
        )
        x = x + dropout(self, h, dropout_rate, train)
        h = nn.LayerNorm()(x)
        h = nn.gelu(nn.Dense(4 * self.width)(h))
        h = nn.Dense(self.width)(h)
        return x + dropout(self, h, dropout_rate, train)


class CausalTransformer(nn.Module):
    """A small GPT: token + learned position embeddings, pre-LN blocks, final LN, logits.

    Position t's logits depend only on tokens 0..t (a causal attention mask).
    """

    vocab_size: int
    width: int
    num_layers: int
    num_heads: int
    context_length: int

    @nn.compact
    def __call__(
        self, tokens: jax.Array, *, train: bool, dropout_rate: float | jax.Array = 0.0
    ) -> jax.Array:
        """Return logits of shape ``(batch, length, vocab_size)`` for int tokens
        ``(batch, length)``, length <= context_length."""
        x = nn.Embed(self.vocab_size, self.width, name="embed")(tokens)
        positions = self.param(
            "position", nn.initializers.normal(0.02), (self.context_length, self.width)
        )
        x = x + positions[: tokens.shape[1]]
        x = dropout(self, x, dropout_rate, train)
        mask = nn.make_causal_mask(tokens)
        for _ in range(self.num_layers):
            x = TransformerBlock(self.width, self.num_heads)(
                x, mask, train=train, dropout_rate=dropout_rate
            )
        x = nn.LayerNorm()(x)
        return nn.Dense(self.vocab_size, name="output")(x)


_ATTENTION_KERNELS = {
    "query": spec.ParameterType.ATTENTION_Q,
    "key": spec.ParameterType.ATTENTION_K,
    "value": spec.ParameterType.ATTENTION_V,
    "out": spec.ParameterType.ATTENTION_OUT,
}


def _leaf_type(names: list[str]) -> Any:
    """The ``spec.ParameterType`` of a parameter from its path's names."""
    parent, name = (names[-2] if len(names) > 1 else ""), names[-1]
    if parent.startswith("BatchNorm"):
        if name == "scale":
            return spec.ParameterType.BATCH_NORM_SCALE
        return spec.ParameterType.BATCH_NORM_BIAS
    if parent.startswith("LayerNorm"):
        if name == "scale":
            return spec.ParameterType.LAYER_NORM_SCALE
        return spec.ParameterType.LAYER_NORM_BIAS
    if parent == "embed" or name == "position":
        return spec.ParameterType.EMBEDDING
    if parent in _ATTENTION_KERNELS and any(n.startswith("MultiHead") for n in names):
        if name == "bias":
            return spec.ParameterType.ATTENTION_BIAS
        return _ATTENTION_KERNELS[parent]
    return spec.ParameterType.BIAS if name == "bias" else spec.ParameterType.WEIGHT


def parameter_types(params: Any) -> Any:
    """Map every parameter leaf to a ``spec.ParameterType`` (same tree structure)."""

    def leaf_type(path: tuple, _: Any) -> Any:
        return _leaf_type([str(getattr(p, "key", p)) for p in path])

    return jax.tree_util.tree_map_with_path(leaf_type, params)


def check_param_scale(value: Any) -> float:
    """``value`` as a float if it is a finite number > 0; ValueError naming the field."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise ValueError(f"param_scale must be a finite number > 0, got {value!r}.")
    return float(value)


def scale_params(params: Any, scale: float) -> Any:
    """Multiply every leaf by ``scale``: w = c * v; ``params`` itself when c == 1.

    Returning the tree untouched at c == 1 keeps the default bit-identical (no
    multiplication, no change to the traced graph).
    """
    if scale == 1.0:
        return params
    return jax.tree.map(lambda v: v * jnp.asarray(scale, v.dtype), params)
