"""Image datasets from TensorFlow Datasets, loaded once into memory as uint8 arrays.

With internet, any TFDS image dataset is fetched by name. Without it, TFDS prepares `mnist` and
`fashion_mnist` from the original files in a local folder (``manual_dir``), byte-identical to what
it would download. TensorFlow and TFDS are imported here, lazily, and nowhere else: `import vae_jax`
stays light, and without the ``data`` extra `load_image_dataset` says in one line which ``pip
install`` adds them (`vae_jax.app.optional`); the training engine also trains on arrays in memory
(`vae_jax.app.training.fit` with ``dataset=``), which needs neither.

Images stay uint8 (N, H, W, C) until they reach the device; `to_unit_interval` and `binarize` turn
them into the float data the model sees, inside jitted code. `check_unit_interval` guards float data
against values the Bernoulli likelihood cannot model.

Before preparing, the data_dir must be a folder that can be written and manual_dir's files must be
the originals (name, size, then SHA-256, as TFDS registered them): each problem is a one-line
`DataError` naming the file and what was expected. A failed preparation leaves no ``*.tmp.*``
download folders nor empty folders it made. TensorFlow loads with TF_CPP_MIN_LOG_LEVEL=2 (where it
is unset or JAX's 1) and TF_ENABLE_ONEDNN_OPTS=0 (where unset): its start-up lines stay off the
terminal.
"""

import contextlib
import difflib
import functools
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import threading
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import _fast_paths
from vae_jax.app import _threefry as threefry, optional
from vae_jax.errors import ConfigError, DataError, DatasetDownloadError

# Offline, TFDS retries a failed download for minutes; a few quick retries are enough to tell.
_OFFLINE_DOWNLOAD_RETRIES = 3
# After a failed download, how long to wait for TFDS's other download threads to end.
_DOWNLOAD_WAIT_S = 60.0
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


def check_in_memory(dataset: ImageDataset) -> None:
    """Raises `DataError` naming the problem unless `dataset` holds uint8 train and test images
    of one shape (N, H, W, C), N >= 1, with one label per image: the form TFDS gives, which the
    training engine takes in place of a dataset by name."""
    if not isinstance(dataset, ImageDataset):
        raise DataError(f"dataset must be a vae_jax.app.data.ImageDataset, got a "
                        f"{type(dataset).__name__}")
    for split in ("train", "test"):
        images = np.asarray(getattr(dataset, f"{split}_images"))
        labels = np.asarray(getattr(dataset, f"{split}_labels"))
        if images.dtype != np.uint8 or images.ndim != 4 or not len(images):
            raise DataError(f"dataset {dataset.name!r}: {split}_images must be uint8 "
                            f"(N, H, W, C) with N >= 1 as TFDS gives images, got "
                            f"{images.dtype} {images.shape}; convert floats in [0, 1] with "
                            "np.round(x * 255).astype(np.uint8)")
        if labels.shape != images.shape[:1]:
            raise DataError(f"dataset {dataset.name!r}: {split}_labels must have shape "
                            f"{images.shape[:1]}, one label per image, got {labels.shape}")
    if dataset.test_images.shape[1:] != dataset.train_images.shape[1:]:
        raise DataError(f"dataset {dataset.name!r}: test images {dataset.test_images.shape[1:]} "
                        f"differ from train images {dataset.train_images.shape[1:]}")


def _import_tfds(name: str | None = None):
    """TensorFlow Datasets, with TensorFlow quiet and off the accelerators, to load the dataset
    `name`; raises `optional.MissingDependencyError` (one line: ``pip install -e '.[data]'``)
    when either is not installed."""
    if "tensorflow" not in sys.modules:
        # TensorFlow only reads dataset files here: its C++ start-up logs (the oneDNN notice, which
        # ignores TF_CPP_MIN_LOG_LEVEL, and warnings) would bury our output. JAX has already set
        # TF_CPP_MIN_LOG_LEVEL=1 (warnings) when it was unset; a user's 0 or >= 2 is kept.
        if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1") == "1":
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    purpose = f"loading the dataset {name!r} by name" if name else "loading datasets by name"
    tfds = optional.require("tensorflow_datasets", purpose)
    tf = optional.require("tensorflow", purpose)
    tf.config.set_visible_devices([], "GPU")  # TensorFlow must not take accelerator memory
    return tfds


