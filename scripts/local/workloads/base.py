"""The shared base of the embedded workloads: data splits, batches, the workload class.

Each embedded workload (one module each beside this one; the registry is the package's
``__init__``) implements AlgoPerf's ``spec.Workload`` interface (duck-typed) on data
already on the machine (scikit-learn's bundled datasets, the standard library's text;
nothing downloaded), with a Flax linen network from ``models`` (an MLP with dropout and
optional batch norm by default), through ``SklearnWorkload``.

Splits are fixed (a stratified permutation under a constant seed), features are
standardised with the training split's statistics, the training stream is an infinite
shuffled sequence that depends only on ``data_rng``, and batches are placed on all
local devices, sharded along the batch axis, as AlgoPerf 0.6 does.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cyclic_soft_reset.algoperf_compat import spec

from .models import MLP, check_param_scale, parameter_types, scale_params

SPLIT_SEED = 20240917
EVAL_SPLITS = ("eval_train", "validation", "test")


# --------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class DataSplits:
    """Standardised features and labels of the train/validation/test splits."""

    train_x: np.ndarray
    train_y: np.ndarray
    validation_x: np.ndarray
    validation_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(x, y)`` of a split; ``eval_train`` is the training split."""
        if split in ("train", "eval_train"):
            return self.train_x, self.train_y
        if split == "validation":
            return self.validation_x, self.validation_y
        if split == "test":
            return self.test_x, self.test_y
        raise ValueError(f"Unknown split {split!r}; valid: train, eval_train, validation, test.")


