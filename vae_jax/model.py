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

import warnings
from typing import Any, Callable, NamedTuple, Optional, Sequence

import flax.linen as nn

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import likelihoods, networks, priors
from vae_jax.errors import ConfigError, DataError, ShapeError

Params = Any  # a pytree of arrays: {"encoder": ..., "decoder": ...}


class VAE(NamedTuple):
    """A (variational) autoencoder as pure functions.

    Attributes:
      init: ``init(key) -> params``.
      encode: ``encode(params, x) -> (mean, log_variance)``; x has shape (*batch, *input_shape),
        both outputs (*batch, latent_dim). For the plain autoencoder (``stochastic=False``)
        log_variance is None and mean is the code itself.
      decode: ``decode(params, z) -> decoded``; z has shape (*batch, latent_dim), decoded
        (*batch, *input_shape): the parameters of p(x|z) (Bernoulli logits, a Gaussian mean, ...).
      log_likelihood: ``log_likelihood(params, x, decoded) -> log p(x|z)`` for *one* example,
        summed over its pixels (vmap it for a batch); see `vae_jax.likelihoods`.
      observation_mean: ``observation_mean(decoded) -> E[x|z]``, the image to show.
      input_shape: the shape of one example, e.g. (28, 28, 1).
      latent_dim: the size of z.
      stochastic: False for the plain autoencoder: no variance, no sampling, no KL.
      likelihood: the name of p(x|z) (one of `vae_jax.likelihoods.LIKELIHOODS`), or None for a
        hand-made one; it decides which data values `check_data_values` accepts.
      prior: p(z), a `vae_jax.priors.Prior` (default N(0, I)); ``prior_params(model, params)``
        gives what its functions take (a learned prior's ``params["prior"]``).
    """

    init: Callable[[jax.Array], Params]
    encode: Callable[[Params, jax.Array], tuple[jax.Array, Optional[jax.Array]]]
    decode: Callable[[Params, jax.Array], jax.Array]
    log_likelihood: Callable[[Params, jax.Array, jax.Array], jax.Array]
    observation_mean: Callable[[jax.Array], jax.Array]
    input_shape: tuple[int, ...]
    latent_dim: int
    stochastic: bool = True
    likelihood: Optional[str] = None
    prior: priors.Prior = priors.STANDARD_NORMAL


def prior_params(model: "VAE", params: Params) -> Any:
    """The parameters `model.prior`'s functions take, from the model's `params`: its own
    ``params["prior"]`` ({} for a prior without any) and the other params it reads
    (`Prior.reads`: the VampPrior's ``"encoder"``). Differentiable: gradients reach `params`."""
    own = params.get("prior", {})
    return {**own, **{name: params[name] for name in model.prior.reads}} if model.prior.reads \
        else own


def _check_trailing_shape(name: str, array: jax.Array, expected: tuple[int, ...]) -> None:
    shape = tuple(jnp.shape(array))
    if shape[len(shape) - len(expected):] != expected or len(shape) < len(expected):
        raise ShapeError(
            f"{name} must have shape (*batch, {', '.join(map(str, expected))}), got {shape}")
    if not jnp.issubdtype(jnp.result_type(array), jnp.floating):
        raise ShapeError(
            f"{name} must be a floating-point array, got dtype {jnp.result_type(array)}; "
            "scale integer pixels to [0, 1] first")


