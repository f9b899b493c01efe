"""The CPU's strided convolutions as matrix products (`vae_jax._cpu_conv`) are Flax's layers: the
same outputs and gradients as ``jax.lax``'s convolutions, the same params (names, shapes, initial
values) as ``nn.Conv`` / ``nn.ConvTranspose``, and the networks take them on a CPU backend only
while the fast paths are on."""

import contextlib

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from vae_jax import _cpu_conv, _fast_paths, model as model_lib, networks

_NHWC = ("NHWC", "HWIO", "NHWC")


def _lax_down(x, w):
    return jax.lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=_NHWC)


def _lax_up(x, w):
    return jax.lax.conv_transpose(x, w, (2, 2), "SAME", dimension_numbers=_NHWC)


def _inputs(seed, shape, channels_out):
    kx, kw = jax.random.split(jax.random.key(seed))
    return (jax.random.normal(kx, shape), jax.random.normal(kw, (4, 4, shape[-1], channels_out)))


def _value_and_grads(conv, x, w):
    """A scalar of the output that weighs every element differently, and its gradients in x, w
    (jitted: eager dispatch of the many small ops costs seconds)."""
    def loss(x, w):
        y = conv(x, w)
        return jnp.sum(jnp.sin(y) * jnp.arange(y.size, dtype=y.dtype).reshape(y.shape) / y.size)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, w)


class TestProductsEqualLaxConvolutions(chex.TestCase):
    def _check(self, conv, lax_conv, x, w, out_shape):
        y = self.variant(conv)(x, w)
        chex.assert_shape(y, out_shape)
        chex.assert_type(y, jnp.float32)
        np.testing.assert_allclose(y, lax_conv(x, w), rtol=1e-5, atol=1e-5)
        got = self.variant(lambda x, w: _value_and_grads(conv, x, w))(x, w)
        chex.assert_trees_all_close(got, _value_and_grads(lax_conv, x, w), rtol=1e-4, atol=1e-4)

    @chex.variants(with_jit=True, without_jit=True)
    def test_stride_2_convolution_and_its_gradients(self):
        self._check(_cpu_conv.conv_down, _lax_down, *_inputs(0, (3, 14, 10, 5), 7), (3, 7, 5, 7))

    @chex.variants(with_jit=True, without_jit=True)
    def test_transposed_convolution_and_its_gradients(self):
        self._check(_cpu_conv.conv_up, _lax_up, *_inputs(1, (3, 7, 5, 6), 4), (3, 14, 10, 4))


@pytest.mark.slow
@settings(deadline=None, max_examples=10)
@given(batch=st.integers(1, 3), half_height=st.integers(1, 5), half_width=st.integers(1, 5),
       channels_in=st.sampled_from([1, 2, 3, 8]), channels_out=st.sampled_from([1, 2, 5]),
       seed=st.integers(0, 2**16))
def test_both_layers_equal_lax_for_any_even_size(batch, half_height, half_width, channels_in,
                                                 channels_out, seed):
    shape = (batch, 2 * half_height, 2 * half_width, channels_in)
    x, w = _inputs(seed, shape, channels_out)
    chex.assert_trees_all_close(_value_and_grads(_cpu_conv.conv_down, x, w),
                                _value_and_grads(_lax_down, x, w), rtol=1e-4, atol=1e-4)
    x, w = _inputs(seed, (batch, half_height, half_width, channels_in), channels_out)
    chex.assert_trees_all_close(_value_and_grads(_cpu_conv.conv_up, x, w),
                                _value_and_grads(_lax_up, x, w), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_bfloat16_operands_give_bfloat16_outputs_close_to_float32():
    x, w = _inputs(2, (2, 8, 8, 4), 3)
    for conv, lax_conv in ((_cpu_conv.conv_down, _lax_down), (_cpu_conv.conv_up, _lax_up)):
        y = conv(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))
        chex.assert_type(y, jnp.bfloat16)
        np.testing.assert_allclose(y.astype(jnp.float32), lax_conv(x, w), rtol=0.05, atol=0.1)
        dx, dw = jax.grad(lambda x, w: jnp.sum(conv(x, w).astype(jnp.float32)), (0, 1))(
            x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))
        chex.assert_type((dx, dw), jnp.bfloat16)


class _FlaxConvEncoder(nn.Module):
    """The encoder as vae_jax 0.2 wrote it, with Flax's own layers: the reference."""
    channels: tuple
    hidden_dim: int
    latent_dim: int

    @nn.compact
    def __call__(self, x):
        h = x
        for width in self.channels:
            h = nn.relu(nn.Conv(width, (4, 4), strides=(2, 2), padding="SAME")(h))
        h = nn.relu(nn.Dense(self.hidden_dim)(h.reshape(h.shape[0], -1)))
        heads = [nn.Dense(self.latent_dim, kernel_init=networks._KERNEL_INIT, name=name)
                 for name in ("mean", "log_variance")]
        return heads[0](h), heads[1](h)


