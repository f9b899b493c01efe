r"""Hyperparameter sweeps: N models trained side by side by the one training engine.

A sweep trains N members, each the model that `training.train_and_evaluate` would train for the
base config with some fields replaced (β, α, the learning rate, free bits, σ, the corruption
level, the L1 weight on codes, the seed). It is
not a second training loop: `train_sweep` hands `training.fit` a `training.Models` of N stacked
models, and the engine `jax.vmap`s its one-model step over their leading model axis, with the
swept floats as the step's arguments (`training.make_train_step`):

    step : (state, h, images, indices) -> state'                one model, hyperparameters h
    vmap(step) : (state[N], h[N], images, indices[N]) -> state'[N]

One compiled program serves every member; fields that are not swept stay Python constants, as in
a single run. **Member i computes what the single run of its config computes** (up to float
rounding, tested at rtol 1e-5): the same initial state, step keys and data order, drawn from its
own seed. This module holds only what is sweep-specific: parsing the grid (`parse_sweep`), the
members' configs and labels, what sweep checkpoints store, the rate–distortion picture, and
turning a member into a run folder of its own (`extract_member`).

Sweep specification (`parse_sweep`): one ``FIELD=V1,V2,...`` per field, e.g.
``beta=0.25,0.5,1,2,4,8`` or ``learning_rate=1e-3,3e-3``, several separated by ``;`` or given as
several strings. Fields: `SWEEPABLE_FIELDS`. Floats may be written as ``1``, ``0.5``, ``1e-3``;
``seed`` takes non-negative integers. Several fields combine as a ``grid`` (the cartesian product,
the first field varying slowest; the default) or with ``zip`` (member i takes the i-th value of
every field; equal lengths needed). Fields that change array shapes (latent_dim, hidden_dims,
batch_size, ...) or the program (likelihood, objective, ...) cannot be swept: run one sweep each.

What `train_sweep` writes in its workdir DIR:

- ``sweep.json``: the fields, mode, each member's values and label, and the base config;
- ``checkpoints/STEP/``: Orbax checkpoints of the stacked state (`training.to_checkpoint` with a
  leading model axis), saved with the base config and the sweep: rerunning the same sweep resumes
  from the latest one, and a different config or sweep is refused (`CheckpointError`);
- ``metrics.jsonl``: one line per epoch with `step`, `epoch`, `epoch_time_s` (the whole sweep's)
  and, for every metric of ``scripts/train.py`` (train_* and test_* in nats, kl_weight), a list
  with one value per member;
- ``rate_distortion.png``: test KL (rate) against test −log p(x|z) (distortion), one labelled
  point per member, redrawn every epoch (without matplotlib, the ``plots`` extra, the sweep says
  so in one notice line and writes everything else);
- ``members/II/images/``: member II's reconstruction and sample grids, as ``scripts/train.py``
  draws them;
- ``tensorboard/II_LABEL/``: member II's TensorBoard event files (`member_logdir`; its own
  metrics, pictures and config, as ``scripts/train.py`` writes them: `vae_jax.app.summaries`),
  so that ``tensorboard --logdir=DIR`` shows each member as a run;
- after `extract_member` (``scripts/sweep.py --extract``): ``members/II/`` becomes a normal run
  folder (``config.json``, ``metrics.jsonl``, ``checkpoints/STEP/``) that ``scripts/evaluate.py``
  and ``scripts/visualize.py`` read and ``scripts/train.py`` resumes with the member's config.
"""

import contextlib
import itertools
import json
import math
import os
import shutil
from typing import Any, Callable, NamedTuple, Sequence

import jax
import ml_collections
import numpy as np

from vae_jax.app import (builders, checkpointing, configs, data, distributed, optional,
                         run_folder, runs, training)
from vae_jax.errors import CheckpointError, ConfigError

# Fields a sweep may vary: the floats the engine takes as arguments, and the seed.
FLOAT_FIELDS = builders.HYPERPARAMETERS
SWEEPABLE_FIELDS = FLOAT_FIELDS + ("seed",)
# Fields that set array shapes: one vmapped program cannot hold members that differ in them.
SHAPE_FIELDS = ("latent_dim", "hidden_dims", "conv_channels", "batch_size", "iwae_samples",
                "dataset", "architecture", "model", "gaussian_scale", "prior",
                "prior_components", "top_latent_dim", "top_hidden_dims")
