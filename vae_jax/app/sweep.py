r"""Hyperparameter sweeps as one vmapped program: N models trained side by side in one jitted call.

A sweep trains N members, each the model that `training.train_and_evaluate` would train for the
base config with some fields replaced (β, α, the learning rate, free bits, σ, the seed). Their
params, optimizer states, step counters and keys are stacked along a leading *model axis* of size
N, and the single-model update `training.make_train_step` is `jax.vmap`-ed over that axis:

    step_i : (state_i, images, indices_i) -> state_i'          one model, hyperparameters h_i
    vmap(step) : (state[N], h[N], images, indices[N]) -> state'[N]

The swept hyperparameters h are traced values inside the vmapped function: each member's Adam is
``optax.adam(h.learning_rate)``, its KL weight ``objectives.kl_weight_schedule(h.beta, warm-up)``,
its likelihood built with ``h.alpha`` / ``h.gaussian_sigma``, so one compiled program serves every
member. Fields that are not swept stay Python constants, exactly as in a single run. An epoch is
one jitted `lax.scan` over the steps of the vmapped update with the stacked state donated; the
training images (uint8) are on the device once and shared by all members; per-member metrics come
back with a leading model axis (N,). With several devices the model axis is sharded over them.

**Member i computes what a single run computes** (up to float rounding, tested at rtol 1e-5): its
state starts from ``training.create_train_state`` with ``jax.random.key(seed_i)``, its step noise
is ``fold_in(noise_key_i, step)``, and its data order is its own: each epoch every member draws the
permutation ``fold_in(shuffle_key_i, epoch)`` (`training.epoch_batch_indices`), and the vmapped
step gathers member i's batch from the shared images with member i's indices. (A shared order would
save a little gathering but would make a member with seed s differ from the single run with seed
s.) When all members have the same seed they have the same order, and the indices are computed and
gathered once for all of them. The test set is binarised per member with its own eval key, as a
single run does; evaluation runs the members one after another (`lax.map`), so its memory does not
grow with N.

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
  point per member, redrawn every epoch;
- ``members/II/images/``: member II's reconstruction and sample grids, as ``scripts/train.py``
  draws them (`training.write_pictures`);
- after `extract_member` (``scripts/sweep.py --extract``): ``members/II/`` becomes a normal run
  folder (``config.json``, ``metrics.jsonl``, ``checkpoints/STEP/``) that ``scripts/evaluate.py``
  and ``scripts/visualize.py`` read and ``scripts/train.py`` resumes with the member's config.
"""

import contextlib
import functools
import itertools
import json
import math
import os
import shutil
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vae_jax import model as model_lib, objectives
from vae_jax.app import checkpointing, configs, data, run_folder, prng, training
from vae_jax.errors import CheckpointError, ConfigError, TrainingDivergedError

# Fields a sweep may vary: the floats the loss and the optimizer read, and the seed.
FLOAT_FIELDS = ("beta", "alpha", "free_bits", "gaussian_sigma", "learning_rate")
SWEEPABLE_FIELDS = FLOAT_FIELDS + ("seed",)
# Fields that set array shapes: one vmapped program cannot hold members that differ in them.
SHAPE_FIELDS = ("latent_dim", "hidden_dims", "conv_channels", "batch_size", "iwae_samples",
                "dataset", "architecture", "model", "gaussian_scale")
SWEEP_MODES = ("grid", "zip")
SWEEP_FILE = "sweep.json"
MEMBERS_DIR = "members"
RATE_DISTORTION_FILE = "rate_distortion.png"
MODEL_AXIS = "models"

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


def member_configs(config: ml_collections.ConfigDict, sweep: Sweep) -> list:
    """`member_config` of every member, after validating `config` itself."""
    configs.validate(config)
    return [member_config(config, sweep, i) for i in range(sweep.size)]


def hyperparameters(sweep: Sweep) -> Hyperparameters:
    """The swept floats as arrays with the model axis: {field: float32 (N,)} (the seed, which
    only sets the initial state and keys, is not among them)."""
    return {field: jnp.asarray([row[k] for row in sweep.values], jnp.float32)
            for k, field in enumerate(sweep.fields) if field in FLOAT_FIELDS}


