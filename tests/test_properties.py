"""Properties of the maths on many generated inputs (hypothesis), beyond the fixed cases of
test_distributions.py: the KL's sign and zero for any shape, the KL against Monte Carlo, the
reparameterised gradient against the analytic one, the Bernoulli log-likelihood and its
gradient at extreme logits, and finite gradients of every likelihood wherever its value is finite.

Examples are random outside CI and derandomized under CI (the profiles in conftest.py); the
statistical tests are derandomized everywhere."""

import math
import os

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from vae_jax import distributions as D, likelihoods

SHAPES = hnp.array_shapes(min_dims=1, max_dims=2, max_side=4)  # few shapes: few compilations


def float32_arrays(shape, low, high):
    return hnp.arrays(np.float32, shape, elements=st.floats(low, high, width=32))


@st.composite
def gaussians(draw, low=-10.0, high=10.0, shapes=SHAPES):
    """(μ, log σ²) of one shape, each entry in [low, high]."""
    shape = draw(shapes)
    return draw(float32_arrays(shape, low, high)), draw(float32_arrays(shape, low, high))


def kl_float64(mean, log_variance):
    mean, log_variance = np.float64(mean), np.float64(log_variance)
    return 0.5 * np.sum(np.expm1(log_variance) - log_variance + mean**2)


_kl = jax.jit(D.gaussian_kl_to_standard_normal)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(gaussians())
def test_kl_is_the_closed_form_non_negative_and_zero_only_at_the_prior(gaussian):
    mean, log_variance = gaussian
    kl = float(_kl(mean, log_variance))
    exact = kl_float64(mean, log_variance)
    np.testing.assert_allclose(kl, exact, rtol=1e-5, atol=1e-5 * mean.size)
    assert kl >= 0.0 or exact < 1e-5 * mean.size  # ≥ 0 up to float32 rounding near 0
    # KL = 0 exactly at the prior, and clearly positive once any μ or log σ² is ≥ 0.01 away.
    zeros = np.zeros_like(mean)
    assert float(_kl(zeros, zeros)) == 0.0
    if max(np.abs(mean).max(), np.abs(log_variance).max()) >= 0.01:
        assert kl >= 2e-5


@jax.jit
def _kl_samples(key, mean, log_variance):
    """log q(z) − log p(z) for 20 000 reparameterised draws z ~ q = N(μ, σ²)."""
    keys = jax.random.split(key, 20_000)
    z = jax.vmap(D.gaussian_sample, in_axes=(0, None, None))(keys, mean, log_variance)
    log_q = jax.vmap(D.gaussian_log_prob, in_axes=(0, None, None))(z, mean, log_variance)
    return log_q - jax.vmap(D.standard_normal_log_prob)(z)


# Statistical tests with a 5-standard-error tolerance run on fixed examples (derandomize), so they
# cannot fail by chance on one run and pass on the next.
@pytest.mark.slow
@settings(max_examples=25, deadline=None, derandomize=True)
@given(gaussians(low=-3.0, high=2.0, shapes=st.integers(1, 4)), st.integers(0, 2**31 - 1))
def test_kl_matches_monte_carlo(gaussian, seed):
    mean, log_variance = gaussian
    samples = np.asarray(_kl_samples(jax.random.key(seed), mean, log_variance), np.float64)
    standard_error = samples.std() / math.sqrt(len(samples))
    exact = kl_float64(mean, log_variance)
    assert abs(samples.mean() - exact) <= 5 * standard_error + 1e-4 * (1 + exact)


@jax.jit
def _reparameterised_gradients(key, mean, log_variance, a, b):
    """∇_(μ, log σ²) f(z) per draw z = μ + σ·ε, for f(z) = Σ a z² + b z and 20 000 draws."""

    def f(mean, log_variance, key):
        z = D.gaussian_sample(key, mean, log_variance)
        return jnp.sum(a * z**2 + b * z)

    keys = jax.random.split(key, 20_000)
    return jax.vmap(jax.grad(f, argnums=(0, 1)), in_axes=(None, None, 0))(mean, log_variance, keys)


