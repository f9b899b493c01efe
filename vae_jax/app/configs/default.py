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
    config.exclude_labels = ()  # labels dropped from the training split (held-out classes)
    # Model.
    config.model = "vae"  # "vae", or "ae": the plain autoencoder (no variance, sampling or KL),
    # or "two_layer_vae": x -> z1 -> z2 (vae_jax.hierarchical; MLP): z1 has latent_dim units and
    # hidden_dims widths, z2 top_latent_dim units and top_hidden_dims widths.
    config.top_latent_dim = 50
    config.top_hidden_dims = (100, 100)
    config.architecture = "mlp"  # "mlp" or "conv"
    config.hidden_dims = (400,)  # MLP widths; for conv, the one dense layer's width
    config.conv_channels = (32, 64)  # conv only: stride-2 layers; H and W must divide by 2^len
    config.latent_dim = 20
    # The networks' compute dtype: "float32", or "bfloat16" (mixed precision: bfloat16 products,
    # float32 params, accumulation and losses; fast on GPU, TPU and CPUs with AMX/AVX512-BF16).
    config.compute_dtype = "float32"
    # Reconstruction term (vae_jax.likelihoods).
    config.likelihood = "bernoulli"  # "bernoulli", "gaussian", "mse" or "rmse"
    config.gaussian_scale = "fixed"  # gaussian: "fixed", or learned "scalar" / "per_pixel"
    config.gaussian_sigma = 1.0  # gaussian: the fixed σ, or the learned σ's initial value
    config.alpha = 1.0  # mse / rmse: the weight α of the notes' α·RMSE + KL
    # KL term.
    config.beta = 1.0  # weight of the KL term; 1 gives the ELBO
    config.kl_warmup_steps = 0  # linear warm-up of the KL weight from 0 to beta over N steps
    config.free_bits = 0.0  # nats per latent dimension below which the KL is not penalised
    # The prior p(z) (vae_jax.priors): "standard_normal", or a learned "mixture_of_gaussians" of
    # prior_components components or "vampprior" with prior_components pseudo-inputs (their KL
    # has no closed form: the ELBO estimates it).
    config.prior = "standard_normal"
    config.prior_components = 10
    # Objective: "elbo" (β, warm-up and free bits above apply), or "iwae": the importance-weighted
    # bound with iwae_samples samples per example (Burda et al. 2015).
    config.objective = "elbo"
    config.iwae_samples = 5
    # iwae: the gradient estimator, "iwae" (Burda et al.) or "dreg" (doubly reparameterised,
    # Tucker et al. 2019: the same expectation, a lower variance for the encoder).
    config.iwae_gradient = "iwae"
    # Denoising (vae_jax.corruption): the encoder reads a corrupted copy of each training batch,
    # the reconstruction term scores the clean one. "none", "gaussian" (level: σ in [0, 1] pixel
    # units), "mask" or "salt_and_pepper" (level: the probability p of each pixel).
    config.corruption = "none"
    config.corruption_level = 0.0
    # Sparse codes: the weight λ of the L1 penalty λ·Σ_d |z_d| on the plain autoencoder's code.
    config.code_l1 = 0.0
    # Optimisation.
    config.num_epochs = 10
    config.batch_size = 128
    config.learning_rate = 1e-3
    config.lr_schedule = "constant"  # or "cosine": decay to 0 over num_epochs (fixes num_epochs)
    config.seed = 0
    config.prng_impl = "threefry2x32"  # jax.random implementation of the training key
    # "scan": each call runs many steps in one lax.scan; "step": one jitted call per step (faster
    # for conv nets on XLA:CPU); "auto": "step" for conv on CPU, else "scan". Same results.
    config.train_loop = "auto"
    config.num_devices = 0  # data-parallel over the first N devices; 0: all (of every process)
    # "device": the training set copied to the device once; "stream": kept in host memory and
    # copied chunk by chunk ahead of the steps; "auto": "stream" when it takes more than half of
    # the device's free memory (vae_jax.input_pipeline). Same results.
    config.input_pipeline = "auto"
    config.stream_chunk_mib = 16.0  # stream: the most training data one call of the steps copies
    # Checkpoints and output.
    config.max_to_keep = 3
    config.save_every_epochs = 1  # a checkpoint every N epochs, and after the last one
    config.progress_bar = True  # shown only when stderr is a terminal
    # Diagnosis.
    config.debug_nans = False  # jax_debug_nans, jit off: raise at the first op making a NaN (slow)
    return config
