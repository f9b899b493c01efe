r"""Priors p(z) over the latent space, as bundles of pure functions like the likelihoods.

A `Prior` is

    init(key, latent_dim) -> params          # its own parameters (learned priors), possibly {}
    log_prob(params, z) -> scalar            # log p(z) of ONE code z (latent_dim,), in nats
    sample(params, key, num, latent_dim)     # (num, latent_dim) codes drawn from p(z)
    kl(params, mean, log_variance) | None    # KL(q(z|x) ‖ p(z)) in closed form, when it has one

| name | p(z) | closed-form KL to a diagonal Gaussian q |
| --- | --- | --- |
| standard_normal | N(0, I) | ½ Σᵢ [σᵢ² + μᵢ² − 1 − log σᵢ²] (Kingma & Welling 2014, app. B) |
| mixture_of_gaussians | Σₖ πₖ N(mₖ, diag sₖ²), π = softmax(logits), all learned | none |

Where the KL has no closed form, `rate` returns the single-sample estimate
log q(z|x) − log p(z) at the code z ~ q(z|x) the ELBO already draws: an unbiased estimate of the KL
(its expectation over z is the KL), so the ELBO stays an unbiased estimate of the same bound; it
can be negative for one z. A mixture prior is the simplest learned prior (Dilokthanakul et al.
2016, "Deep unsupervised clustering with Gaussian mixture VAEs"; Tomczak & Welling 2018, §2):
it lets the aggregate posterior have several modes, with gaps between clusters where the
lecture notes' N(0, I) asks for continuity.

All values are in nats; `log_prob` takes one code (vmap it over a batch), as `elbo` takes one
example. Every function works under `jax.jit`, `jax.vmap` and `jax.grad`.
"""

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from vae_jax import distributions
from vae_jax.errors import ConfigError, ShapeError

PRIORS = ("standard_normal", "mixture_of_gaussians")


class Prior(NamedTuple):
    """p(z) as pure functions; see the module docstring."""

    name: str
    init: Callable[[jax.Array, int], Any]
    log_prob: Callable[[Any, jax.Array], jax.Array]
    sample: Callable[[Any, jax.Array, int, int], jax.Array]
    kl: Optional[Callable[[Any, jax.Array, jax.Array], jax.Array]]


def _check_code(function: str, z: jax.Array, latent_dim: Optional[int] = None) -> None:
    if jnp.ndim(z) != 1 or (latent_dim is not None and jnp.shape(z)[0] != latent_dim):
        expected = "(latent_dim,)" if latent_dim is None else f"({latent_dim},)"
        raise ShapeError(f"{function}: z must be one code of shape {expected}, got "
                         f"{tuple(jnp.shape(z))}; use jax.vmap over a batch")


def _check_sample(function: str, key: jax.Array, num) -> None:
    distributions.check_key(key)
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ConfigError(f"{function}: num must be a positive integer, got {num!r}")


def standard_normal() -> Prior:
    """p(z) = N(0, I): no parameters, the closed-form KL of
    `vae_jax.distributions.gaussian_kl_to_standard_normal`; the prior of every preset."""

    def log_prob(params, z):
        del params
        _check_code("standard_normal.log_prob", z)
        return distributions.standard_normal_log_prob(z)

    def sample(params, key, num, latent_dim):
        del params
        _check_sample("standard_normal.sample", key, num)
        return jax.random.normal(key, (num, latent_dim))

    def kl(params, mean, log_variance):
        del params
        return distributions.gaussian_kl_to_standard_normal(mean, log_variance)

    return Prior("standard_normal", lambda key, latent_dim: {}, log_prob, sample, kl)


STANDARD_NORMAL = standard_normal()  # every model's default prior