SWEEP_MODES = ("grid", "zip")
SWEEP_FILE = run_folder.SWEEP_FILE
MEMBERS_DIR = "members"
RATE_DISTORTION_FILE = "rate_distortion.png"

Hyperparameters = dict[str, jax.Array]  # swept float field -> (N,) float32, or a scalar per member


class Sweep(NamedTuple):
    """The members of a sweep: member i sets ``fields[k]`` to ``values[i][k]``.

    Attributes:
      fields: the swept config fields, a subset of `SWEEPABLE_FIELDS`, in the order given.
      values: one row per member, in the order of `fields` (floats, ints for ``seed``).
      mode: "grid" or "zip", how the rows were formed (kept for the record and the resume check).
    """

    fields: tuple[str, ...]
    values: tuple[tuple[float | int, ...], ...]
    mode: str = "grid"

    @property
    def size(self) -> int:
        """N, the number of members."""
        return len(self.values)

    def overrides(self, index: int) -> dict[str, float | int]:
        """{field: value} of member `index`."""
        return dict(zip(self.fields, self.values[index]))

    def label(self, index: int) -> str:
        """Member `index` in words, e.g. ``beta=0.5, learning_rate=0.001``."""
        return ", ".join(f"{field}={value:g}" for field, value in self.overrides(index).items())

    def describe(self) -> str:
        """The sweep in words, e.g. ``beta=0.5,1,2 (grid, 3 members)``."""
        columns = [", ".join(dict.fromkeys(f"{row[k]:g}" for row in self.values)).replace(" ", "")
                   for k in range(len(self.fields))]
        fields = "; ".join(f"{field}={column}" for field, column in zip(self.fields, columns))
        return f"{fields} ({self.mode}, {self.size} members)"

    def to_json(self) -> dict[str, Any]:
        """{"fields", "mode", "values"} as JSON data (what sweep.json and checkpoints store)."""
        return {"fields": list(self.fields), "mode": self.mode,
                "values": [list(row) for row in self.values]}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> "Sweep":
        """Inverse of `to_json`."""
        return cls(tuple(record["fields"]), tuple(tuple(row) for row in record["values"]),
                   record["mode"])


def _parse_value(field: str, text: str, spec: str) -> float | int:
    """One value of `field` from its text in `spec`; `ConfigError` when it is not a number."""
    text = text.strip()
    if field == "seed":
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"--sweep={spec}: seed values must be non-negative integers, got "
                              f"{text!r}") from None
        if not 0 <= value < 2**63:
            raise ConfigError(f"--sweep={spec}: seed values must be non-negative integers below "
                              f"2**63, got {value}")
        return value
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--sweep={spec}: {text!r} is not a number (write e.g. "
                          f"{field}=0.5,1,2)") from None
    if not math.isfinite(value):
        raise ConfigError(f"--sweep={spec}: {text!r} is not a finite number")
    return value


def _check_field(field: str, spec: str) -> None:
    """`ConfigError` unless `field` is a config field that can be swept, naming why not."""
    known = configs.get_default().keys()
    sweepable = ", ".join(SWEEPABLE_FIELDS)
    if field not in known:
        raise ConfigError(f"--sweep={spec}: unknown config field {field!r}; sweepable fields are "
                          f"{sweepable}")
    if field in SHAPE_FIELDS:
        raise ConfigError(f"--sweep={spec}: config.{field} cannot be swept: it changes the shapes "
                          "of the params or batches, which one vmapped program shares; run one "
                          f"sweep per {field} (sweepable fields are {sweepable})")
    if field not in SWEEPABLE_FIELDS:
        raise ConfigError(f"--sweep={spec}: config.{field} cannot be swept: all members of one "
                          f"program share it; sweepable fields are {sweepable}")


