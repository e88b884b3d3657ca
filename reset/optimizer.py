"""The optimizer the method runs: AdamW, or NAdamW, from optax parts (METHOD.md section 2).

NAdamW is AlgoPerf's (its baselines' `scale_by_nadam`; "simpler" NAdam of
Choi et al. 2019, arXiv:1910.05446, Table 1): m_hat = (b1 m + (1 - b1) g) / (1 - b1^n),
both terms debiased by the current step's divisor. optax's `nadamw` debiases the first term
by 1 - b1^(n+1) instead, which changes the first steps' size by up to 30% (b1 = 0.933, n = 1):
the planned cycle would then not be AlgoPerf's baseline step for step.

Its Adam moments (the `mu`, `nu` fields of its state) are what a reset scales. By default
(METHOD.md section 4, v2: "scaled moments carry their weight") the moments are debiased by
weights kept in the state, `scale_by_weighted_adam`, which a reset scales with them;
`moment_weights=False` gives optax's `scale_by_adam`, debiased by 1 - beta^n (v1, AdamW).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class ScaleByWeightedAdamState(NamedTuple):
    """State of `scale_by_weighted_adam`.

    Attributes:
      count: int32 scalar, the updates applied since the state was fresh (informational:
        the bias correction uses the weights; a reset by c = 0 sets it back to 0).
      mu: first moment m, like params.
      nu: second moment v, like params.
      w1: float32 scalar, the total weight of the gradients in mu (1 - b1^n when fresh).
      w2: float32 scalar, the total weight of the squared gradients in nu (1 - b2^n).
    """

    count: Any
    mu: optax.Updates
    nu: optax.Updates
    w1: Any
    w2: Any


def scale_by_weighted_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    """Adam (or NAdam) whose bias correction divides by weights kept beside the moments.

    Each step, with gradient g (METHOD.md section 4, "(v2) Scaled moments carry their
    weight"):

        m <- b1 m + (1 - b1) g          w1 <- b1 w1 + (1 - b1)
        v <- b2 v + (1 - b2) g^2        w2 <- b2 w2 + (1 - b2)
        m_hat = m / w1,  v_hat = v / w2
        update = m_hat / (sqrt(v_hat + eps_root) + eps)

    w is the total weight the moment gives its gradients; a fresh state has w = 0, so after
    n steps w = 1 - b^n and this is optax's `scale_by_adam` (to float round-off: w is
    accumulated, not computed as a power). A reset that scales m, v by c scales w1, w2 by
    the same c (`reset.scale_moments`): c = 0 is exactly a fresh state, c = 1 changes
    nothing, and in between the old history counts c times as much against new gradients
    (with the step count kept, 1 - b^n would debias c m as if it were all of the history).

    With `nesterov` (NAdam as AlgoPerf's baselines compute it, the look-ahead moment
    debiased by the current weight; arXiv:1910.05446, Table 1):

        m_hat = (b1 m + (1 - b1) g) / w1

    The weights are float32 scalars, accumulated with b1, b2 rounded to float32 (so w = 1
    is a fixed point); the moments follow optax's formula bit for bit. Near 1 float32 can
    follow w only to within 2^-25 / (1 - b) of 1 - b^n (relative: 4e-7 for b1 = 0.933, 7e-6
    for b2 = 0.9955, so the update's scale is within 4e-6 of optax's). A zero weight
    (b = 1, no history) debiases by 1: then m = 0 and m_hat = 0, never 0/0. Real params.

    Args:
      b1: decay of the first moment, in (0, 1).
      b2: decay of the second moment, in (0, 1).
      eps: added to the denominator, outside the square root.
      eps_root: added inside the square root.
      nesterov: NAdam's look-ahead first moment (as AlgoPerf's NAdamW computes it).

    Returns:
      An optax `GradientTransformation` with state `ScaleByWeightedAdamState`.
    """

    def init_fn(params):
        return ScaleByWeightedAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=jax.tree.map(jnp.zeros_like, params),
            nu=jax.tree.map(jnp.zeros_like, params),
            w1=jnp.zeros([], jnp.float32),  # two buffers, not one: a state may be donated
            w2=jnp.zeros([], jnp.float32),
        )

    def update_fn(updates, state, params=None):
        del params
        # optax's update_moment and update_moment_per_elem_norm (real g), written out: the
        # same operations, so the moments are optax's bit for bit.
        mu = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, updates, state.mu)
        nu = jax.tree.map(lambda g, v: (1 - b2) * (g**2) + b2 * v, updates, state.nu)
        w1, w2 = _accumulate(state.w1, b1), _accumulate(state.w2, b2)
        count = optax.safe_int32_increment(state.count)
        ahead = mu  # NAdam's look-ahead moment, formed as the next m would be:
        if nesterov:
            ahead = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, updates, mu)
        mu_hat = jax.tree.map(lambda m: _debias(m, w1), ahead)
        nu_hat = jax.tree.map(lambda v: _debias(v, w2), nu)
        updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v + eps_root) + eps), mu_hat, nu_hat)
        return updates, ScaleByWeightedAdamState(count=count, mu=mu, nu=nu, w1=w1, w2=w2)

    return optax.GradientTransformation(init_fn, update_fn)


def _accumulate(weight, decay):
    """w <- b w + (1 - b) in float32, b rounded to float32 first (1 - b is then exact)."""
    decay = jnp.asarray(decay, jnp.float32)
    return decay * weight + (1 - decay)


def _debias(moment, weight):
    """moment / weight in the moment's dtype (as optax's bias_correction); / 1 if w = 0."""
    weight = jnp.where(weight > 0, weight, jnp.ones_like(weight))
    return moment / weight.astype(moment.dtype)


def adamw(
    learning_rate: float,
    b1: float,
    b2: float,
    eps: float,
    weight_decay: float,
    grad_clip: float | None = None,
    nesterov: bool = False,
    moment_weights: bool = True,
) -> optax.GradientTransformation:
    """AdamW (decoupled weight decay), or NAdamW with `nesterov`, from optax parts.

    u = -eta (m_hat / (sqrt(v_hat) + eps) + lambda theta), gradients first clipped to
    global norm `grad_clip` when given. With `moment_weights` (the default, METHOD.md
    section 4 v2) m_hat = m / w1, v_hat = v / w2 (`scale_by_weighted_adam`), weights a reset
    scales with the moments; without, optax's `scale_by_adam`: m / (1 - b1^n), v / (1 - b2^n)
    (v1, an ablation; AdamW only). Without resets the two agree to float round-off.
    """
    if nesterov and not moment_weights:
        raise ValueError(
            "moment_weights=False (optax's Adam, v1) runs with optimizer 'adamw' only: "
            "'nadamw' is AlgoPerf's NAdamW, built on the weighted moments."
        )
    scale_by = scale_by_weighted_adam if moment_weights else optax.scale_by_adam
    parts = [] if grad_clip is None else [optax.clip_by_global_norm(grad_clip)]
    parts += [
        scale_by(b1=b1, b2=b2, eps=eps, nesterov=nesterov),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    ]
    return optax.chain(*parts)
