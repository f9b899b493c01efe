"""The notebooks in notebooks/: committed without outputs, Colab-ready, and each runs top to bottom
in quick mode (VAE_JAX_QUICK=1) on the python3 kernel of this environment.

They run once per test session, in the documentation build (conftest's ``docs_build`` fixture:
MyST-NB executes them, the build fails on any error, and the executed copies are checked here), so
CI does not pay for executing them twice. Notebooks that train on MNIST read the original files
from ../shared/data/mnist (or $VAE_JAX_SHARED_DATA/mnist, see conftest.real_data_dir): the build
skips when the files are missing, except under CI, where it fails. All notebooks share one TFDS
data folder, so MNIST is prepared once per session. applications.ipynb also reads Fashion-MNIST's
original files from the folder beside MNIST's (../shared/data/fashion_mnist), and reads both
datasets' IDX files itself rather than through TFDS.
"""

import pathlib

import pytest

from conftest import REPO

nbformat = pytest.importorskip("nbformat")

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
EXPECTED = {"quickstart", "ae_vs_vae_latent_space", "loss_weights", "kl_divergence",
            "reparameterisation", "applications", "priors"}


def read(path: pathlib.Path):
    return nbformat.read(str(path), as_version=4)


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


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_top_to_bottom_in_quick_mode(path, docs_build):
    """Each notebook ran top to bottom, without an error, in the docs build (the one execution:
    conftest's docs_build runs them with MyST-NB in quick mode on the real MNIST files)."""
    executed_path = docs_build / "jupyter_execute" / "notebooks" / f"{path.stem}.ipynb"
    assert executed_path.exists(), f"the docs build did not execute {path.name}"
    executed, committed = read(executed_path), read(path)
    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    # The notebook that ran is the committed one, cell by cell.
    assert [cell.source for cell in code] == \
        [cell.source for cell in committed.cells if cell.cell_type == "code"]
    not_run = [index for index, cell in enumerate(code)
               if cell.source.strip() and cell.execution_count is None]
    assert not not_run, f"{path.name}: code cells {not_run} did not run"
    errors = [output for cell in code for output in cell.outputs
              if output.output_type == "error"]
    assert not errors
