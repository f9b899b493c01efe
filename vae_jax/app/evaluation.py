r"""Test-set evaluation that reports what papers report, for a trained VAE or a training run.

For a test set {x_n}, n = 1..N, of D-dimensional examples (D = prod(input_shape)), in nats per
example unless stated:

| key | quantity |
| --- | --- |
| `neg_elbo` | −(1/N) Σ_n [log p(x_n|z_n) − KL(q(z|x_n) ‖ p(z))], one z_n ~ q(z|x_n) per example |
| `reconstruction_loss` | the distortion −(1/N) Σ_n log p(x_n|z_n), same z_n |
| `kl` | the rate (1/N) Σ_n KL(q(z|x_n) ‖ N(0, I)) (closed form); neg_elbo = distortion + rate |
| `nll` | −(1/N) Σ_n log p̂_K(x_n), the importance-weighted bound (`vae_jax.iwae`), K samples |
| `nll_standard_error` | std_n(log p̂_K(x_n)) / √N: the spread due to the finite test set |
| `*_bits_per_dim` | the same in bits per dimension, nats / (D · ln 2) |
| `kl_per_dim` | (1/N) Σ_n KL(q(z_d|x_n) ‖ N(0, 1)) per latent dimension d; sums to `kl` |
| `mean_variance_per_dim` | A_d = Var_n(E_q[z_d|x_n]) = Var_n(μ_d(x_n)), Burda et al.'s activity |
| `active_units` | #{d : A_d > 0.01}, the number of active latent units (Burda et al. 2015, §5.2) |

`nll` ≥ −log p(x) in expectation, and it shrinks towards it as K grows; on average `nll` ≤
`neg_elbo`. For dynamically binarised MNIST the standard protocol binarises the test set once with a
fixed key and uses K = 5000.

The test set is processed `batch_size` examples per jitted call, every call of the same shape (the
last batch is padded, and the padding dropped on the host), so nothing recompiles. Example n always
uses the keys ``fold_in(fold_in(key, i), n)`` (i = 0 for the ELBO, 1 for the IWAE bound), so the
result depends on `key` alone — not on the batch size, the chunk size or the padding.
"""

import json
import math
import os
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from vae_jax import distributions, iwae, objectives
from vae_jax.app import data, runs
from vae_jax.errors import ConfigError
from vae_jax.model import VAE, Params, check_input

EVAL_FILE = "eval.json"
DEFAULT_NUM_SAMPLES = 5000
DEFAULT_BATCH_SIZE = 100
DEFAULT_CHUNK_SIZE = 20  # fastest measured on a 2-core CPU: small working sets stay in cache
ACTIVE_UNIT_THRESHOLD = 0.01
# Reconstruction terms that are not log-densities (vae_jax.likelihoods): no log p(x) to estimate.
_NOT_DENSITIES = ("mse", "rmse")


def mean_variance_per_dim(means: np.ndarray) -> np.ndarray:
    """A_d = Var_n(μ_d(x_n)): the variance over examples of the encoder means, (N, d) → (d,).

    This is Burda et al.'s Cov_x(E_{z~q(z|x)}[z_d]) for a Gaussian q, whose mean is μ(x); it is
    the population variance (divided by N), computed in float64.
    """
    return np.var(np.asarray(means, np.float64), axis=0)