class _Overlay:
    """`config` with some fields replaced by (possibly traced) values, for the functions that
    build a model or an optimizer from a config by attribute access."""

    def __init__(self, config: ml_collections.ConfigDict, values: dict[str, Any]):
        self._config, self._values = config, values

    def __getattr__(self, name: str):
        values = self.__dict__["_values"]
        return values[name] if name in values else getattr(self.__dict__["_config"], name)

    __getitem__ = __getattr__


class Components(NamedTuple):
    """What `training.make_train_step` needs for one member."""

    vae: model_lib.VAE
    optimizer: optax.GradientTransformation
    kl_weight: optax.Schedule
    free_bits: float | jax.Array


def member_components(config: ml_collections.ConfigDict, input_shape: Sequence[int],
                      steps_per_epoch: int, hparams: Hyperparameters | None = None) -> Components:
    """The model, optimizer, KL weight schedule and free bits of the run `config` describes, with
    the fields in `hparams` (scalars, traced inside `jax.vmap`) in place of the config's values.

    With ``hparams=None`` these are exactly what `training.train_and_evaluate` builds.
    """
    overlay = _Overlay(config, dict(hparams or {}))
    return Components(model_lib.from_config(overlay, tuple(input_shape)),
                      training.make_optimizer(overlay, steps_per_epoch),
                      objectives.kl_weight_schedule(overlay.beta, config.kl_warmup_steps),
                      overlay.free_bits)


def step_factory(config: ml_collections.ConfigDict, input_shape: Sequence[int],
                 steps_per_epoch: int) -> Callable[[Hyperparameters], Callable]:
    """Returns ``step_for(hparams) -> step``: the single-model `training.make_train_step` of
    `config` with the hyperparameters `hparams` (scalars), for `vmap_train_step`."""

    def step_for(hparams: Hyperparameters) -> Callable:
        parts = member_components(config, input_shape, steps_per_epoch, hparams)
        return training.make_train_step(parts.vae, parts.optimizer, parts.kl_weight,
                                        config.binarize, parts.free_bits, config.objective,
                                        config.iwae_samples)

    return step_for


def vmap_train_step(step_for: Callable[[Hyperparameters], Callable],
                    shared_indices: bool = False) -> Callable:
    """Turns a single-model step into an N-model one.

    `step_for(hparams)` returns a pure ``step(state, images, indices) -> (state, outputs)`` for
    hyperparameters `hparams` (e.g. `step_factory`). The result is

        models_step(states, hparams, images, indices) -> (states, outputs)

    vmapped over the leading model axis of `states` (a `training.TrainState` whose leaves have
    shape (N, ...)), of `hparams` ({field: (N,)}) and of `indices` ((N, batch_size); with
    `shared_indices`, one (batch_size,) row for every member), with `images` (the uint8 training
    set) shared; `outputs` gain the leading axis N.
    """
    def one_model(state, hparams, images, indices):
        return step_for(hparams)(state, images, indices)

    return jax.vmap(one_model, in_axes=(0, 0, None, None if shared_indices else 0))


def _summarize(first_step: jax.Array, metrics: dict[str, jax.Array],
               nonfinite: jax.Array) -> tuple[dict[str, jax.Array], training.Divergence]:
    """Per-step, per-member metrics (num_steps, N) and flags (num_steps, N, 3) → each member's
    means over the steps (N,) and its `training.Divergence` ((N,) steps, (N, 3) terms)."""
    bad = jnp.any(nonfinite, axis=2)
    first = jnp.argmax(bad, axis=0)
    members = jnp.arange(bad.shape[1])
    divergence = training.Divergence(
        jnp.where(bad[first, members], first_step + first + 1, 0), nonfinite[first, members])
    return jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics), divergence


