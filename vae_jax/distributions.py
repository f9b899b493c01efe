"""Densities, samplers and divergences of the distributions a VAE uses, in numerically stable forms.

Every function here treats its array arguments as *one* event: log-densities and divergences sum
over all axes and return a scalar. Call them on one example and `jax.vmap` over a batch (that is
how `vae_jax.objectives` uses them). All values are in nats.
"""

import math

import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2.0 * math.pi)


def _flat(values: jax.Array) -> jax.Array:
    """`values` as one axis: XLA's CPU backend computes on and reduces an image (H, W, 1), whose
    last axis has size 1, many times slower than the same numbers in one axis."""
    return jnp.reshape(values, (-1,))


def gaussian_sample(key: jax.Array, mean: jax.Array, log_variance: jax.Array) -> jax.Array:
    """Reparameterised sample z = μ + σ·ε, with σ = exp(½·log σ²) and ε ~ N(0, I) drawn from `key`.

    z is a differentiable function of (μ, log σ²), so gradients flow through the sample.

    Args:
      key: a typed PRNG key (`jax.random.key`).
      mean, log_variance: arrays of one shape, the parameters of a diagonal Gaussian.

    Returns:
      z, with the shape of `mean`.
    """
    epsilon = jax.random.normal(key, jnp.shape(mean), jnp.result_type(mean))
    return mean + jnp.exp(0.5 * log_variance) * epsilon


def gaussian_log_prob(x: jax.Array, mean: jax.Array, log_variance: jax.Array) -> jax.Array:
    """log N(x; μ, diag σ²) = −½ Σᵢ [log 2π + log σᵢ² + (xᵢ − μᵢ)² / σᵢ²], summed over all axes."""
    x, mean, log_variance = _flat(x), _flat(mean), _flat(log_variance)
    squared = jnp.square(x - mean) * jnp.exp(-log_variance)
    return -0.5 * jnp.sum(_LOG_2PI + log_variance + squared)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
    """log N(z; 0, I) = −½ Σᵢ [log 2π + zᵢ²], summed over all axes."""
    return -0.5 * jnp.sum(_LOG_2PI + jnp.square(z))


def gaussian_kl_to_standard_normal(mean: jax.Array, log_variance: jax.Array) -> jax.Array:
    """Closed-form KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σᵢ [σᵢ² + μᵢ² − 1 − log σᵢ²], summed over all axes.

    This is the lecture notes' −½ Σ (1 + log σ² − μ² − σ²). It is ≥ 0, and 0 exactly at μ = 0,
    log σ² = 0.
    """
    return 0.5 * jnp.sum(jnp.exp(log_variance) + jnp.square(mean) - 1.0 - log_variance)


def bernoulli_log_prob(logits: jax.Array, x: jax.Array) -> jax.Array:
    """log Bern(x; sigmoid(ℓ)) = Σᵢ [xᵢ·log σ(ℓᵢ) + (1 − xᵢ)·log σ(−ℓᵢ)] = Σᵢ [xᵢ·ℓᵢ − softplus(ℓᵢ)].

    The right-hand form needs one stable softplus per pixel, where optax's
    `sigmoid_binary_cross_entropy` takes two log-sigmoids; it is finite for any finite logit.
    `x` must lie in [0, 1]; values strictly between give the continuous cross-entropy, which is
    what training on grey levels uses.
    """
    logits, x = _flat(logits), _flat(x)
    return jnp.sum(x * logits - jax.nn.softplus(logits))


def categorical_kl(p: jax.Array, q: jax.Array) -> jax.Array:
    """KL(P ‖ Q) = Σᵢ pᵢ·log(pᵢ / qᵢ) in nats for discrete distributions (0·log 0 taken as 0).

    Not symmetric: KL(P ‖ Q) ≠ KL(Q ‖ P) in general. Divide by log 2 for bits.
    """
    return jnp.sum(jax.scipy.special.rel_entr(p, q))
