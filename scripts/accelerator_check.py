"""One-call accelerator check: ``python scripts/accelerator_check.py [--json=FILE] [--size=...]``.

Runs, one after the other, each in a fresh process (so that one part that fails, hangs or runs
out of memory loses none of the others, and a TPU is held by one process at a time):

  benchmark_mlp_float32   scripts/benchmark.py, the default MLP preset (float32)
  benchmark_mlp_bfloat16  the same with --config.compute_dtype=bfloat16
  benchmark_conv          scripts/benchmark.py, the mnist_conv preset
  sweep                   a vmapped β sweep of N members (64 at full size) against 1 member,
                          `sweep.train_sweep` on images in memory: aggregate training
                          examples/s of each from the steady epochs' `epoch_time_s`
  train_resume            2 epochs with a checkpoint and a resume: ``scripts/train.py`` with
                          ``--config.num_epochs=1``, then the same command with 2, which must
                          resume (metrics.jsonl then holds epochs 1 and 2, epoch 1's line
                          unchanged); on synthetic images `training.train_and_evaluate` on the
                          arrays, in two processes
  iwae                    the importance-weighted NLL (K = 5000 at full size) of the first test
                          images (1,000) under train_resume's model (`evaluation.evaluate`)
  tests                   ``python -m pytest -m "not slow" -q`` from the repository root

and writes one JSON file (``--json``) with every figure, each part's status and wall time, the
device (platform, kind, count, jax and jaxlib versions, host CPUs), the data and the sizes used,
and prints a table. The whole check stops within ``--time_limit_s`` (8 minutes): a part that runs
past it is killed, and parts not started by then are recorded as failed. A part that fails is
recorded with its one-line error and the others go on; the exit status is 1 when any failed.

Sizes (``--size``): ``full`` (the default on a GPU or TPU) makes each figure meaningful on a large
accelerator (benchmarks 60,000 examples × 4 epochs; the sweep 64 members, 60,000 examples × 3
epochs; K = 5000 on 1,000 images); ``small`` (the default on a CPU) takes a few minutes on 2
cores; ``tiny`` is for the tests. The JSON records every size.

Data: MNIST's original files (``--data_dir``, a folder such as ../shared/data/mnist, passed to
TFDS as its ``manual_dir``, as ``--config.manual_dir`` of scripts/train.py; prepared in TFDS's
default folder, where an MNIST prepared before is used as it is), else those files beside the checkout (``../shared/data/mnist``) when TFDS is
installed, else (or with ``--synthetic``) synthetic binary 28×28 images of random strokes in
memory. The benchmarks always time synthetic images (scripts/benchmark.py's own).
"""

import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from absl import flags

from vae_jax.app import cli
from vae_jax.errors import ConfigError, VAEJaxError

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
PRESETS = REPO / "vae_jax" / "app" / "configs"
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
PARTS = ("benchmark_mlp_float32", "benchmark_mlp_bfloat16", "benchmark_conv", "sweep",
         "train_resume", "iwae", "tests")
TIME_LIMIT_S = 480.0
_MIN_PART_S = 5.0  # a part is not started with less time left
SYNTHETIC_SEED = 0

# Every size the check uses. *_examples: training images; *_test: test images (the sweep's
# per-epoch test ELBO is part of its epoch_time_s, so its test split is small).
SIZES: dict[str, dict[str, int]] = {
    "full": {"benchmark_examples": 60000, "benchmark_epochs": 4,
             "conv_examples": 60000, "conv_epochs": 4,
             "sweep_members": 64, "sweep_examples": 60000, "sweep_test": 256, "sweep_epochs": 3,
             "train_examples": 60000, "train_test": 10000,
             "iwae_samples": 5000, "iwae_images": 1000, "iwae_batch_size": 100,
             "iwae_chunk_size": 500},
    "small": {"benchmark_examples": 12800, "benchmark_epochs": 3,
              "conv_examples": 2560, "conv_epochs": 3,
              "sweep_members": 8, "sweep_examples": 6400, "sweep_test": 256, "sweep_epochs": 2,
              "train_examples": 12800, "train_test": 1000,
              "iwae_samples": 1000, "iwae_images": 200, "iwae_batch_size": 100,
              "iwae_chunk_size": 20},
    "tiny": {"benchmark_examples": 1024, "benchmark_epochs": 2,
             "conv_examples": 256, "conv_epochs": 2,
             "sweep_members": 2, "sweep_examples": 512, "sweep_test": 64, "sweep_epochs": 2,
             "train_examples": 512, "train_test": 64,
             "iwae_samples": 16, "iwae_images": 16, "iwae_batch_size": 16,
             "iwae_chunk_size": 8},
}

