"""The importance-weighted bound and test-set evaluation: the bound's ordering (ELBO ≤ IWAE_K,
non-decreasing in K), convergence to the exact log p(x) of a linear-Gaussian model, chunking,
active units; one test set and one ELBO for training and evaluation (eval.json's −ELBO is the
logged test −ELBO of the same checkpoint); and scripts/evaluate.py on a mocked training run and
on bad input."""

import json
import os
import shutil
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from hypothesis import given, settings, strategies as st

import vae_jax
from conftest import REPO, assert_one_line_error
from mock_train import small_config
from vae_jax import distributions, iwae, objectives
from vae_jax.app import builders, data, evaluation, run_folder, runs, training
from vae_jax.model import VAE

EVALUATE = str(REPO / "scripts" / "evaluate.py")
MOCK_EXAMPLES = 64  # 4 steps per epoch at batch size 16


# --- Models -----------------------------------------------------------------------------------

def tiny_mlp():
    """A small Bernoulli MLP VAE and its (untrained) params, with 32 random binary images."""
    vae = vae_jax.mlp_vae(input_shape=(6, 6, 1), latent_dim=3, hidden_dims=(16,))
    params = vae.init(jax.random.key(0))
    x = jax.random.bernoulli(jax.random.key(1), 0.4, (32, 6, 6, 1)).astype(jnp.float32)
    return vae, params, x


def _linear_encode(params, x):
    mean = params["mean_scale"] * params["v"] * ((x - params["b"]) @ params["w"]) / params["s2"]
    log_variance = jnp.log(params["v"]) + params["log_variance_shift"]
    return mean, jnp.broadcast_to(log_variance, mean.shape)


def _linear_log_likelihood(params, x, decoded):
    return distributions.gaussian_log_prob(x, decoded, jnp.full(x.shape, jnp.log(params["s2"])))


# p(z) = N(0, I), p(x|z) = N(Wz + b, σ²I); its matrices live in params, so one compilation serves
# every W (hypothesis draws many).
LINEAR_GAUSSIAN = VAE(lambda key: {}, _linear_encode, lambda p, z: z @ p["w"].T + p["b"],
                      _linear_log_likelihood, lambda d: d, (5,), 2)


def linear_gaussian(seed, mean_scale=1.0, log_variance_shift=0.0, sigma=0.5):
    """Params of `LINEAR_GAUSSIAN`, and x ↦ log p(x) with p(x) = N(b, WWᵀ + σ²I) exactly.

    W (5 × 2) has orthogonal columns, so the exact posterior is diagonal:
    q*(z|x) = N(m, diag v) with v = 1 / (1 + ‖w_j‖²/σ²), m = v · Wᵀ(x − b)/σ². The encoder is
    q(z|x) = N(mean_scale · m, diag v · exp(log_variance_shift)); the defaults give q = q*.
    """
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(5, 2)))
    w = basis * rng.uniform(0.5, 2.0, size=2)
    b = rng.normal(size=5)
    params = {"w": w, "b": b, "s2": sigma**2, "v": 1.0 / (1.0 + np.sum(w**2, axis=0) / sigma**2),
              "mean_scale": mean_scale, "log_variance_shift": log_variance_shift}
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    covariance = w @ w.T + sigma**2 * np.eye(5)

    def exact_log_px(x):
        return jax.scipy.stats.multivariate_normal.logpdf(np.asarray(x, np.float64), b, covariance)

    return params, exact_log_px


# --- The importance-weighted bound --------------------------------------------------------------

_batch_bound = jax.jit(iwae.batch_iwae_bound, static_argnums=(0, 4, 5))


def bounds_over_keys(vae, params, x, num_samples, num_keys=4):
    """IWAE_K of every example under `num_keys` fixed keys: shape (num_keys, N)."""
    return np.stack([np.asarray(_batch_bound(vae, params, x, jax.random.key(100 + i),
                                             num_samples, None)) for i in range(num_keys)])


