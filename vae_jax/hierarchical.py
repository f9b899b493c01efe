r"""A VAE with two stochastic layers, x → z₁ → z₂ (Burda et al. 2015, "Importance Weighted
Autoencoders", §5 and Appendix C), as pure functions over a params pytree.

Generative model and approximate posterior:

    p(x, z₁, z₂) = p(z₂) · p(z₁ | z₂) · p(x | z₁)      p(z₂) = N(0, I),
                                                       p(z₁ | z₂) = N(μ_p(z₂), diag σ_p²(z₂))
    q(z₁, z₂ | x) = q(z₁ | x) · q(z₂ | z₁)              both diagonal Gaussians

One importance weight per joint sample (z₁ ~ q(z₁|x), z₂ ~ q(z₂|z₁), both reparameterised):

    log w = log p(x|z₁) + log p(z₁|z₂) + log p(z₂) − log q(z₁|x) − log q(z₂|z₁)

The importance-weighted bound with K samples is log (1/K) Σ_k w_k (`iwae_bound`, `iwae_loss`),
which rises towards log p(x) as K grows; with K = 1 it is the ELBO. `elbo` uses the closed-form
KL of the top layer, E_{z₁}[KL(q(z₂|z₁) ‖ N(0, I))] (Kingma & Welling 2014, app. B), for a lower
variance; the bottom layer's KL has no closed form (its prior depends on z₂), so its rate is the
estimate log q(z₁|x) − log p(z₁|z₂) at the drawn codes.

The rate is reported per layer (`HierarchicalTerms`): ``rate_bottom`` for z₁, ``rate_top`` for
z₂; reconstruction − rate_bottom − rate_top is the ELBO. All values are in nats per example;
every function works under `jax.jit`, `jax.vmap` and `jax.grad`.
"""

import math
from typing import Any, Callable, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions, likelihoods, networks
from vae_jax.errors import ConfigError, ShapeError
from vae_jax.model import check_input

Params = Any  # {"encoder", "encoder_top", "prior_bottom", "decoder"[, "likelihood"]}
Gaussian = tuple[jax.Array, jax.Array]  # (mean, log_variance)


class TwoLayerVAE(NamedTuple):
    """A VAE with two stochastic layers as pure functions.

    Attributes:
      init: ``init(key) -> params``.
      encode: ``encode(params, x) -> (mean, log_variance)`` of q(z₁|x), each (*batch, d₁).
      encode_top: ``encode_top(params, z1) -> (mean, log_variance)`` of q(z₂|z₁), (*batch, d₂).
      prior_bottom: ``prior_bottom(params, z2) -> (mean, log_variance)`` of p(z₁|z₂), (*batch, d₁).
      decode: ``decode(params, z1) -> decoded``: the parameters of p(x|z₁), (*batch, *input_shape).
      log_likelihood: ``log_likelihood(params, x, decoded) -> log p(x|z₁)`` of *one* example.
      observation_mean: ``observation_mean(decoded) -> E[x|z₁]``.
      input_shape: the shape of one example.
      latent_dims: (d₁, d₂), the sizes of z₁ and z₂.
      likelihood: the name of p(x|z₁) (`vae_jax.likelihoods.LIKELIHOODS`), or None.
    """

    init: Callable[[jax.Array], Params]
    encode: Callable[[Params, jax.Array], Gaussian]
    encode_top: Callable[[Params, jax.Array], Gaussian]
    prior_bottom: Callable[[Params, jax.Array], Gaussian]
    decode: Callable[[Params, jax.Array], jax.Array]
    log_likelihood: Callable[[Params, jax.Array, jax.Array], jax.Array]
    observation_mean: Callable[[jax.Array], jax.Array]
    input_shape: tuple[int, ...]
    latent_dims: tuple[int, int]
    likelihood: Optional[str] = None
    stochastic: bool = True  # for `vae_jax.model.check_input`

    @property
    def latent_dim(self) -> int:
        """d₁, the size of the codes `encode` gives (the layer pictures and k-NN read)."""
        return self.latent_dims[0]


