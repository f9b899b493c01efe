"""Orbax checkpoints of a training run: save, find the newest intact one, restore it into a
matching template.

Each checkpoint is a step-numbered folder under ``WORKDIR/checkpoints`` (opened through
`vae_jax.app.run_folder.checkpointer`) with three items: ``state`` (params, optimizer state, step
and PRNG key, as a pytree of arrays: `vae_jax.app.training.to_checkpoint`), ``config`` (the run's
configuration as JSON) and ``digest`` (`state_digest` of the state's arrays and, on its own, of
its params: a reader restores and checks the params alone, `Checkpointer.restore_params`).

Orbax writes a checkpoint into a temporary folder and renames it when complete, so a process killed
mid-save, even by SIGKILL, leaves no checkpoint that looks complete; the next writing `Checkpointer`
on the folder removes the temporary one. Damage done later (files truncated, deleted or altered) is
caught on restore: reading fails, or the restored arrays differ from the digest.

A `Checkpointer` opened with ``read_only=True`` (every reader of a run: `vae_jax.app.runs`) never
deletes, moves or creates anything: it leaves temporary folders (a save in progress) and damaged
checkpoints where they are. Saves are synchronous: the training loop waits for each anyway, and a
save that fails raises `CheckpointError` at once, with nothing left running in the background.
"""

import contextlib
import gc
import hashlib
import json
import logging
import os
import re
import sys
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from vae_jax.app import configs, distributed
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


def kept(last_saved: int | None) -> str:
    """What a stopped run leaves to resume from: the checkpoint at `last_saved`, or none."""
    return ("no checkpoint was written" if last_saved is None
            else f"the checkpoint at step {last_saved} is kept")


def state_digest(tree: Any) -> str:
    """SHA-256 (hex) of a pytree of arrays: every leaf's path, dtype, shape and bytes, in order.

    Equal for two trees exactly when they hold bit-identical arrays at the same paths.
    """
    return _host_digest(distributed.to_host(tree))


def _host_digest(tree: Any) -> str:
    """`state_digest` of a tree already on the host."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        array = np.ascontiguousarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _digests(state: Any) -> dict[str, str]:
    """The ``digest`` item saved with `state`: "sha256", its `state_digest`, and, for a state with
    params, "params_sha256", theirs alone (one copy to the host for both)."""
    host = distributed.to_host(state)
    digests = {"sha256": _host_digest(host)}
    if isinstance(host, dict) and "params" in host:
        digests["params_sha256"] = _host_digest(host["params"])
    return digests


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


def _first_sentence(error: Exception) -> str:
    """``Type: first sentence of the message`` (at most 160 characters) of an exception."""
    first_sentence = re.split(r"(?<=\.)\s", str(error).strip() or "?", maxsplit=1)[0]
    return f"{type(error).__name__}: {first_sentence[:160]}"


@contextlib.contextmanager
def _quiet_orbax_read_only_notices():
    """Hides the warnings Orbax logs for every read-only CheckpointManager ("Given directory is
    read only", "read_only=True, setting …"): reading only is what a reader asked for."""
    absl_logger = logging.getLogger("absl")
    notice = lambda record: not re.search(r"read.only", record.getMessage())  # noqa: E731
    absl_logger.addFilter(notice)
    try:
        yield
    finally:
        absl_logger.removeFilter(notice)


def _on_this_host(leaf: Any) -> jax.ShapeDtypeStruct:
    """The abstract array Orbax restores `leaf` (an array or a `jax.ShapeDtypeStruct`) into: with
    its own sharding, or, for an abstract leaf without one, on this process's default device, so
    that a checkpoint written across several processes restores in one (Orbax would otherwise
    look for the writers' device topology)."""
    abstract = ocp.utils.to_shape_dtype_struct(leaf)
    if getattr(abstract, "sharding", None) is not None:
        return abstract
    return jax.ShapeDtypeStruct(abstract.shape, abstract.dtype,
                                sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))


