"""Restoring a run of scripts/train.py: its config, model, params and dataset from a checkpoint.

    run = vae_jax.app.runs.load_run("workdirs/mnist")          # the latest checkpoint
    mean, _ = run.vae.encode(run.params, x)
    run = vae_jax.app.runs.load_run(workdir, dataset=arrays)   # a run trained on arrays in memory

A run trained on arrays in memory (``training.train_and_evaluate(config, workdir, dataset)``)
records them in ``workdir/dataset.json`` (`run_folder.dataset_record`); its readers take the same
`data.ImageDataset` and refuse, in one line and before loading anything, to read it without
them or with other arrays (`check_dataset`): no reader substitutes the dataset its config names.

The model is the one the checkpoint's *own* config describes (not ``workdir/config.json``, which
belongs to the last run started there), so a checkpoint always restores into the model that wrote
it.

Everything here only reads: checkpoints are opened read-only (`vae_jax.app.run_folder`), so
loading a run while `scripts/train.py` saves into it is safe, and a damaged latest checkpoint is
skipped with a warning (the newest intact one is loaded) but left where it is. Only the params are
restored (`restore_params`), into the shapes of the model the config describes: no optimizer is
built.
"""

import contextlib
import os
from typing import Any, Callable, NamedTuple

import jax
import ml_collections

from vae_jax.app import builders, checkpointing, configs, data, run_folder
from vae_jax.app.run_folder import checkpoint_steps, resolve_step  # also read from here
from vae_jax.errors import CheckpointError, ConfigError, DamagedCheckpointError, DataError
from vae_jax.model import VAE, Params


class Run(NamedTuple):
    """A restored checkpoint of a training run.

    Attributes:
      config: the checkpoint's config over today's defaults (`model_config`).
      vae: the model that config describes, for the dataset's image shape.
      params: the checkpoint's params.
      step: the checkpoint's step (optimizer steps done).
      dataset: the run's dataset (`vae_jax.app.data.ImageDataset`: uint8 images, labels), its
        training split without the labels of ``config.exclude_labels``, as the run trained on
        it (`data.exclude_labels`); the test split whole.
      workdir: the run's folder.
      full_dataset: the dataset as loaded, every label in both splits (the same object as
        `dataset` for a run that excludes none): what scores, codes and probes read, so that a
        held-out label can be scored and classified.
    """

    config: ml_collections.ConfigDict
    vae: VAE
    params: Params
    step: int
    dataset: data.ImageDataset
    workdir: str
    full_dataset: data.ImageDataset

    @property
    def epoch(self) -> int | None:
        """Epochs done at this checkpoint (None for a dataset smaller than a batch)."""
        steps_per_epoch = len(self.dataset.train_images) // self.config.batch_size
        return self.step // steps_per_epoch if steps_per_epoch else None


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


def restore_params(checkpointer: checkpointing.Checkpointer, step: int, vae: VAE) -> Params:
    """The params of checkpoint `step`, restored alone into the shapes of ``vae.init``'s (traced
    only: nothing is initialised); raises `CheckpointError` when they do not fit `vae` (one line
    naming the arrays), `DamagedCheckpointError` when they cannot be read or differ from their
    digest."""
    template = jax.eval_shape(vae.init, jax.random.key(0))
    return checkpointer.restore_params(step, template)


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
    checkpointer = run_folder.checkpointer(workdir, read_only=True)
    with contextlib.closing(checkpointer):
        step, saved = checkpointer.newest_intact(steps, checkpointer.saved_config, verb=None)
    return step, model_config(saved, workdir)


