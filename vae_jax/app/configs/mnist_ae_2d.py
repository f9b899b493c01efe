"""mnist_ae_2d: the plain autoencoder baseline of the lecture notes — deterministic 2-D codes, no
KL — with the same networks as mnist_2d."""

from vae_jax.app.configs import mnist_2d


def get_config():
    config = mnist_2d.get_config()
    config.model = "ae"
    return config
