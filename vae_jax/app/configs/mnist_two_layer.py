"""Two stochastic layers (issue 18): Burda et al.'s MNIST model, x → z₁ (100) → z₂ (50) with MLPs
784-200-200-100 and 100-100-100-50 (`vae_jax.hierarchical`), trained on the ELBO for 250 epochs
with a cosine learning-rate decay, as `mnist_nll`."""

from vae_jax.app.configs import default


def get_config():
    config = default.get_config()
    config.model = "two_layer_vae"
    config.hidden_dims = (200, 200)
    config.latent_dim = 100
    config.top_hidden_dims = (100, 100)
    config.top_latent_dim = 50
    config.lr_schedule = "cosine"
    config.num_epochs = 250
    config.save_every_epochs = 10
    return config
