"""Training speed of a preset: ``python scripts/benchmark.py [--config=PRESET] [--epochs=N]``.

Trains the preset's model with its optimizer, KL schedule, train loop, device mesh and input
pipeline (``--config.input_pipeline=stream`` times streaming from host memory) — exactly the
jitted steps `scripts/train.py` runs — on synthetic uint8 images of the dataset's shape
(60,000 by default, as MNIST's training split; the cost of a step does not depend on the pixels),
and reports:

  steady_s_per_epoch   median wall time of the epochs after the first
  examples_per_s       training examples per second at that pace
  first_epoch_s        the first epoch, compilation included
  compile_s            first_epoch_s − steady_s_per_epoch: tracing and compiling
  peak_memory_mib      peak resident memory of the process (CPU) or peak device memory (GPU/TPU)

as a table and as JSON (``--json=PATH``), with the device it ran on. Per-epoch evaluation,
pictures and checkpoints are not timed (train.py adds them); nor is data loading. At least 2
epochs: the steady time is measured after the first.

``--compare`` runs the matching eager-PyTorch peer of ``../shared/bench`` (an MLP preset:
peer_torch_vae.py; a conv preset: peer_torch_conv_vae.py) and this benchmark alternately, each in
a fresh process (peer, vae_jax, peer, vae_jax, … for ``--rounds`` rounds), and prints every
round, the medians and the ratio peer s/epoch ÷ vae_jax s/epoch (above 1: vae_jax is faster):

    python scripts/benchmark.py --compare --peer_python=/path/to/python-with-torch
    python scripts/benchmark.py --compare --config=vae_jax/app/configs/mnist_conv.py --steps=60

The config must be the peer's network (a different width, latent size, batch size, likelihood, …
is refused). A conv comparison times the first ``--steps`` steps of each epoch on both sides and
scales them to a full epoch of MNIST (468 steps of 128), as the conv peer does.
"""

import dataclasses
import importlib.util
import json
import os
import pathlib
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import flags

from vae_jax.app import cli
from vae_jax.errors import VAEJaxError

USAGE = ("python scripts/benchmark.py [--config=PRESET.py] [--config.FIELD=value ...] "
         "[--epochs=N] [--json=FILE] [--compare [--rounds=N] [--steps=N] [--peer_python=PYTHON] "
         "[--peer_dir=FOLDER]]")
_CONFIG = cli.define_config_flag(USAGE)
_EPOCHS = flags.DEFINE_integer(
    "epochs", None, "Epochs to time, at least 2: the first includes compilation, the steady time "
    "is the median of the others (default 4; 3 with --compare).")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 60000, "Synthetic training examples.")
