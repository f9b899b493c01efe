r"""Test-set evaluation that reports what papers report, for a trained VAE or a training run.

For a test set {x_n}, n = 1..N, of D-dimensional examples (D = prod(input_shape)), in nats per
example unless stated:

| key | quantity |
| --- | --- |
| `neg_elbo` | −(1/N) Σ_n [log p(x_n|z_n) − KL(q(z|x_n) ‖ p(z))], one z_n ~ q(z|x_n) per example |
| `reconstruction_loss` | the distortion −(1/N) Σ_n log p(x_n|z_n), same z_n |
| `kl` | the rate (1/N) Σ_n KL(q(z|x_n) ‖ p(z)) (closed form for N(0, I), else log q − log p at one z); neg_elbo = distortion + rate |
| `nll` | −(1/N) Σ_n log p̂_K(x_n), the importance-weighted bound (`vae_jax.iwae`), K samples |
| `nll_standard_error` | std_n(log p̂_K(x_n)) / √N: the spread due to the finite test set |
| `*_bits_per_dim` | the same in bits per dimension, nats / (D · ln 2) |
| `kl_per_dim` | (1/N) Σ_n KL(q(z_d|x_n) ‖ N(0, 1)) per latent dimension d; sums to `kl` (None for a prior that does not factorise, e.g. a mixture) |
| `mean_variance_per_dim` | A_d = Var_n(E_q[z_d|x_n]) = Var_n(μ_d(x_n)), Burda et al.'s activity |
| `active_units` | #{d : A_d > 0.01}, the number of active latent units (Burda et al. 2015, §5.2) |
| `kl_bottom`, `kl_top`, `active_units_top`, `latent_dim_top` | two stochastic layers only (`vae_jax.hierarchical`): the rate of z₁ (log q(z₁∣x) − log p(z₁∣z₂)) and of z₂ (KL(q(z₂∣z₁) ‖ N(0, I))), summing to `kl`, and the top layer's active units (A_d of μ₂(μ₁(x))) |

`nll` ≥ −log p(x) in expectation, and it shrinks towards it as K grows; on average `nll` ≤
`neg_elbo`. For dynamically binarised MNIST the standard protocol binarises the test set once with a
fixed key and uses K = 5000.

**One test set, one ELBO.** Training's per-epoch ``test_*`` metrics and this report are the same
computation: `test_set` prepares the test split (scaled to [0, 1] and, for a binarised run,
binarised once with ``fold_in(eval_key, 0)``) and `elbo_terms` evaluates the single-sample ELBO of
example n with the n-th key of ``split(fold_in(eval_key, 1), N)``, where `eval_key` is the run's
own (`vae_jax.app.builders.run_keys`). So, for the same checkpoint, ``eval.json``'s `neg_elbo`
equals the last `test_neg_elbo` of ``metrics.jsonl``.

**Denoising** (`denoising_report`, every report; ``--noise_levels``): for each noise level ν the
test set x (the run's own, binarised for a binarised run) is corrupted once, x̃ = corrupt(x; kind,
ν) with the key ``fold_in(fold_in(eval_key, 4), j)`` for the j-th level (`vae_jax.corruption`:
the run's own kind, gaussian for a run trained without corruption), encoded to its posterior mean
z = μ(x̃) (the code, for the plain autoencoder) and decoded. The report gives, per level,
`reconstruction_log_likelihood` = (1/N) Σ_n log p(x_n | z_n), nats per example, scored against the
*clean* x_n, and `psnr_db` = (1/N) Σ_n 10·log10(1 / MSE_n), the mean over images of the PSNR of
the decoder mean E[x|z_n] against the clean grey-level image (the uint8 test image / 255, not its
binarisation, whose coin flips would dominate the MSE). Training's denoising picture corrupts its
16 images with ``fold_in(eval_key, 5)``.

**Plain autoencoders** (``model='ae'``) have no ELBO or likelihood bound: their report
(`evaluate_autoencoder`) gives `reconstruction_loss` (−(1/N) Σ_n log p(x_n|e(x_n)), in the units
of the run's reconstruction term), `code_l1_norm` (mean Σ_d |z_d|), the code sparsity
(`code_sparsity`: `near_zero_fraction`, the fraction of code entries z_nd with |z_nd| < τ,
τ = `NEAR_ZERO_FRACTION_OF_STD` × the standard deviation of all entries of the test codes — a
threshold relative to the code's scale, which an L1 penalty shrinks) and the denoising rows.

The importance-weighted bound is processed `batch_size` examples per jitted call, every call of
the same shape (the last batch is padded, and the padding dropped on the host), so nothing
recompiles. Example n uses the key ``fold_in(fold_in(eval_key, 3), n)``, so the result depends on
`eval_key` alone, not on the batch size, the chunk size or the padding. (``fold_in(eval_key, 2)``
draws training's prior samples.)
"""

