"""vae_jax: variational autoencoders in JAX and Flax.

The research API is a handful of pure functions over explicit params and PRNG keys:

    import jax, vae_jax
    vae = vae_jax.mlp_vae(input_shape=(28, 28, 1), latent_dim=20, hidden_dims=(400,))
    params = vae.init(jax.random.key(0))
    terms = vae_jax.batch_elbo(vae, params, x, jax.random.key(1))   # per-example ELBO terms

TensorFlow and TFDS load only in `vae_jax.app.data` (imported when data is loaded).
"""

from vae_jax.distributions import (
    bernoulli_log_prob,
    categorical_kl,
    gaussian_kl_to_standard_normal,
    gaussian_log_prob,
    gaussian_sample,
    standard_normal_log_prob,
)
from vae_jax.errors import (
    CheckpointError,
    ConfigError,
    DamagedCheckpointError,
    DataError,
    ShapeError,
    TrainingDivergedError,
    VAEJaxError,
    WorkdirError,
)
from vae_jax.iwae import batch_iwae_bound, iwae_bound, iwae_loss
from vae_jax.likelihoods import Likelihood
from vae_jax.model import VAE, conv_vae, make_vae, mlp_vae
from vae_jax.objectives import ELBOTerms, batch_elbo, elbo, kl_weight_schedule, loss

__version__ = "0.1.0"

__all__ = [
    "VAE", "ELBOTerms", "CheckpointError", "ConfigError", "DamagedCheckpointError", "DataError",
    "ShapeError", "TrainingDivergedError", "VAEJaxError",
    "WorkdirError", "Likelihood", "conv_vae", "make_vae",
    "kl_weight_schedule",
    "batch_elbo", "bernoulli_log_prob", "categorical_kl", "elbo", "gaussian_kl_to_standard_normal",
    "gaussian_log_prob", "gaussian_sample", "loss", "iwae_bound", "batch_iwae_bound", "iwae_loss",
    "mlp_vae", "standard_normal_log_prob",
]
