"""The private switch for the backend-specific speed paths (not part of the API).

Three pieces of vae_jax are tuned for XLA:CPU: the bfloat16 dense layers' `networks._mixed_matmul`,
the convolutional networks' strided convolutions as matrix products (`vae_jax._cpu_conv`) and, in
the application, the straight-line threefry of `vae_jax.app._threefry` (run keys and
binarisation). Each is chosen where it is used, at trace time, only when `on_cpu()`; otherwise
the plain Flax / `jax.random` code runs, which computes the same numbers (threefry: bit for bit;
bfloat16 products: to bfloat16 rounding; convolutions: to float32 rounding).

The environment variable ``VAE_JAX_FAST_PATHS=0``, read once when vae_jax is imported, turns them
off everywhere; `disabled()` turns them off for a block (tests). The choice is made when a
function is traced, so a function jitted before the switch keeps the path it was traced with.
"""

import contextlib
import os
from typing import Iterator

import jax

_ENABLED = os.environ.get("VAE_JAX_FAST_PATHS", "1").strip() != "0"


def enabled() -> bool:
    """Whether the fast paths may be used at all (``VAE_JAX_FAST_PATHS`` and `disabled`)."""
    return _ENABLED


def on_cpu() -> bool:
    """Whether to take the CPU-tuned paths now: enabled, and JAX's default backend is the CPU."""
    return _ENABLED and jax.default_backend() == "cpu"


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Within the block, every choice made (at trace time) takes the plain JAX/Flax path."""
    global _ENABLED  # pylint: disable=global-statement
    previous, _ENABLED = _ENABLED, False
    try:
        yield
    finally:
        _ENABLED = previous
