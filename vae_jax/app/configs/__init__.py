"""Configuration: ml_collections presets (one file per preset, each with `get_config()`) and their
validation.

Presets live beside this file; pass one to a script with
``--config=vae_jax/app/configs/NAME.py`` and override any field with ``--config.FIELD=value``.
`validate` checks every field before any work starts and raises a `ConfigError` naming the field.

`FIELD_HELP` is the one place that says what each field means: `field_table` renders it with the
defaults of ``default.py`` as the README's Markdown table (and the docs site's), `field_help` as
the plain text of the scripts' ``--help``.
"""

import math
import numbers
import os
import re
import textwrap

import ml_collections

from vae_jax.app.builders import (ARCHITECTURES, COMPUTE_DTYPES, LR_SCHEDULES, MODELS,
                                  OBJECTIVES, TRAIN_LOOPS)
from vae_jax.corruption import CORRUPTIONS
from vae_jax.errors import ConfigError
from vae_jax.iwae import GRADIENT_ESTIMATORS
from vae_jax.likelihoods import GAUSSIAN_SCALES, LIKELIHOODS
from vae_jax.priors import PRIORS

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
                           ("input_pipeline", INPUT_PIPELINES),
                           ("iwae_gradient", GRADIENT_ESTIMATORS), ("prior", PRIORS)):
        _require(config[field] in choices, field, config[field], f"one of {choices}")
    _require(_is_int(config.prior_components) and config.prior_components > 0,
             "prior_components", config.prior_components, "a positive integer")
    if config.prior != "standard_normal":
        _require(config.model != "ae", "prior", config.prior,
                 "'standard_normal' for the plain autoencoder (model='ae'), which has no prior")
        _require(config.free_bits == 0, "free_bits", config.free_bits,
                 f"0 with prior={config.prior!r}, whose KL does not split into one term per "
                 "latent dimension")
    if config.model == "two_layer_vae":
        _validate_two_layers(config)
    _require(config.architecture != "conv" or len(hidden) == 1, "hidden_dims", hidden,
             "one width when architecture='conv', e.g. '(256,)'")
    _require(config.objective == "iwae" or config.iwae_gradient == "iwae", "iwae_gradient",
             config.iwae_gradient, "'iwae' (the default) unless objective='iwae'")
    if config.objective == "iwae":
        _require(config.model != "ae", "objective", config.objective,
                 "'elbo' for the plain autoencoder (model='ae'), which has no posterior to weigh")
        for field, neutral in (("beta", 1.0), ("kl_warmup_steps", 0), ("free_bits", 0.0)):
            _require(config[field] == neutral, field, config[field],
                     f"{neutral} with objective='iwae' (the importance-weighted bound has no KL "
                     "weight)")
    _validate_applications(config)
    _require(config.prng_impl in PRNG_IMPLS, "prng_impl", config.prng_impl,
             f"one of {PRNG_IMPLS}")
    for field in ("binarize", "progress_bar", "debug_nans"):
        _require(isinstance(config[field], bool), field, config[field], "True or False")
    for field in ("data_dir", "manual_dir"):
        _require(config[field] is None or isinstance(config[field], str), field, config[field],
                 "a folder path or None")
    return config


def _validate_two_layers(config: ml_collections.ConfigDict) -> None:
    """The fields of model='two_layer_vae' (`vae_jax.hierarchical`): its sizes, and the options
    its bound does not have."""
    _require(_is_int(config.top_latent_dim) and config.top_latent_dim > 0, "top_latent_dim",
             config.top_latent_dim, "a positive integer")
    widths = config.top_hidden_dims
    _require(isinstance(widths, (tuple, list)) and all(_is_int(h) and h > 0 for h in widths),
             "top_hidden_dims", widths, "a tuple of positive integers, e.g. '(100, 100)'")
    for field, neutral, why in (
            ("architecture", "mlp", "the two-layer model is an MLP"),
            ("prior", "standard_normal", "its top layer's prior is N(0, I)"),
            ("beta", 1.0, "its bound has no KL weight"),
            ("kl_warmup_steps", 0, "its bound has no KL weight"),
            ("free_bits", 0.0, "its bound has no KL weight"),
            ("iwae_gradient", "iwae", "DReG is for one stochastic layer"),
            ("corruption", "none", "denoising is for one stochastic layer"),
            ("code_l1", 0.0, "sparse codes are for the plain autoencoder")):
        _require(config[field] == neutral, field, config[field],
                 f"{neutral!r} with model='two_layer_vae' ({why})")


