"""The Threefry-2x32 hash (Salmon et al. 2011, 20 rounds) as straight-line jnp code, and a PRNG
key implementation built on it.

`threefry_2x32` gives the words of `jax.extend.random.threefry_2x32`, bit for bit. JAX lowers that
function on CPUs as a 5-iteration `while` loop, which XLA:CPU runs one iteration at a time; this one
XLA fuses into a single elementwise kernel.

`key` and `wrap_key_data` give training runs keys whose split, fold_in and random bits are those
of JAX's threefry2x32 keys, computed with this hash: the same numbers (tested), drawn faster on
CPUs. On the 2-core CPU, binarising with it saved about 0.06 s of a 1.1 s MNIST epoch (bfloat16),
and drawing the per-example keys and ε with it about 0.05 s more.

The key implementation is registered through `jax.extend.random`, which has no compatibility
promise across JAX releases: where it lacks `define_prng_impl` or `threefry_prng_impl` (or
registering fails), this module still imports, `AVAILABLE` is False, `THREEFRY_2X32` is None and
`key` / `wrap_key_data` give JAX's own keys. `vae_jax.app.prng` chooses between the two (CPU
only, `vae_jax._fast_paths`).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

try:
    from jax.extend import random as _jax_random_extend
except ImportError:  # pragma: no cover - a JAX without jax.extend
    _jax_random_extend = None

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_SCHEDULE_PARITY = np.uint32(0x1BD11BDA)


def _rotate_left(x: jax.Array, bits: int) -> jax.Array:
    return (x << np.uint32(bits)) | (x >> np.uint32(32 - bits))


def threefry_2x32(key_data: jax.Array, counts: jax.Array) -> jax.Array:
    """Threefry-2x32 of `counts` under the key `key_data` (uint32 (2,)): a uint32 array shaped like
    `counts`, equal to ``jax.extend.random.threefry_2x32(key_data, counts)``.

    As there, the flat counts (padded with a 0 to even length) are split into halves (x₀, x₁);
    with key words k₀, k₁ and k₂ = k₀ ⊕ k₁ ⊕ 0x1BD11BDA, each of 5 blocks of 4 rounds does
    x₀ ← x₀ + x₁, x₁ ← rotl(x₁, r) ⊕ x₀, and then injects the key: x₀ += k₍ᵢ₊₁₎ mod 3,
    x₁ += k₍ᵢ₊₂₎ mod 3 + i + 1. The result is the concatenation (x₀, x₁), unpadded.
    """
    if key_data.shape != (2,) or key_data.dtype != jnp.uint32 or counts.dtype != jnp.uint32:
        raise TypeError(f"threefry_2x32 takes uint32 key data of shape (2,) and uint32 counts, "
                        f"got {key_data.dtype}{list(key_data.shape)} and {counts.dtype}")
    size = counts.size
    flat = jnp.ravel(counts)
    if size % 2:
        flat = jnp.concatenate([flat, jnp.zeros((1,), jnp.uint32)])
    x0, x1 = _hash(key_data[0], key_data[1], *jnp.split(flat, 2))
    return jnp.reshape(jnp.concatenate([x0, x1])[:size], counts.shape)


def _hash(k0: jax.Array, k1: jax.Array, x0: jax.Array,
          x1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The 20 rounds on the word pairs (x₀, x₁) (broadcast together) under the key (k₀, k₁)."""
    keys = (k0, k1, k0 ^ k1 ^ _KEY_SCHEDULE_PARITY)
    x0, x1 = x0 + keys[0], x1 + keys[1]
    for block in range(5):
        for rotation in _ROTATIONS[block % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, rotation) ^ x0
        x0 = x0 + keys[(block + 1) % 3]
        x1 = x1 + keys[(block + 2) % 3] + np.uint32(block + 1)
    return x0, x1


