"""Held-out classes (issue #19): ``config.exclude_labels`` drops labels from the training split
only, deterministically."""

import numpy as np
import pytest

import vae_jax
from vae_jax.app import configs, data, runs, training
from test_in_memory import tiny_config, tiny_dataset


def test_excluded_labels_are_absent_from_training_and_the_test_split_is_whole():
    dataset = tiny_dataset()
    kept = data.exclude_labels(dataset, (1, 3))
    assert not np.isin(kept.train_labels, (1, 3)).any()
    mask = ~np.isin(dataset.train_labels, (1, 3))
    np.testing.assert_array_equal(kept.train_images, dataset.train_images[mask])  # order kept
    np.testing.assert_array_equal(kept.train_labels, dataset.train_labels[mask])
    assert kept.test_images is dataset.test_images and kept.test_labels is dataset.test_labels
    again = data.exclude_labels(dataset, (3, 1))
    np.testing.assert_array_equal(again.train_images, kept.train_images)  # deterministic
    assert data.exclude_labels(dataset, ()) is dataset


def test_absent_or_all_labels_are_one_line_errors():
    dataset = tiny_dataset()
    with pytest.raises(vae_jax.ConfigError, match=r"exclude_labels names \[7\], absent"):
        data.exclude_labels(dataset, (7,))
    with pytest.raises(vae_jax.ConfigError, match="drops every training example"):
        data.exclude_labels(dataset, (0, 1, 2, 3))


@pytest.mark.parametrize("value", [(1, 1), (-1,), (0.5,), (True,)])
def test_bad_exclude_labels_are_named(value):
    config = configs.get_default()
    config.exclude_labels = value
    with pytest.raises(vae_jax.ConfigError, match="config.exclude_labels must be a tuple of "
                                                  "distinct non-negative integer labels"):
        configs.validate(config)


def test_load_training_data_counts_the_steps_of_the_kept_examples():
    dataset = tiny_dataset()
    loaded, steps = training.load_training_data(tiny_config(exclude_labels=(2,)), dataset)
    kept = int(np.sum(dataset.train_labels != 2))
    assert len(loaded.train_images) == kept and steps == kept // 16
    assert 2 not in set(loaded.train_labels.tolist())


@pytest.mark.slow
def test_a_run_without_a_label_trains_and_reads_back_without_it(tmp_path):
    dataset = tiny_dataset()
    workdir = str(tmp_path / "held_out")
    record = training.train_and_evaluate(tiny_config(exclude_labels=(0,), num_epochs=1), workdir,
                                         dataset)
    kept = int(np.sum(dataset.train_labels != 0))
    assert record["step"] == kept // 16
    run = runs.load_run(workdir, dataset=dataset)
    assert 0 not in set(run.dataset.train_labels.tolist()) and run.epoch == 1
    assert len(run.dataset.test_images) == len(dataset.test_images)
