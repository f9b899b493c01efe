"""beta_vae: β-VAE (Higgins et al. 2017) with β = 4, reached by a linear KL warm-up over the first
5 epochs (2,340 steps at batch 128), on dynamically binarised MNIST with 10 latents."""

from vae_jax.app.configs import default


def get_config():
    config = default.get_config()
    config.beta = 4.0
    config.kl_warmup_steps = 2340
    config.latent_dim = 10
    config.num_epochs = 20
    return config