import math
import os
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from vae_jax import corruption, distributions, hierarchical, iwae, latent, objectives, priors
from vae_jax.app import builders, data, run_folder, runs
from vae_jax.errors import ConfigError, ShapeError
from vae_jax.model import VAE, Params, check_input

EVAL_FILE = run_folder.EVAL_FILE
ELBO_CHUNK_SIZE = 1000  # test examples per step of `elbo_terms`' lax.map
DEFAULT_NUM_SAMPLES = 5000
DEFAULT_BATCH_SIZE = 100
DEFAULT_CHUNK_SIZE = 20  # fastest measured on a 2-core CPU: small working sets stay in cache
ACTIVE_UNIT_THRESHOLD = 0.01
DEFAULT_NOISE_LEVELS = (0.0, 0.1, 0.3, 0.5)  # denoising rows of scripts/evaluate.py
NOISE_FOLD = 4  # fold_in(eval_key, 4): the denoising rows' corruption
PICTURE_NOISE_FOLD = 5  # fold_in(eval_key, 5): training's denoising picture
NEAR_ZERO_FRACTION_OF_STD = 0.01  # |z| < 0.01 × std(all code entries) counts as zero
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


def test_set(images_uint8: jax.Array, binarize: bool, eval_key: jax.Array) -> jax.Array:
    """The test set of a run: uint8 images (N, *shape) → float32 (N, *shape) in [0, 1],
    binarised once with ``fold_in(eval_key, 0)`` when `binarize`
    (`vae_jax.app.data.prepare_batch`, as every training batch).

    Pure and not jitted (jit it with ``static_argnums=1``, or call it inside jit, vmap or
    lax.map). `eval_key` is a run's `RunKeys.eval`: training's test metrics, `evaluate_workdir`
    and `vae_jax.app.plots.visualize_run` all prepare the test set here, so they see the same one.
    """
    return data.prepare_batch(jax.random.fold_in(eval_key, 0), images_uint8, binarize)


def elbo_terms(vae: VAE, params: Params, x: jax.Array, eval_key: jax.Array,
               chunk_size: int = ELBO_CHUNK_SIZE) -> dict[str, jax.Array]:
    """Single-sample ELBO terms of every example of the float data x (N, *input_shape), in nats:
    {"neg_elbo", "reconstruction_loss", "kl"} → (N,) arrays, neg_elbo = reconstruction_loss + kl.

    Example n draws its z with the n-th key of ``split(fold_in(eval_key, 1), N)``
    (`vae_jax.objectives.elbo`); `jax.lax.map` computes `chunk_size` examples at a time to bound
    memory. Pure and not jitted: training jits it once per run, `evaluate` once per report.
    Raises `ShapeError` (at trace time) for x not of shape (N, *vae.input_shape).
    """
    keys = jax.random.split(jax.random.fold_in(eval_key, 1), x.shape[0])
    if isinstance(vae, hierarchical.TwoLayerVAE):  # the rate per layer as well
        terms = jax.lax.map(lambda xk: hierarchical.terms(vae, params, xk[0], xk[1]), (x, keys),
                            batch_size=chunk_size)
        return {"neg_elbo": -terms.elbo, "reconstruction_loss": -terms.reconstruction,
                "kl": terms.kl, "kl_bottom": terms.rate_bottom, "kl_top": terms.rate_top}
    terms = jax.lax.map(lambda xk: objectives.elbo(vae, params, xk[0], xk[1]), (x, keys),
                        batch_size=chunk_size)
    return {"neg_elbo": -terms.elbo, "reconstruction_loss": -terms.reconstruction,
            "kl": terms.kl}