def parse_sweep(specs: Sequence[str] | str, mode: str = "grid") -> Sweep:
    """Parses sweep specifications ``FIELD=V1,V2,...`` into a `Sweep`.

    `specs` is one string or several; a string may hold several specifications separated by
    ``;``. With ``mode="grid"`` the members are the cartesian product of the fields' values (the
    first field varies slowest: N = Π_k len(values_k)); with ``mode="zip"`` member i takes the
    i-th value of every field (N = the common length). Raises `ConfigError` for a malformed
    specification, an unknown field, a field that cannot be swept (`SWEEPABLE_FIELDS`), a value
    that is not a number (seeds: not a non-negative integer), a field given twice, no field at
    all, or zipped fields of different lengths.
    """
    if mode not in SWEEP_MODES:
        raise ConfigError(f"the sweep mode must be one of {SWEEP_MODES}, got {mode!r}")
    specs = [specs] if isinstance(specs, str) else list(specs)
    parts = [part.strip() for spec in specs for part in spec.split(";") if part.strip()]
    if not parts:
        raise ConfigError("no sweep given: pass --sweep=FIELD=V1,V2,... (e.g. "
                          "--sweep=beta=0.5,1,2); sweepable fields are "
                          + ", ".join(SWEEPABLE_FIELDS))
    columns: dict[str, tuple[float | int, ...]] = {}
    for spec in parts:
        field, equals, text = spec.partition("=")
        field = field.strip()
        if not equals or not field:
            raise ConfigError(f"--sweep={spec}: expected FIELD=V1,V2,... (e.g. beta=0.5,1,2)")
        _check_field(field, spec)
        if field in columns:
            raise ConfigError(f"--sweep={spec}: {field} is swept twice; give its values once")
        texts = [t for t in text.split(",") if t.strip()]
        if not texts:
            raise ConfigError(f"--sweep={spec}: no values for {field}")
        columns[field] = tuple(_parse_value(field, t, spec) for t in texts)
    fields = tuple(columns)
    if mode == "zip":
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            detail = ", ".join(f"{f}: {len(v)}" for f, v in columns.items())
            raise ConfigError("--sweep_mode=zip needs the same number of values for every field,"
                              f" got {detail}")
        rows = tuple(zip(*columns.values()))
    else:
        rows = tuple(itertools.product(*columns.values()))
    return Sweep(fields, rows, mode)


def member_config(config: ml_collections.ConfigDict, sweep: Sweep,
                  index: int) -> ml_collections.ConfigDict:
    """The config of member `index`: `config` with the member's swept values, validated.

    It is the config a single ``scripts/train.py`` run would need to train this member alone.
    Raises `ConfigError` naming the member when a value is out of range for its field.
    """
    member = ml_collections.ConfigDict(config.to_dict())
    overrides = sweep.overrides(index)
    for field, value in overrides.items():
        member[field] = int(value) if field == "seed" else float(value)
    try:
        return configs.validate(member)
    except ConfigError as error:
        raise ConfigError(f"sweep member {index} ({sweep.label(index)}): {error}") from None


# Swept fields that only some likelihoods read: sweeping them with another one trains N copies.
_READ_ONLY_BY = {"alpha": ("mse", "rmse"), "gaussian_sigma": ("gaussian",)}


def member_configs(config: ml_collections.ConfigDict, sweep: Sweep) -> list:
    """`member_config` of every member, after validating `config` itself. Raises `ConfigError`
    for a swept field that `config`'s likelihood does not read (α without mse/rmse, σ without
    gaussian) and for two members that would be the same model."""
    configs.validate(config)
    for field, likelihoods in _READ_ONLY_BY.items():
        if field in sweep.fields and config.likelihood not in likelihoods:
            raise ConfigError(f"--sweep: {field} has no effect with likelihood="
                              f"{config.likelihood!r} (only {', '.join(likelihoods)} read it); "
                              "every member would be the same model")
    for i, row in enumerate(sweep.values):
        if row in sweep.values[:i]:
            raise ConfigError(f"--sweep: members {sweep.values.index(row)} and {i} are the same "
                              f"model ({sweep.label(i)}); give each value once")
    return [member_config(config, sweep, i) for i in range(sweep.size)]


