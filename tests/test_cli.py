"""scripts/train.py as a user runs it: real MNIST / Fashion-MNIST from ../shared/data, the
one-line errors for bad command lines, and every script's ``--help`` (with the config fields, from
the one source that README.md's config table is generated from).

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
from vae_jax.app import cli, configs, data
from vae_jax.errors import ConfigError

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


@pytest.mark.slow
def test_unknown_config_field_is_one_line(tmp_path):
    result = run_train(f"--workdir={tmp_path}", "--config.num_epoch=3", timeout=120)
    assert result.returncode != 0
    assert "num_epoch" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_non_positive_batch_size_is_one_line(tmp_path):
    result = run_train(f"--workdir={tmp_path}", "--config.batch_size=0", timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: config.batch_size must be a positive integer, got 0")
    assert "Traceback" not in result.stderr


# --help: the config fields' meanings live once, in configs.FIELD_HELP; README's table and every
# script's --help are generated from it.

REGENERATE = ("python -c \"from vae_jax.app import configs; "
              "configs.write_field_table('README.md')\"")
SCRIPT_FLAGS = {  # each script's own flags, as --help lists them
    "train": ["--workdir", "--coordinator_address", "--num_processes", "--process_id",
              "--[no]distributed", "--config"],
    "sweep": ["--workdir", "--sweep", "--sweep_mode", "--extract", "--config"],
    "evaluate": ["--workdir", "--step", "--num_samples", "--batch_size", "--chunk_size", "--seed",
                 "--data_dir", "--manual_dir", "--[no]json"],
    "visualize": ["--workdir", "--step", "--out", "--seed", "--data_dir", "--manual_dir"],
    "benchmark": ["--config", "--epochs", "--num_examples", "--image_shape", "--json"],
}


def run_script(name, *args):
    env = {**os.environ, "COLUMNS": "100", "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, str(REPO / "scripts" / f"{name}.py"), *args],
                          capture_output=True, text=True, timeout=300, check=False, env=env,
                          cwd=REPO)


def test_every_config_field_has_exactly_one_meaning():
    fields = set(configs.get_default().keys())
    assert set(configs.FIELD_HELP) == fields, (
        f"no meaning in configs.FIELD_HELP: {sorted(fields - set(configs.FIELD_HELP))}; "
        f"a meaning of no field: {sorted(set(configs.FIELD_HELP) - fields)}")
    for field, meaning in configs.FIELD_HELP.items():
        assert meaning.strip() and "|" not in meaning and "\n" not in meaning, field
    table = configs.field_table().splitlines()
    assert table[:2] == ["| field | default | meaning |", "| --- | --- | --- |"]
    assert len(table) == 2 + len(fields)
    assert "| `latent_dim` | 20 | size of z |" in table
    assert "| `hidden_dims` | `(400,)` | " in configs.field_table()


def test_readme_config_table_is_generated_from_configs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme.count(configs.TABLE_START) == 1 and readme.count(configs.TABLE_END) == 1
    between = readme.split(configs.TABLE_START)[1].split(configs.TABLE_END)[0]
    assert between.strip() == configs.field_table().strip(), (
        f"README.md's config table differs from configs.field_table(); regenerate it with "
        f"{REGENERATE}")


def test_write_field_table_replaces_only_the_table(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(f"before\n\n{configs.TABLE_START}\n| old | table |\n{configs.TABLE_END}\n"
                    "\nafter\n", encoding="utf-8")
    configs.write_field_table(str(path))
    assert path.read_text(encoding="utf-8") == (
        f"before\n\n{configs.TABLE_START}\n\n{configs.field_table()}\n{configs.TABLE_END}\n"
        "\nafter\n")
    path.write_text("no markers\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="config-fields:start"):
        configs.write_field_table(str(path))
    assert path.read_text(encoding="utf-8") == "no markers\n"


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SCRIPT_FLAGS))
def test_help_exits_0_with_the_flags_presets_and_config_fields(script, tmp_path):
    workdir = tmp_path / "run"
    result = run_script(script, f"--workdir={workdir}", "--help")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""
    assert result.stdout.startswith(f"Usage: python scripts/{script}.py ")
    listed = {line.split(":")[0].strip() for line in result.stdout.splitlines()
              if line.startswith("  --")}
    assert set(SCRIPT_FLAGS[script]) <= listed, set(SCRIPT_FLAGS[script]) - listed
    if "--config" in SCRIPT_FLAGS[script]:
        for preset in ("default.py", "beta_vae.py", "mnist_conv.py"):
            assert f"\n  {preset}: " in result.stdout
        # Every field with its default and meaning, wrapped as absl wraps flags (COLUMNS=100).
        assert configs.field_help(100) in result.stdout
        assert "  --config.latent_dim: size of z\n    (default: 20)\n" in result.stdout
    else:
        assert "--config" not in result.stdout
    assert not workdir.exists()  # --help reads nothing and writes nothing


@pytest.mark.slow
def test_h_and_helpfull_exit_0():
    short = run_script("train", "-h")
    assert short.returncode == 0 and "--config.latent_dim: size of z" in short.stdout
    full = run_script("train", "--helpfull")
    assert full.returncode == 0, full.stderr[-3000:]
    assert "absl.logging:" in full.stdout and "--config.latent_dim: size of z" in full.stdout
    assert "Try --helpfull" in short.stdout and "Try --helpfull" not in full.stdout


# --help shows the values of the command line's preset and overrides, and always exits 0.

MNIST_2D = "vae_jax/app/configs/mnist_2d.py"


def _preset(path, **overrides):
    config = cli.load_config_file(str(REPO / path))
    config.unlock().update(overrides)
    return config


def _flat(text):
    return " ".join(text.split())


@pytest.mark.slow
def test_help_shows_the_values_of_the_preset_and_overrides_on_the_command_line():
    result = run_script("train", f"--config={MNIST_2D}", "--config.beta", "0.5", "--help")
    assert result.returncode == 0 and result.stderr == "", result.stderr[-3000:]
    assert (f"config fields (--config.FIELD=value), with the values of {MNIST_2D} and the "
            "--config.FIELD overrides of the command line:") in _flat(result.stdout)
    assert configs.field_help(100, _preset(MNIST_2D, beta=0.5)) in result.stdout
    assert "  --config.latent_dim: size of z\n    (default: 2)\n" in result.stdout
    # The preset alone, --config FILE spelled with a space.
    alone = run_script("train", "--config", MNIST_2D, "-h")
    assert alone.returncode == 0 and alone.stderr == "", alone.stderr[-3000:]
    assert f"with the values of {MNIST_2D}:" in _flat(alone.stdout)
    assert configs.field_help(100, _preset(MNIST_2D)) in alone.stdout


@pytest.mark.slow
@pytest.mark.parametrize("extra,note,shown", [
    (["--bogus"], None, "default.py's defaults:"),
    (["--config.nonsense=3"], "note: bad --config override (no config field 'nonsense'); the "
                              "values below leave the overrides out", "default.py's defaults:"),
    ([f"--config={MNIST_2D}", "--config.latent_dim=x"],
     "note: bad --config override (flag --config.latent_dim=x: invalid literal for int() with "
     "base 10: 'x'); the values below leave the overrides out", f"the values of {MNIST_2D}:"),
    (["--config=/nonexist.py"], "note: --config could not be read (config file /nonexist.py "
                                "does not exist;", "default.py's defaults:"),
    (["--config=vae_jax/app/configs/mnist_2.py", "--config.latent_dim=3"],
     "note: --config could not be read (config file vae_jax/app/configs/mnist_2.py does not "
     "exist; did you mean vae_jax/app/configs/mnist_2d.py?); the values below are default.py's",
     "default.py's defaults and the --config.FIELD overrides of the command line:"),
])
def test_help_exits_0_whatever_else_is_on_the_line(extra, note, shown):
    for args in ([*extra, "--help"], ["--help", *extra]):
        result = run_script("train", *args)
        assert result.returncode == 0, (args, result.stderr[-3000:])
        assert result.stderr == "" and result.stdout.startswith("Usage: python scripts/train.py")
        text = _flat(result.stdout)
        assert f"config fields (--config.FIELD=value), with {shown}" in text
        assert (note in text) if note else ("note:" not in text), text
        assert "--config.latent_dim: size of z" in text


@pytest.mark.slow
def test_without_help_a_bad_override_is_still_one_line(tmp_path):
    result = run_script("train", f"--workdir={tmp_path}", "--config.nonsense=3")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: bad --config override: no config field 'nonsense'\n")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_help_names_no_machine_path_and_sweep_help_reads_once():
    for script in ("train", "sweep"):
        result = run_script(script, "--help")
        assert "(default: 'vae_jax/app/configs/default.py')" in result.stdout
        # (absl heads the script's flags with the script's path as it was run: REPO/scripts/…)
        assert str(REPO / "vae_jax") not in result.stdout
    sweep_flag = result.stdout.split("\n  --sweep:")[1].split("\n  --")[0]
    assert _flat(sweep_flag) == (
        "FIELD=V1,V2,...: the values of one swept field, or of several separated by ';' "
        "(beta=0.5,1;seed=0,1); repeat this option to specify a list of values (default: '[]')")


def test_config_arguments_are_found_before_double_dash():
    argv = ["train.py", "--config", "F.py:2", "--workdir", "w", "--config.latent_dim", "3",
            "--noconfig.binarize", "--config.beta=2", "-h", "--", "--config=G.py"]
    assert cli._config_arguments(argv) == (  # pylint: disable=protected-access
        ["--config", "F.py:2"], ["--config.latent_dim", "3", "--noconfig.binarize",
                                 "--config.beta=2"])
    assert cli._config_arguments(["p", "--config", "--help"]) == (  # pylint: disable=W0212
        ["--config"], [])
