"""scripts/benchmark.py runs a preset's training steps and reports its figures as JSON; with
--compare it alternates with the PyTorch peer (fake peers here: torch is no test dependency)."""

import importlib.util
import json
import statistics
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, assert_one_line_error

CONV = "--config=vae_jax/app/configs/mnist_conv.py"
PEER_SCRIPTS = ("peer_torch_vae.py", "peer_torch_conv_vae.py")
PEER_LINE = ('print(f"torch epochs={sys.argv[1]} s/epoch(median after first)={s:.2f} '
             'first={s + 5:.2f} test_neg_elbo=100.50")')


def run_benchmark(*args):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), *args],
                          capture_output=True, text=True, timeout=600, check=False, cwd=REPO)


def fake_peers(folder, body=PEER_LINE):
    """Both peer scripts in `folder`: each appends its name, arguments and start time to
    folder/runs.jsonl, then runs `body` with ``s`` = 30.0 in its 1st, 3rd, … run and 10.0 in the
    others (the median of two runs is 20.0)."""
    folder.mkdir(exist_ok=True)
    for name in PEER_SCRIPTS:
        (folder / name).write_text(textwrap.dedent(f"""\
            import json, os, sys, time
            log = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs.jsonl")
            runs = open(log).read().count("\\n") if os.path.exists(log) else 0
            with open(log, "a") as f:
                f.write(json.dumps({{"script": {name!r}, "argv": sys.argv[1:],
                                    "started": time.time()}}) + "\\n")
            s = 30.0 if runs % 2 == 0 else 10.0
            """) + body + "\n")
    return folder


def peer_runs(folder):
    log = folder / "runs.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.slow
def test_benchmark_reports_speed_compile_time_memory_and_device(tmp_path):
    out = tmp_path / "bench.json"
    result = run_benchmark("--epochs=3", "--num_examples=512", "--config.hidden_dims=(32,)",
                           "--config.batch_size=64", f"--json={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "steady s/epoch" in result.stdout and "examples/s" in result.stdout
    report = json.loads(out.read_text())
    assert len(report["epoch_times_s"]) == 3 and report["steady_s_per_epoch"] > 0
    assert report["steady_s_per_epoch"] == pytest.approx(
        statistics.median(report["epoch_times_s"][1:]), rel=1e-3)
    assert abs(report["examples_per_s"] * report["steady_s_per_epoch"] - 512) < 512 * 0.01
    assert report["platform"] == "cpu" and report["devices"] >= 1
    assert report["peak_memory_mib"] > 0 and report["train_loop"] == "scan"


@pytest.mark.slow
def test_benchmark_of_a_bad_config_is_a_one_line_error():
    result = run_benchmark("--epochs=2", "--config.batch_size=0")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "error: config.batch_size must be a positive integer, got 0")


@pytest.mark.slow
def test_one_epoch_is_refused_it_has_no_steady_time():
    result = run_benchmark("--epochs=1", "--num_examples=256")
    assert_one_line_error(result, "--epochs=1 is too few")
    assert "pass --epochs=2 or more" in result.stderr and result.stdout == ""


