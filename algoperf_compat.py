"""The few names of AlgoPerf's `spec` the submission needs.

When `algoperf` is installed, `spec` is `algoperf.spec` itself, so exceptions and enums
are the runner's own. Without it (a laptop, CI: it is not on the package registry), a
minimal stand-in with the same names and values is used.
"""

import enum
import types

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

__all__ = ["HAVE_ALGOPERF", "spec"]