USAGE = ("python scripts/accelerator_check.py [--json=FILE] [--size=full|small] "
         "[--data_dir=MNIST_FILES | --synthetic] [--tests=false] [--parts=NAME,...]")
_JSON = flags.DEFINE_string("json", "accelerator_check.json", "Where to write the JSON report.")
_SIZE = flags.DEFINE_enum("size", None, list(SIZES),
                          "full (default on GPU/TPU), small (default on CPU), tiny (for tests).")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Folder with MNIST's original files (train-images-idx3-ubyte.gz, ...), "
    "TFDS's manual_dir (default: ../shared/data/mnist beside the checkout, else synthetic).")
_SYNTHETIC = flags.DEFINE_bool("synthetic", False,
                               "Synthetic images even where MNIST's files are found.")
_TESTS = flags.DEFINE_bool("tests", True, "Run the fast test subset (pytest -m 'not slow').")
_PARTS = flags.DEFINE_list("parts", list(PARTS), "The parts to run (iwae evaluates "
                           "train_resume's model).")
_WORKDIR = flags.DEFINE_string("workdir", None, "A new or empty folder for the runs and logs "
                               "(default: a temporary folder, removed when every part passed).")
_TIME_LIMIT = flags.DEFINE_float("time_limit_s", TIME_LIMIT_S, "Wall-time limit of the whole "
                                 "check, in seconds.")


# --- Children: every part runs in processes of its own --------------------------------------

class Child:
    """A finished child process: exit status, output, wall time, whether it was killed."""

    def __init__(self, returncode: int, stdout: str, stderr: str, wall_s: float,
                 timed_out: bool):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr
        self.wall_s, self.timed_out = wall_s, timed_out

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def error(self) -> str:
        """The child's failure in one line: its last ``error: …`` line, else its last line."""
        if self.timed_out:
            return f"timed out after {self.wall_s:.0f} s (the check's time limit)"
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        for line in reversed(lines):
            if line.startswith("error: "):
                return line.removeprefix("error: ")
        lines = lines or [line.strip() for line in self.stdout.splitlines() if line.strip()]
        return lines[-1][:500] if lines else f"exit status {self.returncode}"


class Check:
    """The state of one check: its folder, deadline and log files."""

    def __init__(self, workdir: Path, time_limit_s: float):
        self.workdir = workdir
        self.start = time.perf_counter()
        self.deadline = self.start + time_limit_s
        self.time_limit_s = time_limit_s
        (workdir / "logs").mkdir(parents=True, exist_ok=True)

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    def run(self, argv: list[str], log: str) -> Child:
        """Runs `argv` from the repository root in a session of its own, killed (with its own
        children) when the check's time is up; its output goes to ``workdir/logs/LOG.log``."""
        start = time.perf_counter()
        process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        timed_out = False
        try:
            stdout, stderr = process.communicate(timeout=max(self.remaining(), 1.0))
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
        except BaseException:  # Ctrl-C: the child's session gets no SIGINT of its own
            os.killpg(process.pid, signal.SIGKILL)
            raise
        child = Child(process.returncode, stdout, stderr, time.perf_counter() - start, timed_out)
        with open(self.workdir / "logs" / f"{log}.log", "a", encoding="utf-8") as file:
            file.write(f"$ {' '.join(argv)}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n"
                       f"--- exit status {process.returncode}, {child.wall_s:.1f} s\n")
        return child

    def worker(self, task: dict[str, Any], log: str) -> tuple[Child, dict[str, Any] | None]:
        """Runs `worker` on `task` in a fresh Python process; returns it and its result (None
        when it failed)."""
        out = self.workdir / "logs" / f"{log}.json"
        task = {**task, "out": str(out)}
        bootstrap = ("import sys; sys.path.insert(0, sys.argv[1]); import accelerator_check; "
                     "accelerator_check.worker(sys.argv[2])")
        child = self.run([sys.executable, "-c", bootstrap, str(SCRIPTS), json.dumps(task)], log)
        if not child.ok:
            return child, None
        return child, json.loads(out.read_text(encoding="utf-8"))