_IMAGE_SHAPE = flags.DEFINE_list("image_shape", ["28", "28", "1"], "H,W,C of the images.")
_JSON = flags.DEFINE_string("json", None, "Also write the result as JSON to this file.")
_COMPARE = flags.DEFINE_boolean(
    "compare", False, "Run the matching eager-PyTorch peer and this benchmark alternately, each in "
    "a fresh process, and report both and the ratio peer s/epoch / vae_jax s/epoch.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "--compare: rounds of (peer, vae_jax).")
_STEPS = flags.DEFINE_integer(
    "steps", None, "--compare with a conv preset: time the first N steps of each epoch on both "
    "sides and scale to a full epoch (default 60).")
_PEER_PYTHON = flags.DEFINE_string(
    "peer_python", None, "--compare: the Python with PyTorch that runs the peer (default: this "
    "one, if it has torch).")
_PEER_DIR = flags.DEFINE_string(
    "peer_dir", None, "--compare: the folder of the peer scripts (default: ../shared/bench "
    "beside the checkout).")

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_PEER_DIR = REPO.parent / "shared" / "bench"
MNIST_TRAIN_EXAMPLES = 60000  # the peers train on MNIST's training split
DEFAULT_EPOCHS, DEFAULT_COMPARE_EPOCHS = 4, 3
DEFAULT_CONV_STEPS = 60
MAKE_PEER_PYTHON = ("make one with `python -m venv .peer && .peer/bin/pip install torch==2.13.0 "
                    "numpy`, then pass --peer_python=.peer/bin/python")
# What a peer prints last: "… s/epoch(median after first)=X first=Y test_neg_elbo=Z".
PEER_LINE = re.compile(r"s/epoch\(median after first\)=(\S+) first=(\S+) test_neg_elbo=(\S+)\s*$")
PEER_LINE_SHAPE = "… s/epoch(median after first)=X first=Y test_neg_elbo=Z"


@dataclasses.dataclass(frozen=True)
class Peer:
    """An eager-PyTorch peer script of ``../shared/bench`` and the network it trains, as the
    config fields that change the work of a step (the values vae_jax's config must have)."""
    script: str
    network: dict
    takes_steps: bool  # accepts --steps=N (times the first N steps of each epoch, scaled)


_COMMON = {"model": "vae", "latent_dim": 20, "batch_size": 128, "likelihood": "bernoulli",
           "objective": "elbo", "binarize": True}
PEERS = {
    "mlp": Peer("peer_torch_vae.py", {**_COMMON, "hidden_dims": (400,)}, takes_steps=False),
    "conv": Peer("peer_torch_conv_vae.py",
                 {**_COMMON, "conv_channels": (32, 64), "hidden_dims": (256,)}, takes_steps=True),
}
PEER_IMAGE_SHAPE = (28, 28, 1)


def peak_memory_mib(device) -> float | None:
    """Peak device memory in MiB where the backend reports it (GPU, TPU); else the process's peak
    resident set size (VmHWM), which on CPU is where the arrays live."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _significant(seconds: float) -> float:
    """`seconds` to 4 significant digits (a tiny test epoch keeps its precision)."""
    return float(f"{seconds:.4g}")


def check_epochs(epochs: int) -> None:
    """Raises ValueError unless `epochs` ≥ 2: the steady time is the median of the epochs after
    the first, which includes compilation."""
    if epochs < 2:
        raise ValueError(f"--epochs={epochs} is too few: the first epoch includes compilation and "
                         "the steady time is the median of the epochs after it; pass --epochs=2 "
                         "or more")


def benchmark(config, epochs: int, num_examples: int, image_shape: tuple[int, ...]) -> dict:
    """Times `epochs` epochs of the jitted training steps of `config` on `num_examples` synthetic
    images of shape `image_shape` (H, W, C); returns the figures (seconds, examples per second,
    MiB) and the device as a JSON-ready dict. Raises ValueError when `epochs` < 2 and
    `ConfigError` for a bad config."""
    # pylint: disable=import-outside-toplevel
    import jax
    import numpy as np

    from vae_jax.app import builders, configs, distributed, input_pipeline, training

    check_epochs(epochs)
    started = time.time()
    configs.validate(config)
    steps_per_epoch = num_examples // config.batch_size
    mesh = distributed.make_mesh(config.num_devices)
    replicated, batch_sharded = distributed.data_parallel_shardings(mesh)
    state = distributed.to_global(training.initial_state(config, image_shape, steps_per_epoch),
                                  replicated)
    images = np.random.default_rng(0).integers(0, 256, (num_examples, *image_shape), np.uint8)
    pipeline = input_pipeline.resolve(config.input_pipeline, images.nbytes, mesh.devices.flat)
    chunks = input_pipeline.num_chunks(
        steps_per_epoch, config.batch_size * images[0].nbytes,
        config.stream_chunk_mib * 2**20 if pipeline == "stream" else None)
    if pipeline == "device":
        images = distributed.to_global(images, replicated)
    loop = builders.resolve_train_loop(config)
    train_steps = training.make_train_steps(config, image_shape, steps_per_epoch, loop)
    shuffle = builders.run_keys(config).shuffle

    times = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        indices = np.asarray(training.epoch_batch_indices(shuffle, epoch, num_examples,
                                                          config.batch_size))
        for chunk_images, chunk_indices in input_pipeline.epoch_chunks(
                pipeline, images, indices.reshape(chunks, -1, config.batch_size), replicated,
                batch_sharded):
            state, metrics, _ = train_steps(state, {}, chunk_images, chunk_indices)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - start)
    steady = statistics.median(times[1:])
    device = mesh.devices.flat[0]
    return {
        "config": {k: config[k] for k in ("architecture", "hidden_dims", "conv_channels",
                                          "latent_dim", "likelihood", "objective", "batch_size",
                                          "prng_impl", "compute_dtype")},
        "train_loop": loop, "input_pipeline": pipeline, "chunks_per_epoch": chunks,
        "num_examples": num_examples, "image_shape": list(image_shape),
        "epochs": epochs, "epoch_times_s": [_significant(t) for t in times],
        "steady_s_per_epoch": _significant(steady),
        "examples_per_s": round(steps_per_epoch * config.batch_size / steady),
        "first_epoch_s": _significant(times[0]),
        "compile_s": _significant(times[0] - steady),
        "peak_memory_mib": peak_memory_mib(device),
        "devices": mesh.size, "platform": device.platform, "device_kind": device.device_kind,
        "host": platform.processor() or platform.machine(), "jax": jax.__version__,
        "started_unix_s": round(started, 3),
    }


def format_table(result: dict) -> str:
    rows = [("device", f"{result['devices']} × {result['device_kind']} ({result['platform']})"),
            ("train loop", result["train_loop"]),
            ("input pipeline", f"{result['input_pipeline']} ({result['chunks_per_epoch']} "
                               "calls per epoch)"),
            ("steady s/epoch", f"{result['steady_s_per_epoch']:.2f}"),
            ("examples/s", f"{result['examples_per_s']:,}"),
            ("first epoch s", f"{result['first_epoch_s']:.2f}"),
            ("compile s", f"{result['compile_s']:.2f}"),
            ("peak memory MiB", "-" if result["peak_memory_mib"] is None
             else f"{result['peak_memory_mib']:.0f}")]
    return "\n".join(f"{name:<18}{value}" for name, value in rows)


# --compare: the peer and this benchmark, alternately, each in a fresh process.

def _shown(value) -> str:
    """`value` as it is written in ``--config.FIELD=value``: (400,), (32, 64), bernoulli, 20."""
    return str(tuple(value)) if isinstance(value, (tuple, list)) else str(value)


def matching_peer(config, image_shape: tuple[int, ...]) -> Peer:
    """The peer that trains the same network as `config` on images of `image_shape` (H, W, C).

    Raises ValueError naming the first field whose value differs from the peer's (the ratio
    would compare different work), or the image shape when it is not MNIST's."""
    peer = PEERS.get(config.architecture)
    if peer is None:
        raise ValueError(f"--compare: no PyTorch peer trains config.architecture="
                         f"{config.architecture}; the peers are {', '.join(sorted(PEERS))}")
    for field, theirs in peer.network.items():
        ours = tuple(config[field]) if isinstance(theirs, tuple) else config[field]
        if ours != theirs:
            raise ValueError(
                f"--compare: config.{field} is {_shown(ours)}, but the PyTorch peer "
                f"{peer.script} trains {_shown(theirs)}, so the ratio would compare different "
                f"work; set --config.{field}={_shown(theirs)} or drop --compare")
    if tuple(image_shape) != PEER_IMAGE_SHAPE:
        raise ValueError(f"--compare: --image_shape is {','.join(map(str, image_shape))}, but the "
                         f"PyTorch peer {peer.script} trains on MNIST's 28,28,1; drop "
                         "--image_shape")
    return peer


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _failure(process: subprocess.CompletedProcess) -> str:
    """How `process` ended, with the last line it wrote (stderr first)."""
    status = (f"killed by signal {-process.returncode}" if process.returncode < 0
              else f"exit status {process.returncode}")
    last = _last_line(process.stderr) or _last_line(process.stdout) or "no output"
    return f"{status}: {last.removeprefix('error: ')}"


