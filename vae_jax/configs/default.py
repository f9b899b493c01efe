"""Default preset: the 784-400-20 MLP VAE on dynamically binarised MNIST (Adam 1e-3, batch 128).

The same model as the PyTorch example and `../shared/bench/peer_torch_vae.py`.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # Data.
    config.dataset = "mnist"  # any TFDS image dataset with an "image" feature
    config.data_dir = config_dict.placeholder(str)  # TFDS data_dir; None = TFDS's default
    config.manual_dir = config_dict.placeholder(str)  # folder with the original files (offline)
    config.binarize = True  # dynamic binarisation: a fresh Bernoulli draw per use
    # Model.
    config.architecture = "mlp"
    config.hidden_dims = (400,)
    config.latent_dim = 20
    config.likelihood = "bernoulli"
    config.beta = 1.0  # weight of the KL term; 1 gives the ELBO
    # Optimisation.
    config.num_epochs = 10
    config.batch_size = 128
    config.learning_rate = 1e-3
    config.seed = 0
    config.prng_impl = "threefry2x32"  # jax.random implementation of the training key
    # Checkpoints and output.
    config.max_to_keep = 3
    config.progress_bar = True  # shown only when stderr is a terminal
    return config