def hyperparameters(sweep: Sweep) -> Hyperparameters:
    """The swept floats as arrays with the model axis: {field: float32 (N,)} (the seed, which
    only sets the initial state and keys, is not among them)."""
    return {field: np.asarray([row[k] for row in sweep.values], np.float32)
            for k, field in enumerate(sweep.fields) if field in FLOAT_FIELDS}


def checkpoint_config(config: ml_collections.ConfigDict, sweep: Sweep,
                      image_shape: Sequence[int]) -> ml_collections.ConfigDict:
    """What a sweep checkpoint stores as its config: the base config without the swept fields
    (their base values are not used), plus ``sweep`` (`Sweep.to_json` and the image shape), so
    that resuming with another config or sweep is refused by `checkpointing.Checkpointer`."""
    record = {k: v for k, v in checkpointing.config_to_json(config).items()
              if k not in sweep.fields}
    record["sweep"] = {**sweep.to_json(), "image_shape": list(image_shape)}
    return ml_collections.ConfigDict(record)


def _check_same_sweep(workdir: str, saved_config: ml_collections.ConfigDict) -> None:
    """Raises `CheckpointError` when the newest checkpoint in `workdir` belongs to a single run or
    to another sweep than `saved_config`'s, naming both sweeps. (An unreadable checkpoint is left
    to `Checkpointer.restore_latest`, which moves it aside or reports it.)"""
    saved = run_folder.newest_saved_config(workdir)
    if saved is None:
        return
    if "sweep" not in saved:
        raise CheckpointError(f"{workdir} holds a checkpoint of a single scripts/train.py run, "
                              "not a sweep; use another --workdir")
    current = checkpointing.config_to_json(saved_config)["sweep"]
    if saved["sweep"] != current:
        def describe(record):
            record = dict(record)
            shape = record.pop("image_shape")
            return f"{Sweep.from_json(record).describe()} of images {tuple(shape)}"
        raise CheckpointError(
            f"{workdir} holds a checkpoint of another sweep: {describe(saved['sweep'])}; this run "
            f"asks for {describe(current)}; use another --workdir, or the same --sweep and "
            "--sweep_mode to resume it")


def member_dir(workdir: str, index: int, size: int) -> str:
    """``workdir/members/II``: member `index`'s folder, numbered with at least two digits."""
    return os.path.join(workdir, MEMBERS_DIR, f"{index:0{max(2, len(str(size - 1)))}d}")


def member_logdir(workdir: str, index: int, sweep: Sweep) -> str:
    """``workdir/tensorboard/II_LABEL``: member `index`'s TensorBoard folder, II as in
    `member_dir` and LABEL its `Sweep.label` without spaces (``01_beta=2,learning_rate=0.003``)."""
    name = os.path.basename(member_dir(workdir, index, sweep.size))
    return run_folder.tensorboard_dir(workdir, f"{name}_{sweep.label(index).replace(' ', '')}")


def save_rate_distortion(workdir: str, sweep: Sweep, record: dict[str, Any]) -> str:
    """Draws ``workdir/rate_distortion.png`` from a metrics line: test KL (rate) against test
    reconstruction loss (distortion), one point per member labelled with its values. Returns the
    path; raises `vae_jax.app.optional.MissingDependencyError` when matplotlib is missing."""
    from vae_jax.app import plots  # pylint: disable=import-outside-toplevel
    points = [plots.RatePoint(rate, distortion, sweep.label(i)) for i, (rate, distortion)
              in enumerate(zip(record["test_kl"], record["test_reconstruction_loss"]))]
    return plots.save_rate_distortion(
        os.path.join(workdir, RATE_DISTORTION_FILE), points,
        title=f"sweep of {', '.join(sweep.fields)}: test set, epoch {record['epoch']}")


def rate_distortion_hook(workdir: str,
                         sweep: Sweep) -> Callable[[dict[str, Any]], str] | None:
    """The `training.fit` ``after_epoch`` of a sweep: `save_rate_distortion` of every epoch's
    metrics line. Without matplotlib (the ``plots`` extra) the picture is the one thing a sweep
    skips: None, after one notice line naming the ``pip install`` that adds it."""
    try:
        optional.require("matplotlib", f"drawing {RATE_DISTORTION_FILE}")
    except optional.MissingDependencyError as error:
        if distributed.is_main_process():
            print(f"notice: {error}; the sweep trains and writes everything else without it",
                  flush=True)
        return None
    return lambda record: save_rate_distortion(workdir, sweep, record)


