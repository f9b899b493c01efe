r"""What autoencoders are used for, measured on a trained run: anomaly (out-of-distribution) scores,
codes for dimensionality reduction, and compression (issue 19; the lecture notes'
"dimensionality reduction, compression (not very effective), denoising, anomaly detection").

**Detection metrics** (pure numpy, float64). Convention throughout: *a higher score means more
anomalous*, and the out-of-distribution (OOD) examples are the positive class. For in-distribution
scores s_i (n_in of them) and OOD scores t_j (n_out):

- `auroc`: P(T > S) + ½ P(T = S) for T, S drawn from the OOD and in scores: the Mann–Whitney
  U / (n_in · n_out), ties counting ½. Chance is 0.5.
- `auprc`: average precision Σ_k (R_k − R_{k−1}) P_k over the distinct thresholds τ_k,
  descending, R = #{t ≥ τ}/n_out, P = #{t ≥ τ}/(#{t ≥ τ} + #{s ≥ τ}) (scikit-learn's definition;
  tied scores form one threshold). Chance is n_out/(n_in + n_out).
- `fpr_at_tpr`: #{s ≥ τ}/n_in for τ the ⌈0.95 · n_out⌉-th largest OOD score: the largest
  threshold that flags at least 95 % of the OOD examples.

**Scores** of one example x (`score_examples`), in nats unless stated:

- `reconstruction`: −log p(x ∣ z = μ(x)), the reconstruction error at the code (for mse/rmse runs
  the α-weighted error); every model, and the plain AE's only score.
- `neg_elbo`: −ELBO, one z ~ q(z∣x) (`vae_jax.app.evaluation.elbo_terms`, the evaluation's
  keys); VAEs.
- `nll`: −log p̂_K(x), the importance-weighted bound with K samples (`vae_jax.iwae`); VAEs whose
  p(x∣z) is a density (not mse/rmse).
- `complexity`: S(x) = −log₂ p(x) − L(x) **in bits**, L(x) the PNG size of x (Serrà et al. 2020,
  "Input complexity and out-of-distribution detection with likelihood-based generative models",
  ICLR); as `nll`.

−log₂ p(x) is `nll` / ln 2, plus, for a continuous likelihood (``gaussian``) on grey levels u/255,
the dequantisation term D·log₂ 255 that turns a density into the probability of the 8-bit image
(P(u) ≈ p(u/255)·255^−D); a Bernoulli likelihood is already a probability. L(x) is the size in bits
of the PNG file (Pillow, compression level 9) of exactly the x the model scores: for a binarised
run the binarised image as a 1-bit PNG, else the uint8 image. A simple image (an MNIST digit:
mostly black) is cheap for PNG and likely for a generative model alike; S subtracts what any
compressor already knows, so what remains is how much better the model does than a generic coder
(Serrà et al., §3). Raw likelihoods fail in one direction: a VAE trained on Fashion-MNIST gives
MNIST digits higher likelihood than its own test images (Nalisnick et al. 2019, "Do deep
generative models know what they don't know?", ICLR).

**Codes and k nearest neighbours**: `knn_predict` / `knn_accuracy` classify each test code by a
majority vote of its k nearest training codes (Euclidean, brute force in batches of float64
products; ties in distance go to the lower training index, ties in votes to the class whose
member is nearest).

**Compression** (`compression_report`): the rate KL(q(z|x) ‖ p(z)) / ln 2 in bits per image, and
the codelength −ELBO / ln 2, beside PNG and zlib of the same images. With bits-back coding
(Hinton & van Camp 1993; Frey & Hinton 1997; Townsend et al. 2019, "Practical lossless compression
with latent variables using bits back coding", BB-ANS) a VAE codes x losslessly in −ELBO/ln 2 bits
on average: z costs −log₂ p(z) bits, x given z costs −log₂ p(x|z) bits, and the −log₂ q(z|x) bits
used to choose z are returned to the receiver; the rate is the net price of the code z, the
distortion the price of the residual.

Everything here reads a run; nothing writes into a run folder (`check_output` refuses an output
inside one: the run folder's owner, `vae_jax.app.run_folder`, lets readers write only ``eval.json``
and ``plots/``).
"""

import csv
import io
import math
import os
import zlib
from typing import Any, Sequence

import jax
import numpy as np

from vae_jax import latent
from vae_jax._checks import describe, real_number
from vae_jax.app import data, evaluation, optional, plots, run_folder, runs
from vae_jax.errors import ConfigError, DataError
from vae_jax.model import VAE, Params, check_input

DEFAULT_NUM_SAMPLES = 100
DEFAULT_BATCH_SIZE = 100
DEFAULT_CHUNK_SIZE = 20
DEFAULT_K = 5
TPR_LEVEL = 0.95
# Reconstruction terms that are not log-densities (`vae_jax.likelihoods`): no log p(x) to bound.
_NOT_DENSITIES = ("mse", "rmse")
_CONTINUOUS = ("gaussian",)
SCORES = ("reconstruction", "neg_elbo", "nll", "complexity")
SCORE_UNITS = {"reconstruction": "nats", "neg_elbo": "nats", "nll": "nats", "complexity": "bits",
               "likelihood_ratio": "nats"}
# Every score a file may hold, in the order of the tables and pictures (`likelihood_ratio` needs a
# background run: `score_workdir`).
ALL_SCORES = (*SCORES, "likelihood_ratio")


# --- Detection metrics ------------------------------------------------------------------------

