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
| vampprior | (1/K) Σₖ q(z ∣ uₖ), the encoder's posteriors at K learned pseudo-inputs uₖ | none |

Where the KL has no closed form, `rate` returns the single-sample estimate
log q(z|x) − log p(z) at the code z ~ q(z|x) the ELBO already draws: an unbiased estimate of the KL
(its expectation over z is the KL), so the ELBO stays an unbiased estimate of the same bound; it
can be negative for one z. A mixture prior is the simplest learned prior (Dilokthanakul et al.
2016, "Deep unsupervised clustering with Gaussian mixture VAEs"; Tomczak & Welling 2018, §2):
it lets the aggregate posterior have several modes, with gaps between clusters where the
lecture notes' N(0, I) asks for continuity. The VampPrior (Tomczak & Welling 2018, "VAE with a
VampPrior", Eq. 9) is the mixture that approximates the optimal prior, the aggregate posterior,
with the model's own encoder: it reads the encoder, so it is built unbound (`vampprior`) and bound
to a model's encoder by `vae_jax.make_vae` (`Prior.bind`); its params are the pseudo-inputs, and
`vae_jax.model.prior_params` hands it the encoder's params too (`Prior.reads`).

All values are in nats; `log_prob` takes one code (vmap it over a batch), as `elbo` takes one
example. Every function works under `jax.jit`, `jax.vmap` and `jax.grad`.
"""

import functools
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from vae_jax import distributions
from vae_jax.errors import ConfigError, ShapeError

PRIORS = ("standard_normal", "mixture_of_gaussians", "vampprior")
_LOG_2PI = math.log(2.0 * math.pi)

# encode(encoder_params, x) -> (mean, log_variance), x (*batch, *input_shape): what a prior that
# reads the encoder is bound to.
Encode = Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]


class Prior(NamedTuple):
    """p(z) as pure functions; see the module docstring.

    Attributes:
      name, init, log_prob, sample, kl: as in the module docstring.
      reads: the names of the model's other top-level params the prior reads besides its own
        (``("encoder",)`` for the VampPrior); `vae_jax.model.prior_params` adds them to its params.
      bind: for a prior that needs the model's encoder (the VampPrior), ``bind(encode,
        input_shape) -> Prior``, which `vae_jax.make_vae` calls; None for a prior ready to use.
    """

    name: str
    init: Callable[[jax.Array, int], Any]
    log_prob: Callable[[Any, jax.Array], jax.Array]
    sample: Callable[[Any, jax.Array, int, int], jax.Array]
    kl: Optional[Callable[[Any, jax.Array, jax.Array], jax.Array]]
    reads: tuple[str, ...] = ()
    bind: Optional[Callable[[Encode, tuple[int, ...]], "Prior"]] = None


def _check_code(function: str, z: jax.Array, latent_dim: Optional[int] = None) -> None:
    if jnp.ndim(z) != 1 or (latent_dim is not None and jnp.shape(z)[0] != latent_dim):
        expected = "(latent_dim,)" if latent_dim is None else f"({latent_dim},)"
        raise ShapeError(f"{function}: z must be one code of shape {expected}, got "
                         f"{tuple(jnp.shape(z))}; use jax.vmap over a batch")


def _component_log_probs(z: jax.Array, means: jax.Array, log_variances: jax.Array) -> jax.Array:
    """log N(z; mₖ, diag sₖ²) of one code z (d,) under each of K diagonal Gaussians
    (means mₖ and log_variances log sₖ², (K, d)): (K,), in nats.

    The value is the direct sum Σ_d (z_d − m_kd)²/s_kd², exact in float32. Its gradient is that
    of the expanded form (z²)·pₖ − 2 z·(mₖ pₖ) + mₖ²·pₖ with pₖ = 1/sₖ² (the two are equal, so
    the value carries the expanded form's gradient through a stop-gradient correction): under
    `jax.vmap` over a batch of codes those are matrix products (B, d) × (d, K), where the
    gradient of the direct (B, K, d) sum is 20–50× slower on XLA:CPU (54 ms against 1.2 ms for
    B = 128, K = 500, d = 50). The expansion cancels terms of size Σ_d (z_d² + m_kd²) p_kd, so
    its value alone would be off by 0.05 nats at s² = e⁻⁸ (and by more in TF32 products, a
    GPU's default). The gradients with respect to z and mₖ stay at float32 rounding (1e-5 of
    their largest entry at s² = e⁻⁸); the one with respect to log sₖ² cancels like the value:
    its error is 1e-5 of its largest entry at s² = e⁻², 0.4 % at e⁻⁸ and 25 % at e⁻¹² (measured
    against float64), so a component narrower than that learns its variance from a noisier
    gradient. The products run at full float32 precision on every backend.
    """
    precision = jnp.exp(-log_variances)
    product = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)
    expanded = (product(jnp.square(z), precision.T) - 2.0 * product(z, (means * precision).T)
                + jnp.sum(jnp.square(means) * precision, axis=-1))
    exact = jnp.sum(jnp.square(z - means) * precision, axis=-1)
    distances = expanded + jax.lax.stop_gradient(exact - expanded)
    return -0.5 * (z.shape[-1] * _LOG_2PI + jnp.sum(log_variances, axis=-1) + distances)


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
        components = _component_log_probs(z, params["means"], params["log_variances"])
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


def vampprior(num_pseudo_inputs: int, init_mean: float = 0.05, init_std: float = 0.01,
              bounds: Optional[tuple[float, float]] = (0.0, 1.0)) -> Prior:
    """The VampPrior p(z) = (1/K) Σₖ q(z ∣ uₖ) (Tomczak & Welling 2018, Eq. 9): the mixture of the
    encoder's own Gaussian posteriors at K learned pseudo-inputs uₖ, an approximation of the
    aggregate posterior (the prior that maximises the ELBO, their Eq. 5).

        log p(z) = logsumexp_k log N(z; μ(uₖ), diag σ²(uₖ)) − log K

    It reads the encoder, so this returns an *unbound* prior: pass it to `vae_jax.make_vae`,
    `mlp_vae` or `conv_vae` (``prior=vampprior(500)``), which binds it to the model's encoder;
    then use ``model.prior`` with ``vae_jax.model.prior_params(model, params)``, which holds
    ``{"pseudo_inputs": (K, *input_shape), "encoder": <the encoder's params>}``. Gradients
    reach the pseudo-inputs and, through them, the encoder (as in the paper).

    Args:
      num_pseudo_inputs: K ≥ 1 (the paper's MNIST models use 500).
      init_mean, init_std: the initial pseudo-inputs are N(init_mean, init_std²) per pixel (the
        paper's 0.05 and 0.01 for MNIST).
      bounds: the encoder reads clip(uₖ, low, high) (the paper's hardtanh to [0, 1], the range of
        this project's images); None reads uₖ as it is.

    Returns:
      An unbound `Prior` named "vampprior" with no closed-form KL (`rate` estimates it).

    Raises:
      ConfigError: K is not a positive integer, init_std < 0, or bounds are not low < high; and
        when an unbound VampPrior's functions are called.
    """
    if isinstance(num_pseudo_inputs, bool) or not isinstance(num_pseudo_inputs, int) or \
            num_pseudo_inputs < 1:
        raise ConfigError(f"num_pseudo_inputs must be a positive integer, got "
                          f"{num_pseudo_inputs!r}")
    if not init_std >= 0:
        raise ConfigError(f"init_std must be ≥ 0, got {init_std!r}")
    if bounds is not None and (len(bounds) != 2 or not bounds[0] < bounds[1]):
        raise ConfigError(f"bounds must be (low, high) with low < high, or None; got {bounds!r}")

    def unbound(*args):
        del args
        raise ConfigError("vampprior reads the encoder: pass it to vae_jax.mlp_vae / conv_vae / "
                          "make_vae (prior=...) and use model.prior with "
                          "vae_jax.model.prior_params(model, params)")

    def bind(encode: Encode, input_shape: tuple[int, ...]) -> Prior:
        input_shape = tuple(input_shape)

        def init(key, latent_dim):
            del latent_dim
            distributions.check_key(key)
            noise = jax.random.normal(key, (num_pseudo_inputs, *input_shape))
            return {"pseudo_inputs": init_mean + init_std * noise}

        def components(params):
            inputs = params["pseudo_inputs"]
            if bounds is not None:
                inputs = jnp.clip(inputs, *bounds)
            return encode(params["encoder"], inputs)  # (K, latent_dim) each

        def log_prob(params, z):
            means, log_variances = components(params)
            _check_code("vampprior.log_prob", z, means.shape[1])
            return (jax.scipy.special.logsumexp(_component_log_probs(z, means, log_variances))
                    - math.log(num_pseudo_inputs))

        def sample(params, key, num, latent_dim):
            _check_sample("vampprior.sample", key, num)
            means, log_variances = components(params)
            if latent_dim != means.shape[1]:
                raise ShapeError(f"vampprior.sample: latent_dim={latent_dim}, but the encoder "
                                 f"gives {means.shape[1]}-D codes")
            component_key, noise_key = jax.random.split(key)
            k = jax.random.randint(component_key, (num,), 0, num_pseudo_inputs)
            return distributions.gaussian_sample(noise_key, means[k], log_variances[k])

        return Prior("vampprior", init, log_prob, sample, None, ("encoder",))

    return Prior("vampprior", unbound, unbound, unbound, None, ("encoder",), bind)


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
    """The prior `name` of `PRIORS` (`num_components`: the mixture's components or the
    VampPrior's pseudo-inputs; the VampPrior unbound). Raises `ConfigError` naming the choices
    for another name."""
    if name == "standard_normal":
        return STANDARD_NORMAL
    if name == "mixture_of_gaussians":
        return mixture_of_gaussians(num_components)
    if name == "vampprior":
        return vampprior(num_components)
    raise ConfigError(f"prior must be one of {PRIORS}, got {name!r}")

