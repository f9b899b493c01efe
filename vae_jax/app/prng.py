"""PRNG keys of training runs, by the config's `prng_impl`.

The application draws every key of a run through `key` and `wrap_key_data`. On a CPU backend, for
``"threefry2x32"``, they give keys of the private `vae_jax.app._threefry` implementation, which
draws JAX's threefry2x32 numbers bit for bit with a hash that XLA:CPU runs faster; everywhere else
(other backends, other implementations, a JAX whose `jax.extend.random` cannot define it, or
``VAE_JAX_FAST_PATHS=0``: `vae_jax._fast_paths`) they give JAX's own keys, ``jax.random.key``.

Either way a key's raw data is JAX's: uint32 of shape (2,) for threefry2x32, the same for the same
seed and the same after the same splits and folds. A checkpoint stores that raw data, so a run
saved with one kind of key restores with the other and continues with the same numbers.
"""

import jax

from vae_jax import _fast_paths
from vae_jax.app import _threefry


def _fast() -> bool:
    return _threefry.AVAILABLE and _fast_paths.on_cpu()


def key(seed: int, impl: str) -> jax.Array:
    """The root key of a run: `seed` under the implementation `impl` (a config's `prng_impl`,
    e.g. "threefry2x32" or "rbg"); a typed key of shape ()."""
    if _fast():
        return _threefry.key(seed, impl)
    return jax.random.key(seed, impl=impl)


def wrap_key_data(key_data: jax.Array, impl: str) -> jax.Array:
    """The key of `impl` with the raw `key_data` (as a checkpoint stores it: uint32 (2,) for
    threefry2x32), of the kind `key` makes now, whichever kind wrote the data."""
    if _fast():
        return _threefry.wrap_key_data(key_data, impl)
    return jax.random.wrap_key_data(key_data, impl=impl)
