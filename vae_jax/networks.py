"""Flax modules for the encoder and decoder networks: MLPs and convolutional networks.

The modules work on any leading batch shape: an encoder maps inputs of shape (*batch, *input_shape)
to (mean, log_variance), each (*batch, latent_dim) — or to (code, None) when it is deterministic
(the plain autoencoder); a decoder maps (*batch, latent_dim) to (*batch, *output_shape). Users
normally reach them through `vae_jax.model`, which wraps them into pure functions over a params
pytree.

`dtype` is the dtype the layers compute in; parameters are always float32, and outputs are
returned as float32. ``dtype=jnp.bfloat16`` is mixed precision, faster on GPUs, TPUs and CPUs with
AMX or AVX512-BF16. Every layer has the params (names, structure, shapes, float32, initial
values) of the Flax layer it stands for, and its outputs up to rounding; the products are chosen
when the layers are traced (`jax.default_backend()`):

- on a CPU backend, private products tuned for XLA:CPU (`vae_jax._fast_paths`): float32 dense
  layers use `_cpu_products.matmul`, whose weight gradient XLA:CPU runs in YNNPACK rather than
  Eigen (the default MLP's step 0–7 % faster, by machine); the MLPs' bfloat16 dense layers use
  `_mixed_matmul` (bfloat16-rounded operands, float32 sums, activations and gradients); the 4×4
  stride-2 convolutions and transposed convolutions are computed as matrix products
  (`vae_jax._cpu_conv`);
- elsewhere, or with the fast paths off (``VAE_JAX_FAST_PATHS=0``), Flax's ``nn.Dense`` (in
  bfloat16 its mixed precision, ``dtype=jnp.bfloat16, param_dtype=jnp.float32``) and ``jax.lax``'s
  convolutions, as Flax's ``nn.Conv`` / ``nn.ConvTranspose`` run them.

Every path is differentiable in every mode (``jax.grad``, ``jax.jvp``, ``jax.jacfwd``,
``jax.hessian``) except the MLPs' bfloat16 `_mixed_matmul` on a CPU, which is reverse mode only
(a ``jax.custom_vjp``, so that its gradients keep float32 sums): for forward-mode derivatives of
a bfloat16 MLP on a CPU, set ``VAE_JAX_FAST_PATHS=0``. The convolutional networks in bfloat16
round every layer's output to 8 significant bits.
"""

import math
import warnings
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import _cpu_conv, _cpu_products, _fast_paths
from vae_jax._cpu_products import _contract_last, _transposed
from vae_jax.errors import ShapeError

# Dense kernels start as PyTorch's nn.Linear does, U(±1/√fan_in): after 10 epochs of the default
# MNIST model this gave a test −ELBO about 0.5 nats lower than Flax's lecun_normal (seeds 0 and 1).
_KERNEL_INIT = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


@jax.custom_vjp
def _mixed_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """y = x·w for x (..., K), w (K, N): the products of bfloat16-rounded operands, summed in
    float32, y float32.

    Its gradients are likewise products of bfloat16-rounded operands summed in float32:
    ∂x = ∂y·wᵀ and ∂w = Σ_batch xᵀ·∂y, returned in the dtypes of x and w.
    """
    return _contract_last(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))


def _mixed_matmul_forward(x, w):
    return _mixed_matmul(x, w), (x, w)


def _mixed_matmul_backward(residuals, dy):
    x, w = residuals
    dx = jax.lax.dot_general(dy.astype(jnp.bfloat16), w.astype(jnp.bfloat16),
                             (((dy.ndim - 1,), (1,)), ((), ())),
                             preferred_element_type=jnp.float32)
    dw = _contract_last(_transposed(x.reshape(-1, x.shape[-1]).astype(jnp.bfloat16)),
                        dy.reshape(-1, dy.shape[-1]).astype(jnp.bfloat16))
    return dx.astype(x.dtype), dw.astype(w.dtype)


_mixed_matmul.defvjp(_mixed_matmul_forward, _mixed_matmul_backward)


