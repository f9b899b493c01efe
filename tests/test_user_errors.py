"""What a user sees when an input is wrong or the network is missing: one line ``error: …`` that
names the problem and the fix, no traceback, no third-party noise after it and no debris left.

- Config files (``--config=FILE``): every way a file can be wrong, for every script that takes one.
- ``manual_dir`` / ``data_dir``: wrong, missing, truncated or damaged original files, folders where
  files belong, files where folders belong.
- Noise: TensorFlow's start-up lines, TFDS's progress bars on a non-terminal, urllib3's retry
  warnings after our error line, and TFDS's ``*.tmp.*`` download folders after a failed download.
"""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, assert_one_line_error, real_data_dir
from vae_jax import ConfigError, DataError, DatasetDownloadError
from vae_jax.app import cli, data

SCRIPTS = REPO / "scripts"
# Lines that third-party libraries print on their own and that must not reach a user.
NOISE = ("absl::InitializeLog", "oneDNN", "cpu_feature_guard", "Dl Completed", "Dl Size",
         "Extraction completed", "Generating splits", "Retrying (Retry(")
# A proxy that refuses connections: "no internet" whether or not the machine has any.
NO_NETWORK = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
              "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
              "NO_PROXY": "", "no_proxy": ""}
MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
               "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")


def run_script(script: str, *args, env=None, timeout=300) -> subprocess.CompletedProcess:
    # Without the TF/oneDNN variables of the caller, as on a fresh shell.
    base = {k: v for k, v in os.environ.items()
            if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    return subprocess.run([sys.executable, str(SCRIPTS / script), *args], capture_output=True,
                          text=True, timeout=timeout, check=False,
                          env={**base, "PYTHONUNBUFFERED": "1", **(env or {})}, cwd=REPO)


def assert_no_noise(stderr: str) -> None:
    noisy = [line for line in stderr.splitlines() if any(n in line for n in NOISE)]
    assert not noisy, noisy[:5]


# --- Config files ---------------------------------------------------------------------------

GET_DEFAULT = ("from vae_jax import configs\n\ndef get_config():\n"
               "    config = configs.get_default()\n")
BAD_CONFIG_FILES = {
    # name: (file text, or None for no file; what the one line must say)
    "missing.py": (None, "config file {path} does not exist"),
    "defualt.py": (None, "did you mean vae_jax/app/configs/default.py?"),
    "folder.py": ("<folder>", "is a folder, not a file"),
    "config.json": ('{"dataset": "mnist"}', "is not a Python file (.py)"),
    "syntax.py": ("def get_config(:\n", "config file {path}:1 is not valid Python (SyntaxError"),
    "null.py": ("x = 1\0\n", "is not valid Python"),
    "imports.py": ("\nimport no_such_module_xyz\n",
                   "config file {path}:2 raised ModuleNotFoundError: No module named "
                   "'no_such_module_xyz' while it ran; fix the file"),
    "raises.py": (GET_DEFAULT + "    config.latent_dim = 1 / 0\n    return config\n",
                  "get_config() of config file {path}:5 raised ZeroDivisionError"),
    "no_get_config.py": ("x = 1\n", "defines no get_config() function"),
    "returns_dict.py": ("def get_config():\n    return {'dataset': 'mnist'}\n",
                        "returned a dict, not an ml_collections.ConfigDict"),
    "returns_none.py": ("def get_config():\n    pass\n",
                        "returned None (is its return statement missing?)"),
    "unknown_field.py": (GET_DEFAULT + "    config.num_epoch = 3\n    return config\n",
                         "config file {path}: unknown config field(s): num_epoch; known fields"),
    "missing_field.py": (GET_DEFAULT + "    del config['seed']\n    return config\n",
                         "config file {path}: config is missing field(s): seed"),
    "needs_arg.py": ("def get_config(name):\n    pass\n",
                     "needs an argument: pass it as --config={path}:ARG"),
    "default.py:x": (None, "takes no argument, but --config={path}:x passes 'x': drop ':x'"),
}


@pytest.fixture(scope="module", name="config_files")
def fixture_config_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("configs")
    for name, (text, _) in BAD_CONFIG_FILES.items():
        if text == "<folder>":
            (folder / name).mkdir()
        elif text is not None:
            (folder / name).write_text(text)
    shutil.copy(REPO / "vae_jax" / "app" / "configs" / "default.py", folder / "default.py")
    return folder


def _expected(name, folder):
    path = str(folder / name.partition(":")[0])
    return name, path, BAD_CONFIG_FILES[name][1].format(path=path)


@pytest.mark.parametrize("name", sorted(BAD_CONFIG_FILES))
def test_every_kind_of_bad_config_file_is_a_config_error_naming_the_file(name, config_files):
    argument, path, message = _expected(name, config_files)
    with pytest.raises(ConfigError) as raised:
        cli.load_config_file(str(config_files / argument))
    assert message in str(raised.value) and path in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_good_config_file_with_an_argument_loads_locked(tmp_path):
    text = GET_DEFAULT + "    config.latent_dim = int(latent)\n    return config\n"
    (tmp_path / "latent.py").write_text(text.replace("get_config()", "get_config(latent)"))
    config = cli.load_config_file(f"{tmp_path / 'latent.py'}:7")
    assert config.latent_dim == 7 and config.is_locked


@pytest.mark.parametrize("script,name", [
    ("train.py", "missing.py"), ("train.py", "folder.py"), ("train.py", "returns_dict.py"),
    ("sweep.py", "syntax.py"), ("sweep.py", "unknown_field.py"),
    ("benchmark.py", "raises.py"), ("benchmark.py", "default.py:x"),
])
def test_bad_config_files_are_one_line_errors_in_every_script(script, name, config_files,
                                                              tmp_path):
    argument, _, message = _expected(name, config_files)
    args = {"train.py": [f"--workdir={tmp_path}"],
            "sweep.py": [f"--workdir={tmp_path}", "--sweep=beta=1,2"],
            "benchmark.py": ["--epochs=1"]}[script]
    result = run_script(script, *args, f"--config={config_files / argument}", timeout=120)
    assert_one_line_error(result, message)


def test_the_issue_example_a_missing_preset_is_one_line(tmp_path):
    result = run_script("train.py", f"--workdir={tmp_path}", "--config=vae_jax/app/configs/nope.py",
                        timeout=120)
    assert_one_line_error(result, "config file vae_jax/app/configs/nope.py does not exist; the "
                                  "presets are vae_jax/app/configs/{")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_wrong_field_type_from_a_config_file_is_one_line(tmp_path):
    (tmp_path / "typed.py").write_text(
        "import ml_collections\nfrom vae_jax import configs\n\ndef get_config():\n"
        "    fields = configs.get_default().to_dict()\n    fields['num_epochs'] = 'ten'\n"
        "    return ml_collections.ConfigDict(fields)\n")
    result = run_script("train.py", f"--workdir={tmp_path / 'run'}",
                        f"--config={tmp_path / 'typed.py'}", timeout=120)
    assert_one_line_error(result, "config.num_epochs must be a positive integer, got 'ten'")


# --- manual_dir and data_dir ----------------------------------------------------------------

@pytest.fixture(scope="module", name="manual_dirs")
def fixture_manual_dirs(tmp_path_factory):
    """Folders of MNIST's original files, each wrong in one way."""
    mnist = real_data_dir("mnist")
    root = tmp_path_factory.mktemp("manual")

    def copy(name):
        folder = root / name
        folder.mkdir()
        for file in MNIST_FILES:
            shutil.copyfile(mnist / file, folder / file)
        return folder

    (copy("partial") / "t10k-labels-idx1-ubyte.gz").unlink()
    (root / "empty").mkdir()
    truncated = copy("truncated") / "train-images-idx3-ubyte.gz"
    truncated.write_bytes(truncated.read_bytes()[:1000])
    damaged = copy("damaged") / "t10k-labels-idx1-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:100] + b"\xff" + damaged.read_bytes()[101:])
    folder = copy("folder") / "train-labels-idx1-ubyte.gz"
    folder.unlink()
    folder.mkdir()
    unreadable = copy("unreadable") / "train-labels-idx1-ubyte.gz"
    unreadable.chmod(0)
    (root / "a_file").write_text("not a folder")
    return root


MANUAL_DIR_CASES = {
    # manual_dir (under the fixture's root, or the real folder of another dataset): the message.
    "fashion_mnist": "t10k-images-idx3-ubyte.gz has 4422102 bytes, expected the original 1648877 "
                     "bytes with sha256 8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a"
                     "2dbc4e6",
    "partial": "lacks t10k-labels-idx1-ubyte.gz (the original file(s) from https://",
    "empty": "holds none of its 4 original files (t10k-images-idx3-ubyte.gz, ",
    "truncated": "train-images-idx3-ubyte.gz has 1000 bytes, expected the original 9912422 bytes",
    "damaged": "t10k-labels-idx1-ubyte.gz has sha256 ",
    "folder": "train-labels-idx1-ubyte.gz is a folder; expected the original 28881 bytes",
    "unreadable": "train-labels-idx1-ubyte.gz cannot be read (permission denied)",
    "missing": "does not exist; pass the folder that holds the original files",
    "a_file": "is a file, not a folder; pass the folder that holds the original files",
}


@pytest.mark.parametrize("case", sorted(MANUAL_DIR_CASES))
def test_every_kind_of_wrong_manual_dir_is_a_data_error_naming_the_file(case, manual_dirs,
                                                                         tmp_path):
    if case == "unreadable" and os.geteuid() == 0:
        pytest.skip("root may read anything")
    manual_dir = (real_data_dir("fashion_mnist") if case == "fashion_mnist"
                  else manual_dirs / case)
    data_dir = tmp_path / "tfds"
    with pytest.raises(DataError) as raised:
        data.load_image_dataset("mnist", str(data_dir), str(manual_dir))
    message = str(raised.value)
    assert f"manual_dir {manual_dir} for dataset 'mnist'" in message
    assert MANUAL_DIR_CASES[case] in message and "\n" not in message
    assert not data_dir.exists()  # nothing left behind


@pytest.mark.parametrize("case", ["is_a_file", "under_a_file", "read_only"])
def test_a_data_dir_that_cannot_hold_the_dataset_is_a_data_error(case, tmp_path):
    if case == "read_only" and os.geteuid() == 0:
        pytest.skip("root may write anywhere")
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "read_only").mkdir(mode=0o555)
    data_dir = {"is_a_file": tmp_path / "a_file", "under_a_file": tmp_path / "a_file" / "tfds",
                "read_only": tmp_path / "read_only" / "tfds"}[case]
    message = {"is_a_file": f"data_dir {data_dir} is a file, not a folder",
               "under_a_file": f"{tmp_path / 'a_file'} is a file, not a folder",
               "read_only": f"{tmp_path / 'read_only'} is not writable"}[case]
    with pytest.raises(DataError, match=message):
        data.load_image_dataset("mnist", str(data_dir))


