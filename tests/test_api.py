"""The public API of the core: its names, a light import, and the core never importing the app."""

import ast
import importlib
import os
import pathlib
import subprocess
import sys

import pytest

import vae_jax
from conftest import REPO

CORE = pathlib.Path(vae_jax.__file__).parent

PUBLIC = {
    "models": ["VAE", "conv_vae", "make_vae", "mlp_vae"],
    "likelihoods": ["Likelihood", "bernoulli", "gaussian", "squared_error"],
    "objectives": ["ELBOTerms", "batch_elbo", "elbo", "kl_weight_schedule", "loss"],
    "iwae": ["batch_iwae_bound", "iwae_bound", "iwae_loss"],
    "distributions": ["bernoulli_log_prob", "categorical_kl", "gaussian_kl_to_standard_normal",
                      "gaussian_log_prob", "gaussian_sample", "standard_normal_log_prob"],
    "errors": ["CheckpointError", "ConfigError", "DamagedCheckpointError", "DataError",
               "DatasetDownloadError", "ShapeError", "TrainingDivergedError", "VAEJaxError", "WorkdirError"],
}


def test_the_public_names_exist_and_are_all_of_all():
    names = [name for group in PUBLIC.values() for name in group]
    missing = [name for name in names if not hasattr(vae_jax, name)]
    assert not missing, missing
    assert sorted(vae_jax.__all__) == sorted(names)
    for name in names:
        assert getattr(vae_jax, name).__doc__, f"vae_jax.{name} has no docstring"


@pytest.mark.slow
def test_import_vae_jax_loads_no_application_library():
    heavy = ("tensorflow", "tensorflow_datasets", "orbax", "matplotlib", "vae_jax.app")
    code = ("import sys, vae_jax; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r} "
            f"or m.startswith('vae_jax.app')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]", result.stdout


def _imported_modules(path: pathlib.Path) -> list[str]:
    imported = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            imported += [module] + [f"{module}.{alias.name}" for alias in node.names]
    return imported


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda path: path.name)
def test_no_core_module_imports_the_application(path):
    offending = [name for name in _imported_modules(path)
                 if name == "vae_jax.app" or name.startswith("vae_jax.app.")]
    assert not offending, f"{path.name} imports {offending}"


# --- Old paths of the application, kept for one release ---------------------------------------

@pytest.mark.parametrize("old,new,name", [
    ("vae_jax.training", "vae_jax.app.training", "train_and_evaluate"),
    ("vae_jax.sweep", "vae_jax.app.sweep", "parse_sweep"),
    ("vae_jax.runs", "vae_jax.app.runs", "load_run"),
    ("vae_jax.evaluation", "vae_jax.app.evaluation", "evaluate_workdir"),
    ("vae_jax.plots", "vae_jax.app.plots", "visualize_run"),
    ("vae_jax.data", "vae_jax.app.data", "load_image_dataset"),
    ("vae_jax.configs", "vae_jax.app.configs", "validate"),
])
def test_old_module_paths_still_work_with_a_deprecation_warning(old, new, name):
    old_module, new_module = importlib.import_module(old), importlib.import_module(new)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        assert getattr(old_module, name) is getattr(new_module, name)
    with pytest.raises(AttributeError):
        getattr(old_module, "no_such_name")


def test_an_old_preset_path_reads_the_moved_preset_with_a_warning(capsys):
    from vae_jax.app import cli  # pylint: disable=import-outside-toplevel

    old = os.path.join(REPO, "vae_jax", "configs", "mnist_2d.py")
    config = cli.load_config_file(old)
    assert config.latent_dim == 2
    assert "the presets moved to vae_jax/app/configs/" in capsys.readouterr().err


def test_a_preset_written_before_the_move_still_loads(tmp_path):
    from vae_jax.app import cli  # pylint: disable=import-outside-toplevel

    preset = tmp_path / "my_preset.py"
    preset.write_text("from vae_jax.configs import default\n\n\ndef get_config():\n"
                      "    config = default.get_config()\n    config.latent_dim = 3\n"
                      "    return config\n")
    with pytest.warns(DeprecationWarning, match="vae_jax.configs moved to vae_jax.app.configs"):
        assert cli.load_config_file(str(preset)).latent_dim == 3


def test_a_likelihood_that_is_not_one_is_a_clear_error():
    for wrong in ("gaussian", vae_jax.bernoulli):
        with pytest.raises(vae_jax.ConfigError, match="likelihood must be a vae_jax.Likelihood"):
            vae_jax.mlp_vae((28, 28, 1), 2, (8,), likelihood=wrong)
