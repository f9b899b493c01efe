"""Priors p(z) (issue #18, item 1): densities that integrate to 1, a closed-form KL that matches
Monte Carlo, the single-sample rate estimate's expectation, samples with the prior's moments, and
every function under jit, vmap and grad."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax
from vae_jax import distributions, latent, priors


def mixture_params(latent_dim=2):
    return {"logits": jnp.array([0.3, -0.5, 1.0]),
            "means": jnp.array([[-2.0, 0.5], [1.5, 1.0], [0.0, -2.0]])[:, :latent_dim],
            "log_variances": jnp.array([[0.2, -0.4], [-1.0, 0.3], [0.0, 0.5]])[:, :latent_dim]}


def all_priors():
    return [(priors.standard_normal(), {}), (priors.mixture_of_gaussians(3), mixture_params())]


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("index", [0, 1])
def test_each_log_density_integrates_to_one_on_a_grid(dim, index):
    prior, params = all_priors()[index]
    if params:
        params = mixture_params(dim)
    axis = np.linspace(-9.0, 9.0, 601)
    step = axis[1] - axis[0]
    grid = np.stack(np.meshgrid(*[axis] * dim, indexing="ij"), -1).reshape(-1, dim)
    log_p = jax.jit(jax.vmap(prior.log_prob, in_axes=(None, 0)))(params, jnp.asarray(grid))
    assert float(jnp.sum(jnp.exp(log_p)) * step**dim) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("jit", [False, True])
def test_the_closed_form_kl_matches_monte_carlo_and_the_rate_estimate(jit):
    prior = priors.standard_normal()
    mean, log_variance = jnp.array([0.5, -1.0, 2.0]), jnp.array([-0.3, 0.4, -1.2])
    rate = jax.jit(priors.rate, static_argnums=0) if jit else priors.rate
    z = jax.vmap(distributions.gaussian_sample, in_axes=(0, None, None))(
        jax.random.split(jax.random.key(0), 200_000), mean, log_variance)
    closed = rate(prior, {}, mean, log_variance, z[0])
    chex.assert_shape(closed, ())
    estimates = jax.vmap(lambda code: distributions.gaussian_log_prob(code, mean, log_variance)
                         - prior.log_prob({}, code))(z)
    error = 4 * float(jnp.std(estimates)) / np.sqrt(len(z))
    assert float(jnp.mean(estimates)) == pytest.approx(float(closed), abs=error)


def test_without_a_closed_form_the_rate_is_log_q_minus_log_p_and_unbiased():
    prior, params = priors.mixture_of_gaussians(3), mixture_params()
    assert prior.kl is None
    mean, log_variance = jnp.array([0.2, -0.1]), jnp.array([-0.5, -0.2])
    keys = jax.random.split(jax.random.key(1), 100_000)
    z = jax.vmap(distributions.gaussian_sample, in_axes=(0, None, None))(keys, mean, log_variance)
    rates = jax.jit(jax.vmap(priors.rate, in_axes=(None, None, None, None, 0)),
                    static_argnums=0)(prior, params, mean, log_variance, z)
    expected = (distributions.gaussian_log_prob(z[0], mean, log_variance)
                - prior.log_prob(params, z[0]))
    np.testing.assert_allclose(rates[0], expected, rtol=1e-6)
    # Its mean is the KL, which a grid integral of q·(log q − log p) gives independently.
    axis = np.linspace(-6, 6, 801)
    grid = jnp.asarray(np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2))
    log_q = jax.vmap(distributions.gaussian_log_prob, in_axes=(0, None, None))(grid, mean,
                                                                               log_variance)
    log_p = jax.vmap(prior.log_prob, in_axes=(None, 0))(params, grid)
    kl = float(jnp.sum(jnp.exp(log_q) * (log_q - log_p)) * (axis[1] - axis[0]) ** 2)
    error = 4 * float(jnp.std(rates)) / np.sqrt(len(rates))
    assert float(jnp.mean(rates)) == pytest.approx(kl, abs=error)


def test_mixture_log_prob_is_the_formula_and_one_component_is_a_gaussian():
    prior, params = priors.mixture_of_gaussians(3), mixture_params()
    z = jnp.array([0.7, -0.4])
    weights = np.exp(params["logits"]) / np.sum(np.exp(params["logits"]))
    densities = [np.exp(float(distributions.gaussian_log_prob(z, m, v)))
                 for m, v in zip(params["means"], params["log_variances"])]
    assert float(prior.log_prob(params, z)) == pytest.approx(
        np.log(np.dot(weights, densities)), rel=1e-5)
    single = priors.mixture_of_gaussians(1, spread=0.0)
    one = single.init(jax.random.key(0), 2)
    assert float(single.log_prob(one, z)) == pytest.approx(
        float(distributions.standard_normal_log_prob(z)), rel=1e-6)
    far = jnp.array([60.0, -60.0])  # every component's density underflows; the log does not
    assert np.isfinite(float(prior.log_prob(params, far)))
    assert np.all(np.isfinite(jax.grad(prior.log_prob, argnums=(0, 1))(params, far)[1]))


@pytest.mark.parametrize("log_variance,variance_gradient_error", [(-2.0, 1e-4), (-8.0, 1e-2)])
def test_mixture_component_densities_are_exact_and_their_gradient_is_the_direct_ones(
        log_variance, variance_gradient_error):
    """`_component_log_probs` against the direct sum in float64, with codes drawn from narrow
    components (where an expanded form alone loses 0.05 nats and more), and its gradient (that of
    the expanded matrix products) against the gradient of the direct float32 sum."""
    rng = np.random.default_rng(0)
    means = rng.normal(0, 3, (500, 50))
    log_variances = log_variance + rng.normal(0, 0.5, (500, 50))
    z = means[:64] + np.exp(0.5 * log_variances[:64]) * rng.normal(size=(64, 50))
    exact = -0.5 * (50 * np.log(2 * np.pi) + log_variances.sum(-1)
                    + (((z[:, None] - means) ** 2) * np.exp(-log_variances)).sum(-1))
    args = [jnp.asarray(a, jnp.float32) for a in (z, means, log_variances)]
    component = priors._component_log_probs  # pylint: disable=protected-access
    fast = jax.jit(jax.vmap(component, (0, None, None)))(*args)
    nearest = np.asarray(fast)[np.arange(64), np.arange(64)]
    np.testing.assert_allclose(nearest, exact[np.arange(64), np.arange(64)], rtol=1e-5,
                               atol=1e-3)
    np.testing.assert_allclose(np.asarray(fast, np.float64), exact, rtol=1e-5)

    def direct(z_, m_, v_):
        return -0.5 * jnp.sum(v_, -1) - 0.5 * jnp.sum(jnp.square(z_ - m_) * jnp.exp(-v_), -1)

    def total(function):
        return jax.grad(lambda *a: jnp.sum(jax.nn.logsumexp(
            jax.vmap(function, (0, None, None))(*a), axis=-1)), argnums=(0, 1, 2))(*args)

    # Errors relative to each gradient's largest entry: the codes' and means' are float32
    # rounding; the log-variances' grow as the components narrow (the docstring's bound).
    for fast_grad, direct_grad, error in zip(total(component), total(direct),
                                             (1e-4, 1e-4, variance_gradient_error)):
        scale = float(jnp.max(jnp.abs(direct_grad)))
        assert float(jnp.max(jnp.abs(fast_grad - direct_grad))) < error * scale


def test_samples_have_the_priors_moments():
    prior, params = priors.mixture_of_gaussians(3), mixture_params()
    z = jax.jit(prior.sample, static_argnums=(2, 3))(params, jax.random.key(2), 200_000, 2)
    chex.assert_shape(z, (200_000, 2))
    chex.assert_type(z, jnp.float32)
    weights = np.asarray(jax.nn.softmax(params["logits"]))
    means = np.asarray(params["means"])
    variances = np.exp(np.asarray(params["log_variances"]))
    mixture_mean = weights @ means
    mixture_var = weights @ (variances + means**2) - mixture_mean**2
    np.testing.assert_allclose(np.mean(z, 0), mixture_mean, atol=0.02)
    np.testing.assert_allclose(np.var(z, 0), mixture_var, rtol=0.02)
    normal = priors.standard_normal().sample({}, jax.random.key(3), 100_000, 3)
    np.testing.assert_allclose(np.std(normal, 0), 1.0, atol=0.02)


def test_the_mixture_learns_by_gradient():
    prior = priors.mixture_of_gaussians(2)
    params = prior.init(jax.random.key(0), 2)
    chex.assert_shape([params["means"], params["log_variances"]], (2, 2))
    data = jnp.concatenate([jnp.full((50, 2), 3.0), jnp.full((50, 2), -3.0)])
    data = data + 0.1 * jax.random.normal(jax.random.key(1), data.shape)

    def nll(p):
        return -jnp.mean(jax.vmap(prior.log_prob, in_axes=(None, 0))(p, data))

    before = float(nll(params))
    update = jax.jit(lambda p: jax.tree.map(lambda v, g: v - 0.1 * g, p, jax.grad(nll)(p)))
    for _ in range(300):
        params = update(params)
    assert float(nll(params)) < before - 3.0
    np.testing.assert_allclose(np.sort(np.asarray(params["means"])[:, 0]), [-3.0, 3.0],
                               atol=0.2)


def test_bad_arguments_are_one_line():
    with pytest.raises(vae_jax.ConfigError, match="num_components must be a positive integer"):
        priors.mixture_of_gaussians(0)
    with pytest.raises(vae_jax.ConfigError, match="spread must be ≥ 0"):
        priors.mixture_of_gaussians(2, spread=float("nan"))
    with pytest.raises(vae_jax.ConfigError, match=r"prior must be one of \('standard_normal'"):
        priors.make("vamp")
    prior, params = priors.mixture_of_gaussians(3), mixture_params()
    with pytest.raises(vae_jax.ShapeError, match=r"z must be one code of shape \(2,\), got "
                                                 r"\(4, 2\); use jax.vmap"):
        prior.log_prob(params, jnp.zeros((4, 2)))
    with pytest.raises(vae_jax.ShapeError, match="latent_dim=3, but the params are of a 2-D"):
        prior.sample(params, jax.random.key(0), 5, 3)
    with pytest.raises(vae_jax.ConfigError, match="num must be a positive integer"):
        priors.standard_normal().sample({}, jax.random.key(0), 0, 2)
    with pytest.raises(vae_jax.ShapeError, match="rate"):
        priors.rate(prior, params, jnp.zeros(2), jnp.zeros(3), jnp.zeros(2))
    assert priors.make("mixture_of_gaussians", 4).init(jax.random.key(0), 2)["logits"].shape == (4,)


# --- A model with a prior (vae_jax.mlp_vae(..., prior=...)) ------------------------------------

def prior_model(prior=None, latent_dim=2):
    return vae_jax.mlp_vae((4, 4, 1), latent_dim, (16,), prior=prior)


def data(n=6):
    return jax.random.uniform(jax.random.key(7), (n, 4, 4, 1))


def test_the_default_prior_leaves_models_and_their_numbers_as_they_were():
    default, explicit = prior_model(), prior_model(priors.standard_normal())
    mixture = prior_model(priors.mixture_of_gaussians(3))
    params = default.init(jax.random.key(0))
    assert set(params) == {"encoder", "decoder"}
    chex.assert_trees_all_equal(params, explicit.init(jax.random.key(0)))
    learned = mixture.init(jax.random.key(0))  # the networks start where the default's do
    chex.assert_trees_all_equal({k: learned[k] for k in params}, params)
    x, key = data(), jax.random.key(1)
    for function in (lambda m: vae_jax.loss(m, params, x, key, 0.5, 0.1)[0],
                     lambda m: vae_jax.iwae_loss(m, params, x, key, 4)[0],
                     lambda m: vae_jax.iwae_loss(m, params, x, key, 4,
                                                 gradient_estimator="dreg")[1].kl,
                     lambda m: latent.sample_images(m, params, key, 3)):
        np.testing.assert_array_equal(function(default), function(explicit))


@pytest.mark.parametrize("jit", [False, True])
def test_a_mixture_priors_elbo_rate_is_log_q_minus_log_p_at_the_drawn_code(jit):
    model = prior_model(priors.mixture_of_gaussians(3, spread=2.0))
    params = model.init(jax.random.key(0))
    x, key = data(), jax.random.key(3)
    elbo = jax.jit(vae_jax.batch_elbo, static_argnums=0) if jit else vae_jax.batch_elbo
    terms = elbo(model, params, x, key)
    chex.assert_shape(terms.kl, (6,))
    mean, log_variance = model.encode(params, x)
    z = jax.vmap(distributions.gaussian_sample)(jax.random.split(key, 6), mean, log_variance)
    expected = (jax.vmap(distributions.gaussian_log_prob)(z, mean, log_variance)
                - jax.vmap(model.prior.log_prob, (None, 0))(params["prior"], z))
    np.testing.assert_allclose(terms.kl, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(terms.elbo, terms.reconstruction - terms.kl, rtol=1e-6)


LEARNED = {"mixture": lambda: priors.mixture_of_gaussians(4, spread=1.5),
           "vampprior": lambda: priors.vampprior(3, init_mean=0.5, init_std=0.3)}


@pytest.mark.parametrize("name", sorted(LEARNED))
def test_iwae_is_above_the_elbo_for_a_learned_prior(name):
    model = prior_model(LEARNED[name]())
    params = model.init(jax.random.key(2))
    # A decoder that reads z strongly: the posterior is far from q, so the gap is many errors.
    params = {**params, "decoder": jax.tree.map(lambda w: 4 * w, params["decoder"])}
    x = data(3)
    keys = jax.random.split(jax.random.key(4), 2000)
    elbos = jax.vmap(lambda k: vae_jax.batch_elbo(model, params, x, k).elbo)(keys)  # (2000, 3)
    mean_elbo, error = elbos.mean(0), elbos.std(0) / np.sqrt(2000)
    bound = jax.vmap(lambda xi: vae_jax.iwae_bound(model, params, xi, jax.random.key(5), 2000))(x)
    assert np.all(bound > mean_elbo + 3 * error), (bound, mean_elbo, error)
    # The IWAE terms' rate is the mean of log q − log p over the K codes: its mean is the ELBO's.
    iwae_rate = vae_jax.iwae_loss(model, params, x, jax.random.key(6), 2000)[1].kl
    elbo_rate = jax.vmap(lambda k: vae_jax.loss(model, params, x, k)[1].kl)(keys).mean()
    assert float(iwae_rate) == pytest.approx(float(elbo_rate), abs=0.05)


@pytest.mark.parametrize("name", sorted(LEARNED))
@pytest.mark.parametrize("objective", ["elbo", "iwae", "dreg"])
def test_the_learned_prior_gets_a_gradient_from_every_objective(objective, name):
    model = prior_model(LEARNED[name]())
    params = model.init(jax.random.key(0))
    x, key = data(), jax.random.key(1)

    def loss(p):
        if objective == "elbo":
            return vae_jax.loss(model, p, x, key)[0]
        return vae_jax.iwae_loss(model, p, x, key, 5, gradient_estimator=(
            "dreg" if objective == "dreg" else "iwae"))[0]

    grads = jax.jit(jax.grad(loss))(params)
    for name, grad in grads["prior"].items():
        assert np.all(np.isfinite(grad)) and float(jnp.abs(grad).sum()) > 0, name


def test_a_mixture_model_samples_from_its_prior():
    model = prior_model(priors.mixture_of_gaussians(3, spread=5.0))
    params = model.init(jax.random.key(0))
    key = jax.random.key(9)
    np.testing.assert_array_equal(
        latent.sample_images(model, params, key, 5),
        latent.decode_images(model, params,
                              model.prior.sample(params["prior"], key, 5, model.latent_dim)))


def test_model_prior_errors_are_one_line():
    mixture = priors.mixture_of_gaussians(3)
    with pytest.raises(vae_jax.ConfigError, match="prior must be a vae_jax.priors.Prior"):
        prior_model("mixture_of_gaussians")
    with pytest.raises(vae_jax.ConfigError, match="plain autoencoder .* has no prior"):
        vae_jax.mlp_vae((4, 4, 1), 2, (8,), stochastic=False, prior=mixture)
    model = prior_model(mixture)
    params = model.init(jax.random.key(0))
    with pytest.raises(vae_jax.ConfigError, match="free_bits=0.5 needs a KL per latent "
                                                  "dimension, which the prior "
                                                  "mixture_of_gaussians does not have"):
        vae_jax.loss(model, params, data(), jax.random.key(0), free_bits=0.5)
    # Every argument of a jitted loss is traced: a traced free_bits of 0 changes nothing.
    traced = jax.jit(vae_jax.loss, static_argnums=0)(model, params, data(), jax.random.key(0),
                                                     1.0, 0.0)[0]
    np.testing.assert_allclose(traced, vae_jax.loss(model, params, data(),
                                                    jax.random.key(0))[0], rtol=1e-6)


# --- The VampPrior: bound to the model's encoder ----------------------------------------------

def vamp_model(latent_dim=2, num_pseudo_inputs=3):
    model = prior_model(priors.vampprior(num_pseudo_inputs, init_mean=0.5, init_std=0.3),
                        latent_dim)
    return model, model.init(jax.random.key(0))


@pytest.mark.parametrize("dim", [1, 2])
def test_the_vampprior_integrates_to_one_and_is_the_mean_of_the_encoders_posteriors(dim):
    model, params = vamp_model(dim)
    learned = vae_jax.model.prior_params(model, params)
    assert set(learned) == {"pseudo_inputs", "encoder"}
    chex.assert_shape(params["prior"]["pseudo_inputs"], (3, 4, 4, 1))
    axis = np.linspace(-9.0, 9.0, 601)
    grid = np.stack(np.meshgrid(*[axis] * dim, indexing="ij"), -1).reshape(-1, dim)
    log_p = jax.jit(jax.vmap(model.prior.log_prob, in_axes=(None, 0)))(learned, grid)
    assert float(jnp.sum(jnp.exp(log_p)) * (axis[1] - axis[0])**dim) == pytest.approx(1.0,
                                                                                     abs=1e-3)
    # The formula, with the pseudo-inputs clipped to [0, 1] and encoded by the model.
    z = jnp.full((dim,), 0.3)
    means, log_variances = model.encode(params, jnp.clip(params["prior"]["pseudo_inputs"], 0, 1))
    densities = [np.exp(float(distributions.gaussian_log_prob(z, m, v)))
                 for m, v in zip(means, log_variances)]
    assert float(model.prior.log_prob(learned, z)) == pytest.approx(np.log(np.mean(densities)),
                                                                    rel=1e-5)


def test_vampprior_samples_have_the_mixtures_moments():
    model, params = vamp_model()
    learned = vae_jax.model.prior_params(model, params)
    z = jax.jit(model.prior.sample, static_argnums=(2, 3))(learned, jax.random.key(2),
                                                           200_000, 2)
    chex.assert_shape(z, (200_000, 2))
    means, log_variances = model.encode(params, jnp.clip(params["prior"]["pseudo_inputs"], 0, 1))
    mixture_mean = np.mean(means, 0)
    mixture_var = np.mean(np.exp(log_variances) + means**2, 0) - mixture_mean**2
    np.testing.assert_allclose(np.mean(z, 0), mixture_mean, atol=0.02)
    np.testing.assert_allclose(np.var(z, 0), mixture_var, rtol=0.03)
    np.testing.assert_array_equal(latent.sample_images(model, params, jax.random.key(2), 4),
                                  latent.decode_images(model, params, model.prior.sample(
                                      learned, jax.random.key(2), 4, 2)))


@pytest.mark.parametrize("jit", [False, True])
def test_the_vampprior_rate_and_its_gradients_reach_pseudo_inputs_and_encoder(jit):
    model, params = vamp_model()
    x, key = data(), jax.random.key(3)
    elbo = jax.jit(vae_jax.batch_elbo, static_argnums=0) if jit else vae_jax.batch_elbo
    terms = elbo(model, params, x, key)
    mean, log_variance = model.encode(params, x)
    z = jax.vmap(distributions.gaussian_sample)(jax.random.split(key, 6), mean, log_variance)
    learned = vae_jax.model.prior_params(model, params)
    expected = (jax.vmap(distributions.gaussian_log_prob)(z, mean, log_variance)
                - jax.vmap(model.prior.log_prob, (None, 0))(learned, z))
    np.testing.assert_allclose(terms.kl, expected, rtol=1e-5, atol=1e-5)
    # The prior's own gradient reaches the encoder: the rate's gradient with the codes held
    # fixed is not zero for the encoder's params.
    rate_at_fixed_codes = jax.grad(lambda p: -jnp.sum(jax.vmap(model.prior.log_prob, (None, 0))(
        vae_jax.model.prior_params(model, p), z)))(params)
    for part in ("prior", "encoder"):
        assert float(sum(jnp.abs(g).sum() for g in jax.tree.leaves(rate_at_fixed_codes[part]))) \
            > 0, part
    assert not jax.tree.leaves(rate_at_fixed_codes["decoder"]) or float(sum(
        jnp.abs(g).sum() for g in jax.tree.leaves(rate_at_fixed_codes["decoder"]))) == 0


@pytest.mark.parametrize("free_bits", [0.0, 0.5])
def test_a_rate_estimate_is_never_clipped(free_bits):
    """The batch-mean rate estimate of this VampPrior model is below 0 (q and p nearly agree):
    the loss is −(reconstruction − rate) exactly, also with a traced free_bits (a jitted loss),
    so the estimate stays unbiased and its gradient reaches the prior."""
    model, params = vamp_model()
    x, key = data(), jax.random.key(1)
    value, terms = jax.jit(vae_jax.loss, static_argnums=0)(model, params, x, key, 1.0, free_bits)
    assert float(terms.kl) < 0
    assert float(value) == pytest.approx(-float(terms.reconstruction - terms.kl), rel=1e-6)
    grads = jax.grad(lambda p: vae_jax.loss(model, p, x, key)[0])(params)
    assert float(jnp.abs(grads["prior"]["pseudo_inputs"]).sum()) > 0


def test_an_unbound_vampprior_and_bad_arguments_are_one_line():
    unbound = priors.vampprior(4)
    assert unbound.bind is not None and prior_model(unbound).prior.bind is None
    for call in (lambda: unbound.init(jax.random.key(0), 2),
                 lambda: unbound.log_prob({}, jnp.zeros(2)),
                 lambda: unbound.sample({}, jax.random.key(0), 3, 2)):
        with pytest.raises(vae_jax.ConfigError, match="vampprior reads the encoder: pass it to "
                                                      "vae_jax.mlp_vae"):
            call()
    for arguments, message in (((0,), "num_pseudo_inputs must be a positive integer"),
                               ((2.5,), "num_pseudo_inputs must be a positive integer"),
                               ((3, 0.0, -1.0), "init_std must be ≥ 0"),
                               ((3, 0.0, 1.0, (1.0, 0.0)), "bounds must be"),
                               ((3, 0.0, 1.0, (0.0,)), "bounds must be")):
        with pytest.raises(vae_jax.ConfigError, match=message):
            priors.vampprior(*arguments)
    model, params = vamp_model()
    learned = vae_jax.model.prior_params(model, params)
    with pytest.raises(vae_jax.ShapeError, match=r"z must be one code of shape \(2,\)"):
        model.prior.log_prob(learned, jnp.zeros((4, 2)))
    with pytest.raises(vae_jax.ShapeError, match="latent_dim=3, but the encoder gives 2-D"):
        model.prior.sample(learned, jax.random.key(0), 5, 3)
    assert priors.make("vampprior", 7).name == "vampprior"


@pytest.mark.parametrize("prior,learned,shape", [
    ("mixture_of_gaussians", "means", (3, 8)), ("vampprior", "pseudo_inputs", (3, 8, 8, 1))])
def test_a_run_trains_and_is_evaluated_with_a_learned_prior(tmp_path, prior, learned, shape):
    from test_in_memory import tiny_config, tiny_dataset  # pylint: disable=import-outside-toplevel
    from vae_jax.app import configs, evaluation, runs, training  # pylint: disable=C0415

    dataset = tiny_dataset()
    config = tiny_config(prior=prior, prior_components=3, num_epochs=2, latent_dim=8)
    record = training.train_and_evaluate(config, str(tmp_path / "run"), dataset)
    assert np.isfinite(record["test_neg_elbo"]) and np.isfinite(record["test_kl"])
    run = runs.load_run(str(tmp_path / "run"), dataset=dataset)
    assert run.vae.prior.name == prior
    chex.assert_shape(run.params["prior"][learned], shape)
    initial = run.vae.init(jax.random.key(0))["prior"][learned]
    assert not np.allclose(run.params["prior"][learned], initial)  # learned
    report = evaluation.evaluate_workdir(str(tmp_path / "run"), num_samples=3, dataset=dataset)
    assert np.isfinite(report["nll"]) and report["kl_per_dim"] is None
    assert "KL per dim" not in evaluation.format_report(report)
    for overrides, message in (
            ({"prior": "vamp"}, r"config.prior .*one of \('standard_normal', "),
            ({"prior_components": 0}, "config.prior_components .*a positive integer"),
            ({"prior": "mixture_of_gaussians", "model": "ae"}, "no prior"),
            ({"prior": "mixture_of_gaussians", "free_bits": 0.5}, "config.free_bits .*one term "
                                                                  "per latent dimension")):
        with pytest.raises(vae_jax.ConfigError, match=message):
            configs.validate(tiny_config(**overrides))


def test_pictures_sample_the_models_prior(tmp_path):
    """The epoch's sample grid, the pictures of visualize.py and their ranges follow a learned
    prior (they assumed N(0, I)); the default model's samples are the draws they always were."""
    from test_in_memory import tiny_config, tiny_dataset  # pylint: disable=import-outside-toplevel
    from vae_jax.app import plots, runs, training  # pylint: disable=import-outside-toplevel

    x, key = data(4), jax.random.key(5)
    default = prior_model()
    params = default.init(jax.random.key(0))
    samples = training.pictures(default, params, x, key, count=1)[2]
    np.testing.assert_array_equal(samples, default.observation_mean(
        default.decode(params, jax.random.normal(key, (64, 2)))))
    mixture = prior_model(priors.mixture_of_gaussians(2, spread=0.0))
    params = mixture.init(jax.random.key(0))
    params["prior"]["means"] = jnp.array([[10.0, -10.0], [12.0, -8.0]])
    samples = training.pictures(mixture, params, x, key, count=1)[2]
    np.testing.assert_array_equal(samples, latent.decode_images(
        mixture, params, mixture.prior.sample(params["prior"], key, 64, 2)))
    low, high = plots.prior_box(mixture, params, jax.random.key(1))
    assert np.all(low > [7.0, -13.0]) and np.all(high < [15.0, -5.0]), (low, high)
    assert np.all(high - low > 3.0)
    # visualize.py's pictures of a 2-D run with a learned prior: all written.
    dataset = tiny_dataset()
    workdir = str(tmp_path / "run")
    training.train_and_evaluate(tiny_config(prior="vampprior", prior_components=3, num_epochs=1),
                                workdir, dataset)
    written = plots.visualize_run(runs.load_run(workdir, dataset=dataset), str(tmp_path / "out"))
    for picture in ("samples", "manifold", "traversals", "latent_scatter"):
        assert written[picture].endswith(".png"), (picture, written[picture])
