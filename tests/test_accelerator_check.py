"""scripts/accelerator_check.py: every part measured on the CPU at the tiny size, one JSON file;
bad input refused before anything runs; a part that fails is recorded and the others go on."""

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

from conftest import REPO, assert_one_line_error

PARTS = ("benchmark_mlp_float32", "benchmark_mlp_bfloat16", "benchmark_conv", "sweep",
         "train_resume", "iwae", "tests")
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def run_check(*args, env=None):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "accelerator_check.py"), *args],
                          capture_output=True, text=True, timeout=900, check=False, cwd=REPO,
                          env=env)


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_tiny_check_on_the_cpu_measures_every_part_into_one_json(tmp_path):
    out = tmp_path / "check.json"
    result = run_check("--size=tiny", "--tests=false", "--synthetic", f"--json={out}",
                       f"--workdir={tmp_path / 'work'}")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["ok"] and report["failed"] == []
    assert tuple(report["parts"]) == PARTS
    for name in PARTS:
        assert name in result.stdout  # the table
    device = report["device"]
    assert device["platform"] == "cpu" and device["device_count"] >= 1
    assert device["jax"] and device["jaxlib"] and device["host_cpu_count"] >= 1
    assert report["size"] == "tiny" and report["data"]["kind"] == "synthetic"
    sizes = report["sizes"]
    assert sizes["sweep_members"] == 2 and sizes["iwae_samples"] == 16
    assert positive(report["wall_time_s"]) and report["wall_time_s"] < report["time_limit_s"]

    parts = report["parts"]
    assert parts["tests"] == {"status": "skipped", "reason": "--tests=false"}
    for name in PARTS[:-1]:
        assert parts[name]["status"] == "ok" and positive(parts[name]["wall_s"]), name
    for name in PARTS[:3]:
        bench = parts[name]
        assert positive(bench["steady_s_per_epoch"]) and positive(bench["examples_per_s"])
        assert positive(bench["compile_s"] + bench["steady_s_per_epoch"])
        assert bench["benchmark"]["platform"] == "cpu" and bench["epochs"] == 2
    assert parts["benchmark_mlp_float32"]["benchmark"]["config"]["compute_dtype"] == "float32"
    assert parts["benchmark_mlp_bfloat16"]["benchmark"]["config"]["compute_dtype"] == "bfloat16"
    assert parts["benchmark_conv"]["benchmark"]["config"]["architecture"] == "conv"
    assert parts["benchmark_mlp_float32"]["num_examples"] == sizes["benchmark_examples"]

    sweep = parts["sweep"]
    assert sweep["members"] == 2 and sweep["sweep"]["members"] == 2
    assert sweep["single"]["members"] == 1
    for figure in ("single_examples_per_s", "sweep_aggregate_examples_per_s", "speedup"):
        assert positive(sweep[figure]), figure
    assert sweep["speedup"] == pytest.approx(
        sweep["sweep_aggregate_examples_per_s"] / sweep["single_examples_per_s"], rel=1e-2)
    assert sweep["speedup_per_member"] == pytest.approx(sweep["speedup"] / 2, rel=1e-2)
    assert len(sweep["sweep"]["epoch_time_s"]) == sizes["sweep_epochs"]

    resume = parts["train_resume"]
    assert resume["resumed"] is True and resume["epoch_1_redone"] is False
    assert resume["epochs_in_metrics"] == [1, 2]
    steps = resume["steps_per_epoch"]
    assert steps == sizes["train_examples"] // 128 and resume["checkpoint_steps"] == [steps,
                                                                                       2 * steps]
    assert positive(resume["first_command_s"]) and positive(resume["second_command_s"])
    assert positive(resume["test_neg_elbo"])

    iwae = parts["iwae"]
    assert iwae["num_samples"] == 16 and iwae["num_images"] == 16
    assert iwae["model_epoch"] == 2 and positive(iwae["time_s"])
    # 784 pixels: a model that knows nothing pays 784·ln 2 ≈ 543 nats; the strokes cost less.
    assert 0 < iwae["nll"] < 784 * math.log(2) + 50 and positive(iwae["nll_standard_error"])


@pytest.mark.slow
@pytest.mark.parametrize("files", [(), MNIST_FILES[:1], None])
def test_a_bad_data_dir_is_one_line_before_anything_runs(tmp_path, files):
    data_dir = tmp_path / "mnist"
    if files is not None:
        data_dir.mkdir()
        for name in files:
            (data_dir / name).write_bytes(b"x")
    out, work = tmp_path / "check.json", tmp_path / "work"
    result = run_check(f"--data_dir={data_dir}", f"--json={out}", f"--workdir={work}")
    if files is None:
        assert_one_line_error(result, f"--data_dir={data_dir} is not a folder")
    else:
        missing = ", ".join(name for name in MNIST_FILES if name not in files)
        assert_one_line_error(result, f"--data_dir={data_dir} lacks {missing}")
    assert not out.exists() and not work.exists() and result.stdout == ""


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tensorflow_datasets") is None,
                    reason="MNIST's files are read through TFDS (the data extra)")
def test_a_part_that_fails_is_recorded_and_the_next_part_still_runs(tmp_path):
    # MNIST's four file names holding other bytes: only TFDS's check of their sizes, when a
    # part loads them, can tell (an empty TFDS folder, so that it prepares from them).
    data_dir = tmp_path / "mnist"
    data_dir.mkdir()
    content = b"not mnist"
    for name in MNIST_FILES:
        (data_dir / name).write_bytes(content)
    out, work = tmp_path / "check.json", tmp_path / "work"
    env = dict(os.environ, TFDS_DATA_DIR=str(tmp_path / "tfds"))
    result = run_check("--size=tiny", f"--data_dir={data_dir}", "--parts=sweep,train_resume",
                       f"--json={out}", f"--workdir={work}", env=env)
    assert_one_line_error(result, "2 part(s) failed: sweep, train_resume")
    report = json.loads(out.read_text())
    assert report["ok"] is False and report["failed"] == ["sweep", "train_resume"]
    assert report["data"]["kind"] == "mnist" and report["device"]["platform"] == "cpu"
    parts = report["parts"]
    for name in ("sweep", "train_resume"):
        error = parts[name]["error"]
        assert parts[name]["status"] == "failed" and "\n" not in error
        assert f"ubyte.gz has {len(content)} bytes, expected the original" in error, error
    # train_resume ran after the sweep had failed: scripts/train.py said so itself.
    assert parts["train_resume"]["error"].startswith("the command with num_epochs=1: manual_dir")
    assert "scripts/train.py" in (work / "logs" / "train_resume.log").read_text()
    for name in set(PARTS) - {"sweep", "train_resume"}:
        assert parts[name] == {"status": "skipped", "reason": "not in --parts"}
    assert report["workdir"] == str(work)  # kept, with the logs, when a part failed