def _validate_applications(config: ml_collections.ConfigDict) -> None:
    """The fields of denoising, sparse codes and held-out classes (issue #19)."""
    _require(config.corruption in CORRUPTIONS, "corruption", config.corruption,
             f"one of {CORRUPTIONS}")
    level = config.corruption_level
    _require(_is_real(level) and 0 <= level <= 1, "corruption_level", level,
             "a number in [0, 1] (σ for gaussian, in pixel units; p for mask and salt_and_pepper)")
    _require(config.corruption != "none" or level == 0, "corruption_level", level,
             "0 with corruption='none' (set --config.corruption=gaussian, mask or "
             "salt_and_pepper to corrupt the encoder's input)")
    _require(_is_real(config.code_l1) and config.code_l1 >= 0, "code_l1", config.code_l1,
             "a non-negative number")
    _require(config.model == "ae" or config.code_l1 == 0, "code_l1", config.code_l1,
             "0 for model='vae' (the L1 penalty is for the plain autoencoder's code, "
             "--config.model=ae; a VAE's code is regularised by its KL term)")
    labels = config.exclude_labels
    _require(isinstance(labels, (tuple, list)) and all(_is_int(v) and v >= 0 for v in labels)
             and len(set(labels)) == len(labels), "exclude_labels", labels,
             "a tuple of distinct non-negative integer labels, e.g. --config.exclude_labels='(7,)'")


def get_default() -> ml_collections.ConfigDict:
    """The default preset (an MLP VAE on dynamically binarised MNIST)."""
    from vae_jax.app.configs import default  # pylint: disable=import-outside-toplevel

    return default.get_config()


