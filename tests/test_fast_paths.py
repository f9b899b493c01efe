"""The pieces made fast for the CPU keep their maths: the straight-line Threefry hash, 16-bit
binarisation, the mixed-precision matrix product, and the networks run on the whole batch; each
is private, chosen by backend, and its plain-JAX fallback gives the same numbers."""

import contextlib
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from jax.extend import random as jax_random_extend

from vae_jax import _fast_paths, iwae, model as model_lib, networks, objectives
from vae_jax.app import _threefry as threefry, data, prng


@pytest.mark.slow
@settings(deadline=None, max_examples=25)
@given(key=st.tuples(*[st.integers(0, 2**32 - 1)] * 2), start=st.integers(0, 2**32 - 1),
       shape=st.sampled_from([(), (1,), (2,), (7,), (3, 5), (2, 3, 4)]))
def test_threefry_hash_gives_the_words_of_jax_threefry(key, start, shape):
    key_data = jnp.array(key, jnp.uint32)
    counts = jnp.asarray(
        (start + np.arange(int(np.prod(shape)), dtype=np.uint64)) % 2**32, jnp.uint32)
    counts = counts.reshape(shape)
    expected = jax_random_extend.threefry_2x32(key_data, counts)
    for hash_ in (threefry.threefry_2x32, jax.jit(threefry.threefry_2x32)):
        got = hash_(key_data, counts)
        chex.assert_shape(got, shape)
        np.testing.assert_array_equal(got, expected)


def test_threefry_hash_refuses_keys_and_counts_of_other_types():
    with pytest.raises(TypeError, match="uint32 key data of shape"):
        threefry.threefry_2x32(jnp.zeros((2,), jnp.int32), jnp.zeros((4,), jnp.uint32))
    with pytest.raises(TypeError, match="uint32 key data of shape"):
        threefry.threefry_2x32(jnp.zeros((4,), jnp.uint32), jnp.zeros((4,), jnp.uint32))


_DRAWS = {
    "split": lambda k: jax.random.key_data(jax.random.split(k, (3, 2))),
    "fold_in": lambda k: jax.random.key_data(jax.random.fold_in(k, 2**31 + 5)),
    "normal": lambda k: jax.random.normal(k, (5, 3)),
    "uniform": lambda k: jax.random.uniform(k, (7,)),
    "bits8": lambda k: jax.random.bits(k, (9,), jnp.uint8),
    "bits16": lambda k: jax.random.bits(k, (4,), jnp.uint16),
    "permutation": lambda k: jax.random.permutation(k, 50),
    "vmapped normal": lambda k: jax.vmap(lambda k: jax.random.normal(k, (20,)))(
        jax.random.split(k, 4)),
}


@pytest.mark.slow
@settings(deadline=None, max_examples=10)
@given(seed=st.integers(0, 2**31 - 1))
def test_run_keys_draw_the_numbers_of_jax_threefry_keys(seed):
    ours, theirs = threefry.key(seed, "threefry2x32"), jax.random.key(seed)
    assert jax.random.key_impl(ours) == threefry.THREEFRY_2X32
    np.testing.assert_array_equal(jax.random.key_data(ours), jax.random.key_data(theirs))
    for name, draw in _DRAWS.items():
        for transform in (lambda f: f, jax.jit):
            np.testing.assert_array_equal(transform(draw)(ours), draw(theirs), err_msg=name)


def test_run_keys_follow_jax_when_threefry_is_not_partitionable():
    with jax.threefry_partitionable(False):
        ours, theirs = threefry.key(3, "threefry2x32"), jax.random.key(3)
        for name in ("split", "normal", "bits8"):
            np.testing.assert_array_equal(_DRAWS[name](ours), _DRAWS[name](theirs), err_msg=name)


def test_run_keys_draw_jax_threefry_64_bit_words():
    with jax.enable_x64(True):
        np.testing.assert_array_equal(
            jax.random.bits(threefry.key(6, "threefry2x32"), (5,), jnp.uint64),
            jax.random.bits(jax.random.key(6), (5,), jnp.uint64))


def test_run_keys_of_other_implementations_are_jax_ones():
    key = threefry.key(4, "rbg")
    assert jax.random.key_impl(key) == "rbg"
    rewrapped = threefry.wrap_key_data(jax.random.key_data(key), "rbg")
    np.testing.assert_array_equal(jax.random.normal(rewrapped, (3,)),
                                  jax.random.normal(jax.random.key(4, impl="rbg"), (3,)))


