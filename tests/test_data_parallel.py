"""Data-parallel training on a `jax.sharding` mesh of 4 virtual CPU devices gives the curve of
one device."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import vae_jax
from conftest import REPO
from mock_train import small_config
from vae_jax.app import distributed


@pytest.mark.slow
def test_four_devices_give_the_loss_curve_of_one_streamed_or_not(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "data_parallel_run.py"), str(tmp_path), "1", "4",
         "4:stream"],
        capture_output=True, text=True, check=False, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO / "tests")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Data-parallel over 4 devices (cpu): 4 examples per device" in result.stdout
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    one, four, four_streamed = runs["1"], runs["4"], runs["4:stream"]
    assert [m["step"] for m in four] == [4, 8, 12]
    assert "Streaming the training set" in result.stdout
    for a, b in zip(one, four):
        for key in ("train_loss", "train_neg_elbo", "test_neg_elbo", "test_kl"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-4, err_msg=key)
    for a, b in zip(four, four_streamed):
        a, b = ({k: v for k, v in m.items() if k != "epoch_time_s"} for m in (a, b))
        assert a == b


def test_mesh_of_more_devices_than_exist_is_a_clear_error():
    with pytest.raises(vae_jax.ConfigError, match="config.num_devices=999 but JAX sees only"):
        distributed.make_mesh(999)


def test_negative_device_count_is_named():
    with pytest.raises(vae_jax.ConfigError, match="config.num_devices must be a non-negative"):
        vae_jax.app.configs.validate(small_config(num_devices=-1))