def parse_peer_line(script: str, stdout: str) -> dict:
    """The figures of a peer's last output line ``… s/epoch(median after first)=X first=Y
    test_neg_elbo=Z`` as {"s_per_epoch": X, "first_s": Y, "test_neg_elbo": Z, "line": …}
    (seconds; nats per example). Raises ValueError when the last line is not of that form."""
    line = _last_line(stdout)
    match = PEER_LINE.search(line)
    try:
        figures = [float(x) for x in match.groups()] if match else None
    except ValueError:
        figures = None
    if figures is None:
        printed = f"printed {line[:200]!r}" if line else "printed nothing"
        raise ValueError(f"the PyTorch peer {script} {printed}, not its line "
                         f"'{PEER_LINE_SHAPE}'; is --peer_dir the project's ../shared/bench?")
    return {"s_per_epoch": figures[0], "first_s": figures[1], "test_neg_elbo": figures[2],
            "line": line}


def _peer_python() -> str:
    """--peer_python, or this interpreter when it has torch; raises ValueError otherwise."""
    if _PEER_PYTHON.value:
        if shutil.which(_PEER_PYTHON.value) is None:
            raise ValueError(f"--compare: --peer_python={_PEER_PYTHON.value} is not a program "
                             f"that can run; pass the path of a Python with PyTorch, or "
                             f"{MAKE_PEER_PYTHON}")
        return _PEER_PYTHON.value
    if importlib.util.find_spec("torch") is None:
        raise ValueError(f"--compare: this Python ({sys.executable}) has no PyTorch to run the "
                         f"peer; {MAKE_PEER_PYTHON}")
    return sys.executable