@pytest.mark.slow
def test_compare_alternates_peer_and_vae_jax_and_reports_medians_and_ratio(tmp_path):
    peers, out = fake_peers(tmp_path / "bench"), tmp_path / "compare.json"
    result = run_benchmark("--compare", CONV, "--steps=1", "--epochs=2", "--rounds=2",
                           f"--peer_dir={peers}", f"--peer_python={sys.executable}",
                           f"--json={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    runs = peer_runs(peers)
    # The conv peer, twice, for the same epochs and steps as our side.
    assert [(r["script"], r["argv"]) for r in runs] == [
        ("peer_torch_conv_vae.py", ["2", "--steps=1"])] * 2
    ours = [r["result"] for r in report["ours_rounds"]]
    assert all(r["num_examples"] == 128 and r["epochs"] == 2 for r in ours)  # 1 step of 128
    # Alternating, each side in its own process: peer, vae_jax, peer, vae_jax.
    starts = [runs[0]["started"], ours[0]["started_unix_s"], runs[1]["started"],
              ours[1]["started_unix_s"]]
    assert starts == sorted(starts), starts
    # Our side scaled to a full epoch as the peer scales: 468 steps / 1 step timed.
    assert report["steps_per_epoch"] == 1 and report["full_epoch_steps"] == 468
    assert report["scaled_to_full_epoch"] is True
    for round_, result_ in zip(report["ours_rounds"], ours):
        assert round_["s_per_epoch"] == pytest.approx(result_["steady_s_per_epoch"] * 468,
                                                      rel=1e-3)
        assert round_["first_s"] == pytest.approx(result_["first_epoch_s"] * 468, rel=1e-3)
    # Medians of the rounds and their ratio.
    assert [r["s_per_epoch"] for r in report["peer_rounds"]] == [30.0, 10.0]
    assert [r["first_s"] for r in report["peer_rounds"]] == [35.0, 15.0]
    assert report["peer_s_per_epoch"] == 20.0
    ours_median = statistics.median(r["s_per_epoch"] for r in report["ours_rounds"])
    assert report["ours_s_per_epoch"] == pytest.approx(ours_median, rel=1e-3)
    assert report["ratio"] == pytest.approx(20.0 / ours_median, rel=1e-3)
    # The table: every round, the medians, the ratio and the scaling.
    lines = result.stdout.splitlines()
    assert "first 1 of the 468 steps of each epoch" in result.stdout
    header = next(i for i, line in enumerate(lines) if line.startswith("round "))
    assert [line.split()[:3] for line in lines[header + 1:header + 3]] == [
        ["1", "30.00", "35.00"], ["2", "10.00", "15.00"]]
    assert lines[header + 3].split() == ["median", "20.00", f"{report['ours_s_per_epoch']:.2f}"]
    assert f"ratio peer/vae_jax s/epoch: {report['ratio']:.2f} (above 1: vae_jax is faster)" \
        in result.stdout


MISMATCHES = {
    "mlp width": ([], "--config.hidden_dims=(32,)",
                  "config.hidden_dims is (32,), but the PyTorch peer peer_torch_vae.py trains "
                  "(400,), so the ratio would compare different work"),
    "conv channels": ([CONV], "--config.conv_channels=(16, 32)",
                      "config.conv_channels is (16, 32), but the PyTorch peer "
                      "peer_torch_conv_vae.py trains (32, 64)"),
    "batch size": ([CONV], "--config.batch_size=64", "config.batch_size is 64, but"),
    "latent size": ([], "--config.latent_dim=2", "config.latent_dim is 2, but"),
    "likelihood": ([], "--config.likelihood=gaussian",
                   "config.likelihood is gaussian, but the PyTorch peer peer_torch_vae.py trains "
                   "bernoulli"),
    "image shape": ([], "--image_shape=32,32,3", "--image_shape is 32,32,3, but"),
    "steps of an mlp": ([], "--steps=5", "--steps applies to a conv comparison"),
    "steps past an epoch": ([CONV], "--steps=469", "--steps=469: pass a number of steps from 1 "
                                                   "to 468"),
    "num_examples": ([], "--num_examples=512", "drop --num_examples"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_compare_refuses_other_work_than_the_peers_in_one_line(case, tmp_path):
    preset, argument, message = MISMATCHES[case]
    peers = fake_peers(tmp_path / "bench")
    result = run_benchmark("--compare", *preset, argument, f"--peer_dir={peers}",
                           f"--peer_python={sys.executable}")
    assert_one_line_error(result, message)
    assert not peer_runs(peers)  # refused before running anything


FAILING_PEERS = {
    "exits non-zero": (
        'sys.stderr.write("Traceback (most recent call last):\\nFileNotFoundError: [Errno 2] No '
        'such file or directory: \'/x/data/mnist/train-images-idx3-ubyte.gz\'\\n"); sys.exit(1)',
        "the PyTorch peer peer_torch_vae.py failed with exit status 1: FileNotFoundError: [Errno "
        "2] No such file or directory: '/x/data/mnist/train-images-idx3-ubyte.gz'; it reads MNIST "
        "from "),
    "lacks torch": (
        'sys.stderr.write("Traceback (most recent call last):\\nModuleNotFoundError: No module '
        'named \'torch\'\\n"); sys.exit(1)',
        "the PyTorch peer peer_torch_vae.py failed with exit status 1: ModuleNotFoundError: No "
        "module named 'torch'; --peer_python="),
    "prints something else": ('print("epoch 1 done")',
                              "the PyTorch peer peer_torch_vae.py printed 'epoch 1 done', not its "
                              "line '… s/epoch(median after first)=X first=Y test_neg_elbo=Z'"),
    "prints nothing": ("pass", "the PyTorch peer peer_torch_vae.py printed nothing"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(FAILING_PEERS))
def test_a_failing_peer_is_one_line_with_its_last_line(case, tmp_path):
    body, message = FAILING_PEERS[case]
    peers = fake_peers(tmp_path / "bench", body)
    result = run_benchmark("--compare", f"--peer_dir={peers}", f"--peer_python={sys.executable}")
    assert_one_line_error(result, message)
    if case == "exits non-zero":  # where the peer looks for MNIST (beside its folder)
        assert f"from {tmp_path.resolve() / 'data' / 'mnist'} (or $VAE_BENCH_DATA/mnist)" \
            in result.stderr
    if case == "lacks torch":  # how to make a Python that has it
        assert "pip install torch" in result.stderr
    assert len(peer_runs(peers)) == 1  # stopped at the first peer, before our side ran


@pytest.mark.slow
def test_compare_without_the_peer_script_is_one_line(tmp_path):
    result = run_benchmark("--compare", CONV, f"--peer_dir={tmp_path}",
                           f"--peer_python={sys.executable}")
    assert_one_line_error(result, f"the PyTorch peer {tmp_path / 'peer_torch_conv_vae.py'} does "
                                  "not exist; pass --peer_dir=FOLDER holding "
                                  "peer_torch_conv_vae.py")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torch") is not None,
                    reason="this Python has torch: it is the default --peer_python")
def test_compare_without_torch_says_how_to_make_a_peer_python(tmp_path):
    peers = fake_peers(tmp_path / "bench")
    result = run_benchmark("--compare", f"--peer_dir={peers}")
    assert_one_line_error(result, "has no PyTorch to run the peer; make one with `python -m venv "
                                  ".peer && .peer/bin/pip install torch==2.13.0 numpy`, then pass "
                                  "--peer_python=.peer/bin/python")
    assert not peer_runs(peers)


@pytest.mark.slow
def test_compare_flags_without_compare_are_refused():
    assert_one_line_error(run_benchmark("--rounds=3"),
                          "--rounds applies only with --compare: add --compare or drop --rounds")
