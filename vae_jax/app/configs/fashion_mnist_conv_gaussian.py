"""fashion_mnist_conv_gaussian: a convolutional VAE on grey-level Fashion-MNIST (not binarised) with
a Gaussian likelihood whose scale is learned per pixel."""

from vae_jax.app.configs import mnist_conv


def get_config():
    config = mnist_conv.get_config()
    config.dataset = "fashion_mnist"
    config.binarize = False
    config.likelihood = "gaussian"
    config.gaussian_scale = "per_pixel"
    config.gaussian_sigma = 0.1
    config.latent_dim = 32
    return config