def elbo_means(vae: VAE, params: Params, x: jax.Array, eval_key: jax.Array,
               chunk_size: int = ELBO_CHUNK_SIZE) -> dict[str, jax.Array]:
    """The means over the examples of `elbo_terms` (scalars, nats per example): what training
    logs as ``test_neg_elbo``, ``test_reconstruction_loss`` and ``test_kl``."""
    return jax.tree.map(jnp.mean, elbo_terms(vae, params, x, eval_key, chunk_size))


def _example_metrics(vae: VAE, params: Params, x: jax.Array, iwae_key: jax.Array,
                     num_samples: int, chunk_size: int | None) -> dict[str, jax.Array]:
    """The IWAE terms of one example x: "nll" (a scalar), and "mean", "kl_per_dim" (latent_dim,)
    of q(z|x); for a two-layer model "mean" of q(z₁|x) and "mean_top", the mean of q(z₂|z₁) at
    z₁ = that mean (the top layer's code, for its active units)."""
    if isinstance(vae, hierarchical.TwoLayerVAE):
        log_px = hierarchical.iwae_bound(vae, params, x, iwae_key, num_samples, chunk_size)
        mean, _ = vae.encode(params, x)
        return {"nll": -log_px, "mean": mean, "mean_top": vae.encode_top(params, mean)[0]}
    log_px = iwae.iwae_bound(vae, params, x, iwae_key, num_samples, chunk_size)
    mean, log_variance = vae.encode(params, x)
    if not priors.has_kl_per_dimension(vae.prior):
        return {"nll": -log_px, "mean": mean}
    kl_per_dim = jax.vmap(distributions.gaussian_kl_to_standard_normal)(mean, log_variance)
    return {"nll": -log_px, "mean": mean, "kl_per_dim": kl_per_dim}


def make_batch_evaluator(vae: VAE, num_samples: int, batch_size: int,
                         chunk_size: int | None = DEFAULT_CHUNK_SIZE) -> Callable:
    """Returns jitted ``evaluate_batch(params, x, start, eval_key) -> per-example terms``.

    `x` is the whole (padded) data set, (M, *input_shape) with M a multiple of `batch_size`; the
    call evaluates examples start, …, start + batch_size − 1 (`start` an int32 scalar, so every
    call has the same shapes), example n with the key ``fold_in(fold_in(eval_key, 3), n)``. The
    result maps "nll" (the K-sample bound, negated) to a (batch_size,) array and "mean",
    "kl_per_dim" to (batch_size, latent_dim) arrays.
    """

    @jax.jit
    def evaluate_batch(params: Params, x: jax.Array, start: jax.Array,
                       eval_key: jax.Array) -> dict[str, jax.Array]:
        batch = jax.lax.dynamic_slice_in_dim(x, start, batch_size)
        indices = start + jnp.arange(batch_size)
        iwae_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
            jax.random.fold_in(eval_key, 3), indices)
        return jax.vmap(_example_metrics, in_axes=(None, None, 0, 0, None, None))(
            vae, params, batch, iwae_keys, num_samples, chunk_size)

    return evaluate_batch