@contextlib.contextmanager
def _quiet_downloads(tfds):
    """While preparing: few download retries, no urllib3 retry warnings, and TFDS's progress bars
    only on a terminal. When preparing fails, downloads not started yet are dropped and those in
    flight are awaited (up to `_DOWNLOAD_WAIT_S`), so no TFDS thread logs or writes after the
    error. Everything is restored afterwards."""
    # pylint: disable=import-outside-toplevel,protected-access
    from tensorflow_datasets.core.download import downloader
    from tensorflow_datasets.core.utils import tqdm_utils

    saved = []

    def patch(obj, attr, value):
        saved.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, value)

    if hasattr(downloader, "MAX_RETRIES"):  # (another TFDS version: keep its behaviour)
        patch(downloader, "MAX_RETRIES", min(downloader.MAX_RETRIES, _OFFLINE_DOWNLOAD_RETRIES))
    urllib3_logger = logging.getLogger("urllib3")
    urllib3_level = urllib3_logger.level
    urllib3_logger.setLevel(logging.ERROR)  # one warning per retry and file otherwise
    if hasattr(tqdm_utils, "_active"):
        patch(tqdm_utils, "_active", tqdm_utils._active and sys.stderr.isatty())
    state = threading.Condition()
    running, failed = [0], [False]
    sync_download = getattr(getattr(downloader, "_Downloader", None), "_sync_download", None)
    if sync_download is not None:

        @functools.wraps(sync_download)
        def tracked_download(self, *args, **kwargs):
            with state:
                if failed[0]:
                    raise tfds.core.download.DownloadError("not started: preparing already failed")
                running[0] += 1
            try:
                return sync_download(self, *args, **kwargs)
            finally:
                with state:
                    running[0] -= 1
                    state.notify_all()

        patch(downloader._Downloader, "_sync_download", tracked_download)
    try:
        yield
    except Exception:
        with state:
            failed[0] = True
            state.wait_for(lambda: running[0] == 0, timeout=_DOWNLOAD_WAIT_S)
        raise
    finally:
        for obj, attr, value in reversed(saved):
            setattr(obj, attr, value)
        urllib3_logger.setLevel(urllib3_level)


def _builder(tfds, name: str, data_dir: str | None):
    if data_dir is not None and os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise DataError(f"data_dir {data_dir} is a file, not a folder: pass the folder for TFDS's "
                        "prepared datasets with --config.data_dir")
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        close = difflib.get_close_matches(name, tfds.list_builders(), n=3)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise DataError(f"unknown dataset {name!r}: not a TFDS dataset name{hint}") from None


def _check_writable(builder, name: str) -> None:
    """The folders that preparing `builder` writes in exist and may be written, or can be made."""
    path = os.fspath(builder.data_dir)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    root = os.fspath(builder.data_dir_root)
    if not os.path.isdir(path):
        raise DataError(f"cannot prepare {name!r} in data_dir {root}: {path} is a file, not a "
                        "folder; pass another --config.data_dir")
    if not os.access(path, os.W_OK | os.X_OK):
        raise DataError(f"cannot prepare {name!r} in data_dir {root}: {path} is not writable; "
                        "pass a folder you may write with --config.data_dir")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _expected_files(builder) -> dict:
    """The files TFDS looks for in manual_dir: {file name: (url, UrlInfo)} (empty when the dataset
    registers no checksums)."""
    try:
        url_infos = builder.url_infos or {}
    except (OSError, ValueError):  # an unreadable or malformed checksums file
        return {}
    return {info.filename: (url, info) for url, info in url_infos.items() if info.filename}


