"""The training loop end to end on mocked TFDS data: outputs, resume, and clear errors."""

import json
import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import vae_jax
import vae_jax.app.data
from mock_train import small_config
from vae_jax.app import builders, run_folder, training


@pytest.fixture(name="mock_mnist")
def fixture_mock_mnist():
    with tfds.testing.mock_data(num_examples=64):
        yield


def read_metrics(workdir):
    return run_folder.read_metrics(workdir)


@pytest.mark.slow
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
    assert os.listdir(os.path.join(workdir, run_folder.CHECKPOINT_DIR)) == [str(steps_per_epoch)]
    pictures = sorted(os.listdir(os.path.join(workdir, "images")))
    assert pictures == ["reconstructions_epoch001.png", "samples_epoch001.png"]


@pytest.mark.slow
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


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(mock_mnist, tmp_path):
    data_dir = str(tmp_path / "tfds")
    training.train_and_evaluate(small_config(data_dir=data_dir, num_epochs=1), str(tmp_path / "a"))
    resumed = training.train_and_evaluate(small_config(data_dir=data_dir, num_epochs=2),
                                          str(tmp_path / "a"))
    straight = training.train_and_evaluate(small_config(data_dir=data_dir, num_epochs=2),
                                           str(tmp_path / "b"))
    assert resumed == {**straight, "epoch_time_s": resumed["epoch_time_s"]}


@pytest.mark.slow
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
    assert not os.path.exists(tmp_path / run_folder.METRICS_FILE)


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
    with pytest.raises(vae_jax.DatasetDownloadError,
                       match="download 'mnist'.*pass manual_dir=FOLDER .*files of 'mnist'") as info:
        vae_jax.app.data.load_image_dataset("mnist", data_dir=str(tmp_path))
    assert "pass --config.manual_dir=FOLDER" in info.value.message("--config.manual_dir=FOLDER")


def test_epoch_batches_are_a_permutation_that_depends_on_the_epoch():
    key = jax.random.key(0)
    first = np.asarray(training.epoch_batch_indices(key, 1, 100, 32))
    second = np.asarray(training.epoch_batch_indices(key, 2, 100, 32))
    assert first.shape == (3, 32)
    assert len(set(first.ravel())) == 96 and first.max() < 100
    assert not np.array_equal(first, second)


def _train_steps_result(loop, objective="elbo"):
    """Params and metrics after 4 steps on synthetic images with the given loop and objective."""
    config = small_config(latent_dim=4, hidden_dims=(32,), objective=objective, iwae_samples=3)
    state = training.initial_state(config, (28, 28, 1), 4)
    images = jax.random.randint(jax.random.key(1), (64, 28, 28, 1), 0, 256).astype(np.uint8)
    indices = training.epoch_batch_indices(jax.random.key(2), 1, 64, 16)
    train_steps = training.make_train_steps(config, (28, 28, 1), 4, loop=loop)
    state, metrics, divergence = train_steps(state, {}, images, indices)
    assert int(divergence.step) == 0 and int(state.step) == 4
    return jax.device_get(state.params), jax.device_get(metrics)


@pytest.mark.slow
def test_step_loop_gives_the_scan_loops_results():
    scanned_params, scanned_metrics = _train_steps_result("scan")
    stepped_params, stepped_metrics = _train_steps_result("step")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 scanned_params, stepped_params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5),
                 scanned_metrics, stepped_metrics)


@pytest.mark.slow
def test_iwae_objective_trains_with_its_own_loss():
    params, metrics = _train_steps_result("scan", objective="iwae")
    elbo_params, _ = _train_steps_result("scan", objective="elbo")
    assert all(np.isfinite(v) for v in metrics.values())
    # The importance-weighted loss moves the params elsewhere than the ELBO does.
    assert not np.allclose(params["decoder"]["output"]["kernel"],
                           elbo_params["decoder"]["output"]["kernel"])


@pytest.mark.slow
def test_iwae_objective_trains_end_to_end_and_resumes(mock_mnist, tmp_path):
    config = small_config(data_dir=str(tmp_path / "tfds"), objective="iwae", iwae_samples=3)
    training.train_and_evaluate(config, str(tmp_path / "run"))
    config.num_epochs = 2
    record = training.train_and_evaluate(config, str(tmp_path / "run"))
    assert record["epoch"] == 2 and np.isfinite(record["test_neg_elbo"])


@pytest.mark.parametrize("overrides,message", [
    ({"objective": "iwae", "beta": 2.0}, "config.beta must be 1.0 with objective='iwae'"),
    ({"objective": "iwae", "free_bits": 0.5}, "config.free_bits must be 0.0 with objective="),
    ({"objective": "iwae", "model": "ae"}, "config.objective must be 'elbo' for the plain"),
    ({"objective": "iwae", "iwae_samples": 0}, "config.iwae_samples must be a positive integer"),
    ({"objective": "vi"}, r"config.objective must be one of \('elbo', 'iwae'\)"),
    ({"lr_schedule": "linear"}, "config.lr_schedule must be one of"),
    ({"train_loop": "fast"}, "config.train_loop must be one of"),
])
def test_bad_objective_and_schedule_fields_are_named(overrides, message):
    with pytest.raises(vae_jax.ConfigError, match=message):
        vae_jax.app.configs.validate(small_config(**overrides))


@pytest.mark.slow
def test_cosine_schedule_decays_to_zero_and_fixes_num_epochs(mock_mnist, tmp_path):
    optimizer = builders.optimizer(small_config(lr_schedule="cosine", num_epochs=2), 4)
    params = {"w": np.ones(3, np.float32)}
    state = optimizer.init(params)
    for _ in range(9):
        updates, state = optimizer.update({"w": np.ones(3, np.float32)}, state)
    np.testing.assert_allclose(updates["w"], 0.0, atol=1e-9)  # lr = 0 after 2 epochs of 4 steps

    workdir, data_dir = str(tmp_path / "run"), str(tmp_path / "tfds")
    training.train_and_evaluate(small_config(data_dir=data_dir, lr_schedule="cosine"), workdir)
    with pytest.raises(vae_jax.CheckpointError, match="num_epochs"):
        training.train_and_evaluate(
            small_config(data_dir=data_dir, lr_schedule="cosine", num_epochs=2), workdir)


def test_checkpoint_without_fields_added_later_resumes_as_their_defaults():
    current = vae_jax.app.checkpointing.config_to_json(small_config())
    saved = {k: v for k, v in current.items() if k not in ("objective", "lr_schedule")}
    assert vae_jax.app.checkpointing.incompatible_fields(saved, current) == []
    changed = {**current, "lr_schedule": "cosine"}
    assert vae_jax.app.checkpointing.incompatible_fields(saved, changed) == ["lr_schedule"]


@pytest.mark.slow
def test_a_run_in_a_sweep_folder_is_refused_in_one_line(mock_mnist, tmp_path):
    from vae_jax.app import sweep as sweep_lib  # pylint: disable=import-outside-toplevel

    config = small_config(data_dir=str(tmp_path / "tfds"))
    sweep_lib.train_sweep(config, sweep_lib.parse_sweep("beta=1,2"), str(tmp_path / "sweep"))
    with pytest.raises(vae_jax.CheckpointError, match="holds a sweep of scripts/sweep.py, not one "
                                                       "run: resume it with scripts/sweep.py"):
        training.train_and_evaluate(config, str(tmp_path / "sweep"))
