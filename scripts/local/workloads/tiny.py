"""``tiny`` (not registered): an MLP on generated, learnable data, for tests and experiments.

It implements the parts of AlgoPerf's Workload interface the submission and the local
runner (``scripts/local/runner.py``) use. The data are Gaussian clusters drawn once from a
fixed seed (nothing is downloaded); the model is ``models.MLP`` (two hidden layers, dropout and,
optionally, batch norm, so that resets have a model state to act on).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cyclic_soft_reset.algoperf_compat import spec

from .base import seed_from_key
from .losses import correct_sum, softmax_cross_entropy
from .models import MLP

NUM_CLASSES = 4
NUM_FEATURES = 16


def make_data(seed: int, n: int, noise: float = 1.6):
    """n points around NUM_CLASSES fixed centres (the centres come from seed 0)."""
    centres = np.random.default_rng(0).normal(size=(NUM_CLASSES, NUM_FEATURES))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=n)
    inputs = centres[labels] + noise * rng.normal(size=(n, NUM_FEATURES))
    return inputs.astype(np.float32), labels.astype(np.int32)


class GeneratedDataWorkload:
    """What the workloads on generated data share: the data, the target and its
    direction, the model's initialisation, the runner's input queue (a training stream
    batch t of which depends only on (seed, t)) and its evaluation.

    There is no test split (``has_reached_test_target`` is always False) and no time
    budget (``max_allowed_runtime_sec`` None): the submission's plan stays in steps and
    the runs stop at a step count, the target or, with ``stop_when_plan_ends``, the
    plan's end; the mechanics tests need plans that do not depend on the machine's speed.
    Subclasses define ``_evaluate(params, model_state)``.
    """

    loss_type = None
    max_allowed_runtime_sec = None
    eval_period_time_sec = 1.0

    def __init__(self, model, train, validation, metric, higher_is_better, target, step_hint):
        self._model = model
        self._train = train
        self._validation = validation
        self.target_metric_name = metric
        self.higher_is_better = higher_is_better
        self._target = target
        self._step_hint = step_hint
        self.metrics_logger = None
        self.param_shapes = None
        self.model_params_types = None

    @property
    def validation_target_value(self) -> float:
        return self._target

    @property
    def step_hint(self) -> int:
        return self._step_hint

    @property
    def eval_batch_size(self) -> int:
        """Evaluations take each split in one batch."""
        return len(self._validation[1])

    def attach_metrics_logger(self, metrics_logger) -> None:
        self.metrics_logger = metrics_logger

    def has_reached_validation_target(self, eval_result) -> bool:
        value = eval_result[f"validation/{self.target_metric_name}"]
        return value > self._target if self.higher_is_better else value < self._target

    def has_reached_test_target(self, eval_result) -> bool:
        """There is no test split."""
        del eval_result
        return False

    def init_model_fn(self, rng):
        dummy = jnp.zeros((1, self._train[0].shape[1]))
        variables = self._model.init({"params": rng}, dummy, train=False)
        params = variables["params"]
        self.param_shapes = jax.tree.map(lambda x: spec.ShapeTuple(x.shape), params)
        self.model_params_types = jax.tree.map(lambda _: spec.ParameterType.WEIGHT, params)
        return params, variables.get("batch_stats")

    def train_batches(self, seed: int, batch_size: int, start_step: int = 0):
        """An infinite stream of training batches (host arrays); batch t depends only on
        (seed, t)."""
        inputs, targets = self._train
        step = start_step
        while True:
            idx = np.random.default_rng([seed, step]).choice(len(targets), batch_size, False)
            yield {"inputs": inputs[idx], "targets": targets[idx]}
            step += 1

    def _build_input_queue(
        self,
        data_rng,
        split: str,
        data_dir=None,
        global_batch_size: int = 64,
        cache=None,
        repeat_final_dataset=None,
        num_batches=None,
    ):
        """AlgoPerf's signature; only ``train`` (``train_batches`` seeded by data_rng)."""
        del data_dir, cache, repeat_final_dataset, num_batches
        if split != "train":
            raise ValueError(f"only the 'train' split has an input queue, not {split!r}.")
        return self.train_batches(seed_from_key(data_rng), global_batch_size)

    def eval_model(
        self,
        global_batch_size,
        params,
        model_state,
        rng,
        data_dir,
        imagenet_v2_data_dir,
        global_step,
    ):
        """AlgoPerf's signature; the metrics of ``_evaluate`` (each split in one batch)."""
        del global_batch_size, rng, data_dir, imagenet_v2_data_dir, global_step
        return self._evaluate(params, model_state)


