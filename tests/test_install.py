"""The light install: vae_jax without TensorFlow, TensorFlow Datasets or matplotlib.

This environment has all three installed, so the tests that matter run a subprocess in which a
`sys.meta_path` finder makes importing them (or any of their submodules) raise
`ModuleNotFoundError`, as on a machine where ``pip install -e .`` installed the core alone. There
the core computes losses and gradients, the training engine trains a run and a sweep on arrays in
memory, none of the blocked modules is ever loaded, and everything that needs an extra stops with
one line naming the ``pip install`` of that extra.
"""

import io
import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, assert_one_line_error

from vae_jax import VAEJaxError
from vae_jax.app import optional

BLOCKED = ("tensorflow", "tensorflow_datasets", "matplotlib")

# Installed first in every subprocess; `blocked` is a tuple of top-level module names. Every
# finder on sys.meta_path is wrapped so that it does not see them, nor their distributions'
# metadata: `import` raises ModuleNotFoundError and `importlib.util.find_spec` returns None, as
# where they are not installed (libraries such as etils probe with find_spec).
BLOCKER = """\
import importlib.abc, re, sys
BLOCKED = {blocked!r}
assert not [m for m in sys.modules if m.partition(".")[0] in BLOCKED], "loaded before the blocker"
_DISTRIBUTIONS = {{re.sub("[-_.]+", "_", n).lower() for n in BLOCKED}} | {{"tensorflow_cpu"}}

class _NotInstalled(importlib.abc.MetaPathFinder):
    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        find_spec = getattr(self._finder, "find_spec", None)
        return find_spec(name, path, target) if find_spec else None

    def find_distributions(self, *args, **kwargs):
        find = getattr(self._finder, "find_distributions", None)
        for dist in find(*args, **kwargs) if find else ():
            if re.sub("[-_.]+", "_", dist.metadata["Name"] or "").lower() not in _DISTRIBUTIONS:
                yield dist

    def invalidate_caches(self):
        getattr(self._finder, "invalidate_caches", lambda: None)()

sys.meta_path[:] = [_NotInstalled(finder) for finder in sys.meta_path]
import importlib.metadata, importlib.util
for _name in BLOCKED:  # the blocker itself works
    assert importlib.util.find_spec(_name) is None, _name
    try:
        __import__(_name)
    except ModuleNotFoundError:
        pass
    else:
        raise AssertionError(_name + " imported despite the blocker")
    try:
        importlib.metadata.version(_name)
    except importlib.metadata.PackageNotFoundError:
        pass
    else:
        raise AssertionError(_name + "'s metadata found despite the blocker")
"""

# After the blocker: the core, then one run and a 2-member sweep of 2 epochs through the training
# engine on in-memory arrays (the loader of datasets by name replaced), in sys.argv[1].
TRAIN_WITHOUT_EXTRAS = """\
import json, os
import jax, jax.numpy as jnp, numpy as np
import vae_jax

vae = vae_jax.mlp_vae(input_shape=(8, 8, 1), latent_dim=2, hidden_dims=(16,))
params = vae.init(jax.random.key(0))
x = jax.random.bernoulli(jax.random.key(1), 0.3, (16, 8, 8, 1)).astype(jnp.float32)
grad_fn = jax.jit(jax.grad(vae_jax.loss, argnums=1, has_aux=True), static_argnums=0)
grads, means = grad_fn(vae, params, x, jax.random.key(2), 1.0)
elbo = vae_jax.batch_elbo(vae, params, x, jax.random.key(3))
core = {"grad_finite": all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads)),
        "grad_nonzero": any(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(grads)),
        "elbo_shape": list(elbo.objective.shape),
        "elbo_finite_negative": bool(jnp.all(elbo.elbo < 0))}

from vae_jax.app import configs, data, sweep, training

rng = np.random.default_rng(0)
dataset = data.ImageDataset("in_memory", rng.integers(0, 256, (64, 8, 8, 1), np.uint8),
                            rng.integers(0, 10, 64), rng.integers(0, 256, (32, 8, 8, 1), np.uint8),
                            rng.integers(0, 10, 32))
config = configs.get_default()
config.update(dataset="in_memory", hidden_dims=(16,), latent_dim=2, batch_size=16, num_epochs=2,
              progress_bar=False)
run_dir = os.path.join(sys.argv[1], "run")
run = training.train_and_evaluate(config, run_dir, dataset)
sweep_record = sweep.train_sweep(config, sweep.parse_sweep("beta=1,2"),
                                 os.path.join(sys.argv[1], "sweep"), dataset)
print("RESULT " + json.dumps({
    "core": core, "run": {"epoch": run["epoch"], "step": run["step"]},
    "sweep": {"epoch": sweep_record["epoch"], "members": len(sweep_record["test_neg_elbo"])},
    "loaded": sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)}))
"""


