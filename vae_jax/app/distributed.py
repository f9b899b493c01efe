"""Devices and processes: the data-parallel mesh, and moving arrays between the host and a run
that spans several devices or several processes (multi-host, `jax.distributed`).

Every process of a multi-host run executes the same program on *global* arrays (multi-controller
JAX). Here each process holds the same host data (the whole dataset, the same keys), so global
arrays are built from identical process-local copies, and replicated results are read back from
each process's own copy.
"""

import math
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from vae_jax.errors import ConfigError


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, auto: bool = False) -> None:
    """Joins a multi-process run with `jax.distributed.initialize`: explicitly, with the
    coordinator's ``host:port``, the number of processes and this process's id; or, with `auto`,
    from the cluster's environment (Cloud TPU pods, SLURM, Open MPI). Does nothing when neither
    is asked for. Must run before anything else uses JAX."""
    if coordinator_address is None and not auto:
        if num_processes is not None or process_id is not None:
            raise ConfigError("--num_processes and --process_id need --coordinator_address")
        return
    if coordinator_address is not None and (num_processes is None or process_id is None):
        raise ConfigError("--coordinator_address needs --num_processes and --process_id")
    if coordinator_address is not None and not 0 <= process_id < num_processes:
        raise ConfigError(f"--process_id must be in [0, {num_processes}), got {process_id}")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)


def is_main_process() -> bool:
    """True in the process that writes metrics, pictures and logs (process 0)."""
    return jax.process_index() == 0


def make_mesh(num_devices: int = 0) -> jax.sharding.Mesh:
    """A 1-D device mesh, axis "data", over the first `num_devices` of `jax.devices()` (0: all of
    them, across every process of a multi-host run)."""
    devices = jax.devices()
    if num_devices > len(devices):
        raise ConfigError(f"config.num_devices={num_devices} but JAX sees only {len(devices)} "
                          f"device(s): {devices}")
    if num_devices and jax.process_count() > 1 and num_devices != len(devices):
        raise ConfigError(f"config.num_devices must be 0 (all devices) in a run of "
                          f"{jax.process_count()} processes, got {num_devices}")
    return jax.sharding.Mesh(np.array(devices[:num_devices or len(devices)]), ("data",))


def make_model_mesh(num_models: int, num_devices: int = 0) -> jax.sharding.Mesh:
    """A 1-D mesh, axis "models", over which the model axis of N stacked models (a sweep) is
    split: `num_devices` devices (``config.num_devices``), which must divide N, or with 0 the
    largest count of devices that divides N."""
    devices = jax.devices()
    if num_devices > len(devices):
        raise ConfigError(f"config.num_devices={num_devices} but JAX sees only {len(devices)} "
                          "device(s)")
    if num_devices and num_models % num_devices:
        raise ConfigError(f"the sweep's {num_models} members must divide evenly over "
                          f"config.num_devices={num_devices} devices")
    count = num_devices or math.gcd(num_models, len(devices))
    return jax.sharding.Mesh(np.array(devices[:count]), ("models",))


def data_parallel_shardings(mesh: jax.sharding.Mesh):
    """(replicated, batch-sharded) `NamedSharding`s for data-parallel training on `mesh`.

    Params, optimizer state, keys and the datasets are replicated on every device; the example
    indices (steps, batch_size) of one call of the train steps are split along their last axis,
    so each device gathers, binarises and differentiates its part of the batch, and XLA sums the
    gradients across devices (GSPMD). Random draws do not depend on the sharding
    (`jax_threefry_partitionable`), so a run gives the same results on any number of devices up
    to the order of float sums.
    """
    P = jax.sharding.PartitionSpec  # pylint: disable=invalid-name
    return (jax.sharding.NamedSharding(mesh, P()),
            jax.sharding.NamedSharding(mesh, P(None, "data")))


def _is_key(leaf) -> bool:
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def to_global(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """The arrays of `tree` (NumPy or single-device; the same values in every process) as global
    arrays laid out by `sharding`; typed PRNG keys stay typed keys."""

    def put(leaf):
        if _is_key(leaf):
            return jax.random.wrap_key_data(put(jax.random.key_data(leaf)),
                                            impl=jax.random.key_impl(leaf))
        host = np.asarray(leaf)
        return jax.make_array_from_process_local_data(sharding, host, host.shape)

    return jax.tree.map(put, tree)


def to_host(tree: Any) -> Any:
    """NumPy copies of the arrays of `tree`. An array spread over the devices of several processes
    is read from this process's copy when it is replicated; one split over the processes (a
    sweep's model axis) is gathered from all of them, so every process must call this then."""

    def get(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            if not leaf.sharding.is_fully_replicated:
                return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
            return np.asarray(leaf.addressable_data(0))
        return np.asarray(leaf)

    return jax.tree.map(get, tree)