def make_sweep_train_steps(step_for: Callable[[Hyperparameters], Callable], loop: str = "scan",
                           shared_indices: bool = False) -> Callable:
    """Returns ``train_steps(states, hparams, images, batch_indices) -> (states, metrics,
    divergence)``, the N-model counterpart of `training.make_train_steps`.

    `states` is a stacked `training.TrainState` (leading axis N; donated), `hparams` {field: (N,)},
    `images` the uint8 training set on the device, `batch_indices` int32 (num_steps, N,
    batch_size) — member i's rows at [:, i] — or (num_steps, batch_size) with `shared_indices`.
    `metrics` are each member's means over the steps, {name: (N,)} in nats per example;
    `divergence.step` (N,) is each member's first non-finite step (0: none). With ``loop="scan"``
    all steps run in one jitted `lax.scan` of the vmapped step; with ``"step"`` one jitted vmapped
    step per Python iteration (for convolutions on XLA:CPU, as in `training.make_train_steps`).
    """
    models_step = vmap_train_step(step_for, shared_indices)

    if loop == "scan":
        @functools.partial(jax.jit, donate_argnums=0)
        def scanned(states, hparams, images, batch_indices):
            first_step = states.step
            states, (metrics, nonfinite) = jax.lax.scan(
                lambda s, indices: models_step(s, hparams, images, indices), states,
                batch_indices)
            return (states, *_summarize(first_step, metrics, nonfinite))

        return scanned
    if loop != "step":
        raise ConfigError(f"train_loop must be one of {configs.TRAIN_LOOPS[1:]} here, got {loop!r}")

    jitted_step = jax.jit(lambda states, hparams, images, batch_indices, i: models_step(
        states, hparams, images, batch_indices[i]), donate_argnums=0)
    summarize = jax.jit(lambda first_step, outputs: _summarize(
        first_step, *jax.tree.map(lambda *xs: jnp.stack(xs), *outputs)))

    def stepped(states, hparams, images, batch_indices):
        first_step = jnp.copy(states.step)  # `states` is donated to the first step
        outputs = []
        for i in range(batch_indices.shape[0]):
            states, output = jitted_step(states, hparams, images, batch_indices, i)
            outputs.append(output)
        return (states, *summarize(first_step, outputs))

    return stepped


