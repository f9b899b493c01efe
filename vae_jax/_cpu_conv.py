"""Private, XLA:CPU only: the 4×4 stride-2 'SAME' convolution and its transpose as matrix products.

XLA:CPU runs these two layers in generic convolution kernels that are slow in the backward pass
(a transposed convolution, or the input gradient of a strided one, is a convolution of a dilated
input) and several times slower again inside a `lax.scan` body, while its matrix products
(YNNPACK) run near the machine's peak. Each layer is rewritten, exactly, as one product:

- `conv_down(x, w)`, Flax's ``nn.Conv(O, (4, 4), strides=(2, 2), padding="SAME")`` for even H, W:
  pad by one pixel, space-to-depth (each 2×2 block of pixels becomes 4C channels), and read every
  2×2 window of that as a row of 16C numbers (im2col); y = rows · W with the kernel as a (16C, O)
  matrix. Output pixel i reads padded inputs 2i…2i+3, i.e. blocks i and i+1.
- `conv_up(x, w)`, Flax's ``nn.ConvTranspose(O, (4, 4), strides=(2, 2), padding="SAME")``: the
  sub-pixel (phase) decomposition of a stride-2 transposed convolution (Shi et al. 2016, "Is the
  deconvolution layer the same as a convolutional layer?"). Output pixel 2m+p (p ∈ {0, 1}) is
  Σₐ x[m+p+a−1]·w[2a+p] over a ∈ {0, 1}: with x padded by one pixel, every phase reads a 2×2
  window, the odd phase's one pixel later. One product of the 2×2 windows (rows of 4C) with the
  kernel as a (4C, 4·O) matrix gives the four phases, which depth-to-space interleaves.

The kernels and biases are the layers' own (4, 4, C, O) params: only the trace differs, so
checkpoints, initial values and outputs (to float32 rounding) are those of Flax's layers, which
`vae_jax.networks` runs on other backends and with the fast paths off (`vae_jax._fast_paths`).
The products are `vae_jax._cpu_products.matmul`, whose gradients keep XLA:CPU's fast forms and
which is differentiable in every mode (``jax.grad``, ``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``).
"""

import jax
import jax.numpy as jnp

from vae_jax import _cpu_products


def _pad1(x: jax.Array) -> jax.Array:
    """x (B, H, W, C) with one zero pixel on each side: (B, H+2, W+2, C)."""
    return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))


def _windows(x: jax.Array) -> jax.Array:
    """The 2×2 windows of x (B, H, W, C) as rows: (B, H−1, W−1, 4C), ordered (row, column, C)."""
    height, width = x.shape[1] - 1, x.shape[2] - 1
    return jnp.concatenate([x[:, a:a + height, b:b + width] for a in (0, 1) for b in (0, 1)], -1)


def conv_down(x: jax.Array, w: jax.Array) -> jax.Array:
    """The 4×4 stride-2 'SAME' convolution of x (B, H, W, C), H and W even, with the kernel
    w (4, 4, C, O): (B, H/2, W/2, O), as ``lax.conv_general_dilated(x, w, (2, 2), "SAME")``."""
    batch, height, width, channels = x.shape
    out = w.shape[-1]
    blocks = _pad1(x).reshape(batch, height // 2 + 1, 2, width // 2 + 1, 2, channels)
    blocks = blocks.transpose(0, 1, 3, 2, 4, 5).reshape(batch, height // 2 + 1, width // 2 + 1,
                                                        4 * channels)
    # w[2a+p, 2b+q] is the tap of window offset (a, b) and block position (p, q).
    matrix = w.reshape(2, 2, 2, 2, channels, out).transpose(0, 2, 1, 3, 4, 5)
    return _cpu_products.matmul(_windows(blocks), matrix.reshape(16 * channels, out).T, True)


def conv_up(x: jax.Array, w: jax.Array) -> jax.Array:
    """The 4×4 stride-2 'SAME' transposed convolution of x (B, H, W, C) with the kernel
    w (4, 4, C, O) (not flipped, as Flax's ``nn.ConvTranspose``): (B, 2H, 2W, O), as
    ``lax.conv_transpose(x, w, (2, 2), "SAME")``."""
    batch, height, width, channels = x.shape
    out = w.shape[-1]
    # w[2a+p, 2b+q] is the tap of window offset (a, b) for output phase (p, q).
    matrix = w.reshape(2, 2, 2, 2, channels, out).transpose(0, 2, 4, 1, 3, 5)
    phases = _cpu_products.matmul(_windows(_pad1(x)), matrix.reshape(4 * channels, 4 * out).T,
                                  True)
    phases = phases.reshape(batch, height + 1, width + 1, 2, 2, out)
    rows = [jnp.stack([phases[:, p:p + height, q:q + width, p, q] for q in (0, 1)], 3)
            for p in (0, 1)]
    return jnp.stack(rows, 2).reshape(batch, 2 * height, 2 * width, out)
