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
pictures and checkpoints are not timed (train.py adds them); nor is data loading. Compare with
the peer on the same machine, one after the other:

    python scripts/benchmark.py --epochs=4
    python ../shared/bench/peer_torch_vae.py 4
"""

import json
import platform
import statistics
import time

from absl import flags

from vae_jax.app import cli
from vae_jax.errors import VAEJaxError

USAGE = ("python scripts/benchmark.py [--config=PRESET.py] [--config.FIELD=value ...] "
         "[--epochs=N] [--json=FILE]")
_CONFIG = cli.define_config_flag(USAGE)
_EPOCHS = flags.DEFINE_integer("epochs", 4, "Epochs to time (the first includes compilation).")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 60000, "Synthetic training examples.")
_IMAGE_SHAPE = flags.DEFINE_list("image_shape", ["28", "28", "1"], "H,W,C of the images.")
_JSON = flags.DEFINE_string("json", None, "Also write the result as JSON to this file.")


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


def benchmark(config, epochs: int, num_examples: int, image_shape: tuple[int, ...]) -> dict:
    """Times `epochs` epochs of the jitted training steps of `config` on synthetic images."""
    # pylint: disable=import-outside-toplevel
    import jax
    import numpy as np

    from vae_jax.app import builders, configs, distributed, input_pipeline, training

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
    steady = statistics.median(times[1:]) if len(times) > 1 else times[0]
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


def benchmark_and_report():
    image_shape = tuple(int(n) for n in _IMAGE_SHAPE.value)
    result = benchmark(_CONFIG.value, _EPOCHS.value, _NUM_EXAMPLES.value, image_shape)
    print(format_table(result), flush=True)
    if _JSON.value:
        with open(_JSON.value, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    cli.run(benchmark_and_report, USAGE, errors=(ValueError, VAEJaxError))
