"""Restoring a run (vae_jax.app.runs.load_run) and scripts/visualize.py on runs trained on mocked
MNIST: the pictures that apply to a VAE and to a plain 2-D autoencoder, and one-line errors."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import vae_jax
from conftest import REPO, assert_one_line_error
from mock_train import NUM_EXAMPLES, mocked_mnist, small_config
from test_plots import assert_png
from vae_jax.app import plots, runs, training

VISUALIZE = str(REPO / "scripts" / "visualize.py")
VAE_PICTURES = {"reconstructions", "samples", "latent_scatter", "interpolations", "traversals",
                "training_curves", "rate_distortion"}  # no manifold: 4 latents
AE_2D_PICTURES = {"reconstructions", "latent_scatter", "manifold", "interpolations",
                  "traversals", "training_curves"}  # no prior samples, no rate


@pytest.fixture(scope="module", name="mocked_runs")
def fixture_mocked_runs(tmp_path_factory):
    """Two runs on mocked MNIST: the small VAE (4 latents, 2 epochs: checkpoints at steps 4 and
    8) and a plain autoencoder with 2-D codes and a cosine learning-rate schedule (1 epoch). The
    mock stays on for the module."""
    root = tmp_path_factory.mktemp("visualize")
    data_dir = str(root / "tfds")
    with mocked_mnist():
        training.train_and_evaluate(small_config(num_epochs=2, data_dir=data_dir),
                                    str(root / "vae"))
        # A cosine learning-rate schedule: its optimizer state differs from constant Adam's.
        training.train_and_evaluate(small_config(model="ae", latent_dim=2, lr_schedule="cosine",
                                                 data_dir=data_dir), str(root / "ae"))
        yield {"vae": str(root / "vae"), "ae": str(root / "ae")}


def run_visualize(*args):
    """scripts/visualize.py in a subprocess, under tfds.testing.mock_data."""
    command = [sys.executable, "-c",
               "import runpy, sys, tensorflow_datasets as tfds\n"
               f"sys.argv = [{VISUALIZE!r}] + sys.argv[1:]\n"
               f"with tfds.testing.mock_data(num_examples={NUM_EXAMPLES}):\n"
               f"    runpy.run_path({VISUALIZE!r}, run_name='__main__')", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def pngs(folder):
    return {name[:-4] for name in os.listdir(folder) if name.endswith(".png")}


@pytest.mark.slow
def test_load_run_restores_the_checkpoint_and_its_dataset(mocked_runs):
    run = runs.load_run(mocked_runs["vae"])
    assert run.step == 8 and run.epoch == 2 and run.workdir == os.path.abspath(mocked_runs["vae"])
    assert run.vae.latent_dim == 4 and run.vae.stochastic and run.config.hidden_dims == (32,)
    assert run.dataset.test_images.shape == (NUM_EXAMPLES, 28, 28, 1)
    first = runs.load_run(mocked_runs["vae"], step=4)
    assert first.step == 4 and first.epoch == 1
    differs = jax.tree.map(lambda a, b: not np.array_equal(a, b), run.params, first.params)
    assert any(jax.tree.leaves(differs))
    assert runs.checkpoint_steps(mocked_runs["vae"]) == [4, 8]
    step, config = runs.load_config(mocked_runs["ae"])
    assert step == 4 and config.model == "ae" and config.lr_schedule == "cosine"
    assert runs.load_run(mocked_runs["ae"]).vae.stochastic is False
    with pytest.raises(vae_jax.CheckpointError, match="no checkpoint at step 5 .* steps 4, 8"):
        runs.load_run(mocked_runs["vae"], step=5)


@pytest.mark.slow
def test_visualize_script_writes_the_pictures_of_a_vae(mocked_runs, tmp_path):
    out = tmp_path / "pictures"
    result = run_visualize(f"--workdir={mocked_runs['vae']}", f"--out={out}", "--step=4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert pngs(out) == VAE_PICTURES
    for name in VAE_PICTURES:
        assert_png(out / f"{name}.png")
        assert f"{name}.png" in result.stdout
    assert "manifold" in result.stdout and "latent_dim=4" in result.stdout  # skipped, and why


@pytest.mark.slow
def test_visualize_a_2d_autoencoder_draws_the_manifold_but_no_samples(mocked_runs):
    with mocked_mnist():
        written = plots.visualize_workdir(mocked_runs["ae"])
    folder = os.path.join(mocked_runs["ae"], "plots")  # the default --out
    assert pngs(folder) == AE_2D_PICTURES
    assert {k for k, v in written.items() if v.endswith(".png")} == AE_2D_PICTURES
    assert "no prior" in written["samples"] and "no rate" in written["rate_distortion"]
    for name in AE_2D_PICTURES:
        assert_png(os.path.join(folder, f"{name}.png"))


@pytest.mark.slow
def test_visualize_script_errors_cleanly_without_a_checkpoint(tmp_path):
    assert_one_line_error(run_visualize(f"--workdir={tmp_path}"), "no checkpoint in")
    assert not os.listdir(tmp_path)  # nothing written
    assert_one_line_error(run_visualize(f"--workdir={tmp_path / 'missing'}"), "does not exist")


@pytest.mark.slow
def test_visualize_script_names_the_steps_there_are(mocked_runs):
    assert_one_line_error(run_visualize(f"--workdir={mocked_runs['vae']}", "--step=3"),
                          "no checkpoint at step 3")
