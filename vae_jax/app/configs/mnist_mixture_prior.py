"""mnist_nll with a learned prior: a mixture of 10 Gaussians p(z) (`vae_jax.priors`) in place of
N(0, I), its weights, means and variances trained with the model (issue 18). The KL has no closed
form, so the rate is the single-sample estimate log q(z|x) − log p(z)."""

from vae_jax.app.configs import mnist_nll


def get_config():
    config = mnist_nll.get_config()
    config.prior = "mixture_of_gaussians"
    config.prior_components = 10
    return config