class PartFailed(Exception):
    """A part failed; the message is its one-line error."""


def _require_ok(child: Child, what: str) -> None:
    if not child.ok:
        raise PartFailed(f"{what}: {child.error()}")


# --- The parts, run by the parent ------------------------------------------------------------

def _benchmark(check: Check, name: str, preset: str, examples: int, epochs: int,
               overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Part `name`: scripts/benchmark.py of `preset` (a file of vae_jax/app/configs, without
    .py) in a child process; its JSON, and the figures the table shows."""
    out = check.workdir / f"{name}.json"
    arguments = [f"--config=vae_jax/app/configs/{preset}.py", f"--epochs={epochs}",
                 f"--num_examples={examples}", f"--json={out}", *overrides]
    child = check.run([sys.executable, str(SCRIPTS / "benchmark.py"), *arguments], name)
    _require_ok(child, "scripts/benchmark.py")
    result = json.loads(out.read_text(encoding="utf-8"))
    return {"command": ["python", "scripts/benchmark.py", *arguments],
            **{k: result[k] for k in ("steady_s_per_epoch", "examples_per_s", "first_epoch_s",
                                      "compile_s", "peak_memory_mib", "train_loop")},
            "num_examples": examples, "epochs": epochs, "benchmark": result}


def part_benchmark_mlp_float32(check, sizes, data):
    """(a) scripts/benchmark.py of the default MLP preset in float32."""
    return _benchmark(check, "benchmark_mlp_float32", "default", sizes["benchmark_examples"],
                      sizes["benchmark_epochs"])


def part_benchmark_mlp_bfloat16(check, sizes, data):
    """(a) scripts/benchmark.py of the default MLP preset with compute_dtype=bfloat16."""
    return _benchmark(check, "benchmark_mlp_bfloat16", "default", sizes["benchmark_examples"],
                      sizes["benchmark_epochs"], ("--config.compute_dtype=bfloat16",))


def part_benchmark_conv(check, sizes, data):
    """(a) scripts/benchmark.py of the mnist_conv preset."""
    return _benchmark(check, "benchmark_conv", "mnist_conv", sizes["conv_examples"],
                      sizes["conv_epochs"])


def part_sweep(check, sizes, data):
    """(b) An N-member β sweep against a 1-member one: aggregate training examples/s of each
    (N · examples per epoch / the median steady epoch_time_s), `speedup` = their ratio and
    `speedup_per_member` = speedup / N (1 is perfect scaling)."""
    task = {"task": "sweep", "workdir": str(check.workdir / "sweep"),
            "members": sizes["sweep_members"], "epochs": sizes["sweep_epochs"],
            "data": {**data, "train": sizes["sweep_examples"], "test": sizes["sweep_test"]}}
    child, result = check.worker(task, "sweep")
    _require_ok(child, "the sweep")
    one, many = result["single"], result["sweep"]
    speedup = many["aggregate_examples_per_s"] / one["aggregate_examples_per_s"]
    return {"members": sizes["sweep_members"], "num_examples": result["num_examples"],
            "test_examples": result["test_examples"], "epochs": sizes["sweep_epochs"],
            "single_examples_per_s": one["aggregate_examples_per_s"],
            "sweep_aggregate_examples_per_s": many["aggregate_examples_per_s"],
            "speedup": round(speedup, 3),
            "speedup_per_member": round(speedup / sizes["sweep_members"], 4),
            "single": one, "sweep": many, "data_load_s": result["data_load_s"]}


def _metrics_lines(workdir: Path) -> list[str]:
    path = workdir / "metrics.jsonl"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def part_train_resume(check, sizes, data):
    """(d) 1 epoch, then the same command with num_epochs=2, which must resume: metrics.jsonl
    then holds epochs 1 and 2 with epoch 1's line unchanged, the second command said it resumed
    from epoch 1's checkpoint, and checkpoints exist at both epochs. Raises `PartFailed`."""
    workdir = check.workdir / "train_resume"
    commands, children = [], []
    for epochs in (1, 2):
        if data["kind"] == "mnist":
            argv = [sys.executable, str(SCRIPTS / "train.py"), f"--workdir={workdir}",
                    f"--config.num_epochs={epochs}", f"--config.manual_dir={data['manual_dir']}",
                    "--config.progress_bar=false"]
            commands.append(["python", "scripts/train.py", *argv[2:]])
            child = check.run(argv, "train_resume")
        else:
            task = {"task": "train", "workdir": str(workdir), "epochs": epochs,
                    "data": {**data, "train": sizes["train_examples"],
                             "test": sizes["train_test"]}}
            commands.append(f"training.train_and_evaluate(num_epochs={epochs}) on the synthetic "
                            "arrays, in a process of its own")
            child, _ = check.worker(task, "train_resume")
        _require_ok(child, f"the command with num_epochs={epochs}")
        children.append(child)
        lines = _metrics_lines(workdir)
        epochs_found = [json.loads(line)["epoch"] for line in lines]
        if epochs_found != list(range(1, epochs + 1)):
            raise PartFailed(f"after the command with num_epochs={epochs}, metrics.jsonl holds "
                             f"epochs {epochs_found}, not {list(range(1, epochs + 1))}")
        if epochs == 1:
            first_line = lines[0]
    records = [json.loads(line) for line in lines]
    steps = records[0]["step"]
    if lines[0] != first_line:
        raise PartFailed("the second command redid epoch 1 (its metrics line changed)")
    resumed = f"from the checkpoint at step {steps} (epoch 1)"
    if resumed not in children[1].stdout:
        raise PartFailed(f"the second command did not say it resumed {resumed}")
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    if saved[-2:] != [steps, 2 * steps]:
        raise PartFailed(f"checkpoints at steps {saved}, expected {steps} and {2 * steps}")
    return {"how": "scripts/train.py" if data["kind"] == "mnist"
            else "training.train_and_evaluate on the synthetic arrays (train.py loads datasets "
                 "by name)",
            "commands": commands, "resumed": True, "epoch_1_redone": False,
            "epochs_in_metrics": [r["epoch"] for r in records], "checkpoint_steps": saved,
            "steps_per_epoch": steps,
            "first_command_s": round(children[0].wall_s, 2),
            "second_command_s": round(children[1].wall_s, 2),
            "epoch_time_s": [r["epoch_time_s"] for r in records],
            "test_neg_elbo": records[-1]["test_neg_elbo"]}


def part_iwae(check, sizes, data):
    """(c) The K-sample importance-weighted NLL of the first test images under train_resume's
    model (`evaluation.evaluate` with the run's own test keys), and its wall time."""
    workdir = check.workdir / "train_resume"
    if not (workdir / "checkpoints").is_dir():
        raise PartFailed("no model to evaluate: part train_resume trains it, and it did not "
                         "save a checkpoint")
    task = {"task": "iwae", "workdir": str(workdir), "num_samples": sizes["iwae_samples"],
            "num_images": sizes["iwae_images"], "batch_size": sizes["iwae_batch_size"],
            "chunk_size": sizes["iwae_chunk_size"],
            "data": None if data["kind"] == "mnist" else {
                **data, "train": sizes["train_examples"], "test": sizes["train_test"]}}
    child, result = check.worker(task, "iwae")
    _require_ok(child, "the evaluation")
    return result


_PYTEST_COUNTS = re.compile(r"(\d+) (passed|failed|skipped|deselected|xfailed|xpassed|errors?|"
                            r"warnings?)\b")


def part_tests(check, sizes, data):
    """(e) The fast test subset from the repository root: pytest's counts and its time; any
    failure fails the part, naming the first failed tests."""
    argv = [sys.executable, "-m", "pytest", "-m", "not slow", "-q"]
    child = check.run(argv, "tests")
    summary = next((line for line in reversed(child.stdout.splitlines())
                    if _PYTEST_COUNTS.search(line)), "")
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    for number, word in _PYTEST_COUNTS.findall(summary):
        counts[{"error": "errors", "warning": "warnings"}.get(word, word)] = int(number)
    result = {"command": ["python", "-m", "pytest", "-m", "not slow", "-q"], **counts,
              "summary": summary.strip("= ").strip(), "time_s": round(child.wall_s, 2)}
    if not child.ok:
        failed = [line.removeprefix("FAILED ").removeprefix("ERROR ").split(" - ")[0]
                  for line in child.stdout.splitlines()
                  if line.startswith(("FAILED ", "ERROR "))]
        what = (f"{counts['failed']} failed, {counts['errors']} errors: {', '.join(failed[:5])}"
                if failed else child.error())
        raise PartFailed(f"pytest: {what}", result)
    return result


PART_FUNCTIONS: dict[str, Callable] = {name: globals()[f"part_{name}"] for name in PARTS}


# --- Workers: the parts' code that needs JAX, each in a fresh process ------------------------

def synthetic_dataset(num_train: int, num_test: int, seed: int = SYNTHETIC_SEED):
    """A `data.ImageDataset` named "synthetic" of binary 28×28×1 uint8 images (0 or 255): three
    random strokes 2–3 pixels wide each, a fixed function of `seed`, with labels 0."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    from vae_jax.app import data  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:28, 0:28].astype(np.float32)
    pixels = np.stack([rows.ravel(), cols.ravel()], axis=-1)  # (784, 2)

    def images(count: int) -> np.ndarray:
        out = np.empty((count, 28, 28, 1), np.uint8)
        for start in range(0, count, 2048):
            n = min(2048, count - start)
            ends = rng.uniform(4.0, 24.0, (n, 3, 2, 1, 2)).astype(np.float32)
            a, ab = ends[:, :, 0], ends[:, :, 1] - ends[:, :, 0]  # (n, 3, 1, 2)
            t = np.clip(np.sum((pixels - a) * ab, -1) / np.maximum(np.sum(ab * ab, -1), 1e-6),
                        0.0, 1.0)  # (n, 3, 784): the nearest point of each stroke
            distance2 = np.sum((a + t[..., None] * ab - pixels) ** 2, -1)
            on = np.any(distance2 < 1.44, axis=1)
            out[start:start + n, :, :, 0] = on.reshape(n, 28, 28) * np.uint8(255)
        return out

    train, test = images(num_train), images(num_test)
    return data.ImageDataset("synthetic", train, np.zeros(num_train, np.int64), test,
                             np.zeros(num_test, np.int64))


def _dataset(spec: dict[str, Any]):
    """The data a worker trains on: synthetic, or MNIST from its files (the first train/test
    images)."""
    if spec["kind"] == "synthetic":
        return synthetic_dataset(spec["train"], spec["test"])
    from vae_jax.app import data  # pylint: disable=import-outside-toplevel

    full = data.load_image_dataset("mnist", None, spec["manual_dir"])
    train, test = spec.get("train"), spec.get("test")
    return full._replace(train_images=full.train_images[:train],
                         train_labels=full.train_labels[:train],
                         test_images=full.test_images[:test], test_labels=full.test_labels[:test])


def _config(dataset_name: str, epochs: int):
    """The default preset, for `epochs` epochs on the dataset `dataset_name`, without a bar."""
    config = cli.load_config_file(str(PRESETS / "default.py"))
    config.dataset, config.num_epochs, config.progress_bar = dataset_name, epochs, False
    return config


def _work_probe(task):
    import jax  # pylint: disable=import-outside-toplevel
    import jaxlib  # pylint: disable=import-outside-toplevel

    devices = jax.devices()
    cpu_model = None
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            cpu_model = next((line.split(":", 1)[1].strip() for line in file
                              if line.startswith("model name")), None)
    available = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count())
    return {"platform": devices[0].platform, "device_kind": devices[0].device_kind,
            "device_count": len(devices), "process_count": jax.process_count(),
            "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "host_cpu_count": os.cpu_count(), "host_cpus_available": available,
            "host_cpu_model": cpu_model or platform.processor() or platform.machine(),
            "python": sys.version.split()[0]}


def _work_sweep(task):
    import numpy as np  # pylint: disable=import-outside-toplevel

    from vae_jax.app import sweep  # pylint: disable=import-outside-toplevel

    start = time.perf_counter()
    dataset = _dataset(task["data"])
    load_s = time.perf_counter() - start
    config = _config(dataset.name, task["epochs"])
    # One checkpoint, at the end (64 members' params and Adam states are about 1 GB).
    config.save_every_epochs, config.max_to_keep = task["epochs"], 1
    members = task["members"]
    betas = [float(f"{b:.3g}") for b in np.geomspace(0.25, 4.0, members)] if members > 1 else [1.]
    results = {}
    for name, values in (("single", [1.0]), ("sweep", betas)):
        workdir = os.path.join(task["workdir"], name)
        spec = sweep.Sweep(("beta",), tuple((b,) for b in values))
        start = time.perf_counter()
        sweep.train_sweep(config, spec, workdir, dataset)
        wall = time.perf_counter() - start
        with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as file:
            records = [json.loads(line) for line in file]
        times = [r["epoch_time_s"] for r in records]
        steady = statistics.median(times[1:]) if len(times) > 1 else times[0]
        examples = records[0]["step"] * config.batch_size  # per member and epoch
        results[name] = {"members": len(values), "epoch_time_s": times,
                         "steady_epoch_s": steady, "examples_per_epoch": examples,
                         "aggregate_examples_per_s": round(len(values) * examples / steady),
                         "per_member_examples_per_s": round(examples / steady),
                         "wall_s": round(wall, 2)}
    results["sweep"]["betas"] = betas
    return {**results, "num_examples": len(dataset.train_images),
            "test_examples": len(dataset.test_images), "data_load_s": round(load_s, 2)}


def _work_train(task):
    from vae_jax.app import training  # pylint: disable=import-outside-toplevel

    dataset = _dataset(task["data"])
    return training.train_and_evaluate(_config(dataset.name, task["epochs"]), task["workdir"],
                                       dataset)


def _work_iwae(task):
    import jax  # pylint: disable=import-outside-toplevel

    from vae_jax.app import evaluation, runs  # pylint: disable=import-outside-toplevel

    start = time.perf_counter()
    dataset = None if task["data"] is None else _dataset(task["data"])
    run = runs.load_run(task["workdir"], dataset=dataset)
    load_s = time.perf_counter() - start
    key = evaluation.eval_key(run.config)
    images = run.dataset.test_images[:task["num_images"]]
    x = jax.jit(evaluation.test_set, static_argnums=1)(images, run.config.binarize, key)
    batch_size = min(task["batch_size"], len(images))
    report = evaluation.evaluate(run.vae, run.params, x, key, task["num_samples"], batch_size,
                                 task["chunk_size"], progress=False)
    return {"num_samples": task["num_samples"], "num_images": len(images),
            "batch_size": batch_size, "chunk_size": task["chunk_size"],
            "model_step": run.step, "model_epoch": run.epoch, "dataset": run.config.dataset,
            **{k: report[k] for k in ("nll", "nll_standard_error", "neg_elbo", "kl",
                                      "active_units", "time_s")},
            "load_s": round(load_s, 2)}


WORKERS = {"probe": _work_probe, "sweep": _work_sweep, "train": _work_train, "iwae": _work_iwae}


def worker(task_json: str) -> None:
    """Entry point of a child process: runs ``WORKERS[task["task"]](task)`` and writes its result
    as JSON to ``task["out"]``; a failure ends the process with status 1 and a last stderr line
    ``error: …`` (a `VAEJaxError`'s message, or the exception's type and message after its
    traceback)."""
    from absl import logging  # pylint: disable=import-outside-toplevel

    logging.set_verbosity(logging.WARNING)
    task = json.loads(task_json)
    try:
        result = WORKERS[task["task"]](task)
    except VAEJaxError as error:
        sys.exit(f"error: {error}")
    except Exception as error:  # pylint: disable=broad-except
        traceback.print_exc()
        sys.exit(f"error: {type(error).__name__}: {' '.join(str(error).split())}")
    with open(task["out"], "w", encoding="utf-8") as file:
        json.dump(result, file)


# --- The parent ------------------------------------------------------------------------------

def _check_data_dir(path: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"--data_dir={path} is not a folder; pass the folder that holds "
                          f"MNIST's original files ({', '.join(MNIST_FILES)}), or --synthetic")
    missing = [name for name in MNIST_FILES if not (folder / name).is_file()]
    if missing:
        raise ConfigError(f"--data_dir={path} lacks {', '.join(missing)}: pass the folder that "
                          "holds MNIST's original files, or --synthetic")
    if importlib.util.find_spec("tensorflow_datasets") is None:
        from vae_jax.app import optional  # pylint: disable=import-outside-toplevel

        raise ConfigError(f"--data_dir needs TensorFlow Datasets to read MNIST's files: "
                          f"{optional.install_command('data')}, or pass --synthetic")
    return folder.resolve()


def choose_data(data_dir: str | None, synthetic: bool) -> dict[str, Any]:
    """What the check trains on: {"kind": "mnist", "manual_dir": ...} or {"kind": "synthetic"},
    with "source" in words. Raises `ConfigError` for a `data_dir` that is not a folder of
    MNIST's four files, or without TFDS installed."""
    if synthetic and data_dir:
        raise ConfigError("--synthetic and --data_dir exclude each other: pass one")
    if data_dir:
        folder = _check_data_dir(data_dir)
        return {"kind": "mnist", "manual_dir": str(folder), "source": f"--data_dir={folder}"}
    if not synthetic and all((SHARED_MNIST / name).is_file() for name in MNIST_FILES):
        if importlib.util.find_spec("tensorflow_datasets") is not None:
            return {"kind": "mnist", "manual_dir": str(SHARED_MNIST),
                    "source": f"{SHARED_MNIST} (found beside the checkout)"}
    return {"kind": "synthetic", "seed": SYNTHETIC_SEED,
            "source": "synthetic binary 28x28 images of 3 random strokes, in memory"}


def _prepare_workdir(path: str | None) -> tuple[Path, bool]:
    if path is None:
        return Path(tempfile.mkdtemp(prefix="accelerator_check_")), True
    folder = Path(path).resolve()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"--workdir={path} is not a new or empty folder: the check trains "
                          "fresh runs in it; pass another")
    folder.mkdir(parents=True, exist_ok=True)
    return folder, False