def active_units(means: np.ndarray, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """The number of latent dimensions d with A_d = Var_n(μ_d(x_n)) > `threshold` (Burda et al.
    2015 use 0.01); `means` has shape (N, latent_dim)."""
    return int(np.sum(mean_variance_per_dim(means) > threshold))


def bits_per_dim(nats: float, input_shape: tuple[int, ...]) -> float:
    """nats per example → bits per dimension: nats / (D · ln 2), D = prod(input_shape).

    For discrete (e.g. binarised) data this is exact; for continuous data add the dequantisation
    term yourself.
    """
    return float(nats) / (math.prod(input_shape) * math.log(2.0))


def _example_metrics(vae: VAE, params: Params, x: jax.Array, elbo_key: jax.Array,
                     iwae_key: jax.Array, num_samples: int,
                     chunk_size: int | None) -> dict[str, jax.Array]:
    """Per-example terms of one example x: scalars, and (latent_dim,) for mean and kl_per_dim."""
    terms = objectives.elbo(vae, params, x, elbo_key)
    log_px = iwae.iwae_bound(vae, params, x, iwae_key, num_samples, chunk_size)
    mean, log_variance = vae.encode(params, x)
    kl_per_dim = jax.vmap(distributions.gaussian_kl_to_standard_normal)(mean, log_variance)
    return {"neg_elbo": -terms.elbo, "reconstruction_loss": -terms.reconstruction,
            "kl": terms.kl, "nll": -log_px, "mean": mean, "kl_per_dim": kl_per_dim}


def make_batch_evaluator(vae: VAE, num_samples: int, batch_size: int,
                         chunk_size: int | None = DEFAULT_CHUNK_SIZE) -> Callable:
    """Returns jitted ``evaluate_batch(params, x, start, key) -> per-example terms``.

    `x` is the whole (padded) data set, (M, *input_shape) with M a multiple of `batch_size`; the
    call evaluates examples start, …, start + batch_size − 1 (`start` an int32 scalar, so every
    call has the same shapes). The result maps "neg_elbo", "reconstruction_loss", "kl" and "nll"
    to (batch_size,) arrays and "mean", "kl_per_dim" to (batch_size, latent_dim) arrays.
    """

    @jax.jit
    def evaluate_batch(params: Params, x: jax.Array, start: jax.Array,
                       key: jax.Array) -> dict[str, jax.Array]:
        batch = jax.lax.dynamic_slice_in_dim(x, start, batch_size)
        indices = start + jnp.arange(batch_size)
        fold_in = jax.vmap(jax.random.fold_in, in_axes=(None, 0))
        elbo_keys = fold_in(jax.random.fold_in(key, 0), indices)
        iwae_keys = fold_in(jax.random.fold_in(key, 1), indices)
        return jax.vmap(_example_metrics, in_axes=(None, None, 0, 0, 0, None, None))(
            vae, params, batch, elbo_keys, iwae_keys, num_samples, chunk_size)

    return evaluate_batch


def evaluate(vae: VAE, params: Params, x: jax.Array | np.ndarray, key: jax.Array,
             num_samples: int = DEFAULT_NUM_SAMPLES, batch_size: int = DEFAULT_BATCH_SIZE,
             chunk_size: int | None = DEFAULT_CHUNK_SIZE,
             progress: bool | None = None) -> dict[str, Any]:
    """Evaluates `vae` on the float data x, shape (N, *input_shape) (binarise it beforehand, with
    a fixed key, for the binarised-MNIST protocol).

    Args:
      vae: a stochastic VAE.
      params: its parameters.
      x: the test set, floating point (in [0, 1] for a Bernoulli likelihood).
      key: a typed PRNG key; it fixes the result (module docstring).
      num_samples: K, the importance samples per example of the log-likelihood estimate.
      batch_size: examples per jitted call.
      chunk_size: importance samples per step of the scan inside a call (memory grows with
        batch_size · chunk_size); None: all K at once.
      progress: show a tqdm bar (None: when stderr is a terminal).

    Returns:
      A JSON-ready dict with the keys of the module docstring (floats, and lists for the per-dim
      entries), plus "num_examples", "num_samples", "latent_dim", "active_unit_threshold" and
      "time_s" (wall time, compilation included).

    Raises:
      ConfigError: a bad `num_samples` or `batch_size`, or a plain autoencoder.
      ShapeError: x is not floating point of shape (N ≥ 1, *vae.input_shape).
      DataError: x holds NaN or ±∞, or, for a Bernoulli likelihood, values outside [0, 1]
        (`vae_jax.model.check_data_values`; x is concrete here: evaluate is not jit-able, it
        brings x to the host once and loops over jitted batches).
    """
    for name, value in (("num_samples", num_samples), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if not vae.stochastic:
        raise ConfigError("evaluation needs a stochastic encoder q(z|x); this model is a plain "
                          "autoencoder (config.model='ae'), which has no ELBO or likelihood bound")
    x = np.asarray(x)
    check_input(vae, x, "evaluate", batched=True)  # shapes, and values: x is concrete here
    start_time = time.perf_counter()
    num_examples = len(x)
    num_batches = -(-num_examples // batch_size)
    padding = num_batches * batch_size - num_examples
    x_padded = jax.device_put(np.concatenate([x, np.zeros((padding,) + x.shape[1:], x.dtype)]))
    evaluate_batch = make_batch_evaluator(vae, num_samples, batch_size, chunk_size)

    show = sys.stderr.isatty() if progress is None else progress
    batches = []
    with tqdm(total=num_examples, desc=f"evaluating (K={num_samples})", unit="example",
              disable=not show, leave=False) as bar:
        for b in range(num_batches):
            result = evaluate_batch(params, x_padded, jnp.int32(b * batch_size), key)
            batches.append(jax.device_get(result))
            bar.update(min(batch_size, num_examples - b * batch_size))
    per_example = {k: np.concatenate([r[k] for r in batches])[:num_examples].astype(np.float64)
                   for k in batches[0]}
    return summarize(per_example, vae.input_shape, num_samples,
                     time_s=time.perf_counter() - start_time)


def summarize(per_example: dict[str, np.ndarray], input_shape: tuple[int, ...], num_samples: int,
              time_s: float | None = None) -> dict[str, Any]:
    """Per-example terms (as from `make_batch_evaluator`, padding removed) → the JSON-ready report
    of `evaluate`."""
    means = {k: float(np.mean(per_example[k]))
             for k in ("neg_elbo", "reconstruction_loss", "kl", "nll")}
    num_examples = len(per_example["nll"])
    variances = mean_variance_per_dim(per_example["mean"])
    report = {
        **means,
        "nll_standard_error": float(np.std(per_example["nll"]) / math.sqrt(num_examples)),
        "neg_elbo_bits_per_dim": bits_per_dim(means["neg_elbo"], input_shape),
        "nll_bits_per_dim": bits_per_dim(means["nll"], input_shape),
        "active_units": active_units(per_example["mean"]),
        "active_unit_threshold": ACTIVE_UNIT_THRESHOLD,
        "latent_dim": int(variances.shape[0]),
        "kl_per_dim": np.mean(per_example["kl_per_dim"], axis=0).tolist(),
        "mean_variance_per_dim": variances.tolist(),
        "num_examples": num_examples,
        "num_samples": num_samples,
    }
    if time_s is not None:
        report["time_s"] = round(time_s, 3)
    return report


def evaluate_workdir(workdir: str, step: int | None = None,
                     num_samples: int = DEFAULT_NUM_SAMPLES, batch_size: int = DEFAULT_BATCH_SIZE,
                     seed: int = 0, chunk_size: int | None = DEFAULT_CHUNK_SIZE,
                     data_dir: str | None = None, manual_dir: str | None = None,
                     progress: bool | None = None) -> dict[str, Any]:
    """Evaluates checkpoint `step` (None: the newest intact one, `vae_jax.app.runs.load_run`) of a
    `scripts/train.py` run in `workdir` on its dataset's test split, and writes the report to
    ``workdir/eval.json`` (atomically; nothing else in `workdir` changes). A read-only
    `workdir` is evaluated all the same, with a warning that the report is not written.

    The model is the one the checkpoint's own config describes (not ``workdir/config.json``, which
    belongs to the last run started there). The test images are scaled to [0, 1] and, when the
    run's config binarises, binarised once with ``fold_in(key(seed), 0)``; `evaluate` then uses
    ``fold_in(key(seed), 1)``. `data_dir` and `manual_dir` override the run's data location.

    Returns the report of `evaluate` with "workdir", "step", "epoch", "dataset", "binarized" and
    "seed" added. Raises `vae_jax.VAEJaxError` subclasses for bad input: a bad `num_samples`,
    `batch_size`, `chunk_size` or `seed` (`ConfigError`), no such workdir or checkpoint, or a
    checkpoint that does not fit the model its config describes (`CheckpointError`).
    """
    for name, value in (("num_samples", num_samples), ("batch_size", batch_size),
                        ("chunk_size", chunk_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value <= 0):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ConfigError(f"seed must be a non-negative integer below 2**63, got {seed!r}")
    _, config = runs.load_config(workdir, step)  # every checkpoint of a run has one likelihood
    if config.likelihood in _NOT_DENSITIES:
        raise ConfigError(f"the run's reconstruction term ({config.likelihood}) is not a "
                          "log-density, so there is no ELBO or log-likelihood to evaluate")
    path = os.path.join(workdir, EVAL_FILE)
    writable = os.access(workdir, os.W_OK) and (not os.path.exists(path)
                                                or os.access(path, os.W_OK))
    if not writable:  # a finished run kept read-only: evaluate it all the same
        print(f"warning: {path} cannot be written (read-only); the report is only returned",
              file=sys.stderr, flush=True)
    run = runs.load_run(workdir, step, data_dir, manual_dir)
    config, dataset, vae, params, step = run.config, run.dataset, run.vae, run.params, run.step

    root = jax.random.key(seed)
    x = data.to_unit_interval(jax.device_put(dataset.test_images))
    if config.binarize:
        x = data.binarize(jax.random.fold_in(root, 0), x)
    data.check_unit_interval(x, f"the {config.dataset!r} test set")
    report = evaluate(vae, params, x, jax.random.fold_in(root, 1), num_samples, batch_size,
                      chunk_size, progress)
    report = {"workdir": os.path.abspath(workdir), "step": step, "epoch": run.epoch,
              "dataset": config.dataset, "binarized": bool(config.binarize), "seed": seed,
              **report}
    if writable:
        try:
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                json.dump(report, f, indent=2)
            os.replace(path + ".tmp", path)
        except OSError as error:
            print(f"warning: could not write {path} ({error.strerror}); the report is only "
                  "returned", file=sys.stderr, flush=True)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report of `evaluate` (or `evaluate_workdir`) as a small text table."""
    k = report["num_samples"]
    rows = [
        ("test −ELBO (1 sample)", report["neg_elbo"], report["neg_elbo_bits_per_dim"]),
        (f"test NLL (IWAE, K={k})", report["nll"], report["nll_bits_per_dim"]),
        ("rate KL(q(z|x) ‖ p(z))", report["kl"], None),
        ("distortion −log p(x|z)", report["reconstruction_loss"], None),
    ]
    lines = []
    if "step" in report:
        lines.append(f"{report['dataset']} test set, checkpoint step {report['step']} (epoch "
                     f"{report['epoch']}) of {report['workdir']}, seed {report['seed']}")
    lines.append(f"{'':26s} {'nats':>9s} {'bits/dim':>9s}")
    for name, nats, bits in rows:
        lines.append(f"{name:26s} {nats:9.2f} " + (f"{bits:9.4f}" if bits is not None else ""))
    lines.append(f"{'NLL standard error':26s} {report['nll_standard_error']:9.2f}")
    lines.append(f"active units (A_d > {report['active_unit_threshold']:g})  "
                 f"{report['active_units']} / {report['latent_dim']}")
    lines.append("KL per dim: " + " ".join(f"{v:.2f}" for v in report["kl_per_dim"]))
    lines.append(f"{report['num_examples']} examples, {report.get('time_s', 0):.1f} s")
    return "\n".join(lines)
