"""The notebooks in notebooks/: committed without outputs, Colab-ready, and each runs top to bottom
in quick mode (VAE_JAX_QUICK=1) with nbclient on the python3 kernel of this environment.

Notebooks that train on MNIST read the original files from ../shared/data/mnist (or
$VAE_JAX_SHARED_DATA/mnist, see conftest.real_data_dir): they skip when the files are missing,
except under CI, where they fail. All notebooks share one TFDS data folder, so MNIST is prepared
once per test session.
"""

import os
import pathlib
import sys
import time

import pytest

from conftest import REPO, real_data_dir

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
EXPECTED = {"quickstart", "ae_vs_vae_latent_space", "loss_weights", "kl_divergence",
            "reparameterisation"}


def read(path: pathlib.Path):
    return nbformat.read(str(path), as_version=4)


def needs_mnist(notebook) -> bool:
    return any("mnist_folders()" in cell.source for cell in notebook.cells)


def test_every_notebook_is_there():
    assert {path.stem for path in NOTEBOOKS} == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_committed_without_outputs_and_is_colab_ready(path):
    notebook = read(path)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, \
                f"{path.name}: clear the outputs before committing"
    first, code = notebook.cells[0], [c for c in notebook.cells if c.cell_type == "code"]
    assert first.cell_type == "markdown" and "colab-badge.svg" in first.source
    assert f"notebooks/{path.name}" in first.source
    install = code[0].source
    assert "import vae_jax" in install and "except ImportError" in install
    assert "%pip install" in install and "PLACEHOLDER" in install
    assert "VAE_JAX_QUICK" in "".join(c.source for c in code)


@pytest.fixture(scope="module", name="tfds_dir")
def fixture_tfds_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("notebook_tfds")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_top_to_bottom_in_quick_mode(path, tfds_dir, monkeypatch):
    notebook = read(path)
    if needs_mnist(notebook):
        monkeypatch.setenv("VAE_JAX_MANUAL_DIR", str(real_data_dir("mnist")))
        monkeypatch.setenv("VAE_JAX_DATA_DIR", str(tfds_dir))
    monkeypatch.setenv("VAE_JAX_QUICK", "1")
    # The python3 kernelspec runs `python` from PATH: make it this environment's.
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    print(f"{path.name}: {time.perf_counter() - start:.1f} s")
    errors = [output for cell in notebook.cells if cell.cell_type == "code"
              for output in cell.outputs if output.output_type == "error"]
    assert not errors