def sweep_models(config: ml_collections.ConfigDict, sweep: Sweep, workdir: str,
                 image_shape: Sequence[int]) -> training.Models:
    """The `training.Models` of `sweep` on the base `config`: member i's config
    (`member_config`), the swept floats as the step's arguments (`hyperparameters`), its label,
    its picture folder ``workdir/members/II``, its TensorBoard folder (`member_logdir`), and what
    the checkpoints store (`checkpoint_config`) and sweep.json says."""
    members = tuple(member_configs(config, sweep))
    labels = tuple(sweep.label(i) for i in range(sweep.size))
    folders = tuple(member_dir(workdir, i, sweep.size) for i in range(sweep.size))
    record = {**sweep.to_json(), "labels": list(labels),
              "members": [os.path.relpath(folder, workdir) for folder in folders],
              "config": checkpointing.config_to_json(config)}
    return training.Models(config, members, hyperparameters(sweep), True, labels, folders,
                           checkpoint_config(config, sweep, image_shape),
                           {run_folder.SWEEP_FILE: json.dumps(record, indent=2)},
                           tuple(member_logdir(workdir, i, sweep) for i in range(sweep.size)))


def train_sweep(config: ml_collections.ConfigDict, sweep: Sweep, workdir: str,
                dataset: data.ImageDataset | None = None) -> dict[str, Any]:
    """Trains every member of `sweep` (on the base `config`) in one vmapped program, resuming
    from the newest intact sweep checkpoint in `workdir`: `training.fit` of `sweep_models`, the
    loop a single run uses, with the step vmapped over the members.

    Every epoch, as for one run: each member draws its data order and trains (a non-finite step
    of any member stops the sweep with `TrainingDivergedError` naming it, before anything is
    saved); evaluates each member's single-sample test ELBO; appends one line of per-member
    lists to ``metrics.jsonl``; draws each member's picture grids and the rate–distortion plot;
    and every `save_every_epochs` epochs and after the last one saves an Orbax checkpoint of the
    stacked state. ``config.num_devices`` (0: as many as divide N) devices share the model
    axis; input pipelines, the progress bar and several processes work as for a run. Returns the
    last metrics line (lists of N values), or {step, epoch} when there was nothing to train.
    `dataset`: images in memory instead of the TFDS dataset ``config.dataset``, recorded in
    ``workdir/dataset.json`` and copied into each extracted member's folder, as for
    `training.train_and_evaluate`. Raises `ConfigError` for a bad config or member,
    `CheckpointError` when `workdir` holds a single run or another sweep, and what
    `training.train_and_evaluate` raises.
    """
    member_configs(config, sweep)
    with run_folder.lock(workdir, distributed.is_main_process()):
        run_folder.check_writable(workdir)
        loaded = training.load_training_data(config, dataset)
        models = sweep_models(config, sweep, workdir, loaded[0].image_shape)
        _check_same_sweep(workdir, models.saved_config)
        models = training.record_data(models, workdir, dataset)
        return training.fit(models, workdir, loaded,
                            after_epoch=rate_distortion_hook(workdir, sweep))


class SweepRun(NamedTuple):
    """A restored sweep checkpoint.

    Attributes:
      step: the checkpoint's step (every member's optimizer steps).
      config: the base config (swept fields at their defaults), over today's defaults.
      sweep: the members' values.
      members: each member's config (`member_configs`).
      image_shape: the shape of one example of the sweep's dataset.
      state: the stacked `training.TrainState`, leaves with a leading model axis N.
    """

    step: int
    config: ml_collections.ConfigDict
    sweep: Sweep
    members: list
    image_shape: tuple[int, ...]
    state: training.TrainState


