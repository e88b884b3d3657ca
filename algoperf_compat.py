"""What the submission needs to know of AlgoPerf: its `spec`, its evaluation records, and
how to ask a workload for its loss and its target's direction.

When `algoperf` is installed, `spec` is `algoperf.spec` itself, so exceptions and enums
are the runner's own. Without it (a laptop, CI: it is not on the package registry), a
minimal stand-in with the same names and values is used.
"""

import enum
import types
from collections.abc import Mapping

import jax
import numpy as np

try:
    from algoperf import spec
except ImportError:  # algoperf not installed: the stand-in below.

    class TrainingCompleteError(Exception):
        """Raised by update_params to end training cleanly."""

    class ForwardPassMode(enum.Enum):
        TRAIN = 0
        EVAL = 1

    class LossType(enum.Enum):
        SOFTMAX_CROSS_ENTROPY = 0
        SIGMOID_CROSS_ENTROPY = 1
        MEAN_SQUARED_ERROR = 2
        CTC_LOSS = 3
        MEAN_ABSOLUTE_ERROR = 4

    class ParameterType(enum.Enum):
        WEIGHT = 0
        BIAS = 1
        CONV_WEIGHT = 2
        BATCH_NORM_SCALE = 3
        BATCH_NORM_BIAS = 4
        LAYER_NORM_SCALE = 5
        LAYER_NORM_BIAS = 6
        EMBEDDING = 7
        ATTENTION_Q = 8
        ATTENTION_K = 9
        ATTENTION_V = 10
        ATTENTION_OUT = 11
        ATTENTION_QKV = 12
        ATTENTION_KV = 13
        ATTENTION_BIAS = 14

    class ShapeTuple:
        """A parameter's shape, as `workload.param_shapes` holds it."""

        def __init__(self, shape_tuple):
            self.shape_tuple = tuple(shape_tuple)

        def __repr__(self):
            return f"ShapeTuple({self.shape_tuple})"

        def __eq__(self, other):
            return self.shape_tuple == other.shape_tuple

    spec = types.SimpleNamespace(
        TrainingCompleteError=TrainingCompleteError,
        ForwardPassMode=ForwardPassMode,
        LossType=LossType,
        ParameterType=ParameterType,
        ShapeTuple=ShapeTuple,
    )

HAVE_ALGOPERF = not isinstance(spec, types.SimpleNamespace)


def parse_eval_results(eval_results) -> list[tuple[int, dict]]:
    """(global_step, metrics) pairs sorted by step; ValueError for anything else.

    Accepts the runner's live list of `(step, metrics)` and the shapes its checkpoint
    restore produces (ALGOPERF.md): a restore turns each tuple into a dict
    `{'0': first, '1': second}` and wraps the entry as `(that, '<index>')`, so after k
    restores an entry is wrapped k times: `({'0': {'0': step, '1': metrics}, '1': '0'}, '0')`.
    """
    pairs = []
    for entry in eval_results:
        step, metrics = _unwrap_entry(entry)
        step = _eval_step(step)
        if step is None or not isinstance(metrics, Mapping):
            raise ValueError(
                "eval_results entries must be (global_step, metrics) pairs with an integer "
                f"global_step >= 0 and a dict of metrics, got {str(entry)[:200]}."
            )
        pairs.append((step, dict(metrics)))
    return sorted(pairs, key=lambda pair: pair[0])


def _as_tuple(node):
    """A restored tuple (a dict with exactly the keys '0' and '1') as a tuple; else node."""
    if isinstance(node, Mapping) and set(node) == {"0", "1"}:
        return (node["0"], node["1"])
    return node


def _unwrap_entry(entry) -> tuple:
    """(step, metrics) of an entry, through any number of restore wrappings; (None, None)
    when it has no such shape."""
    entry = _as_tuple(entry)
    for _ in range(64):  # One level per restore; far more than a run has.
        if not (isinstance(entry, tuple | list) and len(entry) == 2):
            break
        first, second = _as_tuple(entry[0]), entry[1]
        if isinstance(second, Mapping):
            return first, second
        if not isinstance(second, str):
            break
        entry = first  # (wrapped entry, its index): one restore's wrapping.
    return None, None


def _eval_step(value) -> int | None:
    """An evaluation's global step as an int >= 0 (Python, numpy or 0-d array), else None."""
    try:
        array = np.asarray(value)
    except Exception:  # Not array-like, so not a step.
        return None
    if array.ndim or array.dtype.kind not in "iuf" or not np.isfinite(array) or array < 0:
        return None
    return int(array) if array == np.round(array) else None


def metric_value(metrics: Mapping, key: str, step: int) -> float:
    """`metrics[key]` as a float; ValueError naming the step and key otherwise."""
    if key not in metrics:
        raise ValueError(f"the evaluation at step {step} has no {key!r}; it has {sorted(metrics)}.")
    try:
        return float(metrics[key])
    except (TypeError, ValueError):
        raise ValueError(
            f"the evaluation at step {step} has {key!r} = {metrics[key]!r}; it must be a number."
        ) from None