def stack(trees: Sequence[Any]) -> Any:
    """Pytrees of equal structure → one pytree whose leaves have a leading model axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack(tree: Any, index: int) -> Any:
    """Member `index` of a stacked pytree."""
    return jax.tree.map(lambda leaf: leaf[index], tree)


def create_sweep_state(member_cfgs: Sequence[ml_collections.ConfigDict],
                       input_shape: Sequence[int], steps_per_epoch: int) -> training.TrainState:
    """The stacked initial `training.TrainState` of the members: member i's is
    ``training.create_train_state`` of its own model and optimizer with
    ``prng.key(seed_i, prng_impl)``, as a single run starts."""
    states = []
    for config in member_cfgs:
        parts = member_components(config, input_shape, steps_per_epoch)
        states.append(training.create_train_state(
            parts.vae, parts.optimizer, prng.key(config.seed, config.prng_impl)))
    return stack(states)


def member_batch_indices(shuffle_keys: jax.Array, epoch: int | jax.Array, num_examples: int,
                         batch_size: int) -> jax.Array:
    """Each member's `training.epoch_batch_indices` for `epoch`, arranged for the scan:
    shuffle_keys (N,) typed keys → int32 (num_steps, N, batch_size)."""
    per_member = jax.vmap(lambda key: training.epoch_batch_indices(
        key, epoch, num_examples, batch_size))(shuffle_keys)
    return jnp.swapaxes(per_member, 0, 1)


def make_member_evaluate(config: ml_collections.ConfigDict, input_shape: Sequence[int],
                         steps_per_epoch: int) -> Callable:
    """Returns jitted ``evaluate(params, hparams, eval_keys, test_images) -> {name: (N,)}``.

    Member i's test set is ``training.prepare_batch(fold_in(eval_key_i, 0), test_images)`` and
    its metrics `training.make_evaluate` with key ``fold_in(eval_key_i, 1)``, as in a single run;
    the members are evaluated one after another (`lax.map`), so memory does not grow with N.
    """
    def one_member(member):
        params, hparams, eval_key, test_images = member
        vae = member_components(config, input_shape, steps_per_epoch, hparams).vae
        x = training.prepare_batch(jax.random.fold_in(eval_key, 0), test_images, config.binarize)
        return training.make_evaluate(vae)(params, x, jax.random.fold_in(eval_key, 1))

    @jax.jit
    def evaluate(params, hparams, eval_keys, test_images):
        return jax.lax.map(lambda m: one_member((*m, test_images)), (params, hparams, eval_keys))

    return evaluate


# --- The training loop -------------------------------------------------------------------------

def checkpoint_config(config: ml_collections.ConfigDict, sweep: Sweep,
                      image_shape: Sequence[int]) -> ml_collections.ConfigDict:
    """What a sweep checkpoint stores as its config: the base config without the swept fields
    (their base values are not used), plus ``sweep`` (`Sweep.to_json` and the image shape), so
    that resuming with another config or sweep is refused by `checkpointing.Checkpointer`."""
    record = {k: v for k, v in checkpointing.config_to_json(config).items()
              if k not in sweep.fields}
    record["sweep"] = {**sweep.to_json(), "image_shape": list(image_shape)}
    return ml_collections.ConfigDict(record)


def _check_same_sweep(checkpointer: checkpointing.Checkpointer, saved_config, workdir: str) -> None:
    """Raises `CheckpointError` when the newest checkpoint in `workdir` belongs to a single run or
    to another sweep than `saved_config`'s, naming both sweeps. (An unreadable checkpoint is left
    to `Checkpointer.restore_latest`, which moves it aside or reports it.)"""
    step = checkpointer.latest_step()
    if step is None:
        return
    try:
        saved = checkpointer.saved_config(step)
    except Exception:  # pylint: disable=broad-exception-caught
        return  # damaged: restore_latest reports it or falls back to an older checkpoint
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


def make_mesh(num_members: int, num_devices: int = 0) -> jax.sharding.Mesh:
    """A 1-D mesh, axis `MODEL_AXIS`, over which the model axis of N members is split.

    `num_devices` (``config.num_devices``; 0: as many as useful) devices must divide N; with 0,
    the largest count of devices that divides N is used.
    """
    devices = jax.devices()
    if num_devices > len(devices):
        raise ConfigError(f"config.num_devices={num_devices} but JAX sees only {len(devices)} "
                          "device(s)")
    if num_devices and num_members % num_devices:
        raise ConfigError(f"the sweep's {num_members} members must divide evenly over "
                          f"config.num_devices={num_devices} devices")
    count = num_devices or math.gcd(num_members, len(devices))
    return jax.sharding.Mesh(np.array(devices[:count]), (MODEL_AXIS,))


def model_sharding(mesh: jax.sharding.Mesh, axis: int = 0) -> jax.sharding.NamedSharding:
    """Arrays split along dimension `axis` (the model axis) over `mesh`."""
    spec = (None,) * axis + (MODEL_AXIS,)
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """The lines of ``workdir/metrics.jsonl`` (per-member lists), skipping a line cut short."""
    path = os.path.join(workdir, training.METRICS_FILE)
    if not os.path.exists(path):
        return []
    lines = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
    return lines


def member_dir(workdir: str, index: int, size: int) -> str:
    """``workdir/members/II``: member `index`'s folder, numbered with at least two digits."""
    return os.path.join(workdir, MEMBERS_DIR, f"{index:0{max(2, len(str(size - 1)))}d}")


def save_rate_distortion(workdir: str, sweep: Sweep, record: dict[str, Any]) -> str | None:
    """Draws ``workdir/rate_distortion.png`` from a metrics line: test KL (rate) against test
    reconstruction loss (distortion), one point per member labelled with its values. Returns the
    path, or None when matplotlib is missing."""
    try:
        from vae_jax.app import plots  # pylint: disable=import-outside-toplevel
        points = [plots.RatePoint(rate, distortion, sweep.label(i)) for i, (rate, distortion)
                  in enumerate(zip(record["test_kl"], record["test_reconstruction_loss"]))]
        return plots.save_rate_distortion(
            os.path.join(workdir, RATE_DISTORTION_FILE), points,
            title=f"sweep of {', '.join(sweep.fields)}: test set, epoch {record['epoch']}")
    except ImportError as error:
        print(f"warning: no rate-distortion plot ({error})", flush=True)
        return None


