"""DReG, the doubly reparameterised IWAE gradient (issue #18, item 4): the same loss value, the
same decoder gradient sample by sample, the same expected encoder gradient as the standard IWAE
estimator, and a lower variance of the encoder's gradient (fixed seeds)."""

import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax
from vae_jax import iwae, priors

NUM_KEYS = 2000


def tiny(prior=None):
    vae = vae_jax.mlp_vae((3, 3, 1), latent_dim=2, hidden_dims=(8,), prior=prior)
    params = vae.init(jax.random.key(0))
    x = jnp.asarray(np.random.default_rng(0).integers(0, 2, (2, 3, 3, 1)), jnp.float32)
    return vae, params, x


def gradients(estimator, num_samples, prior=None):
    vae, params, x = tiny(prior)

    def one(key):
        return jax.grad(lambda p: iwae.iwae_loss(vae, p, x, key, num_samples,
                                                 gradient_estimator=estimator)[0])(params)

    keys = jax.random.split(jax.random.key(7), NUM_KEYS)
    return jax.jit(jax.vmap(one))(keys)


def flat(tree):
    return np.concatenate([np.asarray(leaf).reshape(leaf.shape[0], -1)
                           for leaf in jax.tree.leaves(tree)], axis=1)


@pytest.mark.parametrize("jit", [False, True])
def test_the_value_and_terms_are_the_iwae_loss(jit):
    vae, params, x = tiny()
    key = jax.random.key(1)
    loss = jax.jit(iwae.iwae_loss, static_argnums=(0, 4, 6)) if jit else iwae.iwae_loss
    plain, plain_terms = loss(vae, params, x, key, 5, None, "iwae")
    dreg, dreg_terms = loss(vae, params, x, key, 5, None, "dreg")
    np.testing.assert_allclose(dreg, plain, rtol=1e-6)
    chex.assert_trees_all_close(dreg_terms, plain_terms, rtol=1e-6)


def chi_square(a, b):
    """Σ over gradient coordinates of (mean difference / its standard error)², paired by key,
    and the number of coordinates that vary. Coordinates whose two estimates are equal in exact
    arithmetic (differences at float32 rounding, which can share a sign) are left out."""
    difference = a - b
    varies = difference.std(0) > 1e-4 * a.std(0)
    z = difference.mean(0)[varies] / (difference.std(0)[varies] / np.sqrt(NUM_KEYS))
    return float(np.sum(z**2)), int(np.sum(varies))


def test_decoder_gradients_are_equal_and_encoder_gradients_agree_in_expectation(monkeypatch):
    standard, dreg = gradients("iwae", 5), gradients("dreg", 5)
    chex.assert_trees_all_close(dreg["decoder"], standard["decoder"], rtol=1e-4, atol=1e-6)
    a = flat(standard["encoder"])
    statistic, n = chi_square(a, flat(dreg["encoder"]))
    assert statistic < n + 4 * np.sqrt(2 * n), (statistic, n)  # χ²(n): mean n, sd √(2n)
    # The check has power: without the square on the weights (Σ w̃ · path derivative, a biased
    # estimator) the statistic is far beyond the bound.
    unsquared = types.SimpleNamespace(**{name: getattr(jnp, name) for name in dir(jnp)
                                         if not name.startswith("__")})
    unsquared.square = lambda w: w
    monkeypatch.setattr(iwae, "jnp", unsquared)
    statistic, n = chi_square(a, flat(gradients("dreg", 5)["encoder"]))
    assert statistic > 10 * (n + 4 * np.sqrt(2 * n)), (statistic, n)


def test_a_prior_that_reads_the_encoder_is_generative_for_dreg():
    """The VampPrior's log p(z) depends on the encoder's params through the pseudo-inputs: that
    direct gradient is the model's (weights w̃, as in the IWAE gradient), and only the path
    through z is DReG's (w̃²). The pseudo-inputs' and decoder's gradients are then equal sample
    by sample, and the encoder's agree in expectation."""
    prior = priors.vampprior(3, init_mean=0.5, init_std=0.3)
    standard, dreg = gradients("iwae", 5, prior), gradients("dreg", 5, prior)
    chex.assert_trees_all_close(dreg["decoder"], standard["decoder"], rtol=1e-4, atol=1e-6)
    chex.assert_trees_all_close(dreg["prior"], standard["prior"], rtol=1e-4, atol=1e-6)
    statistic, n = chi_square(flat(standard["encoder"]), flat(dreg["encoder"]))
    assert statistic < n + 4 * np.sqrt(2 * n), (statistic, n)


def test_the_encoder_gradient_has_a_lower_variance():
    a, b = flat(gradients("iwae", 20)["encoder"]), flat(gradients("dreg", 20)["encoder"])
    total_a, total_b = a.var(0).sum(), b.var(0).sum()
    assert total_b < 0.1 * total_a, (total_a, total_b)  # measured: 0.005


def test_an_unknown_estimator_is_one_line():
    vae, params, x = tiny()
    with pytest.raises(vae_jax.ConfigError, match=r"gradient_estimator must be one of "
                                                  r"\('iwae', 'dreg'\), got 'rws'"):
        iwae.iwae_loss(vae, params, x, jax.random.key(0), 5, gradient_estimator="rws")


def test_a_run_trains_with_dreg_and_the_config_is_checked(tmp_path):
    from test_in_memory import tiny_config, tiny_dataset  # pylint: disable=import-outside-toplevel
    from vae_jax.app import configs, training  # pylint: disable=import-outside-toplevel

    dataset = tiny_dataset()
    records = {}
    for estimator in ("iwae", "dreg"):
        config = tiny_config(objective="iwae", iwae_samples=4, iwae_gradient=estimator,
                             num_epochs=2)
        records[estimator] = training.train_and_evaluate(config, str(tmp_path / estimator),
                                                         dataset)
    for record in records.values():
        assert np.isfinite(record["test_neg_elbo"])
    # The same data and keys; only the encoder's gradient differs, so the runs differ.
    assert records["dreg"]["train_loss"] != records["iwae"]["train_loss"]
    for overrides, message in (({"iwae_gradient": "rws"}, r"one of \('iwae', 'dreg'\)"),
                               ({"iwae_gradient": "dreg"}, "unless objective='iwae'")):
        with pytest.raises(vae_jax.ConfigError, match=f"config.iwae_gradient.*{message}"):
            configs.validate(tiny_config(**overrides))