def test_wrapped_key_data_gives_back_the_run_key():
    key = jax.random.fold_in(threefry.key(5, "threefry2x32"), 1)
    rewrapped = threefry.wrap_key_data(jax.random.key_data(key), "threefry2x32")
    assert rewrapped.dtype == key.dtype
    np.testing.assert_array_equal(jax.random.normal(rewrapped, (3,)),
                                  jax.random.normal(key, (3,)))


class BinarizeTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_values_are_zero_or_one_with_the_shape_and_dtype_of_x(self):
        x = jax.random.uniform(jax.random.key(0), (3, 5, 7, 1))  # odd size: 105 pixels
        b = self.variant(data.binarize)(jax.random.key(1), x)
        chex.assert_shape(b, x.shape)
        chex.assert_type(b, jnp.float32)
        assert set(np.unique(np.asarray(b))) <= {0.0, 1.0}

    @chex.variants(with_jit=True, without_jit=True)
    def test_black_and_white_pixels_stay_as_they_are(self):
        x = jnp.tile(jnp.array([0.0, 1.0]), 5000)
        np.testing.assert_array_equal(self.variant(data.binarize)(jax.random.key(2), x), x)


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
@pytest.mark.parametrize("p", [1 / 255, 0.3, 0.5, 254 / 255])
def test_each_pixel_is_one_with_probability_its_intensity(impl, p):
    n = 400_000
    ones = float(jnp.mean(data.binarize(jax.random.key(3, impl=impl), jnp.full((n,), p))))
    assert abs(ones - p) < 5 * np.sqrt(p * (1 - p) / n) + 2**-17


def test_pixels_are_independent_of_their_neighbours():
    b = np.asarray(data.binarize(jax.random.key(4), jnp.full((200_000,), 0.5)))
    for lag in (1, 2, 3, 100_000):  # the four 16-bit draws of one hash, and the two halves
        correlation = np.corrcoef(b[:-lag], b[lag:])[0, 1]
        assert abs(correlation) < 0.015, (lag, correlation)


@pytest.mark.slow
def test_vmapped_binarisation_draws_each_key_independently():
    keys = jax.random.split(jax.random.key(5), 2)
    both = jax.vmap(data.binarize)(keys, jnp.full((2, 1000), 0.5))
    np.testing.assert_array_equal(both[1], data.binarize(keys[1], jnp.full((1000,), 0.5)))
    assert not np.array_equal(both[0], both[1])


class MixedMatmulTest(chex.TestCase):

    def setUp(self):
        super().setUp()
        self.x = jax.random.normal(jax.random.key(0), (4, 3, 16))
        self.w = jax.random.normal(jax.random.key(1), (16, 5))

    @chex.variants(with_jit=True, without_jit=True)
    def test_product_is_float32_and_close_to_the_float32_one(self):
        y = self.variant(networks._mixed_matmul)(self.x, self.w)
        chex.assert_shape(y, (4, 3, 5))
        chex.assert_type(y, jnp.float32)
        np.testing.assert_allclose(y, self.x @ self.w, atol=0.1, rtol=0.02)

    @chex.variants(with_jit=True, without_jit=True)
    def test_weight_gradient_sums_bfloat16_rounded_products_over_the_batch_in_float32(self):
        dy = jax.random.normal(jax.random.key(2), (4, 3, 5))
        grad = self.variant(jax.grad(lambda w: jnp.sum(networks._mixed_matmul(self.x, w) * dy)))(
            self.w)
        chex.assert_shape(grad, self.w.shape)
        chex.assert_type(grad, jnp.float32)
        rounded = [a.astype(jnp.bfloat16).astype(jnp.float32) for a in (self.x, dy)]
        exact = jnp.einsum("abk,abn->kn", *rounded, precision="highest")
        np.testing.assert_allclose(grad, exact, rtol=1e-5, atol=1e-5)

    @pytest.mark.slow
    def test_input_gradient_is_close_to_the_float32_one(self):
        dy = jax.random.normal(jax.random.key(3), (4, 3, 5))
        dx = jax.grad(lambda x: jnp.sum(networks._mixed_matmul(x, self.w) * dy))(self.x)
        np.testing.assert_allclose(dx, dy @ self.w.T, atol=0.1, rtol=0.02)

    @pytest.mark.slow
    def test_dense_layers_other_than_x_times_w_are_refused(self):
        with pytest.raises(ValueError, match="contracts x's last axis with w's first"):
            networks._mixed_dot_general(self.x, self.w.T, (((2,), (1,)), ((), ())))

    def test_the_old_public_name_still_works_and_warns(self):
        with pytest.warns(DeprecationWarning, match="mixed_matmul is private"):
            old = networks.mixed_matmul
        assert old is networks._mixed_matmul