def _format_member(label: str, train: dict[str, float], test: dict[str, float]) -> str:
    def terms(t):
        return (f"{t['neg_elbo']:7.2f} (rec {t['reconstruction_loss']:6.2f}, "
                f"kl {t['kl']:5.2f})")
    return f"    {label:<36s} train {terms(train)}  test {terms(test)}"


def _check_finite(divergence: training.Divergence, sweep: Sweep, epoch: int,
                  last_saved: int | None) -> None:
    """Raises `TrainingDivergedError` naming the members whose steps went non-finite."""
    steps, bad = jax.device_get(divergence)
    members = [i for i in range(sweep.size) if steps[i]]
    if not members:
        return
    first = min(int(steps[i]) for i in members)
    terms = tuple(name for k, name in enumerate(training.CHECKED_TERMS)
                  if any(bad[i][k] for i in members))
    who = "; ".join(f"member {i} ({sweep.label(i)}) at step {int(steps[i])}" for i in members)
    kept = run_folder.kept(last_saved)
    raise TrainingDivergedError(
        f"sweep training diverged in epoch {epoch}: {who}: non-finite {', '.join(terms)} (NaN or "
        f"Inf); stopped without saving, {kept}; drop those values from the sweep or lower the "
        "learning rate", step=first, epoch=epoch, terms=terms)


def train_sweep(config: ml_collections.ConfigDict, sweep: Sweep, workdir: str) -> dict[str, Any]:
    """Trains every member of `sweep` (on the base `config`) in one vmapped program, resuming
    from the newest intact sweep checkpoint in `workdir`.

    Every epoch, as `training.train_and_evaluate` does for one model: each member draws its data
    order and trains (one jitted `lax.scan` over the epoch for all members; a non-finite step of
    any member stops the sweep with `TrainingDivergedError` naming it, before anything is saved);
    evaluates each member's single-sample test ELBO; appends one line of per-member lists to
    ``metrics.jsonl``; draws the rate–distortion plot and each member's picture grids; and every
    `save_every_epochs` epochs and after the last one saves an Orbax checkpoint of the stacked
    state. A resumed sweep drops the metrics lines after its checkpoint and redoes those epochs.
    ``config.num_devices`` (0: as many as divide N) devices share the model axis. Returns the
    last metrics line (lists of N values), or {step, epoch} when there was nothing to train.
    Like a single run, it holds `workdir`'s writer lock and checks what it writes first
    (`vae_jax.app.run_folder`).
    """
    cfgs = member_configs(config, sweep)
    with run_folder.lock(workdir):
        return _train_sweep(config, cfgs, sweep, workdir)


