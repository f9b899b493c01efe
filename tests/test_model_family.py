"""The model family: likelihoods against hand computation, the plain AE, convolutional networks."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax
from vae_jax import likelihoods, model as model_lib, objectives

X = jnp.array([[0.0, 0.5], [1.0, 0.25]])  # one example of shape (2, 2)
MEAN = jnp.array([[0.5, 0.5], [0.0, 1.0]])


def test_gaussian_fixed_sigma_hand_computed():
    sigma = 2.0
    lik = likelihoods.gaussian("fixed", sigma)
    sse = float(jnp.sum((X - MEAN) ** 2))
    expected = -0.5 * sse / sigma**2 - 4 * math.log(sigma) - 2 * math.log(2 * math.pi)
    np.testing.assert_allclose(lik.log_prob(lik.init((2, 2)), X, MEAN), expected, rtol=1e-6)


def test_gaussian_with_unit_sigma_is_half_sse_plus_the_documented_constant():
    lik = likelihoods.gaussian("fixed", 1.0)
    d = X.size
    half_sse = 0.5 * float(jnp.sum((X - MEAN) ** 2))
    np.testing.assert_allclose(-lik.log_prob({}, X, MEAN) - half_sse, d / 2 * math.log(2 * math.pi),
                               rtol=1e-6)


@pytest.mark.parametrize("scale,shape", [("scalar", ()), ("per_pixel", (2, 2))])
def test_learned_gaussian_scale_is_a_parameter(scale, shape):
    lik = likelihoods.gaussian(scale, 0.5)
    params = lik.init((2, 2))
    chex.assert_shape(params["log_scale"], shape)
    np.testing.assert_allclose(params["log_scale"], math.log(0.5), rtol=1e-6)
    # log N(x; μ, s²) = −½ Σ r²/s² − D log s − D/2 log 2π, and its gradient in log s is
    # Σ r²/s² − D.
    grad = jax.grad(lik.log_prob)(params, X, MEAN)["log_scale"]
    r2 = (X - MEAN) ** 2 / 0.25
    expected = jnp.sum(r2 - 1.0) if scale == "scalar" else r2 - 1.0
    np.testing.assert_allclose(grad, expected, rtol=1e-5)


def test_mse_and_rmse_hand_computed():
    logits = jnp.zeros((2, 2))  # x̂ = 0.5 everywhere
    mse = float(jnp.mean((X - 0.5) ** 2))
    np.testing.assert_allclose(likelihoods.squared_error(10.0).log_prob({}, X, logits), -10 * mse,
                               rtol=1e-6)
    np.testing.assert_allclose(likelihoods.squared_error(10.0, root=True).log_prob({}, X, logits),
                               -10 * math.sqrt(mse), rtol=1e-6)


def test_negative_alpha_and_sigma_are_named():
    with pytest.raises(vae_jax.ConfigError, match=r"^alpha must be non-negative, got -1.0$"):
        likelihoods.squared_error(-1.0)
    with pytest.raises(vae_jax.ConfigError, match=r"^sigma must be positive, got 0.0$"):
        likelihoods.gaussian("fixed", 0.0)
    with pytest.raises(vae_jax.ConfigError, match=r"^sigma must be positive"):
        likelihoods.gaussian("scalar", np.float32(-1.0))
    with pytest.raises(vae_jax.ConfigError, match=r"^scale must be one of"):
        likelihoods.gaussian("learned", 1.0)


def test_sigma_and_alpha_may_be_arrays_or_traced_values_of_a_sweep():
    x = jnp.array([[0.2, 0.9], [0.5, 0.0]])
    decoded = jnp.zeros((2, 2))
    sigmas = jnp.array([1.0, 0.5])
    swept = jax.vmap(lambda s: likelihoods.gaussian("fixed", s).log_prob({}, x, decoded))(sigmas)
    for s, value in zip((1.0, 0.5), swept):
        np.testing.assert_allclose(value, likelihoods.gaussian("fixed", s).log_prob({}, x, decoded),
                                   rtol=1e-6)
    learned = likelihoods.gaussian("scalar", jnp.asarray(0.5)).init((2, 2))["log_scale"]
    np.testing.assert_allclose(learned, math.log(0.5), rtol=1e-6)
    alphas = jnp.array([1.0, 10.0])
    values = jax.jit(jax.vmap(lambda a: likelihoods.squared_error(a).log_prob({}, x, decoded)))(
        alphas)
    np.testing.assert_allclose(values[1], 10 * values[0], rtol=1e-6)


def test_gaussian_on_integer_pixels_is_a_clear_error():
    lik = likelihoods.gaussian()
    with pytest.raises(vae_jax.ShapeError, match="scale uint8 pixels"):
        lik.log_prob({}, jnp.zeros((2, 2), jnp.uint8), MEAN)


@pytest.mark.slow
def test_plain_autoencoder_never_samples():
    ae = vae_jax.mlp_vae((4, 4, 1), latent_dim=2, hidden_dims=(8,), stochastic=False)
    params = ae.init(jax.random.key(0))
    assert "log_variance" not in params["encoder"]
    x = jax.random.uniform(jax.random.key(1), (3, 4, 4, 1))
    code, log_variance = ae.encode(params, x)
    assert log_variance is None
    first = objectives.batch_elbo(ae, params, x, jax.random.key(2))
    second = objectives.batch_elbo(ae, params, x, jax.random.key(3))
    chex.assert_trees_all_equal(first, second)
    np.testing.assert_array_equal(first.kl, 0.0)
    expected = jax.vmap(ae.log_likelihood, (None, 0, 0))(params, x, ae.decode(params, code))
    np.testing.assert_allclose(first.reconstruction, expected, rtol=1e-6)


@pytest.mark.slow
class ConvShapes(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @pytest.mark.filterwarnings("ignore")
    def test_conv_vae_shapes(self):
        for shape in ((28, 28, 1), (32, 32, 3)):
            vae = model_lib.conv_vae(shape, latent_dim=5, channels=(8, 16), hidden_dim=32)
            params = vae.init(jax.random.key(0))
            x = jax.random.uniform(jax.random.key(1), (2, *shape))
            mean, log_variance = self.variant(vae.encode)(params, x)
            chex.assert_shape([mean, log_variance], (2, 5))
            chex.assert_shape(self.variant(vae.decode)(params, mean), (2, *shape))
            terms = self.variant(lambda p, x: objectives.batch_elbo(vae, p, x, jax.random.key(2)))(
                params, x)
            chex.assert_tree_all_finite(terms)


def test_conv_rejects_an_image_shape_it_cannot_take():
    with pytest.raises(vae_jax.ShapeError, match="divisible by 4; got \\(30, 30, 1\\)"):
        model_lib.conv_vae((30, 30, 1), latent_dim=2)


@pytest.mark.slow
def test_learned_scale_params_are_trained_with_the_rest():
    vae = vae_jax.mlp_vae((2, 2), latent_dim=1, hidden_dims=(4,),
                          likelihood=likelihoods.gaussian("scalar", 1.0))
    params = vae.init(jax.random.key(0))
    grads, _ = jax.grad(objectives.loss, argnums=1, has_aux=True)(vae, params, X[None],
                                                                 jax.random.key(1))
    assert set(grads) == {"encoder", "decoder", "likelihood"}
    assert float(jnp.abs(grads["likelihood"]["log_scale"])) > 0


def test_kl_warmup_schedule_at_chosen_steps():
    schedule = objectives.kl_weight_schedule(beta=4.0, warmup_steps=100)
    np.testing.assert_allclose([schedule(s) for s in (0, 25, 100, 1000)], [0.0, 1.0, 4.0, 4.0])
    np.testing.assert_allclose(objectives.kl_weight_schedule(2.0)(12345), 2.0)


@pytest.mark.slow
def test_free_bits_floor_each_dimensions_batch_mean_kl():
    vae = vae_jax.mlp_vae((2,), latent_dim=2, hidden_dims=())
    params = jax.tree.map(jnp.zeros_like, vae.init(jax.random.key(0)))
    params["encoder"]["mean"]["bias"] = jnp.array([0.0, 2.0])  # KL per dim: 0 and ½·2² = 2
    x = jnp.ones((3, 2))
    key = jax.random.key(0)
    value0, terms = objectives.loss(vae, params, x, key, 1.0, free_bits=0.0)
    value1, _ = objectives.loss(vae, params, x, key, 1.0, free_bits=0.5)
    value3, _ = objectives.loss(vae, params, x, key, 1.0, free_bits=3.0)
    np.testing.assert_allclose(terms.kl, 2.0, rtol=1e-6)
    np.testing.assert_allclose(value1 - value0, 0.5, rtol=1e-5)  # dim 0 raised from 0 to 0.5
    np.testing.assert_allclose(value3 - value0, 3.0 + 1.0, rtol=1e-5)  # 0 → 3 and 2 → 3
    grads = jax.grad(lambda p: objectives.loss(vae, p, x, key, 1.0, 3.0)[0])(params)
    np.testing.assert_allclose(grads["encoder"]["mean"]["bias"], 0.0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_bfloat16_compute_keeps_float32_params_and_outputs_close(architecture):
    build = {"mlp": lambda dtype: model_lib.mlp_vae((28, 28, 1), 4, (64,), dtype=dtype),
             "conv": lambda dtype: model_lib.conv_vae((28, 28, 1), 4, hidden_dim=64,
                                                      dtype=dtype)}[architecture]
    full, mixed = build(jnp.float32), build(jnp.bfloat16)
    params = full.init(jax.random.key(0))
    mixed_params = mixed.init(jax.random.key(0))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(mixed_params))
    x = jax.random.uniform(jax.random.key(1), (8, 28, 28, 1))
    for a, b in zip(jax.jit(full.encode)(params, x), jax.jit(mixed.encode)(params, x)):
        assert b.dtype == jnp.float32
        np.testing.assert_allclose(a, b, atol=0.05, rtol=0.05)
    decoded = jax.jit(mixed.decode)(params, jnp.ones((8, 4)))
    assert decoded.dtype == jnp.float32
    np.testing.assert_allclose(full.decode(params, jnp.ones((8, 4))), decoded, atol=0.05,
                               rtol=0.05)
