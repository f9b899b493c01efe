"""Pure functions refuse the wrong thing (issue 14, item 5): a batch where one example is expected
and the reverse, a key of the wrong kind or shape, arrays of one event with different shapes, and
data an evaluation cannot score. Shape checks run under jit (at trace time); value checks run on
concrete data sets only. Each message is one line with the problem and the fix."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax
from vae_jax import distributions as D, iwae, latent, likelihoods, objectives
from vae_jax.app import evaluation

INPUT_SHAPE = (6, 5, 1)
B = 8


@pytest.fixture(scope="module", name="model")
def fixture_model():
    vae = vae_jax.mlp_vae(INPUT_SHAPE, latent_dim=3, hidden_dims=(16,))
    params = vae.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (B, *INPUT_SHAPE))
    return vae, params, x


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# --- One example versus a batch -----------------------------------------------------------------

@pytest.mark.slow
def test_elbo_refuses_a_batch_and_points_to_batch_elbo(model):
    # It returned one batch-summed scalar before.
    vae, params, x = model
    for elbo in (objectives.elbo, jax.jit(objectives.elbo, static_argnums=0)):
        with pytest.raises(vae_jax.ShapeError, match=r"x must be one example of shape \(6, 5, 1\)"
                           r".*got \(8, 6, 5, 1\); use vae_jax\.batch_elbo for a batch") as error:
            elbo(vae, params, x, jax.random.key(2))
        _one_line(error)


@pytest.mark.parametrize("function", ["batch_elbo", "loss", "batch_iwae_bound", "iwae_loss"])
def test_batch_functions_refuse_one_example(model, function):
    vae, params, x = model
    calls = {
        "batch_elbo": lambda x: objectives.batch_elbo(vae, params, x, jax.random.key(2)),
        "loss": lambda x: objectives.loss(vae, params, x, jax.random.key(2)),
        "batch_iwae_bound": lambda x: iwae.batch_iwae_bound(vae, params, x, jax.random.key(2), 3),
        "iwae_loss": lambda x: iwae.iwae_loss(vae, params, x, jax.random.key(2), 3),
    }
    for bad in (x[0], x[:, :, :4], x[:0], x.reshape(B, -1)):
        with pytest.raises(vae_jax.ShapeError, match=rf"{function}: x must have shape "
                           r"\(B ≥ 1, 6, 5, 1\)") as error:
            jax.jit(calls[function])(bad)
        _one_line(error)
    with pytest.raises(vae_jax.ShapeError, match=r"pass x\[None\] for one example"):
        calls[function](x[0])


@pytest.mark.parametrize("function", ["iwae_bound", "iwae_objective", "iwae_terms"])
def test_single_example_iwae_functions_refuse_a_batch(model, function):
    vae, params, x = model
    call = getattr(iwae, function)
    with pytest.raises(vae_jax.ShapeError, match=rf"{function}: x must be one example") as error:
        call(vae, params, x, jax.random.key(2), 3)
    assert "for a batch" in _one_line(error)
    with pytest.raises(vae_jax.ShapeError, match="one example"):
        iwae.log_importance_weights(vae, params, x, jnp.zeros((3, vae.latent_dim)))
    with pytest.raises(vae_jax.ShapeError, match=r"epsilon must have shape \(n, 3\)"):
        iwae.log_importance_weights(vae, params, x[0], jnp.zeros((3, 4)))


def test_integer_pixels_are_refused_by_the_objectives(model):
    vae, params, x = model
    with pytest.raises(vae_jax.ShapeError, match="floating-point"):
        objectives.batch_elbo(vae, params, (x * 255).astype(jnp.uint8), jax.random.key(0))


@pytest.mark.slow
def test_correct_calls_still_work_under_jit_vmap_and_grad(model):
    vae, params, x = model
    key = jax.random.key(3)
    single = jax.jit(objectives.elbo, static_argnums=0)(vae, params, x[0], key)
    assert single.objective.shape == ()
    keys = jax.random.split(key, B)
    vmapped = jax.vmap(objectives.elbo, (None, None, 0, 0))(vae, params, x, keys)
    np.testing.assert_allclose(vmapped.objective,
                               objectives.batch_elbo(vae, params, x, key).objective, rtol=1e-5)
    grads, _ = jax.jit(jax.grad(iwae.iwae_loss, argnums=1, has_aux=True), static_argnums=(0, 4))(
        vae, params, x, key, 2)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


# --- Keys ----------------------------------------------------------------------------------------

def test_keys_must_be_one_typed_key(model):
    vae, params, x = model
    with pytest.raises(vae_jax.ShapeError, match=r"key must be one key, shape \(\), got a key "
                       r"array of shape \(8,\)") as error:
        objectives.batch_elbo(vae, params, x, jax.random.split(jax.random.key(0), B))
    _one_line(error)
    with pytest.raises(vae_jax.ShapeError, match=r"key must be a typed PRNG key.*uint32\[2\].*"
                       "wrap_key_data"):
        objectives.elbo(vae, params, x[0], jax.random.PRNGKey(0))
    with pytest.raises(vae_jax.ShapeError, match="typed PRNG key"):
        objectives.loss(vae, params, x, 0)
    with pytest.raises(vae_jax.ShapeError, match=r"key must be one key"):
        iwae.iwae_bound(vae, params, x[0], jax.random.split(jax.random.key(0), 2), 3)
    with pytest.raises(vae_jax.ShapeError, match="typed PRNG key"):
        D.gaussian_sample(jax.random.PRNGKey(0), jnp.zeros(3), jnp.zeros(3))


# --- Arrays of one event -------------------------------------------------------------------------

@pytest.mark.parametrize("name,call", [
    ("gaussian_sample", lambda a, b: D.gaussian_sample(jax.random.key(0), a, b)),
    ("gaussian_log_prob", lambda a, b: D.gaussian_log_prob(a, a, b)),
    ("gaussian_kl_to_standard_normal", D.gaussian_kl_to_standard_normal),
    ("bernoulli_log_prob", D.bernoulli_log_prob),
    ("categorical_kl", D.categorical_kl),
    ("squared_error_mean", likelihoods.squared_error_mean),
])
def test_distributions_refuse_mismatched_shapes_instead_of_broadcasting(name, call):
    # Each broadcast (4,) against (1,) or (3, 4) silently before.
    a = jnp.full((4,), 0.25)
    for b in (jnp.full((1,), 0.25), jnp.full((3, 4), 0.25)):
        with pytest.raises(vae_jax.ShapeError, match=f"{name} takes arrays of one event with one "
                           rf"shape, got .*\(4,\).*{re.escape(str(tuple(b.shape)))}") as error:
            jax.jit(call)(a, b)
        _one_line(error)
    call(a, a)  # one shape: fine


@pytest.mark.parametrize("likelihood", [likelihoods.gaussian("fixed", 0.5),
                                        likelihoods.gaussian("scalar", 0.5),
                                        likelihoods.gaussian("per_pixel", 0.5),
                                        likelihoods.bernoulli(), likelihoods.squared_error(2.0)])
def test_likelihoods_still_broadcast_their_own_scale(likelihood):
    params = likelihood.init(INPUT_SHAPE)
    x = jnp.full(INPUT_SHAPE, 0.5)
    value = jax.jit(likelihood.log_prob)(params, x, jnp.zeros(INPUT_SHAPE))
    assert value.shape == () and np.isfinite(value)
    with pytest.raises(vae_jax.ShapeError, match="one event with one shape"):
        likelihood.log_prob(params, x, jnp.zeros((30,)))


# --- Data values, on concrete data sets ----------------------------------------------------------

def test_evaluate_refuses_a_nan_pixel(model):
    # nll, neg_elbo and kl were NaN before.
    vae, params, x = model
    bad = np.asarray(x).copy()
    bad[3, 2, 1, 0] = np.nan
    with pytest.raises(vae_jax.DataError, match="x holds NaN or infinite values") as error:
        evaluation.evaluate(vae, params, bad, jax.random.key(0), num_samples=10)
    _one_line(error)
    bad[3, 2, 1, 0] = 1.5  # the Bernoulli likelihood needs [0, 1]
    with pytest.raises(vae_jax.DataError, match=r"outside the \[0, 1\]"):
        evaluation.evaluate(vae, params, bad, jax.random.key(0), num_samples=10)
    with pytest.raises(vae_jax.ShapeError, match=r"evaluate: x must have shape \(B ≥ 1, 6, 5, 1\)"):
        evaluation.evaluate(vae, params, x[0], jax.random.key(0), num_samples=10)


@pytest.mark.slow
def test_a_gaussian_likelihood_takes_any_finite_value_but_not_nan():
    vae = vae_jax.mlp_vae(INPUT_SHAPE, latent_dim=2, hidden_dims=(8,),
                          likelihood=likelihoods.gaussian("scalar", 1.0))
    params = vae.init(jax.random.key(0))
    x = 3.0 * np.asarray(jax.random.normal(jax.random.key(1), (4, *INPUT_SHAPE)))
    report = evaluation.evaluate(vae, params, x, jax.random.key(0), num_samples=2, batch_size=4)
    assert np.isfinite(report["nll"])
    x[0, 0, 0, 0] = -np.inf
    with pytest.raises(vae_jax.DataError, match="x holds NaN or infinite values; the gaussian "
                       "likelihood needs finite data"):
        evaluation.evaluate(vae, params, x, jax.random.key(0), num_samples=2, batch_size=4)


@pytest.mark.parametrize("function", [latent.encode_means, latent.encode_posterior])
def test_encoding_a_data_set_checks_values_when_concrete_only(model, function):
    vae, params, x = model
    bad = x.at[0, 0, 0, 0].set(jnp.nan)
    with pytest.raises(vae_jax.DataError, match="x holds NaN or infinite values"):
        function(vae, params, bad, 4)
    # Under jit the data are traced: no host sync, no check (the codes are NaN where x is).
    codes = jax.jit(function, static_argnums=(0, 3))(vae, params, bad, 4)
    means = codes[0] if isinstance(codes, tuple) else codes
    assert np.isnan(means[0]).all() and np.isfinite(means[1:]).all()
    with pytest.raises(vae_jax.ShapeError, match=r"x must have shape \(N, 6, 5, 1\)"):
        function(vae, params, x[0, :, :, 0], 4)


@pytest.mark.slow
@pytest.mark.parametrize("name,call", [
    ("elbo", lambda vae, p, x, k: objectives.elbo(vae, p, x[0], k)),
    ("batch_elbo", lambda vae, p, x, k: objectives.batch_elbo(vae, p, x, k)),
    ("loss", lambda vae, p, x, k: objectives.loss(vae, p, x, k)),
    ("iwae_bound", lambda vae, p, x, k: iwae.iwae_bound(vae, p, x[0], k, 3)),
    ("batch_iwae_bound", lambda vae, p, x, k: iwae.batch_iwae_bound(vae, p, x, k, 3)),
    ("iwae_loss", lambda vae, p, x, k: iwae.iwae_loss(vae, p, x, k, 3)),
    ("bernoulli_log_prob", lambda vae, p, x, k: D.bernoulli_log_prob(jnp.zeros_like(x), x)),
])
def test_every_function_taking_data_checks_concrete_values_and_not_traced_ones(model, name,
                                                                                call):
    # NaN and 255-scaled pixels went through silently before (nan, or a loss of 1e22).
    vae, params, x = model
    key = jax.random.key(0)
    for bad, message in ((x.at[0, 1, 2, 0].set(jnp.nan), "NaN"), (x * 255, "255")):
        with pytest.raises(vae_jax.DataError, match=f"{name}: x .*") as error:
            call(vae, params, bad, key)
        assert message in _one_line(error) or "values in [" in _one_line(error)
    call(vae, params, x, key)  # good data passes
    # Traced (under jit): no host sync and no check; the NaN flows through.
    out = jax.jit(lambda p, x: call(vae, p, x, key))(params, x.at[0, 1, 2, 0].set(jnp.nan))
    assert not np.all(np.isfinite(np.asarray(jax.tree.leaves(out)[0])))


def test_interpolation_takes_single_examples(model):
    vae, params, x = model
    with pytest.raises(vae_jax.ShapeError, match="interpolate_images: x must be one example"):
        latent.interpolate_images(vae, params, x[:2], x[2:4], 5)
    assert latent.interpolate_images(vae, params, x[0], x[1], 5).shape == (5, *INPUT_SHAPE)


def test_the_training_loss_adds_no_host_sync(model):
    """The checks are static: the jitted loss's program is the same with or without them (no
    callbacks, no transfers), and traced data is never inspected."""
    vae, params, x = model
    jaxpr = jax.make_jaxpr(lambda p, x, k: objectives.loss(vae, p, x, k))(params, x,
                                                                          jax.random.key(0))
    primitives = {eqn.primitive.name for eqn in jaxpr.jaxpr.eqns}
    assert not any("callback" in name for name in primitives), primitives
