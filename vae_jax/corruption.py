r"""Input corruption for denoising autoencoders, and the PSNR that measures how well it is undone.

A denoising autoencoder (Vincent et al. 2008, "Extracting and composing robust features with
denoising autoencoders"; Vincent et al. 2010, "Stacked denoising autoencoders", §4.1) encodes a
corrupted copy x̃ ~ C(x̃|x) of each example and is trained to reconstruct the *clean* x:

    AE:   loss = −log p(x | z = e(x̃))
    VAE:  L_dvae(x) = E_{x̃~C(x̃|x)} E_{q(z|x̃)} [log p(x|z) + log p(z) − log q(z|x̃)]

Im et al. 2017 ("Denoising Criterion for Variational Auto-Encoding Framework", AAAI) show that
L_dvae(x) is still a lower bound on log p(x): for each x̃, q(z|x̃) is just another proposal for the
posterior of x, so its ELBO (and, likewise, its importance-weighted bound) bounds log p(x); the
expectation over x̃ keeps the bound. `vae_jax.objectives.loss` and `vae_jax.iwae.iwae_loss` take
the corrupted batch as ``x_input`` (the encoder's input) and score the clean ``x``.

`corrupt` draws C(x̃|x) for data in [0, 1] (pixel intensities):

| kind | x̃_i | level |
| --- | --- | --- |
| ``none`` | x_i | unused |
| ``gaussian`` | clip(x_i + σ·ε_i, 0, 1), ε_i ~ N(0, 1) | σ, in pixel units of [0, 1] |
| ``mask`` | 0 with probability p, else x_i (Vincent's masking noise, i.i.d. per pixel) | p |
| ``salt_and_pepper`` | 0 with probability p/2, 1 with probability p/2, else x_i | p |

Every pixel draws independently; at level 0 every kind returns x unchanged, bit for bit. `level` may
be a traced scalar (a swept hyperparameter under `jax.vmap`), whose range only its caller can
check; a concrete level out of range (σ < 0, p outside [0, 1], NaN) is refused. `kind` is static.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import distributions
from vae_jax._checks import describe, real_number
from vae_jax.errors import ConfigError, ShapeError

CORRUPTIONS = ("none", "gaussian", "mask", "salt_and_pepper")


def corrupt(key: jax.Array, x: jax.Array, kind: str, level) -> jax.Array:
    """A corrupted copy x̃ ~ C(x̃|x) of `x` (module docstring's table), same shape and dtype.

    Args:
      key: one typed PRNG key, shape (); unused for ``kind="none"``.
      x: float data of any shape, values in [0, 1] (a batch or one example: pixels draw
        independently either way); an array or an array-like of floats.
      kind: one of `CORRUPTIONS` (static).
      level: σ ≥ 0 for ``gaussian`` (pixel units), the probability p in [0, 1] for ``mask`` and
        ``salt_and_pepper``, any number for ``none`` (unused); a real number or a 0-d array,
        which may be traced (a swept hyperparameter). Its range is checked only when it is
        concrete; a traced level's is the caller's to check.

    Returns:
      x̃, the shape and dtype of x (x itself, as an array, for ``none``); in [0, 1] when x is.

    Raises:
      ConfigError: `kind` is not one of `CORRUPTIONS`; `level` is None or not one real number
        (ndim 0), under jit too; a concrete `level` is out of its kind's range (σ not finite
        or < 0, p outside [0, 1] or NaN).
      ShapeError: x is not a floating-point array-like, or (except for ``none``) `key` is not one
        typed key (static checks, under jit too).
    """
    if not isinstance(kind, str) or kind not in CORRUPTIONS:
        raise ConfigError(f"corruption kind must be one of {CORRUPTIONS}, got {kind!r}")
    x = _float_array("corrupt", "x", x, "pass values in [0, 1]: convert uint8 pixels with "
                     "x.astype(np.float32) / 255")
    value = real_number("corrupt", "level", level)
    if kind == "gaussian" and value is not None and not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"corrupt: level must be a finite σ ≥ 0 for gaussian noise (pixel "
                          f"units of [0, 1]), got {level!r}")
    if kind in ("mask", "salt_and_pepper") and value is not None and not 0 <= value <= 1:
        raise ConfigError(f"corrupt: level must be a probability p in [0, 1] for {kind}, got "
                          f"{level!r}")
    if kind == "none":
        return x
    distributions.check_key(key)
    level = jnp.asarray(level, x.dtype)
    if kind == "gaussian":
        noise = jax.random.normal(key, jnp.shape(x), x.dtype)
        return jnp.clip(x + level * noise, 0.0, 1.0)
    u = jax.random.uniform(key, jnp.shape(x), x.dtype)
    if kind == "mask":
        return jnp.where(u < level, jnp.zeros_like(x), x)
    # salt_and_pepper: u < p/2 → 0 (pepper), p/2 ≤ u < p → 1 (salt), else x.
    return jnp.where(u < level, (u >= 0.5 * level).astype(x.dtype), x)


_FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def psnr(estimate: jax.Array, target: jax.Array, max_value: float = 1.0,
         min_mse: float = 1e-10) -> jax.Array:
    """Peak signal-to-noise ratio of each example, in dB:

        PSNR_n = 10·log10(max_value² / MSE_n),  MSE_n = mean_i (estimate_ni − target_ni)²

    over the pixels i of example n (the leading axis is the batch). With grey levels in [0, 1]
    (max_value 1) this is 10·log10(1/MSE). MSE_n is floored at `min_mse` (100 dB), so an exact
    reconstruction gives a finite number.

    Args:
      estimate, target: float arrays (or array-likes of floats) of one shape (B, ...), B ≥ 1 and
        at least one pixel per example, e.g. decoder means and clean images.
      max_value: the largest possible pixel value (1 for [0, 1] data), a finite number > 0.
      min_mse: the floor of MSE_n, a finite number > 0.

    Returns:
      float (B,), in dB.

    Raises:
      ShapeError: the shapes differ, or have no batch axis, or the batch or its examples are
        empty, or an array is not floating-point (integer pixels would wrap around when
        subtracted: convert uint8 with x / 255).
      ConfigError: `max_value` or `min_mse` is not one real number (ndim 0), or, when concrete,
        not finite and > 0.
    """
    hint = "convert uint8 pixels with x.astype(np.float32) / 255 (and max_value=1)"
    estimate = _float_array("psnr", "estimate", estimate, hint)
    target = _float_array("psnr", "target", target, hint)
    if estimate.shape != target.shape or target.ndim < 1:
        raise ShapeError(f"psnr: estimate and target must have one shape (B, ...), got "
                         f"{estimate.shape} and {target.shape}")
    if target.size == 0:
        raise ShapeError(f"psnr: estimate and target must hold at least one example of at least "
                         f"one pixel, got the empty shape {target.shape}")
    for name, setting in (("max_value", max_value), ("min_mse", min_mse)):
        value = real_number("psnr", name, setting)
        if value is not None and not (math.isfinite(value) and value >= _FLOAT32_TINY):
            raise ConfigError(f"psnr: {name} must be a finite number > 0, got "
                              f"{describe(setting)} (float32's smallest is 1.2e-38)")
    batch = target.shape[0]
    dtype = jnp.promote_types(target.dtype, jnp.float32)  # float16 squares underflow
    difference = (jnp.reshape(estimate, (batch, -1)).astype(dtype)
                  - jnp.reshape(target, (batch, -1)).astype(dtype))
    mse = jnp.maximum(jnp.mean(jnp.square(difference), axis=-1), min_mse)
    return 20.0 * jnp.log10(jnp.asarray(max_value, dtype)) - 10.0 * jnp.log10(mse)


def _float_array(function: str, name: str, array, hint: str) -> jax.Array:
    """`array` as a JAX array (an array-like is converted); `ShapeError` unless floating-point."""
    try:
        converted = jnp.asarray(array)
    except (TypeError, ValueError, OverflowError):
        raise ShapeError(f"{function}: {name} must be a floating-point array, got a "
                         f"{type(array).__name__} that is not one; pass a (nested) sequence of "
                         "floats of one shape, or an array") from None
    if not jnp.issubdtype(converted.dtype, jnp.floating):
        raise ShapeError(f"{function}: {name} must be a floating-point array, got dtype "
                         f"{getattr(array, 'dtype', converted.dtype)}; {hint}")
    return converted
