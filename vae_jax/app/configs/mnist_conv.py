"""mnist_conv: a convolutional VAE (two stride-2 convolutions, 32 and 64 channels, a 256-wide dense
layer, 20 latents) on dynamically binarised MNIST."""

from vae_jax.app.configs import default


def get_config():
    config = default.get_config()
    config.architecture = "conv"
    config.conv_channels = (32, 64)
    config.hidden_dims = (256,)
    return config
