"""mnist_mlp: the default — the 784-400-20 MLP VAE on dynamically binarised MNIST."""

from vae_jax.app.configs import default


def get_config():
    return default.get_config()
