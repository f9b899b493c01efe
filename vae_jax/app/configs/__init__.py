"""Configuration: ml_collections presets (one file per preset, each with `get_config()`) and their
validation.

Presets live beside this file; pass one to a script with
``--config=vae_jax/app/configs/NAME.py`` and override any field with ``--config.FIELD=value``. `validate` checks every field before any work
starts and raises a `ConfigError` naming the field.
"""

import math
import numbers
import os

import ml_collections

from vae_jax.app.builders import (ARCHITECTURES, COMPUTE_DTYPES, LR_SCHEDULES, MODELS,
                                  OBJECTIVES, TRAIN_LOOPS)
from vae_jax.errors import ConfigError
from vae_jax.likelihoods import GAUSSIAN_SCALES, LIKELIHOODS

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(CONFIG_DIR, "default.py")

# The values of the choice fields are defined where they are implemented: the likelihoods in the
# core, the rest in `vae_jax.app.builders`, which dispatches on them.
PRNG_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")
INPUT_PIPELINES = ("auto", "device", "stream")

# Fields that may differ between the run that wrote a checkpoint and the run that resumes it: they
# say how long to train, where data lives, how to save, show or debug the run, and how and on
# how many devices it loops, not what is trained.
RESUMABLE_FIELDS = ("num_epochs", "data_dir", "manual_dir", "max_to_keep", "save_every_epochs",
                    "progress_bar", "debug_nans", "train_loop", "num_devices", "input_pipeline",
                    "stream_chunk_mib")


def resumable_fields(config) -> tuple[str, ...]:
    """`RESUMABLE_FIELDS` for a run of `config` (a ConfigDict or its JSON dict): without
    num_epochs when the learning-rate schedule is stretched over num_epochs
    (``lr_schedule="cosine"``)."""
    if config.get("lr_schedule", "constant") == "constant":
        return RESUMABLE_FIELDS
    return tuple(field for field in RESUMABLE_FIELDS if field != "num_epochs")


def _require(condition: bool, field: str, value, expectation: str) -> None:
    if not condition:
        raise ConfigError(f"config.{field} must be {expectation}, got {value!r}")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    """A finite real number (not a bool, NaN or ±inf)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_field_names(config: ml_collections.ConfigDict, source: str = "") -> None:
    """Raises `ConfigError` when `config` has a field the default preset lacks, or lacks one of
    its fields; `source` (e.g. "config file F") says in the message where `config` came from."""
    default = get_default()
    where = f"{source}: " if source else ""
    unknown = sorted(set(config.keys()) - set(default.keys()))
    if unknown:
        raise ConfigError(f"{where}unknown config field(s): {', '.join(unknown)}; "
                          f"known fields are {', '.join(sorted(default.keys()))}")
    missing = sorted(set(default.keys()) - set(config.keys()))
    if missing:
        raise ConfigError(f"{where}config is missing field(s): {', '.join(missing)}")


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks types and ranges of every field; returns `config` or raises `ConfigError`."""
    check_field_names(config)
    _require(isinstance(config.dataset, str) and config.dataset, "dataset", config.dataset,
             "a TFDS image dataset name such as 'mnist'")
    for field in ("num_epochs", "batch_size", "latent_dim", "max_to_keep", "save_every_epochs",
                  "iwae_samples"):
        _require(_is_int(config[field]) and config[field] > 0, field, config[field],
                 "a positive integer")
    _require(_is_int(config.num_devices) and config.num_devices >= 0, "num_devices",
             config.num_devices, "a non-negative integer (0: every device)")
    _require(_is_int(config.seed) and 0 <= config.seed < 2**63, "seed", config.seed,
             "a non-negative integer below 2**63")
    hidden = config.hidden_dims
    _require(isinstance(hidden, (tuple, list)) and all(_is_int(h) and h > 0 for h in hidden),
             "hidden_dims", hidden,
             "a tuple of positive integers, e.g. --config.hidden_dims='(400,)'")
    for field in ("learning_rate", "stream_chunk_mib"):
        _require(_is_real(config[field]) and config[field] > 0, field, config[field],
                 "a positive number")
    channels = config.conv_channels
    _require(isinstance(channels, (tuple, list)) and channels
             and all(_is_int(c) and c > 0 for c in channels),
             "conv_channels", channels, "a non-empty tuple of positive integers, e.g. '(32, 64)'")
    for field in ("beta", "alpha", "free_bits"):
        _require(_is_real(config[field]) and config[field] >= 0, field, config[field],
                 "a non-negative number")
    _require(_is_real(config.gaussian_sigma) and config.gaussian_sigma > 0, "gaussian_sigma",
             config.gaussian_sigma, "a positive number")
    _require(_is_int(config.kl_warmup_steps) and config.kl_warmup_steps >= 0, "kl_warmup_steps",
             config.kl_warmup_steps, "a non-negative integer")
    for field, choices in (("model", MODELS), ("architecture", ARCHITECTURES),
                           ("likelihood", LIKELIHOODS), ("gaussian_scale", GAUSSIAN_SCALES),
                           ("objective", OBJECTIVES), ("lr_schedule", LR_SCHEDULES),
                           ("train_loop", TRAIN_LOOPS), ("compute_dtype", COMPUTE_DTYPES),
                           ("input_pipeline", INPUT_PIPELINES)):
        _require(config[field] in choices, field, config[field], f"one of {choices}")
    _require(config.architecture != "conv" or len(hidden) == 1, "hidden_dims", hidden,
             "one width when architecture='conv', e.g. '(256,)'")
    if config.objective == "iwae":
        _require(config.model == "vae", "objective", config.objective,
                 "'elbo' for the plain autoencoder (model='ae'), which has no posterior to weigh")
        for field, neutral in (("beta", 1.0), ("kl_warmup_steps", 0), ("free_bits", 0.0)):
            _require(config[field] == neutral, field, config[field],
                     f"{neutral} with objective='iwae' (the importance-weighted bound has no KL "
                     "weight)")
    _require(config.prng_impl in PRNG_IMPLS, "prng_impl", config.prng_impl,
             f"one of {PRNG_IMPLS}")
    for field in ("binarize", "progress_bar", "debug_nans"):
        _require(isinstance(config[field], bool), field, config[field], "True or False")
    for field in ("data_dir", "manual_dir"):
        _require(config[field] is None or isinstance(config[field], str), field, config[field],
                 "a folder path or None")
    return config


def get_default() -> ml_collections.ConfigDict:
    """The default preset (an MLP VAE on dynamically binarised MNIST)."""
    from vae_jax.app.configs import default  # pylint: disable=import-outside-toplevel

    return default.get_config()
