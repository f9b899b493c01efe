"""The VAE as a bundle of pure functions over a params pytree.

In the style of optax's `GradientTransformation`: static configuration in, a NamedTuple of pure
functions out. Nothing is hidden in the object — parameters are an explicit pytree
``{"encoder": ..., "decoder": ...}`` and randomness is an explicit `jax.random.key`.

    model = vae_jax.mlp_vae(input_shape=(28, 28, 1), latent_dim=20, hidden_dims=(400,))
    params = model.init(jax.random.key(0))
    mean, log_variance = model.encode(params, x)      # q(z|x) = N(mean, diag exp(log_variance))
    decoded = model.decode(params, z)                 # the parameters of p(x|z): here logits
    log_px = model.log_likelihood(params, x, decoded)  # log p(x|z) of one example, in nats

`encode` and `decode` accept one example or any leading batch shape. A `VAE` is hashable, so it can
be closed over or passed as a static argument to `jax.jit`.
"""

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from vae_jax import distributions, networks
from vae_jax.errors import ConfigError, ShapeError

Params = Any  # a pytree of arrays: {"encoder": ..., "decoder": ...}


class VAE(NamedTuple):
    """A variational autoencoder with a Gaussian encoder and a Bernoulli decoder.

    Attributes:
      init: ``init(key) -> params``.
      encode: ``encode(params, x) -> (mean, log_variance)``; x has shape (*batch, *input_shape),
        both outputs (*batch, latent_dim).
      decode: ``decode(params, z) -> decoded``; z has shape (*batch, latent_dim), decoded
        (*batch, *input_shape): the parameters of p(x|z) (Bernoulli logits).
      log_likelihood: ``log_likelihood(params, x, decoded) -> log p(x|z)`` for *one* example,
        summed over its pixels (vmap it for a batch).
      observation_mean: ``observation_mean(decoded) -> E[x|z]``, the image to show.
      input_shape: the shape of one example, e.g. (28, 28, 1).
      latent_dim: the size of z.
    """

    init: Callable[[jax.Array], Params]
    encode: Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]
    decode: Callable[[Params, jax.Array], jax.Array]
    log_likelihood: Callable[[Params, jax.Array, jax.Array], jax.Array]
    observation_mean: Callable[[jax.Array], jax.Array]
    input_shape: tuple[int, ...]
    latent_dim: int


def _check_trailing_shape(name: str, array: jax.Array, expected: tuple[int, ...]) -> None:
    shape = tuple(jnp.shape(array))
    if shape[len(shape) - len(expected):] != expected or len(shape) < len(expected):
        raise ShapeError(
            f"{name} must have shape (*batch, {', '.join(map(str, expected))}), got {shape}")
    if not jnp.issubdtype(jnp.result_type(array), jnp.floating):
        raise ShapeError(
            f"{name} must be a floating-point array, got dtype {jnp.result_type(array)}; "
            "scale integer pixels to [0, 1] first")


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def mlp_vae(input_shape: Sequence[int], latent_dim: int, hidden_dims: Sequence[int]) -> VAE:
    """A VAE whose encoder and decoder are MLPs with ReLU hidden layers.

    The encoder is x ↦ flatten ↦ hidden_dims ↦ (μ, log σ²); the decoder mirrors it,
    z ↦ reversed(hidden_dims) ↦ logits of shape `input_shape`. With input_shape=(28, 28, 1),
    latent_dim=20 and hidden_dims=(400,) this is the 784-400-20 VAE of Kingma & Welling and of the
    PyTorch example.
    """
    input_shape = tuple(_positive_int("input_shape entries", int(d)) for d in input_shape)
    latent_dim = _positive_int("latent_dim", latent_dim)
    hidden_dims = tuple(_positive_int("hidden_dims entries", h) for h in hidden_dims)
    encoder = networks.MLPGaussianEncoder(hidden_dims, latent_dim, input_rank=len(input_shape))
    decoder = networks.MLPDecoder(hidden_dims[::-1], input_shape)

    def init(key: jax.Array) -> Params:
        encoder_key, decoder_key = jax.random.split(key)
        x = jnp.zeros(input_shape, jnp.float32)
        z = jnp.zeros((latent_dim,), jnp.float32)
        return {
            "encoder": encoder.init(encoder_key, x)["params"],
            "decoder": decoder.init(decoder_key, z)["params"],
        }

    def encode(params: Params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        _check_trailing_shape("x", x, input_shape)
        return encoder.apply({"params": params["encoder"]}, x)

    def decode(params: Params, z: jax.Array) -> jax.Array:
        _check_trailing_shape("z", z, (latent_dim,))
        return decoder.apply({"params": params["decoder"]}, z)

    def log_likelihood(params: Params, x: jax.Array, logits: jax.Array) -> jax.Array:
        del params  # the Bernoulli decoder has no likelihood parameters of its own
        return distributions.bernoulli_log_prob(logits, x)

    return VAE(init, encode, decode, log_likelihood, jax.nn.sigmoid, input_shape, latent_dim)


def from_config(config, input_shape: Sequence[int]) -> VAE:
    """Builds the VAE that `config` (an ml_collections ConfigDict) describes for data of `input_shape`."""
    if config.architecture == "mlp":
        return mlp_vae(input_shape, config.latent_dim, tuple(config.hidden_dims))
    raise ConfigError(f"architecture must be one of ('mlp',), got {config.architecture!r}")
