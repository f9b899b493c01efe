"""The pure research API: shapes under jit/vmap/grad, the ELBO on a hand-computed case, errors."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax
from vae_jax import objectives

INPUT_SHAPE = (6, 5, 1)


@pytest.fixture(name="vae")
def fixture_vae():
    return vae_jax.mlp_vae(INPUT_SHAPE, latent_dim=3, hidden_dims=(16, 8))


@pytest.fixture(name="x")
def fixture_x():
    return jax.random.uniform(jax.random.key(7), (4, *INPUT_SHAPE))


@pytest.mark.slow
class TestShapes(chex.TestCase):

    def setUp(self):
        super().setUp()
        self.vae = vae_jax.mlp_vae(INPUT_SHAPE, latent_dim=3, hidden_dims=(16, 8))
        self.params = self.vae.init(jax.random.key(0))
        self.x = jax.random.uniform(jax.random.key(1), (4, *INPUT_SHAPE))

    @chex.variants(with_jit=True, without_jit=True)
    def test_encode_decode_shapes(self):
        mean, log_variance = self.variant(self.vae.encode)(self.params, self.x)
        chex.assert_shape([mean, log_variance], (4, 3))
        logits = self.variant(self.vae.decode)(self.params, mean)
        chex.assert_shape(logits, (4, *INPUT_SHAPE))
        chex.assert_type([mean, log_variance, logits], jnp.float32)
        single_mean, _ = self.variant(self.vae.encode)(self.params, self.x[0])
        chex.assert_shape(single_mean, (3,))

    @chex.variants(with_jit=True, without_jit=True)
    def test_batch_elbo_shapes_and_finite(self):
        terms = self.variant(lambda p, x, k: objectives.batch_elbo(self.vae, p, x, k))(
            self.params, self.x, jax.random.key(2))
        chex.assert_shape(list(terms), (4,))
        chex.assert_tree_all_finite(terms)

    @chex.variants(with_jit=True, without_jit=True)
    def test_grad_of_loss_has_param_shapes(self):
        grads, means = self.variant(jax.grad(objectives.loss, argnums=1, has_aux=True),
                                    static_argnums=0)(self.vae, self.params, self.x,
                                                      jax.random.key(3))
        chex.assert_trees_all_equal_shapes(grads, self.params)
        chex.assert_tree_all_finite(grads)
        chex.assert_shape(list(means), ())


@pytest.mark.slow
def test_batch_elbo_is_the_vmap_of_the_single_example_elbo(vae, x):
    params = vae.init(jax.random.key(0))
    key = jax.random.key(5)
    batched = objectives.batch_elbo(vae, params, x, key)
    keys = jax.random.split(key, x.shape[0])
    for i in range(x.shape[0]):
        single = objectives.elbo(vae, params, x[i], keys[i])
        np.testing.assert_allclose(single.objective, batched.objective[i], rtol=1e-5)


def _constant_vae_params(vae, mean, log_variance, logits):
    """Params that make the encoder output (mean, log_variance) and the decoder `logits` for any
    input: all kernels zero, the answers in the biases."""
    params = jax.tree.map(jnp.zeros_like, vae.init(jax.random.key(0)))
    params["encoder"]["mean"]["bias"] = jnp.asarray(mean, jnp.float32)
    params["encoder"]["log_variance"]["bias"] = jnp.asarray(log_variance, jnp.float32)
    params["decoder"]["output"]["bias"] = jnp.asarray(logits, jnp.float32)
    return params


@pytest.mark.slow
def test_elbo_hand_computed():
    vae = vae_jax.mlp_vae((2,), latent_dim=1, hidden_dims=())
    params = _constant_vae_params(vae, mean=[0.5], log_variance=[math.log(0.25)],
                                  logits=[0.0, math.log(3.0)])
    x = jnp.array([1.0, 0.0])
    # log p(x|z) = log σ(0) + log(1 − σ(log 3)) = log ½ + log ¼, whatever z is.
    reconstruction = math.log(0.5) + math.log(0.25)
    # KL = ½(σ² + μ² − 1 − log σ²) = ½(0.25 + 0.25 − 1 − log 0.25)
    kl = 0.5 * (0.25 + 0.25 - 1.0 - math.log(0.25))
    for beta in (1.0, 4.0):
        terms = objectives.elbo(vae, params, x, jax.random.key(0), beta=beta)
        np.testing.assert_allclose(terms.reconstruction, reconstruction, rtol=1e-6)
        np.testing.assert_allclose(terms.kl, kl, rtol=1e-6)
        np.testing.assert_allclose(terms.objective, reconstruction - beta * kl, rtol=1e-6)
        np.testing.assert_allclose(terms.elbo, reconstruction - kl, rtol=1e-6)


@pytest.mark.slow
def test_loss_is_the_batch_mean_of_the_negative_objective(vae, x):
    params = vae.init(jax.random.key(0))
    value, means = objectives.loss(vae, params, x, jax.random.key(1), 2.0)
    terms = objectives.batch_elbo(vae, params, x, jax.random.key(1), 2.0)
    np.testing.assert_allclose(value, -terms.objective.mean(), rtol=1e-6)
    np.testing.assert_allclose(means.kl, terms.kl.mean(), rtol=1e-6)


@pytest.mark.slow
def test_loss_takes_the_model_first_and_grads_in_params_with_argnums_1(vae, x):
    params = vae.init(jax.random.key(0))
    key = jax.random.key(1)
    grads, means = jax.grad(objectives.loss, argnums=1, has_aux=True)(vae, params, x, key, 2.0)
    chex.assert_trees_all_equal_shapes(grads, params)
    expected = jax.grad(lambda p: objectives.loss(vae, p, x, key, 2.0)[0])(params)
    chex.assert_trees_all_close(grads, expected, rtol=1e-6)
    jitted = jax.jit(objectives.loss, static_argnums=0)
    np.testing.assert_allclose(jitted(vae, params, x, key, 2.0)[0],
                               objectives.loss(vae, params, x, key, 2.0)[0], rtol=1e-6)
    iwae_grads, _ = jax.grad(vae_jax.iwae_loss, argnums=1, has_aux=True)(vae, params, x, key, 3)
    chex.assert_trees_all_equal_shapes(iwae_grads, params)
    del means


@pytest.mark.slow
@pytest.mark.parametrize("name", ["loss", "iwae_loss"])
def test_the_old_params_first_order_warns_and_gives_the_same_value(vae, x, name):
    function = getattr(vae_jax, name)
    params = vae.init(jax.random.key(0))
    key = jax.random.key(1)
    extra = (2.0,) if name == "loss" else (3,)
    value, terms = function(vae, params, x, key, *extra)
    with pytest.warns(DeprecationWarning, match=rf"{name}\(params, model, …\) is deprecated; "
                      rf"call {name}\(model, params, …\)"):
        old_value, old_terms = function(params, vae, x, key, *extra)
    np.testing.assert_array_equal(old_value, value)
    chex.assert_trees_all_equal(old_terms, terms)
    with pytest.warns(DeprecationWarning):  # under jit the swap happens at trace time
        jitted = jax.jit(lambda p: function(p, vae, x, key, *extra)[0])(params)
    np.testing.assert_allclose(jitted, value, rtol=1e-6)


def test_vae_is_hashable_for_static_jit(vae, x):
    params = vae.init(jax.random.key(0))
    jitted = jax.jit(objectives.batch_elbo, static_argnums=0)
    chex.assert_shape(jitted(vae, params, x, jax.random.key(0)).kl, (4,))


@pytest.mark.parametrize("bad", [jnp.zeros((4, 5, 6, 1)), jnp.zeros((30,))])
def test_wrong_input_shape_is_a_clear_error(vae, bad):
    params = vae.init(jax.random.key(0))
    with pytest.raises(vae_jax.ShapeError, match=r"x must have shape \(\*batch, 6, 5, 1\)"):
        vae.encode(params, bad)


def test_integer_pixels_are_a_clear_error(vae):
    params = vae.init(jax.random.key(0))
    with pytest.raises(vae_jax.ShapeError, match="floating-point"):
        vae.encode(params, jnp.zeros((2, *INPUT_SHAPE), jnp.uint8))


def test_bad_sizes_are_shape_errors():
    with pytest.raises(vae_jax.ShapeError, match="latent_dim must be a positive integer, got 0"):
        vae_jax.mlp_vae((28, 28, 1), latent_dim=0, hidden_dims=(10,))
    with pytest.raises(vae_jax.ShapeError, match="hidden_dims entries"):
        vae_jax.mlp_vae((28, 28, 1), latent_dim=2, hidden_dims=(-1,))
    with pytest.raises(vae_jax.ShapeError, match="hidden_dim must be a positive integer"):
        vae_jax.conv_vae((28, 28, 1), latent_dim=2, hidden_dim=0)
    with pytest.raises(vae_jax.ShapeError, match="input_shape entries"):
        vae_jax.mlp_vae((28, 0, 1), latent_dim=2, hidden_dims=(10,))