class TinyWorkload(GeneratedDataWorkload):
    """Classification; the target metric is accuracy (higher) or loss (lower)."""

    def __init__(
        self,
        target_metric: str = "accuracy",
        target: float | None = None,
        step_hint: int = 120,
        batch_norm: bool = False,
        width: int = 64,
        num_train: int = 2048,
        num_validation: int = 512,
        extra_matmuls: int = 0,
    ):
        assert target_metric in ("accuracy", "loss")
        default_target = 0.8 if target_metric == "accuracy" else 0.6
        super().__init__(
            MLP((width, width), NUM_CLASSES, use_batch_norm=batch_norm),
            make_data(1, num_train),
            make_data(2, num_validation),
            target_metric,
            target_metric == "accuracy",
            default_target if target is None else target,
            step_hint,
        )
        self._extra_matmuls = extra_matmuls

    def model_fn(self, params, batch, model_state, mode, rng, update_batch_norm, dropout_rate=0.0):
        train = mode == spec.ForwardPassMode.TRAIN
        variables = {"params": params}
        if model_state is not None:
            variables["batch_stats"] = model_state
        mutable = ["batch_stats"] if (model_state is not None and update_batch_norm) else False
        out = self._model.apply(
            variables,
            batch["inputs"],
            train=train and update_batch_norm,
            dropout_rate=dropout_rate,
            rngs={"dropout": rng},
            mutable=mutable,
        )
        logits, new_state = (out[0], out[1]["batch_stats"]) if mutable else (out, model_state)
        if self._extra_matmuls:
            logits = logits + 1e-30 * _busy_work(batch["inputs"], self._extra_matmuls)
        return logits, new_state

    def loss_fn(self, label_batch, logits_batch, mask_batch=None, label_smoothing=0.0):
        return softmax_cross_entropy(label_batch, logits_batch, mask_batch, label_smoothing)

    @functools.partial(jax.jit, static_argnums=0)
    def _eval(self, params, model_state, inputs, labels):
        variables = {"params": params}
        if model_state is not None:
            variables["batch_stats"] = model_state
        logits = self._model.apply(variables, inputs, train=False)
        loss = self.loss_fn(labels, logits)["summed"] / labels.shape[0]
        accuracy = correct_sum(labels, logits, 1.0) / labels.shape[0]
        return loss, accuracy

    def _evaluate(self, params, model_state):
        """{'train/...', 'validation/loss', 'validation/accuracy'} as floats."""
        result = {}
        for split, (inputs, labels) in (("train", self._train), ("validation", self._validation)):
            loss, accuracy = self._eval(params, model_state, inputs, labels)
            result[f"{split}/loss"] = float(loss)
            result[f"{split}/accuracy"] = float(accuracy)
        return result


def _busy_work(inputs, n: int):
    """A (batch, 1) array that costs n 1024 x 1024 matmuls: makes a step measurably long."""
    h = jnp.tile(inputs, (1, 1024 // NUM_FEATURES))
    w = jnp.eye(1024) * 0.5 + 0.5 / 1024
    for _ in range(n):
        h = jnp.tanh(h @ w)
    return jnp.sum(h, axis=-1, keepdims=True)
