"""Two processes on one machine, joined with jax.distributed (coordinator on 127.0.0.1), train
data-parallel and agree with a single-process run; their checkpoint resumes in one process."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import vae_jax
from conftest import REPO
from mock_train import mocked_mnist, small_config
from vae_jax.app import distributed, run_folder, sweep as sweep_lib, training

RUN = str(REPO / "tests" / "multiprocess_run.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_processes(tmp_path, pipeline: str, *sweep: str) -> list[tuple[str, str]]:
    """(stdout, stderr) of `multiprocess_run.py` in two processes joined by jax.distributed."""
    coordinator = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "XLA_FLAGS": ""}
    processes = [subprocess.Popen(
        [sys.executable, RUN, coordinator, "2", str(i), str(tmp_path / "two"),
         str(tmp_path / f"d{i}"), pipeline, *sweep],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in processes]
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
    return outputs


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["device", "stream"])
def test_two_processes_train_like_one_and_checkpoint_correctly(tmp_path, pipeline):
    workdir = tmp_path / "two"
    outputs = run_two_processes(tmp_path, pipeline)
    assert "Data-parallel over 2 devices (cpu, 2 processes)" in outputs[0][0]
    two = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    for record in two:
        record.pop("epoch_time_s")
    assert two[0] == two[1]  # every process computed the same replicated results

    with mocked_mnist():
        one = training.train_and_evaluate(
            small_config(num_epochs=2, data_dir=str(tmp_path / "tfds")), str(tmp_path / "one"))
    for key in ("train_loss", "train_neg_elbo", "test_neg_elbo", "test_kl"):
        np.testing.assert_allclose(two[0][key], one[key], rtol=1e-4, err_msg=key)
    # One metrics file, written once, and a checkpoint that a single process resumes.
    lines = (workdir / run_folder.METRICS_FILE).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    with mocked_mnist():
        resumed = training.train_and_evaluate(
            small_config(num_epochs=3, data_dir=str(tmp_path / "tfds")), str(workdir))
    assert resumed["step"] == 12 and np.isfinite(resumed["test_neg_elbo"])


@pytest.mark.slow
def test_a_sweep_splits_its_models_over_two_processes_like_one_process(tmp_path):
    """The sweep runs on the run's engine, so it runs across processes too: one member each."""
    outputs = run_two_processes(tmp_path, "device", "beta=1,2")
    assert "Model-parallel over 2 devices (cpu, 2 processes): 1 model per device" in outputs[0][0]
    two = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    for record in two:
        record.pop("epoch_time_s")
    assert two[0] == two[1]
    with mocked_mnist():
        one = sweep_lib.train_sweep(small_config(num_epochs=2, data_dir=str(tmp_path / "tfds")),
                                    sweep_lib.parse_sweep("beta=1,2"), str(tmp_path / "one"))
    for key in ("train_loss", "test_neg_elbo", "test_kl", "kl_weight"):
        np.testing.assert_allclose(two[0][key], one[key], rtol=1e-4, err_msg=key)
    assert [line["epoch"] for line in run_folder.read_metrics(tmp_path / "two")] == [1, 2]
    restored = sweep_lib.restore_sweep(str(tmp_path / "two"))
    assert restored.step == 8 and restored.sweep.size == 2


@pytest.mark.parametrize("kwargs,message", [
    ({"num_processes": 2}, "--num_processes and --process_id need --coordinator_address"),
    ({"coordinator_address": "127.0.0.1:1234"}, "needs --num_processes and --process_id"),
    ({"coordinator_address": "127.0.0.1:1234", "num_processes": 2, "process_id": 2},
     r"--process_id must be in \[0, 2\), got 2"),
])
def test_incomplete_distributed_flags_are_clear_errors(kwargs, message):
    with pytest.raises(vae_jax.ConfigError, match=message):
        distributed.initialize(**kwargs)


def test_without_flags_initialize_does_nothing():
    distributed.initialize()
    assert distributed.is_main_process()