# --- The fast paths are chosen by backend, and the fallback gives the same numbers -----------

def _uses_mixed_matmul(vae, params, x) -> bool:
    """Whether the traced encoder of `vae` runs `_mixed_matmul` (a custom_vjp), not Flax's
    dense product."""
    return "custom_vjp" in str(jax.make_jaxpr(vae.encode)(params, x))


def test_cpu_backend_takes_the_fast_paths_unless_disabled():
    assert jax.default_backend() == "cpu" and threefry.AVAILABLE
    assert jax.random.key_impl(prng.key(0, "threefry2x32")) == threefry.THREEFRY_2X32
    with _fast_paths.disabled():
        plain = prng.key(0, "threefry2x32")
        assert plain.dtype == jax.random.key(0).dtype
        assert jax.random.key_impl(plain) == "threefry2x32"
        assert prng.wrap_key_data(jax.random.key_data(plain), "threefry2x32").dtype == plain.dtype
    assert jax.random.key_impl(prng.key(0, "rbg")) == "rbg"


def _training_like_draws(seed: int):
    """What a training step draws from a run key: binarised pixels and ε, from fold_in keys."""
    root = prng.key(seed, "threefry2x32")

    def step(root, images, step_index):
        key = jax.random.fold_in(root, step_index)
        binarize_key, noise_key = jax.random.split(key)
        x = data.binarize(binarize_key, images)
        epsilon = jax.random.normal(jax.random.fold_in(noise_key, 7), (images.shape[0], 5))
        return x, epsilon, jax.random.key_data(key)

    images = jax.random.uniform(jax.random.key(1), (6, 7, 7, 1))  # odd: 49 pixels an image
    return root, [step(root, images, 3), jax.jit(lambda r, i: step(r, i, 11))(root, images)]


@pytest.mark.slow
def test_the_plain_jax_path_draws_the_same_numbers_as_the_fast_one():
    fast_root, fast = _training_like_draws(5)
    with _fast_paths.disabled():
        plain_root, plain = _training_like_draws(5)
    assert fast_root.dtype != plain_root.dtype  # two kinds of key ...
    chex.assert_trees_all_equal(fast, plain)      # ... the same numbers


def test_a_checkpointed_key_restores_with_either_kind_of_key():
    """A checkpoint stores a key's raw data (uint32 (2,)); restoring wraps it as `prng` makes
    keys then, so a run saved with the fast keys resumes with plain ones and back."""
    fast = jax.random.fold_in(prng.key(9, "threefry2x32"), 4)
    with _fast_paths.disabled():
        plain = jax.random.fold_in(prng.key(9, "threefry2x32"), 4)
    for saved, draws_with in ((fast, plain), (plain, fast)):
        stored = np.asarray(jax.random.key_data(saved))  # what the checkpoint holds
        assert stored.shape == (2,) and stored.dtype == np.uint32
        if draws_with is plain:
            with _fast_paths.disabled():
                restored = prng.wrap_key_data(stored, "threefry2x32")
        else:
            restored = prng.wrap_key_data(stored, "threefry2x32")
        assert restored.dtype == draws_with.dtype
        np.testing.assert_array_equal(jax.random.normal(restored, (4,)),
                                      jax.random.normal(saved, (4,)))


@pytest.mark.slow
def test_binarize_takes_plain_jax_threefry_keys_with_and_without_the_fast_hash():
    x = jax.random.uniform(jax.random.key(2), (3, 5, 5, 1))
    key = jax.random.key(8)  # a plain JAX threefry key
    fast = data.binarize(key, x)
    with _fast_paths.disabled():
        plain = jax.jit(lambda k, x: data.binarize(k, x))(key, x)
    np.testing.assert_array_equal(fast, plain)


