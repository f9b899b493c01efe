r"""The evidence lower bound (ELBO), written for one example and vmapped over a batch.

For a latent-variable model p(x, z) = p(x|z)·p(z) and any encoder q(z|x),

    log p(x) = E_q[log p(x, z) − log q(z|x)] + KL(q(z|x) ‖ p(z|x))
             ≥ E_q[log p(x|z)] − KL(q(z|x) ‖ p(z))                       =: ELBO(x)

because the dropped KL(q ‖ p(z|x)) is ≥ 0. The first term is the *reconstruction* log-likelihood
(−distortion), estimated here with one reparameterised sample z = μ + σ·ε; the second is the
*rate*, in closed form for a Gaussian q and p(z) = N(0, I). β-VAE weighs the rate: the objective is
E_q[log p(x|z)] − β·KL, which equals the ELBO at β = 1.

All values are in nats per example. Losses for training are −objective averaged over the batch.

Input checks (`vae_jax.ShapeError`, one line): x must have exactly the shape the function takes —
`model.input_shape` for `elbo`, (B, *model.input_shape) for `batch_elbo` and `loss` — and be
floating point; `key` must be one typed key of shape (). These read static shapes and dtypes, so
they run under `jax.jit` (at trace time) and cost nothing per step. Values (NaN, range) of a
traced x are not checked here: that needs the data on the host, which `check_input` does for a
concrete x and `vae_jax.app.evaluation.evaluate` and the scripts do once per data set.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from vae_jax import distributions
from vae_jax.model import VAE, Params, _model_first, check_input


class ELBOTerms(NamedTuple):
    """The terms of the (β-weighted) ELBO, in nats, per example (or averaged over a batch).

    Attributes:
      objective: reconstruction − β·kl; the ELBO itself when β = 1.
      reconstruction: the one-sample estimate of E_q[log p(x|z)] (≤ 0 for binary data).
      kl: KL(q(z|x) ‖ N(0, I)), the rate (≥ 0).
    """

    objective: jax.Array
    reconstruction: jax.Array
    kl: jax.Array

    @property
    def elbo(self) -> jax.Array:
        """The unweighted ELBO, reconstruction − kl, whatever β was."""
        return self.reconstruction - self.kl


def _reconstruction_and_kl_per_dim(model: VAE, params: Params, x: jax.Array,
                                   keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """For a batch x (B, *input_shape) and one key per example (B,): (log p(x_b|z_b) (B,) with
    z_b = μ_b + σ_b·ε_b, the KL of each latent dimension (B, latent_dim)).

    The networks run on the whole batch at once, so each layer is one matrix product whose weight
    gradient is one product over the batch; the sampling, likelihood and KL are per example.
    """
    per_example = jax.vmap(model.log_likelihood, (None, 0, 0))
    mean, log_variance = model.encode(params, x)
    if not model.stochastic:  # plain autoencoder: z is the code itself, and there is no KL
        return per_example(params, x, model.decode(params, mean)), jnp.zeros_like(mean)
    z = jax.vmap(distributions.gaussian_sample)(keys, mean, log_variance)
    reconstruction = per_example(params, x, model.decode(params, z))
    kl_per_dim = jax.vmap(jax.vmap(distributions.gaussian_kl_to_standard_normal))(mean,
                                                                                  log_variance)
    return reconstruction, kl_per_dim


def elbo(model: VAE, params: Params, x: jax.Array, key: jax.Array, beta: float = 1.0) -> ELBOTerms:
    """Single-sample ELBO terms for *one* example x of shape `model.input_shape`.

        z = μ(x) + σ(x)·ε,  ε ~ N(0, I)            (from `key`)
        reconstruction = log p(x|z) = model.log_likelihood(params, x, decode(z))
        kl             = KL(N(μ, σ²) ‖ N(0, I))    (closed form)
        objective      = reconstruction − β·kl

    Differentiable in `params` (reparameterisation); use `batch_elbo` for a batch. For the plain
    autoencoder (``model.stochastic`` False) z = μ(x), kl = 0 and `key` is unused.

    Args:
      model: the VAE (static under jit).
      params: its parameters.
      x: one example, float, shape `model.input_shape`.
      key: one typed PRNG key, shape ().
      beta: the KL weight β.

    Returns:
      `ELBOTerms` of scalars, in nats.

    Raises:
      ShapeError: x is not one float example of shape `model.input_shape` (a batch points to
        `batch_elbo`), or `key` is not one typed key; static checks, under jit too.
    """
    check_input(model, x, "elbo", batched=False)
    distributions.check_key(key)
    reconstruction, kl_per_dim = _reconstruction_and_kl_per_dim(model, params, x[None],
                                                                key[None])
    kl = jnp.sum(kl_per_dim)
    return ELBOTerms(reconstruction[0] - beta * kl, reconstruction[0], kl)


def batch_elbo(model: VAE, params: Params, x: jax.Array, key: jax.Array,
               beta: float = 1.0) -> ELBOTerms:
    """`elbo` vmapped over a batch x of shape (B, *input_shape): terms of shape (B,), in nats.

    `key` (one typed key, shape ()) is split into one independent key per example.

    Raises:
      ShapeError: x is not a float batch (B ≥ 1, *model.input_shape), or `key` is not one typed
        key; static checks, under jit too.
    """
    check_input(model, x, "batch_elbo", batched=True)
    distributions.check_key(key)
    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(elbo, in_axes=(None, None, 0, 0, None))(model, params, x, keys, beta)


def loss(model: VAE, params: Params, x: jax.Array, key: jax.Array, beta: float = 1.0,
         free_bits: float = 0.0) -> tuple[jax.Array, ELBOTerms]:
    """Training loss and the batch-mean ELBO terms (for `jax.grad` with ``has_aux=True``).

        loss = −mean_b[reconstruction_b] + β · Σ_d max(λ, mean_b[KL_{b,d}])

    with λ = `free_bits` nats per latent dimension (Kingma et al. 2016): dimensions whose
    batch-mean KL is below λ are not pushed further towards the prior. With λ = 0 this is
    −mean_b(reconstruction − β·kl). The returned terms are the true (unclipped) ones.

    Differentiate in `params`, the second argument::

        grads, terms = jax.grad(vae_jax.loss, argnums=1, has_aux=True)(model, params, x, key)

    The old order ``loss(params, model, …)`` still works for one release and warns
    (`DeprecationWarning`).

    Args:
      model: the VAE (static under jit).
      params: the model's parameters (differentiated).
      x: a float batch, shape (B, *model.input_shape).
      key: one typed PRNG key, shape (); split into one key per example.
      beta: the KL weight β.
      free_bits: λ, in nats per latent dimension.

    Returns:
      (loss, `ELBOTerms` of batch means), scalars in nats per example.

    Raises:
      ShapeError: x is not a float batch (B ≥ 1, *model.input_shape), or `key` is not one typed
        key; static checks at trace time, nothing is added to the compiled step.
    """
    model, params = _model_first("loss", model, params)
    check_input(model, x, "loss", batched=True)
    distributions.check_key(key)
    keys = jax.random.split(key, x.shape[0])
    reconstruction, kl_per_dim = _reconstruction_and_kl_per_dim(model, params, x, keys)
    mean_reconstruction = jnp.mean(reconstruction)
    mean_kl_per_dim = jnp.mean(kl_per_dim, axis=0)
    kl_term = jnp.sum(jnp.maximum(mean_kl_per_dim, free_bits))
    kl = jnp.sum(mean_kl_per_dim)
    objective = mean_reconstruction - beta * kl_term
    return -objective, ELBOTerms(objective, mean_reconstruction, kl)


def kl_weight_schedule(beta: float = 1.0, warmup_steps: int = 0) -> optax.Schedule:
    """The KL weight as an optax schedule: β_t = β·min(1, t / warmup_steps).

    Linear KL warm-up (Bowman et al. 2016; Sønderby et al. 2016) starts training as an
    autoencoder and brings the KL term in over `warmup_steps` steps; with 0 the weight is β
    throughout.
    """
    if warmup_steps <= 0:
        return optax.constant_schedule(beta)
    return optax.linear_schedule(0.0, beta, warmup_steps)
