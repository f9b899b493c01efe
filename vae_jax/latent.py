r"""Latent-space tools: encode a data set, decode grids, interpolate, traverse, project, sample.

Pure functions over a `vae_jax.VAE`, its params and explicit arrays (and explicit typed
`jax.random.key`s where there is randomness). Every function is jit-able with the model, and the
sizes that fix shapes (`chunk_size`, `rows`, `columns`, `num`, `num_components`), as static
arguments, e.g.

    encode = jax.jit(latent.encode_means, static_argnums=(0, 3))    # vae, chunk_size static
    codes = encode(vae, params, x_test, 1000)                        # (N, latent_dim)
    grid = latent.quantile_grid(15, 15)                              # (15, 15, 2)
    images = latent.decode_grid(vae, params, grid)                   # (15, 15, 28, 28, 1)

Shapes: d = latent_dim; images are (…, *input_shape) means E[x|z] (`vae.observation_mean` of the
decoder output: probabilities for a Bernoulli decoder), ready to show.

The grids follow picture conventions: ``grid[i, j]`` is the point of row i (top to bottom: y from
high to low) and column j (left to right: x from low to high), so an image of the decoded grid has
the orientation of a scatter plot of the codes.

For a latent space of more than two dimensions, a manifold grid needs a plane: `decode_grid` takes
``basis`` (2, d) and ``origin`` (d,), e.g. the top two principal axes of the codes (`pca`);
without them it raises `vae_jax.ShapeError` naming the latent size (there is no silent fallback).
"""

from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from vae_jax.errors import ConfigError, ShapeError
from vae_jax.model import (VAE, Params, check_data_values, check_input, prior_params,
                           require_one_layer)

DEFAULT_CHUNK_SIZE = 1000