def mixture_of_gaussians(num_components: int, spread: float = 1.0) -> Prior:
    """p(z) = Σₖ πₖ N(z; mₖ, diag exp(log sₖ²)) with π = softmax(logits); logits, means mₖ and
    log-variances log sₖ² are learned with the model.

    log p(z) = logsumexp_k [log πₖ + log N(z; mₖ, sₖ²)], computed stably in float32.

    Args:
      num_components: K ≥ 1 (K = 1 with m = 0, s = 1 is N(0, I)).
      spread: the standard deviation of the initial means mₖ ~ N(0, spread² I) (0: all at the
        origin); the initial sₖ = 1 and π uniform.

    Returns:
      A `Prior` with params {"logits": (K,), "means": (K, d), "log_variances": (K, d)} and no
      closed-form KL (`rate` estimates it).

    Raises:
      ConfigError: `num_components` is not a positive integer, or `spread` is negative.
    """
    if isinstance(num_components, bool) or not isinstance(num_components, int) or \
            num_components < 1:
        raise ConfigError(f"num_components must be a positive integer, got {num_components!r}")
    if not spread >= 0:
        raise ConfigError(f"spread must be ≥ 0, got {spread!r}")

    def init(key, latent_dim):
        distributions.check_key(key)
        return {"logits": jnp.zeros((num_components,), jnp.float32),
                "means": spread * jax.random.normal(key, (num_components, latent_dim)),
                "log_variances": jnp.zeros((num_components, latent_dim), jnp.float32)}

    def log_prob(params, z):
        _check_code("mixture_of_gaussians.log_prob", z, params["means"].shape[1])
        log_weights = jax.nn.log_softmax(params["logits"])
        components = jax.vmap(distributions.gaussian_log_prob, in_axes=(None, 0, 0))(
            z, params["means"], params["log_variances"])
        return jax.scipy.special.logsumexp(log_weights + components)

    def sample(params, key, num, latent_dim):
        _check_sample("mixture_of_gaussians.sample", key, num)
        if latent_dim != params["means"].shape[1]:
            raise ShapeError(f"mixture_of_gaussians.sample: latent_dim={latent_dim}, but the "
                             f"params are of a {params['means'].shape[1]}-D prior")
        component_key, noise_key = jax.random.split(key)
        k = jax.random.categorical(component_key, params["logits"], shape=(num,))
        return distributions.gaussian_sample(noise_key, params["means"][k],
                                             params["log_variances"][k])

    return Prior("mixture_of_gaussians", init, log_prob, sample, None)


def rate(prior: Prior, params: Any, mean: jax.Array, log_variance: jax.Array,
         z: jax.Array) -> jax.Array:
    """The rate KL(q(z|x) ‖ p(z)) of one example, q = N(mean, diag exp(log_variance)), in nats:
    `prior.kl` in closed form where the prior has one, else the single-sample estimate
    log q(z|x) − log p(z) at the code z ~ q(z|x) (unbiased; can be < 0 for one z).

    Args:
      prior, params: the prior and its params.
      mean, log_variance, z: float (latent_dim,) each; z drawn from q (reparameterised).

    Returns:
      A scalar, in nats.

    Raises:
      ShapeError: the shapes differ or are not one code (static checks).
    """
    distributions.check_one_shape("rate", mean=mean, log_variance=log_variance, z=z)
    _check_code("rate", z)
    if prior.kl is not None:
        return prior.kl(params, mean, log_variance)
    return distributions.gaussian_log_prob(z, mean, log_variance) - prior.log_prob(params, z)


def has_kl_per_dimension(prior: Prior) -> bool:
    """Whether KL(q(z|x) ‖ p(z)) splits into one closed-form term per latent dimension (N(0, I)):
    what free bits and a per-dimension rate need."""
    return prior.name == "standard_normal"


def make(name: str, num_components: int = 10) -> Prior:
    """The prior `name` of `PRIORS` (`num_components` for a mixture). Raises `ConfigError`
    naming the choices for another name."""
    if name == "standard_normal":
        return STANDARD_NORMAL
    if name == "mixture_of_gaussians":
        return mixture_of_gaussians(num_components)
    raise ConfigError(f"prior must be one of {PRIORS}, got {name!r}")

