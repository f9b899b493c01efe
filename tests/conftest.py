"""Shared fixtures: small synthetic data and the location of the real MNIST files."""

import os
import pathlib
import subprocess

import pytest

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


def assert_one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    """A script run that failed with exit status 1 and one last stderr line ``error: …``
    containing `message`, and no traceback."""
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, last
