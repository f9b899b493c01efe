"""Image datasets from TensorFlow Datasets, loaded once into memory as uint8 arrays.

With internet, any TFDS image dataset is fetched by name. Without it, TFDS prepares `mnist` and
`fashion_mnist` from the original files in a local folder (``manual_dir``), byte-identical to what
it would download. TensorFlow and TFDS are imported here, lazily, and nowhere else: `import vae_jax`
stays light.

Images stay uint8 (N, H, W, C) until they reach the device; `to_unit_interval` and `binarize` turn
them into the float data the model sees, inside jitted code. `check_unit_interval` guards float data
against values the Bernoulli likelihood cannot model.
"""

import contextlib
import difflib
import logging
import os
import tempfile
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import threefry
from vae_jax.errors import DataError

# Offline, TFDS retries a failed download for minutes; a few quick retries are enough to tell.
_OFFLINE_DOWNLOAD_RETRIES = 3
_READ_BATCH = 10_000


class ImageDataset(NamedTuple):
    """Train and test splits of an image dataset: images uint8 (N, H, W, C), labels int (N,)."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])


def _import_tfds():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    tf.config.set_visible_devices([], "GPU")  # TensorFlow must not take accelerator memory
    return tfds


@contextlib.contextmanager
def _few_download_retries():
    """Lowers TFDS's download retry count while preparing (restored afterwards)."""
    from tensorflow_datasets.core.download import downloader  # pylint: disable=import-outside-toplevel

    previous = getattr(downloader, "MAX_RETRIES", None)
    if previous is None:  # another TFDS version: keep its behaviour
        yield
        return
    downloader.MAX_RETRIES = min(previous, _OFFLINE_DOWNLOAD_RETRIES)
    urllib3_logger = logging.getLogger("urllib3")
    level = urllib3_logger.level
    urllib3_logger.setLevel(logging.ERROR)  # one warning per retry and file otherwise
    try:
        yield
    finally:
        downloader.MAX_RETRIES = previous
        urllib3_logger.setLevel(level)


def _builder(tfds, name: str, data_dir: str | None):
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        close = difflib.get_close_matches(name, tfds.list_builders(), n=3)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise DataError(f"unknown dataset {name!r}: not a TFDS dataset name{hint}") from None


def _prepare(tfds, builder, name: str, manual_dir: str | None) -> None:
    if manual_dir is not None and not os.path.isdir(manual_dir):
        raise DataError(f"manual_dir {manual_dir!r} for dataset {name!r} is not a folder")
    try:
        # A private extraction folder: TFDS names files extracted from manual_dir by file name
        # alone, so mnist's and fashion_mnist's identically named files would overwrite each other
        # in a shared data_dir (fashion_mnist would silently be prepared from MNIST's images).
        with _few_download_retries(), tempfile.TemporaryDirectory() as extract_dir:
            download_config = tfds.download.DownloadConfig(manual_dir=manual_dir,
                                                           extract_dir=extract_dir)
            builder.download_and_prepare(download_config=download_config)
    except (OSError, tfds.core.download.DownloadError) as error:  # requests' errors are OSErrors
        if manual_dir is not None:
            raise DataError(
                f"could not prepare {name!r} from manual_dir {manual_dir!r} "
                f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); it must hold the "
                "original download files"
            ) from None
        raise DataError(
            f"could not download {name!r} (no internet?): pass --config.manual_dir=FOLDER with the"
            " original files (e.g. ../shared/data/mnist) to prepare it offline") from None


