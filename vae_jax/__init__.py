"""vae_jax: variational autoencoders in JAX and Flax — the pure core.

A handful of pure functions over explicit params pytrees and typed PRNG keys, in the manner of
optax: builders take plain arguments (shapes, numbers, Flax modules) and return NamedTuples of pure
functions; nothing reads a config, a file or the environment.

    import jax, vae_jax
    vae = vae_jax.mlp_vae(input_shape=(28, 28, 1), latent_dim=20, hidden_dims=(400,))
    params = vae.init(jax.random.key(0))
    terms = vae_jax.batch_elbo(vae, params, x, jax.random.key(1))   # per-example ELBO terms
    grads, means = jax.grad(vae_jax.loss, argnums=1, has_aux=True)(vae, params, x, key)

One argument order everywhere: ``f(model, params, x, key, …)`` — the model (static under jit)
first, its params second (differentiate with ``argnums=1``), the data, then the key, then
options. All values are in nats.

- Models: `mlp_vae`, `conv_vae`, `make_vae` (your own Flax modules), `VAE`.
- Likelihoods p(x|z): `bernoulli`, `gaussian`, `squared_error`, `Likelihood`.
- Objectives: `elbo`, `batch_elbo`, `loss`, `ELBOTerms`, `kl_weight_schedule`.
- Importance-weighted bound: `iwae_bound`, `batch_iwae_bound`, `iwae_loss`.
- Distributions: `gaussian_sample`, `gaussian_log_prob`, `standard_normal_log_prob`,
  `gaussian_kl_to_standard_normal`, `bernoulli_log_prob`, `categorical_kl`.
- Errors: `VAEJaxError` and its subclasses.

More in the modules `vae_jax.corruption`, `vae_jax.iwae`, `vae_jax.latent`, `vae_jax.likelihoods`,
`vae_jax.priors` (p(z): N(0, I), a learned mixture, the VampPrior), `vae_jax.hierarchical`
(two stochastic layers), `vae_jax.networks`.
The training application (configs, data, the training engine, run folders, evaluation, plots) is
`vae_jax.app`; importing `vae_jax` loads none of it (no TensorFlow, TFDS, Orbax or matplotlib).
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
    DatasetDownloadError,
    ShapeError,
    TrainingDivergedError,
    VAEJaxError,
    WorkdirError,
)
from vae_jax.iwae import batch_iwae_bound, iwae_bound, iwae_loss
from vae_jax.likelihoods import Likelihood, bernoulli, gaussian, squared_error
from vae_jax.model import VAE, conv_vae, make_vae, mlp_vae
from vae_jax.objectives import ELBOTerms, batch_elbo, elbo, kl_weight_schedule, loss

__version__ = "0.2.0"

__all__ = [
    # Models.
    "VAE", "conv_vae", "make_vae", "mlp_vae",
    # Likelihoods.
    "Likelihood", "bernoulli", "gaussian", "squared_error",
    # Objectives.
    "ELBOTerms", "batch_elbo", "elbo", "kl_weight_schedule", "loss",
    # The importance-weighted bound.
    "batch_iwae_bound", "iwae_bound", "iwae_loss",
    # Distributions.
    "bernoulli_log_prob", "categorical_kl", "gaussian_kl_to_standard_normal", "gaussian_log_prob",
    "gaussian_sample", "standard_normal_log_prob",
    # Errors.
    "CheckpointError", "ConfigError", "DamagedCheckpointError", "DataError",
    "DatasetDownloadError", "ShapeError", "TrainingDivergedError", "VAEJaxError", "WorkdirError",
]