def _two_sets(scores_in: Any, scores_out: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both score sets as float64 1-D arrays; raises `DataError` for an empty set, another shape
    or a value that is not finite."""
    arrays = []
    for name, scores in (("scores_in", scores_in), ("scores_out", scores_out)):
        try:
            array = np.asarray(scores, np.float64)
        except (TypeError, ValueError):
            raise DataError(f"{name} must be a 1-D array of numbers, got "
                            f"{describe(scores)}") from None
        if array.ndim != 1 or not array.size:
            raise DataError(f"{name} must be a non-empty 1-D array of scores, got shape "
                            f"{array.shape}")
        if not np.all(np.isfinite(array)):
            raise DataError(f"{name} holds NaN or infinite scores")
        arrays.append(array)
    return arrays[0], arrays[1]


def _mid_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, ties sharing the mean of their ranks."""
    unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # the rank of the last member of each group of equal values
    return (last - (counts - 1) / 2.0)[inverse]


def auroc(scores_in: Any, scores_out: Any) -> float:
    """Area under the ROC curve of OOD-vs-in, OOD positive and higher = more anomalous:
    P(T > S) + ½ P(T = S) = U / (n_in · n_out), from the mid-ranks of the pooled scores (module
    docstring). 1: every OOD example scores above every in-distribution one; 0.5: chance; 0: the
    score ranks them backwards. Raises `DataError` for an empty set or a non-finite score."""
    s, t = _two_sets(scores_in, scores_out)
    ranks = _mid_ranks(np.concatenate([s, t]))[len(s):]
    u = ranks.sum() - len(t) * (len(t) + 1) / 2.0
    return float(u / (len(s) * len(t)))


def _counts_above(s: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct thresholds τ (descending) of the pooled scores and, for each, #{t ≥ τ} (true
    positives) and #{s ≥ τ} (false positives)."""
    thresholds = np.unique(np.concatenate([s, t]))[::-1]
    tp = len(t) - np.searchsorted(np.sort(t), thresholds, side="left")
    fp = len(s) - np.searchsorted(np.sort(s), thresholds, side="left")
    return thresholds, tp, fp


def auprc(scores_in: Any, scores_out: Any) -> float:
    """Area under the precision–recall curve of OOD-vs-in (OOD positive), as average precision
    Σ_k (R_k − R_{k−1}) · P_k over the distinct thresholds (tied scores form one threshold;
    module docstring). Chance is n_out / (n_in + n_out). Raises as `auroc`."""
    s, t = _two_sets(scores_in, scores_out)
    _, tp, fp = _counts_above(s, t)
    recall = tp / len(t)
    precision = tp / (tp + fp)
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def fpr_at_tpr(scores_in: Any, scores_out: Any, tpr: float = TPR_LEVEL) -> float:
    """The false-positive rate #{s ≥ τ}/n_in at the largest threshold τ whose true-positive rate
    #{t ≥ τ}/n_out is at least `tpr` (default 0.95): τ is the ⌈tpr · n_out⌉-th largest OOD score.
    Lower is better. Raises as `auroc`, and `ConfigError` for `tpr` outside (0, 1]."""
    value = real_number("fpr_at_tpr", "tpr", tpr)
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"fpr_at_tpr: tpr must be a number in (0, 1], got {value:g}")
    tpr = value
    s, t = _two_sets(scores_in, scores_out)
    needed = max(1, math.ceil(round(tpr * len(t), 9)))  # round: 0.95 · 20 is 19.000000000000004
    threshold = np.sort(t)[::-1][needed - 1]
    return float(np.mean(s >= threshold))


def detection_metrics(scores_in: Any, scores_out: Any) -> dict[str, float]:
    """{"auroc", "auprc", "fpr_at_95_tpr", "mean_in", "mean_out"} of one score (module
    docstring: OOD positive, higher = more anomalous)."""
    s, t = _two_sets(scores_in, scores_out)
    return {"auroc": auroc(s, t), "auprc": auprc(s, t), "fpr_at_95_tpr": fpr_at_tpr(s, t),
            "mean_in": float(np.mean(s)), "mean_out": float(np.mean(t))}


# --- Lossless coders ------------------------------------------------------------------------

def _as_pixels(images: Any, binarized: bool) -> np.ndarray:
    """Images (N, H, W, C) as uint8: {0, 1} pixels when `binarized` (any value > 0.5 is 1),
    else uint8 grey levels (floats in [0, 1] are scaled by 255 and rounded)."""
    array = np.asarray(images)
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise DataError(f"images must have shape (N, H, W, C) with C in 1, 3, 4, got "
                        f"{array.shape}")
    if binarized:
        threshold = 0.5 if np.issubdtype(array.dtype, np.floating) else 127
        return (array > threshold).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        return np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    return array.astype(np.uint8, copy=False)


def png_bits(images: Any, binarized: bool = False) -> np.ndarray:
    """The size in bits of each image's PNG file (Pillow, compression level 9, headers
    included): (N, H, W, C) → (N,) float64. With `binarized` each image is a 1-bit PNG (mode
    "1") of its pixels > ½; else an 8-bit grey (C = 1), RGB or RGBA PNG of uint8 pixels (floats
    in [0, 1] are scaled by 255). Raises `DataError` for another shape."""
    from PIL import Image  # pylint: disable=import-outside-toplevel

    pixels = _as_pixels(images, binarized)
    sizes = np.empty(len(pixels), np.float64)
    for n, image in enumerate(pixels):
        if binarized:
            picture = Image.fromarray(image[..., 0].astype(bool))
        elif image.shape[-1] == 1:
            picture = Image.fromarray(image[..., 0], mode="L")
        else:
            picture = Image.fromarray(image)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG", compress_level=9)
        sizes[n] = 8 * buffer.tell()
    return sizes


def _raw_bytes(pixels: np.ndarray, binarized: bool) -> list[bytes]:
    if binarized:  # 1 bit per pixel, 8 pixels per byte
        return [np.packbits(p.ravel()).tobytes() for p in pixels]
    return [p.tobytes() for p in pixels]


def zlib_bits(images: Any, binarized: bool = False) -> np.ndarray:
    """The size in bits of each image's raw bytes after zlib (level 9; gzip's DEFLATE, without
    gzip's 18-byte header): (N,) float64. Raw bytes: one byte per pixel, or with `binarized` one
    bit per pixel (`np.packbits`)."""
    pixels = _as_pixels(images, binarized)
    return np.array([8.0 * len(zlib.compress(b, 9)) for b in _raw_bytes(pixels, binarized)])


def zlib_set_bits(images: Any, binarized: bool = False) -> float:
    """The size in bits of all the images' raw bytes concatenated and compressed at once by zlib
    (level 9): the coder sees the whole set, so its cost is shared; divide by N for bits per
    image."""
    pixels = _as_pixels(images, binarized)
    return 8.0 * len(zlib.compress(b"".join(_raw_bytes(pixels, binarized)), 9))


