"""Two stochastic layers (issue #18, item 3): the bound equals the exact log p(x) of a
linear-Gaussian two-layer model (for every sample with the true posterior as q, and as K grows
with another q), IWAE ≥ ELBO, the rate per layer, shapes and dtypes with and without jit, and
gradients that train the model."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax
from vae_jax import distributions, hierarchical, latent

# A linear-Gaussian model with 1-D z1 and z2 (so that the true posterior is one a diagonal q can
# be): z2 ~ N(0, 1), z1 | z2 ~ N(ALPHA z2 + A, S1), x | z1 ~ N(BETA z1 + B, diag S).
ALPHA, A, S1 = 1.5, 0.3, 0.5
BETA, B, S = np.array([1.0, -0.6]), np.array([0.1, -0.3]), np.array([0.3, 0.2])
X = np.array([0.9, -0.4])


def exact_log_px(x):
    covariance = np.outer(BETA, BETA) * (ALPHA**2 + S1) + np.diag(S)
    residual = x - (BETA * A + B)
    _, logdet = np.linalg.slogdet(2 * np.pi * covariance)
    return -0.5 * (logdet + residual @ np.linalg.solve(covariance, residual))


def linear_model(exact_posterior: bool) -> hierarchical.TwoLayerVAE:
    """The model above as a `TwoLayerVAE` of plain functions (no params). q is its true posterior
    p(z1|x) p(z2|z1) when `exact_posterior` (x and z2 are independent given z1), else a guess."""
    if exact_posterior:
        var1 = 1 / (1 / (ALPHA**2 + S1) + np.sum(BETA**2 / S))
        gain1, const1 = var1 * BETA / S, var1 * (A / (ALPHA**2 + S1) - np.sum(BETA * B / S))
        var2 = 1 / (1 + ALPHA**2 / S1)
        gain2, const2 = var2 * ALPHA / S1, -var2 * ALPHA * A / S1
    else:
        var1, gain1, const1, var2, gain2, const2 = 2.0, np.zeros(2), 0.0, 1.5, 0.0, 0.0
    f32 = lambda value: jnp.asarray(value, jnp.float32)  # noqa: E731

    def gaussian(mean, variance):
        return mean[..., None], jnp.full(mean.shape + (1,), np.log(variance), jnp.float32)

    return hierarchical.TwoLayerVAE(
        init=lambda key: {},
        encode=lambda params, x: gaussian(x @ f32(gain1) + const1, var1),
        encode_top=lambda params, z1: gaussian(z1[..., 0] * gain2 + const2, var2),
        prior_bottom=lambda params, z2: gaussian(z2[..., 0] * ALPHA + A, S1),
        decode=lambda params, z1: z1 * f32(BETA) + f32(B),
        log_likelihood=lambda params, x, decoded: distributions.gaussian_log_prob(
            x, decoded, f32(np.log(S))),
        observation_mean=lambda decoded: decoded, input_shape=(2,), latent_dims=(1, 1))


@pytest.mark.parametrize("num_samples", [2, 7])
def test_with_the_true_posterior_every_bound_is_the_exact_log_likelihood(num_samples):
    model, x = linear_model(exact_posterior=True), jnp.asarray(X, jnp.float32)
    keys = jax.random.split(jax.random.key(0), 50)
    bounds = jax.vmap(lambda key: hierarchical.terms(model, {}, x, key, num_samples).objective)(
        keys)
    np.testing.assert_allclose(bounds, exact_log_px(X), atol=2e-5)  # every weight is p(x)


def test_with_the_true_posterior_the_elbo_is_the_exact_log_likelihood_in_expectation():
    """The ELBO takes the top layer's KL in closed form, so one sample is not p(x) itself (log
    p(z1|z2) still depends on the drawn z2); its mean is."""
    model, x = linear_model(exact_posterior=True), jnp.asarray(X, jnp.float32)
    keys = jax.random.split(jax.random.key(0), 20000)
    elbos = jax.jit(jax.vmap(lambda key: hierarchical.terms(model, {}, x, key).objective))(keys)
    error = 4 * float(jnp.std(elbos)) / np.sqrt(len(keys))
    assert float(jnp.mean(elbos)) == pytest.approx(exact_log_px(X), abs=error)


def test_the_bound_rises_to_the_exact_log_likelihood_as_k_grows():
    model, x, exact = linear_model(exact_posterior=False), jnp.asarray(X, jnp.float32), \
        exact_log_px(X)
    means = {}
    for k, repeats in ((1, 4000), (10, 2000), (1000, 200)):
        keys = jax.random.split(jax.random.key(k), repeats)
        means[k] = float(jnp.mean(jax.jit(jax.vmap(
            lambda key, k=k: hierarchical.terms(model, {}, x, key, k).objective))(keys)))
    assert exact - means[1] > 0.3, (means, exact)  # a real gap for the weights to close
    assert means[1] < means[10] < means[1000] < exact + 0.01, (means, exact)
    assert means[1000] == pytest.approx(exact, abs=0.03)


def tiny():
    model = hierarchical.two_layer_mlp_vae((4, 4, 1), latent_dims=(6, 3),
                                           hidden_dims=((16,), (8,)))
    x = jnp.asarray(np.random.default_rng(0).integers(0, 2, (5, 4, 4, 1)), jnp.float32)
    return model, model.init(jax.random.key(0)), x


@pytest.mark.parametrize("jit", [False, True])
def test_terms_shapes_and_the_elbo_is_reconstruction_minus_both_rates(jit):
    model, params, x = tiny()
    assert set(params) == {"encoder", "encoder_top", "prior_bottom", "decoder"}
    batch_terms = (jax.jit(hierarchical.batch_terms, static_argnums=(0, 4)) if jit
                   else hierarchical.batch_terms)
    elbo = batch_terms(model, params, x, jax.random.key(1), 1)
    chex.assert_shape(list(elbo), (5,))
    chex.assert_type(list(elbo), jnp.float32)
    np.testing.assert_allclose(elbo.objective,
                               elbo.reconstruction - elbo.rate_bottom - elbo.rate_top, rtol=1e-5)
    assert np.all(elbo.rate_top >= 0)
    mean1, _ = model.encode(params, x)
    chex.assert_shape(mean1, (5, 6))
    chex.assert_shape(model.encode_top(params, mean1)[0], (5, 3))


def test_iwae_is_above_the_elbo_and_rises_with_k():
    model, params, x = tiny()
    params = {**params, "decoder": jax.tree.map(lambda w: 3 * w, params["decoder"])}
    keys = jax.random.split(jax.random.key(2), 500)
    bound = lambda k: jax.jit(jax.vmap(  # noqa: E731
        lambda key: hierarchical.batch_terms(model, params, x, key, k).objective))(keys)
    elbo, iwae_10, iwae_100 = bound(1), bound(10), bound(100)
    error = elbo.std(0) / np.sqrt(len(keys))
    assert np.all(iwae_10.mean(0) > elbo.mean(0) + 3 * error)
    assert np.all(iwae_100.mean(0) > iwae_10.mean(0))


def test_the_loss_trains_every_network():
    model, params, x = tiny()
    optimizer = __import__("optax").adam(1e-2)
    state = optimizer.init(params)

    @jax.jit
    def step(params, state, key):
        grads, terms = jax.grad(hierarchical.loss, argnums=1, has_aux=True)(model, params, x,
                                                                            key, 5)
        updates, state = optimizer.update(grads, state)
        return __import__("optax").apply_updates(params, updates), state, terms, grads

    first = None
    for i in range(150):
        params, state, terms, grads = step(params, state, jax.random.key(i))
        if first is None:
            first = float(terms.objective)
            for name, grad in grads.items():
                assert float(sum(jnp.abs(g).sum() for g in jax.tree.leaves(grad))) > 0, name
    assert float(terms.objective) > first + 2.0, (first, float(terms.objective))


def test_bad_input_is_one_line():
    model, params, x = tiny()
    with pytest.raises(vae_jax.ConfigError, match="num_samples must be a positive integer"):
        hierarchical.terms(model, params, x[0], jax.random.key(0), 0)
    with pytest.raises(vae_jax.ShapeError, match="takes a batch: pass x"):
        hierarchical.batch_terms(model, params, x[0], jax.random.key(0))
    with pytest.raises(vae_jax.DataError, match="outside the \\[0, 1\\]"):
        hierarchical.loss(model, params, x * 3, jax.random.key(0))
    with pytest.raises(vae_jax.ConfigError, match="takes a TwoLayerVAE"):
        hierarchical.terms(vae_jax.mlp_vae((4, 4, 1), 2, (8,)), params, x[0], jax.random.key(0))
    for call in (lambda: vae_jax.loss(model, params, x, jax.random.key(0)),
                 lambda: vae_jax.iwae_bound(model, params, x[0], jax.random.key(0), 3),
                 lambda: latent.sample_images(model, params, jax.random.key(0), 2)):
        with pytest.raises(vae_jax.ConfigError, match="is for one stochastic layer; for a "
                                                      "two-layer model use vae_jax.hierarchical"):
            call()
    for arguments in ({"latent_dims": (6,)}, {"latent_dims": 3},
                      {"hidden_dims": (200, 200)}):  # mlp_vae's habit: one tuple of widths
        with pytest.raises(vae_jax.ShapeError, match="latent_dims \\(d1, d2\\) and "
                                                     "hidden_dims"):
            hierarchical.two_layer_mlp_vae((4, 4, 1), **arguments)
    with pytest.raises(vae_jax.ShapeError, match="use vae_jax.hierarchical.batch_terms"):
        hierarchical.terms(model, params, x, jax.random.key(0))


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_a_two_layer_run_trains_is_evaluated_and_drawn(tmp_path, objective):
    from test_in_memory import tiny_config, tiny_dataset  # pylint: disable=import-outside-toplevel
    from vae_jax.app import evaluation, plots, runs, training  # pylint: disable=C0415

    dataset, workdir = tiny_dataset(), str(tmp_path / "run")
    config = tiny_config(model="two_layer_vae", latent_dim=4, top_latent_dim=2,
                         top_hidden_dims=(8,), objective=objective, iwae_samples=3, num_epochs=2)
    record = training.train_and_evaluate(config, workdir, dataset)
    assert record["test_kl"] == pytest.approx(record["test_kl_bottom"] + record["test_kl_top"],
                                              rel=1e-5)
    run = runs.load_run(workdir, dataset=dataset)
    assert isinstance(run.vae, hierarchical.TwoLayerVAE) and run.vae.latent_dims == (4, 2)
    report = evaluation.evaluate_workdir(workdir, num_samples=20, dataset=dataset)
    assert report["neg_elbo"] == pytest.approx(record["test_neg_elbo"], rel=1e-5)
    assert report["kl"] == pytest.approx(report["kl_bottom"] + report["kl_top"], rel=1e-5)
    assert report["nll"] < report["neg_elbo"] + 0.5  # the K-sample bound is the tighter one
    assert report["latent_dim"] == 4 and report["latent_dim_top"] == 2
    text = evaluation.format_report(report)
    assert "rate of z₁" in text and "rate of z₂" in text and "(z₂)" in text
    written = plots.visualize_run(run, str(tmp_path / "plots"))
    for picture in ("reconstructions", "samples", "traversals", "latent_scatter"):
        assert written[picture].endswith(".png"), (picture, written[picture])


def test_the_two_layer_config_refuses_what_its_bound_has_not():
    from test_in_memory import tiny_config  # pylint: disable=import-outside-toplevel
    from vae_jax.app import configs  # pylint: disable=import-outside-toplevel

    for overrides, message in (
            ({"architecture": "conv"}, "config.architecture"),
            ({"prior": "vampprior"}, "config.prior"), ({"beta": 2.0}, "config.beta"),
            ({"kl_warmup_steps": 10}, "config.kl_warmup_steps"),
            ({"objective": "iwae", "iwae_gradient": "dreg"}, "config.iwae_gradient"),
            ({"top_latent_dim": 0}, "config.top_latent_dim"),
            ({"top_hidden_dims": (0,)}, "config.top_hidden_dims")):
        with pytest.raises(vae_jax.ConfigError, match=message):
            configs.validate(tiny_config(model="two_layer_vae", **overrides))
    configs.validate(tiny_config(model="two_layer_vae"))