@pytest.mark.slow
def test_the_issue_example_another_datasets_files_is_one_line(tmp_path):
    result = run_script("train.py", f"--workdir={tmp_path / 'run'}", "--config.num_epochs=1",
                        f"--config.manual_dir={real_data_dir('fashion_mnist')}",
                        f"--config.data_dir={tmp_path / 'tfds'}", timeout=120)
    assert_one_line_error(result, "for dataset 'mnist': t10k-images-idx3-ubyte.gz has 4422102 "
                                  "bytes, expected the original 1648877 bytes with sha256 8d42")
    assert_no_noise(result.stderr)


# --- Noise and debris -----------------------------------------------------------------------

@pytest.mark.slow
def test_tensorflow_loads_quietly_whatever_jax_set_before():
    # JAX sets TF_CPP_MIN_LOG_LEVEL=1 on import; TensorFlow's oneDNN notice ignores that level.
    code = ("import os, jax\nfrom vae_jax.app import data\ndata._import_tfds()\n"
            "print(os.environ['TF_CPP_MIN_LOG_LEVEL'], os.environ['TF_ENABLE_ONEDNN_OPTS'])")
    base = {k: v for k, v in os.environ.items()
            if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=True, env=base)
    assert result.stdout.split() == ["2", "0"]
    assert_no_noise(result.stderr)
    assert result.stderr == ""