def _check_json_path(path: str) -> Path:
    out = Path(path).resolve()
    if out.is_dir():
        raise ConfigError(f"--json={path} is a folder: pass a file name")
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK):
        raise ConfigError(f"--json={path}: the folder {out.parent} does not exist or cannot be "
                          "written; pass another path")
    return out


def _finite(value):
    """`value` with non-finite floats replaced by None (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _figures(name: str, part: dict[str, Any]) -> str:
    """The part's main figures in a few words, for the table."""
    if part["status"] == "skipped":
        return part["reason"]
    if part["status"] == "failed":
        return part["error"]
    if name.startswith("benchmark"):
        return (f"{part['steady_s_per_epoch']:.3g} s/epoch, {part['examples_per_s']:,} ex/s "
                f"({part['num_examples']:,} ex x {part['epochs']} epochs, compile "
                f"{part['compile_s']:.1f} s)")
    if name == "sweep":
        return (f"{part['members']} members {part['sweep_aggregate_examples_per_s']:,} ex/s vs "
                f"1 member {part['single_examples_per_s']:,} ex/s: {part['speedup']:.2f}x "
                f"({part['speedup_per_member']:.2f} per member)")
    if name == "train_resume":
        return (f"1 epoch {part['first_command_s']:.1f} s, resumed to 2 epochs "
                f"{part['second_command_s']:.1f} s; test -ELBO {part['test_neg_elbo']:.2f}")
    if name == "iwae":
        return (f"NLL {part['nll']:.2f} +- {part['nll_standard_error']:.2f} nats (K="
                f"{part['num_samples']}, {part['num_images']} images) in {part['time_s']:.1f} s")
    return f"{part['passed']} passed, {part['failed']} failed, {part['skipped']} skipped"


