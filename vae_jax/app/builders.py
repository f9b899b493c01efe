"""The one place where a validated config becomes the things a run is made of: the model and its
likelihood, the optimizer, the KL weight, the hyperparameters and the run's random keys.

The core (`vae_jax.model`, `vae_jax.likelihoods`, `vae_jax.objectives`) takes plain arguments and
never sees a config; this module reads the config's fields and calls it. It also names the
values each choice field may take (`MODELS`, `ARCHITECTURES`, …), once: `vae_jax.app.configs`
validates against these tuples, and the builders below dispatch on them.

**Hyperparameters are arguments.** The floats a sweep may vary (`HYPERPARAMETERS`: β, α, free
bits, the Gaussian σ, the learning rate, the corruption level, the L1 weight on codes) are read through `hyperparameter(config, hparams,
field)`: the value in `hparams` when it has one (a traced scalar inside the training engine's
``jax.vmap`` over models), else the config's. A single run passes ``hparams={}`` and so builds
exactly the model and optimizer of its config, with Python constants; a sweep passes each
member's values, and one compiled program serves every member.
"""

from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax

from vae_jax import (_fast_paths, hierarchical, likelihoods, model as model_lib, objectives,
                     priors)
from vae_jax.app import prng

MODELS = ("vae", "ae", "two_layer_vae")
ARCHITECTURES = ("mlp", "conv")
OBJECTIVES = ("elbo", "iwae")
LR_SCHEDULES = ("constant", "cosine")
TRAIN_LOOPS = ("auto", "scan", "step")
COMPUTE_DTYPES = ("float32", "bfloat16")
# The float fields that may differ between the models of one compiled training program.
HYPERPARAMETERS = ("beta", "alpha", "free_bits", "gaussian_sigma", "learning_rate",
                   "corruption_level", "code_l1")

Hyperparameters = Mapping[str, Any]  # field of HYPERPARAMETERS -> a float or a (traced) scalar


def hyperparameter(config: ml_collections.ConfigDict, hparams: Hyperparameters, field: str):
    """`hparams[field]` when given, else ``config[field]``: the one way builders read the fields
    of `HYPERPARAMETERS`."""
    if field not in HYPERPARAMETERS:
        raise KeyError(f"{field!r} is not one of {HYPERPARAMETERS}")
    return hparams[field] if field in hparams else config[field]


def likelihood(config: ml_collections.ConfigDict,
               hparams: Hyperparameters = ()) -> likelihoods.Likelihood:
    """p(x|z) as `config.likelihood` names it, with σ (gaussian) or α (mse, rmse) from
    `hyperparameter`."""
    hparams = dict(hparams)
    name = config.likelihood
    if name == "bernoulli":
        return likelihoods.bernoulli()
    if name == "gaussian":
        return likelihoods.gaussian(config.gaussian_scale,
                                    hyperparameter(config, hparams, "gaussian_sigma"))
    return likelihoods.squared_error(hyperparameter(config, hparams, "alpha"), root=name == "rmse")


def model(config: ml_collections.ConfigDict, input_shape: Sequence[int],
          hparams: Hyperparameters = ()) -> model_lib.VAE | hierarchical.TwoLayerVAE:
    """The `vae_jax.VAE` that `config` describes (model, architecture, widths, latent size, compute
    dtype, `likelihood`, prior) for examples of `input_shape`; for ``model="two_layer_vae"`` the
    `vae_jax.hierarchical.TwoLayerVAE` (MLP) with (latent_dim, top_latent_dim) units."""
    stochastic = config.model != "ae"
    dtype = jnp.dtype(config.compute_dtype)
    p_x = likelihood(config, hparams)
    if config.model == "two_layer_vae":
        return hierarchical.two_layer_mlp_vae(
            input_shape, (config.latent_dim, config.top_latent_dim),
            (tuple(config.hidden_dims), tuple(config.top_hidden_dims)), p_x, dtype)
    p_z = priors.make(config.prior, config.prior_components) if stochastic else None
    if config.architecture == "conv":
        (hidden,) = tuple(config.hidden_dims)  # configs.validate: one width for conv
        return model_lib.conv_vae(input_shape, config.latent_dim, tuple(config.conv_channels),
                                  hidden, p_x, stochastic, dtype, p_z)
    return model_lib.mlp_vae(input_shape, config.latent_dim, tuple(config.hidden_dims), p_x,
                             stochastic, dtype, p_z)


def optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int,
              hparams: Hyperparameters = ()) -> optax.GradientTransformation:
    """Adam with the learning rate from `hyperparameter`: constant, or (``lr_schedule="cosine"``)
    decayed along a half cosine to 0 over the run's `num_epochs` · `steps_per_epoch` steps. The
    optimizer state's structure does not depend on the learning rate or `steps_per_epoch`."""
    learning_rate = hyperparameter(config, dict(hparams), "learning_rate")
    if config.lr_schedule == "cosine":
        learning_rate = optax.cosine_decay_schedule(learning_rate,
                                                    config.num_epochs * steps_per_epoch)
    return optax.adam(learning_rate)


def kl_weight(config: ml_collections.ConfigDict, hparams: Hyperparameters = ()) -> optax.Schedule:
    """β_t: `objectives.kl_weight_schedule` of β (from `hyperparameter`) and `kl_warmup_steps`."""
    return objectives.kl_weight_schedule(hyperparameter(config, dict(hparams), "beta"),
                                         config.kl_warmup_steps)


class Components(NamedTuple):
    """What one training step of one model needs (`vae_jax.app.training.make_train_step`)."""

    vae: model_lib.VAE
    optimizer: optax.GradientTransformation
    kl_weight: optax.Schedule
    free_bits: Any  # nats per latent dimension: a float or a (traced) scalar


def components(config: ml_collections.ConfigDict, input_shape: Sequence[int],
               steps_per_epoch: int, hparams: Hyperparameters = ()) -> Components:
    """The model, optimizer, KL weight and free bits of `config`, with `hparams` in place of the
    config's values of those fields."""
    hparams = dict(hparams)
    return Components(model(config, input_shape, hparams),
                      optimizer(config, steps_per_epoch, hparams), kl_weight(config, hparams),
                      hyperparameter(config, hparams, "free_bits"))


def resolve_train_loop(config: ml_collections.ConfigDict) -> str:
    """`config.train_loop`, with "auto" made concrete: "scan", except "step" for convolutional
    networks on a CPU backend with the fast paths off (``VAE_JAX_FAST_PATHS=0``): XLA:CPU's own
    convolutions run several times slower inside a loop body than on their own, while the
    matrix products that replace them on the fast paths (`vae_jax._cpu_conv`) do not."""
    if config.train_loop != "auto":
        return config.train_loop
    slow_convs = (config.architecture == "conv" and jax.default_backend() == "cpu"
                  and not _fast_paths.enabled())
    return "step" if slow_convs else "scan"


class RunKeys(NamedTuple):
    """Independent random streams derived from a run's root key, one per purpose."""

    init: jax.Array  # the initial params
    noise: jax.Array  # per step: binarisation and the reparameterisation ε
    shuffle: jax.Array  # per epoch: the data order
    eval: jax.Array  # fixed: the test set's binarisation, its ELBO's ε and the pictures
    corruption: jax.Array  # per step: the denoising corruption of the encoder's input

    @classmethod
    def from_root(cls, root: jax.Array) -> "RunKeys":
        return cls(*(jax.random.fold_in(root, i) for i in range(5)))


def root_key(config: ml_collections.ConfigDict) -> jax.Array:
    """The run's root key: `config.seed` under `config.prng_impl` (`vae_jax.app.prng`)."""
    return prng.key(config.seed, config.prng_impl)


def run_keys(config: ml_collections.ConfigDict) -> RunKeys:
    """`RunKeys` of the run `config` describes."""
    return RunKeys.from_root(root_key(config))
