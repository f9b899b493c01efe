"""PRNG keys of training runs, by the config's `prng_impl`.

The application draws every key of a run through `key` and `wrap_key_data`, so the fast
CPU-specific implementation in `vae_jax.app._threefry` stays private to this module.
"""

import jax

from vae_jax.app import _threefry


def key(seed: int, impl: str) -> jax.Array:
    """The root key of a run: `seed` under the implementation `impl` (a config's `prng_impl`)."""
    return _threefry.key(seed, impl)


def wrap_key_data(key_data: jax.Array, impl: str) -> jax.Array:
    """The key of `impl` with the raw `key_data` (as a checkpoint stores it), as `key` makes."""
    return _threefry.wrap_key_data(key_data, impl)