def __getattr__(name: str):
    """`mixed_matmul`, the old public name of `_mixed_matmul`: kept for one release, with a
    `DeprecationWarning`."""
    if name == "mixed_matmul":
        warnings.warn("vae_jax.networks.mixed_matmul is private from vae_jax 0.2 and goes in 0.3; "
                      "use mlp_vae(..., dtype=jnp.bfloat16), which picks it on CPUs",
                      DeprecationWarning, stacklevel=2)
        return _mixed_matmul
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _dense_dot_general(matmul: Callable[[jax.Array, jax.Array], jax.Array]) -> Callable:
    """`nn.Dense`'s ``dot_general`` (inputs · kernel over the inputs' last axis) as `matmul`."""
    def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
        del precision, preferred_element_type
        if dimension_numbers != (((lhs.ndim - 1,), (0,)), ((), ())) or rhs.ndim != 2:
            raise ValueError(f"the dense product contracts x's last axis with w's first, got "
                             f"dimension numbers {dimension_numbers}")
        return matmul(lhs, rhs)
    return dot_general


_mixed_dot_general = _dense_dot_general(_mixed_matmul)
_float32_dot_general = _dense_dot_general(_cpu_products.matmul)


def _conv_net_dense(features: int, dtype: Any) -> nn.Dense:
    """The conv networks' dense layer, Flax's ``nn.Dense(features, dtype=dtype)`` (its
    initialisers and automatic name); in float32 on a CPU backend its product is
    `_cpu_products.matmul`."""
    fast = jnp.dtype(dtype) == jnp.float32 and _fast_paths.on_cpu()
    return nn.Dense(features, dtype=dtype, dot_general=_float32_dot_general if fast else None)


def _dense(features: int, dtype: Any, name: Optional[str] = None) -> nn.Dense:
    """A dense layer with `_KERNEL_INIT` and float32 params. On a CPU backend (decided when
    traced) a float32 layer whose product is `_mixed_matmul` in bfloat16 and
    `_cpu_products.matmul` in float32; elsewhere, or with the fast paths off, Flax's own product
    (bfloat16: Flax's mixed precision, bfloat16 compute and output)."""
    if _fast_paths.on_cpu():
        if jnp.dtype(dtype) == jnp.bfloat16:
            return nn.Dense(features, kernel_init=_KERNEL_INIT, dtype=jnp.float32,
                            dot_general=_mixed_dot_general, name=name)
        if jnp.dtype(dtype) == jnp.float32:
            return nn.Dense(features, kernel_init=_KERNEL_INIT, dtype=jnp.float32,
                            dot_general=_float32_dot_general, name=name)
    if jnp.dtype(dtype) == jnp.bfloat16:
        return nn.Dense(features, kernel_init=_KERNEL_INIT, dtype=jnp.bfloat16,
                        param_dtype=jnp.float32, name=name)
    return nn.Dense(features, kernel_init=_KERNEL_INIT, dtype=dtype, name=name)


def _heads(h: jax.Array, latent_dim: int, stochastic: bool, dtype: Any):
    mean = _dense(latent_dim, dtype, "mean")(h).astype(jnp.float32)
    if not stochastic:
        return mean, None
    return mean, _dense(latent_dim, dtype, "log_variance")(h).astype(jnp.float32)


class MLPEncoder(nn.Module):
    """x → (μ, log σ²): flatten, `hidden_dims` ReLU layers, then linear heads (μ alone when not
    `stochastic`)."""

    hidden_dims: Sequence[int]
    latent_dim: int
    input_rank: int  # number of trailing axes that make up one example
    stochastic: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, Optional[jax.Array]]:
        h = jnp.reshape(x, x.shape[: x.ndim - self.input_rank] + (-1,))
        for width in self.hidden_dims:
            h = nn.relu(_dense(width, self.dtype)(h))
        return _heads(h, self.latent_dim, self.stochastic, self.dtype)