class HierarchicalTerms(NamedTuple):
    """Per-example terms of a two-layer bound, in nats.

    Attributes:
      objective: the bound (the ELBO for K = 1, else the importance-weighted bound).
      reconstruction: log p(x|z₁) (mean over the K samples).
      rate_bottom: the rate of z₁, log q(z₁|x) − log p(z₁|z₂) (mean over the samples).
      rate_top: the rate of z₂, KL(q(z₂|z₁) ‖ N(0, I)) in closed form (mean over the samples).
    """

    objective: jax.Array
    reconstruction: jax.Array
    rate_bottom: jax.Array
    rate_top: jax.Array

    @property
    def kl(self) -> jax.Array:
        """The whole rate, rate_bottom + rate_top (`vae_jax.ELBOTerms.kl`'s counterpart)."""
        return self.rate_bottom + self.rate_top

    @property
    def elbo(self) -> jax.Array:
        """The objective (`vae_jax.ELBOTerms.elbo`'s counterpart)."""
        return self.objective


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ShapeError(f"{name} must be a positive integer, got {value!r}")
    return value


def two_layer_mlp_vae(input_shape: Sequence[int], latent_dims: Sequence[int] = (100, 50),
                      hidden_dims: Sequence[Sequence[int]] = ((200, 200), (100, 100)),
                      likelihood: Optional[likelihoods.Likelihood] = None,
                      dtype: Any = jnp.float32) -> TwoLayerVAE:
    """Burda et al.'s two-stochastic-layer architecture with ReLU MLPs (their Appendix C):

        q(z₁|x):  x ↦ hidden_dims[0] ↦ (μ, log σ²) of d₁        p(x|z₁):  z₁ ↦ reversed(hidden_dims[0]) ↦ x
        q(z₂|z₁): z₁ ↦ hidden_dims[1] ↦ (μ, log σ²) of d₂       p(z₁|z₂): z₂ ↦ reversed(hidden_dims[1]) ↦ (μ, log σ²)

    The defaults are their MNIST model: 784-200-200-100 and 100-100-100-50. The likelihood
    defaults to Bernoulli; `dtype` is the networks' compute dtype (`vae_jax.networks`).

    Raises:
      ShapeError: a size is not a positive integer, or there are not two latent sizes and two
        hidden-width tuples.
      ConfigError: `likelihood` is not a `vae_jax.Likelihood`.
    """
    input_shape = tuple(_positive_int("input_shape entries", int(d)) for d in input_shape)
    pairs = all(isinstance(value, (tuple, list)) and len(value) == 2
                for value in (latent_dims, hidden_dims))
    if not pairs or not all(isinstance(widths, (tuple, list)) for widths in hidden_dims):
        raise ShapeError(f"two_layer_mlp_vae takes latent_dims (d1, d2) and hidden_dims "
                         f"((widths of layer 1), (widths of layer 2)), e.g. (100, 50) and "
                         f"((200, 200), (100, 100)); got {latent_dims!r} and {hidden_dims!r}")
    d1, d2 = (_positive_int("latent_dims entries", d) for d in latent_dims)
    widths = [tuple(_positive_int("hidden_dims entries", h) for h in layer)
              for layer in hidden_dims]
    likelihood = likelihoods.bernoulli() if likelihood is None else likelihood
    if not isinstance(likelihood, likelihoods.Likelihood):
        raise ConfigError(f"likelihood must be a vae_jax.Likelihood (e.g. vae_jax.bernoulli()), "
                          f"got {likelihood!r}")
    modules = {
        "encoder": networks.MLPEncoder(widths[0], d1, len(input_shape), True, dtype),
        "encoder_top": networks.MLPEncoder(widths[1], d2, 1, True, dtype),
        "prior_bottom": networks.MLPEncoder(widths[1][::-1], d1, 1, True, dtype),
        "decoder": networks.MLPDecoder(widths[0][::-1], input_shape, dtype),
    }
    inputs = {"encoder": input_shape, "encoder_top": (d1,), "prior_bottom": (d2,),
              "decoder": (d1,)}

    def init(key: jax.Array) -> Params:
        keys = jax.random.split(key, len(modules))
        params = {name: module.init(k, jnp.zeros(inputs[name], jnp.float32))["params"]
                  for k, (name, module) in zip(keys, modules.items())}
        own = likelihood.init(input_shape)
        return {**params, "likelihood": own} if own else params

    def apply(name: str) -> Callable[[Params, jax.Array], Any]:
        def function(params: Params, value: jax.Array):
            shape = tuple(jnp.shape(value))
            if shape[len(shape) - len(inputs[name]):] != inputs[name]:
                raise ShapeError(f"{name} takes (*batch, {', '.join(map(str, inputs[name]))}), "
                                 f"got {shape}")
            return modules[name].apply({"params": params[name]}, value)
        return function

    def log_likelihood(params: Params, x: jax.Array, decoded: jax.Array) -> jax.Array:
        return likelihood.log_prob(params.get("likelihood", {}), x, decoded)

    return TwoLayerVAE(init, apply("encoder"), apply("encoder_top"), apply("prior_bottom"),
                       apply("decoder"), log_likelihood, likelihood.mean, input_shape, (d1, d2),
                       likelihood.name)


