"""Densities, samplers and divergences of the distributions a VAE uses, in numerically stable forms.

Every function here treats its array arguments as *one* event: log-densities and divergences sum
over all axes and return a scalar. Call them on one example and `jax.vmap` over a batch (that is
how `vae_jax.objectives` uses them). All values are in nats.

Input checks. The arrays of one event must have one shape, and a key must be one typed key: each
function raises `vae_jax.ShapeError` (one line naming the shapes) instead of broadcasting. These
checks read static shapes and dtypes only, so they run under `jax.jit`, `vmap` and `grad` at trace
time and cost nothing per call; values are never checked here (that would need a host sync).

Float32. Every function is finite, and has finite gradients, wherever its exact value is finite and
representable; `bernoulli_log_prob` is accurate to a few float32 ulps for every x in [0, 1] and
every finite logit (no cancellation), `gaussian_log_prob` is finite at x = μ for any variance.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.errors import DataError, ShapeError

_LOG_2PI = math.log(2.0 * math.pi)


def _flat(values: jax.Array) -> jax.Array:
    """`values` as one axis: XLA's CPU backend computes on and reduces an image (H, W, 1), whose
    last axis has size 1, many times slower than the same numbers in one axis."""
    return jnp.reshape(values, (-1,))


def check_one_shape(function: str, **arrays) -> None:
    """Raises `ShapeError` unless the keyword `arrays` (name=array) all have one shape: the arrays
    of one event must not broadcast silently. `function` names the caller in the one-line
    message. Reads static shapes only, so it runs under jit at trace time and costs nothing."""
    shapes = {name: tuple(jnp.shape(array)) for name, array in arrays.items()}
    if len(set(shapes.values())) > 1:
        named = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ShapeError(f"{function} takes arrays of one event with one shape, got {named}; "
                         "broadcast them explicitly (jnp.broadcast_to) or jax.vmap over a batch")


def check_key(key, name: str = "key", shape: tuple[int, ...] = ()) -> None:
    """Raises `ShapeError` unless `key` is a typed PRNG key array (`jax.random.key`) of `shape`:
    () for one key, (B,) for one key per example. Static (dtype and shape): free under jit."""
    dtype = getattr(key, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jax.dtypes.prng_key):
        raise ShapeError(f"{name} must be a typed PRNG key (jax.random.key(seed)), got "
                         f"{_describe(key)}; wrap raw uint32 key data with "
                         "jax.random.wrap_key_data")
    if tuple(key.shape) != tuple(shape):
        what = "one key, shape ()" if shape == () else f"one key per example, shape {shape}"
        hint = ("split it (jax.random.split) and vmap for a batch" if shape == ()
                else "pass one key of shape (); it is split per example")
        raise ShapeError(f"{name} must be {what}, got a key array of shape {tuple(key.shape)}; "
                         f"{hint}")


def _describe(value) -> str:
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is None or dtype is None:
        return type(value).__name__
    return f"{dtype}{list(shape)}"


def gaussian_sample(key: jax.Array, mean: jax.Array, log_variance: jax.Array) -> jax.Array:
    """Reparameterised sample z = μ + σ·ε, with σ = exp(½·log σ²) and ε ~ N(0, I) drawn from `key`.

    z is a differentiable function of (μ, log σ²), so gradients flow through the sample
    (Kingma & Welling 2014, §2.4).

    Args:
      key: one typed PRNG key (`jax.random.key`), shape ().
      mean, log_variance: float arrays of one shape, the parameters of a diagonal Gaussian.

    Returns:
      z, with the shape and dtype of `mean`.

    Raises:
      ShapeError: `key` is not one typed key, or `mean` and `log_variance` differ in shape
        (static checks, under jit too).
    """
    check_key(key)
    check_one_shape("gaussian_sample", mean=mean, log_variance=log_variance)
    epsilon = jax.random.normal(key, jnp.shape(mean), jnp.result_type(mean))
    return mean + jnp.exp(0.5 * log_variance) * epsilon


def gaussian_log_prob(x: jax.Array, mean: jax.Array, log_variance: jax.Array) -> jax.Array:
    """log N(x; μ, diag σ²) = −½ Σᵢ [log 2π + log σᵢ² + ((xᵢ − μᵢ)/σᵢ)²], summed over all axes.

    The scaled residual (x − μ)·exp(−½ log σ²) is squared after scaling (no overflow of 1/σ² alone
    while the product is representable), and is 0 wherever x = μ exactly, for any variance (0·∞ is
    NaN in float32), with gradients 0 there too.

    Args:
      x, mean, log_variance: float arrays of one shape (one event); broadcast a shared variance
        explicitly (as `vae_jax.likelihoods.gaussian` does).

    Returns:
      A scalar, in nats.

    Raises:
      ShapeError: the three shapes differ (a static check, under jit too).
    """
    check_one_shape("gaussian_log_prob", x=x, mean=mean, log_variance=log_variance)
    x, mean, log_variance = _flat(x), _flat(mean), _flat(log_variance)
    residual = x - mean
    exact = residual == 0
    # Double where: the unused branch must not see exp(−½ log σ²) = ∞ at x = μ, or its gradient
    # (0·∞) would be NaN.
    scaled = residual * jnp.exp(-0.5 * jnp.where(exact, 0.0, log_variance))
    squared = jnp.where(exact, 0.0, jnp.square(scaled))
    return -0.5 * jnp.sum(_LOG_2PI + log_variance + squared)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
    """log N(z; 0, I) = −½ Σᵢ [log 2π + zᵢ²], summed over all axes: a scalar, in nats."""
    return -0.5 * jnp.sum(_LOG_2PI + jnp.square(z))


def gaussian_kl_to_standard_normal(mean: jax.Array, log_variance: jax.Array) -> jax.Array:
    """Closed-form KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σᵢ [σᵢ² + μᵢ² − 1 − log σᵢ²], summed over all
    axes, in nats.

    This is the lecture notes' −½ Σ (1 + log σ² − μ² − σ²) (Kingma & Welling 2014, appendix B).
    Computed as ½ Σᵢ [(expm1(log σᵢ²) − log σᵢ²) + μᵢ²]: both terms are ≥ 0, so it is ≥ 0 in
    float32 too, 0 exactly at μ = 0, log σ² = 0, and accurate near 0 where σ² − 1 − log σ² cancels.

    Args:
      mean, log_variance: float arrays of one shape (one event).

    Returns:
      A scalar, in nats.

    Raises:
      ShapeError: the shapes differ (a static check, under jit too).
    """
    check_one_shape("gaussian_kl_to_standard_normal", mean=mean, log_variance=log_variance)
    return 0.5 * jnp.sum((jnp.expm1(log_variance) - log_variance) + jnp.square(mean))


@jax.custom_jvp
def _bernoulli_log_prob_elementwise(logits: jax.Array, x: jax.Array) -> jax.Array:
    """(x − H(ℓ))·ℓ − log1p(exp(−|ℓ|)) per element, H(ℓ) = [ℓ ≥ 0]; see `bernoulli_log_prob`."""
    nonnegative = logits >= 0
    magnitude = jnp.where(nonnegative, logits, -logits)
    return jnp.where(nonnegative, x - 1, x) * logits - jnp.log1p(jnp.exp(-magnitude))


@_bernoulli_log_prob_elementwise.defjvp
def _bernoulli_log_prob_elementwise_jvp(primals, tangents):
    logits, x = primals
    logits_dot, x_dot = tangents
    nonnegative = logits >= 0
    # |ℓ| as a where, not jnp.abs: its derivative is then ±1 (not 0 at ℓ = 0), so second
    # derivatives through σ(ℓ) below are right at ℓ = 0 too.
    e = jnp.exp(-jnp.where(nonnegative, logits, -logits))  # exp(−|ℓ|) ∈ (0, 1]
    value = jnp.where(nonnegative, x - 1, x) * logits - jnp.log1p(e)
    sigmoid = jnp.where(nonnegative, 1, e) / (1 + e)  # σ(ℓ) from the same exp
    return value, (x - sigmoid) * logits_dot + logits * x_dot


def bernoulli_log_prob(logits: jax.Array, x: jax.Array) -> jax.Array:
    """log Bern(x; σ(ℓ)) = Σᵢ [xᵢ·log σ(ℓᵢ) + (1 − xᵢ)·log σ(−ℓᵢ)], summed over all axes.

    Computed as Σᵢ [(xᵢ − H(ℓᵢ))·ℓᵢ − log(1 + exp(−|ℓᵢ|))] with H(ℓ) = [ℓ ≥ 0], which equals
    x·ℓ − softplus(ℓ) (as log σ(ℓ) = −softplus(−ℓ)). Both terms are ≤ 0 for x in [0, 1], so nothing
    cancels: the value is accurate to a few float32 ulps for every x in [0, 1] and every finite
    logit, where x·ℓ − softplus(ℓ) loses digits for x near 0 or 1 at large |ℓ| (e.g. ℓ = 1e4,
    x = 0.99999: −0.100586 instead of −0.100136). One exp and one log1p per pixel, like softplus.
    The gradient is the analytic one (a custom JVP): ∂/∂ℓ = x − σ(ℓ), ∂/∂x = ℓ, finite for every
    finite logit and right at ℓ = 0 (where |ℓ| has no derivative); second derivatives work.

    `x` must lie in [0, 1]; values strictly between give the continuous cross-entropy, which is
    what training on grey levels uses. A concrete `x` (a call outside jit, vmap and grad) is
    checked for that (`DataError`); a traced one, as in the training step, is not.

    Args:
      logits: the Bernoulli logits ℓ, float, one event of any shape.
      x: the data, float, the shape of `logits`.

    Returns:
      A scalar, in nats (≤ 0 for x in [0, 1]).

    Raises:
      ShapeError: the shapes differ (a static check, under jit too).
      DataError: a concrete `x` holds NaN, ±∞ or values outside [0, 1].
    """
    check_one_shape("bernoulli_log_prob", logits=logits, x=x)
    if not isinstance(x, jax.core.Tracer) and jnp.size(x):
        values = np.asarray(x)  # on the host: nothing is staged into an enclosing trace
        low, high = np.min(values), np.max(values)
        if not 0.0 <= low <= high <= 1.0:  # False for NaN too
            raise DataError(f"bernoulli_log_prob: x has values in [{low:.8g}, {high:.8g}]; a "
                            "Bernoulli likelihood needs data in [0, 1] (no NaN or infinity)")
    logits, x = _flat(logits), _flat(x)
    return jnp.sum(_bernoulli_log_prob_elementwise(logits, x))


def categorical_kl(p: jax.Array, q: jax.Array) -> jax.Array:
    """KL(P ‖ Q) = Σᵢ pᵢ·log(pᵢ / qᵢ) in nats for discrete distributions (0·log 0 taken as 0;
    `jax.scipy.special.rel_entr`, whose gradient is 0, not −∞, at pᵢ = 0).

    Not symmetric: KL(P ‖ Q) ≠ KL(Q ‖ P) in general. Divide by log 2 for bits.

    Args:
      p, q: probability vectors (or arrays, one event) of one shape.

    Returns:
      A scalar, in nats; +∞ where some qᵢ = 0 < pᵢ.

    Raises:
      ShapeError: the shapes differ (a static check, under jit too).
    """
    check_one_shape("categorical_kl", p=p, q=q)
    return jnp.sum(jax.scipy.special.rel_entr(p, q))