def _check_manual_dir(builder, name: str, manual_dir: str, checksums: bool = False) -> None:
    """Raises `DataError` naming the first file of `manual_dir` that is not the original file of
    the dataset: missing, a folder, unreadable, of another size, or (with `checksums`) of another
    SHA-256."""
    where = f"manual_dir {manual_dir} for dataset {name!r}"
    if not os.path.exists(manual_dir):
        raise DataError(f"{where} does not exist; pass the folder that holds the original files")
    if not os.path.isdir(manual_dir):
        raise DataError(f"{where} is a file, not a folder; pass the folder that holds the "
                        "original files")
    if not os.access(manual_dir, os.R_OK | os.X_OK):
        raise DataError(f"{where} cannot be read (permission denied)")
    expected = _expected_files(builder)
    if not expected:
        return
    origin = os.path.dirname(next(iter(expected.values()))[0]) + "/"
    missing = sorted(f for f in expected if not os.path.lexists(os.path.join(manual_dir, f)))
    if len(missing) == len(expected):
        raise DataError(f"{where} holds none of its {len(expected)} original files "
                        f"({', '.join(missing)}, from {origin}); pass the folder that holds them")
    if missing:
        raise DataError(f"{where} lacks {', '.join(missing)} (the original file(s) from "
                        f"{origin}); put them there")
    for filename, (url, info) in sorted(expected.items()):
        path = os.path.join(manual_dir, filename)
        wanted = f"expected the original {int(info.size)} bytes with sha256 {info.checksum}"
        if os.path.isdir(path):
            raise DataError(f"{where}: {filename} is a folder; {wanted} (from {url})")
        if not os.path.isfile(path):
            raise DataError(f"{where}: {filename} is not a regular file (a broken link?); "
                            f"{wanted} (from {url})")
        if not os.access(path, os.R_OK):
            raise DataError(f"{where}: {filename} cannot be read (permission denied)")
        size = os.path.getsize(path)
        if size != int(info.size):
            raise DataError(f"{where}: {filename} has {size} bytes, {wanted} (from {url}): a "
                            "truncated file, or another dataset's?")
        if checksums:
            try:
                found = _sha256(path)
            except OSError as error:
                raise DataError(f"{where}: cannot read {filename} ({error.strerror})") from None
            if found != info.checksum:
                raise DataError(f"{where}: {filename} has sha256 {found}, {wanted} (from {url}):"
                                " a damaged file, or another dataset's?")


def _snapshot(folder: str) -> set[str]:
    """Every path under `folder` (empty when it does not exist)."""
    paths = set()
    for parent, dirs, files in os.walk(folder):
        paths.update(os.path.join(parent, entry) for entry in dirs + files)
    return paths


def _remove_debris(download_dir: str, before: set[str], new_dirs: list[str]) -> None:
    """Removes what a failed preparation left: the ``*.tmp.*`` download folders and files under
    `download_dir` that were not in `before`, then `new_dirs` (folders that did not exist before)
    and the new folders under `download_dir` that are left empty. Completed downloads stay (a
    next attempt reuses them); nothing that existed before is touched."""
    for parent, dirs, files in os.walk(download_dir):
        for entry in list(dirs) + files:
            path = os.path.join(parent, entry)
            if ".tmp." not in entry or path in before:
                continue
            if entry in dirs:
                dirs.remove(entry)
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.remove(path)
    new_under = [p for p in _snapshot(download_dir) - before if os.path.isdir(p)]
    for path in sorted(set(new_under) | set(new_dirs), key=len, reverse=True):
        with contextlib.suppress(OSError):  # not empty: something worth keeping is in it
            os.rmdir(path)


def _prepare(tfds, builder, name: str, manual_dir: str | None) -> None:
    """Prepares `builder`'s dataset unless done: checks manual_dir's files and the data_dir first,
    and after a failure removes the debris of this attempt (`_remove_debris`)."""
    if os.path.exists(os.fspath(builder.data_path)):  # TFDS's own test: reused as it is
        return
    _check_writable(builder, name)
    if manual_dir is not None:
        _check_manual_dir(builder, name, manual_dir)
    root = os.fspath(builder.data_dir_root)
    download_dir = os.path.join(root, "downloads")
    new_dirs = [path for path in (download_dir, *_ancestors(os.fspath(builder.data_dir), root))
                if not os.path.lexists(path)]
    before = _snapshot(download_dir)
    checksum_errors = _checksum_errors(tfds)
    try:
        # A private extraction folder: TFDS names files extracted from manual_dir by file name
        # alone, so mnist's and fashion_mnist's identically named files would overwrite each other
        # in a shared data_dir (fashion_mnist would silently be prepared from MNIST's images).
        with tempfile.TemporaryDirectory() as extract_dir:
            try:
                with _quiet_downloads(tfds):
                    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir,
                                                                   extract_dir=extract_dir)
                    builder.download_and_prepare(download_dir=download_dir,
                                                 download_config=download_config)
            except Exception:
                _remove_debris(download_dir, before, new_dirs)
                raise
    except checksum_errors:
        if manual_dir is not None:
            _check_manual_dir(builder, name, manual_dir, checksums=True)  # names the file
        raise DataError(f"files of {name!r} differ from the checksums TFDS registered for them; "
                        f"delete {download_dir} and prepare again") from None
    except (OSError, tfds.core.download.DownloadError) as error:  # requests' errors are OSErrors
        if manual_dir is not None:
            raise DataError(
                f"could not prepare {name!r} from manual_dir {manual_dir!r} "
                f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); it must hold the "
                "original download files"
            ) from None
        raise DatasetDownloadError(name) from None