def _log_weight_terms(model: TwoLayerVAE, params: Params, x: jax.Array, key: jax.Array,
                      num_samples: int) -> dict[str, jax.Array]:
    """For one example x and K = `num_samples` joint samples: the parts of log w_k, each (K,):
    "log_px" log p(x|z₁), "log_p1" log p(z₁|z₂), "log_p2" log p(z₂), "log_q1" log q(z₁|x),
    "log_q2" log q(z₂|z₁), and "kl_top" KL(q(z₂|z₁) ‖ N(0, I))."""
    key_bottom, key_top = jax.random.split(key)
    mean1, log_variance1 = model.encode(params, x)
    epsilon1 = jax.random.normal(key_bottom, (num_samples, model.latent_dims[0]))
    z1 = mean1 + jnp.exp(0.5 * log_variance1) * epsilon1  # (K, d1)
    mean2, log_variance2 = model.encode_top(params, z1)
    epsilon2 = jax.random.normal(key_top, (num_samples, model.latent_dims[1]))
    z2 = mean2 + jnp.exp(0.5 * log_variance2) * epsilon2  # (K, d2)
    prior_mean, prior_log_variance = model.prior_bottom(params, z2)
    decoded = model.decode(params, z1)
    gaussian = jax.vmap(distributions.gaussian_log_prob)
    return {
        "log_px": jax.vmap(model.log_likelihood, (None, None, 0))(params, x, decoded),
        "log_p1": gaussian(z1, prior_mean, prior_log_variance),
        "log_p2": jax.vmap(distributions.standard_normal_log_prob)(z2),
        # log q(z|x) at z = μ + σ·ε is log N(ε; 0, I) − ½ Σ log σ²: exact, no division by σ.
        "log_q1": (jax.vmap(distributions.standard_normal_log_prob)(epsilon1)
                   - 0.5 * jnp.sum(log_variance1)),
        "log_q2": (jax.vmap(distributions.standard_normal_log_prob)(epsilon2)
                   - 0.5 * jnp.sum(log_variance2, axis=-1)),
        "kl_top": jax.vmap(distributions.gaussian_kl_to_standard_normal)(mean2, log_variance2),
    }


