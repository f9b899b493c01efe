"""mnist_2d: the MLP VAE with a 2-D latent space, for scatter plots and manifold grids."""

from vae_jax.app.configs import default


def get_config():
    config = default.get_config()
    config.hidden_dims = (512, 256)
    config.latent_dim = 2
    config.num_epochs = 20
    return config