class MLPDecoder(nn.Module):
    """z → output of shape `output_shape`: `hidden_dims` ReLU layers, then a linear layer."""

    hidden_dims: Sequence[int]
    output_shape: Sequence[int]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        h = z
        for width in self.hidden_dims:
            h = nn.relu(_dense(width, self.dtype)(h))
        out = _dense(math.prod(self.output_shape), self.dtype, "output")(h).astype(jnp.float32)
        return jnp.reshape(out, z.shape[:-1] + tuple(self.output_shape))


def check_conv_shape(image_shape: Sequence[int], channels: Sequence[int]) -> None:
    """Raises `ShapeError` unless `image_shape` is (H, W, C) with H and W halving exactly once
    per conv layer, i.e. divisible by 2^len(channels)."""
    factor = 2 ** len(channels)
    if len(image_shape) != 3 or image_shape[0] % factor or image_shape[1] % factor:
        raise ShapeError(
            f"a convolutional VAE with channels={tuple(channels)} needs images of shape "
            f"(H, W, C) with H and W divisible by {factor}; got {tuple(image_shape)}")


class _StridedConv(nn.Module):
    """A 4×4 stride-2 'SAME' convolution (``transpose=False``) or transposed convolution: the
    params, names and output of ``nn.Conv(features, (4, 4), strides=(2, 2), padding="SAME")`` or
    ``nn.ConvTranspose(...)`` with the same arguments, computed as `_cpu_conv`'s matrix products
    on a CPU backend (decided when traced, `_fast_paths.on_cpu`) and by ``jax.lax`` elsewhere."""

    features: int
    transpose: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (4, 4, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        even = x.shape[-3] % 2 == 0 and x.shape[-2] % 2 == 0
        if self.transpose:
            y = (_cpu_conv.conv_up(x, kernel) if _fast_paths.on_cpu()
                 else jax.lax.conv_transpose(x, kernel, (2, 2), "SAME"))
        else:
            y = (_cpu_conv.conv_down(x, kernel) if _fast_paths.on_cpu() and even
                 else jax.lax.conv_general_dilated(x, kernel, (2, 2), "SAME",
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC")))
        return y + bias


class ConvEncoder(nn.Module):
    """x (H, W, C) → (μ, log σ²): stride-2 4×4 ReLU convolutions with `channels`, a ReLU dense
    layer of `hidden_dim`, then linear heads."""

    channels: Sequence[int]
    hidden_dim: int
    latent_dim: int
    stochastic: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, Optional[jax.Array]]:
        batch_shape = x.shape[:-3]
        h = jnp.reshape(x, (-1,) + x.shape[-3:])
        for i, width in enumerate(self.channels):
            h = nn.relu(_StridedConv(width, dtype=self.dtype, name=f"Conv_{i}")(h))
        h = jnp.reshape(h, batch_shape + (-1,))
        h = nn.relu(_conv_net_dense(self.hidden_dim, self.dtype)(h))
        return _heads(h, self.latent_dim, self.stochastic, self.dtype)


class ConvDecoder(nn.Module):
    """z → output (H, W, C): a ReLU dense layer of `hidden_dim`, a dense layer reshaped to
    (H/2ⁿ, W/2ⁿ, channels[-1]), then stride-2 4×4 transposed convolutions back to (H, W, C)."""

    channels: Sequence[int]  # the encoder's, in encoder order
    hidden_dim: int
    output_shape: Sequence[int]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        height, width, out_channels = self.output_shape
        factor = 2 ** len(self.channels)
        start = (height // factor, width // factor, self.channels[-1])
        batch_shape = z.shape[:-1]
        h = nn.relu(_conv_net_dense(self.hidden_dim, self.dtype)(
            jnp.reshape(z, (-1, z.shape[-1]))))
        h = nn.relu(_conv_net_dense(math.prod(start), self.dtype)(h)).reshape((-1,) + start)
        for i, channels in enumerate(self.channels[-2::-1]):
            h = nn.relu(_StridedConv(channels, transpose=True, dtype=self.dtype,
                                     name=f"ConvTranspose_{i}")(h))
        h = _StridedConv(out_channels, transpose=True, dtype=self.dtype,
                         name="output")(h).astype(jnp.float32)
        return jnp.reshape(h, batch_shape + tuple(self.output_shape))