def run_blocked(code: str, *args: str, blocked=BLOCKED, timeout: int = 240):
    """`code` in a fresh Python after the blocker of `blocked`, in the repository root."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-c", BLOCKER.format(blocked=blocked) + code, *args],
                          capture_output=True, text=True, timeout=timeout, check=False, env=env,
                          cwd=REPO)


def run_script_blocked(script: str, *args: str, blocked=BLOCKED):
    """scripts/`script` with `args`, as ``python scripts/<script> …`` runs it, after the blocker."""
    code = (f"import runpy\nsys.argv = {[f'scripts/{script}', *args]!r}\n"
            f"runpy.run_path('scripts/{script}', run_name='__main__')\n")
    return run_blocked(code, blocked=blocked)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(folder, result, stdout) of TRAIN_WITHOUT_EXTRAS."""
    folder = tmp_path_factory.mktemp("without_extras")
    result = run_blocked(TRAIN_WITHOUT_EXTRAS, str(folder))
    assert result.returncode == 0, result.stderr[-3000:]
    line = [l for l in result.stdout.splitlines() if l.startswith("RESULT ")]
    assert len(line) == 1, result.stdout[-3000:]
    return folder, json.loads(line[0][len("RESULT "):]), result.stdout


def read_lines(path):
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file]


def snapshot(folder):
    """{relative path: (size, mtime_ns)} of everything under `folder`."""
    found = {}
    for parent, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(parent, name)
            stat = os.stat(path)
            found[os.path.relpath(path, folder)] = (stat.st_size, stat.st_mtime_ns)
    return found


# --- The core and the engine without the extras ---------------------------------------------

@pytest.mark.slow
def test_the_core_computes_losses_and_gradients_without_the_extras(trained):
    _, result, _ = trained
    assert result["core"] == {"grad_finite": True, "grad_nonzero": True, "elbo_shape": [16],
                              "elbo_finite_negative": True}
    assert result["loaded"] == []


@pytest.mark.slow
def test_a_run_trains_on_arrays_in_memory_without_the_extras(trained):
    folder, result, _ = trained
    run_dir = folder / "run"
    assert result["run"] == {"epoch": 2, "step": 8}
    assert [r["epoch"] for r in read_lines(run_dir / "metrics.jsonl")] == [1, 2]
    assert (run_dir / "checkpoints" / "8").is_dir()
    assert json.loads((run_dir / "config.json").read_text())["dataset"] == "in_memory"
    pictures = sorted(p.name for p in (run_dir / "images").iterdir())
    assert pictures and all(name.endswith(".png") for name in pictures), pictures


@pytest.mark.slow
def test_a_sweep_without_matplotlib_trains_and_says_once_what_it_skips(trained):
    folder, result, stdout = trained
    sweep_dir = folder / "sweep"
    assert result["sweep"] == {"epoch": 2, "members": 2}
    assert len(read_lines(sweep_dir / "metrics.jsonl")) == 2
    assert (sweep_dir / "checkpoints" / "8").is_dir()
    assert list((sweep_dir / "members" / "01" / "images").glob("*.png"))
    assert not (sweep_dir / "rate_distortion.png").exists()
    notices = [line for line in stdout.splitlines() if line.startswith("notice:")]
    assert notices == ["notice: drawing rate_distortion.png needs matplotlib: pip install -e "
                       "'.[plots]'; the sweep trains and writes everything else without it"]


# --- One line naming the extra ----------------------------------------------------------------

@pytest.mark.slow
def test_what_needs_an_extra_says_which_in_one_line(tmp_path):
    code = textwrap.dedent(f"""\
        import json
        import numpy as np
        from vae_jax.app import data, optional, plots
        messages = {{}}
        for what, call in [
                ("data", lambda: data.load_image_dataset("mnist", {str(tmp_path)!r})),
                ("plots", lambda: plots.save_image_grid({str(tmp_path / "g.png")!r},
                                                        np.zeros((4, 8, 8, 1)), 2))]:
            try:
                call()
            except optional.MissingDependencyError as error:
                assert isinstance(error, ImportError) and error.__cause__ is not None
                messages[what] = [str(error), error.module, error.extra]
        print(json.dumps(messages))
        """)
    result = run_blocked(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) == {
        "data": ["loading the dataset 'mnist' by name needs TensorFlow Datasets: "
                 "pip install -e '.[data]'", "tensorflow_datasets", "data"],
        "plots": ["drawing pictures needs matplotlib: pip install -e '.[plots]'", "matplotlib",
                  "plots"]}
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_train_py_on_a_dataset_by_name_without_tfds_is_one_line(tmp_path):
    result = run_script_blocked("train.py", f"--workdir={tmp_path / 'run'}",
                                "--config.num_epochs=1")
    assert_one_line_error(result, "error: loading the dataset 'mnist' by name needs TensorFlow "
                                  "Datasets: pip install -e '.[data]'")