# What each field of the default preset means, in one line of Markdown (backquoted code, no "|"),
# in the order of the README table. Defaults are not repeated here: they are default.py's.
FIELD_HELP = {
    "dataset": "any TFDS image dataset with uint8 images and train/test splits (`mnist`, "
               "`fashion_mnist`, …)",
    "data_dir": "TFDS data folder (None: TFDS's default, `~/tensorflow_datasets`)",
    "manual_dir": "folder with the original download files, to prepare the dataset offline",
    "binarize": "dynamic binarisation (a fresh Bernoulli draw of every image at every use)",
    "exclude_labels": "labels dropped from the training split (the test split keeps them), "
                      "e.g. `'(7,)'` for one-digit-held-out anomaly detection",
    "model": "`vae`, or `ae`: the plain autoencoder (deterministic code, no sampling, no KL), "
             "or `two_layer_vae`: two stochastic layers x → z₁ → z₂ (Burda et al. 2015; MLP, "
             "`vae_jax.hierarchical`)",
    "top_latent_dim": "`two_layer_vae`: the size of the top layer z₂ (z₁ has `latent_dim`)",
    "top_hidden_dims": "`two_layer_vae`: the widths between z₁ and z₂ (q(z₂∣z₁), and reversed "
                       "in p(z₁∣z₂))",
    "architecture": "`mlp`, or `conv` (stride-2 4×4 convolutions; H and W must divide by "
                    "2^len(conv_channels))",
    "hidden_dims": "MLP hidden widths (the decoder mirrors them), "
                   "`--config.hidden_dims='(500,500)'`; conv: the one dense width",
    "conv_channels": "conv only: channels of the stride-2 layers",
    "latent_dim": "size of z",
    "compute_dtype": "`float32`, or `bfloat16`: mixed precision — dense layers and their "
                     "gradients multiply bfloat16-rounded operands with float32 sums; params, "
                     "activations between layers and losses stay float32. 1.5× faster on the CPU "
                     "here (AMX), the same 10-epoch test −ELBO to 0.02 nat",
    "likelihood": "reconstruction term: `bernoulli`, `gaussian`, `mse`, `rmse` "
                  "(`vae_jax.likelihoods`)",
    "gaussian_scale": "`gaussian`: σ `fixed`, or learned as one `scalar` or `per_pixel`",
    "gaussian_sigma": "`gaussian`: the fixed σ, or the learned σ's initial value",
    "alpha": "`mse` / `rmse`: the weight α of the notes' α·RMSE + KL",
    "beta": "weight of the KL term (β-VAE); 1 gives the ELBO",
    "kl_warmup_steps": "linear KL warm-up: the weight rises from 0 to β over N steps (logged as "
                       "`kl_weight`)",
    "free_bits": "nats per latent dimension: a dimension's batch-mean KL below it is not "
                 "penalised",
    "prior": "p(z): `standard_normal` (closed-form KL), or learned with the model: "
             "`mixture_of_gaussians` or `vampprior` (the encoder's posteriors at learned "
             "pseudo-inputs, Tomczak & Welling 2018), whose KL is the ELBO's single-sample "
             "estimate log q − log p (`vae_jax.priors`)",
    "prior_components": "the number K of the mixture's components or of the VampPrior's "
                        "pseudo-inputs",
    "objective": "`elbo` (β, warm-up and free bits apply), or `iwae`: the importance-weighted "
                 "bound with K = `iwae_samples` (Burda et al. 2015)",
    "iwae_samples": "`iwae`: the number K of importance samples per example",
    "iwae_gradient": "`iwae`: the gradient estimator, `iwae` (Burda et al. 2015) or `dreg`, "
                     "doubly reparameterised (Tucker et al. 2019): the same expectation, a "
                     "lower variance of the encoder's gradient (with the VampPrior, whose "
                     "log p(z) reads the encoder, lower in total, not in every parameter)",
    "corruption": "denoising: the encoder reads a corrupted batch, the reconstruction term "
                  "scores the clean one — `none`, `gaussian`, `mask` or `salt_and_pepper` "
                  "(`vae_jax.corruption`)",
    "corruption_level": "denoising: σ of `gaussian` noise (pixels in [0, 1], clipped), or the "
                        "probability p of each pixel for `mask` (set to 0) and `salt_and_pepper` "
                        "(set to 0 or 1)",
    "code_l1": "sparse codes, `model='ae'` only: weight λ of the L1 penalty λ·Σ_d ∣z_d∣ per "
               "example (logged as `code_l1_norm`)",
    "num_epochs": "epochs to train; running again with more resumes and trains further (fewer "
                  "than done changes nothing)",
    "batch_size": "examples per step, split over the devices (must divide by the device count)",
    "learning_rate": "Adam's (optax) learning rate",
    "lr_schedule": "`constant`, or `cosine`: decay to 0 over `num_epochs` (such a run cannot be "
                   "resumed with another `num_epochs`)",
    "train_loop": "`scan`: each call runs many steps in one `lax.scan`; `step`: one jitted call "
                  "per step; `auto`: `scan`, except `step` for conv on CPU with "
                  "`VAE_JAX_FAST_PATHS=0` (XLA:CPU's own convolutions run several times slower "
                  "in a loop body). Same results",
    "num_devices": "data-parallel over the first N devices; 0: all (of every process)",
    "seed": "every random number of the run derives from it",
    "prng_impl": "`jax.random` implementation (`rbg`, `unsafe_rbg` are faster on some hardware)",
    "input_pipeline": "`device`: the uint8 training set is copied to the device once; `stream`: "
                      "it stays in host memory and each call's chunk of batches is gathered and "
                      "copied ahead of the steps by a background thread; `auto`: `stream` when "
                      "the set takes more than half of the device's free memory. Same results",
    "stream_chunk_mib": "`stream`: the most training data (MiB) one call of the steps takes "
                        "(smaller chunks overlap more of the copying with training)",
    "max_to_keep": "checkpoints kept",
    "save_every_epochs": "a checkpoint every N epochs and after the last one (a killed run redoes "
                         "the epochs since its last checkpoint)",
    "progress_bar": "a progress bar per epoch when stderr is a terminal",
    "debug_nans": "diagnosis: training runs with `jax_debug_nans` and without jit, so the first "
                  "operation that makes a NaN raises `FloatingPointError` with a traceback (slow)",
}