def _ancestors(path: str, stop: str) -> list[str]:
    """`path` and its parents, deepest first, down to (and with) `stop`."""
    paths = [path]
    while path != stop and os.path.dirname(path) != path:
        path = os.path.dirname(path)
        paths.append(path)
    return paths


def _checksum_errors(tfds) -> tuple[type[Exception], ...]:
    """TFDS's exception for a file whose checksum differs from the registered one."""
    error = getattr(tfds.core.download.download_manager, "NonMatchingChecksumError", None)
    return (error,) if isinstance(error, type) else ()


def _image_builder(name: str, data_dir: str | None, manual_dir: str | None):
    """(tfds, the prepared TFDS builder of the image dataset `name`); see `load_image_dataset`."""
    tfds = _import_tfds(name)
    builder = _builder(tfds, name, data_dir)
    features = builder.info.features
    if "image" not in features or features["image"].np_dtype != np.uint8:
        raise DataError(f"dataset {name!r} has no uint8 'image' feature; vae_jax models images")
    _prepare(tfds, builder, name, manual_dir)
    return tfds, builder


def _read_split(tfds, builder, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (N, H, W, C), labels (N,), zeros when the dataset has none) of `split`."""
    # Batches concatenated on the host (batch_size=-1 is not supported by mocked TFDS).
    batches = list(tfds.as_numpy(builder.as_dataset(split=split, batch_size=_READ_BATCH)))
    if not batches:
        raise DataError(f"split {split!r} of dataset {builder.name!r} is empty")
    images = np.concatenate([b["image"] for b in batches]).astype(np.uint8, copy=False)
    labels = (np.concatenate([b["label"] for b in batches]) if "label" in batches[0]
              else np.zeros(len(images), np.int64))
    return images, labels


def load_image_dataset(name: str, data_dir: str | None = None,
                       manual_dir: str | None = None) -> ImageDataset:
    """Loads the train and test splits of a TFDS image dataset as uint8 numpy arrays.

    Prepares the dataset first if `data_dir` does not hold it yet: from `manual_dir` when given
    (offline), else by downloading. Raises `DataError` with a one-line fix for an unknown name,
    missing data without a network, or a dataset without uint8 images or train/test splits, and
    `vae_jax.app.optional.MissingDependencyError` (one line naming ``pip install -e '.[data]'``)
    when TensorFlow Datasets or TensorFlow is not installed. TFDS's progress bars show only when
    stderr is a terminal, as the training's own bar does.
    """
    tfds, builder = _image_builder(name, data_dir, manual_dir)
    splits = set(builder.info.splits.keys())
    missing = {"train", "test"} - splits
    if splits and missing:  # (mocked TFDS in tests declares no splits but serves both)
        raise DataError(f"dataset {name!r} has no {' or '.join(sorted(missing))} split")
    return ImageDataset(name, *_read_split(tfds, builder, "train"),
                        *_read_split(tfds, builder, "test"))


def check_split_name(name: str, split: str, available: Sequence[str]) -> None:
    """Raises `DataError` (one line naming the dataset's splits) unless every part of the TFDS
    split expression `split` (``test``, ``test[:10%]``, ``train+test``) names one of
    `available`; no check when `available` is empty (mocked TFDS declares none)."""
    if not isinstance(split, str) or not split.strip():
        raise DataError(f"split must name a split of {name!r}, got {split!r}")
    if not available:
        return
    for part in split.split("+"):
        base = part.strip().partition("[")[0]
        if base not in available:
            raise DataError(f"dataset {name!r} has no split {base!r} (its splits: "
                            f"{', '.join(sorted(available))})")


def _declared_splits(builder) -> list[str]:
    """The split names a prepared TFDS builder declares (none under `tfds.testing.mock_data`)."""
    return list(builder.info.splits.keys())


def load_split(name: str, split: str, data_dir: str | None = None,
               manual_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (N, H, W, C), labels (N,)) of `split`, any TFDS split expression
    (``test``, ``test[:1000]``, ``train+test``), of the TFDS image dataset `name`, prepared first
    as `load_image_dataset` prepares it. Raises `DataError` (one line) for an unknown dataset or
    split, an empty split, and as `load_image_dataset`."""
    tfds, builder = _image_builder(name, data_dir, manual_dir)
    check_split_name(name, split, _declared_splits(builder))  # known once prepared
    try:
        return _read_split(tfds, builder, split)
    except (KeyError, ValueError) as error:
        raise DataError(f"dataset {name!r}: bad split {split!r} "
                        f"({str(error).splitlines()[0][:200]})") from None


def exclude_labels(dataset: ImageDataset, labels) -> ImageDataset:
    """`dataset` without the training examples whose label is in `labels` (held-out classes, e.g.
    one digit for anomaly detection); the test split is untouched. The kept examples keep their
    order (a boolean mask over the split), so the result is a function of the data alone. With no
    `labels` the same `dataset` is returned.

    Raises `ConfigError` (naming ``config.exclude_labels``) when a label does not occur in the
    training split (a typo would otherwise drop nothing), or when nothing would be left.
    """
    labels = tuple(int(label) for label in labels)
    if not labels:
        return dataset
    train_labels = np.asarray(dataset.train_labels)
    present = set(np.unique(train_labels).tolist())
    absent = [label for label in labels if label not in present]
    if absent:
        raise ConfigError(f"config.exclude_labels names {absent}, absent from the training split "
                          f"of {dataset.name!r} (its labels: {sorted(present)[:20]}); drop them")
    keep = ~np.isin(train_labels, labels)
    if not keep.any():
        raise ConfigError(f"config.exclude_labels={labels} drops every training example of "
                          f"{dataset.name!r}; keep at least one label")
    return dataset._replace(train_images=np.asarray(dataset.train_images)[keep],
                            train_labels=train_labels[keep])


def to_unit_interval(images: jax.Array) -> jax.Array:
    """uint8 pixels in {0, …, 255} → float32 in [0, 1]."""
    return images.astype(jnp.float32) / 255.0


def prepare_batch(key: jax.Array, images_uint8: jax.Array, binarized: bool) -> jax.Array:
    """uint8 images (B, *shape) → float32 in [0, 1] of the same shape, dynamically binarised with
    `key` (`binarize`) when `binarized`: how every batch, and the test set, reaches the model."""
    flat = to_unit_interval(jnp.reshape(images_uint8, (images_uint8.shape[0], -1)))
    x = binarize(key, flat) if binarized else flat
    return jnp.reshape(x, images_uint8.shape)  # one axis per example computes faster on CPUs


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
                        "scale uint8 images with vae_jax.app.data.to_unit_interval")
    if x.size == 0:
        return
    finite, low, high = jax.device_get((jnp.all(jnp.isfinite(x)), jnp.min(x), jnp.max(x)))
    if not finite:
        raise DataError(f"{name} holds NaN or infinite values; the Bernoulli likelihood needs "
                        "pixel intensities in [0, 1]")
    if low < 0 or high > 1:
        raise DataError(f"{name} has values in [{low:.8g}, {high:.8g}], outside the [0, 1] that "
                        "the Bernoulli likelihood needs; scale uint8 images with "
                        "vae_jax.app.data.to_unit_interval")


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
    """`count` random uint32 words from a typed key: with a threefry2x32 key (JAX's or a run key
    of `vae_jax.app.prng`), one 2×32-bit hash per two words (`jax.random.bits` spends a hash on
    each word), the same words whichever computes the hash — the straight-line one on a CPU
    (`vae_jax._fast_paths`), JAX's own elsewhere; with any other implementation, its own bits."""
    if threefry.is_threefry(key):
        counter = jnp.arange(count + count % 2, dtype=jnp.uint32)
        return threefry.hash_2x32(jax.random.key_data(key), counter,
                                  fast=_fast_paths.on_cpu())[:count]
    return jax.random.bits(key, (count,), jnp.uint32)
