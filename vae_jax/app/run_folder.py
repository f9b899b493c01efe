"""The run folder (``--workdir``): the one module that knows its layout and writes its files; at
most one writer at a time, and readers that change nothing.

**Layout.** A training run's folder holds

    checkpoints/STEP/   Orbax checkpoints (`checkpointer`; `vae_jax.app.checkpointing`)
    metrics.jsonl       one JSON line per epoch (`append_metrics`, `read_metrics`,
                        `truncate_metrics`)
    config.json         the last run's config (`write_config`)
    images/             the pictures of each epoch (`save_pictures`)
    tensorboard/        TensorBoard event files of each epoch (`tensorboard_dir`;
                        `vae_jax.app.summaries`); a sweep's members in tensorboard/II_LABEL/
    sweep.json          a sweep's grid (sweeps only)
    dataset.json        the data of a run trained on arrays in memory (`dataset_record`); a run
                        without it was trained on the TFDS dataset its config names
    eval.json, plots/   what the readers scripts/evaluate.py and scripts/visualize.py write
    .lock               the writer's lock (`lock`)

Every other module reaches these files through the names and functions here. Files are replaced
atomically (`write_atomically`: one rename, so a kill leaves the old or the new file); the one
file appended to, ``metrics.jsonl``, has a cut last line dropped by its reader and by
`truncate_metrics`.

**One writer.** `scripts/train.py` and `scripts/sweep.py` (training, or ``--extract`` into a member
folder) write a run folder only while they hold `lock`: an exclusive `fcntl.flock` on
``WORKDIR/.lock``, taken before anything is read or written and held until the process ends. A
second writer of the same folder stops at once with a `WorkdirError` naming the process that
holds it. The kernel drops the lock when its process ends, however it ends (``kill -9``
included), so no stale lock can block a restart. With several processes (multi-host training),
process 0 holds it for all of them.

**Readers change nothing.** `vae_jax.app.runs` (and so `scripts/evaluate.py`, `scripts/visualize.py`
and `vae_jax.app.sweep.restore_sweep`) take no lock and open the checkpoints read-only
(``checkpointer(workdir, read_only=True)``): they never delete, move or create anything in the
folder, so they are safe while a writer is saving. They only write the outputs they are asked for
(``eval.json``, ``plots/``), each atomically.

**Unwritable folders are found first.** `check_writable` probes every folder and file a run
writes before any training, so a read-only or immutable ``checkpoints/`` is an error at the start,
not after the first epoch.
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
import shutil
import socket
import struct
import sys
import time
from typing import Any, Iterator

import jax
import ml_collections
import numpy as np

from vae_jax.app import checkpointing, images
from vae_jax.errors import CheckpointError, ConfigError, DataError, WorkdirError

# The names of the run folder's entries, relative to the folder.
CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
EVAL_FILE = "eval.json"
SWEEP_FILE = "sweep.json"
DATASET_FILE = "dataset.json"
IMAGES_DIR = "images"
PLOTS_DIR = "plots"
TENSORBOARD_DIR = "tensorboard"
LOCK_FILE = ".lock"
# Folders and files that training writes or replaces.
WRITTEN_FOLDERS = (CHECKPOINT_DIR, IMAGES_DIR, TENSORBOARD_DIR)
WRITTEN_FILES = (METRICS_FILE, CONFIG_FILE, SWEEP_FILE, DATASET_FILE)
# Filesystems without flock (some network filesystems) answer with these.
_NO_LOCKING = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


def _holder(path: str) -> str:
    """What the lock file says about the process holding it ("" when unreadable)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