def check_dataset(workdir: str, dataset: data.ImageDataset | None = None,
                  data_dir: str | None = None, manual_dir: str | None = None,
                  reader: str = "runs.load_run") -> None:
    """Checks, before anything is loaded, that a reader of the run in `workdir` is given the data
    it was trained on: for a run on arrays in memory (``workdir/dataset.json``,
    `run_folder.dataset_record`) those arrays as `dataset`, for a run on a TFDS dataset by name
    no `dataset` (its data is loaded by name, from `data_dir` and `manual_dir`).

    Raises `DataError` (one line naming `reader`, the Python call that takes the arrays): a run
    on arrays in memory without `dataset` (a script cannot evaluate it), `dataset` not the
    run's arrays (other images, sizes or shape: the SHA-256 differs), or `dataset` for a run on a
    dataset by name; `ConfigError` for `dataset` with `data_dir` or `manual_dir`.
    """
    record = run_folder.read_dataset_record(workdir)
    if dataset is None:
        if record is not None:
            raise DataError(
                f"{workdir} was trained on arrays in memory ({record.get('name')!r}), not a TFDS "
                f"dataset: read it from Python with {reader}({workdir!r}, dataset=…), passing "
                "the ImageDataset it was trained on")
        return
    data.check_in_memory(dataset)
    if data_dir is not None or manual_dir is not None:
        raise ConfigError("data_dir and manual_dir locate a TFDS dataset by name; pass them or "
                          "dataset=, not both")
    if record is None:
        raise DataError(f"{workdir} was trained on a TFDS dataset by name, not on arrays in "
                        f"memory: call {reader} without dataset= (it loads the run's dataset by "
                        "name)")
    given = run_folder.dataset_record(dataset)
    if not run_folder.same_data(record, given):
        raise DataError(f"{workdir} was trained on other arrays, "
                        f"{run_folder.describe_dataset(record)}, than the dataset passed, "
                        f"{run_folder.describe_dataset(given)}: pass the arrays it was trained on")


def load_run(workdir: str, step: int | None = None, data_dir: str | None = None,
             manual_dir: str | None = None, dataset: data.ImageDataset | None = None) -> Run:
    """Restores checkpoint `step` (None: the newest intact one) of the scripts/train.py run in
    `workdir`, reading only: nothing in `workdir` changes.

    Loads the run's dataset — for a run trained on arrays in memory, `dataset`, the
    `data.ImageDataset` it was trained on (checked against ``workdir/dataset.json`` first,
    `check_dataset`); else the TFDS dataset its checkpoint's config names, with `data_dir` and
    `manual_dir` overriding the run's data location — builds the model the checkpoint's config
    describes for that dataset's image shape, and restores the params into it. With `step`
    None, damaged newer checkpoints are skipped with a warning on stderr, as training skips them
    (but left in place).

    Raises `vae_jax.VAEJaxError` subclasses for bad input: no such workdir, checkpoint or step, no
    intact checkpoint, a damaged `step` (the message names the intact steps), or one that does
    not fit the model its config describes (`CheckpointError`); a dataset that cannot be loaded,
    a run on arrays in memory without them, or `dataset` not the run's arrays (`DataError`,
    `check_dataset`, before anything is loaded).
    """
    steps = _candidates(workdir, step)
    check_dataset(workdir, dataset, data_dir, manual_dir)
    loaded: dict[str, Any] = {} if dataset is None else {"dataset": dataset}
    checkpointer = run_folder.checkpointer(workdir, read_only=True)

    def restore(s: int) -> tuple[ml_collections.ConfigDict, VAE, Params]:
        saved = checkpointer.saved_config(s)
        config = model_config(saved, workdir)
        if "dataset" not in loaded:  # every checkpoint of a run has the same dataset
            loaded["dataset"] = data.load_image_dataset(
                config.dataset, data_dir or config.data_dir, manual_dir or config.manual_dir)
        dataset = data.exclude_labels(loaded["dataset"], config.exclude_labels)
        loaded["run_dataset"] = dataset
        vae = builders.model(config, dataset.image_shape)
        return config, vae, restore_params(checkpointer, s, vae)

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
    return Run(config, vae, params, step, loaded["run_dataset"], os.path.abspath(workdir),
               loaded["dataset"])


def _is_intact(restore: Callable[[int], Any], step: int) -> bool:
    try:
        restore(step)
    except DamagedCheckpointError:
        return False
    return True
