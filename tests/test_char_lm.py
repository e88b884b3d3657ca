"""The character-level language model workload and the param_scale (w = c * v) variants."""

import math

import jax
import numpy as np
import optax
import pytest

from cyclic_soft_reset import submission
from cyclic_soft_reset.algoperf_compat import spec
from scripts.local import runner as local_runner
from scripts.local import workloads
from scripts.local.workloads import char_lm

EVAL = spec.ForwardPassMode.EVAL
TRAIN = spec.ForwardPassMode.TRAIN


def tiny_lm(**overrides):
    return workloads.make_workload(
        "char_lm", **{**workloads.tiny_overrides("char_lm"), **overrides}
    )


def tiny(name, **overrides):
    """A tiny workload; the MLP ones with small layers, char_lm its registry tiny version."""
    if name == "char_lm":
        return tiny_lm(**overrides)
    return workloads.make_workload(name, hidden_sizes=(16, 16), step_hint=30, **overrides)


@pytest.fixture(scope="module")
def lm():
    return tiny_lm()


# --------------------------------------------------------------------------- char_lm


def test_text_is_real_english_split_into_fixed_contiguous_blocks(lm):
    text = char_lm.load_text()
    assert text == char_lm.load_text() and len(text) > 100_000
    parts = [lm.data.train, lm.data.validation, lm.data.test]
    assert sum(len(p) for p in parts) == len(text)
    block, period = char_lm.BLOCK_BYTES, char_lm.BLOCK_PERIOD
    first_validation = (period - 2) * block
    assert lm.data.validation[:block].tobytes() == text[first_validation : first_validation + block]
    again = tiny_lm()
    for name in ("train", "validation", "test"):
        np.testing.assert_array_equal(getattr(again.data, name), getattr(lm.data, name))
        words = getattr(lm.data, name).tobytes().decode("utf-8", "replace").lower().split()
        assert {"the", "and", "is", "of"} <= set(words)  # Real English in every split.
    assert lm.num_train_examples == len(lm.data.train) - lm.config.context_length


def test_windows_predict_the_next_byte(lm):
    x, y = lm._eval_arrays("validation")
    length = lm.config.context_length
    assert x.shape == y.shape == (lm.num_validation_examples, length)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    np.testing.assert_array_equal(x.ravel()[:length], lm.data.validation[:length])
    batch = next(lm._build_input_queue(jax.random.PRNGKey(0), "train", None, 8))
    np.testing.assert_array_equal(np.asarray(batch["inputs"])[:, 1:], batch["targets"][:, :-1])
    assert lm.num_eval_train_examples == lm.num_validation_examples


@pytest.mark.slow
def test_eval_keys_direction_and_initial_loss(lm):
    assert lm.target_metric_name == "loss" and lm.higher_is_better is False
    params, state = lm.init_model_fn(jax.random.PRNGKey(0))
    result = lm.eval_model(64, params, state, None, None, None, 0)
    for prefix in ("train", "validation", "test"):
        assert {f"{prefix}/loss", f"{prefix}/accuracy"} <= set(result)
    # About a uniform guess over 256 bytes at init (5.5 nats): the loss is per byte.
    assert abs(result["validation/loss"] - math.log(256)) < 1.0
    assert 0.0 <= result["validation/accuracy"] < 0.1
    target = lm.validation_target_value
    assert lm.has_reached_validation_target({"validation/loss": target - 0.01})
    assert not lm.has_reached_validation_target({"validation/loss": target + 0.01})


@pytest.mark.slow
def test_causal_mask_hides_the_future(lm):
    params, state = lm.init_model_fn(jax.random.PRNGKey(0))
    x, _ = lm._eval_arrays("validation")
    changed = x[:2].copy()
    changed[:, 10:] = (changed[:, 10:] + 1) % 256
    a, _ = lm.model_fn(params, {"inputs": x[:2]}, state, EVAL, None, False)
    b, _ = lm.model_fn(params, {"inputs": changed}, state, EVAL, None, False)
    np.testing.assert_allclose(a[:, :10], b[:, :10], rtol=1e-5, atol=1e-5)
    assert not np.allclose(a[:, 10:], b[:, 10:])


def test_model_params_types_name_the_transformer_parts(lm):
    lm.init_model_fn(jax.random.PRNGKey(0))
    types = set(jax.tree.leaves(lm.model_params_types))
    P = spec.ParameterType
    assert {P.EMBEDDING, P.LAYER_NORM_SCALE, P.ATTENTION_Q, P.ATTENTION_OUT, P.WEIGHT} <= types


def test_unequal_widths_are_rejected():
    with pytest.raises(ValueError, match="hidden_sizes .* must be equal"):
        tiny_lm(hidden_sizes=(32, 64))
    with pytest.raises(ValueError, match="multiple of num_heads"):
        tiny_lm(hidden_sizes=(30, 30))