def per_example_bound(vae: VAE, params: Params, x: jax.Array, key: jax.Array, num_samples: int,
                      batch_size: int = DEFAULT_BATCH_SIZE,
                      chunk_size: int | None = DEFAULT_CHUNK_SIZE, progress: bool | None = None,
                      desc: str = "evaluating") -> dict[str, np.ndarray]:
    """`make_batch_evaluator`'s per-example terms of every example of the float data x
    (N, *input_shape), on the host as float64: "nll" (N,) in nats, "mean" and "kl_per_dim"
    (N, latent_dim). Every jitted call has the same shape (the last batch is padded with zeros,
    and the padding dropped here); example n uses ``fold_in(fold_in(key, 3), n)``, so the values
    depend on `key` alone, not on `batch_size` or `chunk_size`. A tqdm bar named `desc` shows
    when `progress` (None: when stderr is a terminal)."""
    num_examples = x.shape[0]
    num_batches = -(-num_examples // batch_size)
    padding = num_batches * batch_size - num_examples
    x_padded = jnp.concatenate([x, jnp.zeros((padding,) + x.shape[1:], x.dtype)])
    evaluate_batch = make_batch_evaluator(vae, num_samples, batch_size, chunk_size)
    show = sys.stderr.isatty() if progress is None else progress
    batches = []
    with tqdm(total=num_examples, desc=f"{desc} (K={num_samples})", unit="example",
              disable=not show, leave=False) as bar:
        for b in range(num_batches):
            result = evaluate_batch(params, x_padded, jnp.int32(b * batch_size), key)
            batches.append(jax.device_get(result))
            bar.update(min(batch_size, num_examples - b * batch_size))
    return {k: np.concatenate([r[k] for r in batches])[:num_examples].astype(np.float64)
            for k in batches[0]}


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
      key: a typed PRNG key, the `eval_key` of the module docstring: it fixes the result. Pass
        a run's `RunKeys.eval` (and its `test_set`) to reproduce its logged test ELBO.
      num_samples: K, the importance samples per example of the log-likelihood estimate.
      batch_size: examples per jitted call of the importance-weighted bound.
      chunk_size: importance samples per step of the scan inside a call (memory grows with
        batch_size · chunk_size); None: all K at once. (The ELBO terms are `elbo_terms` of the
        whole set, `ELBO_CHUNK_SIZE` examples at a time, as in training.)
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
    x_host = np.asarray(x)
    check_input(vae, x_host, "evaluate", batched=True)  # shapes, and values: x is concrete here
    start_time = time.perf_counter()
    num_examples = len(x_host)
    x = jax.device_put(x_host)
    # The ELBO terms exactly as training logs them (float32 means of `elbo_terms`).
    elbo = jax.device_get(jax.jit(elbo_means, static_argnums=0)(vae, params, x, key))
    per_example = per_example_bound(vae, params, x, key, num_samples, batch_size, chunk_size,
                                    progress)
    return summarize(elbo, per_example, vae.input_shape, num_samples,
                     time_s=time.perf_counter() - start_time)


def summarize(elbo: dict[str, Any], per_example: dict[str, np.ndarray],
              input_shape: tuple[int, ...], num_samples: int,
              time_s: float | None = None) -> dict[str, Any]:
    """The ELBO means (`elbo_means`) and the per-example terms of `make_batch_evaluator` (padding
    removed) → the JSON-ready report of `evaluate`."""
    means = {**{k: float(elbo[k]) for k in ("neg_elbo", "reconstruction_loss", "kl",
                                              "kl_bottom", "kl_top") if k in elbo},
             "nll": float(np.mean(per_example["nll"]))}
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
        "kl_per_dim": (np.mean(per_example["kl_per_dim"], axis=0).tolist()
                       if "kl_per_dim" in per_example else None),
        "mean_variance_per_dim": variances.tolist(),
        "num_examples": num_examples,
        "num_samples": num_samples,
    }
    if "mean_top" in per_example:  # two stochastic layers: the top layer's units
        report["active_units_top"] = active_units(per_example["mean_top"])
        report["latent_dim_top"] = int(per_example["mean_top"].shape[1])
    if time_s is not None:
        report["time_s"] = round(time_s, 3)
    return report