def _positive_int(name: str, value, error: type = ShapeError) -> int:
    """`value` if it is a positive int, else `error`: `ShapeError` for a size of the result
    (rows, num, …), `ConfigError` for an option that does not change it (chunk_size)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise error(f"{name} must be a positive integer, got {value!r}")
    return value


def _require_stochastic(vae: VAE, what: str) -> None:
    if not vae.stochastic:
        raise ConfigError(f"{what} needs a VAE with a prior p(z) = N(0, I) and a posterior q(z|x); "
                          "this model is a plain autoencoder (stochastic=False): its codes follow "
                          "no known distribution")


# --- Encoding a data set ---------------------------------------------------------------------

def encode_means(vae: VAE, params: Params, x: jax.Array,
                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> jax.Array:
    """Posterior means μ(x_n) of a data set, `chunk_size` examples at a time.

    For a VAE, μ(x) = E_q[z|x] of q(z|x) = N(μ(x), diag σ²(x)); for the plain autoencoder it is the
    code e(x) itself.

    Args:
      vae: the model (static under jit).
      params: its parameters.
      x: float data, (N, *input_shape).
      chunk_size: examples per vectorised step (static); memory grows with it. N need not be a
        multiple of it.

    Returns:
      (N, latent_dim) means.

    Raises:
      ShapeError: x is not (N, *input_shape) (static, under jit too).
      DataError: a concrete x holds NaN or ±∞, or values outside [0, 1] for a Bernoulli
        likelihood (`vae_jax.model.check_data_values`); a traced x (under jit) is not checked.
    """
    return _encode_chunked(vae, params, x, chunk_size)[0]


def encode_posterior(vae: VAE, params: Params, x: jax.Array,
                     chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[jax.Array, jax.Array]:
    """The parameters (μ, log σ²) of q(z|x_n) for a data set x (N, *input_shape), `chunk_size`
    examples at a time: two (N, latent_dim) arrays. Raises `ConfigError` for a plain
    autoencoder, which has no q(z|x) (use `encode_means` for its codes), and `ShapeError` /
    `DataError` as `encode_means`."""
    _require_stochastic(vae, "encode_posterior")
    return _encode_chunked(vae, params, x, chunk_size)


def _encode_chunked(vae: VAE, params: Params, x: jax.Array,
                    chunk_size: int) -> tuple[jax.Array, Optional[jax.Array]]:
    chunk_size = _positive_int("chunk_size", chunk_size, ConfigError)
    shape = tuple(jnp.shape(x))
    if len(shape) != len(vae.input_shape) + 1 or shape[1:] != tuple(vae.input_shape):
        raise ShapeError(f"x must have shape (N, {', '.join(map(str, vae.input_shape))}), "
                         f"got {shape}")
    check_data_values(vae, x, "x")  # concrete x only; nothing under jit
    return jax.lax.map(lambda example: vae.encode(params, example), x,
                       batch_size=min(chunk_size, max(shape[0], 1)))


# --- Grids over a 2-D latent plane -----------------------------------------------------------

def linear_grid(rows: int, columns: int, x_range: Sequence[float] = (-2.0, 2.0),
                y_range: Sequence[float] = (-2.0, 2.0)) -> jax.Array:
    """A regular grid of 2-D points, evenly spaced in each coordinate.

        grid[i, j] = (x_j, y_{rows−1−i}),  x_j = x₀ + j·(x₁ − x₀)/(columns − 1),
                                           y_i = y₀ + i·(y₁ − y₀)/(rows − 1)

    so that row 0 holds the highest y (the top of a picture) and column 0 the lowest x.

    Returns:
      (rows, columns, 2) float32.
    """
    rows, columns = _positive_int("rows", rows), _positive_int("columns", columns)
    xs = jnp.linspace(x_range[0], x_range[1], columns, dtype=jnp.float32)
    ys = jnp.linspace(y_range[1], y_range[0], rows, dtype=jnp.float32)  # top row: highest y
    return jnp.stack(jnp.meshgrid(xs, ys, indexing="xy"), axis=-1)


def quantile_grid(rows: int, columns: int, low: float = 0.05, high: float = 0.95) -> jax.Array:
    """A grid evenly spaced in *probability* under the prior N(0, 1) of each coordinate.

        grid[i, j] = (Φ⁻¹(p_j), Φ⁻¹(q_{rows−1−i})),  p, q evenly spaced in [low, high]

    with Φ⁻¹ the standard normal quantile function (`jax.scipy.stats.norm.ppf`). Each cell then
    covers about the same prior mass, which is how the Keras VAE example draws its MNIST manifold;
    0 < low < high < 1. Orientation as `linear_grid`.

    Returns:
      (rows, columns, 2) float32.
    """
    if not 0.0 < low < high < 1.0:
        raise ConfigError(f"quantile_grid needs 0 < low < high < 1, got low={low!r}, "
                          f"high={high!r}")
    unit = linear_grid(rows, columns, (low, high), (low, high))
    return jax.scipy.stats.norm.ppf(unit).astype(jnp.float32)


def decode_images(vae: VAE, params: Params, z: jax.Array) -> jax.Array:
    """E[x|z] for codes z of shape (*batch, d): (*batch, *input_shape) images to show."""
    return vae.observation_mean(vae.decode(params, z))


def decode_grid(vae: VAE, params: Params, grid: jax.Array, basis: Optional[jax.Array] = None,
                origin: Optional[jax.Array] = None) -> jax.Array:
    """Decodes every point of a 2-D grid: the "manifold" picture of a 2-D latent space.

    With a 2-D latent space the grid points are the codes: z = grid[i, j]. For d ≠ 2, pass a plane:
    z = origin + grid[i, j] @ basis, with `basis` (2, d) (its rows span the plane; orthonormal rows,
    as from `pca`, keep distances) and `origin` (d,) (default 0).

    Args:
      vae: the model.
      params: its parameters.
      grid: (rows, columns, 2) points, e.g. from `linear_grid` or `quantile_grid`.
      basis: None for a 2-D latent space, else (2, d).
      origin: None (zero) or (d,).

    Returns:
      (rows, columns, *input_shape) images E[x|z].

    Raises:
      ShapeError: `grid` is not (rows, columns, 2); or d ≠ 2 without a `basis`, or a basis or
        origin of the wrong shape.
    """
    grid = jnp.asarray(grid)
    if grid.ndim != 3 or grid.shape[-1] != 2:
        raise ShapeError(f"grid must have shape (rows, columns, 2), got {grid.shape}")
    d = vae.latent_dim
    if basis is None:
        if d != 2:
            raise ShapeError(
                f"a manifold grid decodes a 2-D latent plane, but this model has latent_dim={d}; "
                f"pass basis (2, {d}) and origin ({d},) of a plane through the latent space, e.g. "
                "the top two principal axes of the codes: p = latent.pca(codes); "
                "decode_grid(vae, params, grid, basis=p.components, origin=p.mean)")
        z = grid
    else:
        basis = jnp.asarray(basis)
        if basis.shape != (2, d):
            raise ShapeError(f"basis must have shape (2, {d}), got {basis.shape}")
        z = grid @ basis
    if origin is not None:
        origin = jnp.asarray(origin)
        if origin.shape != (d,):
            raise ShapeError(f"origin must have shape ({d},), got {origin.shape}")
        z = z + origin
    return decode_images(vae, params, z)


# --- Interpolation ---------------------------------------------------------------------------

def _check_pair(z0: jax.Array, z1: jax.Array) -> None:
    if jnp.ndim(z0) != 1 or jnp.shape(z0) != jnp.shape(z1):
        raise ShapeError(f"z0 and z1 must be two codes of one shape (d,), got {jnp.shape(z0)} "
                         f"and {jnp.shape(z1)}; vmap for batches")


def lerp(z0: jax.Array, z1: jax.Array, num: int) -> jax.Array:
    """Linear interpolation: z(t) = (1 − t)·z₀ + t·z₁ at t = 0, 1/(num−1), …, 1.

    z0, z1: (d,). Returns (num, d); row 0 is z₀ and row num − 1 is z₁ exactly. For codes drawn
    from N(0, I) in many dimensions the midpoint has a smaller norm than both ends (≈ 1/√2 of it
    for independent codes), a region the prior rarely visits; `slerp` avoids that.
    """
    _check_pair(z0, z1)
    num = _positive_int("num", num)
    t = jnp.linspace(0.0, 1.0, num, dtype=jnp.result_type(z0, jnp.float32))[:, None]
    return jnp.where(t == 1.0, z1, (1.0 - t) * z0 + t * z1)


def slerp(z0: jax.Array, z1: jax.Array, num: int, eps: float = 1e-6) -> jax.Array:
    """Spherical linear interpolation (Shoemake 1985; White 2016 for generative models):

        z(t) = sin((1 − t)Ω)/sin Ω · z₀ + sin(tΩ)/sin Ω · z₁,   cos Ω = ⟨z₀, z₁⟩ / (‖z₀‖‖z₁‖)

    at t = 0, 1/(num−1), …, 1. The path moves along the arc between the two directions at constant
    angular speed (the angle to z₀ is tΩ); when ‖z₀‖ = ‖z₁‖ = r every point has norm r, so codes
    keep the typical norm √d of N(0, I) samples. Where sin Ω < `eps` — parallel or antiparallel
    codes, or a zero code — the arc is undefined and this returns `lerp` (for antiparallel codes
    that path passes through 0). Gradients are finite everywhere.

    z0, z1: (d,). Returns (num, d); rows 0 and num − 1 are z₀ and z₁.
    """
    _check_pair(z0, z1)
    num = _positive_int("num", num)
    dtype = jnp.result_type(z0, jnp.float32)
    t = jnp.linspace(0.0, 1.0, num, dtype=dtype)[:, None]
    squared_norms = jnp.sum(jnp.square(z0)) * jnp.sum(jnp.square(z1))
    positive = squared_norms > 0  # a zero code has no direction; sqrt(0) has no gradient
    norms = jnp.sqrt(jnp.where(positive, squared_norms, 1.0))
    cosine = jnp.where(positive, jnp.dot(z0, z1) / norms, 0.0)
    degenerate = ~positive | (jnp.abs(cosine) > 1.0 - eps)
    omega = jnp.arccos(jnp.where(degenerate, 0.0, cosine))  # safe: no arccos(±1) in gradients
    sin_omega = jnp.where(degenerate, 1.0, jnp.sin(omega))
    w0 = jnp.where(degenerate, 1.0 - t, jnp.sin((1.0 - t) * omega) / sin_omega)
    w1 = jnp.where(degenerate, t, jnp.sin(t * omega) / sin_omega)
    path = w0 * z0 + w1 * z1
    return jnp.where(t == 0.0, z0, jnp.where(t == 1.0, z1, path))


def interpolate_images(vae: VAE, params: Params, x0: jax.Array, x1: jax.Array, num: int,
                       spherical: bool = False) -> jax.Array:
    """Decodes the path between the posterior means of two examples x0, x1 (*input_shape each):
    z = `lerp` (or `slerp` with `spherical`) of μ(x0), μ(x1). Returns (num, *input_shape);
    the first and last images are the reconstructions E[x|μ(x0)] and E[x|μ(x1)]. Raises
    `ShapeError` unless x0 and x1 are single float examples (static, under jit too)."""
    check_input(vae, x0, "interpolate_images", batched=False)
    check_input(vae, x1, "interpolate_images", batched=False)
    z0, _ = vae.encode(params, x0)
    z1, _ = vae.encode(params, x1)
    path = (slerp if spherical else lerp)(z0, z1, num)
    return decode_images(vae, params, path)


# --- Traversals ------------------------------------------------------------------------------

def traversals(z: jax.Array, values: jax.Array) -> jax.Array:
    """Latent traversals: copies of z with one coordinate swept through values.

        out[i, j] = z with z_i replaced by v_ij       (all other coordinates as in z)

    with v_ij = values[j] for `values` (n,) — one range for every dimension — or values[i, j] for
    `values` (d, n), a range per dimension (e.g. the spread of an autoencoder's codes, which
    differs between dimensions). z: (d,). Returns (d, n, d). Decode it (`decode_images`) for a grid
    whose row i shows what latent dimension i controls (as in β-VAE papers).
    """
    z, values = jnp.asarray(z), jnp.asarray(values)
    d = z.shape[0] if z.ndim == 1 else None
    if d is None or values.ndim not in (1, 2) or (values.ndim == 2 and values.shape[0] != d):
        raise ShapeError(f"traversals takes z (d,) and values (n,) or (d, n), got {z.shape} and "
                         f"{values.shape}")
    values = jnp.broadcast_to(values, (d, values.shape[-1])).astype(z.dtype)
    one_hot = jnp.eye(d, dtype=bool)[:, None, :]  # (d, 1, d): which coordinate row i replaces
    return jnp.where(one_hot, values[:, :, None], z[None, None, :])


# --- Principal components --------------------------------------------------------------------

class PCA(NamedTuple):
    """Principal axes of a set of codes.

    Attributes:
      mean: (d,), the mean code.
      components: (k, d), orthonormal rows: the principal axes, by decreasing variance. The sign
        of each is fixed so that its largest-magnitude entry is positive.
      explained_variance: (k,), the variance of the codes along each axis (divided by N − 1).
      explained_variance_ratio: (k,), that variance over the total variance of the codes.
    """

    mean: jax.Array
    components: jax.Array
    explained_variance: jax.Array
    explained_variance_ratio: jax.Array


def pca(codes: jax.Array, num_components: int = 2) -> PCA:
    """Principal component analysis of codes (N, d), by the SVD of the centred data:

        Z − mean = U S Vᵀ,   components = Vᵀ[:k],   explained_variance = S[:k]² / (N − 1)

    Project with `pca_project`; `decode_grid(..., basis=p.components, origin=p.mean)` decodes the
    plane of the top two axes. Needs N ≥ 2 and num_components ≤ min(N, d).
    """
    codes = jnp.asarray(codes)
    num_components = _positive_int("num_components", num_components)
    if codes.ndim != 2 or codes.shape[0] < 2 or num_components > min(codes.shape):
        raise ShapeError(f"pca needs codes (N ≥ 2, d) with num_components ≤ min(N, d), got shape "
                         f"{codes.shape} and num_components={num_components}")
    mean = jnp.mean(codes, axis=0)
    _, singular_values, vt = jnp.linalg.svd(codes - mean, full_matrices=False)
    components = vt[:num_components]
    largest = jnp.take_along_axis(components, jnp.argmax(jnp.abs(components), axis=1)[:, None],
                                  axis=1)
    components = components * jnp.where(largest < 0, -1.0, 1.0)
    variance = jnp.square(singular_values) / (codes.shape[0] - 1)
    total = jnp.sum(variance)
    ratio = variance[:num_components] / jnp.where(total > 0, total, 1.0)
    return PCA(mean, components, variance[:num_components], ratio)


def pca_project(codes: jax.Array, p: PCA) -> jax.Array:
    """Coordinates of codes (…, d) along the principal axes: (codes − mean) @ componentsᵀ,
    shape (…, k)."""
    return (jnp.asarray(codes) - p.mean) @ p.components.T


# --- The prior -------------------------------------------------------------------------------

def prior_samples(key: jax.Array, num: int, latent_dim: int) -> jax.Array:
    """z_n ~ p(z) = N(0, I), drawn from the typed key `key`: (num, latent_dim) float32."""
    num, latent_dim = _positive_int("num", num), _positive_int("latent_dim", latent_dim)
    return jax.random.normal(key, (num, latent_dim), jnp.float32)


def sample_images(vae: VAE, params: Params, key: jax.Array, num: int) -> jax.Array:
    """New images from the model: E[x|z] for z ~ p(z) (the model's prior, N(0, I) by default),
    shape (num, *input_shape).

    The decoder mean, not a draw from p(x|z) (Bernoulli noise would hide the picture). Raises
    `ConfigError` for a plain autoencoder: nothing makes its codes N(0, I)-distributed, so decoding
    prior samples shows arbitrary images rather than samples of the model.
    """
    require_one_layer(vae, "sample_images")
    _require_stochastic(vae, "sample_images")
    num = _positive_int("num", num)
    return decode_images(vae, params, vae.prior.sample(prior_params(vae, params), key, num,
                                                       vae.latent_dim))
