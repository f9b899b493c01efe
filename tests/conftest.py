"""Shared fixtures: small synthetic data and the location of the real MNIST files."""

import os
import pathlib

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