def format_table(report: dict[str, Any]) -> str:
    """The report of `accelerator_check` as a small text table."""
    device = report["device"]
    lines = [f"device: {device.get('device_count')} x {device.get('device_kind')} "
             f"({device.get('platform')}), jax {device.get('jax')}, "
             f"{device.get('host_cpu_count')} host CPUs; size {report['size']}; data "
             f"{report['data']['kind']}",
             f"{'part':<24}{'status':<9}{'wall s':>8}  figures"]
    for name, part in report["parts"].items():
        wall = f"{part['wall_s']:.1f}" if "wall_s" in part else "-"
        lines.append(f"{name:<24}{part['status']:<9}{wall:>8}  {_figures(name, part)}")
    lines.append(f"total {report['wall_time_s']:.1f} s (limit {report['time_limit_s']:g} s)")
    return "\n".join(lines)


def _run_part(check: Check, name: str, sizes: dict, data: dict) -> dict[str, Any]:
    if check.remaining() < _MIN_PART_S:
        return {"status": "failed", "error": f"not started: the check's {check.time_limit_s:g} "
                                             "s were spent"}
    start = time.perf_counter()
    try:
        figures = PART_FUNCTIONS[name](check, sizes, data)
        part = {"status": "ok", **figures}
    except PartFailed as failure:
        part = {"status": "failed", "error": str(failure.args[0]),
                **(failure.args[1] if len(failure.args) > 1 else {})}
    except (OSError, ValueError, KeyError) as error:  # a child's output that is not as expected
        part = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
    part["wall_s"] = round(time.perf_counter() - start, 2)
    return part