@pytest.mark.slow
@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.integers(1, 4).flatmap(lambda n: st.tuples(*(float32_arrays(n, -2.0, 2.0)
                                                        for _ in range(4)))),
       st.integers(0, 2**31 - 1))
def test_reparameterised_gradient_matches_the_analytic_gradient(params, seed):
    # E f(z) = Σ a(μ² + σ²) + b μ, so ∂/∂μ = 2aμ + b and ∂/∂(log σ²) = a σ².
    mean, log_variance, a, b = params
    per_draw = _reparameterised_gradients(jax.random.key(seed), mean, log_variance, a, b)
    analytic = (2 * a * mean + b, a * np.exp(log_variance))
    for draws, expected in zip(per_draw, analytic):
        draws = np.asarray(draws, np.float64)
        standard_error = draws.std(axis=0) / math.sqrt(len(draws))
        np.testing.assert_array_less(np.abs(draws.mean(axis=0) - expected),
                                     5 * standard_error + 1e-4 * (1 + np.abs(expected)))


BIG = float(np.float32(1e30))
EXTREME_LOGITS = st.one_of(st.sampled_from([1e4, -1e4, BIG, -BIG, 88.0, -88.0, 0.0]),
                           st.floats(-BIG, BIG, width=32))


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8).flatmap(lambda n: st.tuples(
    hnp.arrays(np.float32, n, elements=EXTREME_LOGITS),
    hnp.arrays(np.float32, n, elements=st.one_of(st.sampled_from([0.0, 1.0]),
                                                 st.floats(0.0, 1.0, width=32))))))
# x·ℓ − softplus(ℓ) cancelled here (−0.100586 for −0.100136); hypothesis once drew it at random.
@example(logits_and_x=(np.array([1e4], np.float32), np.array([0.99999], np.float32)))
def test_bernoulli_log_prob_is_exact_and_finite_with_the_analytic_gradient(logits_and_x):
    logits, x = logits_and_x
    value, grad = jax.value_and_grad(D.bernoulli_log_prob)(logits, x)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert value <= 0.0  # a log-probability (a cross-entropy ≥ 0 for x in [0, 1])
    # log σ(ℓ) = −log(1 + e^−ℓ), computed stably in float64.
    logits64, x64 = np.float64(logits), np.float64(x)
    exact = np.sum(-x64 * np.logaddexp(0, -logits64) - (1 - x64) * np.logaddexp(0, logits64))
    np.testing.assert_allclose(value, exact, rtol=1e-5, atol=1e-5)
    # d/dℓ [x log σ(ℓ) + (1 − x) log σ(−ℓ)] = x − σ(ℓ)
    sigmoid = 0.5 * (1 + np.tanh(0.5 * logits64))
    np.testing.assert_allclose(grad, x64 - sigmoid, atol=1e-6)


# Every likelihood: its value (and the gradients in the decoded parameters, the likelihood's own
# parameters and x) at extreme logits and at exact reconstructions; √ of the RMSE at 0 was NaN.
LIKELIHOODS = {
    "bernoulli": likelihoods.bernoulli(),
    "gaussian_fixed": likelihoods.gaussian("fixed", 1e-3),
    "gaussian_scalar": likelihoods.gaussian("scalar", 1.0),
    "gaussian_per_pixel": likelihoods.gaussian("per_pixel", 1.0),
    "mse": likelihoods.squared_error(10.0),
    "rmse": likelihoods.squared_error(10.0, root=True),
}
_likelihood_value_and_grads = {
    name: jax.jit(jax.value_and_grad(lik.log_prob, argnums=(0, 1, 2)))
    for name, lik in LIKELIHOODS.items()}


