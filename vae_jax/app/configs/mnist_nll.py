"""The likelihood preset: a two-layer MLP VAE (784-500-500-50) on dynamically binarised MNIST,
trained for the importance-sampled test log-likelihood (issue #3's ≤ 88 nats in ≤ 30 CPU minutes).

Against the default it adds depth and latent room, a KL warm-up over the first 10 epochs (which
keeps more latent units active) and a cosine learning-rate decay to 0 over the 250 epochs.
"""

from vae_jax.app.configs import default


def get_config():
    config = default.get_config()
    config.hidden_dims = (500, 500)
    config.latent_dim = 50
    config.kl_warmup_steps = 10 * 468  # 10 epochs at batch 128
    config.lr_schedule = "cosine"
    config.num_epochs = 250
    config.save_every_epochs = 10
    return config
