"""The embedded workloads: AlgoPerf interface, determinism, splits, directions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from cyclic_soft_reset.algoperf_compat import spec
from scripts.local import workloads
from scripts.local.workloads import base

TINY = {"hidden_sizes": (16, 16), "step_hint": 30}
# The fast tier skips char_lm (a transformer: seconds to compile each function); CI runs it.
WORKLOADS = [
    pytest.param(name, marks=pytest.mark.slow) if name == "char_lm" else name
    for name in workloads.WORKLOAD_NAMES
]


@pytest.fixture(scope="module", params=WORKLOADS)
def workload(request):
    """Each embedded workload, tiny, with its model initialised."""
    w = workloads.make_workload(request.param, **TINY)
    w.init_model_fn(jax.random.PRNGKey(0))
    return w


def test_factory_rejects_unknown_names_listing_valid_ones():
    with pytest.raises(ValueError, match="digit_sums, digits, breast_cancer"):
        workloads.make_workload("mnist")
    with pytest.raises(ValueError, match="valid"):
        workloads.make_workload("digits", hidden=(3,))


def test_stratified_split_is_a_fixed_partition():
    labels = np.repeat(np.arange(4), 25)
    first = base.stratified_split_indices(labels, (0.6, 0.2, 0.2), seed=3)
    again = base.stratified_split_indices(labels, (0.6, 0.2, 0.2), seed=3)
    other = base.stratified_split_indices(labels, (0.6, 0.2, 0.2), seed=4)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    union = np.concatenate(first)
    assert sorted(union.tolist()) == list(range(100))  # Disjoint and complete.
    assert [len(p) for p in first] == [60, 20, 20]
    for part, size in zip(first, (15, 5, 5), strict=True):  # Every class in each.
        assert np.bincount(labels[part]).tolist() == [size] * 4


def test_splits_are_identical_across_instances_and_standardised():
    a = workloads.make_workload("digits", **TINY)
    b = workloads.make_workload("digits", **TINY)
    for split in ("train", "validation", "test"):
        xa, ya = a.data.arrays(split)
        xb, yb = b.data.arrays(split)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert np.allclose(a.data.train_x.mean(axis=0), 0.0, atol=1e-5)
    total = a.num_train_examples + a.num_validation_examples + a.num_test_examples
    assert total == 1797


def test_digit_sums_pairs_images_and_adds_labels():
    w = workloads.make_workload("digit_sums", **TINY)
    x, y = w._eval_arrays("validation")
    assert x.shape == (w.num_eval_pairs, 128)
    assert y.min() >= 0 and y.max() <= 18
    images, digits = w.data.validation_x, w.data.validation_y
    for row in range(5):  # Each half is a validation image; the label is their sum.
        left = np.flatnonzero((images == x[row, :64]).all(axis=1))
        right = np.flatnonzero((images == x[row, 64:]).all(axis=1))
        assert len(left) and len(right)
        assert y[row] == digits[left[0]] + digits[right[0]]


def test_train_queue_is_infinite_sharded_and_deterministic(workload):
    def first_batches(seed, n=3):
        queue = workload._build_input_queue(
            jax.random.PRNGKey(seed), "train", None, global_batch_size=32
        )
        return [next(queue) for _ in range(n)]

    a, b, c = first_batches(1), first_batches(1), first_batches(2)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["inputs"], y["inputs"])
        np.testing.assert_array_equal(x["targets"], y["targets"])
    assert not np.array_equal(a[0]["inputs"], c[0]["inputs"])
    assert a[0]["inputs"].shape[0] == 32
    sharding = a[0]["inputs"].sharding
    assert isinstance(sharding, NamedSharding) and sharding.spec == P("batch")
    queue = workload._build_input_queue(jax.random.PRNGKey(0), "train", None, 64)
    seen = sum(int(next(queue)["targets"].shape[0]) for _ in range(40))
    assert seen == 40 * 64  # Runs past the end of an epoch.


def test_eval_queue_pads_with_zero_weights(workload):
    x, _ = workload._eval_arrays("validation")
    batches = list(workload._build_input_queue(None, "validation", None, 100))
    assert len(batches) == -(-len(x) // 100)
    weights = np.concatenate([np.asarray(b["weights"]) for b in batches])
    assert weights.sum() == len(x) and weights[len(x) :].sum() == 0


def test_init_is_deterministic_and_describes_params(workload):
    p1, s1 = workload.init_model_fn(jax.random.PRNGKey(7))
    p2, s2 = workload.init_model_fn(jax.random.PRNGKey(7))
    p3, _ = workload.init_model_fn(jax.random.PRNGKey(8))
    assert jax.tree.all(jax.tree.map(np.array_equal, p1, p2))
    assert not jax.tree.all(jax.tree.map(np.array_equal, p1, p3))
    shapes = jax.tree.map(lambda s: s.shape_tuple, workload.param_shapes)
    assert shapes == jax.tree.map(np.shape, p1)
    types = jax.tree.leaves(workload.model_params_types)
    assert all(isinstance(t, spec.ParameterType) for t in types)
    assert len(types) == len(jax.tree.leaves(p1))
    if workload.config.use_batch_norm:
        assert set(s1) == {"batch_stats"}
        assert spec.ParameterType.BATCH_NORM_SCALE in types
    else:
        assert s1 is None


def test_model_fn_dropout_and_batch_norm(workload):
    params, state = workload.init_model_fn(jax.random.PRNGKey(0))
    batch = next(workload._build_input_queue(jax.random.PRNGKey(0), "train", None, 32))
    train = spec.ForwardPassMode.TRAIN

    def run(mode, rng, update, rate):
        return workload.model_fn(params, batch, state, mode, rng, update, rate)

    a, _ = run(train, jax.random.PRNGKey(1), False, 0.5)
    b, _ = run(train, jax.random.PRNGKey(2), False, 0.5)
    assert not np.allclose(a, b)  # Dropout uses the rng.
    e1, s_eval = run(spec.ForwardPassMode.EVAL, jax.random.PRNGKey(1), False, 0.5)
    e2, _ = run(spec.ForwardPassMode.EVAL, jax.random.PRNGKey(2), False, 0.5)
    np.testing.assert_array_equal(e1, e2)
    # One row of logits per target: (batch, classes), or (batch, length, vocab) for an LM.
    assert e1.shape == (*batch["targets"].shape, workload.num_outputs)
    # A traced dropout rate works (submissions jit it as an argument).
    traced = jax.jit(lambda r: run(train, jax.random.PRNGKey(1), False, r)[0])(0.5)
    np.testing.assert_allclose(traced, a, rtol=1e-5, atol=1e-5)
    if workload.config.use_batch_norm:
        _, updated = run(train, jax.random.PRNGKey(1), True, 0.0)
        _, kept = run(train, jax.random.PRNGKey(1), False, 0.0)
        assert not jax.tree.all(jax.tree.map(np.array_equal, updated, state))
        assert jax.tree.all(jax.tree.map(np.array_equal, kept, state))
        assert jax.tree.all(jax.tree.map(np.array_equal, s_eval, state))


def test_loss_fn_matches_a_direct_computation(workload):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, workload.num_outputs)).astype(np.float32)
    labels = rng.integers(0, 2 if workload.num_outputs == 1 else 10, size=6)
    mask = np.array([1, 1, 1, 1, 0, 0], np.float32)
    out = workload.loss_fn(jnp.asarray(labels), jnp.asarray(logits), jnp.asarray(mask))
    if workload.num_outputs == 1:
        z, t = logits[:, 0], labels.astype(np.float32)
        expected = np.logaddexp(0, z) - t * z
    else:
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        expected = -logp[np.arange(6), labels]
    np.testing.assert_allclose(out["per_example"], expected * mask, rtol=1e-5)
    np.testing.assert_allclose(out["summed"], (expected * mask).sum(), rtol=1e-5)
    assert float(out["n_valid_examples"]) == 4
    smoothed = workload.loss_fn(jnp.asarray(labels), jnp.asarray(logits), None, 0.2)
    assert float(smoothed["n_valid_examples"]) == 6
    assert not np.allclose(smoothed["per_example"], expected)


def test_eval_model_keys_and_values_match_a_direct_computation(workload):
    params, state = workload.init_model_fn(jax.random.PRNGKey(3))
    result = workload.eval_model(64, params, state, jax.random.PRNGKey(0), None, None, 0)
    name = workload.target_metric_name
    for prefix in ("train", "validation", "test"):
        assert f"{prefix}/loss" in result and f"{prefix}/{name}" in result
    assert result["validation/num_examples"] == workload.num_validation_examples
    assert result["test/num_examples"] == workload.num_test_examples
    x, y = workload._eval_arrays("validation")
    logits, _ = workload.model_fn(
        params, {"inputs": x}, state, spec.ForwardPassMode.EVAL, None, False
    )
    out = workload.loss_fn(jnp.asarray(y), logits)
    loss = out["summed"] / out["n_valid_examples"]  # Per example, or per token of an LM.
    assert result["validation/loss"] == pytest.approx(float(loss), rel=1e-4)
    again = workload.eval_model(32, params, state, jax.random.PRNGKey(1), None, None, 0)
    assert again == pytest.approx(result, rel=1e-4)


@pytest.mark.parametrize(
    ("name", "key", "higher"),
    [
        ("digits", "validation/accuracy", True),
        ("digit_sums", "validation/accuracy", True),
        ("breast_cancer", "validation/loss", False),
        ("char_lm", "validation/loss", False),
    ],
)
def test_target_direction(name, key, higher):
    w = workloads.make_workload(name, **TINY)
    assert f"validation/{w.target_metric_name}" == key
    target = w.validation_target_value
    better = target + 0.01 if higher else target - 0.01
    worse = target - 0.01 if higher else target + 0.01
    assert w.has_reached_validation_target({key: better})
    assert not w.has_reached_validation_target({key: worse})
    test_key = key.replace("validation/", "test/")
    test_better = w.test_target_value + (0.01 if higher else -0.01)
    assert w.has_reached_test_target({test_key: test_better})


@pytest.mark.parametrize("name", WORKLOADS)
def test_validation_subset_evaluates_its_first_examples(name):
    full = workloads.make_workload(name, **TINY)
    small = workloads.make_workload(name, **TINY, validation_examples=40)
    assert small.num_validation_examples == 40
    assert small.num_test_examples == full.num_test_examples
    x, y = full._eval_arrays("validation")
    sx, sy = small._eval_arrays("validation")
    np.testing.assert_array_equal(sx, x[:40])
    np.testing.assert_array_equal(sy, y[:40])
    params, state = small.init_model_fn(jax.random.PRNGKey(3))
    result = small.eval_model(16, params, state, jax.random.PRNGKey(0), None, None, 0)
    assert result["validation/num_examples"] == 40
    logits, _ = small.model_fn(
        params, {"inputs": sx}, state, spec.ForwardPassMode.EVAL, None, False
    )
    out = small.loss_fn(jnp.asarray(sy), logits)
    loss = out["summed"] / out["n_valid_examples"]  # 40 examples (40 x length tokens).
    assert result["validation/loss"] == pytest.approx(float(loss), rel=1e-4)


@pytest.mark.parametrize("bad", [0, -1, 10**6])
def test_validation_subset_out_of_range_is_rejected(bad):
    with pytest.raises(ValueError, match=r"validation_examples must be null or an integer in"):
        workloads.make_workload("digits", **TINY, validation_examples=bad)
