"""Orbax checkpoints of a training run: save, find the newest intact one, restore it into a
matching template.

Each checkpoint is a step-numbered folder under ``WORKDIR/checkpoints`` with three items: ``state``
(params, optimizer state, step and PRNG key, as a pytree of arrays), ``config`` (the run's
configuration as JSON) and ``digest`` (the SHA-256 of the state's arrays, `state_digest`).

Orbax writes a checkpoint into a temporary folder and renames it when complete, so a process killed
mid-save, even by SIGKILL, leaves no checkpoint that looks complete; the next `Checkpointer` on the
folder removes the temporary one. Damage done later (files truncated, deleted or altered) is caught
on restore: reading fails, or the restored arrays differ from the digest.
"""

import gc
import hashlib
import json
import logging
import os
import re
import sys
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from vae_jax import configs, distributed
from vae_jax.errors import CheckpointError, DamagedCheckpointError


def config_to_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as plain JSON data (tuples become lists), as stored in a checkpoint."""
    return json.loads(config.to_json())


def incompatible_fields(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Fields, other than `configs.resumable_fields`, whose values differ between two JSON
    configs. A field missing from `saved` (a checkpoint written before the field existed) counts
    as its default, which keeps the behaviour of the older code."""
    default = config_to_json(configs.get_default())
    keys = (set(saved) | set(current)) - set(configs.resumable_fields(current))
    return sorted(k for k in keys if saved.get(k, default.get(k)) != current.get(k))


def state_digest(tree: Any) -> str:
    """SHA-256 (hex) of a pytree of arrays: every leaf's path, dtype, shape and bytes, in order.

    Equal for two trees exactly when they hold bit-identical arrays at the same paths.
    """
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(distributed.to_host(tree)):
        array = np.ascontiguousarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _collect_abandoned_reads() -> None:
    """Collects the reads Orbax abandons when one read of a checkpoint fails, with Python's
    "Exception ignored" tracebacks and asyncio's "never retrieved" errors for them silenced
    during the collection only."""
    hook, sys.unraisablehook = sys.unraisablehook, lambda unraisable: None
    asyncio_logger = logging.getLogger("asyncio")
    level = asyncio_logger.level
    asyncio_logger.setLevel(logging.CRITICAL)
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook
        asyncio_logger.setLevel(level)


