"""The Threefry-2x32 hash (Salmon et al. 2011, 20 rounds) as straight-line jnp code.

It gives the words of `jax.extend.random.threefry_2x32`, bit for bit. JAX lowers that function on
CPUs as a 5-iteration `while` loop, which XLA:CPU runs one iteration at a time; this one XLA fuses
into a single elementwise kernel. Binarising a training batch with it made an epoch of the MNIST
MLP about 0.06 s (5 %) faster on a 2-core CPU.
"""

import jax
import jax.numpy as jnp
import numpy as np

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
    x0, x1 = jnp.split(flat, 2)
    keys = (key_data[0], key_data[1], key_data[0] ^ key_data[1] ^ _KEY_SCHEDULE_PARITY)
    x0, x1 = x0 + keys[0], x1 + keys[1]
    for block in range(5):
        for rotation in _ROTATIONS[block % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, rotation) ^ x0
        x0 = x0 + keys[(block + 1) % 3]
        x1 = x1 + keys[(block + 2) % 3] + np.uint32(block + 1)
    return jnp.reshape(jnp.concatenate([x0, x1])[:size], counts.shape)
