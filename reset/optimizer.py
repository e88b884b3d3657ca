"""The optimizer the method runs: AdamW, or NAdamW, from optax parts (METHOD.md section 2).

Its Adam moments (`mu`, `nu` of optax's ScaleByAdamState) are what a reset scales.
"""

import optax


def adamw(
    learning_rate: float,
    b1: float,
    b2: float,
    eps: float,
    weight_decay: float,
    grad_clip: float | None = None,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    """AdamW (decoupled weight decay), or NAdamW with `nesterov`, from optax parts.

    u = -eta (m_hat / (sqrt(v_hat) + eps) + lambda theta), gradients first clipped to
    global norm `grad_clip` when given.
    """
    parts = [] if grad_clip is None else [optax.clip_by_global_norm(grad_clip)]
    parts += [
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps, nesterov=nesterov),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    ]
    return optax.chain(*parts)
