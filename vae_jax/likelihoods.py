r"""Reconstruction terms: the decoder's likelihood p(x|z), or the lecture notes' squared errors.

A `Likelihood` is a bundle of pure functions, like the model itself:

    init(input_shape) -> params          # its own parameters (a learned σ), possibly {}
    log_prob(params, x, decoded) -> r    # for ONE example: the reconstruction term, in nats
    mean(decoded) -> E[x|z]              # the image to show

`r` is what the ELBO adds: log p(x|z) for the true likelihoods, summed over the D pixels.

| name | r (one example, D pixels) | decoded |
| --- | --- | --- |
| bernoulli | Σ x log σ(ℓ) + (1 − x) log σ(−ℓ) | logits ℓ |
| gaussian | Σ log N(x; μ, s²) = −½ Σ (x − μ)²/s² − Σ log s − (D/2) log 2π | mean μ |
| mse | −α · (1/D) Σ (x − x̂)²  (not a likelihood) | logits; x̂ = sigmoid |
| rmse | −α · √((1/D) Σ (x − x̂)²)  (not a likelihood) | logits; x̂ = sigmoid |

With s = 1 the Gaussian term is −½·SSE − (D/2)·log 2π: it differs from −½ SSE by exactly the
constant (D/2)·log 2π ≈ 0.919·D nats. The Gaussian scale s is fixed (`scale="fixed"`) or learned,
as one scalar (`"scalar"`) or one value per pixel (`"per_pixel"`), stored as log s.

`mse` and `rmse` are the lecture notes' `LOSS = α·RMSE + KL`, with the reduction their code uses:
the mean over the pixels of one example (the notes' code computes the mean *squared* error, without
the root, under the name "RMSE"; `mse` is that, `rmse` takes the root). The decoder output passes
through a sigmoid, as in the notes. These are not log-densities, so the ELBO reported with them is
not a bound on log p(x).

Every `log_prob` takes x and `decoded` of one shape (`vae_jax.ShapeError` otherwise; a static
check, free under jit) and is float32-stable: its value is finite for every finite logit (Bernoulli,
mse, rmse) and at an exact reconstruction for any σ (Gaussian), and its gradients in x, `decoded`
and its own params are finite wherever the value is (rmse: gradient 0 at an exact reconstruction,
where √ has none). Values of x are not checked here (that needs a host sync; see
`vae_jax.model.check_data_values`).
"""

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from vae_jax import distributions
from vae_jax.errors import ConfigError, ShapeError

LIKELIHOODS = ("bernoulli", "gaussian", "mse", "rmse")
GAUSSIAN_SCALES = ("fixed", "scalar", "per_pixel")


class Likelihood(NamedTuple):
    """A reconstruction term as pure functions; see the module docstring."""

    name: str
    init: Callable[[Sequence[int]], Any]
    log_prob: Callable[[Any, jax.Array, jax.Array], jax.Array]
    mean: Callable[[jax.Array], jax.Array]


def _is_traced(value) -> bool:
    """True for a value only known inside a transformation (e.g. a hyperparameter vmapped by
    `vae_jax.app.sweep`): its range cannot be checked here, and it must stay a JAX value."""
    return isinstance(value, jax.core.Tracer)


def _require_float(x: jax.Array) -> None:
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise ShapeError(f"x must be floating-point data, got dtype {jnp.result_type(x)}; scale "
                         "uint8 pixels to [0, 1] first (vae_jax.app.data.to_unit_interval)")


def squared_error_mean(x: jax.Array, x_hat: jax.Array) -> jax.Array:
    """MSE of one example: (1/D) Σᵢ (xᵢ − x̂ᵢ)², the mean over all its D values.

    x and x̂ must have one shape (`vae_jax.ShapeError` otherwise, a static check under jit too)."""
    distributions.check_one_shape("squared_error_mean", x=x, x_hat=x_hat)
    return jnp.mean(jnp.square(x - x_hat))


