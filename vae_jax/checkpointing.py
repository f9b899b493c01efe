"""Orbax checkpoints of a training run: save, find the latest, restore into a matching template.

Each checkpoint is a step-numbered folder under ``WORKDIR/checkpoints`` with two items: ``state``
(params, optimizer state, step and PRNG key, as a pytree of arrays) and ``config`` (the run's
configuration as JSON). Orbax writes atomically, so a crash mid-save never leaves a checkpoint
that looks complete.
"""

import json
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from vae_jax.configs import RESUMABLE_FIELDS
from vae_jax.errors import CheckpointError


def config_to_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as plain JSON data (tuples become lists), as stored in a checkpoint."""
    return json.loads(config.to_json())


def incompatible_fields(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Fields, other than `RESUMABLE_FIELDS`, whose values differ between two JSON configs."""
    keys = (set(saved) | set(current)) - set(RESUMABLE_FIELDS)
    return sorted(k for k in keys if saved.get(k) != current.get(k))


class Checkpointer:
    """Saves and restores training state in ``directory`` with an Orbax CheckpointManager."""

    def __init__(self, directory: str, max_to_keep: int = 3):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self._manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "config": ocp.JsonCheckpointHandler()})

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, config: ml_collections.ConfigDict) -> None:
        """Writes `state` (a pytree of arrays) and `config` as checkpoint `step`; blocks until done."""
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            config=ocp.args.JsonSave(config_to_json(config))))
        self._manager.wait_until_finished()

    def saved_config(self, step: int) -> dict[str, Any]:
        return self._manager.restore(step, args=ocp.args.Composite(
            config=ocp.args.JsonRestore()))["config"]

    def restore(self, step: int, template: Any, config: ml_collections.ConfigDict) -> Any:
        """Restores checkpoint `step` into the structure, shapes and dtypes of `template`.

        Raises `CheckpointError` naming the differing fields when the checkpoint was written by a
        run with another configuration (other than `RESUMABLE_FIELDS`), or naming the arrays whose
        shapes differ.
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
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        return self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract)))["state"]

    def _check_shapes(self, step: int, template: Any) -> None:
        """Compares the saved parameter shapes with `template["params"]`, naming mismatches."""
        metadata = self._manager.item_metadata(step)["state"]
        tree = getattr(metadata, "tree", metadata)
        saved = dict(jax.tree_util.tree_leaves_with_path(tree["params"]))
        wanted = dict(jax.tree_util.tree_leaves_with_path(template["params"]))
        bad = [f"{jax.tree_util.keystr(path)} saved {tuple(saved[path].shape) if path in saved else None}"
               f" but this model has {tuple(leaf.shape)}"
               for path, leaf in wanted.items()
               if path not in saved or tuple(saved[path].shape) != tuple(leaf.shape)]
        bad += [f"{jax.tree_util.keystr(path)} is saved but not in this model"
                for path in saved if path not in wanted]
        if bad:
            raise CheckpointError(
                f"checkpoint {step} in {self.directory} holds a model of another shape: "
                + "; ".join(bad[:3]) + "; use another --workdir")

    def close(self) -> None:
        self._manager.close()
