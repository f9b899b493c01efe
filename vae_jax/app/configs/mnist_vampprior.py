"""mnist_nll with the VampPrior (Tomczak & Welling 2018): p(z) = (1/K) Σₖ q(z | uₖ), the encoder's
own posteriors at K = 500 learned pseudo-inputs (the paper's MNIST setting), in place of N(0, I)
(issue 18). The KL has no closed form, so the rate is the single-sample estimate
log q(z|x) − log p(z)."""

from vae_jax.app.configs import mnist_nll


def get_config():
    config = mnist_nll.get_config()
    config.prior = "vampprior"
    config.prior_components = 500
    return config