def elbos_over_keys(vae, params, x, num_keys=4):
    fn = jax.jit(lambda p, x, k: objectives.batch_elbo(vae, p, x, k).elbo)
    return np.stack([np.asarray(fn(params, x, jax.random.key(100 + i))) for i in range(num_keys)])


def above(higher, lower, sigmas=3.0):
    """mean(higher − lower) ≥ −sigmas · its standard error (paired over examples and keys)."""
    difference = (np.asarray(higher) - np.asarray(lower)).ravel()
    return difference.mean() >= -sigmas * difference.std() / np.sqrt(difference.size)


@pytest.mark.slow
def test_iwae_bound_is_above_the_elbo_and_non_decreasing_in_k():
    vae, params, x = tiny_mlp()
    elbo = elbos_over_keys(vae, params, x)
    bounds = {k: bounds_over_keys(vae, params, x, k) for k in (1, 10, 100)}
    for b in bounds.values():
        chex.assert_shape(b, (4, 32))
        chex.assert_tree_all_finite(b)
    # E[IWAE_1] is the ELBO (with a Monte Carlo KL): equal within Monte Carlo error.
    assert above(bounds[1], elbo) and above(elbo, bounds[1])
    assert above(bounds[10], bounds[1]) and above(bounds[100], bounds[10])
    assert bounds[100].mean() > bounds[10].mean() > elbo.mean()


@pytest.mark.slow
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), num_samples=st.sampled_from([1, 3]))
def test_every_importance_weight_is_p_x_under_the_exact_posterior(seed, num_samples):
    # log p(x, z) − log q*(z|x) = log p(x) for every z: the estimate is exact for any K.
    params, exact_log_px = linear_gaussian(seed)
    x = jax.random.normal(jax.random.key(seed), (4, 5)) * 2.0
    estimate = _batch_bound(LINEAR_GAUSSIAN, params, x, jax.random.key(seed), num_samples, None)
    np.testing.assert_allclose(estimate, exact_log_px(x), atol=2e-4)


@pytest.mark.slow
def test_iwae_bound_approaches_the_exact_log_likelihood_and_the_elbo_stays_below():
    params, exact_log_px = linear_gaussian(0, mean_scale=0.6, log_variance_shift=1.0)
    x = jax.random.normal(jax.random.key(3), (32, 5)) * 2.0
    exact = np.asarray(exact_log_px(x))
    gaps = {k: exact - bounds_over_keys(LINEAR_GAUSSIAN, params, x, k, num_keys=4).mean(axis=0)
            for k in (1, 100, 2000)}
    elbo = elbos_over_keys(LINEAR_GAUSSIAN, params, x, num_keys=32).mean(axis=0)
    assert np.all(elbo < exact)
    assert gaps[1].mean() > gaps[100].mean() > gaps[2000].mean() > -0.01
    assert gaps[1].mean() > 1.0 and gaps[2000].mean() < 0.05 * gaps[1].mean()
    np.testing.assert_allclose(gaps[2000], 0.0, atol=0.15)


@pytest.mark.slow
@pytest.mark.parametrize("num_samples,chunk_sizes", [(37, (1, 16, 64)), (1, (3,))])
def test_chunked_and_unchunked_bounds_agree(num_samples, chunk_sizes):
    vae, params, x = tiny_mlp()
    key = jax.random.key(7)
    whole = _batch_bound(vae, params, x[:4], key, num_samples, None)
    for chunk_size in chunk_sizes:
        chunked = _batch_bound(vae, params, x[:4], key, num_samples, chunk_size)
        np.testing.assert_allclose(chunked, whole, rtol=1e-5, err_msg=f"chunk_size={chunk_size}")