def denoising_terms(vae: VAE, params: Params, x: jax.Array, grey: jax.Array, key: jax.Array,
                    kind: str, level, chunk_size: int = ELBO_CHUNK_SIZE) -> dict[str, jax.Array]:
    """Per-example denoising terms of the float data x (N, *input_shape), the clean target:
    x̃ = `corruption.corrupt(key, x, kind, level)` (one draw for the whole set), z = μ(x̃) (the
    encoder mean; the code of a plain autoencoder), and

        {"reconstruction_log_likelihood": log p(x_n | z_n) (N,), nats, against the clean x_n,
         "psnr_db": 10·log10(1 / MSE(E[x|z_n], grey_n)) (N,), dB (`corruption.psnr`)}

    `grey` (N, *input_shape) is the clean image in [0, 1] that the PSNR compares with (the
    grey-level test images; x itself for grey-level runs). Pure and not jitted; `chunk_size`
    examples at a time (`jax.lax.map`). Raises `ShapeError` for x or grey not (N,
    *vae.input_shape), `ConfigError` for an unknown `kind`.
    """
    check_input(vae, x, "denoising_terms", batched=True)
    if jnp.shape(grey) != jnp.shape(x):
        raise ShapeError(f"denoising_terms: grey must have the shape of x, {jnp.shape(x)}, got "
                         f"{jnp.shape(grey)}")
    noisy = corruption.corrupt(key, x, kind, level)

    def chunk(args):
        clean, noisy_x, grey_x = args
        mean, _ = vae.encode(params, noisy_x[None])
        decoded = vae.decode(params, mean)
        log_px = vae.log_likelihood(params, clean, decoded[0])
        psnr = corruption.psnr(vae.observation_mean(decoded), grey_x[None])[0]
        return log_px, psnr

    log_px, psnr = jax.lax.map(chunk, (x, noisy, grey), batch_size=chunk_size)
    return {"reconstruction_log_likelihood": log_px, "psnr_db": psnr}


def check_noise_levels(levels) -> tuple[float, ...]:
    """`levels` as a tuple of floats, each in [0, 1]; raises `ConfigError` (one line) otherwise."""
    try:
        values = tuple(float(level) for level in levels)
    except (TypeError, ValueError):
        raise ConfigError(f"noise_levels must be numbers in [0, 1], e.g. 0,0.1,0.3,0.5, got "
                          f"{levels!r}") from None
    bad = [v for v in values if not (math.isfinite(v) and 0 <= v <= 1)]
    if bad:
        raise ConfigError(f"noise_levels must be in [0, 1] (σ for gaussian, p for mask and "
                          f"salt_and_pepper), got {bad}")
    return values


def denoising_report(vae: VAE, params: Params, x: jax.Array, grey: jax.Array,
                     eval_key: jax.Array, kind: str = "gaussian",
                     levels=DEFAULT_NOISE_LEVELS) -> dict[str, Any]:
    """The denoising rows of a report (module docstring): for the j-th of `levels`, `kind`
    corruption with ``fold_in(fold_in(eval_key, NOISE_FOLD), j)``; x the clean float test set,
    grey its grey-level images (`denoising_terms`). Returns {"noise_kind": kind, "denoising":
    [{"level", "reconstruction_log_likelihood" (nats, mean over examples), "psnr_db" (mean over
    images)} per level]}. Raises `ConfigError` for a bad kind or level."""
    levels = check_noise_levels(levels)
    if kind not in corruption.CORRUPTIONS or kind == "none":
        raise ConfigError(f"noise_kind must be one of {corruption.CORRUPTIONS[1:]}, got {kind!r}")
    terms = jax.jit(denoising_terms, static_argnums=(0, 5))
    base = jax.random.fold_in(eval_key, NOISE_FOLD)
    rows = []
    for j, level in enumerate(levels):
        means = jax.device_get(jax.tree.map(jnp.mean, terms(
            vae, params, x, grey, jax.random.fold_in(base, j), kind, jnp.float32(level))))
        rows.append({"level": level, **{k: float(v) for k, v in means.items()}})
    return {"noise_kind": kind, "denoising": rows}