def raw_bits(image_shape: Sequence[int], binarized: bool) -> int:
    """The bits of one uncompressed image: D for a binarised image (one bit per pixel: a
    binarised 28 × 28 image has 784 bits), 8·D for uint8 grey levels, D = prod(image_shape)."""
    return math.prod(image_shape) * (1 if binarized else 8)


def dequantization_bits(vae: VAE) -> float:
    """D·log₂ 255 for a continuous likelihood (``gaussian``), whose log p(x) is a density over
    x = u/255: the bits that turn −log₂ p(x) into the codelength of the 8-bit image; 0 for the
    Bernoulli likelihood (already a probability)."""
    return math.prod(vae.input_shape) * math.log2(255) if vae.likelihood in _CONTINUOUS else 0.0


# --- Per-example scores ---------------------------------------------------------------------

def reconstruction_errors(vae: VAE, params: Params, x: jax.Array,
                          chunk_size: int = 1000) -> jax.Array:
    """−log p(x_n | z = μ(x_n)) of every example of x (N, *input_shape): (N,), nats. For a
    plain AE μ(x) is its code; for mse/rmse likelihoods it is the (α-weighted) error the run was
    trained on. Pure; jit it with the model static."""
    def one(example):
        mean, _ = vae.encode(params, example)
        return -vae.log_likelihood(params, example, vae.decode(params, mean))

    return jax.lax.map(one, x, batch_size=min(chunk_size, max(x.shape[0], 1)))


def available_scores(vae: VAE) -> tuple[str, ...]:
    """The scores of `SCORES` defined for `vae` (module docstring's table)."""
    if not vae.stochastic:
        return ("reconstruction",)
    if vae.likelihood in _NOT_DENSITIES:
        return ("reconstruction", "neg_elbo")
    return SCORES


def check_scores(vae: VAE, names: Sequence[str] | None) -> tuple[str, ...]:
    """`names` (None: every score `available_scores` allows) checked against the model; raises
    `ConfigError` (one line) for an unknown name or a score the model does not define — a plain
    AE has no ELBO or likelihood, an mse/rmse run no likelihood."""
    allowed = available_scores(vae)
    if names is None:
        return allowed
    names = tuple(names)
    if not names:
        raise ConfigError(f"no score named; choose from {', '.join(SCORES)}")
    for name in names:
        if name not in SCORES:
            raise ConfigError(f"unknown score {name!r}; the scores are {', '.join(SCORES)}")
        if name not in allowed:
            if not vae.stochastic:
                why = ("a plain autoencoder (model='ae') has no q(z|x) and no likelihood, so no "
                       f"{name}: score it by its reconstruction error (--scores=reconstruction)")
            else:
                why = (f"the run's reconstruction term ({vae.likelihood}) is not a log-density, "
                       f"so there is no {name}: use --scores={','.join(allowed)}")
            raise ConfigError(why)
    return names


def iwae_nll(vae: VAE, params: Params, x: jax.Array, key: jax.Array, num_samples: int,
             batch_size: int = DEFAULT_BATCH_SIZE, chunk_size: int | None = DEFAULT_CHUNK_SIZE,
             progress: bool | None = None, desc: str = "NLL") -> np.ndarray:
    """−log p̂_K(x_n) of every example of the float data x (N, *input_shape): (N,) float64, nats.

    The "nll" of `vae_jax.app.evaluation.per_example_bound`: example n uses
    ``fold_in(fold_in(key, 3), n)``, so with a run's eval key the values are those behind
    scripts/evaluate.py's `nll` (same K).
    """
    return evaluation.per_example_bound(vae, params, x, key, num_samples, batch_size, chunk_size,
                                        progress, desc)["nll"]