def load_image_dataset(name: str, data_dir: str | None = None,
                       manual_dir: str | None = None) -> ImageDataset:
    """Loads the train and test splits of a TFDS image dataset as uint8 numpy arrays.

    Prepares the dataset first if `data_dir` does not hold it yet: from `manual_dir` when given
    (offline), else by downloading. Raises `DataError` with a one-line fix for an unknown name,
    missing data without a network, or a dataset without uint8 images or train/test splits.
    """
    tfds = _import_tfds()
    builder = _builder(tfds, name, data_dir)
    features = builder.info.features
    if "image" not in features or features["image"].np_dtype != np.uint8:
        raise DataError(f"dataset {name!r} has no uint8 'image' feature; vae_jax models images")
    _prepare(tfds, builder, name, manual_dir)
    splits = set(builder.info.splits.keys())
    missing = {"train", "test"} - splits
    if splits and missing:  # (mocked TFDS in tests declares no splits but serves both)
        raise DataError(f"dataset {name!r} has no {' or '.join(sorted(missing))} split")
    arrays = {}
    for split in ("train", "test"):
        # Batches concatenated on the host (batch_size=-1 is not supported by mocked TFDS).
        batches = list(tfds.as_numpy(builder.as_dataset(split=split, batch_size=_READ_BATCH)))
        images = np.concatenate([b["image"] for b in batches]).astype(np.uint8, copy=False)
        labels = (np.concatenate([b["label"] for b in batches]) if "label" in batches[0]
                  else np.zeros(len(images), np.int64))
        arrays[split] = (images, labels)
    return ImageDataset(name, *arrays["train"], *arrays["test"])


def to_unit_interval(images: jax.Array) -> jax.Array:
    """uint8 pixels in {0, …, 255} → float32 in [0, 1]."""
    return images.astype(jnp.float32) / 255.0


def check_unit_interval(x: jax.Array, name: str = "x") -> None:
    """Raises `DataError` unless `x` is a floating-point array with every value in [0, 1].

    log Bern(x; σ(ℓ)) = x·log σ(ℓ) + (1 − x)·log σ(−ℓ) is a log-probability (≤ 0) only for x in
    [0, 1]; outside it the "likelihood" grows without bound as ℓ → ±∞ and the ELBO is meaningless.
    Call it where float data enters, on a concrete array (not under `jax.jit`): it brings the
    minimum and maximum to the host. `name` says what `x` is in the message.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise DataError(f"{name} must hold floating-point values in [0, 1], got dtype {x.dtype}; "
                        "scale uint8 images with vae_jax.data.to_unit_interval")
    if x.size == 0:
        return
    finite, low, high = jax.device_get((jnp.all(jnp.isfinite(x)), jnp.min(x), jnp.max(x)))
    if not finite:
        raise DataError(f"{name} holds NaN or infinite values; the Bernoulli likelihood needs "
                        "pixel intensities in [0, 1]")
    if low < 0 or high > 1:
        raise DataError(f"{name} has values in [{low:.8g}, {high:.8g}], outside the [0, 1] that "
                        "the Bernoulli likelihood needs; scale uint8 images with "
                        "vae_jax.data.to_unit_interval")


def binarize(key: jax.Array, x: jax.Array) -> jax.Array:
    """Dynamic binarisation: each pixel becomes 1 with probability equal to its intensity in [0, 1].

        x̃ᵢ = [uᵢ < round(2¹⁶·xᵢ)],  uᵢ uniform on {0, …, 2¹⁶ − 1},

    so P(x̃ᵢ = 1) = round(2¹⁶·xᵢ)/2¹⁶, within 2⁻¹⁷ of xᵢ, and exactly 0 and 1 at xᵢ = 0 and 1 (a
    uint8 image has steps of 1/255). Each 32-bit random word gives two pixels their 16 bits,
    and with a threefry key each hash gives four: a quarter of the random bits of
    `jax.random.bernoulli`, which was a fifth of a training step of the MNIST MLP on a CPU.
    """
    size = x.size
    words = _random_words(key, -(-size // 2))
    uniform16 = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(-1)[:size]
    threshold = jnp.round(jnp.reshape(x, (-1,)) * 65536.0).astype(jnp.uint32)
    return jnp.reshape(uniform16 < threshold, x.shape).astype(x.dtype)


def _random_words(key: jax.Array, count: int) -> jax.Array:
    """`count` random uint32 words from a typed key: with threefry, one 2×32-bit hash per two
    words (`jax.random.bits` spends a hash on each word); with any other implementation, its
    own bits."""
    if jax.random.key_impl(key) in (threefry.THREEFRY_2X32, "threefry2x32"):
        counter = jnp.arange(count + count % 2, dtype=jnp.uint32)
        return threefry.threefry_2x32(jax.random.key_data(key), counter)[:count]
    return jax.random.bits(key, (count,), jnp.uint32)
