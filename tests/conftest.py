"""Shared fixtures: small synthetic data and the location of the real MNIST files; the
hypothesis settings profiles.

Hypothesis profiles, loaded here before any test module is imported (so every ``@settings``
inherits from the profile):

- ``ci`` (loaded whenever the environment variable CI is set): derandomized — the examples are a
  fixed function of each test — with no example database, so a CI run cannot fail by chance or
  because of a failure saved by an earlier run; no deadline (JAX compiles on first call); a failure
  prints the blob that reproduces it (``@reproduce_failure``); no timing-based health check.
- ``dev`` (otherwise; or name one with HYPOTHESIS_PROFILE): random examples that explore more
  inputs from run to run, the local database that replays past failures first, no deadline.

Statistical tests (a 5-standard-error tolerance fails by chance about once in 10⁶ draws per
check) pass ``derandomize=True`` themselves, so they are deterministic in every profile.
"""

import os
import pathlib
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, settings

# Both from hypothesis's own defaults (it loads a built-in "ci" profile by itself when it detects
# CI, which must not leak into "dev"). The too_slow health check is timing-based: off in both.
_DEFAULTS = settings.get_profile("default")
settings.register_profile("ci", _DEFAULTS, derandomize=True, database=None, deadline=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", _DEFAULTS, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("VAE_JAX_SHARED_DATA", REPO.parent / "shared" / "data"))


def real_data_dir(name: str) -> pathlib.Path:
    """The folder of original files for `name`; fails under CI (CI set) when missing, else skips."""
    folder = SHARED_DATA / name
    if not (folder / "train-images-idx3-ubyte.gz").exists():
        message = f"real data for {name!r} not found in {folder}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set: real-data tests must run)")
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session", name="docs_build")
def fixture_docs_build(tmp_path_factory) -> pathlib.Path:
    """The documentation site, built once per session as CI builds it (warnings are errors).

    The one execution of the notebooks: MyST-NB runs each in quick mode (VAE_JAX_QUICK=1) on the
    real MNIST files, and writes it executed to ``BUILD/jupyter_execute/notebooks/NAME.ipynb``;
    tests/test_notebooks.py checks those, tests/test_docs.py the pages in ``BUILD/html``. Fails
    with the build's warnings when it fails; skips (fails under CI) without the MNIST files.
    """
    manual_dir = real_data_dir("mnist")
    build = tmp_path_factory.mktemp("docs_build")
    env = dict(os.environ, VAE_JAX_QUICK="1", VAE_JAX_MANUAL_DIR=str(manual_dir),
               VAE_JAX_DATA_DIR=str(build / "tfds"), VAE_JAX_DOCS_EXECUTE="force")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", str(REPO / "docs"),
         str(build / "html")], cwd=REPO, env=env, capture_output=True, text=True, timeout=3600,
        check=False)
    (build / "sphinx.log").write_text(result.stdout + result.stderr, encoding="utf-8")
    if result.returncode != 0:
        warnings = [line for line in result.stderr.splitlines()
                    if "WARNING" in line or "ERROR" in line or "rror" in line]
        pytest.fail(f"the docs build failed (exit {result.returncode}), warnings are errors:\n"
                    + "\n".join(warnings[:50]) + "\n--- end of its output:\n"
                    + result.stderr[-4000:])
    return build


def assert_one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    """A script run that failed with exit status 1 and one last stderr line ``error: …``
    containing `message`, and no traceback."""
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, last