def score_examples(vae: VAE, params: Params, x: jax.Array, key: jax.Array, binarized: bool,
                   names: Sequence[str] | None = None, num_samples: int = DEFAULT_NUM_SAMPLES,
                   batch_size: int = DEFAULT_BATCH_SIZE,
                   chunk_size: int | None = DEFAULT_CHUNK_SIZE, progress: bool | None = None,
                   desc: str = "scoring") -> dict[str, np.ndarray]:
    """Per-example anomaly scores of the float data x (N, *input_shape) as the model sees it
    (binarised already for a binarised run): {name: (N,) float64} for each of `names` (None:
    every score the model defines), plus "png_bits" (L(x)) when "complexity" is asked for.
    Units: nats, except complexity and png_bits in bits. Higher = more anomalous.

    `key` fixes the samples: "neg_elbo" is `evaluation.elbo_terms(…, key)`, "nll" `iwae_nll`;
    pass a run's eval key to get the evaluation's per-example values. `binarized` says how PNG
    codes x (a 1-bit image, else 8-bit grey levels).

    Raises `ConfigError` for a score the model does not define (`check_scores`) or a bad
    `num_samples` / `batch_size`, `ShapeError` / `DataError` for x that the model cannot score
    (`vae_jax.model.check_input`).
    """

    names = check_scores(vae, names)
    for name, value in (("num_samples", num_samples), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    x_host = np.asarray(x)
    check_input(vae, x_host, "score_examples", batched=True)
    x = jax.device_put(x_host)
    scores: dict[str, np.ndarray] = {}
    if "reconstruction" in names:
        errors = jax.jit(reconstruction_errors, static_argnums=0)(vae, params, x)
        scores["reconstruction"] = np.asarray(errors, np.float64)
    if "neg_elbo" in names:
        terms = jax.jit(evaluation.elbo_terms, static_argnums=0)(vae, params, x, key)
        scores["neg_elbo"] = np.asarray(terms["neg_elbo"], np.float64)
    if "nll" in names or "complexity" in names:
        nll = iwae_nll(vae, params, x, key, num_samples, batch_size, chunk_size, progress, desc)
        if "nll" in names:
            scores["nll"] = nll
        if "complexity" in names:
            scores["png_bits"] = png_bits(x_host, binarized)
            codelength = nll / math.log(2.0) + dequantization_bits(vae)
            scores["complexity"] = codelength - scores["png_bits"]
    return scores


# --- k nearest neighbours ---------------------------------------------------------------------

def _k_smallest(distances: np.ndarray, k: int, margin: int = 32) -> np.ndarray:
    """The column indices of the k smallest entries of each row of `distances` (B, N), in
    increasing order, equal distances in increasing index: a stable argsort's first k columns.
    Partitions k + `margin` candidates first (a full sort of N per row is what made it slow);
    a batch with more than `margin` distances tied at the k-th is sorted in full."""
    m = min(distances.shape[1], k + margin)
    if m == distances.shape[1]:
        return np.argsort(distances, axis=1, kind="stable")[:, :k]
    candidates = np.argpartition(distances, m - 1, axis=1)[:, :m]
    values = np.take_along_axis(distances, candidates, axis=1)
    # Exact unless the candidates' largest distance ties the k-th smallest (ties past the cut).
    order = np.lexsort((candidates, values), axis=1)
    candidates = np.take_along_axis(candidates, order, axis=1)
    values = np.take_along_axis(values, order, axis=1)
    if np.any(values[:, m - 1] <= values[:, k - 1]):
        return np.argsort(distances, axis=1, kind="stable")[:, :k]
    return candidates[:, :k]


def knn_predict(train_codes: Any, train_labels: Any, test_codes: Any, k: int = DEFAULT_K,
                batch_size: int = 1000) -> np.ndarray:
    """The majority label of the k nearest training codes of each test code: (M,) labels.

    Euclidean distances by brute force, `batch_size` test codes at a time, in float64 as
    ‖a‖² − 2a·b + ‖b‖² (memory: batch_size × N floats); the k nearest by a partition, then a
    sort of the few candidates. Ties in distance go to the lower
    training index (a stable sort); ties in votes to the tied class whose member is nearest.

    Args:
      train_codes: (N, d) codes with labels `train_labels` (N,).
      test_codes: (M, d) codes to classify.
      k: neighbours, 1 ≤ k ≤ N.
      batch_size: test codes per product.

    Raises `ConfigError` for a bad `k` or `batch_size`, `DataError` for shapes that do not fit.
    """
    train = np.asarray(train_codes, np.float64)
    test = np.asarray(test_codes, np.float64)
    labels = np.asarray(train_labels)
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1] or not len(train):
        raise DataError(f"codes must be (N ≥ 1, d) and (M, d), got {train.shape} and "
                        f"{test.shape}")
    if labels.shape != train.shape[:1]:
        raise DataError(f"train_labels must have shape {train.shape[:1]}, got {labels.shape}")
    for name, value, high in (("k", k, len(train)), ("batch_size", batch_size, None)):
        if (isinstance(value, bool) or not isinstance(value, int) or value <= 0
                or (high is not None and value > high)):
            bound = f" and at most {high} (the training codes)" if high is not None else ""
            raise ConfigError(f"{name} must be a positive integer{bound}, got {value!r}")
    classes, label_index = np.unique(labels, return_inverse=True)
    train_norms = np.sum(train**2, axis=1)
    predictions = np.empty(len(test), label_index.dtype)
    for start in range(0, len(test), batch_size):
        batch = test[start:start + batch_size]
        distances = (np.sum(batch**2, axis=1)[:, None] - 2.0 * batch @ train.T
                     + train_norms[None, :])
        nearest = _k_smallest(distances, k)  # (B, k)
        neighbour_labels = label_index[nearest]
        votes = np.zeros((len(batch), len(classes)), np.int64)
        np.add.at(votes, (np.arange(len(batch))[:, None], neighbour_labels), 1)
        tied = votes == votes.max(axis=1, keepdims=True)  # (B, C)
        first = np.argmax(np.take_along_axis(tied, neighbour_labels, axis=1), axis=1)
        predictions[start:start + batch_size] = neighbour_labels[np.arange(len(batch)), first]
    return classes[predictions]


def knn_accuracy(train_codes: Any, train_labels: Any, test_codes: Any, test_labels: Any,
                 k: int = DEFAULT_K, batch_size: int = 1000) -> float:
    """The fraction of test codes whose `knn_predict` label equals `test_labels` (M,). Raises
    as `knn_predict`, and `DataError` when `test_labels` does not have shape (M,)."""
    test_labels = np.asarray(test_labels)
    if test_labels.shape != np.shape(test_codes)[:1]:
        raise DataError(f"test_labels must have shape {np.shape(test_codes)[:1]}, got "
                        f"{test_labels.shape}")
    predicted = knn_predict(train_codes, train_labels, test_codes, k, batch_size)
    return float(np.mean(predicted == test_labels))


# --- Compression ---------------------------------------------------------------------------