def check_input(model: "VAE", x: jax.Array, function: str, batched: bool,
                name: str = "x") -> None:
    """Raises `ShapeError` unless x is float data of shape `model.input_shape` (one example) or
    (B, *model.input_shape) with B ≥ 1 (`batched`). The shape and dtype checks read static
    information only, so they run under jit, vmap and grad (at trace time) and add nothing to the
    compiled computation. A concrete x (called outside any transformation) also has its values
    checked (`check_data_values`: `DataError`); a traced one does not.

    `function` names the caller and `name` the argument in the one-line message, which points to
    the batched (or single-example) counterpart when x is one of those instead.
    """
    if function in _ONE_LAYER:
        require_one_layer(model, function)
    shape, expected = tuple(jnp.shape(x)), tuple(model.input_shape)
    dims = ", ".join(map(str, expected))
    if batched and (len(shape) != len(expected) + 1 or shape[1:] != expected or shape[0] == 0):
        hint = (f"; {function} takes a batch: pass x[None] for one example"
                if shape == expected else "")
        raise ShapeError(f"{function}: {name} must have shape (B ≥ 1, {dims}) (a batch of "
                         f"model.input_shape), got {shape}{hint}")
    if not batched and shape != expected:
        hint = (f"; use {_BATCHED.get(function, 'jax.vmap(' + function + ')')} for a batch"
                if shape[1:] == expected else "")
        raise ShapeError(f"{function}: {name} must be one example of shape ({dims}) "
                         f"(model.input_shape), got {shape}{hint}")
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise ShapeError(f"{function}: {name} must be a floating-point array, got dtype "
                         f"{jnp.result_type(x)}; scale integer pixels to [0, 1] first "
                         "(vae_jax.app.data.to_unit_interval)")
    check_data_values(model, x, f"{function}: {name}")


def check_data_values(model: "VAE", x, name: str = "x") -> None:
    """Raises `vae_jax.DataError` for data that `model` cannot score: NaN or ±∞ anywhere, and for a
    Bernoulli likelihood values outside [0, 1] (the messages of
    `vae_jax.app.data.check_unit_interval`, which the scripts print). Other likelihoods (Gaussian,
    mse, rmse, hand-made ones) take any finite value.

    It reads values, so it needs a concrete array: it brings the minimum and maximum to the host
    once (a host sync) and does nothing for a traced x (inside `jax.jit`, `vmap` or `grad`), so
    the jitted training step never pays for it. `check_input` calls it for every public function
    of the model (elbo, batch_elbo, loss, the IWAE bounds, evaluate, encode_means, …). `name`
    says what x is in the message.
    """
    if isinstance(x, jax.core.Tracer):
        return
    # NumPy on the host, not jnp: a concrete x closed over inside a traced function (a lax.map
    # body) must not be staged into the trace.
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating) or not x.size:
        return
    if model.likelihood == "bernoulli":
        if not np.all(np.isfinite(x)):
            raise DataError(f"{name} holds NaN or infinite values; the Bernoulli likelihood needs "
                            "pixel intensities in [0, 1]")
        low, high = np.min(x), np.max(x)
        if low < 0 or high > 1:
            raise DataError(f"{name} has values in [{low:.8g}, {high:.8g}], outside the [0, 1] "
                            "that the Bernoulli likelihood needs; scale uint8 images with "
                            "vae_jax.app.data.to_unit_interval")
    elif not np.all(np.isfinite(x)):
        likelihood = f"the {model.likelihood}" if model.likelihood else "the model's"
        raise DataError(f"{name} holds NaN or infinite values; {likelihood} likelihood needs "
                        "finite data: remove or replace them (e.g. numpy.nan_to_num) first")


# The functions of one stochastic layer (they read model.prior and q(z|x) alone): check_input
# refuses another model for them in one line.
_ONE_LAYER = {"elbo", "batch_elbo", "loss", "code_l1_norm", "log_importance_weights",
              "iwae_bound", "batch_iwae_bound", "iwae_objective", "iwae_terms", "iwae_loss",
              "sample_images"}


def require_one_layer(model: Any, function: str) -> None:
    """Raises `ConfigError` unless `model` is a `VAE`: `function` is of one stochastic layer. A
    two-layer model (`vae_jax.hierarchical.TwoLayerVAE`) is pointed to its own functions."""
    if isinstance(model, VAE):
        return
    if hasattr(model, "encode_top"):
        raise ConfigError(f"{function} is for one stochastic layer; for a two-layer model use "
                          "vae_jax.hierarchical (terms, batch_terms, loss, iwae_bound, sample)")
    raise ConfigError(f"{function} takes a vae_jax.VAE as its model, got "
                      f"{type(model).__name__}")