def read_evaluations(eval_results, target_metric_name: str) -> list[tuple[int, float, float]]:
    """(step, validation target metric, validation loss) of every evaluation, by step."""
    key = f"validation/{target_metric_name}"
    return [
        (step, metric_value(m, key, step), metric_value(m, "validation/loss", step))
        for step, m in parse_eval_results(eval_results)
    ]


def metric_direction(workload) -> bool:
    """True when the target metric is higher-is-better, asked of the workload itself.

    Probes `has_reached_validation_target` one unit of the target's scale above and
    below the target; exactly one of them must count as reached.
    """
    key = f"validation/{workload.target_metric_name}"
    target = float(workload.validation_target_value)
    delta = max(abs(target), 1.0)

    def reached(value):
        probe = {key: value, "validation/loss": value}
        return bool(workload.has_reached_validation_target(probe))

    above, below = reached(target + delta), reached(target - delta)
    if above == below:
        raise ValueError(
            f"cannot tell the direction of {key!r}: has_reached_validation_target gave "
            f"{above} both above and below the target {target}."
        )
    return above


def train_forward(workload, params, model_state, batch, rng, dropout_rate):
    """(logits, new model state): a training-mode forward pass that updates the batch-norm
    statistics, as AlgoPerf's training step makes it."""
    return workload.model_fn(
        params,
        batch,
        model_state,
        spec.ForwardPassMode.TRAIN,
        rng,
        update_batch_norm=True,
        dropout_rate=dropout_rate,
    )


def mean_loss(workload, params, model_state, batch, rng, dropout_rate, label_smoothing=0.0):
    """The batch's mean training loss and the new model state (a forward pass in TRAIN mode).

    Loss = summed per-example loss / number of valid examples, as the workload defines it.
    """
    logits, new_model_state = train_forward(workload, params, model_state, batch, rng, dropout_rate)
    losses = workload.loss_fn(
        label_batch=batch["targets"],
        logits_batch=logits,
        mask_batch=batch.get("weights"),
        label_smoothing=label_smoothing,
    )
    return losses["summed"] / losses["n_valid_examples"], new_model_state


def check_batch(batch, num_devices: int) -> None:
    """ValueError unless every leaf of the batch splits evenly over the devices."""
    for x in jax.tree.leaves(batch):
        if np.ndim(x) == 0 or np.shape(x)[0] % num_devices:
            raise ValueError(
                f"the batch's leading dimension {np.shape(x)[:1]} must be divisible by "
                f"the number of devices ({num_devices}): choose a global batch size "
                f"that is a multiple of {num_devices}."
            )


__all__ = [
    "HAVE_ALGOPERF",
    "check_batch",
    "mean_loss",
    "metric_direction",
    "metric_value",
    "parse_eval_results",
    "read_evaluations",
    "spec",
    "train_forward",
]


def submission_seconds(train_state) -> float | None:
    """The submission seconds spent so far, as the runner counts them against the budget
    (`train_state['accumulated_submission_time']`); None when the runner passes no
    `train_state`, an empty one (the conformance test) or a value that is not a finite
    number >= 0 (the plan then stays in steps)."""
    if not isinstance(train_state, Mapping):
        return None
    seconds = train_state.get("accumulated_submission_time")
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        return None
    return seconds if np.isfinite(seconds) and seconds >= 0 else None


# Global batch sizes of the AlgoPerf NAdamW baselines, per workload and its variants.
_BASE_BATCH_SIZES = {
    "criteo1tb": 262_144,
    "fastmri": 32,
    "imagenet_resnet": 1024,
    "imagenet_vit": 1024,
    "librispeech_conformer": 256,
    "librispeech_deepspeech": 256,
    "ogbg": 512,
    "wmt": 128,
    "mnist": 16,
    "cifar": 128,
}
_VARIANTS = {
    "criteo1tb": ("test", "layernorm", "embed_init", "resnet"),
    "fastmri": ("model_size", "tanh", "layernorm"),
    "imagenet_resnet": ("large_bn_init",),
    "imagenet_vit": ("glu", "post_ln", "map"),
    "librispeech_conformer": ("attention_temperature", "layernorm", "gelu"),
    "librispeech_deepspeech": ("tanh", "no_resnet", "norm_and_spec_aug"),
    "ogbg": ("gelu", "silu", "model_size"),
    "wmt": ("post_ln", "attention_temp", "glu_tanh"),
}
BATCH_SIZES: dict[str, int] = {
    **_BASE_BATCH_SIZES,
    **{f"{base}_{v}": _BASE_BATCH_SIZES[base] for base, vs in _VARIANTS.items() for v in vs},
    "imagenet_resnet_silu": 512,
    "imagenet_resnet_gelu": 512,
}


def batch_size(workload_name: str) -> int:
    """The global batch size for an AlgoPerf workload name; ValueError for others."""
    if workload_name not in BATCH_SIZES:
        raise ValueError(
            f"Unsupported workload name: {workload_name!r}; known: {sorted(BATCH_SIZES)}."
        )
    return BATCH_SIZES[workload_name]
