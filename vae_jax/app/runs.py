"""Restoring a run of scripts/train.py: its config, model, params and dataset from a checkpoint.

    run = vae_jax.app.runs.load_run("workdirs/mnist")          # the latest checkpoint
    mean, _ = run.vae.encode(run.params, x)

The model is the one the checkpoint's *own* config describes (not ``workdir/config.json``, which
belongs to the last run started there), so a checkpoint always restores into the model that wrote
it.

Everything here only reads: checkpoints are opened read-only (`vae_jax.app.run_folder`), so loading a
run while `scripts/train.py` saves into it is safe, and a damaged latest checkpoint is skipped with
a warning (the newest intact one is loaded) but left where it is. The checkpoint layout is `vae_jax.app.training`'s (`training.to_checkpoint`); only
`checkpoint_template` and `restore_params` here rely on it.
"""

import contextlib
import os
from typing import Any, Callable, NamedTuple

import jax
import ml_collections

from vae_jax import model as model_lib
from vae_jax.app import checkpointing, configs, data, prng, training
from vae_jax.errors import CheckpointError, DamagedCheckpointError
from vae_jax.model import VAE, Params


class Run(NamedTuple):
    """A restored checkpoint of a training run.

    Attributes:
      config: the checkpoint's config over today's defaults (`model_config`).
      vae: the model that config describes, for the dataset's image shape.
      params: the checkpoint's params.
      step: the checkpoint's step (optimizer steps done).
      dataset: the run's dataset (`vae_jax.app.data.ImageDataset`: uint8 images, labels).
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


def resolve_step(workdir: str, step: int | None = None,
                 trainer: str = "scripts/train.py") -> int:
    """`step` (None: the latest) after checking that `workdir` holds that checkpoint.

    Raises `CheckpointError` for a missing workdir (or a file), a workdir without checkpoints, or
    a step that is not there (the message lists the steps there are).
    """
    if not os.path.exists(workdir):
        raise CheckpointError(f"workdir {workdir!r} does not exist")
    if not os.path.isdir(workdir):
        raise CheckpointError(f"workdir {workdir!r} is not a directory: pass the folder of a "
                              "training run")
    steps = checkpoint_steps(workdir)
    if not steps:
        raise CheckpointError(f"no checkpoint in {os.path.join(workdir, training.CHECKPOINT_DIR)}"
                              f": train first with {trainer} --workdir={workdir} (or wait "
                              "for the first checkpoint of the run in progress)")
    if step is None:
        return steps[-1]
    if step not in steps:
        raise CheckpointError(f"no checkpoint at step {step} in {workdir}; it holds steps "
                              + ", ".join(map(str, steps)))
    return step


def model_config(saved: dict[str, Any], workdir: str = "") -> ml_collections.ConfigDict:
    """The checkpoint's JSON config over today's defaults (fields added since keep their
    defaults), JSON lists back to tuples. Raises `CheckpointError` for a sweep's checkpoint
    (`vae_jax.app.sweep`), whose members are read as runs once extracted."""
    if "sweep" in saved:
        raise CheckpointError(
            f"{workdir or 'this folder'} holds a sweep (scripts/sweep.py), not one run: "
            f"extract its members with scripts/sweep.py --workdir={workdir or 'DIR'}"
            " --extract=all, then pass --workdir=DIR/members/II")
    config = configs.get_default().to_dict()
    config.update({k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    return ml_collections.ConfigDict(config)


def checkpoint_template(vae: VAE, config: ml_collections.ConfigDict,
                        steps_per_epoch: int = 1) -> Any:
    """A tree of the structure, shapes and dtypes that `training` saves for `config`'s run (its
    optimizer state is that of `training.make_optimizer`, whose structure does not depend on
    `steps_per_epoch`)."""
    root_key = prng.key(config.seed, config.prng_impl)
    optimizer = training.make_optimizer(config, steps_per_epoch)
    state = training.create_train_state(vae, optimizer, root_key)
    return training.to_checkpoint(state)


def restore_params(checkpointer: checkpointing.Checkpointer, step: int, vae: VAE,
                   config: ml_collections.ConfigDict, saved_config: ml_collections.ConfigDict,
                   steps_per_epoch: int = 1) -> Params:
    """The params of checkpoint `step`; raises `CheckpointError` when they do not fit `vae`."""
    template = checkpoint_template(vae, config, steps_per_epoch)
    tree = checkpointer.restore(step, template, saved_config)
    return training.from_checkpoint(tree, config.prng_impl).params


def _open(workdir: str) -> checkpointing.Checkpointer:
    return checkpointing.Checkpointer(os.path.join(workdir, training.CHECKPOINT_DIR),
                                      read_only=True)


def _candidates(workdir: str, step: int | None) -> list[int]:
    """[step] after `resolve_step`, or (None) every step, newest first."""
    if step is not None:
        return [resolve_step(workdir, step)]
    resolve_step(workdir)
    return checkpoint_steps(workdir)[::-1]


def load_config(workdir: str, step: int | None = None) -> tuple[int, ml_collections.ConfigDict]:
    """(step, config) of checkpoint `step` (None: the newest whose config is readable, silently
    past damaged ones) of the run in `workdir`, without loading data or arrays: the saved config
    over today's defaults.

    Raises `CheckpointError` for a missing workdir, checkpoint or step, or an unreadable config.
    """
    steps = _candidates(workdir, step)
    checkpointer = _open(workdir)
    with contextlib.closing(checkpointer):
        step, saved = checkpointer.newest_intact(steps, checkpointer.saved_config, verb=None)
    return step, model_config(saved, workdir)


def load_run(workdir: str, step: int | None = None, data_dir: str | None = None,
             manual_dir: str | None = None) -> Run:
    """Restores checkpoint `step` (None: the newest intact one) of the scripts/train.py run in
    `workdir`, reading only: nothing in `workdir` changes.

    Loads the run's dataset (its name from the checkpoint's config; `data_dir` and `manual_dir`
    override the run's data location), builds the model the checkpoint's config describes for
    that dataset's image shape, and restores the params into it. With `step` None, damaged newer
    checkpoints are skipped with a warning on stderr, as training skips them (but left in place).

    Raises `vae_jax.VAEJaxError` subclasses for bad input: no such workdir, checkpoint or step, no
    intact checkpoint, a damaged `step` (the message names the intact steps), or one that does
    not fit the model its config describes (`CheckpointError`); a dataset that cannot be loaded
    (`DataError`).
    """
    steps = _candidates(workdir, step)
    checkpointer = _open(workdir)
    loaded: dict[str, Any] = {}

    def restore(s: int) -> tuple[ml_collections.ConfigDict, VAE, Params]:
        saved = checkpointer.saved_config(s)
        config = model_config(saved, workdir)
        if "dataset" not in loaded:  # every checkpoint of a run has the same dataset
            loaded["dataset"] = data.load_image_dataset(
                config.dataset, data_dir or config.data_dir, manual_dir or config.manual_dir)
        dataset = loaded["dataset"]
        vae = model_lib.from_config(config, dataset.image_shape)
        steps_per_epoch = max(1, len(dataset.train_images) // config.batch_size)
        params = restore_params(checkpointer, s, vae, config, ml_collections.ConfigDict(saved),
                                steps_per_epoch)
        return config, vae, params

    with contextlib.closing(checkpointer):
        if step is None:
            step, (config, vae, params) = checkpointer.newest_intact(steps, restore,
                                                                     verb="loaded")
        else:
            try:
                config, vae, params = restore(step)
            except DamagedCheckpointError as error:
                intact = [s for s in checkpoint_steps(workdir)[::-1]
                          if s != step and _is_intact(restore, s)]
                hint = (f"intact checkpoints: steps {', '.join(map(str, intact))} (pass one as "
                        "--step, or none for the newest)" if intact
                        else "no other checkpoint is intact")
                raise CheckpointError(f"{error}; {hint}") from None
    return Run(config, vae, params, step, loaded["dataset"], os.path.abspath(workdir))


def _is_intact(restore: Callable[[int], Any], step: int) -> bool:
    try:
        restore(step)
    except DamagedCheckpointError:
        return False
    return True