def code_sparsity(codes: np.ndarray,
                  fraction_of_std: float = NEAR_ZERO_FRACTION_OF_STD) -> dict[str, Any]:
    """How sparse the codes (N, latent_dim) are: {"near_zero_fraction": the fraction of entries
    z_nd with |z_nd| < τ, "near_zero_threshold": τ = `fraction_of_std` × std of all N·d entries
    (population std, float64), "code_std", "dead_units": the number of dimensions d whose |z_nd|
    < τ for every n}. A code of all zeros has τ = 0 and counts nothing as near zero."""
    codes = np.asarray(codes, np.float64)
    std = float(np.std(codes))
    threshold = fraction_of_std * std
    near_zero = np.abs(codes) < threshold
    return {"near_zero_fraction": float(np.mean(near_zero)),
            "near_zero_threshold": threshold, "near_zero_fraction_of_std": fraction_of_std,
            "code_std": std, "dead_units": int(np.sum(np.all(near_zero, axis=0)))}


def evaluate_autoencoder(vae: VAE, params: Params, x: jax.Array | np.ndarray,
                         key: jax.Array) -> dict[str, Any]:
    """The report of a plain autoencoder (module docstring) on the float data x (N,
    *input_shape): "reconstruction_loss" (nats per example for a density; the run's units for
    mse / rmse) and its bits per dimension, "code_l1_norm" (mean Σ_d |z_d|), `code_sparsity`,
    "latent_dim", "num_examples". `key` is unused by the deterministic code (kept for the
    signature of `evaluate`). Raises `ShapeError` / `DataError` as `evaluate`."""
    x_host = np.asarray(x)
    check_input(vae, x_host, "evaluate_autoencoder", batched=True)
    x = jax.device_put(x_host)
    elbo = jax.device_get(jax.jit(elbo_means, static_argnums=0)(vae, params, x, key))
    codes = np.asarray(jax.device_get(latent.encode_means(vae, params, x)))
    return {"reconstruction_loss": float(elbo["reconstruction_loss"]),
            "reconstruction_loss_bits_per_dim": bits_per_dim(elbo["reconstruction_loss"],
                                                             vae.input_shape),
            "code_l1_norm": float(np.mean(np.sum(np.abs(codes), axis=-1))),
            **code_sparsity(codes), "latent_dim": int(codes.shape[1]),
            "num_examples": int(codes.shape[0])}


