"""Restoring a run of scripts/train.py: its config, model, params and dataset from a checkpoint.

    run = vae_jax.runs.load_run("workdirs/mnist")          # the latest checkpoint
    mean, _ = run.vae.encode(run.params, x)

The model is the one the checkpoint's *own* config describes (not ``workdir/config.json``, which
belongs to the last run started there), so a checkpoint always restores into the model that wrote
it. The checkpoint layout is `vae_jax.training`'s (`training.to_checkpoint`); only
`checkpoint_template` and `restore_params` here rely on it.
"""

import contextlib
import os
from typing import Any, NamedTuple

import jax
import ml_collections

from vae_jax import checkpointing, configs, data, model as model_lib, threefry, training
from vae_jax.errors import CheckpointError
from vae_jax.model import VAE, Params


class Run(NamedTuple):
    """A restored checkpoint of a training run.

    Attributes:
      config: the checkpoint's config over today's defaults (`model_config`).
      vae: the model that config describes, for the dataset's image shape.
      params: the checkpoint's params.
      step: the checkpoint's step (optimizer steps done).
      dataset: the run's dataset (`vae_jax.data.ImageDataset`: uint8 images, labels).
      workdir: the run's folder.
    """

    config: ml_collections.ConfigDict
    vae: VAE
    params: Params
    step: int
    dataset: data.ImageDataset
    workdir: str

    @property
    def epoch(self) -> int | None:
        """Epochs done at this checkpoint (None for a dataset smaller than a batch)."""
        steps_per_epoch = len(self.dataset.train_images) // self.config.batch_size
        return self.step // steps_per_epoch if steps_per_epoch else None


def checkpoint_steps(workdir: str) -> list[int]:
    """The steps of the checkpoints in ``workdir/checkpoints`` (one folder per step), sorted."""
    folder = os.path.join(workdir, training.CHECKPOINT_DIR)
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return sorted(int(name) for name in names if name.isdigit())


def resolve_step(workdir: str, step: int | None = None) -> int:
    """`step` (None: the latest) after checking that `workdir` holds that checkpoint.

    Raises `CheckpointError` for a missing workdir, a workdir without checkpoints, or a step that
    is not there (the message lists the steps there are).
    """
    if not os.path.isdir(workdir):
        raise CheckpointError(f"workdir {workdir!r} does not exist")
    steps = checkpoint_steps(workdir)
    if not steps:
        raise CheckpointError(f"no checkpoint in {os.path.join(workdir, training.CHECKPOINT_DIR)}"
                              f": train first with scripts/train.py --workdir={workdir}")
    if step is None:
        return steps[-1]
    if step not in steps:
        raise CheckpointError(f"no checkpoint at step {step} in {workdir}; it holds steps "
                              + ", ".join(map(str, steps)))
    return step


def model_config(saved: dict[str, Any]) -> ml_collections.ConfigDict:
    """The checkpoint's JSON config over today's defaults (fields added since keep their
    defaults), JSON lists back to tuples."""
    config = configs.get_default().to_dict()
    config.update({k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    return ml_collections.ConfigDict(config)


def checkpoint_template(vae: VAE, config: ml_collections.ConfigDict,
                        steps_per_epoch: int = 1) -> Any:
    """A tree of the structure, shapes and dtypes that `training` saves for `config`'s run (its
    optimizer state is that of `training.make_optimizer`, whose structure does not depend on
    `steps_per_epoch`)."""
    root_key = threefry.key(config.seed, config.prng_impl)
    optimizer = training.make_optimizer(config, steps_per_epoch)
    state = training.create_train_state(vae, optimizer, root_key)
    return training.to_checkpoint(state)


def read_saved_config(checkpointer: checkpointing.Checkpointer, step: int,
                      workdir: str) -> dict[str, Any]:
    """The JSON config saved with checkpoint `step`; `CheckpointError` when it cannot be read."""
    try:
        return checkpointer.saved_config(step)
    except Exception as error:  # pylint: disable=broad-exception-caught
        # Orbax reports a missing or unreadable item with bare Exceptions, among others.
        raise CheckpointError(f"cannot read the config of checkpoint {step} in {workdir} "
                              f"({type(error).__name__})") from error


def restore_params(checkpointer: checkpointing.Checkpointer, step: int, vae: VAE,
                   config: ml_collections.ConfigDict, saved_config: ml_collections.ConfigDict,
                   steps_per_epoch: int = 1) -> Params:
    """The params of checkpoint `step`; raises `CheckpointError` when they do not fit `vae`."""
    template = checkpoint_template(vae, config, steps_per_epoch)
    tree = checkpointer.restore(step, template, saved_config)
    return training.from_checkpoint(tree, config.prng_impl).params


def load_config(workdir: str, step: int | None = None) -> tuple[int, ml_collections.ConfigDict]:
    """(step, config) of checkpoint `step` (None: the latest) of the run in `workdir`, without
    loading data or arrays: `resolve_step`, then the saved config over today's defaults."""
    step = resolve_step(workdir, step)
    checkpointer = checkpointing.Checkpointer(os.path.join(workdir, training.CHECKPOINT_DIR))
    with contextlib.closing(checkpointer):
        return step, model_config(read_saved_config(checkpointer, step, workdir))


def load_run(workdir: str, step: int | None = None, data_dir: str | None = None,
             manual_dir: str | None = None) -> Run:
    """Restores checkpoint `step` (None: the latest) of the scripts/train.py run in `workdir`.

    Loads the run's dataset (its name from the checkpoint's config; `data_dir` and `manual_dir`
    override the run's data location), builds the model the checkpoint's config describes for
    that dataset's image shape, and restores the params into it.

    Raises `vae_jax.VAEJaxError` subclasses for bad input: no such workdir, checkpoint or step, an
    unreadable checkpoint, or one that does not fit the model its config describes
    (`CheckpointError`); a dataset that cannot be loaded (`DataError`).
    """
    step = resolve_step(workdir, step)
    checkpointer = checkpointing.Checkpointer(os.path.join(workdir, training.CHECKPOINT_DIR))
    with contextlib.closing(checkpointer):
        saved = read_saved_config(checkpointer, step, workdir)
        config = model_config(saved)
        dataset = data.load_image_dataset(config.dataset, data_dir or config.data_dir,
                                          manual_dir or config.manual_dir)
        vae = model_lib.from_config(config, dataset.image_shape)
        steps_per_epoch = max(1, len(dataset.train_images) // config.batch_size)
        params = restore_params(checkpointer, step, vae, config, ml_collections.ConfigDict(saved),
                                steps_per_epoch)
    return Run(config, vae, params, step, dataset, os.path.abspath(workdir))
