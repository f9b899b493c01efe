"""Runs trained on arrays in memory (`training.train_and_evaluate(config, workdir, dataset)`):
the run folder records the arrays (``dataset.json``: name, sizes, image shape, SHA-256), and
every reader takes the same `data.ImageDataset` — evaluated with it, a run reports the test
−ELBO its metrics logged; without it (scripts/evaluate.py, scripts/visualize.py) or with other
arrays it refuses in one line, before loading anything, instead of loading the dataset its
config names. Training refuses a config whose ``dataset`` is not the arrays' name, and a resume
on other data than the checkpoints were trained on.

A tiny synthetic dataset (64 train and 32 test 8×8 images) and a tiny MLP: no TFDS, no real data.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import vae_jax
from conftest import REPO, assert_one_line_error
from test_install import run_script_blocked
from vae_jax.app import configs, data, evaluation, plots, run_folder, runs, sweep, training

NAME = "tiny"
NUM_EPOCHS = 2


def tiny_dataset(name: str = NAME, seed: int = 0, shape=(8, 8, 1)) -> data.ImageDataset:
    """64 train and 32 test uint8 images of `shape`, labels 0–3, fixed by `seed`."""
    rng = np.random.default_rng(seed)
    return data.ImageDataset(name, rng.integers(0, 256, (64, *shape), np.uint8),
                             rng.integers(0, 4, 64), rng.integers(0, 256, (32, *shape), np.uint8),
                             np.arange(32) % 4)


def tiny_config(**overrides):
    config = configs.get_default()
    config.update({"dataset": NAME, "hidden_dims": (16,), "latent_dim": 2, "batch_size": 16,
                   "num_epochs": NUM_EPOCHS, "progress_bar": False, **overrides})
    return config


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    """scripts/`script` with `args`; evaluate.py as in the core install (no TensorFlow, TFDS or
    matplotlib: `test_install.run_script_blocked`), where a run by name would need them."""
    if script == "evaluate.py":
        return run_script_blocked(script, *args)
    return subprocess.run([sys.executable, str(REPO / "scripts" / script), *args],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})


@pytest.fixture(scope="module", name="trained")
def fixture_trained(tmp_path_factory):
    """(workdir, last metrics line) of a 2-epoch run on `tiny_dataset()`."""
    workdir = str(tmp_path_factory.mktemp("in_memory") / "run")
    last = training.train_and_evaluate(tiny_config(), workdir, tiny_dataset())
    return workdir, last


def snapshot(folder: str) -> dict[str, float]:
    """Every path under `folder` with its modification time."""
    return {os.path.join(parent, name): os.stat(os.path.join(parent, name)).st_mtime_ns
            for parent, dirs, files in os.walk(folder) for name in dirs + files}


# --- Training: one name, and the arrays recorded ----------------------------------------------

def test_a_config_naming_another_dataset_is_refused_before_training(tmp_path):
    with pytest.raises(vae_jax.ConfigError) as error:
        training.train_and_evaluate(tiny_config(dataset="mnist"), str(tmp_path / "run"),
                                    tiny_dataset())
    message = str(error.value)
    assert "config.dataset='mnist'" in message and "ImageDataset 'tiny'" in message
    assert "set config.dataset='tiny'" in message and "\n" not in message
    assert not (tmp_path / "run" / run_folder.CHECKPOINT_DIR).exists()
    assert not (tmp_path / "run" / run_folder.DATASET_FILE).exists()


@pytest.mark.slow
def test_the_run_folder_records_the_arrays_it_was_trained_on(trained):
    workdir, last = trained
    dataset = tiny_dataset()
    with open(os.path.join(workdir, run_folder.DATASET_FILE), encoding="utf-8") as f:
        record = json.load(f)
    assert record == run_folder.read_dataset_record(workdir)
    assert record["name"] == NAME and record["source"] == run_folder.IN_MEMORY
    assert (record["train_examples"], record["test_examples"]) == (64, 32)
    assert record["image_shape"] == [8, 8, 1]
    expected = hashlib.sha256(repr((32, 8, 8, 1)).encode() + dataset.test_images.tobytes())
    assert record["sha256"]["test_images"] == expected.hexdigest()
    assert record["sha256"]["train_images"] != record["sha256"]["test_images"]
    with open(os.path.join(workdir, run_folder.CONFIG_FILE), encoding="utf-8") as f:
        assert json.load(f)["dataset"] == NAME
    assert last["epoch"] == NUM_EPOCHS and last["step"] == NUM_EPOCHS * 64 // 16


# --- Readers take the arrays --------------------------------------------------------------------

@pytest.mark.slow
def test_evaluated_with_its_arrays_the_run_reports_the_logged_test_elbo(trained):
    workdir, last = trained
    report = evaluation.evaluate_workdir(workdir, num_samples=4, batch_size=16, progress=False,
                                         dataset=tiny_dataset())
    assert report["num_examples"] == 32 and report["dataset"] == NAME
    assert report["step"] == last["step"] and report["epoch"] == NUM_EPOCHS
    for name in ("neg_elbo", "reconstruction_loss", "kl"):
        assert report[name] == pytest.approx(last[f"test_{name}"], abs=1e-4), name
    with open(os.path.join(workdir, evaluation.EVAL_FILE), encoding="utf-8") as f:
        assert json.load(f) == report


@pytest.mark.slow
def test_load_run_takes_the_arrays_and_changes_nothing(trained):
    workdir, last = trained
    dataset = tiny_dataset()
    before = snapshot(workdir)
    run = runs.load_run(workdir, dataset=dataset)
    assert run.dataset is dataset and run.step == last["step"] and run.epoch == NUM_EPOCHS
    assert run.vae.input_shape == (8, 8, 1) and run.config.dataset == NAME
    mean, _ = run.vae.encode(run.params, data.to_unit_interval(dataset.test_images[:3]))
    assert mean.shape == (3, 2) and np.all(np.isfinite(mean))
    assert snapshot(workdir) == before


@pytest.mark.slow
@pytest.mark.parametrize("other, what", [
    (tiny_dataset(seed=1), "other images"),
    (tiny_dataset()._replace(test_images=tiny_dataset().test_images[:31],
                             test_labels=np.zeros(31, int)), "fewer test images"),
    (tiny_dataset(shape=(4, 16, 1)), "another image shape"),
])
def test_readers_refuse_other_arrays_in_one_line(trained, other, what, tmp_path):
    workdir, _ = trained
    before = snapshot(workdir)
    for read in (lambda: runs.load_run(workdir, dataset=other),
                 lambda: evaluation.evaluate_workdir(workdir, num_samples=2, dataset=other),
                 lambda: plots.visualize_workdir(workdir, out_dir=str(tmp_path / "plots"),
                                                 dataset=other)):
        with pytest.raises(vae_jax.DataError) as error:
            read()
        message = str(error.value)
        assert "was trained on other arrays" in message, what
        assert "64 train and 32 test images of 8×8×1" in message and "\n" not in message
    # The name alone is a label: the same arrays under another name are the run's.
    assert runs.load_run(workdir, dataset=tiny_dataset("renamed")).step == NUM_EPOCHS * 4
    assert snapshot(workdir) == before
    assert not (tmp_path / "plots").exists()


@pytest.mark.slow
@pytest.mark.parametrize("script, reader", [("evaluate.py", "evaluation.evaluate_workdir"),
                                            ("visualize.py", "plots.visualize_workdir")])
def test_a_script_refuses_a_run_on_arrays_in_memory_in_one_line(trained, script, reader):
    workdir, _ = trained
    before = snapshot(workdir)
    result = run_script(script, f"--workdir={workdir}")
    assert_one_line_error(result, f"{workdir} was trained on arrays in memory ('tiny'), not a "
                                  f"TFDS dataset: read it from Python with {reader}(")
    assert "pip install" not in result.stderr and "mnist" not in result.stderr  # not the extra
    assert snapshot(workdir) == before  # no eval.json, no plots/


@pytest.mark.slow
def test_a_run_on_a_dataset_by_name_refuses_arrays(trained, tmp_path):
    # Without its dataset.json, the folder is a run on the TFDS dataset its config names.
    workdir = str(tmp_path / "run")
    shutil.copytree(trained[0], workdir)
    os.remove(os.path.join(workdir, run_folder.DATASET_FILE))
    with pytest.raises(vae_jax.DataError, match="trained on a TFDS dataset by name, not on "
                                                "arrays in memory: call runs.load_run without"):
        runs.load_run(workdir, dataset=tiny_dataset())
    with pytest.raises(vae_jax.ConfigError, match="pass them or dataset=, not both"):
        runs.load_run(trained[0], dataset=tiny_dataset(), data_dir=str(tmp_path))


# --- Resuming -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_resuming_on_other_data_is_refused_before_training(trained, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(trained[0], workdir)
    before = snapshot(workdir)
    more = tiny_config(num_epochs=NUM_EPOCHS + 1)
    with pytest.raises(vae_jax.DataError, match="was trained on other arrays"):
        training.train_and_evaluate(more, workdir, tiny_dataset(seed=1))
    # By name (as scripts/train.py would): refused before any TFDS load or pip hint.
    with pytest.raises(vae_jax.DataError, match=r"was trained on arrays in memory \('tiny'\), "
                                                "not a TFDS dataset: resume it from Python"):
        training.train_and_evaluate(more, workdir)
    os.remove(os.path.join(workdir, run_folder.LOCK_FILE))  # (taken by the refused calls)
    assert {k: v for k, v in snapshot(workdir).items() if ".lock" not in k} == {
        k: v for k, v in before.items() if ".lock" not in k}
    # With its own arrays it resumes.
    assert training.train_and_evaluate(more, workdir, tiny_dataset())["epoch"] == NUM_EPOCHS + 1


# --- Sweeps -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_an_extracted_member_of_a_sweep_on_arrays_keeps_the_record(tmp_path):
    workdir = str(tmp_path / "sweep")
    dataset = tiny_dataset()
    last = sweep.train_sweep(tiny_config(num_epochs=1), sweep.parse_sweep("beta=1,2"), workdir,
                             dataset)
    member = sweep.extract_member(workdir, 1)
    assert (run_folder.read_dataset_record(member)
            == run_folder.read_dataset_record(workdir) == run_folder.dataset_record(dataset))
    with pytest.raises(vae_jax.DataError, match="trained on arrays in memory"):
        evaluation.evaluate_workdir(member, num_samples=2)
    report = evaluation.evaluate_workdir(member, num_samples=2, batch_size=16, progress=False,
                                         dataset=dataset)
    assert report["neg_elbo"] == pytest.approx(last["test_neg_elbo"][1], abs=1e-4)