class Checkpointer:
    """Saves and restores training state in ``directory`` with an Orbax CheckpointManager."""

    def __init__(self, directory: str, max_to_keep: int = 3):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               cleanup_tmp_directories=True)
        self._manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "config": ocp.JsonCheckpointHandler(),
                           "digest": ocp.JsonCheckpointHandler()})

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, config: ml_collections.ConfigDict) -> None:
        """Writes `state` (a pytree of arrays), its digest and `config` as checkpoint `step`;
        blocks until done. Raises `CheckpointError` when a checkpoint at `step` or later exists."""
        written = self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            config=ocp.args.JsonSave(config_to_json(config)),
            digest=ocp.args.JsonSave({"sha256": state_digest(state)})))
        self._manager.wait_until_finished()
        if not written:
            raise CheckpointError(f"checkpoint {step} was not written: {self.directory} already "
                                  f"holds checkpoint {self.latest_step()}")

    def saved_config(self, step: int) -> dict[str, Any]:
        return self._manager.restore(step, args=ocp.args.Composite(
            config=ocp.args.JsonRestore()))["config"]

    def restore(self, step: int, template: Any, config: ml_collections.ConfigDict) -> Any:
        """Restores checkpoint `step` into the structure, shapes and dtypes of `template`.

        Raises `CheckpointError` naming the differing fields when the checkpoint was written by a
        run with another configuration (other than `configs.resumable_fields`), or naming the
        arrays whose shapes differ; raises `DamagedCheckpointError` when its files cannot be read
        or the restored arrays differ from the digest saved with them.
        """
        saved = self._read(step, "its config", self.saved_config, step)
        current = config_to_json(config)
        differences = incompatible_fields(saved, current)
        if differences:
            detail = ", ".join(f"{k}={saved.get(k)!r} (this run: {current.get(k)!r})"
                               for k in differences)
            raise CheckpointError(
                f"{self.directory} holds a checkpoint of a different run: {detail}; "
                "use another --workdir, or the checkpoint's settings to resume it")
        self._check_shapes(step, template)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        restored = self._read(step, "its arrays", self._manager.restore, step,
                              args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                      digest=ocp.args.JsonRestore()))
        if restored["digest"] != {"sha256": state_digest(restored["state"])}:
            raise self._damaged(step, "its arrays differ from the digest saved with them")
        return restored["state"]

    def restore_latest(self, template: Any,
                       config: ml_collections.ConfigDict) -> tuple[int, Any] | None:
        """Restores the newest intact checkpoint into `template`: returns (step, state), or None
        when there is no checkpoint.

        Damaged checkpoints newer than the one restored are moved aside to ``STEP.damaged`` (never
        deleted), each with a warning on stderr, so that training can write those steps again.
        When every checkpoint is damaged, raises `DamagedCheckpointError` naming each and leaves
        them all in place. A checkpoint of another run raises `CheckpointError`, as in `restore`.
        """
        reasons: dict[int, str] = {}
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                state = self.restore(step, template, config)
            except DamagedCheckpointError as error:
                reasons.update(error.reasons)
                continue
            for bad_step, reason in reasons.items():
                moved_to = self._move_aside(bad_step)
                print(f"warning: checkpoint {bad_step} is damaged: {reason}; moved it to "
                      f"{moved_to} and resumed from checkpoint {step}", file=sys.stderr, flush=True)
            return step, state
        if not reasons:
            return None
        detail = "; ".join(f"checkpoint {step}: {reason}" for step, reason in reasons.items())
        raise DamagedCheckpointError(
            f"no intact checkpoint in {self.directory} ({detail}); nothing was changed: repair "
            "the files, or move the folder away to train from scratch", reasons)

    def _read(self, step: int, what: str, read, *args, **kwargs):
        """``read(*args, **kwargs)``, any failure raised as a `DamagedCheckpointError`.

        Orbax and TensorStore report missing or truncated files with bare `Exception`s as well as
        `KeyError`, `OSError` and JSON errors, hence the broad `except`.
        """
        try:
            return read(*args, **kwargs)
        except Exception as error:  # pylint: disable=broad-exception-caught
            first_sentence = re.split(r"(?<=\.)\s", str(error).strip() or "?", maxsplit=1)[0]
            reason = f"cannot read {what} ({type(error).__name__}: {first_sentence[:160]})"
        _collect_abandoned_reads()
        raise self._damaged(step, reason)

    def _damaged(self, step: int, reason: str) -> DamagedCheckpointError:
        return DamagedCheckpointError(f"checkpoint {step} in {self.directory} is damaged: {reason}",
                                      {step: reason})

    def _move_aside(self, step: int) -> str:
        """Renames checkpoint `step` to ``STEP.damaged`` (or ``STEP.damagedN``, never replacing
        anything), where Orbax no longer sees it; returns the new path."""
        source = os.path.join(self.directory, str(step))
        target, count = f"{source}.damaged", 1
        while os.path.exists(target):
            count += 1
            target = f"{source}.damaged{count}"
        if distributed.is_main_process():
            os.rename(source, target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"move aside checkpoint {step}")
        self._manager.reload()
        return target

    def _check_shapes(self, step: int, template: Any) -> None:
        """Compares the saved parameter shapes with `template["params"]`, naming mismatches."""
        saved = self._read(step, "its metadata", self._saved_params, step)
        wanted = dict(jax.tree_util.tree_leaves_with_path(template["params"]))
        bad = [f"{jax.tree_util.keystr(path)} saved "
               f"{tuple(saved[path].shape) if path in saved else None} "
               f"but this model has {tuple(leaf.shape)}"
               for path, leaf in wanted.items()
               if path not in saved or tuple(saved[path].shape) != tuple(leaf.shape)]
        bad += [f"{jax.tree_util.keystr(path)} is saved but not in this model"
                for path in saved if path not in wanted]
        if bad:
            raise CheckpointError(
                f"checkpoint {step} in {self.directory} holds a model of another shape: "
                + "; ".join(bad[:3]) + "; use another --workdir")

    def _saved_params(self, step: int) -> dict:
        """The saved params' array metadata (with `.shape`), by key path."""
        metadata = self._manager.item_metadata(step)["state"]
        tree = getattr(metadata, "tree", metadata)
        return dict(jax.tree_util.tree_leaves_with_path(tree["params"]))

    def close(self) -> None:
        self._manager.close()
