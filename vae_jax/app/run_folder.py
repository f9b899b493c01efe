"""The run folder (``--workdir``): at most one writer at a time, and readers that change nothing.

**One writer.** `scripts/train.py` and `scripts/sweep.py` (training, or ``--extract`` into a member
folder) write a run folder only while they hold `lock`: an exclusive `fcntl.flock` on
``WORKDIR/.lock``, taken before anything is read or written and held until the process ends. A
second writer of the same folder stops at once with a `WorkdirError` naming the process that
holds it. The kernel drops the lock when its process ends, however it ends (``kill -9``
included), so no stale lock can block a restart. With several processes (multi-host training),
process 0 holds it for all of them.

**Readers change nothing.** `vae_jax.app.runs` (and so `scripts/evaluate.py`, `scripts/visualize.py`
and `vae_jax.app.sweep.restore_sweep`) take no lock and open the checkpoints read-only
(`vae_jax.app.checkpointing.Checkpointer` with ``read_only=True``): they never delete, move or create
anything in the folder, so they are safe while a writer is saving. They only write the outputs
they are asked for (``eval.json``, ``plots/``), each atomically.

**Unwritable folders are found first.** `check_writable` probes every folder and file a run
writes before any training, so a read-only or immutable ``checkpoints/`` is an error at the start,
not after the first epoch.
"""

import contextlib
import errno
import fcntl
import os
import socket
import struct
import sys
import time
from typing import Iterator

from vae_jax.errors import WorkdirError

LOCK_FILE = ".lock"
# Folders and files that training writes or replaces, relative to the run folder.
WRITTEN_FOLDERS = ("checkpoints", "images")
WRITTEN_FILES = ("metrics.jsonl", "config.json", "sweep.json")
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

    Only the process with `main_process` True takes it (process 0 of a multi-process run).

    Raises:
      WorkdirError: another process holds the lock (the message names it: pid, host, start), or
        `workdir` cannot be created or written.
    """
    if not main_process:
        yield
        return
    check_folder(workdir)
    path = os.path.join(workdir, LOCK_FILE)
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
        os.close(fd)  # releases the lock


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
    checkpoints, and a damaged one is renamed), and the files of `WRITTEN_FILES` that exist; on
    Linux, none of them may be immutable or append-only (``chattr +i`` / ``+a``), which stops
    even root from replacing or deleting them.

    Raises:
      WorkdirError: naming the first folder or file that cannot be written, and the fix.
    """
    check_folder(workdir)
    _check_replaceable(workdir, is_folder=True)
    for name in WRITTEN_FOLDERS:
        folder = os.path.join(workdir, name)
        if not os.path.lexists(folder):
            continue
        try:
            if not os.path.isdir(folder):
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
            probe_write(folder)
        except OSError as error:
            raise _not_writable(folder, error.strerror) from None
        _check_replaceable(folder, is_folder=True)
    # Orbax deletes whole old checkpoints (max_to_keep): every folder and file in them must go.
    for root, folders, files in os.walk(os.path.join(workdir, WRITTEN_FOLDERS[0])):
        for name in folders:
            _check_replaceable(os.path.join(root, name), is_folder=True)
        for name in files:
            _check_replaceable(os.path.join(root, name), is_folder=False)
    for name in WRITTEN_FILES:
        path = os.path.join(workdir, name)
        if os.path.lexists(path):
            if not os.access(path, os.W_OK):
                raise _not_writable(path, "Permission denied")
            _check_replaceable(path, is_folder=False)


def _not_writable(path: str, reason: str) -> WorkdirError:
    return WorkdirError(
        f"{path} is not writable ({reason}), and training writes or deletes there; make it "
        "writable (chmod u+w; chattr -i -a for an immutable or append-only one) or use another "
        "--workdir")


def kept(last_saved: int | None) -> str:
    """What a stopped run leaves to resume from: the checkpoint at `last_saved`, or none."""
    return ("no checkpoint was written" if last_saved is None
            else f"the checkpoint at step {last_saved} is kept")


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
