"""The maths of vae_jax.distributions against closed forms, Monte Carlo and hand computation."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from vae_jax import distributions as D

jax.config.update("jax_enable_x64", False)

finite = st.floats(-5.0, 5.0, allow_nan=False, width=32)


@pytest.mark.slow
@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(finite, finite), min_size=1, max_size=6))
def test_gaussian_kl_is_non_negative(pairs):
    mean, log_variance = jnp.array(pairs, jnp.float32).T
    assert float(D.gaussian_kl_to_standard_normal(mean, log_variance)) >= -1e-5


def test_gaussian_kl_is_zero_exactly_at_the_prior():
    assert float(D.gaussian_kl_to_standard_normal(jnp.zeros(7), jnp.zeros(7))) == 0.0


def test_gaussian_kl_matches_the_lecture_form():
    mean, log_variance = jnp.array([0.3, -1.2]), jnp.array([0.5, -0.7])
    lecture = -0.5 * jnp.sum(1 + log_variance - mean**2 - jnp.exp(log_variance))
    np.testing.assert_allclose(D.gaussian_kl_to_standard_normal(mean, log_variance), lecture,
                               rtol=1e-6)


@pytest.mark.slow
def test_gaussian_kl_matches_monte_carlo():
    mean, log_variance = jnp.array([0.5, -1.0, 2.0]), jnp.array([-0.5, 0.3, 0.0])
    keys = jax.random.split(jax.random.key(0), 200_000)
    z = jax.vmap(D.gaussian_sample, in_axes=(0, None, None))(keys, mean, log_variance)
    log_q = jax.vmap(D.gaussian_log_prob, in_axes=(0, None, None))(z, mean, log_variance)
    log_p = jax.vmap(D.standard_normal_log_prob)(z)
    samples = log_q - log_p
    monte_carlo = float(jnp.mean(samples))
    standard_error = float(jnp.std(samples)) / math.sqrt(len(samples))
    exact = float(D.gaussian_kl_to_standard_normal(mean, log_variance))
    assert abs(monte_carlo - exact) < 4 * standard_error


@pytest.mark.slow
def test_gaussian_sample_has_the_requested_moments_and_is_reparameterised():
    mean, log_variance = jnp.array([1.0, -2.0]), jnp.log(jnp.array([0.25, 4.0]))
    keys = jax.random.split(jax.random.key(1), 100_000)
    z = jax.vmap(D.gaussian_sample, in_axes=(0, None, None))(keys, mean, log_variance)
    np.testing.assert_allclose(z.mean(0), mean, atol=0.02)
    np.testing.assert_allclose(z.var(0), jnp.exp(log_variance), rtol=0.02)
    # d/dμ E[z] = 1 through the sample: gradients flow through z = μ + σ·ε.
    grad = jax.grad(lambda m: D.gaussian_sample(jax.random.key(2), m, log_variance).sum())(mean)
    np.testing.assert_allclose(grad, jnp.ones(2))


def test_gaussian_sample_depends_only_on_the_key():
    args = (jnp.zeros(3), jnp.zeros(3))
    a = D.gaussian_sample(jax.random.key(0), *args)
    b = D.gaussian_sample(jax.random.key(0), *args)
    c = D.gaussian_sample(jax.random.key(1), *args)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_gaussian_log_prob_hand_computed():
    # log N(1; 0, 4) = −½(log 2π + log 4 + 1/4)
    expected = -0.5 * (math.log(2 * math.pi) + math.log(4.0) + 0.25)
    np.testing.assert_allclose(D.gaussian_log_prob(jnp.array([1.0]), jnp.array([0.0]),
                                                   jnp.log(jnp.array([4.0]))), expected, rtol=1e-6)


def test_bernoulli_log_prob_hand_computed():
    logits, x = jnp.array([0.0, 2.0, -1.0]), jnp.array([1.0, 0.0, 0.0])
    sigmoid = lambda t: 1 / (1 + math.exp(-t))  # noqa: E731
    expected = math.log(0.5) + math.log(1 - sigmoid(2.0)) + math.log(1 - sigmoid(-1.0))
    np.testing.assert_allclose(D.bernoulli_log_prob(logits, x), expected, rtol=1e-6)


def test_bernoulli_log_prob_is_finite_for_extreme_logits():
    logits = jnp.array([1e4, -1e4, 1e4, -1e4])
    x = jnp.array([1.0, 0.0, 0.0, 1.0])
    value, grad = jax.value_and_grad(D.bernoulli_log_prob)(logits, x)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, -2e4, rtol=1e-6)


def test_categorical_kl_is_not_symmetric():
    p = jnp.array([0.36, 0.48, 0.16])
    q = jnp.full(3, 1 / 3)
    forward, backward = float(D.categorical_kl(p, q)), float(D.categorical_kl(q, p))
    expected_forward = sum(pi * math.log(pi * 3) for pi in (0.36, 0.48, 0.16))
    expected_backward = sum(math.log((1 / 3) / pi) / 3 for pi in (0.36, 0.48, 0.16))
    np.testing.assert_allclose([forward, backward], [expected_forward, expected_backward],
                               rtol=1e-5)
    assert forward != pytest.approx(backward, abs=1e-3)


def test_outputs_are_float32_scalars():
    chex.assert_shape(D.gaussian_kl_to_standard_normal(jnp.zeros(4), jnp.zeros(4)), ())
    chex.assert_type(D.bernoulli_log_prob(jnp.zeros((2, 3)), jnp.ones((2, 3))), jnp.float32)


# --- Float32: no cancellation, no NaN (issue 14, item 6) ---------------------------------------

def _bernoulli_float64(logits, x):
    """Σ x log σ(ℓ) + (1 − x) log σ(−ℓ) in float64, from the float32 inputs."""
    logits, x = np.float64(logits), np.float64(x)
    return np.sum(-x * np.logaddexp(0, -logits) - (1 - x) * np.logaddexp(0, logits))


@pytest.mark.parametrize("logit,x", [(1e4, 0.99999), (-1e4, 1e-5), (3e5, 0.5), (-2e3, 0.999),
                                     (1e30, 1 - 2**-24), (50.0, 0.9999999)])
def test_bernoulli_log_prob_is_exact_for_grey_levels_at_large_logits(logit, x):
    # x·ℓ − softplus(ℓ) cancelled here: ℓ = 1e4, x = 0.99999 gave −0.100586 (exact −0.100136).
    logits, data = jnp.array([logit], jnp.float32), jnp.array([x], jnp.float32)
    np.testing.assert_allclose(D.bernoulli_log_prob(logits, data), _bernoulli_float64(logits, data),
                               rtol=1e-6)


@pytest.mark.slow
def test_bernoulli_log_prob_gradients_are_analytic_at_a_zero_logit():
    # |ℓ| has no derivative at 0; the custom JVP gives x − σ(0) = x − ½ and ∂/∂x = ℓ, and second
    # derivatives −σ(ℓ)(1 − σ(ℓ)) = −¼ there.
    logits, x = jnp.zeros(3), jnp.array([0.0, 0.3, 1.0])
    grad_logits, grad_x = jax.grad(D.bernoulli_log_prob, argnums=(0, 1))(logits, x)
    np.testing.assert_allclose(grad_logits, x - 0.5, atol=1e-7)
    np.testing.assert_allclose(grad_x, 0.0)
    np.testing.assert_allclose(jax.hessian(D.bernoulli_log_prob)(logits, x), -0.25 * np.eye(3),
                               atol=1e-7)
    logits = jnp.array([-3.0, 2.0, 1e4])
    np.testing.assert_allclose(jax.grad(D.bernoulli_log_prob, argnums=1)(logits, x), logits)
    sigmoid = 1 / (1 + np.exp(-np.float64(logits)))
    np.testing.assert_allclose(jnp.diag(jax.hessian(D.bernoulli_log_prob)(logits, x)),
                               -sigmoid * (1 - sigmoid), rtol=1e-5, atol=1e-12)


def test_gaussian_log_prob_is_finite_at_an_exact_match_with_a_tiny_variance():
    # (x − μ)²·exp(−log σ²) was 0·∞ = NaN at x = μ, log σ² = −100; the exact value is finite.
    x, log_variance = jnp.array([0.25, -1.0]), jnp.array([-100.0, -300.0])
    value, grads = jax.value_and_grad(D.gaussian_log_prob, argnums=(0, 1, 2))(x, x, log_variance)
    np.testing.assert_allclose(value, -0.5 * np.sum(math.log(2 * math.pi) + log_variance),
                               rtol=1e-6)
    np.testing.assert_allclose(grads[0], 0.0)
    np.testing.assert_allclose(grads[1], 0.0)
    np.testing.assert_allclose(grads[2], -0.5)


@pytest.mark.parametrize("log_variance", [1e-4, -1e-4, 1e-3, -1e-3, 1e-2, -3e-2])
def test_gaussian_kl_is_accurate_near_the_prior(log_variance):
    # σ² − 1 − log σ² cancels for log σ² near 0 (exp then −1 lost all but a few digits: 8.3e-9
    # for 2.5e-9 at 1e-4); expm1(log σ²) − log σ² keeps about three.
    value = D.gaussian_kl_to_standard_normal(jnp.zeros(1), jnp.array([log_variance]))
    t = np.float64(np.float32(log_variance))
    np.testing.assert_allclose(value, 0.5 * (np.expm1(t) - t), rtol=2e-3)