@pytest.mark.slow
def test_char_lm_learns_through_the_local_runner_with_the_submission():
    result = local_runner.train_once(
        tiny_lm(max_allowed_runtime_sec=math.inf),
        submission,
        None,
        0,
        global_batch_size=16,
        eval_every_steps=20,
        max_global_steps=40,
        stop_at_target=False,
    )
    losses = [m["validation/loss"] for _, m in result.eval_results]
    assert [s for s, _ in result.eval_results] == [20, 40]
    assert all(np.isfinite(losses))
    assert losses[-1] < math.log(256) - 1.0  # From ~5.5 nats a byte at init.


# --------------------------------------------------------------------------- param_scale


@pytest.mark.parametrize(
    "name", ["digits", "breast_cancer", pytest.param("char_lm", marks=pytest.mark.slow)]
)
def test_param_scale_keeps_the_function_at_init(name):
    base = tiny(name)
    w, state = base.init_model_fn(jax.random.PRNGKey(3))
    batch = next(base._build_input_queue(jax.random.PRNGKey(0), "train", None, 8))
    expected, _ = base.model_fn(w, batch, state, EVAL, None, False)
    for c in (0.1, 30.0, 3000.0):
        scaled = tiny(name, param_scale=c)
        v, state_c = scaled.init_model_fn(jax.random.PRNGKey(3))
        jax.tree.map(lambda a, b, c=c: np.testing.assert_allclose(a, b / c, rtol=1e-6), v, w)
        assert jax.tree.all(jax.tree.map(np.array_equal, state_c, state))  # Untouched.
        logits, _ = scaled.model_fn(v, batch, state_c, EVAL, None, False)
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
        same = jax.tree.map(lambda s: s.shape_tuple, scaled.param_shapes)
        assert same == jax.tree.map(lambda s: s.shape_tuple, base.param_shapes)
        assert scaled.model_params_types == base.model_params_types


@pytest.mark.parametrize("name", ["digits", pytest.param("char_lm", marks=pytest.mark.slow)])
def test_param_scale_multiplies_gradients_and_adam_steps_in_w(name):
    """dL/dv = c dL/dw, and Adam's first step (about lr sign(g)) moves w = c v c times
    further than at c = 1."""
    c = 30.0
    base, scaled = tiny(name), tiny(name, param_scale=c)
    w, state = base.init_model_fn(jax.random.PRNGKey(1))
    v, _ = scaled.init_model_fn(jax.random.PRNGKey(1))
    batch = next(base._build_input_queue(jax.random.PRNGKey(0), "train", None, 8))

    def grad(workload, params):
        def loss(p):
            logits, _ = workload.model_fn(p, batch, state, TRAIN, jax.random.PRNGKey(2), False, 0.0)
            out = workload.loss_fn(batch["targets"], logits)
            return out["summed"] / out["n_valid_examples"]

        return jax.jit(jax.grad(loss))(params)

    g_w, g_v = grad(base, w), grad(scaled, v)
    # Float noise (~1e-6: e.g. biases that batch norm cancels, whose true gradient is 0)
    # is scaled too; the tolerance allows it.
    for a, b in zip(jax.tree.leaves(g_v), jax.tree.leaves(g_w), strict=True):
        np.testing.assert_allclose(a, c * b, rtol=2e-3, atol=c * 5e-6)
    adam = optax.adam(1e-3, eps=1e-30)  # eps ~ 0: the first step is lr g / |g|.

    def step(params, g):
        updates, _ = adam.update(g, adam.init(params), params)
        return updates

    moved_w = jax.tree.leaves(step(w, g_w))
    moved_v = jax.tree.leaves(step(v, g_v))
    compared = 0
    for dv, dw, g in zip(moved_v, moved_w, jax.tree.leaves(g_w), strict=True):
        real = np.abs(np.asarray(g)) > 1e-5  # Gradients well above the float noise.
        # w = c v moves by c dv: c times the step of w itself at c = 1.
        np.testing.assert_allclose((c * dv)[real], c * dw[real], rtol=1e-3)
        compared += int(real.sum())
    assert compared > 0.5 * sum(x.size for x in moved_w)


def test_param_scale_default_is_the_unscaled_network():
    """At c = 1 params are flax's initial weights and the forward pass is flax's apply,
    bit for bit (no multiplication)."""
    for name in ("digits", "char_lm"):
        workload = tiny(name)
        assert workload.config.param_scale == 1.0
        rng = jax.random.PRNGKey(5)
        params, state = workload.init_model_fn(rng)
        flax_init = workload._model.init({"params": rng}, workload._init_inputs(), train=False)
        assert jax.tree.all(jax.tree.map(np.array_equal, params, flax_init["params"]))
        x, _ = workload._eval_arrays("test")
        logits, _ = workload.model_fn(params, {"inputs": x[:8]}, state, EVAL, None, False)
        direct = workload._model.apply({"params": params, **(state or {})}, x[:8], train=False)
        np.testing.assert_array_equal(logits, direct)


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, "2", True, None])
def test_bad_param_scale_is_rejected_naming_the_field(bad):
    for name in ("breast_cancer", "char_lm"):
        with pytest.raises(ValueError, match=r"param_scale must be a finite number > 0"):
            workloads.make_workload(name, param_scale=bad)
