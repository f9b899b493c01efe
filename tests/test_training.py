"""The training loop end to end on mocked TFDS data: outputs, resume, and clear errors."""

import json
import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import vae_jax
import vae_jax.data
from mock_train import small_config
from vae_jax import training


@pytest.fixture(name="mock_mnist")
def fixture_mock_mnist():
    with tfds.testing.mock_data(num_examples=64):
        yield


def read_metrics(workdir):
    with open(os.path.join(workdir, training.METRICS_FILE), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_one_epoch_writes_metrics_checkpoint_and_pictures(mock_mnist, tmp_path):
    workdir = str(tmp_path / "run")
    record = training.train_and_evaluate(small_config(data_dir=str(tmp_path / "tfds")), workdir)
    steps_per_epoch = 64 // 16
    assert record["step"] == steps_per_epoch and record["epoch"] == 1
    (line,) = read_metrics(workdir)
    for key in ("step", "epoch", "test_neg_elbo", "test_reconstruction_loss", "test_kl",
                "train_neg_elbo", "train_reconstruction_loss", "train_kl", "train_loss"):
        assert key in line
    assert np.isfinite(line["test_neg_elbo"])
    np.testing.assert_allclose(line["test_neg_elbo"],
                               line["test_reconstruction_loss"] + line["test_kl"], rtol=1e-4)
    assert os.listdir(os.path.join(workdir, training.CHECKPOINT_DIR)) == [str(steps_per_epoch)]
    pictures = sorted(os.listdir(os.path.join(workdir, "images")))
    assert pictures == ["reconstructions_epoch001.png", "samples_epoch001.png"]


def test_resume_continues_the_step_count_and_never_starts_over(mock_mnist, tmp_path):
    workdir, data_dir = str(tmp_path / "run"), str(tmp_path / "tfds")
    training.train_and_evaluate(small_config(data_dir=data_dir), workdir)
    record = training.train_and_evaluate(small_config(data_dir=data_dir, num_epochs=3), workdir)
    assert record["step"] == 3 * 4 and record["epoch"] == 3
    assert [m["epoch"] for m in read_metrics(workdir)] == [1, 2, 3]
    assert [m["step"] for m in read_metrics(workdir)] == [4, 8, 12]
    # Asking for fewer epochs than already trained does nothing and keeps everything.
    again = training.train_and_evaluate(small_config(data_dir=data_dir, num_epochs=2), workdir)
    assert again == {"step": 12, "epoch": 3}
    assert len(read_metrics(workdir)) == 3


def test_resumed_run_equals_uninterrupted_run(mock_mnist, tmp_path):
    data_dir = str(tmp_path / "tfds")
    training.train_and_evaluate(small_config(data_dir=data_dir, num_epochs=1), str(tmp_path / "a"))
    resumed = training.train_and_evaluate(small_config(data_dir=data_dir, num_epochs=2),
                                          str(tmp_path / "a"))
    straight = training.train_and_evaluate(small_config(data_dir=data_dir, num_epochs=2),
                                           str(tmp_path / "b"))
    assert resumed == {**straight, "epoch_time_s": resumed["epoch_time_s"]}


def test_checkpoint_of_another_model_is_a_clear_error(mock_mnist, tmp_path):
    workdir, data_dir = str(tmp_path / "run"), str(tmp_path / "tfds")
    training.train_and_evaluate(small_config(data_dir=data_dir), workdir)
    with pytest.raises(vae_jax.CheckpointError, match=r"latent_dim=4 \(this run: 8\)"):
        training.train_and_evaluate(small_config(data_dir=data_dir, latent_dim=8, num_epochs=2),
                                    workdir)
    assert len(read_metrics(workdir)) == 1  # nothing lost


@pytest.mark.parametrize("field,value,message", [
    ("batch_size", 0, "config.batch_size must be a positive integer"),
    ("num_epochs", -1, "config.num_epochs must be a positive integer"),
    ("latent_dim", 0, "config.latent_dim must be a positive integer"),
    ("beta", -1.0, "config.beta must be a non-negative number"),
    ("hidden_dims", (0,), "config.hidden_dims must be a tuple of positive integers"),
])
def test_bad_config_values_are_named(field, value, message, tmp_path):
    with pytest.raises(vae_jax.ConfigError, match=message):
        training.train_and_evaluate(small_config(**{field: value}), str(tmp_path))
    assert not os.path.exists(tmp_path / training.METRICS_FILE)


def test_batch_larger_than_the_dataset_is_a_clear_error(mock_mnist, tmp_path):
    with pytest.raises(vae_jax.ConfigError, match="larger than the 64 training examples"):
        training.train_and_evaluate(small_config(batch_size=128, data_dir=str(tmp_path / "d")),
                                    str(tmp_path / "run"))


def test_unknown_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(vae_jax.DataError, match="unknown dataset 'mnistt'.*did you mean 'mnist'"):
        training.train_and_evaluate(small_config(dataset="mnistt"), str(tmp_path))


def test_download_failure_says_how_to_work_offline(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'storage.googleapis.com'")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_network)
    with pytest.raises(vae_jax.DataError, match="pass --config.manual_dir=FOLDER"):
        vae_jax.data.load_image_dataset("mnist", data_dir=str(tmp_path))


def test_epoch_batches_are_a_permutation_that_depends_on_the_epoch():
    key = jax.random.key(0)
    first = np.asarray(training.epoch_batch_indices(key, 1, 100, 32))
    second = np.asarray(training.epoch_batch_indices(key, 2, 100, 32))
    assert first.shape == (3, 32)
    assert len(set(first.ravel())) == 96 and first.max() < 100
    assert not np.array_equal(first, second)
