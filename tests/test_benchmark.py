"""scripts/benchmark.py runs a preset's training steps and reports its figures as JSON."""

import json
import subprocess
import sys

import pytest

from conftest import REPO


def run_benchmark(*args):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), *args],
                          capture_output=True, text=True, timeout=600, check=False, cwd=REPO)


@pytest.mark.slow
def test_benchmark_reports_speed_compile_time_memory_and_device(tmp_path):
    out = tmp_path / "bench.json"
    result = run_benchmark("--epochs=3", "--num_examples=512", "--config.hidden_dims=(32,)",
                           "--config.batch_size=64", f"--json={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "steady s/epoch" in result.stdout and "examples/s" in result.stdout
    report = json.loads(out.read_text())
    assert len(report["epoch_times_s"]) == 3 and report["steady_s_per_epoch"] > 0
    assert abs(report["examples_per_s"] * report["steady_s_per_epoch"] - 512) < 512 * 0.01
    assert report["platform"] == "cpu" and report["devices"] >= 1
    assert report["peak_memory_mib"] > 0 and report["train_loop"] == "scan"


@pytest.mark.slow
def test_benchmark_of_a_bad_config_is_a_one_line_error():
    result = run_benchmark("--epochs=2", "--config.batch_size=0")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "error: config.batch_size must be a positive integer, got 0")