@pytest.mark.slow
def test_visualize_py_without_matplotlib_is_one_line_and_leaves_the_run_alone(trained):
    run_dir = trained[0] / "run"
    before = snapshot(run_dir)
    result = run_script_blocked("visualize.py", f"--workdir={run_dir}")
    assert_one_line_error(result, "error: drawing the pictures of a run needs matplotlib: "
                                  "pip install -e '.[plots]'")
    assert snapshot(run_dir) == before


def test_the_pip_line_names_this_checkout_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    assert optional.install_command("all") == "pip install -e '.[all]'"
    monkeypatch.chdir(tmp_path)
    assert optional.install_command("data") == f"pip install -e '{REPO}[data]'"


def test_an_extra_that_is_installed_but_broken_says_why(monkeypatch):
    monkeypatch.chdir(REPO)

    def broken(name):
        raise ModuleNotFoundError("No module named 'etils'", name="etils")

    monkeypatch.setattr(optional.importlib, "import_module", broken)
    with pytest.raises(optional.MissingDependencyError) as caught:
        optional.require("tensorflow_datasets", "loading datasets by name")
    assert isinstance(caught.value, VAEJaxError)
    assert str(caught.value) == ("loading datasets by name needs TensorFlow Datasets, which cannot "
                                 "be imported (No module named 'etils'): pip install -e '.[data]'")


# --- TFDS's progress bars ---------------------------------------------------------------------

class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.slow
@pytest.mark.parametrize("stderr,shown", [(io.StringIO, False), (_Terminal, True)])
def test_tfds_progress_bars_show_only_on_a_terminal(monkeypatch, stderr, shown):
    # While preparing, TFDS draws its bars through tqdm_utils.tqdm; piped into a log they would be
    # ~100 lines of escape codes. The training's own bar also shows only on a terminal.
    from vae_jax.app import data  # pylint: disable=import-outside-toplevel

    tfds = data._import_tfds()  # pylint: disable=protected-access
    from tensorflow_datasets.core.utils import tqdm_utils  # pylint: disable=import-outside-toplevel

    monkeypatch.setattr(sys, "stderr", stderr())
    before = tqdm_utils._active  # pylint: disable=protected-access
    with data._quiet_downloads(tfds):  # pylint: disable=protected-access
        bar = tqdm_utils.tqdm(total=3, file=sys.stderr)
        bar.update(1)
        bar.close()
    assert (not isinstance(bar, tqdm_utils.EmptyTqdm)) == (shown and before)
    assert bool(sys.stderr.getvalue()) == (shown and before)
    assert tqdm_utils._active == before  # pylint: disable=protected-access


def _images(n, shape=(8, 8, 1), dtype="uint8"):
    import numpy as np  # pylint: disable=import-outside-toplevel
    return np.zeros((n, *shape), dtype)


@pytest.mark.parametrize("train_images, train_labels, test_images, problem", [
    (_images(4, dtype="float32"), [0] * 4, _images(2), "train_images must be uint8"),
    (_images(0), [], _images(2), "train_images must be uint8"),
    (_images(4)[..., 0], [0] * 4, _images(2), "train_images must be uint8"),
    (_images(4), [0] * 3, _images(2), "train_labels must have shape (4,)"),
    (_images(4), [0] * 4, _images(2, (4, 4, 1)), "test images (4, 4, 1) differ"),
])
def test_training_on_arrays_refuses_what_tfds_would_not_give(train_images, train_labels,
                                                             test_images, problem, tmp_path):
    import numpy as np  # pylint: disable=import-outside-toplevel
    from vae_jax.app import data, training  # pylint: disable=import-outside-toplevel
    from vae_jax.errors import DataError  # pylint: disable=import-outside-toplevel

    dataset = data.ImageDataset("arrays", train_images, np.asarray(train_labels), test_images,
                                np.zeros(len(test_images), int))
    with pytest.raises(DataError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        training.train_and_evaluate(training.configs.get_default(), str(tmp_path / "run"),
                                    dataset)
    assert not (tmp_path / "run" / "checkpoints").exists()