@pytest.mark.slow
def test_iwae_objective_is_differentiable_and_matches_the_bound():
    vae, params, x = tiny_mlp()
    key = jax.random.key(5)
    grads = jax.jit(jax.grad(iwae.iwae_objective, argnums=1), static_argnums=(0, 4))(
        vae, params, x[0], key, 5)
    chex.assert_trees_all_equal_shapes(grads, params)
    chex.assert_tree_all_finite(grads)
    assert float(iwae.iwae_objective(vae, params, x[0], key, 5)) == pytest.approx(
        float(iwae.iwae_bound(vae, params, x[0], key, 5, 2)), abs=1e-4)
    loss, means = jax.jit(iwae.iwae_loss, static_argnums=(0, 4))(vae, params, x, key, 5)
    chex.assert_shape([loss, means.objective, means.reconstruction, means.kl], ())
    assert float(means.objective) > float(means.elbo)  # by far, for an untrained model


@pytest.mark.slow
def test_iwae_refuses_a_plain_autoencoder_and_bad_k():
    vae, params, x = tiny_mlp()
    with pytest.raises(vae_jax.ConfigError, match="plain autoencoder"):
        iwae.iwae_bound(vae._replace(stochastic=False), params, x[0], jax.random.key(0), 4)
    with pytest.raises(vae_jax.ConfigError, match="num_samples must be a positive integer"):
        iwae.iwae_bound(vae, params, x[0], jax.random.key(0), 0)


# --- One test set, one ELBO -------------------------------------------------------------------

@pytest.mark.slow
def test_test_set_scales_and_binarises_with_the_eval_key():
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 1), np.uint8)
    key = jax.random.key(3)
    x = evaluation.test_set(images, False, key)
    assert x.dtype == jnp.float32 and x.shape == images.shape
    np.testing.assert_array_equal(x, images.astype(np.float32) / 255.0)
    binary = jax.jit(evaluation.test_set, static_argnums=1)(images, True, key)
    assert binary.shape == images.shape and set(np.unique(binary)) <= {0.0, 1.0}
    flat = images.reshape(5, -1).astype(np.float32) / 255.0
    np.testing.assert_array_equal(
        binary, data.binarize(jax.random.fold_in(key, 0), flat).reshape(images.shape))
    assert not np.array_equal(binary, evaluation.test_set(images, True, jax.random.key(4)))


@pytest.mark.slow
def test_elbo_terms_are_the_per_example_elbo_with_keys_from_the_eval_key():
    vae, params, x = tiny_mlp()
    key = jax.random.key(5)
    terms = jax.jit(evaluation.elbo_terms, static_argnums=(0, 4))(vae, params, x, key, 7)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(x))
    expected = objectives.batch_elbo(vae, params, x, jax.random.fold_in(key, 1))
    for n in (0, 13, 31):  # chunked by 7: the last chunk is a remainder of 4
        one = objectives.elbo(vae, params, x[n], keys[n])
        assert float(terms["neg_elbo"][n]) == pytest.approx(-float(one.elbo), abs=1e-4)
        assert float(terms["kl"][n]) == pytest.approx(float(one.kl), abs=1e-5)
    chex.assert_shape(list(terms.values()), (32,))
    np.testing.assert_allclose(terms["neg_elbo"], terms["reconstruction_loss"] + terms["kl"],
                               rtol=1e-5)
    np.testing.assert_allclose(terms["kl"], expected.kl, rtol=1e-5)  # closed form: key-free
    whole = jax.jit(evaluation.elbo_terms, static_argnums=0)(vae, params, x, key)
    for name in terms:  # the chunk size does not change the values
        np.testing.assert_allclose(terms[name], whole[name], rtol=1e-6)
    means = jax.jit(evaluation.elbo_means, static_argnums=0)(vae, params, x, key)
    assert {k: float(v) for k, v in means.items()} == pytest.approx(
        {k: float(np.mean(v)) for k, v in whole.items()}, rel=1e-6)
    report = evaluation.evaluate(vae, params, x, key, num_samples=4, batch_size=8)
    for name in ("neg_elbo", "reconstruction_loss", "kl"):  # the same computation, exactly
        assert report[name] == float(means[name]), name


# --- Dataset-level evaluation --------------------------------------------------------------------