@pytest.mark.slow
def test_an_offline_download_ends_with_our_line_and_leaves_no_debris(tmp_path):
    data_dir = tmp_path / "tfds"
    theirs = data_dir / "downloads" / "mnist" / "someone_elses.gz.tmp.0123"
    theirs.mkdir(parents=True)
    result = run_script("train.py", f"--workdir={tmp_path / 'run'}", "--config.num_epochs=1",
                        f"--config.data_dir={data_dir}", env=NO_NETWORK, timeout=120)
    assert_one_line_error(result, "could not download 'mnist' (no internet?): pass "
                                  "--config.manual_dir=FOLDER")
    assert_no_noise(result.stderr)
    left = sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*"))
    assert left == ["downloads", "downloads/mnist", "downloads/mnist/someone_elses.gz.tmp.0123"]


@pytest.mark.parametrize("flag, expected", [
    ("--manual_dir", "--manual_dir"),  # evaluate.py, visualize.py, codes.py
    ("--config.manual_dir", "--config.manual_dir"),  # train.py, sweep.py, benchmark.py
    (lambda name: "--dataset_manual_dir" if name == "fashion_mnist" else "--manual_dir",
     "--dataset_manual_dir"),  # score.py: one flag per dataset
])
def test_a_dataset_that_cannot_be_downloaded_is_named_with_the_scripts_flag(monkeypatch, flag,
                                                                            expected):
    def command():
        raise DatasetDownloadError("fashion_mnist")

    monkeypatch.setattr(sys, "argv", ["script.py"])
    with pytest.raises(SystemExit) as exited:
        cli.run(command, "usage", manual_dir_flag=flag)
    assert exited.value.code == (
        f"error: could not download 'fashion_mnist' (no internet?): pass {expected}=FOLDER, a "
        "folder holding the original download files of 'fashion_mnist', to prepare it offline")
    assert "manual_dir=FOLDER (config.manual_dir)" in str(
        DatasetDownloadError("mnist"))  # raised from Python: the argument's name


@pytest.mark.slow
def test_a_successful_run_and_its_readers_print_no_third_party_noise(tmp_path):
    result = run_script("train.py", f"--workdir={tmp_path / 'run'}", "--config.num_epochs=1",
                        "--config.hidden_dims=(16,)", "--config.latent_dim=2",
                        "--config.batch_size=1000", f"--config.data_dir={tmp_path / 'tfds'}",
                        f"--config.manual_dir={real_data_dir('mnist')}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_no_noise(result.stderr)
    assert result.stderr.strip() == "", result.stderr[:2000]
    # The readers open the checkpoints read-only: Orbax's notices about that stay quiet too.
    for script, *args in (("evaluate.py", "--num_samples=1"),
                          ("visualize.py", f"--out={tmp_path / 'plots'}")):
        result = run_script(script, f"--workdir={tmp_path / 'run'}", *args, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stderr.strip() == "", (script, result.stderr[:2000])