def stratified_split_indices(
    labels: np.ndarray, fractions: tuple[float, float, float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split example indices into three disjoint sets, stratified by label.

    Each class is permuted with a generator seeded by ``seed`` and cut by
    ``fractions`` (train, validation, test); every set comes back sorted.
    """
    rng = np.random.default_rng(seed)
    parts: tuple[list, list, list] = ([], [], [])
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_train = int(round(fractions[0] * len(members)))
        n_val = int(round(fractions[1] * len(members)))
        parts[0].append(members[:n_train])
        parts[1].append(members[n_train : n_train + n_val])
        parts[2].append(members[n_train + n_val :])
    train, val, test = (np.sort(np.concatenate(p)) for p in parts)
    return train, val, test


def make_splits(
    features: np.ndarray,
    labels: np.ndarray,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = SPLIT_SEED,
) -> DataSplits:
    """Build fixed splits; features standardised with the training statistics."""
    train, val, test = stratified_split_indices(labels, fractions, seed)
    mean = features[train].mean(axis=0)
    std = features[train].std(axis=0)
    std = np.where(std > 0, std, 1.0)

    def scale(idx: np.ndarray) -> np.ndarray:
        return ((features[idx] - mean) / std).astype(np.float32)

    return DataSplits(
        train_x=scale(train),
        train_y=labels[train].astype(np.int32),
        validation_x=scale(val),
        validation_y=labels[val].astype(np.int32),
        test_x=scale(test),
        test_y=labels[test].astype(np.int32),
    )


def batch_sharding() -> NamedSharding:
    """Sharding of a batch along its leading axis over all devices (AlgoPerf 0.6)."""
    return NamedSharding(Mesh(jax.devices(), ("batch",)), P("batch"))


def seed_from_key(rng: Any) -> int:
    """Turn a JAX PRNG key (raw ``uint32[2]`` or typed) into a NumPy seed."""
    arr = jnp.asarray(rng)
    if jnp.issubdtype(arr.dtype, jax.dtypes.prng_key):
        arr = jax.random.key_data(arr)
    words = np.asarray(arr, dtype=np.uint32).ravel().tolist()
    return int(np.random.SeedSequence(words).generate_state(1, np.uint32)[0])


def shuffled_index_stream(num_examples: int, seed: int) -> Iterator[int]:
    """Yield example indices forever: one fresh permutation per epoch."""
    rng = np.random.default_rng(seed)
    while True:
        yield from rng.permutation(num_examples).tolist()


def train_batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, seed: int
) -> Iterator[dict[str, np.ndarray]]:
    """Infinite stream of shuffled training batches (epochs run into each other)."""
    stream = shuffled_index_stream(len(x), seed)
    while True:
        idx = np.fromiter(stream, dtype=np.int64, count=batch_size)
        yield {"inputs": x[idx], "targets": y[idx]}


def eval_batches(x: np.ndarray, y: np.ndarray, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """One pass over a split in order; the last batch is zero-padded, weight 0."""
    for start in range(0, len(x), batch_size):
        bx, by = x[start : start + batch_size], y[start : start + batch_size]
        pad = batch_size - len(bx)
        weights = np.concatenate([np.ones(len(bx)), np.zeros(pad)])
        yield {
            "inputs": np.pad(bx, [(0, pad)] + [(0, 0)] * (bx.ndim - 1)),
            "targets": np.pad(by, [(0, pad)] + [(0, 0)] * (by.ndim - 1)),
            "weights": weights.astype(np.float32),
        }


def place_batch(batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Put a host batch on the devices, sharded along the batch axis."""
    return jax.device_put(batch, batch_sharding())


# --------------------------------------------------------------------------- workloads


@dataclasses.dataclass(frozen=True)
class WorkloadConfig:
    """Size and budget of an embedded workload (all have working defaults)."""

    hidden_sizes: tuple[int, ...]
    step_hint: int
    validation_target_value: float
    test_target_value: float
    use_batch_norm: bool = False
    # The reference hardware: seconds per training step (about this project's 2-core CPU).
    # As in AlgoPerf, the budget is what a reference run of step_hint steps takes,
    # max_allowed_runtime_sec = step_hint x step_seconds, and evaluations come every
    # eval_period_time_sec = eval_every_steps x step_seconds (unless given).
    step_seconds: float = 0.01
    max_allowed_runtime_sec: float | None = None
    eval_period_time_sec: float | None = None
    eval_every_steps: int = 25
    eval_batch_size: int = 1000
    batch_size: int = 128
    # Evaluate validation metrics on only the first N validation examples (a random
    # subset: the split is permuted), to study a noisy metric; None: the whole split.
    validation_examples: int | None = None
    # Held-out variants: the trainable parameters are v with w = param_scale * v, v
    # initialised at init / param_scale (the function at init is unchanged). An Adam
    # step moves v by about the learning rate, so w moves param_scale times further: a
    # fixed learning rate acts param_scale times too high (> 1) or too low (< 1).
    param_scale: float = 1.0

    def __post_init__(self) -> None:
        check_param_scale(self.param_scale)


class SklearnWorkload:
    """Shared machinery of the embedded workloads (one dataset, one network).

    Subclasses fix the dataset, the loss, the metrics and the target direction; the
    network (default: ``MLP``) and its initialisation input may be replaced through
    ``_make_model`` and ``_init_inputs``.
    """

    target_metric_name: str = ""
    higher_is_better: bool = True  # Direction of target_metric_name.
    loss_type: Any = None
    # The loss: (labels, logits, mask, label_smoothing) -> AlgoPerf's loss dict.
    loss: Callable[..., dict[str, jax.Array]]
    num_outputs: int = 0
    default_config: WorkloadConfig

    def __init__(self, **overrides: Any) -> None:
        """Build the workload; keyword arguments override ``WorkloadConfig`` fields."""
        valid = {f.name for f in dataclasses.fields(self.default_config)}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise ValueError(f"Unknown workload option(s) {unknown}; valid: {sorted(valid)}.")
        if "hidden_sizes" in overrides:
            overrides["hidden_sizes"] = tuple(int(h) for h in overrides["hidden_sizes"])
        self.config = dataclasses.replace(self.default_config, **overrides)
        self.data = self._load_splits()
        self._eval_sets = {split: self._make_eval_set(split) for split in EVAL_SPLITS}
        subset = self.config.validation_examples
        if subset is not None:
            x, y = self._eval_sets["validation"]
            if not 1 <= subset <= len(y):
                raise ValueError(
                    f"validation_examples must be null or an integer in [1, {len(y)}], "
                    f"got {subset!r}."
                )
            self._eval_sets["validation"] = (x[:subset], y[:subset])
        self._model = self._make_model()
        self._param_shapes = None
        self._param_types = None
        self.metrics_logger = None
        self._eval_step = jax.jit(self._summed_eval_metrics)

    # -- network, dataset and metric specifics (subclasses)

    def _make_model(self) -> Any:
        """The Flax module (default: the MLP of ``hidden_sizes``)."""
        return MLP(
            hidden_sizes=self.config.hidden_sizes,
            num_outputs=self.num_outputs,
            use_batch_norm=self.config.use_batch_norm,
        )

    def _init_inputs(self) -> jax.Array:
        """A one-example input batch for ``init`` (default: float features)."""
        return jnp.zeros((1, self._eval_arrays("test")[0].shape[1]), jnp.float32)

    # Predictions per example: eval metrics are means over predictions (an LM predicts
    # every position of a sequence), sums / (examples x this).
    predictions_per_example: int = 1

    def _load_splits(self) -> DataSplits:
        raise NotImplementedError

    def _train_stream(self, batch_size: int, seed: int) -> Iterator[dict[str, np.ndarray]]:
        """Infinite host-side training batches (shuffled epochs of the train split)."""
        return train_batches(self.data.train_x, self.data.train_y, batch_size, seed)

    def _make_eval_set(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels evaluated for a split (default: the split itself)."""
        return self.data.arrays(split)

    def _eval_arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels evaluated for ``eval_train``/``validation``/``test``."""
        if split not in self._eval_sets:
            raise ValueError(f"Unknown split {split!r}; valid: train, {', '.join(EVAL_SPLITS)}.")
        return self._eval_sets[split]

    def _metric_sums(
        self, labels: jax.Array, logits: jax.Array, weights: jax.Array
    ) -> dict[str, jax.Array]:
        raise NotImplementedError

    def has_reached_validation_target(self, eval_result: dict[str, float]) -> bool:
        """Past the validation target in the workload's direction."""
        value = eval_result[f"validation/{self.target_metric_name}"]
        return self._past(value, self.validation_target_value)

    def has_reached_test_target(self, eval_result: dict[str, float]) -> bool:
        """Past the test target in the workload's direction."""
        return self._past(eval_result[f"test/{self.target_metric_name}"], self.test_target_value)

    def _past(self, value: float, target: float) -> bool:
        return value > target if self.higher_is_better else value < target

    def loss_fn(
        self,
        label_batch: jax.Array,
        logits_batch: jax.Array,
        mask_batch: jax.Array | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, jax.Array]:
        """The workload's loss: ``{'summed', 'n_valid_examples', 'per_example'}``."""
        return self.loss(label_batch, logits_batch, mask_batch, label_smoothing)

    # -- properties of spec.Workload

    @property
    def step_hint(self) -> int:
        """Suggested number of training steps."""
        return self.config.step_hint

    @property
    def max_allowed_runtime_sec(self) -> float:
        """Time budget of the external-tuning ruleset (self-tuning gets 1.5x): by default
        step_hint x step_seconds, what a reference run of step_hint steps takes."""
        if self.config.max_allowed_runtime_sec is not None:
            return self.config.max_allowed_runtime_sec
        return self.config.step_hint * self.config.step_seconds

    @property
    def eval_period_time_sec(self) -> float:
        """Seconds between evaluations under AlgoPerf's time-based schedule: by default
        eval_every_steps x step_seconds, the step rhythm of the reference hardware."""
        if self.config.eval_period_time_sec is not None:
            return self.config.eval_period_time_sec
        return self.config.eval_every_steps * self.config.step_seconds

    @property
    def eval_every_steps(self) -> int:
        """Default evaluation period in steps for the local runner (not AlgoPerf)."""
        return self.config.eval_every_steps

    @property
    def default_batch_size(self) -> int:
        """Global batch size the workload was tuned with (submission may differ)."""
        return self.config.batch_size

    @property
    def validation_target_value(self) -> float:
        """Validation target of ``target_metric_name``."""
        return self.config.validation_target_value

    @property
    def test_target_value(self) -> float:
        """Test target of ``target_metric_name``."""
        return self.config.test_target_value

    @property
    def num_train_examples(self) -> int:
        """Size of the training split."""
        return len(self.data.train_x)

    @property
    def num_eval_train_examples(self) -> int:
        """Training examples evaluated for ``train/...`` metrics."""
        return len(self._eval_arrays("eval_train")[1])

    @property
    def num_validation_examples(self) -> int:
        """Size of the validation split."""
        return len(self._eval_arrays("validation")[1])

    @property
    def num_test_examples(self) -> int:
        """Size of the test split."""
        return len(self._eval_arrays("test")[1])

    @property
    def eval_batch_size(self) -> int:
        """Global batch size of evaluations."""
        return self.config.eval_batch_size

    @property
    def train_mean(self) -> float:
        """Features are standardised: mean 0."""
        return 0.0

    @property
    def train_stddev(self) -> float:
        """Features are standardised: standard deviation 1."""
        return 1.0

    @property
    def param_shapes(self) -> Any:
        """Pytree of ``spec.ShapeTuple``; known after ``init_model_fn``."""
        if self._param_shapes is None:
            raise ValueError("Call init_model_fn() before reading param_shapes.")
        return self._param_shapes

    @property
    def model_params_types(self) -> Any:
        """Pytree of ``spec.ParameterType``; known after ``init_model_fn``."""
        if self._param_types is None:
            raise ValueError("Call init_model_fn() before reading model_params_types.")
        return self._param_types

    def attach_metrics_logger(self, metrics_logger: Any) -> None:
        """Attach an object with ``append_scalar_metrics(dict, global_step)``."""
        self.metrics_logger = metrics_logger

    def is_output_params(self, param_key: str) -> bool:
        """Whether a top-level parameter key is the output layer."""
        return param_key == "output"

    # -- model

    def init_model_fn(self, rng: Any) -> tuple[Any, Any]:
        """Return ``(params, model_state)``; model_state holds batch-norm statistics.

        ``params`` are v = w / param_scale for the network's initial weights w.
        """
        variables = self._model.init({"params": rng}, self._init_inputs(), train=False)
        # Held-out variants: the trainable v = w / c (model_fn uses w = c * v).
        params = scale_params(variables["params"], 1.0 / self.config.param_scale)
        model_state = (
            {"batch_stats": variables["batch_stats"]} if self.config.use_batch_norm else None
        )
        self._param_shapes = jax.tree.map(lambda x: spec.ShapeTuple(x.shape), params)
        self._param_types = parameter_types(params)
        return params, model_state

    def model_fn(
        self,
        params: Any,
        augmented_and_preprocessed_input_batch: dict[str, jax.Array],
        model_state: Any,
        mode: Any,
        rng: Any,
        update_batch_norm: bool,
        dropout_rate: float = 0.0,
    ) -> tuple[jax.Array, Any]:
        """Forward pass with weights w = param_scale * params; training mode uses dropout
        and batch statistics (model_state is never scaled)."""
        inputs = augmented_and_preprocessed_input_batch["inputs"]
        train = mode == spec.ForwardPassMode.TRAIN
        weights = scale_params(params, self.config.param_scale)
        variables = {"params": weights, **(model_state or {})}
        if not self.config.use_batch_norm or not train:
            logits = self._model.apply(
                variables,
                inputs,
                train=train,
                dropout_rate=dropout_rate,
                rngs={"dropout": rng} if train else None,
            )
            return logits, model_state
        logits, new_state = self._model.apply(
            variables,
            inputs,
            train=True,
            dropout_rate=dropout_rate,
            rngs={"dropout": rng},
            mutable=["batch_stats"],
        )
        return logits, (dict(new_state) if update_batch_norm else model_state)

    # -- data

    def _build_input_queue(
        self,
        data_rng: Any,
        split: str,
        data_dir: str | None,
        global_batch_size: int,
        cache: bool | None = None,
        repeat_final_dataset: bool | None = None,
        num_batches: int | None = None,
    ) -> Iterator[dict[str, jax.Array]]:
        """Batches of a split, sharded over the devices.

        ``train`` is infinite and shuffled (determined by ``data_rng``); other splits
        are one ordered, padded pass, repeated if ``repeat_final_dataset``.
        """
        del data_dir, cache
        if split == "train":
            host = self._train_stream(global_batch_size, seed_from_key(data_rng))
        else:
            x, y = self._eval_arrays(split)
            host = _repeat_passes(
                lambda: eval_batches(x, y, global_batch_size),
                bool(repeat_final_dataset),
            )
        if num_batches is not None:
            host = _take(host, num_batches)
        return map(place_batch, host)

    # -- evaluation

    def _summed_eval_metrics(
        self, params: Any, model_state: Any, batch: dict[str, jax.Array]
    ) -> dict[str, jax.Array]:
        """Summed loss and metric counts of one padded batch (jitted in __init__)."""
        logits, _ = self.model_fn(
            params,
            batch,
            model_state,
            spec.ForwardPassMode.EVAL,
            None,
            update_batch_norm=False,
        )
        weights = batch["weights"]
        sums = self._metric_sums(batch["targets"], logits, weights)
        sums["loss"] = self.loss_fn(batch["targets"], logits, weights)["summed"]
        return sums

    def _eval_model_on_split(
        self,
        split: str,
        num_examples: int,
        global_batch_size: int,
        params: Any,
        model_state: Any,
        rng: Any,
        data_dir: str | None,
        global_step: int = 0,
    ) -> dict[str, float]:
        """Mean loss and metrics per prediction over the first ``num_examples`` of a split."""
        del global_step
        num_predictions = num_examples * self.predictions_per_example
        batches = self._build_input_queue(
            rng, split, data_dir, global_batch_size, repeat_final_dataset=False
        )
        totals: dict[str, float] = {}
        for batch in batches:
            sums = jax.device_get(self._eval_step(params, model_state, batch))
            for key, value in sums.items():
                totals[key] = totals.get(key, 0.0) + float(value)
        return {key: value / num_predictions for key, value in totals.items()}

    def eval_model(
        self,
        global_batch_size: int,
        params: Any,
        model_state: Any,
        rng: Any,
        data_dir: str | None,
        imagenet_v2_data_dir: str | None,
        global_step: int,
    ) -> dict[str, float]:
        """Evaluate on the train, validation and test splits (keys as AlgoPerf's)."""
        del imagenet_v2_data_dir
        results: dict[str, float] = {}
        sizes = {
            "eval_train": self.num_eval_train_examples,
            "validation": self.num_validation_examples,
            "test": self.num_test_examples,
        }
        prefixes = {"eval_train": "train", "validation": "validation", "test": "test"}
        for split in EVAL_SPLITS:
            metrics = self._eval_model_on_split(
                split,
                sizes[split],
                global_batch_size,
                params,
                model_state,
                rng,
                data_dir,
                global_step,
            )
            results.update({f"{prefixes[split]}/{k}": v for k, v in metrics.items()})
            if split != "eval_train":
                results[f"{prefixes[split]}/num_examples"] = sizes[split]
        return results


def _repeat_passes(
    make_pass: Callable[[], Iterator[dict[str, np.ndarray]]], repeat: bool
) -> Iterator[dict[str, np.ndarray]]:
    """One pass over ``make_pass()``, or endless passes when ``repeat``."""
    yield from make_pass()
    while repeat:
        yield from make_pass()


def _take(iterator: Iterator[Any], count: int) -> Iterator[Any]:
    """The first ``count`` items of an iterator."""
    for _, item in zip(range(count), iterator, strict=False):
        yield item


def num_steps_per_epoch(workload: SklearnWorkload, global_batch_size: int) -> int:
    """Steps in one pass over the training split."""
    return math.ceil(workload.num_train_examples / global_batch_size)


@dataclasses.dataclass(frozen=True)
class WorkloadEntry:
    """A workload's registry entry: its name, its class and its tiny version's options.

    The global batch size the local runner uses is the class's
    ``default_config.batch_size``.
    """

    name: str
    workload_class: type[SklearnWorkload]
    # Options for a tiny, fast version (``python -m scripts.run --tiny``, tests, the
    # small evidence grid).
    tiny: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: {
            "hidden_sizes": (32, 32),
            "step_hint": 60,
            "eval_every_steps": 10,
            "step_seconds": 0.002,
        }
    )

    @property
    def batch_size(self) -> int:
        """The global batch size of this workload (its configuration's)."""
        return self.workload_class.default_config.batch_size