@pytest.mark.slow
def test_active_units_of_a_constructed_encoder():
    # μ(x) = scale · x for binary x, half of the examples on in each pixel: A_d = scale_d² / 4.
    scale = np.array([1.0, 0.5, 0.1, 0.0], np.float32)

    def encode(params, x):
        del params
        return x * scale, jnp.zeros_like(x)

    def log_likelihood(params, x, decoded):
        del params
        return distributions.gaussian_log_prob(x, decoded, jnp.zeros_like(x))

    vae = VAE(lambda key: {}, encode, lambda p, z: z, log_likelihood, lambda d: d, (4,), 4)
    x = np.array([[0, 0, 0, 0], [1, 1, 1, 1]] * 4, np.float32)
    np.testing.assert_allclose(evaluation.mean_variance_per_dim(x * scale), scale**2 / 4)
    assert evaluation.active_units(x * scale) == 2  # 0.25, 0.0625 > 0.01 ≥ 0.0025, 0
    report = evaluation.evaluate(vae, {}, x, jax.random.key(0), num_samples=3, batch_size=3)
    assert report["active_units"] == 2 and report["latent_dim"] == 4
    np.testing.assert_allclose(report["mean_variance_per_dim"], scale**2 / 4, rtol=1e-6)
    # KL per dim, with σ = 1: ½ μ², averaged over the examples.
    np.testing.assert_allclose(report["kl_per_dim"], 0.5 * scale**2 / 2, rtol=1e-6)


@pytest.mark.slow
def test_evaluate_report_is_consistent_and_independent_of_batching():
    vae, params, x = tiny_mlp()
    # An encoder far wider than the posterior (≈ the prior for an untrained decoder): the ELBO pays
    # a KL of several nats that the importance-weighted bound recovers, so nll < neg_elbo is not
    # left to Monte Carlo noise.
    params["encoder"]["log_variance"]["bias"] = params["encoder"]["log_variance"]["bias"] + 2.0
    key = jax.random.key(11)
    report = evaluation.evaluate(vae, params, x, key, num_samples=30, batch_size=7, chunk_size=4)
    again = evaluation.evaluate(vae, params, x, key, num_samples=30, batch_size=32, chunk_size=None)
    for name in ("neg_elbo", "reconstruction_loss", "kl", "nll"):
        assert report[name] == pytest.approx(again[name], rel=1e-5), name
    assert report["num_examples"] == 32 and report["num_samples"] == 30
    assert report["neg_elbo"] == pytest.approx(report["reconstruction_loss"] + report["kl"])
    assert sum(report["kl_per_dim"]) == pytest.approx(report["kl"], rel=1e-5)
    assert report["nll"] < report["neg_elbo"]
    assert report["nll_bits_per_dim"] == pytest.approx(report["nll"] / (36 * np.log(2)))


# --- evaluate_workdir and scripts/evaluate.py ----------------------------------------------------

@pytest.fixture(scope="module", name="mocked_run")
def fixture_mocked_run(tmp_path_factory):
    """A 2-epoch run of `small_config` on mocked MNIST (checkpoints at steps 4 and 8); the mock
    stays on for the module's tests that use it."""
    root = tmp_path_factory.mktemp("evaluation")
    workdir, data_dir = str(root / "run"), str(root / "tfds")
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        training.train_and_evaluate(small_config(num_epochs=2, data_dir=data_dir), workdir)
        yield workdir