# The batched counterpart of each single-example function, named in check_input's messages.
_BATCHED = {"elbo": "vae_jax.batch_elbo", "iwae_bound": "iwae.batch_iwae_bound",
            "iwae_objective": "iwae.iwae_loss", "iwae_terms": "iwae.iwae_loss",
            "log_importance_weights": "jax.vmap(iwae.log_importance_weights)",
            "hierarchical.terms": "vae_jax.hierarchical.batch_terms"}


def _model_first(function: str, model, params) -> tuple["VAE", Params]:
    """(model, params) for a function called ``function(model, params, …)``; the old order
    ``function(params, model, …)`` still works for one release, with a `DeprecationWarning`.

    The VAE is a static Python object (a NamedTuple of functions), so the swap happens at trace
    time and works under `jax.jit`, `vmap` and `grad` alike.
    """
    if not isinstance(model, VAE) and isinstance(params, VAE):
        warnings.warn(f"{function}(params, model, …) is deprecated; call "
                      f"{function}(model, params, …)", DeprecationWarning, stacklevel=3)
        return params, model
    return model, params


def _positive_int(name: str, value) -> int:
    """`value` if it is a positive int (a size of the networks' arrays), else `ShapeError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ShapeError(f"{name} must be a positive integer, got {value!r}")
    return value


def make_vae(encoder: nn.Module, decoder: nn.Module, input_shape: Sequence[int], latent_dim: int,
             likelihood: Optional[likelihoods.Likelihood] = None, stochastic: bool = True,
             prior: Optional[priors.Prior] = None) -> VAE:
    """Wraps Flax `encoder` and `decoder` modules, a likelihood and a prior into a `VAE`.

    `encoder(x)` must return (mean, log_variance) — (code, None) when not `stochastic` — and
    `decoder(z)` the parameters of p(x|z) with shape (*batch, *input_shape). Params are
    ``{"encoder": ..., "decoder": ...}``, plus ``"likelihood"`` when it has its own (a learned σ)
    and ``"prior"`` when the prior has (a learned mixture, the VampPrior's pseudo-inputs; drawn
    from ``fold_in(key, 2)``, so the networks' initial parameters do not depend on the prior).
    `prior` defaults to N(0, I); a prior that reads the encoder (`vae_jax.priors.vampprior`) is
    bound to this one here, and ``model.prior`` is the bound prior.
    Raises `ConfigError` when `likelihood` is not a `Likelihood` or `prior` not a `Prior` (a
    name, or a builder not called), or a plain autoencoder is given a prior.
    """
    likelihood = likelihoods.bernoulli() if likelihood is None else likelihood
    if not isinstance(likelihood, likelihoods.Likelihood):
        raise ConfigError(f"likelihood must be a vae_jax.Likelihood (e.g. vae_jax.bernoulli() or "
                          f"vae_jax.gaussian()), got {likelihood!r}")
    prior = priors.STANDARD_NORMAL if prior is None else prior
    if not isinstance(prior, priors.Prior):
        raise ConfigError(f"prior must be a vae_jax.priors.Prior (e.g. "
                          f"vae_jax.priors.mixture_of_gaussians(10)), got {prior!r}")
    if not stochastic and prior is not priors.STANDARD_NORMAL:
        raise ConfigError("a plain autoencoder (stochastic=False) has no prior: pass prior=None")
    if prior.bind is not None:
        prior = prior.bind(lambda encoder_params, x: encoder.apply({"params": encoder_params}, x),
                           tuple(input_shape))

    def init(key: jax.Array) -> Params:
        encoder_key, decoder_key = jax.random.split(key)
        params = {
            "encoder": encoder.init(encoder_key, jnp.zeros(input_shape, jnp.float32))["params"],
            "decoder": decoder.init(decoder_key, jnp.zeros((latent_dim,), jnp.float32))["params"],
        }
        own = likelihood.init(input_shape)
        params = {**params, "likelihood": own} if own else params
        learned = prior.init(jax.random.fold_in(key, 2), latent_dim)
        return {**params, "prior": learned} if learned else params

    def encode(params: Params, x: jax.Array) -> tuple[jax.Array, Optional[jax.Array]]:
        _check_trailing_shape("x", x, input_shape)
        return encoder.apply({"params": params["encoder"]}, x)

    def decode(params: Params, z: jax.Array) -> jax.Array:
        _check_trailing_shape("z", z, (latent_dim,))
        return decoder.apply({"params": params["decoder"]}, z)

    def log_likelihood(params: Params, x: jax.Array, decoded: jax.Array) -> jax.Array:
        return likelihood.log_prob(params.get("likelihood", {}), x, decoded)

    return VAE(init, encode, decode, log_likelihood, likelihood.mean, input_shape, latent_dim,
               stochastic, likelihood.name, prior)


def mlp_vae(input_shape: Sequence[int], latent_dim: int, hidden_dims: Sequence[int],
            likelihood: Optional[likelihoods.Likelihood] = None, stochastic: bool = True,
            dtype: Any = jnp.float32, prior: Optional[priors.Prior] = None) -> VAE:
    """A VAE whose encoder and decoder are MLPs with ReLU hidden layers.

    The encoder is x ↦ flatten ↦ hidden_dims ↦ (μ, log σ²); the decoder mirrors it,
    z ↦ reversed(hidden_dims) ↦ output of shape `input_shape`. With input_shape=(28, 28, 1),
    latent_dim=20 and hidden_dims=(400,) this is the 784-400-20 VAE of Kingma & Welling and of the
    PyTorch example. The likelihood defaults to Bernoulli; ``stochastic=False`` gives the plain
    autoencoder; `dtype` is the networks' compute dtype (`vae_jax.networks`: float32 params and
    outputs either way); `prior`: p(z), N(0, I) by default (`make_vae`).
    """
    input_shape = tuple(_positive_int("input_shape entries", int(d)) for d in input_shape)
    latent_dim = _positive_int("latent_dim", latent_dim)
    hidden_dims = tuple(_positive_int("hidden_dims entries", h) for h in hidden_dims)
    encoder = networks.MLPEncoder(hidden_dims, latent_dim, len(input_shape), stochastic, dtype)
    decoder = networks.MLPDecoder(hidden_dims[::-1], input_shape, dtype)
    return make_vae(encoder, decoder, input_shape, latent_dim, likelihood, stochastic, prior)


def conv_vae(input_shape: Sequence[int], latent_dim: int, channels: Sequence[int] = (32, 64),
             hidden_dim: int = 256, likelihood: Optional[likelihoods.Likelihood] = None,
             stochastic: bool = True, dtype: Any = jnp.float32,
             prior: Optional[priors.Prior] = None) -> VAE:
    """A VAE with a convolutional encoder and a transposed-convolutional decoder, for images
    (H, W, C) whose H and W are divisible by 2^len(channels) (28×28×1 and 32×32×3 with two layers);
    `dtype` and `prior` as in `mlp_vae`.
    """
    input_shape = tuple(_positive_int("input_shape entries", int(d)) for d in input_shape)
    latent_dim = _positive_int("latent_dim", latent_dim)
    channels = tuple(_positive_int("channels entries", c) for c in channels)
    hidden_dim = _positive_int("hidden_dim", hidden_dim)
    networks.check_conv_shape(input_shape, channels)
    encoder = networks.ConvEncoder(channels, hidden_dim, latent_dim, stochastic, dtype)
    decoder = networks.ConvDecoder(channels, hidden_dim, input_shape, dtype)
    return make_vae(encoder, decoder, input_shape, latent_dim, likelihood, stochastic, prior)