@pytest.mark.slow
def test_without_jax_extend_random_s_prng_api_the_app_falls_back_to_jax_keys():
    code = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np
        from jax.extend import random as extend
        del extend.define_prng_impl, extend.threefry_prng_impl
        from vae_jax.app import _threefry, data, prng
        assert not _threefry.AVAILABLE and _threefry.THREEFRY_2X32 is None
        key = prng.key(3, "threefry2x32")
        assert key.dtype == jax.random.key(3).dtype
        print(np.asarray(data.binarize(key, jnp.full((9,), 0.5))).astype(int).tolist())
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = data.binarize(jax.random.key(3), jnp.full((9,), 0.5)).astype(int).tolist()
    assert result.stdout.strip() == str(expected)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_bfloat16_networks_have_one_param_structure_on_either_path(architecture):
    def build():
        if architecture == "mlp":
            return model_lib.mlp_vae((6, 6, 1), 3, (32, 16), dtype=jnp.bfloat16)
        return model_lib.conv_vae((8, 8, 1), 3, (4, 8), 16, dtype=jnp.bfloat16)

    fast_vae = build()
    params = fast_vae.init(jax.random.key(0))
    with _fast_paths.disabled():
        plain_vae = build()
        plain_params = plain_vae.init(jax.random.key(0))
    chex.assert_trees_all_equal_structs(params, plain_params)
    chex.assert_trees_all_equal(params, plain_params)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(plain_params))
    x = jax.random.uniform(jax.random.key(1), (4, *fast_vae.input_shape))
    fast_out = jax.jit(lambda p, x: fast_vae.encode(p, x))(params, x)
    with _fast_paths.disabled():
        plain_out = jax.jit(lambda p, x: plain_vae.encode(p, x))(params, x)
        plain_decoded = plain_vae.decode(params, fast_out[0])
        assert not _uses_mixed_matmul(plain_vae, params, x)
    assert _uses_mixed_matmul(fast_vae, params, x)  # the dense layers (conv: its heads)
    for a, b in zip(fast_out, plain_out):
        assert b.dtype == jnp.float32
        np.testing.assert_allclose(a, b, atol=0.05, rtol=0.05)
    assert plain_decoded.dtype == jnp.float32
    np.testing.assert_allclose(fast_vae.decode(params, fast_out[0]), plain_decoded, atol=0.05,
                               rtol=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("fast", [True, False], ids=["cpu_path", "flax_path"])
def test_bfloat16_training_gradients_are_close_to_float32_ones(fast):
    full = model_lib.mlp_vae((28, 28, 1), 4, (64,))
    mixed = model_lib.mlp_vae((28, 28, 1), 4, (64,), dtype=jnp.bfloat16)
    params = full.init(jax.random.key(0))
    x = data.binarize(jax.random.key(1), jax.random.uniform(jax.random.key(2), (32, 28, 28, 1)))
    with contextlib.nullcontext() if fast else _fast_paths.disabled():
        grads = [jax.grad(lambda p, m=m: objectives.loss(m, p, x, jax.random.key(3))[0])(params)
                 for m in (full, mixed)]
    for a, b in zip(*map(jax.tree.leaves, grads)):
        assert b.dtype == jnp.float32
        # A ReLU unit at the edge may switch on one side of the rounding: compare whole leaves.
        assert float(jnp.linalg.norm(b - a) / jnp.linalg.norm(a)) < 0.05


@pytest.mark.slow
@settings(deadline=None, max_examples=10)
@given(batch=st.integers(1, 5), num_samples=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_batched_losses_are_the_means_of_the_single_example_terms(batch, num_samples, seed):
    vae = model_lib.mlp_vae((6,), 3, (8,))
    params = vae.init(jax.random.key(seed))
    x = jax.random.uniform(jax.random.key(seed + 1), (batch, 6))
    key = jax.random.key(seed + 2)
    keys = jax.random.split(key, batch)
    _, means = objectives.loss(vae, params, x, key)
    singles = jax.vmap(objectives.elbo, (None, None, 0, 0))(vae, params, x, keys)
    np.testing.assert_allclose(means.elbo, jnp.mean(singles.elbo), rtol=1e-5, atol=1e-5)
    _, iwae_means = iwae.iwae_loss(vae, params, x, key, num_samples)
    iwae_singles = jax.vmap(iwae.iwae_terms, (None, None, 0, 0, None))(vae, params, x, keys,
                                                                       num_samples)
    for a, b in zip(iwae_means, iwae_singles):
        np.testing.assert_allclose(a, jnp.mean(b), rtol=1e-5, atol=1e-5)