@contextlib.contextmanager
def lock(workdir: str, main_process: bool = True) -> Iterator[None]:
    """Holds the exclusive writer's lock of `workdir` (created if missing) inside the context.

    Only the process with `main_process` True takes it (process 0 of a multi-process run). A
    run that adds nothing but the lock (refused before it wrote: a bad config, data that does
    not fit) leaves the folder as it found it: the lock file and the folders this call created
    go.

    Raises:
      WorkdirError: another process holds the lock (the message names it: pid, host, start), or
        `workdir` cannot be created or written.
    """
    if not main_process:
        yield
        return
    created = _missing_folders(workdir)
    check_folder(workdir)
    path = os.path.join(workdir, LOCK_FILE)
    new_lock = not os.path.lexists(path)
    before = set(os.listdir(workdir))
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise WorkdirError(f"workdir {workdir!r} is not writable: {error.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(path) or "another process"
            raise WorkdirError(
                f"workdir {workdir!r} is being written by {holder}; a run folder has one writer "
                "at a time: wait for it to finish (or stop it), or use another --workdir"
            ) from None
        except OSError as error:
            if error.errno not in _NO_LOCKING:
                raise
            print(f"warning: the filesystem of {workdir!r} cannot lock files; make sure no other "
                  "process writes this run folder", file=sys.stderr, flush=True)
        os.ftruncate(fd, 0)
        os.write(fd, (f"process {os.getpid()} on {socket.gethostname()} (started "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n").encode())
        yield
    finally:
        if new_lock:
            _remove_if_unused(workdir, before, created)
        os.close(fd)  # releases the lock


def _remove_if_unused(workdir: str, before: set[str], created: list[str]) -> None:
    """Removes the lock file of `workdir` (held) and the `created` folders when the run added
    nothing else to the names `before` it."""
    try:
        if set(os.listdir(workdir)) != before | {LOCK_FILE}:
            return
        os.remove(os.path.join(workdir, LOCK_FILE))  # while held: a later opener makes a new one
        for folder in created:  # deepest first; a folder someone else filled stays
            os.rmdir(folder)
    except OSError:
        pass


def _missing_folders(path: str) -> list[str]:
    """`path` and those of its parents that do not exist yet, deepest first."""
    missing, path = [], os.path.abspath(path)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def check_folder(workdir: str) -> None:
    """Creates `workdir` and checks that a file can be written in it; raises `WorkdirError`."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"workdir {workdir!r} is a file, not a directory: pass a folder for "
                           "the run (it is created if missing)")
    try:
        os.makedirs(workdir, exist_ok=True)
        probe_write(workdir)
    except OSError as error:
        raise WorkdirError(f"workdir {workdir!r} is not writable: {error.strerror}") from None


def ensure_writable(folder: str, what: str, fix: str) -> None:
    """Creates `folder` (an output folder of a reader, outside the run folder or its plots/) and
    writes a probe file in it; raises `ConfigError` "cannot write `what` (reason); `fix`"."""
    try:
        os.makedirs(folder, exist_ok=True)
        probe_write(folder)
    except OSError as error:
        raise ConfigError(f"cannot write {what} ({error.strerror}); {fix}") from None


# A folder holding at least two of these is a run folder (one alone, e.g. a project's
# config.json, is not).
_RUN_MARKERS = (CHECKPOINT_DIR, METRICS_FILE, CONFIG_FILE, SWEEP_FILE, DATASET_FILE, LOCK_FILE)


def _is_run_folder(folder: str) -> bool:
    """Two or more of a run's entries, or a checkpoints/ folder holding a step (what the readers
    read as a run)."""
    if sum(os.path.lexists(os.path.join(folder, name)) for name in _RUN_MARKERS) >= 2:
        return True
    try:
        return any(name.isdigit() for name in os.listdir(os.path.join(folder, CHECKPOINT_DIR)))
    except OSError:
        return False


def enclosing_run(path: str) -> str | None:
    """The run folder (a training run's or a sweep's) that holds `path`, or `path` itself when it
    is one: the nearest folder at or above it with two or more of a run's entries or a
    checkpoint; None when there is none."""
    folder = os.path.realpath(path)
    while True:
        if _is_run_folder(folder):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def check_reader_output(folder: str, what: str, fix: str, runs: tuple[str, ...] = (),
                        allowed: str | None = None) -> None:
    """Refuses, with a `ConfigError` "`what` would land inside the run folder RUN, ...; `fix`",
    an output `folder` of a reader inside a run folder: one of `runs` (the runs it reads, found
    or not) or any other (`enclosing_run`), other than inside `allowed` (``plots/`` of
    ``runs[0]``, which readers own, unless a link takes it out of that run). Then creates `folder` and checks it can be written (`ensure_writable`).
    Readers change no run folder: neither the one they read nor another."""
    real = os.path.realpath(folder)

    def inside(parent: str) -> bool:
        parent = os.path.realpath(parent)
        return real == parent or real.startswith(parent.rstrip(os.sep) + os.sep)

    # `allowed` counts only as the run's own folder: not when a link takes it elsewhere.
    own = allowed is not None and runs and os.path.dirname(os.path.realpath(allowed)) == \
        os.path.realpath(runs[0])
    if not (own and inside(allowed)):
        enclosing = [run for run in runs if inside(run)] or [enclosing_run(folder)]
        if enclosing[0] is not None:
            raise ConfigError(f"{what} would land inside the run folder {enclosing[0]}, which a "
                              "reader does not change (only eval.json and plots/ there belong to "
                              f"readers): {fix}")
    ensure_writable(folder, what, fix)


def probe_write(folder: str) -> None:
    """Writes and removes a small file in `folder`; raises the `OSError` of a folder that cannot
    take one. (Owner-less on purpose: readers use it for their own output folders.)"""
    probe = os.path.join(folder, f".write_test{os.getpid()}")
    with open(probe, "w", encoding="utf-8") as f:
        f.write("ok")
    os.remove(probe)


# Linux inode flags (chattr +i, +a): such a file or folder cannot be replaced or deleted, nor
# (immutable) written, whatever its permissions, even by root.
_FS_IOC_GETFLAGS = 0x80086601
_IMMUTABLE_OR_APPEND_ONLY = 0x10 | 0x20


def _immutable_or_append_only(path: str) -> bool:
    """Whether `path` has the immutable or append-only flag (False where that cannot be read:
    another OS or filesystem)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        flags = struct.unpack("i", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, bytes(8))[:4])[0]
    except OSError:
        return False
    finally:
        os.close(fd)
    return bool(flags & _IMMUTABLE_OR_APPEND_ONLY)


def _check_replaceable(path: str, is_folder: bool) -> None:
    """Raises `WorkdirError` unless training can write, replace and delete `path`."""
    if _immutable_or_append_only(path):
        raise _not_writable(path, "immutable or append-only: chattr -i -a")
    if is_folder and not os.access(path, os.W_OK | os.X_OK):
        raise _not_writable(path, "Permission denied")


def check_writable(workdir: str) -> None:
    """Checks, before any training, that a run can write everything it will write in `workdir`.

    `workdir` itself (created if missing), the folders of `WRITTEN_FOLDERS` that exist (a file is
    written and removed in each), every folder and file under ``checkpoints/`` (Orbax deletes old
    checkpoints, and a damaged one is renamed), every folder under ``tensorboard/`` (a sweep
    member's event files go in its own), and the files of `WRITTEN_FILES` that exist; on
    Linux, none of them may be immutable or append-only (``chattr +i`` / ``+a``), which stops
    even root from replacing or deleting them. Each of `workdir`, `WRITTEN_FOLDERS` and
    `WRITTEN_FILES` that exists must be of its kind (a folder, a regular file): a file where a
    folder goes, a folder where a file goes, a broken link, a pipe… is told to be moved away, not
    to be made writable.

    Raises:
      WorkdirError: naming the first folder or file that cannot be written, and the fix.
    """
    if os.path.lexists(workdir) and not os.path.isfile(workdir):  # a file: check_folder says so
        _check_kind(workdir, is_folder=True)
    check_folder(workdir)
    _check_replaceable(workdir, is_folder=True)
    for name in WRITTEN_FOLDERS:
        folder = os.path.join(workdir, name)
        if not os.path.lexists(folder):
            continue
        _check_kind(folder, is_folder=True)
        try:
            probe_write(folder)
        except OSError as error:
            raise _not_writable(folder, error.strerror) from None
        _check_replaceable(folder, is_folder=True)
    # Orbax deletes whole old checkpoints (max_to_keep): every folder and file in them must go.
    for root, folders, files in os.walk(os.path.join(workdir, CHECKPOINT_DIR)):
        for name in folders:
            _check_replaceable(os.path.join(root, name), is_folder=True)
        for name in files:
            _check_replaceable(os.path.join(root, name), is_folder=False)
    # Each epoch adds an event file to tensorboard/ or to a sweep member's folder in it.
    for root, folders, _ in os.walk(os.path.join(workdir, TENSORBOARD_DIR)):
        for name in folders:
            _check_replaceable(os.path.join(root, name), is_folder=True)
    for name in WRITTEN_FILES:
        path = os.path.join(workdir, name)
        if os.path.lexists(path):
            _check_kind(path, is_folder=False)
            if not os.access(path, os.W_OK):
                raise _not_writable(path, "Permission denied")
            _check_replaceable(path, is_folder=False)


def _kind(path: str) -> str:
    """What `path` (which exists, maybe as a broken link) is: "a folder", "a file", …"""
    if os.path.isdir(path):
        return "a folder"
    if os.path.isfile(path):
        return "a file"
    if os.path.islink(path) and not os.path.exists(path):
        return f"a broken symbolic link (to {os.readlink(path)})"
    return "neither a file nor a folder (a pipe, socket or device)"


def _check_kind(path: str, is_folder: bool) -> None:
    """Raises `WorkdirError` when `path`, which exists, is not a folder (`is_folder`) or not a
    regular file where training writes one: permissions cannot fix that, moving it away can."""
    want = "a folder" if is_folder else "a file"
    kind = _kind(path)
    if kind != want:
        raise WorkdirError(f"{path} is {kind}, but training writes {want} there; move it away "
                           "(or delete it) and run again, or use another --workdir")


def _not_writable(path: str, reason: str) -> WorkdirError:
    return WorkdirError(
        f"{path} is not writable ({reason}), and training writes or deletes there; make it "
        "writable (chmod u+w; chattr -i -a for an immutable or append-only one) or use another "
        "--workdir")


@contextlib.contextmanager
def write_errors(what: str, kept: str) -> Iterator[None]:
    """Turns an `OSError` raised inside the context into one `WorkdirError` line: what could not
    be written, why, and `kept` (what the next run resumes from)."""
    try:
        yield
    except OSError as error:
        where = f" {error.filename}" if error.filename else ""
        raise WorkdirError(
            f"could not write {what}:{where} ({error.strerror or error}); stopped, {kept}; make "
            "the run folder writable (or free space) and run the same command again to resume"
        ) from None


kept = checkpointing.kept  # what a stopped run leaves to resume from (its messages say it)


# --- Files ------------------------------------------------------------------------------------


def write_atomically(path: str, text: str) -> None:
    """Replaces the file at `path` by `text` with one rename: a kill leaves the old or new file.

    Raises the `OSError` of a folder or file that cannot be written (`write_errors` turns it into
    one line)."""
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def write_json(path: str, obj: Any) -> None:
    """`obj` as JSON (indent 2) at `path`, atomically (`write_atomically`)."""
    write_atomically(path, json.dumps(obj, indent=2))


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """``workdir/config.json``: `config` as JSON (indent 2), atomically."""
    write_atomically(os.path.join(workdir, CONFIG_FILE), config.to_json(indent=2))


def _metrics_record(line: str) -> dict[str, Any] | None:
    """The JSON object of one metrics line; None for a line cut short by a kill (or not an
    object)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """The records of ``workdir/metrics.jsonl``, one dict per line (per epoch), in order; a line
    cut short by a kill is skipped; [] when there is no such file. The one reader of the file:
    training, sweeps and pictures read it here."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [record for record in map(_metrics_record, f) if record is not None]


def append_metrics(workdir: str, record: dict[str, Any]) -> None:
    """Appends `record` as one JSON line to ``workdir/metrics.jsonl`` (created if missing). The
    caller decides that it is the process that writes (process 0 of a multi-process run).
    Raises the `OSError` of a file that cannot be written."""
    with open(os.path.join(workdir, METRICS_FILE), "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def member_metrics(record: dict[str, Any], index: int) -> dict[str, Any]:
    """Model `index`'s values of a sweep's metrics line (lists of one value per member; values
    that are not lists, such as step, epoch and epoch_time_s, are every member's): the line a
    single run of the member writes."""
    return {k: v[index] if isinstance(v, list) else v for k, v in record.items()}


def _metrics_line_step(line: str) -> float:
    """The step of a metrics line; +inf for a line cut short by a kill (or without a step)."""
    record = _metrics_record(line)
    step = record.get("step") if record is not None else None
    return step if isinstance(step, (int, float)) else math.inf


def truncate_metrics(workdir: str, last_step: int) -> None:
    """Drops the lines of ``workdir/metrics.jsonl`` of steps after checkpoint `last_step` (0: no
    checkpoint), and a last line cut short: a killed run writes them before it checkpoints, and
    the resumed run redoes those epochs. Rewrites the file atomically, and only when a line goes;
    nothing when there is no file."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    kept_lines = [line for line in lines if _metrics_line_step(line) <= last_step]
    if kept_lines != lines:
        write_atomically(path, "".join(kept_lines))


# --- Where the data came from -------------------------------------------------------------------

IN_MEMORY = "arrays in memory"  # the "source" of a `dataset_record`


def dataset_record(dataset: Any) -> dict[str, Any]:
    """What ``dataset.json`` records of a `vae_jax.app.data.ImageDataset` that a run trains on
    from memory: its name, "source" (`IN_MEMORY`), the numbers of train and test images, the
    image shape (H, W, C) and the SHA-256 of the train and test images (the uint8 bytes, C
    order, after their shape), so that a reader given arrays can tell whether they are the
    run's. Labels are not part of it."""
    def digest(images: Any) -> str:
        images = np.ascontiguousarray(images)
        return hashlib.sha256(repr(images.shape).encode() + images.tobytes()).hexdigest()

    return {"name": dataset.name, "source": IN_MEMORY,
            "train_examples": len(dataset.train_images),
            "test_examples": len(dataset.test_images),
            "image_shape": [int(n) for n in np.shape(dataset.train_images)[1:]],
            "sha256": {"train_images": digest(dataset.train_images),
                       "test_images": digest(dataset.test_images)}}


def describe_dataset(record: dict[str, Any]) -> str:
    """A `dataset_record` in words: 'NAME' (64 train and 32 test images of 8×8×1, sha256 1a2b…)."""
    shape = "×".join(map(str, record.get("image_shape", ())))
    digest = str(record.get("sha256", {}).get("train_images", ""))[:12]
    return (f"{record.get('name')!r} ({record.get('train_examples')} train and "
            f"{record.get('test_examples')} test images of {shape}, sha256 {digest}…)")


def same_data(record: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether two `dataset_record`s describe the same arrays (the name aside)."""
    keys = ("train_examples", "test_examples", "image_shape", "sha256")
    return all(record.get(k) == other.get(k) for k in keys)


def read_dataset_record(workdir: str) -> dict[str, Any] | None:
    """``workdir/dataset.json`` (`dataset_record`), or None when there is none: a run on the
    TFDS dataset its config names. Raises `DataError` for a file that cannot be read or is not
    such a record."""
    path = os.path.join(workdir, DATASET_FILE)
    if not os.path.lexists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or "not JSON"
        raise DataError(f"cannot read {path} ({reason}), the record of the arrays in memory the "
                        "run was trained on; restore it, or train again") from None
    if not isinstance(record, dict) or record.get("source") != IN_MEMORY:
        raise DataError(f"{path} is not a record of arrays in memory (no \"source\": "
                        f"\"{IN_MEMORY}\"); restore it, or train again")
    return record


def check_dataset_record(workdir: str, record: dict[str, Any] | None) -> None:
    """Before a run trains in `workdir`: raises `DataError` when its checkpoints were trained on
    other data than `record` describes (None: the TFDS dataset the config names) — on arrays in
    memory when `record` is None, on a dataset by name when it is not, or on other arrays. A
    folder without checkpoints takes any data (its old record is replaced)."""
    if not checkpoint_steps(workdir):
        return
    saved = read_dataset_record(workdir)
    if saved is None and record is not None:
        raise DataError(f"{workdir} holds checkpoints trained on a TFDS dataset by name, not on "
                        f"arrays in memory: resume it with dataset=None (scripts/train.py), or "
                        "train on these arrays in another workdir")
    if saved is not None and record is None:
        raise DataError(f"{workdir} was trained on arrays in memory ({saved.get('name')!r}), not "
                        "a TFDS dataset: resume it from Python with "
                        "training.train_and_evaluate(config, workdir, dataset) (or "
                        "sweep.train_sweep(..., dataset)) and the same arrays, or use another "
                        "workdir")
    if saved is not None and record is not None and not same_data(saved, record):
        raise DataError(f"{workdir} was trained on other arrays, {describe_dataset(saved)}, "
                        f"than {describe_dataset(record)}: resume it with the arrays it was "
                        "trained on, or use another workdir")


def write_dataset_record(workdir: str, record: dict[str, Any] | None) -> None:
    """Writes `record` as ``workdir/dataset.json`` (atomically), or with None removes that file
    (a run on a dataset by name has none). Raises the `OSError` of a file that cannot be written
    or removed."""
    path = os.path.join(workdir, DATASET_FILE)
    if record is not None:
        write_json(path, record)
    elif os.path.lexists(path):
        os.remove(path)


PICTURES = ("reconstructions", "samples")  # the pictures of an epoch, by name
DENOISING_PICTURE = "denoising"  # and, for a denoising run, noisy / denoised / clean rows


def picture_grids(inputs: np.ndarray, reconstructions: np.ndarray, samples: np.ndarray,
                  columns: int = 8, noisy: np.ndarray | None = None,
                  denoised: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The pictures of one epoch as `save_pictures` writes them, by name (`PICTURES`): uint8
    arrays (height, width, channels), each image pixel drawn 2×2 (`images.render_grid`):

    - ``reconstructions``: rows of `columns` `inputs`, each row followed by the row of their
      `reconstructions` (32 of each and 8 columns: 4 pairs of rows);
    - ``samples``: the `samples`, 8 per row;
    - ``denoising`` (a denoising run: `noisy` and `denoised` given): rows of `columns` `noisy`
      inputs, their `denoised` reconstructions and the clean `inputs`, block after block.

    Args:
      inputs, reconstructions: host arrays (N, H, W, C) in [0, 1], example n of each together.
      samples: host array (M, H, W, C) in [0, 1], e.g. decoder means of prior draws.
      columns: images per row of the reconstructions picture.
      noisy, denoised: None, or host arrays (K, H, W, C) in [0, 1], K ≤ len(inputs): corrupted
        copies of ``inputs[:K]`` and the model's reconstructions from them.

    Raises:
      ValueError: `inputs` and `reconstructions` differ in shape, or an array is not (N, H, W, C).
    """
    inputs, reconstructions = np.asarray(inputs), np.asarray(reconstructions)
    if inputs.shape != reconstructions.shape:
        raise ValueError(f"inputs {inputs.shape} and reconstructions {reconstructions.shape} "
                         "must have one shape")
    rows = [row for start in range(0, len(inputs), columns)
            for row in (inputs[start:start + columns], reconstructions[start:start + columns])]
    grids = {"reconstructions": images.render_grid(np.concatenate(rows), columns=columns),
             "samples": images.render_grid(samples, columns=8)}
    if noisy is not None:
        noisy, denoised = np.asarray(noisy), np.asarray(denoised)
        if noisy.shape != denoised.shape or noisy.shape[1:] != inputs.shape[1:]:
            raise ValueError(f"noisy {noisy.shape} and denoised {denoised.shape} must have one "
                             f"shape, with images of the inputs' {inputs.shape[1:]}")
        clean = inputs[:len(noisy)]
        rows = [row for start in range(0, len(noisy), columns)
                for row in (noisy[start:start + columns], denoised[start:start + columns],
                            clean[start:start + columns])]
        grids["denoising"] = images.render_grid(np.concatenate(rows), columns=columns)
    return grids


def save_pictures(folder: str, epoch: int, inputs: np.ndarray, reconstructions: np.ndarray,
                  samples: np.ndarray, noisy: np.ndarray | None = None,
                  denoised: np.ndarray | None = None, columns: int = 8
                  ) -> dict[str, np.ndarray]:
    """Writes the pictures of one epoch of a run (`picture_grids`) into ``folder/images``
    (created if missing), each atomically, as ``NAME_epochNNN.png`` (NNN: the 1-based `epoch`,
    three digits or more), and returns them by name. `folder` is the run folder (a sweep
    member's folder for a sweep); the other arguments are those of `picture_grids`.

    Raises:
      ValueError: as `picture_grids`.
      OSError: a file that cannot be written.
    """
    grids = picture_grids(inputs, reconstructions, samples, columns, noisy, denoised)
    out = os.path.join(folder, IMAGES_DIR)
    os.makedirs(out, exist_ok=True)
    for name, grid in grids.items():
        images.write_png(os.path.join(out, f"{name}_epoch{epoch:03d}.png"), grid)
    return grids


def tensorboard_dir(workdir: str, member: str | None = None) -> str:
    """Where training writes TensorBoard event files: ``workdir/tensorboard`` for a run, and
    ``workdir/tensorboard/MEMBER`` for the sweep member named `member` (so that ``tensorboard
    --logdir=workdir`` lists each member as a run of its own)."""
    folder = os.path.join(workdir, TENSORBOARD_DIR)
    return folder if member is None else os.path.join(folder, member)


# --- Checkpoints ------------------------------------------------------------------------------


_DISK_MARGIN_BYTES = 64 * 2**20  # metrics, pictures and Orbax's own files


def check_free_space(workdir: str, tree: Any, max_to_keep: int) -> None:
    """Raises `ConfigError` at the start when `workdir`'s disk cannot hold `max_to_keep` + 1
    checkpoints of the arrays of `tree` (Orbax writes a new one before it deletes the oldest)."""
    checkpoint_bytes = sum(np.dtype(leaf.dtype).itemsize * leaf.size
                           for leaf in jax.tree.leaves(tree))
    needed = (max_to_keep + 1) * checkpoint_bytes + _DISK_MARGIN_BYTES
    free = shutil.disk_usage(workdir).free
    if free < needed:
        raise ConfigError(
            f"workdir {workdir!r} has {free / 2**20:.0f} MiB free but the run needs about "
            f"{needed / 2**20:.0f} MiB ({max_to_keep + 1} checkpoints of "
            f"{checkpoint_bytes / 2**20:.1f} MiB); free space or lower --config.max_to_keep")


def checkpointer(workdir: str, max_to_keep: int | None = None,
                 read_only: bool = False) -> checkpointing.Checkpointer:
    """The `vae_jax.app.checkpointing.Checkpointer` of ``workdir/checkpoints``.

    The trainer (holding `lock`) opens it for writing, keeping the newest `max_to_keep`
    checkpoints (None: all); it creates the folder and removes what a killed save left. Everyone
    else opens it with `read_only` True: nothing in the folder is created, moved or deleted, and
    saving raises `CheckpointError`. Close it (``contextlib.closing``) when done.
    """
    return checkpointing.Checkpointer(os.path.join(workdir, CHECKPOINT_DIR), max_to_keep,
                                      read_only=read_only)


def newest_saved_config(workdir: str) -> dict[str, Any] | None:
    """The config saved with the newest checkpoint in `workdir` (read-only), or None when there is
    no checkpoint or it cannot be read (left to `Checkpointer.restore_latest`, which moves a damaged
    one aside or reports it)."""
    steps = checkpoint_steps(workdir)
    if not steps:
        return None
    reader = checkpointer(workdir, read_only=True)
    with contextlib.closing(reader):
        try:
            return reader.saved_config(steps[-1])
        except Exception:  # pylint: disable=broad-exception-caught
            return None


def checkpoint_steps(workdir: str) -> list[int]:
    """The steps of the checkpoints in ``workdir/checkpoints`` (one folder per step), sorted; []
    when there is no such folder. Reads the folder's names only (nothing is opened)."""
    folder = os.path.join(workdir, CHECKPOINT_DIR)
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return sorted(int(name) for name in names if name.isdigit())


def resolve_step(workdir: str, step: int | None = None,
                 trainer: str = "scripts/train.py") -> int:
    """`step` (None: the latest) after checking that `workdir` holds that checkpoint.

    Raises `CheckpointError` for a missing workdir (or a file), a workdir without checkpoints (the
    message says to train with `trainer`), or a step that is not there (the message lists the
    steps there are).
    """
    if not os.path.exists(workdir):
        raise CheckpointError(f"workdir {workdir!r} does not exist")
    if not os.path.isdir(workdir):
        raise CheckpointError(f"workdir {workdir!r} is not a directory: pass the folder of a "
                              "training run")
    steps = checkpoint_steps(workdir)
    if not steps:
        raise CheckpointError(f"no checkpoint in {os.path.join(workdir, CHECKPOINT_DIR)}: train "
                              f"first with {trainer} --workdir={workdir} (or wait for the first "
                              "checkpoint of the run in progress)")
    if step is None:
        return steps[-1]
    if step not in steps:
        raise CheckpointError(f"no checkpoint at step {step} in {workdir}; it holds steps "
                              + ", ".join(map(str, steps)))
    return step