def compression_report(vae: VAE, params: Params, x_uint8: Any, key: jax.Array,
                       binarize: bool = True) -> dict[str, Any]:
    """The VAE's rate and codelength beside standard lossless coders, in bits per image.

    Args:
      vae: a stochastic VAE (a plain AE has no rate: `ConfigError`).
      params: its parameters.
      x_uint8: uint8 images (N, *vae.input_shape), e.g. a run's test split.
      key: a typed key, a run's eval key for its own test set: x is prepared with
        `vae_jax.app.evaluation.test_set` (scaled to [0, 1] and, with `binarize`, binarised once
        with ``fold_in(key, 0)``), and the ELBO's samples are `evaluation.elbo_terms`'.
      binarize: whether the run binarises (``config.binarize``). The coders then compress the
        *binarised* images the model scores: one bit per pixel, so a 28 × 28 image has 784 raw
        bits (not the 6272 of its grey levels), a 1-bit PNG, and zlib of the packed bits.

    Returns a JSON-ready dict (float bits per image, averaged over the N images):
      raw_bits: the uncompressed image (`raw_bits`); png_bits: PNG files (`png_bits`, headers
      included, about 70 bytes of them); zlib_bits: zlib of each image's raw bytes;
      zlib_set_bits: zlib of all images at once, per image (`zlib_set_bits`);
      rate_bits: KL(q(z|x) ‖ p(z)) / ln 2, closed form — the net bits of the code z under
      bits-back coding; distortion_bits: −log₂ p(x|z), one z ~ q(z|x) (None for mse/rmse);
      neg_elbo_bits: −ELBO / ln 2 + `dequantization_bits` — the expected bits-back codelength of
      x, lossless (None for mse/rmse, whose reconstruction term is not a log-probability);
      dequantization_bits; and num_examples, pixels, binarized.

    Raises `ConfigError` for a plain AE, `ShapeError` / `DataError` for x of another shape or not
    uint8.
    """

    if not vae.stochastic:
        raise ConfigError("a plain autoencoder (model='ae') has no rate KL(q(z|x) ‖ p(z)) and no "
                          "ELBO, so no codelength to report")
    images = np.asarray(x_uint8)
    if images.dtype != np.uint8 or images.shape[1:] != tuple(vae.input_shape) or not len(images):
        raise DataError(f"x_uint8 must be uint8 images of shape (N ≥ 1, "
                        f"{', '.join(map(str, vae.input_shape))}), got {images.dtype} "
                        f"{images.shape}")
    x = jax.jit(evaluation.test_set, static_argnums=1)(images, binarize, key)
    terms = jax.device_get(jax.jit(evaluation.elbo_terms, static_argnums=0)(vae, params, x, key))
    ln2 = math.log(2.0)
    density = vae.likelihood not in _NOT_DENSITIES
    x_host = np.asarray(x)
    shown = x_host if binarize else images
    dequantization = dequantization_bits(vae)
    return {
        "num_examples": int(len(images)),
        "pixels": int(math.prod(vae.input_shape)),
        "binarized": bool(binarize),
        "raw_bits": float(raw_bits(vae.input_shape, binarize)),
        "png_bits": float(np.mean(png_bits(shown, binarize))),
        "zlib_bits": float(np.mean(zlib_bits(shown, binarize))),
        "zlib_set_bits": zlib_set_bits(shown, binarize) / len(images),
        "rate_bits": float(np.mean(terms["kl"])) / ln2,
        "distortion_bits": (float(np.mean(terms["reconstruction_loss"])) / ln2
                            + dequantization) if density else None,
        "neg_elbo_bits": (float(np.mean(terms["neg_elbo"])) / ln2 + dequantization
                          if density else None),
        "dequantization_bits": dequantization,
    }


def format_compression(report: dict[str, Any]) -> str:
    """`compression_report` as a small text table."""
    what = "binarised (1 bit per pixel)" if report["binarized"] else "8-bit grey levels"
    rows = [("raw", report["raw_bits"]), ("PNG (per image, headers included)", report["png_bits"]),
            ("zlib (per image)", report["zlib_bits"]),
            ("zlib (whole set, per image)", report["zlib_set_bits"]),
            ("VAE rate KL(q‖p)/ln 2 (lossy code z)", report["rate_bits"]),
            ("VAE −ELBO/ln 2 (bits-back, lossless)"
             + (" *" if report["dequantization_bits"] else ""), report["neg_elbo_bits"])]
    lines = [f"compression of {report['num_examples']} images, {report['pixels']} pixels, {what}:",
             f"{'':40s} {'bits/image':>10s}"]
    for name, bits in rows:
        lines.append(f"{name:40s} " + (f"{bits:10.1f}" if bits is not None else f"{'n/a':>10s}"))
    if report["dequantization_bits"]:
        lines.append(f"* with the dequantisation term D·log₂ 255 = "
                     f"{report['dequantization_bits']:.1f} bits that turns the decoder's density "
                     "into the probability of the 8-bit image")
    return "\n".join(lines)


# --- Output files ------------------------------------------------------------------------------

def output_prefix(output: str) -> str:
    """`output` without a trailing .npz / .csv / .json / .png / .npy: the prefix of the files a
    script writes."""
    root, ext = os.path.splitext(output)
    return root if ext in (".npz", ".csv", ".json", ".png", ".npy") else output


def check_output(prefix: str, *workdirs: str) -> None:
    """Raises `ConfigError` (one line) when the files ``PREFIX.*`` would land inside a run
    folder: one of `workdirs` (the runs read) or any other, plots/ included (readers write only
    eval.json and plots/ there: `vae_jax.app.run_folder.check_reader_output`), or their folder
    cannot be created or written."""

    if os.path.basename(prefix) in ("", ".", ".."):
        raise ConfigError(f"--output={prefix!r} names no file: pass a path such as /tmp/scores")
    run_folder.check_reader_output(os.path.dirname(os.path.abspath(prefix + ".npz")),
                                   f"--output={prefix}", "pass a path outside every run folder",
                                   runs=workdirs)