class Checkpointer:
    """Saves and restores training state in ``directory`` with an Orbax CheckpointManager."""

    def __init__(self, directory: str, max_to_keep: int | None = 3, read_only: bool = False):
        """Opens (and, unless `read_only`, creates) the checkpoint folder `directory`.

        A writer keeps the newest `max_to_keep` checkpoints (None: all) and removes temporary
        folders that a killed save left behind; a `read_only` one changes nothing in `directory`
        and refuses to save.
        """
        self.directory = os.path.abspath(directory)
        self.read_only, self.max_to_keep = read_only, max_to_keep
        with _quiet_orbax_read_only_notices():
            options = ocp.CheckpointManagerOptions(
                max_to_keep=None if read_only else max_to_keep, create=not read_only,
                cleanup_tmp_directories=not read_only, read_only=read_only,
                save_interval_steps=0 if read_only else 1, enable_async_checkpointing=False)
            self._manager = ocp.CheckpointManager(
                self.directory, options=options,
                item_handlers={"state": ocp.StandardCheckpointHandler(),
                               "config": ocp.JsonCheckpointHandler(),
                               "digest": ocp.JsonCheckpointHandler()})

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, config: ml_collections.ConfigDict) -> None:
        """Writes `state` (a pytree of arrays), its digest and `config` as checkpoint `step`;
        blocks until done.

        Raises `CheckpointError` when a checkpoint at `step` or later exists, when this
        `Checkpointer` is read-only, or when the save fails (a folder that cannot be written, a
        full disk): one line naming the cause and the checkpoint that is kept. A failed save
        leaves the older checkpoints as they were; its temporary folder, if any, is removed by the
        next writer.
        """
        if self.read_only:
            raise CheckpointError(f"{self.directory} was opened read-only; cannot save")
        previous = self.latest_step()
        try:
            written = self._manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                config=ocp.args.JsonSave(config_to_json(config)),
                digest=ocp.args.JsonSave(_digests(state))))
            self._manager.wait_until_finished()
        except Exception as error:  # pylint: disable=broad-exception-caught
            # Orbax and TensorStore report I/O failures as OSError, ValueError or bare Exception.
            self._manager.reload()
            steps = sorted(self._manager.all_steps())
            if step in steps and self.max_to_keep:  # saved; deleting the oldest failed
                old = steps[:max(1, len(steps) - self.max_to_keep)]
                raise CheckpointError(
                    f"checkpoint {step} was saved in {self.directory}, but checkpoint(s) "
                    f"{', '.join(map(str, old))} could not be deleted (max_to_keep="
                    f"{self.max_to_keep}; {_first_sentence(error)}); stopped: make them deletable "
                    f"and run the same command again to resume from checkpoint {step}") from None
            raise CheckpointError(
                f"could not save checkpoint {step} in {self.directory} ({_first_sentence(error)})"
                f"; stopped, {kept(previous)}; make the folder writable (or free space) and run "
                "the same command again to resume") from None
        if not written:
            raise CheckpointError(f"checkpoint {step} was not written: {self.directory} already "
                                  f"holds checkpoint {self.latest_step()}")

    def saved_config(self, step: int) -> dict[str, Any]:
        """The JSON config saved with checkpoint `step`; raises `DamagedCheckpointError` when it
        cannot be read."""
        return self._read(step, "its config", self._read_config, step)

    def _read_config(self, step: int) -> dict[str, Any]:
        return self._manager.restore(step, args=ocp.args.Composite(
            config=ocp.args.JsonRestore()))["config"]

    def restore(self, step: int, template: Any, config: ml_collections.ConfigDict) -> Any:
        """Restores checkpoint `step` into the structure, shapes and dtypes of `template`.

        Raises `CheckpointError` naming the differing fields when the checkpoint was written by a
        run with another configuration (other than `configs.resumable_fields`), or naming the
        arrays whose shapes differ; raises `DamagedCheckpointError` when its files cannot be read
        or the restored arrays differ from the digest saved with them.
        """
        saved = self.saved_config(step)
        current = config_to_json(config)
        differences = incompatible_fields(saved, current)
        if differences:
            detail = ", ".join(f"{k}={saved.get(k)!r} (this run: {current.get(k)!r})"
                               for k in differences)
            raise CheckpointError(
                f"{self.directory} holds a checkpoint of a different run: {detail}; "
                "use another --workdir, or the checkpoint's settings to resume it")
        self._check_shapes(step, template)
        abstract = jax.tree.map(_on_this_host, template)
        restored = self._read(step, "its arrays", self._manager.restore, step,
                              args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                      digest=ocp.args.JsonRestore()))
        if restored["digest"].get("sha256") != state_digest(restored["state"]):
            raise self._damaged(step, "its arrays differ from the digest saved with them")
        return restored["state"]

    def restore_params(self, step: int, params_template: Any) -> Any:
        """The params alone of checkpoint `step` (``state["params"]``), read into the structure,
        shapes and dtypes of `params_template` (arrays or `jax.ShapeDtypeStruct`s, e.g.
        ``jax.eval_shape(vae.init, key)``; abstract ones land on the default device). Neither the
        optimizer state nor the config is needed or compared: a reader uses the checkpoint's own
        config.

        The params are checked against their own digest (checkpoints written before vae_jax 0.2
        have none for the params alone: there, only reading errors are caught).

        Raises `CheckpointError` naming the arrays whose shapes differ from the template's (one
        line), and `DamagedCheckpointError` when the files cannot be read or the params differ
        from their digest.
        """
        self._check_shapes(step, {"params": params_template})
        abstract = jax.tree.map(_on_this_host, params_template)
        digest = self._read(step, "its digest", self._read_digest, step)
        params = self._read(step, "its arrays", self._read_params, step, abstract)
        if "params_sha256" in digest and digest["params_sha256"] != state_digest(params):
            raise self._damaged(step, "its arrays differ from the digest saved with them")
        return params

    def _read_digest(self, step: int) -> dict[str, str]:
        return self._manager.restore(step, args=ocp.args.Composite(
            digest=ocp.args.JsonRestore()))["digest"]

    def _read_params(self, step: int, abstract_params: Any) -> Any:
        """``state["params"]`` of checkpoint `step`, read alone (Orbax's partial restore of the
        ``state`` item, whose format is a PyTree checkpoint's)."""
        path = os.path.join(self.directory, str(step), "state")
        with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as reader:
            item = {"params": abstract_params}
            restored = reader.restore(path, args=ocp.args.PyTreeRestore(
                item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                partial_restore=True))
        return restored["params"]

    def restore_latest(self, template: Any,
                       config: ml_collections.ConfigDict) -> tuple[int, Any] | None:
        """Restores the newest intact checkpoint into `template`: returns (step, state), or None
        when there is no checkpoint.

        A writer moves damaged checkpoints newer than the one restored aside to ``STEP.damaged``
        (never deleted), each with a warning on stderr, so that training can write those steps
        again; a read-only `Checkpointer` warns and leaves them in place. When every checkpoint is
        damaged, raises `DamagedCheckpointError` naming each and leaves them all in place. A
        checkpoint of another run raises `CheckpointError`, as in `restore`.
        """
        return self.newest_intact(sorted(self._manager.all_steps(), reverse=True),
                                  lambda step: self.restore(step, template, config))

    def newest_intact(self, steps: list[int], restore: Callable[[int], Any],
                      verb: str | None = "resumed from") -> tuple[int, Any] | None:
        """``(step, restore(step))`` of the first of `steps` that `restore` reads without a
        `DamagedCheckpointError`; None when `steps` is empty.

        The damaged ones before it are moved aside (a writer) or left in place (read-only), each
        with a warning on stderr saying so and "`verb` checkpoint STEP" (none when `verb` is None
        and read-only). Raises
        `DamagedCheckpointError` naming every step when all of them are damaged.
        """
        reasons: dict[int, str] = {}
        for step in steps:
            try:
                result = restore(step)
            except DamagedCheckpointError as error:
                reasons.update(error.reasons)
                continue
            for bad_step, reason in reasons.items():
                if self.read_only and verb is None:
                    continue
                if self.read_only:
                    done = "left it in place (training moves it aside when it resumes)"
                else:
                    done = f"moved it to {self._move_aside(bad_step)}"
                print(f"warning: checkpoint {bad_step} is damaged: {reason}; {done} and {verb} "
                      f"checkpoint {step}", file=sys.stderr, flush=True)
            return step, result
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
            reason = f"cannot read {what} ({_first_sentence(error)})"
        _collect_abandoned_reads()
        raise self._damaged(step, reason)

    def _damaged(self, step: int, reason: str) -> DamagedCheckpointError:
        return DamagedCheckpointError(f"checkpoint {step} in {self.directory} is damaged: {reason}",
                                      {step: reason})

    def _move_aside(self, step: int) -> str:
        """(Writers only.) Renames checkpoint `step` to ``STEP.damaged`` (or ``STEP.damagedN``,
        never replacing anything), where Orbax no longer sees it; returns the new path."""
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