class _FlaxConvDecoder(nn.Module):
    channels: tuple
    hidden_dim: int
    output_shape: tuple

    @nn.compact
    def __call__(self, z):
        height, width, out = self.output_shape
        factor = 2 ** len(self.channels)
        start = (height // factor, width // factor, self.channels[-1])
        h = nn.relu(nn.Dense(self.hidden_dim)(z))
        h = nn.relu(nn.Dense(int(np.prod(start)))(h)).reshape((-1,) + start)
        for channels in self.channels[-2::-1]:
            h = nn.relu(nn.ConvTranspose(channels, (4, 4), strides=(2, 2), padding="SAME")(h))
        return nn.ConvTranspose(out, (4, 4), strides=(2, 2), padding="SAME", name="output")(h)


@pytest.mark.slow
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("channels,image_shape", [((4, 8), (8, 8, 1)), ((3, 5, 6), (16, 8, 2))])
def test_networks_have_flax_s_params_and_outputs(fast, channels, image_shape):
    x = jax.random.uniform(jax.random.key(3), (2,) + image_shape)
    z = jax.random.normal(jax.random.key(4), (2, 3))
    pairs = [(networks.ConvEncoder(channels, 16, 3), _FlaxConvEncoder(channels, 16, 3), x),
             (networks.ConvDecoder(channels, 16, image_shape),
              _FlaxConvDecoder(channels, 16, image_shape), z)]
    with contextlib.nullcontext() if fast else _fast_paths.disabled():
        for ours, flax_s, inputs in pairs:
            params = ours.init(jax.random.key(5), inputs)
            reference = flax_s.init(jax.random.key(5), inputs)
            chex.assert_trees_all_equal(params, reference)  # names, shapes, initial values
            chex.assert_trees_all_close(jax.jit(ours.apply)(params, inputs),
                                        jax.jit(flax_s.apply)(reference, inputs),
                                        rtol=1e-5, atol=1e-5)


def test_a_cpu_backend_takes_the_products_unless_the_fast_paths_are_off():
    assert jax.default_backend() == "cpu"
    x = jnp.zeros((2, 8, 8, 1))

    def traced_step():
        """The jaxpr of a forward and backward pass of a VAE built (and so traced) here."""
        vae = model_lib.conv_vae((8, 8, 1), 3, (4, 8), 16)
        params = vae.init(jax.random.key(0))
        return str(jax.make_jaxpr(jax.grad(
            lambda p: jnp.sum(vae.decode(p, vae.encode(p, x)[0]))))(params))

    fast = traced_step()
    assert "conv_general_dilated" not in fast and fast.count("optimization_barrier") >= 4
    with _fast_paths.disabled():
        plain = traced_step()
    assert plain.count("conv_general_dilated") >= 4


@pytest.mark.slow
@pytest.mark.parametrize("fast_paths", [True, False], ids=["fast_paths", "flax_paths"])
@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_forward_mode_derivatives_of_float32_models_on_every_path(architecture, fast_paths):
    """The CPU's float32 products are custom_jvps: with the fast paths on and off, jax.jacfwd
    equals jax.jacrev in the code z and in a kernel (the two tangent terms of each product), and
    the Hessian in z is symmetric."""
    vae = (model_lib.mlp_vae((6, 6, 1), 3, (8,)) if architecture == "mlp"
           else model_lib.conv_vae((8, 8, 1), 3, (4, 8), 16))
    shape = (6, 6, 1) if architecture == "mlp" else (8, 8, 1)
    z = jax.random.normal(jax.random.key(6), (1, 3))
    with contextlib.nullcontext() if fast_paths else _fast_paths.disabled():
        params = vae.init(jax.random.key(7))
        kernel = params["decoder"]["output"]["kernel"]

        def decode(z, kernel):
            output = {**params["decoder"]["output"], "kernel": kernel}
            return vae.decode({**params, "decoder": {**params["decoder"], "output": output}}, z)

        jacobians = {mode: jax.jit(jacobian(decode, argnums=(0, 1)))(z, kernel)
                     for mode, jacobian in (("forward", jax.jacfwd), ("reverse", jax.jacrev))}
        hessian = jax.jit(jax.hessian(lambda z: jnp.sum(jnp.tanh(decode(z, kernel)) ** 2)))(z)
    chex.assert_shape(jacobians["forward"][0], (1, *shape, 1, 3))
    chex.assert_shape(jacobians["forward"][1], (1, *shape, *kernel.shape))
    for forward, reverse in zip(jacobians["forward"], jacobians["reverse"]):
        np.testing.assert_allclose(forward, reverse, rtol=1e-5, atol=1e-6)
    hessian = hessian.reshape(3, 3)
    np.testing.assert_allclose(hessian, hessian.T, rtol=1e-4, atol=1e-6)