def write_csv(path: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A CSV file with `header` and `rows` (floats with 9 significant digits), written atomically
    (`vae_jax.app.run_folder.write_atomically`)."""

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([f"{v:.9g}" if isinstance(v, (float, np.floating)) else v for v in row])
    run_folder.write_atomically(path, buffer.getvalue())


def save_score_histograms(path: str, scores_in: dict[str, np.ndarray],
                          scores_out: dict[str, np.ndarray], in_name: str, out_name: str,
                          metrics: dict[str, dict[str, float]] | None = None,
                          title: str | None = None) -> str:
    """`vae_jax.app.plots.save_score_histograms` of the scores of `ALL_SCORES` that both sets
    have, with their `SCORE_UNITS`. Returns `path`."""
    units = {name: SCORE_UNITS[name] for name in ALL_SCORES
             if name in scores_in and name in scores_out}
    return plots.save_score_histograms(path, scores_in, scores_out, in_name, out_name, units,
                                       metrics, title)


# --- A run's scores and codes (scripts/score.py, scripts/codes.py) ----------------------------

_SPLITS_IN_MEMORY = ("train", "test")


def _split_images(run, name: str, split: str, data_dir: str | None,
                  manual_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The uint8 images and labels of `split` of dataset `name`: the run's own arrays for its
    dataset's train and test splits, every label included (`Run.full_dataset`: a run trained
    without some labels still scores them), else `vae_jax.app.data.load_split`. Raises
    `DataError` for images of another shape than the run's."""
    if name == run.config.dataset and split in _SPLITS_IN_MEMORY:
        images = getattr(run.full_dataset, f"{split}_images")
        labels = getattr(run.full_dataset, f"{split}_labels")
    else:
        images, labels = data.load_split(name, split, data_dir or run.config.data_dir,
                                         manual_dir)
    if tuple(images.shape[1:]) != tuple(run.dataset.image_shape):
        raise DataError(f"{name!r} {split} images have shape {tuple(images.shape[1:])}, but "
                        f"the run models images of shape {tuple(run.dataset.image_shape)} "
                        f"({run.config.dataset!r}): score a dataset with the run's image shape")
    return np.asarray(images), np.asarray(labels)


def _model_kind(config) -> Any:
    """What `check_scores` reads of a model (stochastic, likelihood), from a run's config."""
    import types  # pylint: disable=import-outside-toplevel

    return types.SimpleNamespace(stochastic=config.model != "ae", likelihood=config.likelihood)


def _positive(name: str, value: Any, optional_: bool = False) -> None:
    if optional_ and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def score_workdir(workdir: str, output: str, out_dataset: str | None = None,
                  out_split: str = "test", in_dataset: str | None = None,
                  in_split: str | None = None,
                  held_out: bool = False, scores: Sequence[str] | None = None,
                  num_samples: int = DEFAULT_NUM_SAMPLES, batch_size: int = DEFAULT_BATCH_SIZE,
                  chunk_size: int | None = DEFAULT_CHUNK_SIZE, seed: int | None = None,
                  step: int | None = None, data_dir: str | None = None,
                  manual_dir: str | None = None, out_manual_dir: str | None = None,
                  in_manual_dir: str | None = None, histogram: bool = True,
                  progress: bool | None = None, dataset=None,
                  background: str | None = None) -> dict[str, Any]:
    """Anomaly scores of a trained run: OOD data `out_split` of `out_dataset` against the
    in-distribution `in_split` of `in_dataset` (both default: the run's dataset, test split).

    With `held_out`, for a run trained without some labels (``config.exclude_labels``): in = the
    images of `out_split` of the run's dataset with the kept labels, OOD = those with the
    excluded labels. When the OOD set is the in-distribution set, only the scores are written.

    With `background`, the folder of a second run (a background model p₀ with the same image
    shape and binarisation, e.g. trained on perturbed or generic images), the score
    ``likelihood_ratio`` = nll − nll₀ = −log p(x)/p₀(x) (nats; K samples each, the same x and
    keys) is added: the likelihood ratio of Ren et al. 2019 ("Likelihood ratios for
    out-of-distribution detection", NeurIPS), negated so that higher = more anomalous; what both
    models find easy cancels.

    Each set is prepared as the evaluation prepares the test set (`evaluation.test_set` with the
    run's eval key, or `seed`'s) and scored by `score_examples` (`scores`: None = every score
    the model defines). Writes, never into a run folder (`check_output`): ``PREFIX.npz``
    (``in_SCORE``, ``out_SCORE``, ``in_labels``, ``out_labels``), ``PREFIX.csv`` (one row per
    example: set, index, label, scores), ``PREFIX.json`` (what is returned) and, with
    `histogram` (needs matplotlib), ``PREFIX.png``; PREFIX is `output` without its extension.

    Returns a JSON-ready dict: workdir, step, the two sets (dataset, split, num_examples,
    labels), num_samples, seed, the convention, ``metrics`` {score: `detection_metrics`} and
    ``files``.

    Raises `ConfigError` for a bad number, seed or output, a score the model does not define (a
    plain AE asked for an NLL), `held_out` for a run without excluded labels or with another
    dataset or `in_split`; `DataError` for an
    unknown dataset or split, or images of another shape than the run's (one line each); and as
    `vae_jax.app.runs.load_run`.
    """

    _positive("num_samples", num_samples)
    _positive("batch_size", batch_size)
    _positive("chunk_size", chunk_size, optional_=True)
    evaluation.check_seed(seed)
    prefix = output_prefix(output)
    check_output(prefix, workdir, *([background] if background is not None else []))
    if histogram:
        optional.require("matplotlib", "drawing the score histograms (or pass --nohistogram)")
    runs.check_dataset(workdir, dataset, data_dir, manual_dir, "scores.score_workdir")
    _, config = runs.load_config(workdir, step)
    names = check_scores(_model_kind(config), scores)
    if background is not None:
        _, background_config = runs.load_config(background)
        for what, kind in (("the run", _model_kind(config)),
                           (f"the background run {background}", _model_kind(background_config))):
            if "nll" not in available_scores(kind):
                model = "vae" if kind.stochastic else "ae"
                raise ConfigError(f"a likelihood ratio needs a log-likelihood of {what}, whose "
                                  f"model (model={model!r}, {kind.likelihood}) has none")
        if bool(background_config.binarize) != bool(config.binarize):
            def verb(c):
                return "binarises" if c.binarize else "does not binarise"

            raise ConfigError(f"the background run {background} {verb(background_config)} its "
                              f"data and the run {verb(config)} it: both must score the same x "
                              "(train the background run with the run's config.binarize)")
    excluded = tuple(int(v) for v in (config.get("exclude_labels", ()) or ()))
    own = config.dataset
    if held_out:
        if not excluded:
            raise ConfigError(f"--held_out needs a run trained without some labels, but the "
                              f"config of {workdir} excludes none (config.exclude_labels)")
        if (out_dataset or own) != own or (in_dataset or own) != own:
            raise ConfigError("--held_out scores the run's own dataset: drop --dataset and "
                              "--in_dataset")
        if in_split not in (None, out_split):
            raise ConfigError(f"--held_out takes both sets from --split={out_split}: drop "
                              f"--in_split={in_split}")
    out_dataset, in_dataset, in_split = out_dataset or own, in_dataset or own, in_split or "test"
    run = runs.load_run(workdir, step, data_dir, manual_dir, dataset)
    vae, params = run.vae, run.params
    key = evaluation.eval_key(config, seed)
    if background is not None:
        background_run = runs.load_run(background, None, data_dir)
        if tuple(background_run.vae.input_shape) != tuple(vae.input_shape):
            raise DataError(f"the background run {background} models images of shape "
                            f"{tuple(background_run.vae.input_shape)}, the run "
                            f"{tuple(vae.input_shape)}: they must score the same images")
    prepare = jax.jit(evaluation.test_set, static_argnums=1)

    raw = {}

    def images_of(role, name, split, where):
        folder = manual_dir if name == own else where
        raw[role] = _split_images(run, name, split, data_dir, folder)
        return raw[role]

    if held_out:
        images, labels = images_of("out", own, out_split, None)
        x_all = prepare(images, bool(config.binarize), key)
        is_out = np.isin(labels, excluded)
        if not is_out.any() or is_out.all():
            raise DataError(f"the {own!r} {out_split} split has "
                            f"{'no' if not is_out.any() else 'only'} images of the excluded "
                            f"labels {list(excluded)}: nothing to compare")
        sets = {"in": (np.asarray(x_all)[~is_out], labels[~is_out], own,
                       f"{out_split} (labels not in {list(excluded)})"),
                "out": (np.asarray(x_all)[is_out], labels[is_out], own,
                        f"{out_split} (labels {list(excluded)})")}
    else:
        sets = {}
        for role, name, split, where in (("in", in_dataset, in_split, in_manual_dir),
                                         ("out", out_dataset, out_split, out_manual_dir)):
            images, labels = images_of(role, name, split, where)
            sets[role] = (np.asarray(prepare(images, bool(config.binarize), key)), labels, name,
                          split)
    same = not held_out and (in_dataset, in_split) == (out_dataset, out_split)
    warnings = [] if same else _set_warnings(raw, sets, excluded, own, held_out)
    per_set: dict[str, dict[str, np.ndarray]] = {}
    for role in ("in",) if same else ("in", "out"):
        x, _, name, split = sets[role]
        data.check_unit_interval(x, f"the {name!r} {split} images")
        per_set[role] = score_examples(vae, params, x, key, bool(config.binarize), names,
                                       num_samples, batch_size, chunk_size, progress,
                                       desc=f"{role}: {name} {split}")
        if background is not None:
            nll = per_set[role].get("nll")
            if nll is None:
                nll = iwae_nll(vae, params, x, key, num_samples, batch_size, chunk_size, progress)
            per_set[role]["likelihood_ratio"] = nll - iwae_nll(
                background_run.vae, background_run.params, x, key, num_samples, batch_size,
                chunk_size, progress, desc=f"{role}: background")
    if same:
        per_set["out"] = per_set["in"]
    if background is not None:
        names = (*names, "likelihood_ratio")
    metrics = {} if same else {n: detection_metrics(per_set["in"][n], per_set["out"][n])
                               for n in names}
    files = {"npz": prefix + ".npz", "csv": prefix + ".csv", "json": prefix + ".json"}
    arrays = {f"{role}_{n}": v for role in per_set for n, v in per_set[role].items()}
    arrays.update({f"{role}_labels": sets[role][1] for role in ("in", "out")})
    with open(files["npz"] + ".tmp", "wb") as f:
        np.savez(f, **arrays)
    os.replace(files["npz"] + ".tmp", files["npz"])
    columns = [n for n in (*ALL_SCORES, "png_bits") if n in per_set["in"]]
    rows = [(role, i, int(sets[role][1][i]), *(per_set[role][c][i] for c in columns))
            for role in (("in",) if same else ("in", "out")) for i in range(len(sets[role][1]))]
    write_csv(files["csv"], ["set", "index", "label", *columns], rows)
    summary = {
        "workdir": os.path.abspath(workdir), "step": run.step, "binarized": bool(config.binarize),
        "model": config.model, "likelihood": config.likelihood,
        "in": {"dataset": sets["in"][2], "split": sets["in"][3],
               "num_examples": int(len(sets["in"][1]))},
        "out": {"dataset": sets["out"][2], "split": sets["out"][3],
                "num_examples": int(len(sets["out"][1]))},
        "held_out_labels": list(excluded) if held_out else None,
        "scores": list(names), "units": {n: SCORE_UNITS[n] for n in names},
        "num_samples": num_samples if {"nll", "complexity"} & set(names) else None,
        "seed": seed,
        "background": os.path.abspath(background) if background is not None else None,
        "convention": "higher score = more anomalous; OOD examples are the positive class",
        "metrics": metrics, "warnings": warnings,
        "means": {role: {n: float(np.mean(v)) for n, v in per_set[role].items()}
                  for role in ("in", "out")},
        "files": files,
    }
    if histogram and not same:
        files["png"] = save_score_histograms(
            prefix + ".png", per_set["in"], per_set["out"],
            f"{sets['in'][2]} {sets['in'][3]}", f"{sets['out'][2]} {sets['out'][3]}", metrics,
            title=f"{config.model} on {own}, step {run.step}")
    run_folder.write_json(files["json"], summary)
    return summary


def format_scores(summary: dict[str, Any]) -> str:
    """The result of `score_workdir` as a small text table."""
    inside, out = summary["in"], summary["out"]
    lines = [f"in: {inside['dataset']} {inside['split']} ({inside['num_examples']} images)   "
             f"OOD: {out['dataset']} {out['split']} ({out['num_examples']} images)",
             f"step {summary['step']} of {summary['workdir']}"
             + (f", K = {summary['num_samples']}" if summary["num_samples"] else ""),
             "higher score = more anomalous, OOD positive"]
    if summary["metrics"]:
        lines.append(f"{'score':24s} {'mean in':>9s} {'mean OOD':>9s} {'AUROC':>7s} "
                     f"{'AUPRC':>7s} {'FPR@95':>7s}")
        for name, m in summary["metrics"].items():
            lines.append(f"{name + ' (' + summary['units'][name] + ')':24s} {m['mean_in']:9.2f} "
                         f"{m['mean_out']:9.2f} {m['auroc']:7.3f} {m['auprc']:7.3f} "
                         f"{m['fpr_at_95_tpr']:7.3f}")
    else:
        lines.append("the OOD set is the in-distribution set: scores only; means "
                     + ", ".join(f"{n} {v:.2f}" for n, v in summary["means"]["in"].items()))
    lines.extend(f"warning: {warning}" for warning in summary.get("warnings", ()))
    lines.append("files: " + " ".join(summary["files"].values()))
    return "\n".join(lines)


def _set_warnings(raw: dict[str, tuple[np.ndarray, np.ndarray]], sets: dict[str, tuple],
                  excluded: Sequence[int], own: str, held_out: bool) -> list[str]:
    """What makes the in / OOD comparison of `score_workdir` other than it looks: an
    in-distribution set holding labels the run was trained without, and images in both sets
    (identical pixels: overlapping splits)."""
    warnings = []
    in_labels = sets["in"][1]
    unseen = np.isin(in_labels, excluded) if sets["in"][2] == own and not held_out else []
    if np.any(unseen):
        warnings.append(f"the in-distribution set holds {int(np.sum(unseen))} images of the "
                        f"labels {list(excluded)} the run was trained without: pass --held_out "
                        "to score them as OOD")
    if "in" in raw:
        seen = {image.tobytes() for image in raw["in"][0]}
        both = sum(image.tobytes() in seen for image in raw["out"][0])
        if both:
            warnings.append(f"{both} of the {len(raw['out'][0])} OOD images are also in the "
                            "in-distribution set (identical pixels): the two splits overlap")
    return warnings


def codes_workdir(workdir: str, output: str, split: str = "test", k: int = DEFAULT_K,
                  step: int | None = None, seed: int | None = None,
                  data_dir: str | None = None, manual_dir: str | None = None,
                  compression: bool = True, dataset=None) -> dict[str, Any]:
    """Exports the codes of `split` of a run's dataset and measures how much class structure
    they keep and what they cost.

    The images are prepared as the evaluation prepares the test set (`evaluation.test_set`,
    the run's eval key or `seed`'s). Writes, never into a run folder (`check_output`):
    ``PREFIX_mean.npy`` (N, d)
    (μ(x), the plain AE's code), ``PREFIX_log_variance.npy`` (VAEs), ``PREFIX_labels.npy`` (N,),
    ``PREFIX.csv`` (label, mean_0…, log_variance_0…) and ``PREFIX.json`` (what is returned).

    Returns: workdir, step, split, num_examples, latent_dim, ``knn`` {k, accuracy}: the
    `knn_accuracy` of the test codes classified by the train codes (μ), both splits whole
    (``excluded_from_training``: the labels the encoder never saw, which the probe still
    classifies from their codes), and, with
    `compression` and a VAE, ``compression``: `compression_report` of the exported split.

    Raises `ConfigError` for a bad k, seed or output, `DataError` for an unknown split, and as
    `vae_jax.app.runs.load_run`.
    """

    _positive("k", k)
    evaluation.check_seed(seed)
    prefix = output_prefix(output)
    check_output(prefix, workdir)
    runs.check_dataset(workdir, dataset, data_dir, manual_dir, "scores.codes_workdir")
    run = runs.load_run(workdir, step, data_dir, manual_dir, dataset)
    config, vae, params = run.config, run.vae, run.params
    excluded = [int(v) for v in (config.get("exclude_labels", ()) or ())]
    key = evaluation.eval_key(config, seed)
    prepare = jax.jit(evaluation.test_set, static_argnums=1)
    if vae.stochastic:
        encode = jax.jit(latent.encode_posterior, static_argnums=(0, 3))
    else:
        encode = jax.jit(lambda v, p, x, c: (latent.encode_means(v, p, x, c), None),
                         static_argnums=(0, 3))

    def codes_of(images):
        mean, log_variance = encode(vae, params, prepare(images, bool(config.binarize), key), 500)
        return np.asarray(mean), None if log_variance is None else np.asarray(log_variance)

    images, labels = _split_images(run, config.dataset, split, data_dir, manual_dir)
    mean, log_variance = codes_of(images)
    probe = run.full_dataset
    train_mean = codes_of(probe.train_images)[0] if split != "train" else mean
    test_mean = codes_of(probe.test_images)[0] if split != "test" else mean
    if k > len(train_mean):
        raise ConfigError(f"k must be at most {len(train_mean)} (the training codes), got {k}")
    accuracy = knn_accuracy(train_mean, probe.train_labels, test_mean, probe.test_labels, k)
    files = {"mean": prefix + "_mean.npy", "labels": prefix + "_labels.npy",
             "csv": prefix + ".csv", "json": prefix + ".json"}
    np.save(files["mean"], mean)
    np.save(files["labels"], labels)
    header = ["label"] + [f"mean_{i}" for i in range(mean.shape[1])]
    columns = [labels[:, None], mean]
    if log_variance is not None:
        files["log_variance"] = prefix + "_log_variance.npy"
        np.save(files["log_variance"], log_variance)
        header += [f"log_variance_{i}" for i in range(mean.shape[1])]
        columns.append(log_variance)
    rows = [(int(labels[n]), *(float(v) for v in np.concatenate([c[n] for c in columns[1:]])))
            for n in range(len(labels))]
    write_csv(files["csv"], header, rows)
    summary = {"workdir": os.path.abspath(workdir), "step": run.step, "dataset": config.dataset,
               "split": split, "model": config.model, "num_examples": int(len(labels)),
               "latent_dim": int(mean.shape[1]), "seed": seed,
               "knn": {"k": k, "accuracy": accuracy, "train": "train", "test": "test",
                       "distance": "euclidean", "codes": "mean"},
               "excluded_from_training": excluded,
               "files": files}
    if compression and vae.stochastic:
        summary["compression"] = compression_report(vae, params, images, key,
                                                    bool(config.binarize))
    run_folder.write_json(files["json"], summary)
    return summary


def format_codes(summary: dict[str, Any]) -> str:
    """The result of `codes_workdir` as text."""
    knn = summary["knn"]
    lines = [f"{summary['num_examples']} codes (d = {summary['latent_dim']}) of "
             f"{summary['dataset']} {summary['split']}, step {summary['step']} of "
             f"{summary['workdir']}",
             f"{knn['k']}-NN accuracy of the test codes μ(x) from the train codes (Euclidean): "
             f"{knn['accuracy']:.4f}"]
    if summary.get("excluded_from_training"):
        lines.append(f"(every label is classified, also {summary['excluded_from_training']}, "
                     "which the run was trained without)")
    if "compression" in summary:
        lines.append(format_compression(summary["compression"]))
    lines.append("files: " + " ".join(summary["files"].values()))
    return "\n".join(lines)
