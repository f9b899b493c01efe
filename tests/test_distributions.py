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
