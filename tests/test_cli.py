"""scripts/train.py as a user runs it: real MNIST / Fashion-MNIST from ../shared/data, and the
one-line errors for bad command lines.

The real-data tests read the original files in ../shared/data (or $VAE_JAX_SHARED_DATA); they
skip where the files are absent, except under CI, where they fail.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import REPO, real_data_dir
from vae_jax.app import data

TRAIN = str(REPO / "scripts" / "train.py")


def run_train(*args, timeout=900):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, TRAIN, *args], capture_output=True, text=True,
                          timeout=timeout, check=False, env=env)


@pytest.fixture(scope="module", name="tfds_dir")
def fixture_tfds_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tensorflow_datasets")


def metrics(workdir: pathlib.Path):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_one_epoch_of_real_mnist_beats_130_nats_and_resumes(tmp_path, tfds_dir):
    manual_dir = real_data_dir("mnist")
    workdir = tmp_path / "mnist"
    common = [f"--workdir={workdir}", f"--config.manual_dir={manual_dir}",
              f"--config.data_dir={tfds_dir}"]
    result = run_train(*common, "--config.num_epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    (first,) = metrics(workdir)
    assert first["epoch"] == 1 and first["step"] == 60000 // 128
    assert first["test_neg_elbo"] < 130.0, first
    assert "epoch   1/1" in result.stdout
    assert (workdir / "images" / "samples_epoch001.png").exists()

    result = run_train(*common, "--config.num_epochs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming from the checkpoint at step 468 (epoch 1)" in result.stdout
    assert [m["step"] for m in metrics(workdir)] == [468, 936]
    assert metrics(workdir)[1]["test_neg_elbo"] < first["test_neg_elbo"]


@pytest.mark.slow
def test_fashion_mnist_trains_offline(tmp_path, tfds_dir):
    manual_dir = real_data_dir("fashion_mnist")
    workdir = tmp_path / "fashion"
    result = run_train(f"--workdir={workdir}", "--config.dataset=fashion_mnist",
                       f"--config.manual_dir={manual_dir}", f"--config.data_dir={tfds_dir}",
                       "--config.num_epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = metrics(workdir)
    assert 150 < line["test_neg_elbo"] < 400, line  # MNIST's first epoch gives about 120


@pytest.mark.slow
def test_mnist_and_fashion_mnist_do_not_mix_in_one_data_dir(tfds_dir):
    # TFDS extracts manual files by file name alone; both datasets' files share their names.
    for name, mean_pixel in (("mnist", 33.3), ("fashion_mnist", 72.9)):
        dataset = data.load_image_dataset(name, str(tfds_dir), str(real_data_dir(name)))
        assert abs(dataset.train_images.mean() - mean_pixel) < 0.5, name


def test_unknown_config_field_is_one_line(tmp_path):
    result = run_train(f"--workdir={tmp_path}", "--config.num_epoch=3", timeout=120)
    assert result.returncode != 0
    assert "num_epoch" in result.stderr and "Traceback" not in result.stderr


def test_non_positive_batch_size_is_one_line(tmp_path):
    result = run_train(f"--workdir={tmp_path}", "--config.batch_size=0", timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: config.batch_size must be a positive integer, got 0")
    assert "Traceback" not in result.stderr