@st.composite
def likelihood_cases(draw):
    """(name, params, x, decoded, exact): decoded logits from EXTREME_LOGITS or Gaussian means, x in
    [0, 1] or an exact reconstruction E[x|z] of decoded, learned log-scales in [−40, 40] — or
    down to −100 for an exact reconstruction (σ² below 1e-38: (x − μ)²/σ² was 0·∞ = NaN). Not
    below −44 otherwise: there a finite −½((x − μ)/σ)² can have a true gradient (x − μ)/σ² past
    float32's 3.4e38."""
    name = draw(st.sampled_from(sorted(LIKELIHOODS)))
    lik = LIKELIHOODS[name]
    n = draw(st.integers(1, 6))
    if name.startswith("gaussian"):
        decoded = draw(hnp.arrays(np.float32, n, elements=st.one_of(
            st.sampled_from([0.0, 1.0, 1e4, -1e4]), st.floats(-1e4, 1e4, width=32))))
    else:
        decoded = draw(hnp.arrays(np.float32, n, elements=EXTREME_LOGITS))
    exact = draw(st.booleans())
    if exact:
        x = np.asarray(lik.mean(jnp.asarray(decoded)), np.float32)
    else:
        x = draw(float32_arrays(n, 0.0, 1.0))
    params = lik.init((n,))
    if params:
        log_scale = draw(float32_arrays(np.shape(params["log_scale"]), -100.0 if exact else -40.0,
                                        40.0))
        params = {"log_scale": jnp.asarray(log_scale)}
    return name, params, x, decoded, exact


@pytest.mark.slow
@settings(max_examples=300)
@given(likelihood_cases())
def test_every_likelihood_has_finite_gradients_wherever_its_value_is_finite(case):
    name, params, x, decoded, exact = case
    value, grads = _likelihood_value_and_grads[name](params, jnp.asarray(x), jnp.asarray(decoded))
    if name in ("bernoulli", "mse", "rmse") or exact:
        # Bounded decoder outputs: finite for every finite logit; and every likelihood is finite
        # at an exact reconstruction (the Gaussian's −½ Σ (log 2π + log σ²), whatever σ).
        assert np.isfinite(value), (name, value)
    if np.isfinite(value):
        for grad in jax.tree.leaves(grads):
            assert np.all(np.isfinite(grad)), (name, value, grads)


def test_rmse_gradient_is_zero_at_an_exact_reconstruction():
    # d√u/du = ∞ at u = 0 made the gradient NaN; 0 is a subgradient of the RMSE at its minimum.
    rmse = likelihoods.squared_error(1.0, root=True)
    logits = jnp.array([-2.0, 0.0, 3.0])
    x = jax.nn.sigmoid(logits)
    grad_x, grad_logits = jax.grad(rmse.log_prob, argnums=(1, 2))({}, x, logits)
    np.testing.assert_array_equal(grad_logits, 0.0)
    np.testing.assert_array_equal(grad_x, 0.0)
    # Away from 0 the gradient is the RMSE's own: −α·(x̂ − x)·σ'(ℓ) / (D·RMSE).
    x = x.at[0].add(0.1)
    grad_logits = jax.grad(rmse.log_prob, argnums=2)({}, x, logits)
    x_hat = jax.nn.sigmoid(logits)
    root = jnp.sqrt(jnp.mean(jnp.square(x - x_hat)))
    np.testing.assert_allclose(grad_logits, -(x_hat - x) * x_hat * (1 - x_hat) / (3 * root),
                               rtol=1e-5, atol=1e-8)


def test_hypothesis_is_derandomized_without_a_database_under_ci():
    """conftest.py's profiles: CI runs cannot fail by chance or replay a saved failure."""
    ci = hypothesis.settings.get_profile("ci")
    assert ci.derandomize and ci.database is None and ci.deadline is None and ci.print_blob
    dev = hypothesis.settings.get_profile("dev")
    assert not dev.derandomize and dev.database is not None
    if os.environ.get("CI"):
        assert hypothesis.settings.default.derandomize
        assert hypothesis.settings.default.database is None
