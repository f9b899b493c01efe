r"""The evidence lower bound (ELBO), written for one example and vmapped over a batch.

For a latent-variable model p(x, z) = p(x|z)·p(z) and any encoder q(z|x),

    log p(x) = E_q[log p(x, z) − log q(z|x)] + KL(q(z|x) ‖ p(z|x))
             ≥ E_q[log p(x|z)] − KL(q(z|x) ‖ p(z))                       =: ELBO(x)

because the dropped KL(q ‖ p(z|x)) is ≥ 0. The first term is the *reconstruction* log-likelihood
(−distortion), estimated here with one reparameterised sample z = μ + σ·ε; the second is the
*rate*, in closed form for a Gaussian q and p(z) = N(0, I). β-VAE weighs the rate: the objective is
E_q[log p(x|z)] − β·KL, which equals the ELBO at β = 1.

All values are in nats per example. Losses for training are −objective averaged over the batch.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from vae_jax import distributions
from vae_jax.model import VAE, Params


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


def elbo(model: VAE, params: Params, x: jax.Array, key: jax.Array, beta: float = 1.0) -> ELBOTerms:
    """Single-sample ELBO terms for *one* example x of shape `model.input_shape`.

        z = μ(x) + σ(x)·ε,  ε ~ N(0, I)            (from `key`)
        reconstruction = log p(x|z) = model.log_likelihood(params, x, decode(z))
        kl             = KL(N(μ, σ²) ‖ N(0, I))    (closed form)
        objective      = reconstruction − β·kl

    Differentiable in `params` (reparameterisation); use `batch_elbo` for a batch.
    """
    mean, log_variance = model.encode(params, x)
    z = distributions.gaussian_sample(key, mean, log_variance)
    reconstruction = model.log_likelihood(params, x, model.decode(params, z))
    kl = distributions.gaussian_kl_to_standard_normal(mean, log_variance)
    return ELBOTerms(reconstruction - beta * kl, reconstruction, kl)


def batch_elbo(model: VAE, params: Params, x: jax.Array, key: jax.Array,
               beta: float = 1.0) -> ELBOTerms:
    """`elbo` vmapped over a batch x of shape (B, *input_shape): terms of shape (B,).

    `key` is split into one independent key per example.
    """
    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(elbo, in_axes=(None, None, 0, 0, None))(model, params, x, keys, beta)


def loss(params: Params, model: VAE, x: jax.Array, key: jax.Array,
         beta: float = 1.0) -> tuple[jax.Array, ELBOTerms]:
    """Training loss −mean_batch(reconstruction − β·kl) and the batch-mean terms (for `jax.grad`
    with ``has_aux=True``)."""
    terms = batch_elbo(model, params, x, key, beta)
    means = jax.tree.map(jnp.mean, terms)
    return -means.objective, means