def _peer_script(peer: Peer) -> pathlib.Path:
    folder = pathlib.Path(_PEER_DIR.value) if _PEER_DIR.value else DEFAULT_PEER_DIR
    script = folder / peer.script
    if not script.is_file():
        raise ValueError(f"--compare: the PyTorch peer {script} does not exist; pass "
                         f"--peer_dir=FOLDER holding {peer.script} (the project keeps it in "
                         "../shared/bench beside the checkout)")
    return script


def run_peer(python: str, script: pathlib.Path, epochs: int, steps: int | None) -> dict:
    """Runs the peer `script` with `python` for `epochs` epochs (the first `steps` steps of each,
    when given) and returns `parse_peer_line`'s figures. Raises ValueError when it cannot start,
    fails or prints something else."""
    command = [python, str(script), str(epochs), *([f"--steps={steps}"] if steps else [])]
    try:
        process = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as error:
        raise ValueError(f"--compare: cannot run --peer_python={python}: "
                         f"{error.strerror or error}; pass a Python with PyTorch, or "
                         f"{MAKE_PEER_PYTHON}") from None
    if process.returncode != 0:
        hint = ""
        last = _last_line(process.stderr)
        if "FileNotFoundError" in last:
            hint = (f"; it reads MNIST from {script.resolve().parent.parent / 'data' / 'mnist'} "
                    "(or $VAE_BENCH_DATA/mnist)")
        elif "ModuleNotFoundError" in last:
            hint = f"; --peer_python={python} lacks a package the peer imports: {MAKE_PEER_PYTHON}"
        raise ValueError(f"the PyTorch peer {script.name} failed with {_failure(process)}{hint}")
    return parse_peer_line(script.name, process.stdout)


# This script's flags that --compare passes to its own runs differently, or not at all.
_NOT_PASSED = {"compare", "rounds", "steps", "peer_python", "peer_dir", "epochs", "num_examples",
               "json"}


def _our_command(argv: list[str], epochs: int, num_examples: int, json_path: str) -> list[str]:
    """This script's command line for one vae_jax side of --compare: `argv`'s config and image
    flags, and the given epochs, examples and JSON file."""
    kept, skip = [], False
    for argument in argv[1:]:
        if skip:
            skip = False
            continue
        match = re.fullmatch(r"--?(no)?(\w+)(=.*)?", argument)
        if match and match[2] in _NOT_PASSED:
            skip = match[3] is None and match[1] is None and match[2] != "compare"
            continue
        kept.append(argument)
    return [sys.executable, str(pathlib.Path(__file__).resolve()), *kept, f"--epochs={epochs}",
            f"--num_examples={num_examples}", f"--json={json_path}"]