def restore_sweep(workdir: str, step: int | None = None) -> SweepRun:
    """Restores sweep checkpoint `step` (None: the latest) of `workdir`, with the config and sweep
    saved in it. Raises `CheckpointError` when there is none, when `workdir` holds a single run
    rather than a sweep, or when the checkpoint is damaged."""
    step = run_folder.resolve_step(workdir, step, trainer="scripts/sweep.py --sweep=...")
    checkpointer = run_folder.checkpointer(workdir, read_only=True)
    with contextlib.closing(checkpointer):
        saved = checkpointer.saved_config(step)
        if "sweep" not in saved:
            raise CheckpointError(f"{workdir} holds a single run of scripts/train.py, not a "
                                  "sweep")
        record = dict(saved["sweep"])
        image_shape = tuple(record.pop("image_shape"))
        config = runs.model_config({k: v for k, v in saved.items() if k != "sweep"})
        sweep = Sweep.from_json(record)
        members = member_configs(config, sweep)
        template = jax.eval_shape(lambda: training.to_checkpoint(training.stack(
            [training.initial_state(c, image_shape, 1) for c in members])))
        tree = checkpointer.restore(step, template, ml_collections.ConfigDict(saved))
    state = training.from_checkpoint(tree, config.prng_impl)
    return SweepRun(step, config, sweep, members, image_shape, state)


def extract_member(workdir: str, index: int, out_dir: str | None = None,
                   step: int | None = None) -> str:
    """Writes member `index` of the sweep in `workdir` as a ``scripts/train.py`` run folder.

    From sweep checkpoint `step` (None: the latest), writes to `out_dir` (default
    ``workdir/members/II``): ``checkpoints/STEP/`` holding `training.to_checkpoint` of the
    member's state and its own config (the base config with its swept values), ``config.json``,
    ``metrics.jsonl`` with the member's values of the sweep's lines up to STEP (in the format
    of ``scripts/train.py``; epoch_time_s is the whole sweep's), and, for a sweep on arrays in
    memory, the sweep's ``dataset.json``. ``scripts/evaluate.py`` and
    ``scripts/visualize.py`` read the folder, and ``scripts/train.py`` with the member's config
    resumes it. Extracting the same step again changes nothing. Returns the folder. Holds the
    member folder's writer lock (`vae_jax.app.run_folder`) while it writes; reads the sweep's
    checkpoints read-only.
    Raises `ConfigError` for an index out of range and `CheckpointError` for a missing sweep.
    """
    run = restore_sweep(workdir, step)
    record = run_folder.read_dataset_record(workdir)
    step, sweep = run.step, run.sweep
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < sweep.size:
        raise ConfigError(f"member index must be an integer in [0, {sweep.size - 1}], got "
                          f"{index!r}")
    config = run.members[index]
    default_dir = member_dir(workdir, index, sweep.size)
    out_dir = out_dir or default_dir
    with run_folder.lock(out_dir):
        run_folder.check_writable(out_dir)
        _write_member(workdir, run, index, config, out_dir, default_dir, record)
    return out_dir


def _write_member(workdir: str, run: SweepRun, index: int, config: ml_collections.ConfigDict,
                  out_dir: str, default_dir: str, record: dict[str, Any] | None) -> None:
    step = run.step
    if os.path.abspath(out_dir) != os.path.abspath(default_dir) and os.path.isdir(
            os.path.join(default_dir, "images")):
        shutil.copytree(os.path.join(default_dir, "images"), os.path.join(out_dir, "images"),
                        dirs_exist_ok=True)

    member = run_folder.checkpointer(out_dir, config.max_to_keep)
    with contextlib.closing(member):
        if member.latest_step() != step:
            member.save(step, training.to_checkpoint(training.unstack(run.state, index)), config)
    run_folder.write_config(out_dir, config)
    # A member of a sweep on arrays in memory is a run on them: its readers must ask for them.
    run_folder.write_dataset_record(out_dir, record)
    lines = [run_folder.member_metrics(line, index)
             for line in run_folder.read_metrics(workdir) if line["step"] <= step]
    run_folder.write_atomically(os.path.join(out_dir, run_folder.METRICS_FILE),
                                "".join(json.dumps(line) + "\n" for line in lines))