def _train_sweep(config: ml_collections.ConfigDict, cfgs: list, sweep: Sweep,
                 workdir: str) -> dict[str, Any]:
    run_folder.check_writable(workdir)
    dataset, steps_per_epoch = training.load_training_data(config)
    num_train = len(dataset.train_images)
    image_shape = dataset.image_shape
    mesh = make_mesh(sweep.size, config.get("num_devices", 0))
    sharded, replicated = model_sharding(mesh), jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec())

    hparams = jax.device_put(hyperparameters(sweep), sharded)
    seeds = {c.seed for c in cfgs}
    shared_order = len(seeds) == 1
    saved_config = checkpoint_config(config, sweep, image_shape)
    checkpointer = checkpointing.Checkpointer(os.path.join(workdir, training.CHECKPOINT_DIR),
                                              config.max_to_keep)
    with contextlib.closing(checkpointer):
        _check_same_sweep(checkpointer, saved_config, workdir)
        state = jax.device_put(create_sweep_state(cfgs, image_shape, steps_per_epoch), sharded)
        training.check_free_space(workdir, training.to_checkpoint(state), config.max_to_keep)
        restored = checkpointer.restore_latest(training.to_checkpoint(state), saved_config)
        last_saved = None
        if restored is not None:
            last_saved, tree = restored
            state = training.from_checkpoint(tree, config.prng_impl)
            print(f"Resuming the sweep from the checkpoint at step {last_saved} (epoch "
                  f"{last_saved // steps_per_epoch}) in {checkpointer.directory}", flush=True)
        training.truncate_metrics(os.path.join(workdir, training.METRICS_FILE), last_saved or 0)
        training.write_atomically(os.path.join(workdir, SWEEP_FILE), json.dumps(
            {**sweep.to_json(), "labels": [sweep.label(i) for i in range(sweep.size)],
             "members": [os.path.relpath(member_dir(workdir, i, sweep.size), workdir)
                         for i in range(sweep.size)],
             "config": checkpointing.config_to_json(config)}, indent=2))
        start_epoch = int(state.step[0]) // steps_per_epoch
        if start_epoch >= config.num_epochs:
            print(f"Already trained {start_epoch} epochs; nothing to do (raise --config.num_epochs "
                  "to train further).", flush=True)
            return {"step": int(state.step[0]), "epoch": start_epoch}

        train_images = jax.device_put(dataset.train_images, replicated)
        test_images = jax.device_put(dataset.test_images, replicated)
        data.check_unit_interval(data.to_unit_interval(test_images),
                                 f"the {config.dataset!r} test set")
        keys = jax.vmap(training.RunKeys.from_root)(state.key)
        run_keys = [training.RunKeys.from_root(prng.key(c.seed, c.prng_impl))
                    for c in cfgs]
        train_steps = make_sweep_train_steps(step_factory(config, image_shape, steps_per_epoch),
                                             training.resolve_train_loop(config), shared_order)
        evaluate = make_member_evaluate(config, image_shape, steps_per_epoch)
        indices_fn = jax.jit(member_batch_indices, static_argnums=(2, 3))
        indices_sharding = (replicated if shared_order else model_sharding(mesh, axis=1))
        pictures_x = jax.jit(lambda key, images: training.prepare_batch(
            jax.random.fold_in(key, 0), images, config.binarize)[:32])
        kl_weights = [objectives.kl_weight_schedule(c.beta, c.kl_warmup_steps) for c in cfgs]
        vaes = [member_components(c, image_shape, steps_per_epoch).vae for c in cfgs]

        record: dict[str, Any] = {}
        for epoch in range(start_epoch + 1, config.num_epochs + 1):
            start = time.perf_counter()
            if shared_order:
                indices = training.epoch_batch_indices(run_keys[0].shuffle, epoch, num_train,
                                                       config.batch_size)
            else:
                indices = indices_fn(keys.shuffle, epoch, num_train, config.batch_size)
            indices = jax.device_put(indices, indices_sharding)
            with jax.debug_nans(config.debug_nans), jax.disable_jit(config.debug_nans):
                state, train, divergence = train_steps(state, hparams, train_images, indices)
            _check_finite(divergence, sweep, epoch, last_saved)
            test = evaluate(state.params, hparams, keys.eval, test_images)
            train, test = jax.device_get((train, test))
            seconds = time.perf_counter() - start
            step = int(state.step[0])

            record = {"step": step, "epoch": epoch,
                      **{f"train_{k}": [float(v) for v in train[k]] for k in train},
                      **{f"test_{k}": [float(v) for v in test[k]] for k in test},
                      "kl_weight": [float(w(step - 1)) for w in kl_weights],
                      "epoch_time_s": round(seconds, 3)}
            kept = run_folder.kept(last_saved)
            with run_folder.write_errors(f"epoch {epoch}'s metrics and pictures", kept):
                with open(os.path.join(workdir, training.METRICS_FILE), "a",
                          encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
                save_rate_distortion(workdir, sweep, record)
                for i in range(sweep.size):
                    training.write_pictures(member_dir(workdir, i, sweep.size), epoch, vaes[i],
                                            unstack(state.params, i),
                                            pictures_x(run_keys[i].eval, test_images),
                                            jax.random.fold_in(run_keys[i].eval, 2))
            if epoch % config.save_every_epochs == 0 or epoch == config.num_epochs:
                checkpointer.save(step, training.to_checkpoint(state), saved_config)
                last_saved = step
            examples = sweep.size * steps_per_epoch * config.batch_size
            print(f"epoch {epoch:3d}/{config.num_epochs}  step {step:6d}  {sweep.size} models  "
                  f"{seconds:6.2f} s ({examples / seconds:,.0f} model-examples/s)", flush=True)
            for i in range(sweep.size):
                print(_format_member(f"[{i}] {sweep.label(i)}",
                                     {k: train[k][i] for k in train},
                                     {k: test[k][i] for k in test}), flush=True)
        return record


# --- Members as single runs --------------------------------------------------------------------

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
    from vae_jax.app import runs  # pylint: disable=import-outside-toplevel

    step = runs.resolve_step(workdir, step, trainer="scripts/sweep.py --sweep=...")
    checkpointer = checkpointing.Checkpointer(os.path.join(workdir, training.CHECKPOINT_DIR),
                                              read_only=True)
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
        template = jax.eval_shape(lambda: training.to_checkpoint(
            create_sweep_state(members, image_shape, 1)))
        tree = checkpointer.restore(step, template, ml_collections.ConfigDict(saved))
    state = training.from_checkpoint(tree, config.prng_impl)
    return SweepRun(step, config, sweep, members, image_shape, state)


def extract_member(workdir: str, index: int, out_dir: str | None = None,
                   step: int | None = None) -> str:
    """Writes member `index` of the sweep in `workdir` as a ``scripts/train.py`` run folder.

    From sweep checkpoint `step` (None: the latest), writes to `out_dir` (default
    ``workdir/members/II``): ``checkpoints/STEP/`` holding `training.to_checkpoint` of the
    member's state and its own config (the base config with its swept values), ``config.json``,
    and ``metrics.jsonl`` with the member's values of the sweep's lines up to STEP (in the format
    of ``scripts/train.py``; epoch_time_s is the whole sweep's). ``scripts/evaluate.py`` and
    ``scripts/visualize.py`` read the folder, and ``scripts/train.py`` with the member's config
    resumes it. Extracting the same step again changes nothing. Returns the folder. Holds the
    member folder's writer lock (`vae_jax.app.run_folder`) while it writes; reads the sweep's
    checkpoints read-only.
    Raises `ConfigError` for an index out of range and `CheckpointError` for a missing sweep.
    """
    run = restore_sweep(workdir, step)
    step, sweep = run.step, run.sweep
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < sweep.size:
        raise ConfigError(f"member index must be an integer in [0, {sweep.size - 1}], got "
                          f"{index!r}")
    config = run.members[index]
    default_dir = member_dir(workdir, index, sweep.size)
    out_dir = out_dir or default_dir
    with run_folder.lock(out_dir):
        run_folder.check_writable(out_dir)
        _write_member(workdir, run, index, config, out_dir, default_dir)
    return out_dir


def _write_member(workdir: str, run: SweepRun, index: int, config: ml_collections.ConfigDict,
                  out_dir: str, default_dir: str) -> None:
    step = run.step
    if os.path.abspath(out_dir) != os.path.abspath(default_dir) and os.path.isdir(
            os.path.join(default_dir, "images")):
        shutil.copytree(os.path.join(default_dir, "images"), os.path.join(out_dir, "images"),
                        dirs_exist_ok=True)

    member = checkpointing.Checkpointer(os.path.join(out_dir, training.CHECKPOINT_DIR),
                                        config.max_to_keep)
    with contextlib.closing(member):
        if member.latest_step() != step:
            member.save(step, training.to_checkpoint(unstack(run.state, index)), config)
    training.write_atomically(os.path.join(out_dir, "config.json"), config.to_json(indent=2))
    lines = [{k: v[index] if isinstance(v, list) else v for k, v in line.items()}
             for line in read_metrics(workdir) if line["step"] <= step]
    training.write_atomically(os.path.join(out_dir, training.METRICS_FILE),
                              "".join(json.dumps(line) + "\n" for line in lines))
