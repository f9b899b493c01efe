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
be a traced scalar (a swept hyperparameter under `jax.vmap`); `kind` is static.
"""

import jax
import jax.numpy as jnp

from vae_jax import distributions
from vae_jax.errors import ConfigError, ShapeError

CORRUPTIONS = ("none", "gaussian", "mask", "salt_and_pepper")


def corrupt(key: jax.Array, x: jax.Array, kind: str, level) -> jax.Array:
    """A corrupted copy x̃ ~ C(x̃|x) of `x` (module docstring's table), same shape and dtype.

    Args:
      key: one typed PRNG key, shape (); unused for ``kind="none"``.
      x: float data of any shape, values in [0, 1] (a batch or one example: pixels draw
        independently either way).
      kind: one of `CORRUPTIONS` (static).
      level: σ for ``gaussian`` (pixel units), the probability p for ``mask`` and
        ``salt_and_pepper``; a float or a (traced) scalar. Not range-checked here (the
        application's config validation does that): the caller passes σ ≥ 0, p in [0, 1].

    Returns:
      x̃, the shape and dtype of x; in [0, 1] when x is.

    Raises:
      ConfigError: `kind` is not one of `CORRUPTIONS`.
      ShapeError: x is not floating point, or `key` is not one typed key (static checks, under jit
        too).
    """
    if kind not in CORRUPTIONS:
        raise ConfigError(f"corruption kind must be one of {CORRUPTIONS}, got {kind!r}")
    if kind == "none":
        return x
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise ShapeError(f"corrupt: x must be a floating-point array in [0, 1], got dtype "
                         f"{jnp.result_type(x)}")
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


def psnr(estimate: jax.Array, target: jax.Array, max_value: float = 1.0,
         min_mse: float = 1e-10) -> jax.Array:
    """Peak signal-to-noise ratio of each example, in dB:

        PSNR_n = 10·log10(max_value² / MSE_n),  MSE_n = mean_i (estimate_ni − target_ni)²

    over the pixels i of example n (the leading axis is the batch). With grey levels in [0, 1]
    (max_value 1) this is 10·log10(1/MSE). MSE_n is floored at `min_mse` (100 dB), so an exact
    reconstruction gives a finite number.

    Args:
      estimate, target: float arrays of one shape (B, ...), e.g. decoder means and clean images.
      max_value: the largest possible pixel value (1 for [0, 1] data).
      min_mse: the floor of MSE_n.

    Returns:
      float (B,), in dB.

    Raises:
      ShapeError: the shapes differ, or have no batch axis, or an array is not floating-point
        (integer pixels would wrap around when subtracted: convert uint8 with x / 255).
    """
    if jnp.shape(estimate) != jnp.shape(target) or jnp.ndim(target) < 1:
        raise ShapeError(f"psnr: estimate and target must have one shape (B, ...), got "
                         f"{jnp.shape(estimate)} and {jnp.shape(target)}")
    for name, array in (("estimate", estimate), ("target", target)):
        if not jnp.issubdtype(jnp.result_type(array), jnp.floating):
            raise ShapeError(f"psnr: {name} must be a floating-point array, got dtype "
                             f"{jnp.result_type(array)}; convert uint8 pixels with "
                             "x.astype(np.float32) / 255 (and max_value=1)")
    batch = jnp.shape(target)[0]
    difference = jnp.reshape(estimate, (batch, -1)) - jnp.reshape(target, (batch, -1))
    mse = jnp.maximum(jnp.mean(jnp.square(difference), axis=-1), min_mse)
    return 10.0 * jnp.log10(max_value**2 / mse)
