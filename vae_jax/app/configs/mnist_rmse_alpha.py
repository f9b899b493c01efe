"""mnist_rmse_alpha: the lecture notes' loss, α·RMSE + KL, on grey-level MNIST with 2-D latents.

The reconstruction term is α·√(mean over pixels of (x − x̂)²) with x̂ = sigmoid(decoder output).
α trades reconstruction against the KL term: too small and everything collapses to the prior,
too large and the latent space gets the autoencoder's gaps.
"""

from vae_jax.app.configs import mnist_2d


def get_config():
    config = mnist_2d.get_config()
    config.binarize = False
    config.likelihood = "rmse"
    config.alpha = 1000.0
    return config
