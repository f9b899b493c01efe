r"""The importance-weighted bound (IWAE, Burda et al. 2015): a log-likelihood estimate and a
training objective.

For one example x and K independent samples z_k ~ q(z|x), the importance weights
w_k = p(x, z_k) / q(z_k|x) have mean p(x) under q, so

    log p̂_K(x) = log (1/K) Σ_k w_k
               = logsumexp_k [log p(x|z_k) + log p(z_k) − log q(z_k|x)] − log K

is a stochastic lower bound on log p(x): E[log p̂_K(x)] ≤ log p(x) by Jensen's inequality. Its
expectation never decreases with K and tends to log p(x) as K → ∞ (Burda et al., Theorem 1); at
K = 1 its expectation is the ELBO. With K = 5000 it is the standard test log-likelihood estimate
for MNIST.

Here q(z|x) = N(μ, diag σ²) is the encoder and p(z) = N(0, I). Sample k is z_k = μ + σ·ε_k with
ε_k ~ N(0, I) drawn from ``fold_in(key, k)``, so sample k is the same whatever the chunk size, and
log q(z_k|x) = log N(ε_k; 0, I) − ½ Σ log σ² (the change of variables z = μ + σ·ε, exact and free
of the cancellation in (z − μ)/σ). p(x|z) is whatever the model's `log_likelihood` says.

Every function here is written for ONE example and is pure: jit, vmap and grad it as you like.
`batch_iwae_bound` is the vmapped form. All values are in nats.

Input checks (`vae_jax.ShapeError`, one line; `ConfigError` for K, the chunk size or a plain
autoencoder): x must have exactly the shape the function takes — `model.input_shape` for one
example, (B, *model.input_shape) for `batch_iwae_bound` and `iwae_loss` — and be floating point;
`key` must be one typed key of shape (); ε must be (n, latent_dim). All read static shapes, dtypes
and Python ints, so they run under `jax.jit` at trace time; values are not checked here.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp

from vae_jax import distributions, objectives
from vae_jax.errors import ConfigError, ShapeError
from vae_jax.model import VAE, Params, _model_first, check_input, prior_params


def _check(model: VAE, num_samples: int, chunk_size: int | None) -> None:
    if not model.stochastic:
        raise ConfigError("the importance-weighted bound needs a stochastic encoder q(z|x); this "
                          "model is a plain autoencoder (stochastic=False)")
    for name, value in (("num_samples", num_samples), ("chunk_size", chunk_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value <= 0):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def sample_noise(key: jax.Array, indices: jax.Array, latent_dim: int) -> jax.Array:
    """ε_k ~ N(0, I) for each sample index k in `indices` (shape (n,)): (n, latent_dim).

    ε_k comes from ``fold_in(key, k)`` alone, so it does not depend on which other samples are
    drawn with it. Raises `ShapeError` unless `key` is one typed key and `indices` is 1-D.
    """
    distributions.check_key(key)
    if jnp.ndim(indices) != 1:
        raise ShapeError(f"sample_noise: indices must have shape (n,), got {jnp.shape(indices)}")
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)
    return jax.vmap(lambda k: jax.random.normal(k, (latent_dim,)))(keys)


def _log_weight_terms(model: VAE, params: Params, x: jax.Array, epsilon: jax.Array,
                      x_input: jax.Array | None = None):
    """For a batch x (B, *input_shape) and noise ε (B, n, latent_dim), z_bk = μ_b + σ_b·ε_bk:
    (log p(x_b|z_bk), log p(z_bk) − log q(z_bk|x_b), (μ, log σ²)), the first two (B, n).
    With `x_input` (a corrupted x) the encoder reads it: q(z|x̃_b) is the proposal, p(x_b|z)
    scores the clean x_b.

    The networks run on the whole batch (the decoder on all B·n samples at once); the
    likelihoods and densities are per sample.
    """
    mean, log_variance = model.encode(params, x if x_input is None else x_input)
    z = mean[:, None] + jnp.exp(0.5 * log_variance)[:, None] * epsilon
    decoded = model.decode(params, z)
    per_sample = jax.vmap(jax.vmap(model.log_likelihood, (None, None, 0)), (None, 0, 0))
    log_px_z = per_sample(params, x, decoded)
    standard_normal = jax.vmap(jax.vmap(distributions.standard_normal_log_prob))
    log_qz = standard_normal(epsilon) - 0.5 * jnp.sum(log_variance, axis=-1, keepdims=True)
    return (log_px_z, _log_prior(model, prior_params(model, params), z) - log_qz,
            (mean, log_variance))


def _log_prior(model: VAE, learned: Any, z: jax.Array) -> jax.Array:
    """log p(z) of codes z (B, n, latent_dim) under the model's prior with params `learned`
    (`prior_params`): (B, n), in nats."""
    return jax.vmap(jax.vmap(lambda z_: model.prior.log_prob(learned, z_)))(z)


def log_importance_weights(model: VAE, params: Params, x: jax.Array,
                           epsilon: jax.Array) -> jax.Array:
    """log w_k = log p(x|z_k) + log p(z_k) − log q(z_k|x) for z_k = μ(x) + σ(x)·ε_k.

    Args:
      model: a stochastic VAE.
      params: its parameters.
      x: one example, shape `model.input_shape`.
      epsilon: standard normal noise, shape (n, latent_dim), one row per sample.

    Returns:
      The n log-weights, shape (n,), in nats; differentiable in `params` (reparameterisation).

    Raises:
      ShapeError: x is not one float example of shape `model.input_shape`, or epsilon is not
        (n, latent_dim); static checks, under jit too.
    """
    check_input(model, x, "log_importance_weights", batched=False)
    if jnp.ndim(epsilon) != 2 or jnp.shape(epsilon)[1] != model.latent_dim:
        raise ShapeError(f"log_importance_weights: epsilon must have shape (n, {model.latent_dim}) "
                         f"(one row of noise per sample), got {jnp.shape(epsilon)}")
    log_px_z, log_prior_ratio, _ = _log_weight_terms(model, params, x[None], epsilon[None])
    return log_px_z[0] + log_prior_ratio[0]


def iwae_bound(model: VAE, params: Params, x: jax.Array, key: jax.Array, num_samples: int,
               chunk_size: int | None = None) -> jax.Array:
    """log p̂_K(x) = logsumexp_k log w_k − log K for one example x, with K = `num_samples`.

    The K samples are drawn and weighed `chunk_size` at a time inside a `lax.map` (a scan): each
    chunk keeps only its logsumexp, and the chunks' logsumexps are combined at the end, so memory
    grows with `chunk_size`, not K. The last chunk is padded with samples of weight 0 (log-weight
    −inf). The result equals the unchunked one (``chunk_size=None``: all K at once) up to float
    rounding, because sample k is the same in both (module docstring).

    Args:
      model: a stochastic VAE (raises `ConfigError` for a plain autoencoder).
      params: its parameters.
      x: one example, shape `model.input_shape`.
      key: a typed PRNG key; it fixes the K samples.
      num_samples: K ≥ 1 (static).
      chunk_size: samples per step of the scan (static), or None for all K in one step.

    Returns:
      A scalar, in nats; differentiable in `params`.

    Raises:
      ConfigError: a plain autoencoder, or a bad `num_samples` or `chunk_size`.
      ShapeError: x is not one float example of shape `model.input_shape` (a batch points to
        `batch_iwae_bound`), or `key` is not one typed key; static checks, under jit too.
    """
    _check(model, num_samples, chunk_size)
    check_input(model, x, "iwae_bound", batched=False)
    distributions.check_key(key)
    chunk = num_samples if chunk_size is None else min(chunk_size, num_samples)
    num_chunks = -(-num_samples // chunk)

    def chunk_logsumexp(start: jax.Array) -> jax.Array:
        indices = start + jnp.arange(chunk)
        log_w = log_importance_weights(model, params, x,
                                       sample_noise(key, indices, model.latent_dim))
        return jax.nn.logsumexp(jnp.where(indices < num_samples, log_w, -jnp.inf))

    per_chunk = jax.lax.map(chunk_logsumexp, jnp.arange(num_chunks) * chunk)
    return jax.nn.logsumexp(per_chunk) - math.log(num_samples)


def batch_iwae_bound(model: VAE, params: Params, x: jax.Array, key: jax.Array, num_samples: int,
                     chunk_size: int | None = None) -> jax.Array:
    """`iwae_bound` vmapped over a batch x of shape (B, *input_shape): shape (B,), in nats.

    `key` (one typed key, shape ()) is split into one independent key per example. Raises as
    `iwae_bound`, with x a float batch (B ≥ 1, *model.input_shape).
    """
    _check(model, num_samples, chunk_size)
    check_input(model, x, "batch_iwae_bound", batched=True)
    distributions.check_key(key)
    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(iwae_bound, in_axes=(None, None, 0, 0, None, None))(
        model, params, x, keys, num_samples, chunk_size)


def iwae_objective(model: VAE, params: Params, x: jax.Array, key: jax.Array,
                   num_samples: int) -> jax.Array:
    """The IWAE training objective of one example: log p̂_K(x) with K = `num_samples` (to be
    maximised; at K = 1 it is a single-sample ELBO with a Monte Carlo KL).

    The gradient is the reparameterised one of Burda et al. (a weighted mean of the K samples'
    gradients, with normalised importance weights). Scalar, in nats; `jax.grad` it in `params`,
    vmap it over a batch. A training loss is −mean over the batch (`iwae_loss`). Raises as
    `iwae_bound`.
    """
    _check(model, num_samples, None)
    check_input(model, x, "iwae_objective", batched=False)
    return iwae_bound(model, params, x, key, num_samples)


def iwae_terms(model: VAE, params: Params, x: jax.Array, key: jax.Array,
               num_samples: int) -> objectives.ELBOTerms:
    """The IWAE objective with the usual ELBO terms, from the same K samples, for one example.

    Returns `ELBOTerms` whose ``objective`` is log p̂_K(x) (what IWAE training maximises), whose
    ``reconstruction`` is (1/K) Σ_k log p(x|z_k) and whose ``kl`` is the closed-form
    KL(q(z|x) ‖ N(0, I)); so ``.elbo`` is the K-sample ELBO estimate and ``objective ≥ elbo`` in
    expectation. x: one example, shape `model.input_shape`; key: one typed key, shape (). Raises
    as `iwae_bound`.
    """
    _check(model, num_samples, None)
    check_input(model, x, "iwae_terms", batched=False)
    distributions.check_key(key)
    return jax.tree.map(lambda term: term[0],
                        _batch_iwae_terms(model, params, x[None], key[None], num_samples))


def _batch_iwae_terms(model: VAE, params: Params, x: jax.Array, keys: jax.Array,
                      num_samples: int, x_input: jax.Array | None = None) -> objectives.ELBOTerms:
    """`iwae_terms` of each example of x (B, *input_shape) with its key of `keys` (B,), the
    networks run on the whole batch: terms of shape (B,). The encoder reads `x_input` when
    given (denoising: `iwae_loss`)."""
    _check(model, num_samples, None)
    epsilon = jax.vmap(sample_noise, (0, None, None))(keys, jnp.arange(num_samples),
                                                      model.latent_dim)
    log_px_z, log_prior_ratio, (mean, log_variance) = _log_weight_terms(model, params, x, epsilon,
                                                                        x_input)
    bound = jax.nn.logsumexp(log_px_z + log_prior_ratio, axis=-1) - math.log(num_samples)
    if model.prior.kl is not None:
        kl = jax.vmap(lambda m, v: model.prior.kl(prior_params(model, params), m, v))(mean, log_variance)
    else:  # the rate as the mean over the K samples of log q(z_k|x) − log p(z_k)
        kl = -jnp.mean(log_prior_ratio, axis=-1)
    return objectives.ELBOTerms(bound, jnp.mean(log_px_z, axis=-1), kl)


GRADIENT_ESTIMATORS = ("iwae", "dreg")


def _dreg_surrogate(model: VAE, params: Params, x: jax.Array, epsilon: jax.Array,
                    x_input: jax.Array | None = None) -> jax.Array:
    """Per example of x (B, *input_shape), noise ε (B, K, latent_dim): a scalar-per-example
    surrogate (B,) whose gradient is the doubly reparameterised (DReG) gradient of log p̂_K(x)
    (Tucker et al. 2019, "Doubly reparameterized gradient estimators for Monte Carlo objectives",
    Eq. 7-8):

        ∇_θ: Σ_k w̃_k ∇_θ log w_k              (the IWAE gradient of the generative params)
        ∇_φ: Σ_k w̃_k² ∂log w_k/∂z_k · ∂z_k/∂φ  (encoder: path derivative only, weights squared)

    with w̃ the normalised weights and log w_k = log p(x, z_k) − log q(z_k | sg(μ), sg(σ)). The
    two forwards are equal in value (XLA merges them); the surrogate's value is not the bound.
    """
    stop = jax.lax.stop_gradient
    mean, log_variance = model.encode(params, x if x_input is None else x_input)
    z = mean[:, None] + jnp.exp(0.5 * log_variance)[:, None] * epsilon

    def log_weights(params_, learned, z_):
        decoded = model.decode(params_, z_)
        per_sample = jax.vmap(jax.vmap(model.log_likelihood, (None, None, 0)), (None, 0, 0))
        log_q = jax.vmap(jax.vmap(distributions.gaussian_log_prob, (0, None, None)))(
            z_, stop(mean), stop(log_variance))
        return per_sample(params_, x, decoded) + _log_prior(model, learned, z_) - log_q

    # The prior is generative (θ) as a whole, also where it reads the encoder (the VampPrior):
    # its direct gradient takes the weights w̃, never w̃²; only the path through z is the
    # encoder's.
    generative = {name: value for name, value in params.items() if name != "encoder"}
    learned = prior_params(model, params)
    log_w_path = log_weights({**stop(generative), "encoder": params["encoder"]}, stop(learned), z)
    log_w_generative = log_weights({**generative, "encoder": stop(params["encoder"])}, learned,
                                   stop(z))
    weights = stop(jax.nn.softmax(log_w_path, axis=-1))
    return jnp.sum(weights * log_w_generative + jnp.square(weights) * log_w_path, axis=-1)


def iwae_loss(model: VAE, params: Params, x: jax.Array, key: jax.Array,
              num_samples: int, x_input: jax.Array | None = None,
              gradient_estimator: str = "iwae"
              ) -> tuple[jax.Array, objectives.ELBOTerms]:
    """Training loss −mean_batch log p̂_K(x) and the batch means of `iwae_terms`, for `jax.grad`
    with ``has_aux=True`` and ``argnums=1`` (params is the second argument); the drop-in
    counterpart of `vae_jax.objectives.loss` (β has no place in the IWAE bound, K takes its
    argument slot). x has shape (B, *input_shape); `key` is split into one key per example.
    Raises as `iwae_bound`, with x a float batch (B ≥ 1, *model.input_shape). The old order
    ``iwae_loss(params, model, …)`` still works for one release and warns (`DeprecationWarning`).

    Denoising: with `x_input` (x̃, a corrupted copy of x of its shape:
    `vae_jax.corruption.corrupt`) the K samples come from q(z|x̃) and each weight is
    p(x, z_k)/q(z_k|x̃), with the clean x. For any fixed x̃, q(·|x̃) is a valid proposal, so this
    is still a lower bound on log p(x) (the importance-weighted form of Im et al. 2017's denoising
    bound); with ``x_input = x`` it is the plain loss.

    `gradient_estimator` chooses what `jax.grad` of the loss returns; the loss's value and the
    terms are the same either way:

    - "iwae": the reparameterised gradient of Burda et al. 2015, Σ_k w̃_k ∇ log w_k.
    - "dreg": the doubly reparameterised gradient (Tucker et al. 2019): the same for the decoder
      (and a learned likelihood's params); for the encoder Σ_k w̃_k² times the path derivative
      of log w_k, with the same expectation and a lower variance, whose signal-to-noise ratio
      does not vanish as K grows (Rainforth et al. 2018). Its step runs the decoder's backward
      pass twice. Raises `ConfigError` for another name.
    """
    model, params = _model_first("iwae_loss", model, params)
    if gradient_estimator not in GRADIENT_ESTIMATORS:
        raise ConfigError(f"gradient_estimator must be one of {GRADIENT_ESTIMATORS}, got "
                          f"{gradient_estimator!r}")
    _check(model, num_samples, None)
    check_input(model, x, "iwae_loss", batched=True)
    objectives._check_x_input(model, x, x_input, "iwae_loss")  # pylint: disable=protected-access
    distributions.check_key(key)
    keys = jax.random.split(key, x.shape[0])
    means = jax.tree.map(jnp.mean, _batch_iwae_terms(model, params, x, keys, num_samples,
                                                     x_input))
    if gradient_estimator == "iwae":
        return -means.objective, means
    epsilon = jax.vmap(sample_noise, (0, None, None))(keys, jnp.arange(num_samples),
                                                      model.latent_dim)
    surrogate = jnp.mean(_dreg_surrogate(model, params, x, epsilon, x_input))
    value = jax.lax.stop_gradient(means.objective)
    return -(value + surrogate - jax.lax.stop_gradient(surrogate)), means
