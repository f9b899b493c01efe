"""How the training batches reach the device: the whole training set kept there, or streamed.

``config.input_pipeline`` chooses:

  "device"  the uint8 training set is copied to the device once, and every call of the training
            steps gathers its batches there (`training.make_train_steps`): no host work per step.
  "stream"  the training set stays in host memory (a numpy array, possibly memory-mapped). For
            each chunk of steps a background thread gathers the chunk's examples on the host, in
            the order of the epoch's permutation, and copies them to the device while earlier
            chunks train, `prefetch` chunks ahead. The device holds a few chunks, never the set.
  "auto"    "stream" when the training set takes more than half of the device's free memory
            (`free_device_memory`), else "device".

Both hand the same jitted steps the same batches in the same order with the same step keys, so a
run gives the same results whichever pipeline feeds it.
"""

import collections
import concurrent.futures
import math
import os
from typing import Iterator, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

from vae_jax.app import distributed


def free_device_memory(device: jax.Device) -> Optional[int]:
    """Bytes free on `device`: its allocator's limit less what is in use where the backend reports
    them (GPU, TPU); for a CPU, whose memory is the host's, the host's available memory; None
    when unknown."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    if device.platform == "cpu":
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return None
    return None


def resolve(pipeline: str, dataset_bytes: int, devices) -> str:
    """`pipeline` with "auto" made concrete: "stream" when `dataset_bytes` exceed half of the
    free memory (`free_device_memory`) of this process's first device among `devices` (room for
    the model, its activations and the evaluation data), else "device". With several processes,
    process 0's choice is every process's: they must feed the same program."""
    if pipeline != "auto":
        return pipeline
    local = next(d for d in devices if d.process_index == jax.process_index())
    free = free_device_memory(local)
    stream = free is not None and dataset_bytes > free // 2
    if jax.process_count() > 1:
        stream = bool(multihost_utils.broadcast_one_to_all(np.asarray(stream)))
    return "stream" if stream else "device"


def num_chunks(steps: int, step_bytes: int, max_chunk_bytes: Optional[int],
               at_least: int = 1) -> int:
    """How many equal calls make up an epoch of `steps` steps: the smallest divisor of `steps`
    that is ≥ `at_least` and, when `max_chunk_bytes` is given, keeps a chunk of steps of
    `step_bytes` each within it (one step per chunk when even that is larger)."""
    wanted = max(at_least, math.ceil(steps * step_bytes / max_chunk_bytes)
                 if max_chunk_bytes else 1)
    return next((d for d in range(wanted, steps + 1) if steps % d == 0), steps)


def device_chunks(train_images: jax.Array, indices: np.ndarray,
                  index_sharding: jax.sharding.Sharding) -> Iterator[tuple[jax.Array, jax.Array]]:
    """For each chunk of `indices` (chunks, steps, batch_size), int32 example indices into the
    training set already on the device: (that training set, the chunk's indices laid out by
    `index_sharding`)."""
    for chunk in indices:
        yield train_images, distributed.to_global(chunk, index_sharding)


def stream_chunks(images: np.ndarray, indices: np.ndarray, image_sharding: jax.sharding.Sharding,
                  index_sharding: jax.sharding.Sharding,
                  prefetch: int = 2) -> Iterator[tuple[jax.Array, jax.Array]]:
    """For each chunk of `indices` (chunks, steps, batch_size) — or (chunks, steps, N,
    batch_size), one row per model of a sweep — into the host array `images`
    (N, *image_shape): (its examples ``images[chunk]`` on the device, flattened to
    (steps·batch_size, *image_shape) and laid out by `image_sharding`; the indices
    ``arange(steps·batch_size)`` shaped like the chunk into them, laid out by
    `index_sharding`). A background thread gathers and copies each chunk `prefetch` chunks ahead
    of the one the caller is training on."""
    chunk_shape = indices.shape[1:]
    local = distributed.to_global(
        np.arange(math.prod(chunk_shape), dtype=np.int32).reshape(chunk_shape), index_sharding)

    def load(chunk: np.ndarray) -> jax.Array:
        return distributed.to_global(images[chunk.reshape(-1)], image_sharding)

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = collections.deque(pool.submit(load, chunk) for chunk in indices[:prefetch])
        for i in range(len(indices)):
            if i + prefetch < len(indices):
                pending.append(pool.submit(load, indices[i + prefetch]))
            yield pending.popleft().result(), local


def epoch_chunks(pipeline: str, images, indices: np.ndarray,
                 image_sharding: jax.sharding.Sharding,
                 index_sharding: jax.sharding.Sharding) -> Iterator[tuple[jax.Array, jax.Array]]:
    """The (images, indices) pairs of an epoch's chunks `indices` (chunks, steps, batch_size) for
    a resolved `pipeline`: `device_chunks` of the device array `images` for "device",
    `stream_chunks` of the host array `images` for "stream"."""
    if pipeline == "device":
        return device_chunks(images, indices, index_sharding)
    return stream_chunks(images, indices, image_sharding, index_sharding)
