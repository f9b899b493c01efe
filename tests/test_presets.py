"""Every preset config trains a few steps on mocked TFDS data (jitted) and its loss runs eagerly."""

import importlib
import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import vae_jax
from vae_jax.app import builders, configs, training

PRESETS = sorted(name[:-3] for name in os.listdir(configs.CONFIG_DIR)
                 if name.endswith(".py") and name not in ("__init__.py", "default.py"))


def preset(name):
    return importlib.import_module(f"vae_jax.app.configs.{name}").get_config()


def test_the_issue_presets_exist():
    assert set(PRESETS) >= {"mnist_mlp", "mnist_conv", "mnist_2d", "mnist_ae_2d",
                            "mnist_rmse_alpha", "fashion_mnist_conv_gaussian", "beta_vae"}


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_preset_is_valid_and_trains_on_mock_data(name, tmp_path):
    config = preset(name)
    configs.validate(config)
    config.num_epochs, config.batch_size, config.progress_bar = 1, 16, False
    config.data_dir = str(tmp_path / "tfds")
    with tfds.testing.mock_data(num_examples=32):
        record = training.train_and_evaluate(config, str(tmp_path / "run"))
    assert record["step"] == 2 and np.isfinite(record["test_neg_elbo"]), record
    if config.model == "ae":
        assert record["test_kl"] == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_preset_loss_and_gradient_without_jit(name):
    config = preset(name)
    image_shape = (28, 28, 1)
    vae = builders.model(config, image_shape)
    params = vae.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (2, *image_shape))
    loss_fn = training.make_loss_fn(vae, config.objective, config.free_bits, config.iwae_samples,
                                    config.code_l1, config.iwae_gradient)
    with jax.disable_jit():
        (value, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, x, jax.random.key(2), config.beta)
    assert np.isfinite(value)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("field,value,message", [
    ("alpha", -1.0, "config.alpha must be a non-negative number"),
    ("beta", -0.5, "config.beta must be a non-negative number"),
    ("likelihood", "poisson", "config.likelihood must be one of"),
    ("model", "gan", "config.model must be one of"),
    ("gaussian_sigma", 0.0, "config.gaussian_sigma must be a positive number"),
    ("kl_warmup_steps", -3, "config.kl_warmup_steps must be a non-negative integer"),
])
def test_bad_model_fields_are_named(field, value, message):
    config = preset("mnist_mlp")
    config[field] = value
    with pytest.raises(vae_jax.ConfigError, match=message):
        configs.validate(config)


def test_conv_on_an_image_shape_it_cannot_take_is_named():
    with pytest.raises(vae_jax.ShapeError, match="divisible by 4"):
        builders.model(preset("mnist_conv"), (30, 30, 1))