@pytest.mark.slow
def test_evaluate_workdir_writes_eval_json_and_selects_the_step(mocked_run):
    report = evaluation.evaluate_workdir(mocked_run, num_samples=8, batch_size=16, seed=3)
    with open(os.path.join(mocked_run, evaluation.EVAL_FILE), encoding="utf-8") as f:
        assert json.load(f) == report
    assert report["step"] == 8 and report["epoch"] == 2 and report["num_examples"] == MOCK_EXAMPLES
    assert report["dataset"] == "mnist" and report["binarized"] and report["latent_dim"] == 4
    assert np.isfinite([report[k] for k in ("neg_elbo", "kl", "nll", "nll_bits_per_dim")]).all()
    assert report["nll"] < report["neg_elbo"]
    first = evaluation.evaluate_workdir(mocked_run, step=4, num_samples=8, batch_size=16, seed=3)
    assert first["step"] == 4 and first["epoch"] == 1 and first["nll"] != report["nll"]
    assert "checkpoint step 4 (epoch 1)" in evaluation.format_report(first)
    with pytest.raises(vae_jax.CheckpointError, match="no checkpoint at step 5 .* steps 4, 8"):
        evaluation.evaluate_workdir(mocked_run, step=5, num_samples=8)


@pytest.mark.slow
def test_eval_json_of_the_last_checkpoint_equals_the_last_logged_test_elbo(mocked_run):
    last = run_folder.read_metrics(mocked_run)[-1]
    report = evaluation.evaluate_workdir(mocked_run, num_samples=4, batch_size=16,
                                         progress=False)
    assert report["step"] == last["step"] and report["seed"] is None
    for name in ("neg_elbo", "reconstruction_loss", "kl"):
        assert report[name] == pytest.approx(last[f"test_{name}"], abs=1e-4), name
    assert "the run's own test keys" in evaluation.format_report(report)
    # The run's own key is its config's (builders.run_keys); a seed gives another test set.
    config = runs.load_config(mocked_run)[1]
    np.testing.assert_array_equal(jax.random.key_data(evaluation.eval_key(config)),
                                  jax.random.key_data(builders.run_keys(config).eval))
    other = evaluation.evaluate_workdir(mocked_run, num_samples=4, batch_size=16, seed=3,
                                        progress=False)
    assert other["seed"] == 3 and other["neg_elbo"] != report["neg_elbo"]
    with pytest.raises(vae_jax.ConfigError, match="seed must be a non-negative integer"):
        evaluation.evaluate_workdir(mocked_run, seed=-1)


def run_evaluate(*args, mocked=False):
    """scripts/evaluate.py in a subprocess; with `mocked`, under tfds.testing.mock_data."""
    if mocked:
        command = [sys.executable, "-c",
                   "import runpy, sys, tensorflow_datasets as tfds\n"
                   f"sys.argv = [{EVALUATE!r}] + sys.argv[1:]\n"
                   f"with tfds.testing.mock_data(num_examples={MOCK_EXAMPLES}):\n"
                   f"    runpy.run_path({EVALUATE!r}, run_name='__main__')", *args]
    else:
        command = [sys.executable, EVALUATE, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_script_rejects_a_workdir_without_checkpoints(tmp_path):
    assert_one_line_error(run_evaluate(f"--workdir={tmp_path}"), "no checkpoint in")
    assert not os.path.exists(tmp_path / run_folder.CHECKPOINT_DIR)  # nothing created


@pytest.mark.slow
def test_script_rejects_non_positive_num_samples(tmp_path):
    assert_one_line_error(run_evaluate(f"--workdir={tmp_path}", "--num_samples=0"),
                          "num_samples must be a positive integer, got 0")


@pytest.mark.slow
def test_script_rejects_a_checkpoint_of_another_model(mocked_run, tmp_path):
    # A checkpoint whose params do not fit the model its config describes (as after a change of
    # the network code): a newer step in a copy of the run, saved with the run's own config.
    workdir = str(tmp_path / "run")
    shutil.copytree(mocked_run, workdir)
    checkpointer = run_folder.checkpointer(workdir)
    saved = ml_collections.ConfigDict(checkpointer.saved_config(8))
    other = training.initial_state(small_config(hidden_dims=(8,)), (28, 28, 1), 4)
    checkpointer.save(12, training.to_checkpoint(other), saved)
    checkpointer.close()
    assert_one_line_error(run_evaluate(f"--workdir={workdir}", "--num_samples=2", mocked=True),
                          "holds a model of another shape")