def check_seed(seed: int | None) -> None:
    """Raises `ConfigError` unless `seed` is None or an integer in [0, 2**63)."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not 0 <= seed < 2**63):
        raise ConfigError(f"seed must be a non-negative integer below 2**63, got {seed!r}")


def eval_key(config, seed: int | None = None) -> jax.Array:
    """The key that fixes a reader's test set and samples: with `seed` None the run's own
    (`builders.run_keys(config).eval`, as training used it), else
    ``builders.RunKeys.from_root(jax.random.key(seed)).eval``. Raises `ConfigError` for a bad
    `seed`."""
    check_seed(seed)
    if seed is None:
        return builders.run_keys(config).eval
    return builders.RunKeys.from_root(jax.random.key(seed)).eval


def evaluate_workdir(workdir: str, step: int | None = None,
                     num_samples: int = DEFAULT_NUM_SAMPLES, batch_size: int = DEFAULT_BATCH_SIZE,
                     seed: int | None = None, chunk_size: int | None = DEFAULT_CHUNK_SIZE,
                     data_dir: str | None = None, manual_dir: str | None = None,
                     progress: bool | None = None,
                     dataset: data.ImageDataset | None = None,
                     noise_levels=None, noise_kind: str | None = None) -> dict[str, Any]:
    """Evaluates checkpoint `step` (None: the newest intact one, `vae_jax.app.runs.load_run`) of a
    `scripts/train.py` run in `workdir` on its dataset's test split, and writes the report to
    ``workdir/eval.json`` (atomically, `run_folder.write_json`; nothing else in `workdir`
    changes). A read-only `workdir` is evaluated all the same, with a warning that the report is
    not written.

    The model is the one the checkpoint's own config describes (not ``workdir/config.json``, which
    belongs to the last run started there). With `seed` None (the default) the test set and every
    sample are the run's own (`eval_key`, `test_set`): `neg_elbo`, `reconstruction_loss` and
    `kl` then equal the ``test_*`` values that training logged in ``metrics.jsonl`` for this
    checkpoint. An integer `seed` draws them from ``jax.random.key(seed)`` instead (another
    binarisation of the test set, other samples). `data_dir` and `manual_dir` override the run's
    data location. A run trained on arrays in memory is evaluated on the test split of `dataset`,
    the `data.ImageDataset` it was trained on (``workdir/dataset.json`` records it), and only so
    (`runs.check_dataset`).

    A VAE's report adds "compression", `vae_jax.app.scores.compression_report` of the test set
    (the rate and the bits-back codelength in bits per image beside PNG and zlib). A plain
    autoencoder (``model='ae'``) gets `evaluate_autoencoder`'s report instead (no ELBO, NLL or
    rate). With `noise_levels` (e.g. `DEFAULT_NOISE_LEVELS`) the report adds
    `denoising_report`'s rows for `noise_kind` (None: the run's ``corruption``, gaussian for a
    run without one).

    Returns the report of `evaluate` with "workdir", "step", "epoch", "dataset", "binarized" and
    "seed" (None: the run's own keys) added. Raises `vae_jax.VAEJaxError` subclasses for bad
    input: a bad `num_samples`, `batch_size`, `chunk_size` or `seed` (`ConfigError`), no such
    workdir or checkpoint, or a checkpoint that does not fit the model its config describes
    (`CheckpointError`); a run on arrays in memory without `dataset`, or with other arrays,
    before anything is loaded (`DataError`).
    """
    for name, value in (("num_samples", num_samples), ("batch_size", batch_size),
                        ("chunk_size", chunk_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value <= 0):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    check_seed(seed)
    runs.check_dataset(workdir, dataset, data_dir, manual_dir, "evaluation.evaluate_workdir")
    if noise_levels is not None:
        noise_levels = check_noise_levels(noise_levels)
    if noise_kind is not None and noise_kind not in corruption.CORRUPTIONS[1:]:
        raise ConfigError(f"noise_kind must be one of {corruption.CORRUPTIONS[1:]}, got "
                          f"{noise_kind!r}")
    _, config = runs.load_config(workdir, step)  # every checkpoint of a run has one likelihood
    if config.model != "ae" and config.likelihood in _NOT_DENSITIES:
        raise ConfigError(f"the run's reconstruction term ({config.likelihood}) is not a "
                          "log-density, so there is no ELBO or log-likelihood to evaluate")
    path = os.path.join(workdir, EVAL_FILE)
    writable = os.access(workdir, os.W_OK) and (not os.path.exists(path)
                                                or os.access(path, os.W_OK))
    if not writable:  # a finished run kept read-only: evaluate it all the same
        print(f"warning: {path} cannot be written (read-only); the report is only returned",
              file=sys.stderr, flush=True)
    run = runs.load_run(workdir, step, data_dir, manual_dir, dataset)
    config, dataset, vae, params, step = run.config, run.dataset, run.vae, run.params, run.step

    key = eval_key(config, seed)
    x = jax.jit(test_set, static_argnums=1)(dataset.test_images, config.binarize, key)
    data.check_unit_interval(x, f"the {config.dataset!r} test set")
    if vae.stochastic:
        # pylint: disable-next=import-outside-toplevel  (scores builds on this module)
        from vae_jax.app import scores
        report = evaluate(vae, params, x, key, num_samples, batch_size, chunk_size, progress)
        report["compression"] = scores.compression_report(vae, params, dataset.test_images, key,
                                                          config.binarize)
    else:
        report = evaluate_autoencoder(vae, params, x, key)
    if noise_levels is not None:
        kind = noise_kind or (config.corruption if config.corruption != "none" else "gaussian")
        grey = data.to_unit_interval(jax.device_put(dataset.test_images))
        report.update(denoising_report(vae, params, x, grey, key, kind, noise_levels))
    report = {"workdir": os.path.abspath(workdir), "step": step, "epoch": run.epoch,
              "dataset": config.dataset, "binarized": bool(config.binarize), "seed": seed,
              **report}
    if writable:
        try:
            run_folder.write_json(path, report)
        except OSError as error:
            print(f"warning: could not write {path} ({error.strerror}); the report is only "
                  "returned", file=sys.stderr, flush=True)
    return report


def _format_denoising(report: dict[str, Any]) -> list[str]:
    if "denoising" not in report:
        return []
    lines = [f"denoising ({report['noise_kind']} noise; clean target, z = encoder mean of the "
             "noisy input):", f"  {'level':>6s} {'log p(x|z) nats':>16s} {'PSNR dB':>8s}"]
    lines += [f"  {row['level']:6.2f} {row['reconstruction_log_likelihood']:16.2f} "
              f"{row['psnr_db']:8.2f}" for row in report["denoising"]]
    return lines


def _header(report: dict[str, Any]) -> list[str]:
    if "step" not in report:
        return []
    return [f"{report['dataset']} test set, checkpoint step {report['step']} (epoch "
            f"{report['epoch']}) of {report['workdir']}, "
            + ("the run's own test keys" if report["seed"] is None
               else f"seed {report['seed']}")]


def format_report(report: dict[str, Any]) -> str:
    """The report of `evaluate` (or `evaluate_workdir`, or `evaluate_autoencoder`) as a small
    text table."""
    if "nll" not in report:  # a plain autoencoder
        lines = _header(report)
        lines.append(f"{'reconstruction loss':26s} {report['reconstruction_loss']:9.2f} "
                     f"(bits/dim {report['reconstruction_loss_bits_per_dim']:.4f})")
        lines.append(f"{'code L1 norm Σ|z_d|':26s} {report['code_l1_norm']:9.2f}")
        lines.append(f"near-zero code entries (|z| < {report['near_zero_fraction_of_std']:g} × "
                     f"std = {report['near_zero_threshold']:.4g}): "
                     f"{100 * report['near_zero_fraction']:.1f} %, dead units "
                     f"{report['dead_units']} / {report['latent_dim']}")
        lines += _format_denoising(report)
        lines.append(f"{report['num_examples']} examples")
        return "\n".join(lines)
    k = report["num_samples"]
    rows = [
        ("test −ELBO (1 sample)", report["neg_elbo"], report["neg_elbo_bits_per_dim"]),
        (f"test NLL (IWAE, K={k})", report["nll"], report["nll_bits_per_dim"]),
        ("rate KL(q(z|x) ‖ p(z))", report["kl"], None),
        ("distortion −log p(x|z)", report["reconstruction_loss"], None),
    ]
    if "kl_top" in report:  # two stochastic layers: the rate of each
        rows[2:3] = [("rate of z₁", report["kl_bottom"], None),
                     ("rate of z₂", report["kl_top"], None)]
    lines = _header(report)
    lines.append(f"{'':26s} {'nats':>9s} {'bits/dim':>9s}")
    for name, nats, bits in rows:
        lines.append(f"{name:26s} {nats:9.2f} " + (f"{bits:9.4f}" if bits is not None else ""))
    lines.append(f"{'NLL standard error':26s} {report['nll_standard_error']:9.2f}")
    lines.append(f"active units (A_d > {report['active_unit_threshold']:g})  "
                 f"{report['active_units']} / {report['latent_dim']}"
                 + (f" (z₁), {report['active_units_top']} / {report['latent_dim_top']} (z₂)"
                    if "active_units_top" in report else ""))
    if report["kl_per_dim"] is not None:
        lines.append("KL per dim: " + " ".join(f"{v:.2f}" for v in report["kl_per_dim"]))
    lines += _format_denoising(report)
    if "compression" in report:
        # pylint: disable-next=import-outside-toplevel
        from vae_jax.app import scores
        lines.append(scores.format_compression(report["compression"]))
    lines.append(f"{report['num_examples']} examples, {report.get('time_s', 0):.1f} s")
    return "\n".join(lines)
