"""Latent-space tools (vae_jax.latent): grids, interpolation, traversals, PCA, encoding a data set
and the prior, with and without jit."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax
from vae_jax import latent

PHI_05 = 1.6448536  # Φ⁻¹(0.95) = −Φ⁻¹(0.05)


def small_vae(latent_dim=2, stochastic=True):
    vae = vae_jax.mlp_vae((6, 6, 1), latent_dim, (16,), stochastic=stochastic)
    return vae, vae.init(jax.random.key(0))


def angle(a, b):
    cosine = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
    return np.arccos(np.clip(cosine, -1.0, 1.0))


@pytest.mark.slow
class LatentVariantsTest(chex.TestCase):
    """Each test runs jitted (sizes static) and not jitted."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_linear_grid_shape_corners_and_orientation(self):
        grid = self.variant(functools.partial(latent.linear_grid, 3, 5, (-1.0, 3.0),
                                              (0.0, 2.0)))()
        chex.assert_shape(grid, (3, 5, 2))
        np.testing.assert_allclose(grid[0, 0], [-1.0, 2.0])  # top left: lowest x, highest y
        np.testing.assert_allclose(grid[0, -1], [3.0, 2.0])
        np.testing.assert_allclose(grid[-1, 0], [-1.0, 0.0])
        np.testing.assert_allclose(grid[-1, -1], [3.0, 0.0])
        np.testing.assert_allclose(grid[1, 2], [1.0, 1.0])  # the centre
        assert np.all(np.diff(grid[..., 0], axis=1) > 0)  # x grows to the right
        assert np.all(np.diff(grid[..., 1], axis=0) < 0)  # y grows upwards
        np.testing.assert_allclose(np.diff(grid[0, :, 0]), 1.0, rtol=1e-6)  # evenly spaced

    @chex.variants(with_jit=True, without_jit=True)
    def test_quantile_grid_follows_the_normal_quantiles(self):
        grid = self.variant(functools.partial(latent.quantile_grid, 4, 3))()
        chex.assert_shape(grid, (4, 3, 2))
        np.testing.assert_allclose(grid[0, 0], [-PHI_05, PHI_05], rtol=1e-5)
        np.testing.assert_allclose(grid[-1, -1], [PHI_05, -PHI_05], rtol=1e-5)
        np.testing.assert_allclose(grid[:, 1, 0], 0.0, atol=1e-6)  # the median column
        # Equal prior mass between neighbours: Φ(grid) is evenly spaced, the grid itself is not.
        cdf = jax.scipy.stats.norm.cdf(grid[0, :, 0])
        np.testing.assert_allclose(np.diff(cdf), 0.45, rtol=1e-4)
        assert not np.allclose(np.diff(grid[:, 0, 1]), np.diff(grid[:, 0, 1])[0])

    @chex.variants(with_jit=True, without_jit=True)
    def test_lerp_endpoints_are_the_codes_and_the_path_is_straight(self):
        z0, z1 = jnp.array([1.0, -2.0, 0.5]), jnp.array([-3.0, 0.25, 4.0])
        path = self.variant(functools.partial(latent.lerp, num=9))(z0, z1)
        chex.assert_shape(path, (9, 3))
        np.testing.assert_array_equal(path[0], z0)
        np.testing.assert_array_equal(path[-1], z1)
        np.testing.assert_allclose(path[4], (z0 + z1) / 2, rtol=1e-6)
        steps = np.diff(np.asarray(path), axis=0)
        np.testing.assert_allclose(steps, np.broadcast_to((z1 - z0) / 8, steps.shape), rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_slerp_endpoints_norm_and_constant_angular_speed(self):
        key0, key1 = jax.random.split(jax.random.key(3))
        z0 = jax.random.normal(key0, (16,))
        z1 = jax.random.normal(key1, (16,))
        z1 = z1 * jnp.linalg.norm(z0) / jnp.linalg.norm(z1)  # equal norms
        path = np.asarray(self.variant(functools.partial(latent.slerp, num=11))(z0, z1))
        chex.assert_shape(path, (11, 16))
        np.testing.assert_array_equal(path[0], z0)
        np.testing.assert_array_equal(path[-1], z1)
        np.testing.assert_allclose(np.linalg.norm(path, axis=1), np.linalg.norm(z0), rtol=1e-5)
        omega = angle(z0, z1)
        np.testing.assert_allclose([angle(z0, p) for p in path], np.linspace(0, omega, 11),
                                   atol=2e-3)
        # The straight line cuts the corner: its midpoint norm is ‖z‖·cos(Ω/2) < ‖z‖.
        middle = np.asarray(latent.lerp(z0, z1, 3))[1]
        np.testing.assert_allclose(np.linalg.norm(middle),
                                   np.linalg.norm(z0) * np.cos(omega / 2), rtol=1e-4)

    @chex.variants(with_jit=True, without_jit=True)
    def test_slerp_falls_back_to_lerp_for_parallel_zero_and_antiparallel_codes(self):
        fn = self.variant(functools.partial(latent.slerp, num=5))
        z = jnp.array([1.0, 2.0, -1.0])
        for other in (3.0 * z, jnp.zeros(3), -z):
            np.testing.assert_allclose(fn(z, other), latent.lerp(z, other, 5), atol=1e-6)
        grads = jax.grad(lambda a, b: jnp.sum(latent.slerp(a, b, 5) ** 2), argnums=(0, 1))
        for other in (3.0 * z, jnp.zeros(3), -z, jnp.array([0.0, 1.0, 2.0])):
            chex.assert_tree_all_finite(grads(z, other))

    @chex.variants(with_jit=True, without_jit=True)
    def test_traversals_replace_one_coordinate_per_row(self):
        z = jnp.array([0.5, -1.0, 2.0])
        values = jnp.array([-3.0, 0.0, 3.0, 7.0])
        out = self.variant(latent.traversals)(z, values)
        chex.assert_shape(out, (3, 4, 3))
        for i in range(3):
            np.testing.assert_array_equal(out[i, :, i], values)
            others = np.delete(np.asarray(out[i]), i, axis=1)
            np.testing.assert_array_equal(others, np.broadcast_to(np.delete(z, i), (4, 2)))
        per_dim = jnp.arange(12.0).reshape(3, 4)  # one range per dimension
        out = self.variant(latent.traversals)(z, per_dim)
        np.testing.assert_array_equal(out[jnp.arange(3), :, jnp.arange(3)], per_dim)

    @chex.variants(with_jit=True, without_jit=True)
    def test_pca_recovers_a_known_plane(self):
        rng = np.random.default_rng(0)
        basis, _ = np.linalg.qr(rng.normal(size=(6, 2)))  # an orthonormal plane in 6-D
        coefficients = rng.normal(size=(500, 2)) * np.array([3.0, 1.0])
        centre = rng.normal(size=6)
        codes = centre + coefficients @ basis.T + 1e-3 * rng.normal(size=(500, 6))
        p = self.variant(functools.partial(latent.pca, num_components=2))(
            jnp.asarray(codes, jnp.float32))
        chex.assert_shape([p.mean, p.components, p.explained_variance], [(6,), (2, 6), (2,)])
        np.testing.assert_allclose(p.mean, codes.mean(axis=0), atol=1e-5)
        np.testing.assert_allclose(p.components @ p.components.T, np.eye(2), atol=1e-5)
        # The same plane: equal projection matrices.
        np.testing.assert_allclose(p.components.T @ p.components, basis @ basis.T, atol=1e-4)
        assert float(jnp.sum(p.explained_variance_ratio)) > 0.9999
        assert p.explained_variance[0] > 8 * p.explained_variance[1]  # variances 9 and 1
        projected = latent.pca_project(codes, p)
        chex.assert_shape(projected, (500, 2))
        np.testing.assert_allclose(np.var(projected, axis=0, ddof=1), p.explained_variance,
                                   rtol=1e-3)
        # Signs are fixed: the largest entry of each axis is positive.
        largest = np.take_along_axis(np.asarray(p.components),
                                     np.argmax(np.abs(p.components), axis=1)[:, None], axis=1)
        assert np.all(largest > 0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_encode_means_matches_encode_for_any_chunk_size(self):
        vae, params = small_vae(latent_dim=3)
        x = jax.random.uniform(jax.random.key(1), (23, 6, 6, 1))
        expected, expected_log_variance = vae.encode(params, x)
        for chunk_size in (1, 5, 23, 100):
            means = self.variant(latent.encode_means, static_argnums=(0, 3))(
                vae, params, x, chunk_size)
            chex.assert_shape(means, (23, 3))
            np.testing.assert_allclose(means, expected, rtol=1e-5, atol=1e-6)
        mean, log_variance = self.variant(latent.encode_posterior, static_argnums=(0, 3))(
            vae, params, x, 7)
        np.testing.assert_allclose(log_variance, expected_log_variance, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(mean, expected, rtol=1e-5, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_decode_grid_decodes_every_point_and_a_plane_for_larger_latents(self):
        vae, params = small_vae(latent_dim=2)
        grid = latent.linear_grid(3, 4)
        images = self.variant(latent.decode_grid, static_argnums=0)(vae, params, grid)
        chex.assert_shape(images, (3, 4, 6, 6, 1))
        np.testing.assert_allclose(images[2, 1], latent.decode_images(vae, params, grid[2, 1]),
                                   rtol=1e-5)
        assert float(jnp.min(images)) >= 0.0 and float(jnp.max(images)) <= 1.0  # probabilities
        vae5, params5 = small_vae(latent_dim=5)
        basis, origin = jnp.eye(5)[1:3], jnp.full((5,), 0.5)
        images = self.variant(latent.decode_grid, static_argnums=0)(vae5, params5, grid, basis,
                                                                    origin)
        chex.assert_shape(images, (3, 4, 6, 6, 1))
        z = jnp.array([0.5, grid[0, 3, 0] + 0.5, grid[0, 3, 1] + 0.5, 0.5, 0.5])
        np.testing.assert_allclose(images[0, 3], latent.decode_images(vae5, params5, z),
                                   rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_prior_samples_are_standard_normal_and_fixed_by_the_key(self):
        sample = self.variant(latent.prior_samples, static_argnums=(1, 2))
        z = sample(jax.random.key(0), 4000, 3)
        chex.assert_shape(z, (4000, 3))
        np.testing.assert_allclose(np.mean(z, axis=0), 0.0, atol=0.08)
        np.testing.assert_allclose(np.std(z, axis=0), 1.0, atol=0.05)
        np.testing.assert_array_equal(z, sample(jax.random.key(0), 4000, 3))
        assert not np.array_equal(z, sample(jax.random.key(1), 4000, 3))
        vae, params = small_vae(latent_dim=3)
        images = self.variant(latent.sample_images, static_argnums=(0, 3))(
            vae, params, jax.random.key(2), 6)
        chex.assert_shape(images, (6, 6, 6, 1))


@pytest.mark.parametrize("latent_dim", [1, 3, 5])
def test_manifold_grid_of_a_latent_size_other_than_two_is_a_clear_error(latent_dim):
    vae, params = small_vae(latent_dim=latent_dim)
    with pytest.raises(vae_jax.ShapeError, match=f"latent_dim={latent_dim}.*pass basis"):
        latent.decode_grid(vae, params, latent.linear_grid(2, 2))


@pytest.mark.slow
def test_manifold_grid_errors_name_the_expected_shapes():
    vae, params = small_vae(latent_dim=4)
    with pytest.raises(vae_jax.ShapeError, match=r"latent_dim=4"):
        latent.decode_grid(vae, params, latent.linear_grid(2, 2))
    with pytest.raises(vae_jax.ShapeError, match=r"basis must have shape \(2, 4\)"):
        latent.decode_grid(vae, params, latent.linear_grid(2, 2), basis=jnp.eye(4)[:3])
    with pytest.raises(vae_jax.ShapeError, match=r"origin must have shape \(4,\)"):
        latent.decode_grid(vae, params, latent.linear_grid(2, 2), jnp.eye(4)[:2], jnp.zeros(2))
    vae2, params2 = small_vae(latent_dim=2)
    with pytest.raises(vae_jax.ShapeError, match=r"grid must have shape \(rows, columns, 2\)"):
        latent.decode_grid(vae2, params2, jnp.zeros((4, 2)))


def test_bad_arguments_are_named():
    with pytest.raises(vae_jax.ConfigError, match="0 < low < high < 1"):
        latent.quantile_grid(3, 3, 0.0, 0.9)
    with pytest.raises(vae_jax.ShapeError, match="rows must be a positive integer"):
        latent.linear_grid(0, 3)
    with pytest.raises(vae_jax.ShapeError, match="two codes of one shape"):
        latent.lerp(jnp.zeros(3), jnp.zeros(4), 5)
    with pytest.raises(vae_jax.ShapeError, match="two codes of one shape"):
        latent.slerp(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 5)
    with pytest.raises(vae_jax.ShapeError, match=r"values \(n,\) or \(d, n\)"):
        latent.traversals(jnp.zeros(3), jnp.zeros((2, 4)))
    with pytest.raises(vae_jax.ShapeError, match="num_components"):
        latent.pca(jnp.zeros((10, 2)), num_components=3)
    vae, params = small_vae(latent_dim=2)
    with pytest.raises(vae_jax.ShapeError, match=r"x must have shape \(N, 6, 6, 1\)"):
        latent.encode_means(vae, params, jnp.zeros((4, 5, 5, 1)))


@pytest.mark.slow
def test_a_plain_autoencoder_has_codes_but_no_prior_or_posterior():
    vae, params = small_vae(latent_dim=2, stochastic=False)
    x = jax.random.uniform(jax.random.key(0), (5, 6, 6, 1))
    np.testing.assert_allclose(latent.encode_means(vae, params, x, 2), vae.encode(params, x)[0],
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(vae_jax.ConfigError, match="plain autoencoder"):
        latent.sample_images(vae, params, jax.random.key(0), 4)
    with pytest.raises(vae_jax.ConfigError, match="plain autoencoder"):
        latent.encode_posterior(vae, params, x)
    strip = latent.interpolate_images(vae, params, x[0], x[1], 6)
    chex.assert_shape(strip, (6, 6, 6, 1))


@pytest.mark.slow
@pytest.mark.parametrize("spherical", [False, True])
def test_interpolated_images_start_and_end_at_the_reconstructions(spherical):
    vae, params = small_vae(latent_dim=3)
    x = jax.random.uniform(jax.random.key(0), (2, 6, 6, 1))
    strip = jax.jit(latent.interpolate_images, static_argnums=(0, 4, 5))(
        vae, params, x[0], x[1], 7, spherical)
    chex.assert_shape(strip, (7, 6, 6, 1))
    means, _ = vae.encode(params, x)
    np.testing.assert_allclose(strip[0], latent.decode_images(vae, params, means[0]), rtol=1e-5)
    np.testing.assert_allclose(strip[-1], latent.decode_images(vae, params, means[1]), rtol=1e-5)