def _check(model: TwoLayerVAE, x: jax.Array, key: jax.Array, num_samples: int,
           function: str, batched: bool) -> None:
    if not isinstance(model, TwoLayerVAE):
        raise ConfigError(f"{function} takes a TwoLayerVAE (vae_jax.hierarchical."
                          f"two_layer_mlp_vae), got {type(model).__name__}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples <= 0:
        raise ConfigError(f"{function}: num_samples must be a positive integer, got "
                          f"{num_samples!r}")
    check_input(model, x, function, batched=batched)
    distributions.check_key(key)


def terms(model: TwoLayerVAE, params: Params, x: jax.Array, key: jax.Array,
          num_samples: int = 1) -> HierarchicalTerms:
    """The bound of *one* example x (`model.input_shape`) with K = `num_samples` joint samples
    drawn with `key`, and its parts (`HierarchicalTerms`, scalars in nats):

        K = 1:  objective = log p(x|z₁) − [log q(z₁|x) − log p(z₁|z₂)] − KL(q(z₂|z₁) ‖ N(0, I))
                          = reconstruction − rate_bottom − rate_top                  (the ELBO)
        K > 1:  objective = log (1/K) Σ_k w_k                           (Burda et al. 2015, Eq. 8)

    The ELBO's top-layer KL is closed-form given z₁ (its expectation over z₂ is the sampled
    log q(z₂|z₁) − log p(z₂)); the importance weights use the sampled densities. Differentiable
    in `params` (both layers reparameterised).

    Raises:
      ConfigError: `model` is not a `TwoLayerVAE`, or num_samples is not a positive integer.
      ShapeError: x is not one float example of `model.input_shape`, or `key` not one typed key.
      DataError: a concrete x has values its likelihood cannot score.
    """
    _check(model, x, key, num_samples, "hierarchical.terms", batched=False)
    parts = _log_weight_terms(model, params, x, key, num_samples)
    rate_bottom = parts["log_q1"] - parts["log_p1"]
    if num_samples == 1:
        objective = parts["log_px"][0] - rate_bottom[0] - parts["kl_top"][0]
    else:
        log_w = parts["log_px"] - rate_bottom + parts["log_p2"] - parts["log_q2"]
        objective = jax.nn.logsumexp(log_w) - math.log(num_samples)
    return HierarchicalTerms(objective, jnp.mean(parts["log_px"]), jnp.mean(rate_bottom),
                             jnp.mean(parts["kl_top"]))


def batch_terms(model: TwoLayerVAE, params: Params, x: jax.Array, key: jax.Array,
                num_samples: int = 1) -> HierarchicalTerms:
    """`terms` of each example of a batch x (B, *input_shape), `key` split into one key per
    example: `HierarchicalTerms` of (B,) arrays. Raises as `terms`, with x a float batch."""
    _check(model, x, key, num_samples, "hierarchical.batch_terms", batched=True)
    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(lambda x_, k: terms(model, params, x_, k, num_samples))(x, keys)


def loss(model: TwoLayerVAE, params: Params, x: jax.Array, key: jax.Array,
         num_samples: int = 1) -> tuple[jax.Array, HierarchicalTerms]:
    """Training loss −mean_batch(bound) and the batch means of `batch_terms`, for `jax.grad`
    with ``has_aux=True`` and ``argnums=1``: the ELBO with ``num_samples=1``, the IWAE objective
    (Burda et al. 2015) with more. x (B, *input_shape); raises as `batch_terms`."""
    means = jax.tree.map(jnp.mean, batch_terms(model, params, x, key, num_samples))
    return -means.objective, means


def iwae_bound(model: TwoLayerVAE, params: Params, x: jax.Array, key: jax.Array,
               num_samples: int, chunk_size: Optional[int] = None) -> jax.Array:
    """The importance-weighted bound log (1/K) Σ_k w_k of *one* example x with K = `num_samples`
    joint samples, `chunk_size` at a time (memory grows with the chunk, not with K; None: all
    at once), for the test log-likelihood (Burda et al. 2015, Eq. 8). Sample k draws its noise
    from ``fold_in(key, k)``, so the value does not depend on `chunk_size`. A scalar, in nats.

    Raises as `terms`, and `ConfigError` for a chunk_size that is not a positive integer.
    """
    _check(model, x, key, num_samples, "hierarchical.iwae_bound", batched=False)
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(
            chunk_size, int) or chunk_size <= 0):
        raise ConfigError(f"hierarchical.iwae_bound: chunk_size must be a positive integer or "
                          f"None, got {chunk_size!r}")
    chunk = num_samples if chunk_size is None else min(chunk_size, num_samples)
    num_chunks = -(-num_samples // chunk)

    def log_weights(index: jax.Array) -> jax.Array:
        parts = _log_weight_terms(model, params, x, jax.random.fold_in(key, index), 1)
        return (parts["log_px"] + parts["log_p1"] + parts["log_p2"] - parts["log_q1"]
                - parts["log_q2"])[0]

    def chunk_logsumexp(start: jax.Array) -> jax.Array:
        indices = start + jnp.arange(chunk)
        log_w = jax.vmap(log_weights)(indices)
        return jax.nn.logsumexp(jnp.where(indices < num_samples, log_w, -jnp.inf))

    starts = jnp.arange(num_chunks) * chunk
    return jax.nn.logsumexp(jax.lax.map(chunk_logsumexp, starts)) - math.log(num_samples)


def sample(model: TwoLayerVAE, params: Params, key: jax.Array, num: int) -> jax.Array:
    """Ancestral samples of the bottom codes: z₂ ~ N(0, I), z₁ ~ p(z₁|z₂); (num, d₁). Decode
    them (`model.decode`, `model.observation_mean`) for images."""
    distributions.check_key(key)
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ConfigError(f"hierarchical.sample: num must be a positive integer, got {num!r}")
    top_key, bottom_key = jax.random.split(key)
    z2 = jax.random.normal(top_key, (num, model.latent_dims[1]))
    mean, log_variance = model.prior_bottom(params, z2)
    return mean + jnp.exp(0.5 * log_variance) * jax.random.normal(bottom_key, mean.shape)