# README.md keeps `field_table()` between these two lines, a blank line either side of it
# (tests/test_cli.py checks it; `write_field_table` rewrites it).
TABLE_START = "<!-- config-fields:start (generated: configs.write_field_table) -->"
TABLE_END = "<!-- config-fields:end -->"


def _field_defaults(config: ml_collections.ConfigDict | None = None
                    ) -> list[tuple[str, object, str]]:
    """(field, value, meaning) in `FIELD_HELP`'s order, with the values of `config` (default: the
    default preset's); raises `ConfigError` when `FIELD_HELP` and the default preset do not name
    the same fields."""
    default = get_default()
    undescribed = sorted(set(default.keys()) - set(FIELD_HELP))
    unknown = sorted(set(FIELD_HELP) - set(default.keys()))
    if undescribed or unknown:
        raise ConfigError(f"configs.FIELD_HELP and default.py disagree: no meaning for "
                          f"{undescribed or 'none'}, a meaning of no field: {unknown or 'none'}")
    values = default if config is None else config
    return [(field, values[field], meaning) for field, meaning in FIELD_HELP.items()]


def _markdown_default(value) -> str:
    if isinstance(value, str):
        return f"`{value}`"
    if isinstance(value, (tuple, list)):
        return f"`{value!r}`"
    return repr(value)


def field_table() -> str:
    """The config fields as a Markdown table ``| field | default | meaning |``, one row per field
    of the default preset (default.py's values), ending with a newline. README.md holds it between
    `TABLE_START` and `TABLE_END`; the docs site includes it."""
    rows = ["| field | default | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{field}` | {_markdown_default(value)} | {meaning} |"
             for field, value, meaning in _field_defaults()]
    return "\n".join(rows) + "\n"


def field_help(width: int = 80, config: ml_collections.ConfigDict | None = None) -> str:
    """The config fields as plain text for ``--help``, in absl's layout: for each field a line
    ``  --config.FIELD: meaning`` (wrapped to `width` columns, backquotes dropped) and
    ``    (default: VALUE)`` with the value of `config` (a preset with the fields of default.py;
    None: default.py's) as Python writes it. Raises `KeyError` when `config` lacks a field."""
    lines = []
    for field, value, meaning in _field_defaults(config):
        lines += textwrap.wrap(f"--config.{field}: {meaning.replace('`', '')}", width,
                               initial_indent="  ", subsequent_indent="    ",
                               break_on_hyphens=False)
        lines.append(f"    (default: {value!r})")
    return "\n".join(lines)


def write_field_table(path: str = "README.md") -> None:
    """Replaces the text between the `TABLE_START` and `TABLE_END` lines of the Markdown file
    `path` with `field_table()`. Raises `ConfigError` when the file lacks either line."""
    with open(path, encoding="utf-8") as file:
        text = file.read()
    pattern = re.compile(f"^{re.escape(TABLE_START)}\n.*?^{re.escape(TABLE_END)}$",
                         re.DOTALL | re.MULTILINE)
    if not pattern.search(text):
        raise ConfigError(f"{path} has no lines {TABLE_START!r} … {TABLE_END!r} to put the "
                          "config field table between")
    text = pattern.sub(lambda _: f"{TABLE_START}\n\n{field_table()}\n{TABLE_END}", text, count=1)
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)