def run_ours(argv: list[str], epochs: int, num_examples: int) -> dict:
    """Runs this benchmark (without --compare) in a fresh process and returns its JSON result;
    raises ValueError when it fails."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "ours.json")
        process = subprocess.run(_our_command(argv, epochs, num_examples, out),
                                 capture_output=True, text=True, check=False)
        if process.returncode != 0 or not os.path.exists(out):
            raise ValueError(f"vae_jax's benchmark failed with {_failure(process)}")
        with open(out, encoding="utf-8") as f:
            return json.load(f)


def summarize(peer_rounds: list[dict], our_rounds: list[dict]) -> dict:
    """The medians of the rounds' ``s_per_epoch`` and the ratio peer ÷ vae_jax (above 1: vae_jax
    is faster)."""
    peer = statistics.median(r["s_per_epoch"] for r in peer_rounds)
    ours = statistics.median(r["s_per_epoch"] for r in our_rounds)
    return {"peer_s_per_epoch": _significant(peer), "ours_s_per_epoch": _significant(ours),
            "ratio": _significant(peer / ours)}


def _row(label: str, cells: list) -> str:
    return f"{label:<8}" + "".join(f"{'' if c is None else f'{c:.2f}':>17}" for c in cells)


def compare(config, argv: list[str], epochs: int) -> dict:
    """Runs the peer matching `config` and this benchmark (its command line `argv`, without
    --compare) alternately for --rounds rounds of `epochs` epochs each; prints each round as it
    ends, then the medians and the ratio; returns all of it as a dict (seconds per epoch). Raises
    ValueError for a config that is not the peer's network, bad flags and a failing side."""
    # pylint: disable=import-outside-toplevel
    from vae_jax.app import configs

    configs.validate(config)
    image_shape = tuple(int(n) for n in _IMAGE_SHAPE.value)
    peer = matching_peer(config, image_shape)
    if _ROUNDS.value < 1:
        raise ValueError(f"--rounds={_ROUNDS.value}: pass --rounds=1 or more")
    if flags.FLAGS["num_examples"].present:
        raise ValueError("--compare times MNIST's 60,000 training examples, as the peer does: drop "
                         "--num_examples" + (" (--steps sets the steps timed per epoch)"
                                             if peer.takes_steps else ""))
    full_steps = MNIST_TRAIN_EXAMPLES // config.batch_size
    steps = None
    if peer.takes_steps:
        steps = DEFAULT_CONV_STEPS if _STEPS.value is None else _STEPS.value
        if not 1 <= steps <= full_steps:
            raise ValueError(f"--steps={steps}: pass a number of steps from 1 to {full_steps} "
                             "(a full epoch)")
    elif _STEPS.value is not None:
        raise ValueError(f"--steps applies to a conv comparison: the peer {peer.script} times full "
                         "epochs; drop --steps")
    script = _peer_script(peer)
    python = _peer_python()
    rounds = _ROUNDS.value
    scale = full_steps / steps if steps else 1.0

    print(f"--compare: {script.name} (eager PyTorch, {python}) and vae_jax, alternately, each in a "
          f"fresh process: {rounds} rounds of {epochs} epochs; s/epoch is the median of the "
          "epochs after the first", flush=True)
    if steps:
        print(f"both sides time the first {steps} of the {full_steps} steps of each epoch and "
              f"scale the times to a full epoch (× {scale:.4g})", flush=True)
    print(f"{'round':<8}{'peer s/epoch':>17}{'peer first s':>17}{'vae_jax s/epoch':>17}"
          f"{'vae_jax first s':>17}", flush=True)
    peer_rounds, our_rounds = [], []
    for k in range(1, rounds + 1):
        peer_rounds.append(run_peer(python, script, epochs, steps))
        result = run_ours(argv, epochs, (steps or full_steps) * config.batch_size)
        our_rounds.append({"s_per_epoch": _significant(result["steady_s_per_epoch"] * scale),
                           "first_s": _significant(result["first_epoch_s"] * scale),
                           "result": result})
        print(_row(str(k), [peer_rounds[-1]["s_per_epoch"], peer_rounds[-1]["first_s"],
                            our_rounds[-1]["s_per_epoch"], our_rounds[-1]["first_s"]]),
              flush=True)
    summary = summarize(peer_rounds, our_rounds)
    print(_row("median", [summary["peer_s_per_epoch"], None, summary["ours_s_per_epoch"], None]))
    last = our_rounds[-1]["result"]
    print(f"ratio peer/vae_jax s/epoch: {summary['ratio']:.2f} (above 1: vae_jax is faster)\n"
          f"vae_jax: {last['devices']} × {last['device_kind']} ({last['platform']}), train loop "
          f"{last['train_loop']}, compute {last['config']['compute_dtype']}; peer test "
          f"-ELBO after {epochs} epochs" + (f" of {steps} steps" if steps else "") + ": "
          + ", ".join(f"{r['test_neg_elbo']:.2f}" for r in peer_rounds), flush=True)
    return {"peer_script": script.name, "peer_python": python, "epochs": epochs,
            "rounds": rounds, "steps_per_epoch": steps or full_steps,
            "full_epoch_steps": full_steps, "scaled_to_full_epoch": bool(steps),
            "peer_rounds": peer_rounds, "ours_rounds": our_rounds, **summary}


def benchmark_and_report():
    epochs = _EPOCHS.value
    if epochs is None:
        epochs = DEFAULT_COMPARE_EPOCHS if _COMPARE.value else DEFAULT_EPOCHS
    check_epochs(epochs)
    if _COMPARE.value:
        result = compare(_CONFIG.value, sys.argv, epochs)
    else:
        for name in ("rounds", "steps", "peer_python", "peer_dir"):
            if flags.FLAGS[name].present:
                raise ValueError(f"--{name} applies only with --compare: add --compare or drop "
                                 f"--{name}")
        image_shape = tuple(int(n) for n in _IMAGE_SHAPE.value)
        result = benchmark(_CONFIG.value, epochs, _NUM_EXAMPLES.value, image_shape)
        print(format_table(result), flush=True)
    if _JSON.value:
        with open(_JSON.value, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    cli.run(benchmark_and_report, USAGE, errors=(ValueError, VAEJaxError),
            manual_dir_flag="--config.manual_dir")
