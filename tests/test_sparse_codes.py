"""Sparse codes (issue #19): the L1 penalty on the plain autoencoder's code in the loss, its
metric, the config checks and the evaluation's near-zero fraction."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax
from vae_jax import objectives
from vae_jax.app import configs, evaluation, runs, training
from test_in_memory import tiny_config, tiny_dataset


def tiny_ae():
    ae = vae_jax.mlp_vae((6, 6, 1), latent_dim=3, hidden_dims=(16,), stochastic=False)
    params = ae.init(jax.random.key(0))
    return ae, params, jax.random.uniform(jax.random.key(1), (5, 6, 6, 1))


@pytest.mark.parametrize("jit", [False, True])
def test_the_penalty_is_lambda_times_the_mean_l1_norm_of_the_code(jit):
    ae, params, x = tiny_ae()
    key = jax.random.key(2)
    loss = jax.jit(objectives.loss, static_argnums=0) if jit else objectives.loss
    norm_fn = jax.jit(objectives.code_l1_norm, static_argnums=0) if jit else objectives.code_l1_norm
    norms = norm_fn(ae, params, x)
    chex.assert_shape(norms, (5,))
    chex.assert_type(norms, jnp.float32)
    codes = np.asarray(ae.encode(params, x)[0])
    np.testing.assert_allclose(norms, np.abs(codes).sum(axis=1), rtol=1e-6)
    plain, plain_terms = loss(ae, params, x, key)
    penalised, terms = loss(ae, params, x, key, 1.0, 0.0, None, 0.5)
    assert float(penalised) == pytest.approx(float(plain) + 0.5 * float(np.mean(norms)),
                                             rel=1e-6)
    assert float(terms.objective) == pytest.approx(-float(penalised), rel=1e-6)
    assert float(terms.reconstruction) == float(plain_terms.reconstruction)
    # λ = 0 is the plain loss exactly; the penalty's gradient reaches the encoder only.
    np.testing.assert_array_equal(loss(ae, params, x, key, 1.0, 0.0, None, 0.0)[0], plain)
    grads = jax.grad(lambda p: loss(ae, p, x, key, 1.0, 0.0, None, 0.5)[0])(params)
    plain_grads = jax.grad(lambda p: loss(ae, p, x, key)[0])(params)
    chex.assert_trees_all_close(grads["decoder"], plain_grads["decoder"])


def test_the_penalty_is_refused_for_a_vae():
    vae = vae_jax.mlp_vae((6, 6, 1), latent_dim=3, hidden_dims=(16,))
    params = vae.init(jax.random.key(0))
    x, key = jnp.zeros((2, 6, 6, 1)), jax.random.key(0)
    with pytest.raises(vae_jax.ConfigError, match="code_l1=0.1 is for the plain autoencoder"):
        objectives.loss(vae, params, x, key, code_l1=0.1)
    # Every concrete zero is no penalty: a NumPy scalar, a 0-d array, an integer; a traced
    # weight (every argument of a jitted loss) is applied as given, so a traced 0 is none either.
    plain = objectives.loss(vae, params, x, key)[0]
    traced = jax.jit(objectives.loss, static_argnums=0)(vae, params, x, key, 1.0, 0.0, None, 0.0)
    np.testing.assert_allclose(traced[0], plain, rtol=1e-6)
    for zero in (np.float32(0), jnp.zeros(()), 0, np.int64(0)):
        np.testing.assert_array_equal(objectives.loss(vae, params, x, key, code_l1=zero)[0], plain)


@pytest.mark.parametrize("name", ["code_l1", "beta", "free_bits"])
@pytest.mark.parametrize("bad, message", [
    (-0.5, "a finite number ≥ 0"), (float("nan"), "a finite number ≥ 0"),
    (float("inf"), "a finite number ≥ 0"), (np.float32(-1), "a finite number ≥ 0"),
    (jnp.array(float("nan")), "a finite number ≥ 0"),
    (None, "one real number"), ("1.0", "one real number"), (True, "one real number"),
    (jnp.ones(3), "one real number"), (np.array([0.0]), "one real number"),
    (1j, "one real number"), (1e300, "=1e\\+300 is beyond float32's range"),
    (10**39, "=1e\\+39 is beyond float32's range"),
    (np.array([[1, 2], [3, 4]], dtype=object), "one real number .* got a object array of shape"),
])
def test_a_loss_weight_that_is_not_one_finite_non_negative_number_is_refused(name, bad, message):
    ae, params, x = tiny_ae()
    with pytest.raises(vae_jax.ConfigError, match=f"^loss: {name}( must be )?{message}"):
        objectives.loss(ae, params, x, jax.random.key(0), **{name: bad})


def test_traced_loss_weights_give_a_scalar_loss_and_traced_vectors_are_refused():
    ae, params, x = tiny_ae()
    loss = jax.jit(lambda w: objectives.loss(ae, params, x, jax.random.key(0), beta=w,
                                             free_bits=w, code_l1=w)[0])
    chex.assert_shape(loss(jnp.float32(0.1)), ())
    with pytest.raises(vae_jax.ConfigError, match="loss: beta must be one real number"):
        loss(jnp.ones(2))


@pytest.mark.parametrize("overrides,message", [
    ({"code_l1": 0.1}, "config.code_l1 must be 0 for model='vae'"),
    ({"model": "ae", "code_l1": -1.0}, "config.code_l1 must be a non-negative number"),
    ({"model": "ae", "code_l1": float("nan")}, "config.code_l1 must be a non-negative number"),
])
def test_bad_code_l1_is_named(overrides, message):
    config = configs.get_default()
    config.update(overrides)
    with pytest.raises(vae_jax.ConfigError, match=message):
        configs.validate(config)


def test_code_sparsity_counts_entries_below_the_relative_threshold():
    codes = np.array([[0.0, 2.0], [0.001, -2.0], [0.0, 2.0], [0.5, -2.0]])
    std = np.std(codes)
    report = evaluation.code_sparsity(codes)
    assert report["near_zero_threshold"] == pytest.approx(0.01 * std)
    assert report["near_zero_fraction"] == pytest.approx(3 / 8)  # 0, 0.001, 0 < 0.0187
    assert report["dead_units"] == 0
    assert evaluation.code_sparsity(np.zeros((3, 2)))["near_zero_fraction"] == 0.0


@pytest.mark.slow
def test_a_sparse_autoencoder_logs_its_code_norm_and_reports_near_zero_units(tmp_path):
    dataset = tiny_dataset()
    workdir = str(tmp_path / "sparse")
    record = training.train_and_evaluate(tiny_config(model="ae", code_l1=0.3), workdir, dataset)
    assert record["train_code_l1_norm"] > 0
    assert record["train_loss"] > record["train_reconstruction_loss"]  # the penalty is in it
    plain = training.train_and_evaluate(tiny_config(model="ae"), str(tmp_path / "plain"), dataset)
    assert "train_code_l1_norm" not in plain
    report = evaluation.evaluate_workdir(workdir, dataset=dataset, noise_levels=(0.0,))
    run = runs.load_run(workdir, dataset=dataset)
    x = evaluation.test_set(dataset.test_images, True, evaluation.eval_key(run.config))
    codes = np.asarray(run.vae.encode(run.params, x)[0])
    assert report["code_l1_norm"] == pytest.approx(np.mean(np.abs(codes).sum(axis=1)), rel=1e-5)
    assert report["near_zero_fraction"] == evaluation.code_sparsity(codes)["near_zero_fraction"]
    assert "nll" not in report and report["denoising"][0]["level"] == 0.0
    assert "near-zero code entries" in evaluation.format_report(report)