def _safe_sqrt(value: jax.Array) -> jax.Array:
    """√value for value ≥ 0, with gradient 0 (not ∞·0 = NaN) at value = 0.

    d√u/du = 1/(2√u) is infinite at 0; the double `where` keeps that branch away from 0, so the
    chain rule never multiplies ∞ by 0. At an exact reconstruction the RMSE is at its minimum 0,
    where 0 is a valid subgradient of the RMSE as a function of x̂."""
    positive = value > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, value, 1.0)), 0.0)


def bernoulli() -> Likelihood:
    """p(x|z) = Π Bern(xᵢ; sigmoid(ℓᵢ)); `decoded` are the logits ℓ, x in [0, 1] (grey levels
    give the continuous cross-entropy); `vae_jax.distributions.bernoulli_log_prob`, in nats."""

    def log_prob(params, x, logits):
        del params
        _require_float(x)
        return distributions.bernoulli_log_prob(logits, x)

    return Likelihood("bernoulli", lambda input_shape: {}, log_prob, jax.nn.sigmoid)


def gaussian(scale: str = "fixed", sigma: float = 1.0) -> Likelihood:
    """p(x|z) = Π N(xᵢ; μᵢ, s²) with s = `sigma` fixed, or learned from `sigma` as one scalar or
    one value per pixel; `decoded` is the mean μ. `sigma` may be a traced value (a swept
    hyperparameter); its range is then the caller's to check."""
    if scale not in GAUSSIAN_SCALES:
        raise ConfigError(f"config.gaussian_scale must be one of {GAUSSIAN_SCALES}, got {scale!r}")
    if _is_traced(sigma):
        log_sigma = jnp.log(sigma)
    elif not sigma > 0:
        raise ConfigError(f"config.gaussian_sigma must be positive, got {sigma!r}")
    else:
        log_sigma = math.log(sigma)

    def init(input_shape):
        if scale == "fixed":
            return {}
        shape = () if scale == "scalar" else tuple(input_shape)
        return {"log_scale": jnp.full(shape, log_sigma, jnp.float32)}

    def log_prob(params, x, mean):
        _require_float(x)
        log_s = params["log_scale"] if scale != "fixed" else jnp.asarray(log_sigma, jnp.float32)
        log_variance = jnp.broadcast_to(2.0 * log_s, jnp.shape(x))
        return distributions.gaussian_log_prob(x, mean, log_variance)

    return Likelihood("gaussian", init, log_prob, lambda mean: mean)


def squared_error(alpha: float = 1.0, root: bool = False) -> Likelihood:
    """The notes' reconstruction term −α·MSE (or −α·RMSE with `root`), x̂ = sigmoid(decoded).
    `alpha` may be a traced value (a swept hyperparameter); its range is then the caller's to
    check. With `root` the gradient at an exact reconstruction (MSE = 0) is 0, a subgradient of
    the RMSE at its minimum, where d√u/du = ∞ would make it NaN."""
    if not _is_traced(alpha) and not alpha >= 0:
        raise ConfigError(f"config.alpha must be non-negative, got {alpha!r}")

    def log_prob(params, x, logits):
        del params
        _require_float(x)
        mse = squared_error_mean(x, jax.nn.sigmoid(logits))
        return -alpha * (_safe_sqrt(mse) if root else mse)

    return Likelihood("rmse" if root else "mse", lambda input_shape: {}, log_prob, jax.nn.sigmoid)


def from_config(config) -> Likelihood:
    """The likelihood that `config.likelihood` (and its gaussian_* / alpha fields) names."""
    name = config.likelihood
    if name == "bernoulli":
        return bernoulli()
    if name == "gaussian":
        return gaussian(config.gaussian_scale, config.gaussian_sigma)
    if name in ("mse", "rmse"):
        return squared_error(config.alpha, root=name == "rmse")
    raise ConfigError(f"config.likelihood must be one of {LIKELIHOODS}, got {name!r}")
