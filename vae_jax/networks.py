"""Flax modules for the encoder and decoder networks.

The modules work on any leading batch shape: an encoder maps inputs of shape (*batch, *input_shape)
to two arrays of shape (*batch, latent_dim); a decoder maps (*batch, latent_dim) to
(*batch, *output_shape). Users normally reach them through `vae_jax.model`, which wraps them into
pure functions over a params pytree.
"""

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLPGaussianEncoder(nn.Module):
    """x → (μ, log σ²): flatten, `hidden_dims` ReLU layers, then two linear heads."""

    hidden_dims: Sequence[int]
    latent_dim: int
    input_rank: int  # number of trailing axes that make up one example

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = jnp.reshape(x, x.shape[: x.ndim - self.input_rank] + (-1,))
        for width in self.hidden_dims:
            h = nn.relu(nn.Dense(width)(h))
        mean = nn.Dense(self.latent_dim, name="mean")(h)
        log_variance = nn.Dense(self.latent_dim, name="log_variance")(h)
        return mean, log_variance


class MLPDecoder(nn.Module):
    """z → logits of shape `output_shape`: `hidden_dims` ReLU layers, then a linear layer."""

    hidden_dims: Sequence[int]
    output_shape: Sequence[int]

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        h = z
        for width in self.hidden_dims:
            h = nn.relu(nn.Dense(width)(h))
        logits = nn.Dense(math.prod(self.output_shape), name="logits")(h)
        return jnp.reshape(logits, z.shape[:-1] + tuple(self.output_shape))