def accelerator_check(json_path: str, size: str | None, data_dir: str | None, synthetic: bool,
                      tests: bool, parts: list[str], workdir: str | None,
                      time_limit_s: float) -> dict[str, Any]:
    """Runs the check (see the module docstring) and writes its JSON report to `json_path`;
    returns the report. Raises `ConfigError` (before anything runs) for an unknown part, a bad
    `data_dir`, `json_path` or `workdir`, or a `time_limit_s` that is not positive."""
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ConfigError(f"--parts: unknown part(s) {', '.join(unknown)}; the parts are "
                          f"{','.join(PARTS)}")
    if not time_limit_s > 0:
        raise ConfigError(f"--time_limit_s must be positive, got {time_limit_s}")
    out = _check_json_path(json_path)
    data = choose_data(data_dir, synthetic)
    folder, temporary = _prepare_workdir(workdir)
    check = Check(folder, time_limit_s)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    print(f"accelerator check: runs and logs in {folder}", flush=True)
    child, device = check.worker({"task": "probe"}, "probe")
    if device is None:
        device = {"error": child.error()}
    size = size or ("small" if device.get("platform") in ("cpu", None) else "full")
    sizes = SIZES[size]
    report = {"check": "scripts/accelerator_check.py", "command": sys.argv, "started": started,
              "device": device, "size": size, "sizes": sizes,
              "data": {k: v for k, v in data.items() if k != "manual_dir"},
              "time_limit_s": time_limit_s, "parts": {}}
    for index, name in enumerate(PARTS, 1):
        if name not in parts:
            part = {"status": "skipped", "reason": "not in --parts"}
        elif name == "tests" and not tests:
            part = {"status": "skipped", "reason": "--tests=false"}
        elif "error" in device:
            part = {"status": "failed", "error": f"JAX did not start: {device['error']}"}
        else:
            print(f"[{index}/{len(PARTS)}] {name} ...", flush=True)
            part = _run_part(check, name, sizes, data)
        report["parts"][name] = part
        if part["status"] != "skipped":
            print(f"[{index}/{len(PARTS)}] {name}: {part['status']} "
                  f"({part.get('wall_s', 0):.1f} s) {_figures(name, part)}", flush=True)
    report["failed"] = [n for n, p in report["parts"].items() if p["status"] == "failed"]
    report["ok"] = not report["failed"]
    report["wall_time_s"] = round(time.perf_counter() - check.start, 2)
    if report["ok"] and temporary:
        shutil.rmtree(folder, ignore_errors=True)
        report["workdir"] = None
    else:
        report["workdir"] = str(folder)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(_finite(report), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return report


def main():
    """The script: the check of the flags' values, its table, exit status 1 if a part failed."""
    report = accelerator_check(_JSON.value, _SIZE.value, _DATA_DIR.value, _SYNTHETIC.value,
                               _TESTS.value, _PARTS.value, _WORKDIR.value, _TIME_LIMIT.value)
    print(format_table(report), flush=True)
    print(f"wrote {Path(_JSON.value).resolve()}", flush=True)
    if not report["ok"]:
        sys.exit(f"error: {len(report['failed'])} part(s) failed: "
                 f"{', '.join(report['failed'])}; their errors are in {_JSON.value} and the "
                 f"logs in {report['workdir']}/logs")


if __name__ == "__main__":
    cli.run(main, USAGE, manual_dir_flag="--data_dir")