def _counter_hash(key_data: jax.Array, shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """The hash of the 64-bit counters 0, 1, … laid out in `shape`, as JAX's partitionable
    threefry draws them: high words 0 (fewer than 2³² counters), low words the counter."""
    if math.prod(shape) >= 2**32:
        raise NotImplementedError(f"{math.prod(shape)} random words in one draw (2^32 or more)")
    low = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
    return _hash(key_data[0], key_data[1], jnp.zeros(shape, jnp.uint32), low)


# JAX's own threefry hash and key implementation (None where jax.extend.random lacks them).
_JAX_THREEFRY_2X32 = getattr(_jax_random_extend, "threefry_2x32", None)
_JAX_THREEFRY = getattr(_jax_random_extend, "threefry_prng_impl", None)


def _split(key_data: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    if not jax.config.jax_threefry_partitionable:
        return _JAX_THREEFRY.split(key_data, shape)
    return jnp.stack(_counter_hash(key_data, shape), axis=-1)


def _fold_in(key_data: jax.Array, data: jax.Array) -> jax.Array:
    return threefry_2x32(key_data, jnp.stack([jnp.uint32(0), jnp.asarray(data, jnp.uint32)]))


def _random_bits(key_data: jax.Array, bit_width: int, shape: tuple[int, ...]) -> jax.Array:
    if not jax.config.jax_threefry_partitionable:
        return _JAX_THREEFRY.random_bits(key_data, bit_width, shape)
    high, low = _counter_hash(key_data, shape)
    dtype = jnp.dtype(f"uint{bit_width}")
    if bit_width == 64:
        return (high.astype(dtype) << dtype.type(32)) | low.astype(dtype)
    return (high ^ low).astype(dtype)


def _define_impl():
    """This module's key implementation, or None where `jax.extend.random` cannot define it."""
    define = getattr(_jax_random_extend, "define_prng_impl", None)
    if define is None or _JAX_THREEFRY is None:
        return None
    try:
        return define(key_shape=(2,), seed=_JAX_THREEFRY.seed, split=_split,
                      random_bits=_random_bits, fold_in=_fold_in, name="vae_jax_threefry2x32",
                      tag="fry")
    except (TypeError, ValueError, AttributeError):  # pragma: no cover - another JAX's signature
        return None


THREEFRY_2X32 = _define_impl()
AVAILABLE = THREEFRY_2X32 is not None


def _impl_named(name: str):
    """The key implementation a config's `prng_impl` names: `THREEFRY_2X32` for
    ``"threefry2x32"`` (where available), JAX's own implementation of that name otherwise."""
    return THREEFRY_2X32 if name == "threefry2x32" and AVAILABLE else name


def is_threefry(key: jax.Array) -> bool:
    """Whether the typed `key` draws JAX's threefry2x32 numbers: a JAX threefry2x32 key or one
    of `THREEFRY_2X32`."""
    impl = jax.random.key_impl(key)
    return impl == "threefry2x32" or (AVAILABLE and impl == THREEFRY_2X32)


def hash_2x32(key_data: jax.Array, counts: jax.Array, fast: bool) -> jax.Array:
    """``jax.extend.random.threefry_2x32(key_data, counts)``: with `fast`, or where JAX lacks
    that function, this module's straight-line `threefry_2x32` (the same words)."""
    if fast or _JAX_THREEFRY_2X32 is None:
        return threefry_2x32(key_data, counts)
    return _JAX_THREEFRY_2X32(key_data, counts)


def key(seed: int, impl: str) -> jax.Array:
    """The key of `impl` (a config's `prng_impl`) for `seed`: for ``"threefry2x32"`` the key
    ``jax.random.key(seed)`` would make, as a `THREEFRY_2X32` key that draws the same numbers
    through this module's hash; for other names, JAX's key of that implementation."""
    return jax.random.key(seed, impl=_impl_named(impl))


def wrap_key_data(key_data: jax.Array, impl: str) -> jax.Array:
    """The key of `impl` (a config's `prng_impl`) with the raw `key_data`, as `key` makes them."""
    return jax.random.wrap_key_data(key_data, impl=_impl_named(impl))
