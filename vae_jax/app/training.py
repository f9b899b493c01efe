"""The one training engine: a jitted Optax step whose hyperparameters are arguments, and the loop
around it that evaluates, checkpoints with Orbax, logs and draws pictures.

**One step, one loop, one or many models.** `make_train_step` is the update of *one* model:

    step(state, hparams, images, indices) -> (state, (metrics, nonfinite))

where `hparams` holds the hyperparameters that are arguments rather than constants
(`vae_jax.app.builders.HYPERPARAMETERS`: β, α, free bits, σ, the learning rate). A single run
passes ``{}`` (its config's values are Python constants); a sweep passes each member's values and
`jax.vmap`s the same step over a leading *model axis* of the state. `fit` is the loop for both:
input pipelines, the progress bar, devices and processes, the NaN guard, evaluation, metrics,
pictures, checkpoints and resume are the same code whichever `Models` it trains.
`train_and_evaluate` (one run) and `vae_jax.app.sweep.train_sweep` (N models) only say what to
train and where.

**Speed by design.** The uint8 training images live on the device (or are streamed in chunks:
`vae_jax.app.input_pipeline`); each call of `train_steps` runs many steps inside one `lax.scan`
(gathering, scaling and binarising batches on the device), the training state is donated, and
every call has the same shapes, so nothing recompiles after the first epoch and no batch crosses
from the host.

**Randomness is a function of (seed, step) alone**: the key of step s is ``fold_in(noise_key, s)``
and the data order of epoch e is a permutation drawn from ``fold_in(shuffle_key, e)``
(`builders.RunKeys`). A checkpoint therefore holds everything a resumed run needs to continue
exactly, and sweep member i computes what the single run of its config computes.

**NaN guard.** Every step records whether its reconstruction term, KL term and gradient were
finite; the host reads the first bad step once per jitted call and stops with
`TrainingDivergedError` before anything of the bad state is evaluated or saved.
"""

import contextlib
import functools
import json
import os
import sys
import time
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vae_jax import corruption, hierarchical, iwae, model as model_lib, objectives
from vae_jax.app import (builders, checkpointing, configs, data, distributed, evaluation,
                         input_pipeline, prng, run_folder, summaries)
from vae_jax.app.builders import RunKeys  # pylint: disable=unused-import  (re-exported)
from vae_jax.errors import CheckpointError, ConfigError, TrainingDivergedError

CHECKED_TERMS = ("reconstruction", "KL", "gradient")  # the order of `Divergence.terms`
PICTURE_COUNT = 8  # columns of the reconstruction grid; 4 rows of inputs and 4 of reconstructions
DENOISING_PICTURE_COUNT = 16  # denoising runs: 2 blocks of noisy / denoised / clean rows of 8


class TrainState(NamedTuple):
    """Everything that changes during training. `key` is the run's root key; it never changes.
    In a sweep every leaf has a leading model axis N."""

    params: Any
    opt_state: optax.OptState
    step: jax.Array  # int32 scalar: optimizer steps taken
    key: jax.Array  # typed PRNG key


class Divergence(NamedTuple):
    """Where a call of `train_steps` first went non-finite (with a leading model axis N in a
    sweep).

    Attributes:
      step: int32, the 1-based optimizer step whose reconstruction term, KL term or gradient was
        NaN or ±inf first; 0 when every step was finite.
      terms: bool (3,), which of `CHECKED_TERMS` were not finite at that step.
    """

    step: jax.Array
    terms: jax.Array


def reported_terms(terms: objectives.ELBOTerms) -> dict[str, jax.Array]:
    """ELBO terms → the positive losses we report, in nats: neg_elbo = reconstruction_loss + kl."""
    return {"neg_elbo": -terms.elbo, "reconstruction_loss": -terms.reconstruction, "kl": terms.kl}


def prepare_batch(key: jax.Array, images_uint8: jax.Array, binarize: bool) -> jax.Array:
    """uint8 images → float32 in [0, 1], dynamically binarised with `key` when `binarize`."""
    return data.prepare_batch(key, images_uint8, binarize)


def make_loss_fn(vae: model_lib.VAE, objective: str = "elbo", free_bits: Any = 0.0,
                 iwae_samples: int = 1, code_l1: Any = 0.0,
                 iwae_gradient: str = "iwae") -> Callable:
    """Returns ``loss_fn(params, x, key, beta, x_input=None) -> (loss, ELBOTerms of batch
    means)`` for `jax.grad` with ``has_aux=True``: `objectives.loss` (the β-weighted ELBO with
    `free_bits`, and the L1 penalty `code_l1` on a plain autoencoder's code) when `objective` is
    "elbo", `iwae.iwae_loss` with K = `iwae_samples` and the gradient estimator `iwae_gradient`
    (β unused) when "iwae". `x_input`, when
    given, is the encoder's input (a corrupted x: denoising); the loss scores the clean x.
    A two-layer model (`vae_jax.hierarchical.TwoLayerVAE`) minimises `hierarchical.loss`, the
    ELBO or, with "iwae", the K-sample bound (its config refuses β, free bits, codes and
    corruption: `configs.validate`)."""
    if isinstance(vae, hierarchical.TwoLayerVAE):
        num_samples = iwae_samples if objective == "iwae" else 1
        return lambda params, x, key, beta, x_input=None: hierarchical.loss(
            vae, params, x, key, num_samples)
    if objective == "elbo":
        return lambda params, x, key, beta, x_input=None: objectives.loss(
            vae, params, x, key, beta, free_bits, x_input, code_l1)
    if objective == "iwae":
        return lambda params, x, key, beta, x_input=None: iwae.iwae_loss(
            vae, params, x, key, iwae_samples, x_input, iwae_gradient)
    raise ConfigError(f"objective must be one of {builders.OBJECTIVES}, got {objective!r}")


def make_train_step(config: ml_collections.ConfigDict, input_shape: Sequence[int],
                    steps_per_epoch: int) -> Callable:
    """Returns the pure, unjitted one-model update of `config`'s run,

        step(state, hparams, images, indices) -> (state, (metrics, nonfinite)),

    on the examples ``images[indices]`` (uint8 images, int32 (batch_size,) indices). `hparams`
    maps fields of `builders.HYPERPARAMETERS` to scalars that replace the config's values ({} for
    the config's own run): the model, optimizer, KL weight and free bits are
    `builders.components` of them, built inside the step, so a vmapped step trains one model per
    row of `hparams`. The step draws its binarisation and ε from ``fold_in(noise_key,
    state.step)``, minimises `make_loss_fn` with β = kl_weight(step), and returns the loss,
    neg_elbo, reconstruction_loss and kl of the batch in nats per example, and bool (3,) flags of
    a non-finite reconstruction term, KL term or gradient (`CHECKED_TERMS`).

    Denoising (``config.corruption`` not "none"): the encoder reads `corrupt_batch` of the
    (binarised) batch, drawn from ``fold_in(corruption_key, state.step)`` (`RunKeys.corruption`),
    and the loss scores the clean batch. Sparse codes (``config.code_l1`` non-zero, or swept):
    the loss adds the L1 penalty and the metrics add ``code_l1_norm``, the batch mean of
    Σ_d |z_d| (`objectives.code_l1_norm`).
    """
    input_shape = tuple(input_shape)

    def step(state: TrainState, hparams: builders.Hyperparameters, train_images: jax.Array,
             indices: jax.Array):
        parts = builders.components(config, input_shape, steps_per_epoch, hparams)
        code_l1 = builders.hyperparameter(config, hparams, "code_l1")
        loss_fn = make_loss_fn(parts.vae, config.objective, parts.free_bits, config.iwae_samples,
                               code_l1, config.iwae_gradient)
        keys = RunKeys.from_root(state.key)
        binarize_key, elbo_key = jax.random.split(jax.random.fold_in(keys.noise, state.step))
        x = prepare_batch(binarize_key, train_images[indices], config.binarize)
        x_input = corrupt_batch(config, hparams, keys.corruption, state.step, x)
        (loss, means), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, x, elbo_key, parts.kl_weight(state.step), x_input)
        updates, opt_state = parts.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # One sum per gradient: NaN or ±∞ anywhere makes it non-finite (as would a finite sum
        # past 3e38), and a sum reads the gradient once where jnp.isfinite then jnp.all twice.
        grads_finite = jnp.isfinite(sum(jnp.sum(g) for g in jax.tree.leaves(grads)))
        nonfinite = ~jnp.stack([jnp.isfinite(means.reconstruction), jnp.isfinite(means.kl),
                                grads_finite])
        metrics = {"loss": loss, **reported_terms(means)}
        if "code_l1" in hparams or config.code_l1 != 0:
            metrics["code_l1_norm"] = jnp.mean(objectives.code_l1_norm(
                parts.vae, state.params, x if x_input is None else x_input))
        return TrainState(params, opt_state, state.step + 1, state.key), (metrics, nonfinite)

    return step


def corrupt_batch(config: ml_collections.ConfigDict, hparams: builders.Hyperparameters,
                  corruption_key: jax.Array, step: jax.Array, x: jax.Array) -> jax.Array | None:
    """The encoder's input of training step `step`: `corruption.corrupt` of the float batch x
    (B, *shape) by ``config.corruption`` at the level `builders.hyperparameter` gives, with the
    key ``fold_in(corruption_key, step)`` (a function of the run's seed and the step alone, so a
    resumed run draws what an uninterrupted one does); None for ``corruption="none"`` (the
    encoder reads x, and nothing is drawn)."""
    if config.corruption == "none":
        return None
    level = builders.hyperparameter(config, hparams, "corruption_level")
    return corruption.corrupt(jax.random.fold_in(corruption_key, step), x, config.corruption,
                              level)


def _summarize(first_step: jax.Array, metrics: dict[str, jax.Array],
               nonfinite: jax.Array) -> tuple[dict[str, jax.Array], Divergence]:
    """Per-step metrics (num_steps, *models) and non-finite flags (num_steps, *models, 3) →
    their means over the steps (*models) and the `Divergence` of each model's first bad step;
    `models` is () for one model, (N,) for a sweep."""
    bad = jnp.any(nonfinite, axis=-1)
    first = jnp.argmax(bad, axis=0)
    bad_first = jnp.take_along_axis(bad, first[None], axis=0)[0]
    terms = jnp.take_along_axis(nonfinite, first[None, ..., None], axis=0)[0]
    divergence = Divergence(jnp.where(bad_first, first_step + first + 1, 0), terms)
    return jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics), divergence


def make_train_steps(config: ml_collections.ConfigDict, input_shape: Sequence[int],
                     steps_per_epoch: int, loop: str | None = None, models: bool = False,
                     shared_indices: bool = False, out_shardings: Any = None) -> Callable:
    """Returns ``train_steps(state, hparams, images, batch_indices) -> (state, metrics,
    divergence)``: `make_train_step` applied once per row of `batch_indices`.

    One model (``models=False``): `batch_indices` is int32 (num_steps, batch_size), `hparams`
    usually {}. N models (``models=True``, a sweep): the step is `jax.vmap`-ed over the leading
    model axis of `state` and `hparams` ({field: (N,)}), with `images` shared, and
    `batch_indices` is (num_steps, N, batch_size) — member i's rows at [:, i] — or, with
    `shared_indices`, (num_steps, batch_size) for every member. `metrics` are the means over the
    steps of loss (−objective), neg_elbo, reconstruction_loss and kl, in nats per example (shape
    (N,) per metric for N models); `divergence` names each model's first step whose
    reconstruction term, KL term or gradient was not finite. Steps after it still run (on NaNs):
    the caller must discard the state. The incoming `state` is donated.

    `loop` chooses how the steps run (None: `builders.resolve_train_loop`): "scan", all of them
    in one jitted `lax.scan` (one dispatch per call: the fastest for MLPs); or "step", one
    jitted step per Python iteration (XLA:CPU runs convolutions inside a loop body several times
    slower than on their own). Both give the same results. `out_shardings` (state, metrics and
    divergence) lays out the results across devices (None: as XLA chooses).
    """
    loop = loop or builders.resolve_train_loop(config)
    step = make_train_step(config, input_shape, steps_per_epoch)
    if models:
        step = jax.vmap(step, in_axes=(0, 0, None, None if shared_indices else 0))
    jit = functools.partial(jax.jit, donate_argnums=0,
                            **({} if out_shardings is None else {"out_shardings": out_shardings}))

    if loop == "scan":
        @jit
        def scanned_steps(state: TrainState, hparams, train_images: jax.Array,
                          batch_indices: jax.Array):
            first_step = state.step
            state, (metrics, nonfinite) = jax.lax.scan(
                lambda s, indices: step(s, hparams, train_images, indices), state, batch_indices)
            return (state, *_summarize(first_step, metrics, nonfinite))

        return scanned_steps
    if loop != "step":
        raise ConfigError(f"train_loop must be one of {builders.TRAIN_LOOPS[1:]} here, got "
                          f"{loop!r}")

    shardings = {} if out_shardings is None else {"out_shardings": out_shardings[:2]}
    jitted_step = jax.jit(lambda state, hparams, images, batch_indices, i: step(
        state, hparams, images, batch_indices[i]), donate_argnums=0, **shardings)
    shardings = {} if out_shardings is None else {"out_shardings": out_shardings[1:]}
    summarize = jax.jit(lambda first_step, outputs: _summarize(
        first_step, *jax.tree.map(lambda *xs: jnp.stack(xs), *outputs)), **shardings)

    def stepped(state: TrainState, hparams, train_images: jax.Array, batch_indices: jax.Array):
        first_step = jnp.copy(state.step)  # `state` is donated to the first step
        outputs = []
        for i in range(batch_indices.shape[0]):
            state, output = jitted_step(state, hparams, train_images, batch_indices, i)
            outputs.append(output)
        return (state, *summarize(first_step, outputs))

    return stepped


@functools.partial(jax.jit, static_argnums=(2, 3))
def epoch_batch_indices(shuffle_key: jax.Array, epoch: jax.Array, num_examples: int,
                        batch_size: int) -> jax.Array:
    """A fresh permutation for `epoch`, cut into (num_examples // batch_size, batch_size) indices.

    The last incomplete batch is dropped, so every step has the same shape.
    """
    steps = num_examples // batch_size
    order = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), num_examples)
    return order[: steps * batch_size].reshape(steps, batch_size).astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=(2, 3))
def member_batch_indices(shuffle_keys: jax.Array, epoch: int | jax.Array, num_examples: int,
                         batch_size: int) -> jax.Array:
    """Each model's `epoch_batch_indices` for `epoch`, arranged for the scan: shuffle_keys (N,)
    typed keys → int32 (num_steps, N, batch_size)."""
    per_model = jax.vmap(lambda key: epoch_batch_indices(
        key, epoch, num_examples, batch_size))(shuffle_keys)
    return jnp.swapaxes(per_model, 0, 1)


def create_train_state(vae: model_lib.VAE, optimizer: optax.GradientTransformation,
                       root_key: jax.Array) -> TrainState:
    """The state before the first step: params from the root key's `RunKeys.init`."""
    params = vae.init(RunKeys.from_root(root_key).init)
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32), root_key)


def initial_state(config: ml_collections.ConfigDict, input_shape: Sequence[int],
                  steps_per_epoch: int) -> TrainState:
    """`create_train_state` of the model and optimizer of `config`, from its seed."""
    parts = builders.components(config, input_shape, steps_per_epoch)
    return create_train_state(parts.vae, parts.optimizer, builders.root_key(config))


def stack(trees: Sequence[Any]) -> Any:
    """Pytrees of equal structure → one pytree whose leaves have a leading model axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack(tree: Any, index: int) -> Any:
    """Model `index` of a stacked pytree."""
    return jax.tree.map(lambda leaf: leaf[index], tree)


def to_checkpoint(state: TrainState) -> dict[str, Any]:
    """The pytree a checkpoint stores: the state, with the typed key as its raw key data."""
    return {"params": state.params, "opt_state": state.opt_state, "step": state.step,
            "key": jax.random.key_data(state.key)}


def from_checkpoint(tree: dict[str, Any], prng_impl: str) -> TrainState:
    """Inverse of `to_checkpoint`; `prng_impl` is the run's `config.prng_impl`."""
    key = prng.wrap_key_data(tree["key"], prng_impl)
    return TrainState(tree["params"], tree["opt_state"], tree["step"], key)


def load_training_data(config: ml_collections.ConfigDict, dataset: data.ImageDataset | None = None
                       ) -> tuple[data.ImageDataset, int]:
    """`dataset`, or when None the TFDS dataset `config` names, and its steps per epoch (the last
    incomplete batch dropped), without the training examples of ``config.exclude_labels``
    (`data.exclude_labels`); raises `ConfigError` when one batch is larger than the training
    split, when an excluded label is absent, or when ``config.dataset`` is not ``dataset.name`` (the run records one name), and
    `DataError` when `dataset`'s images are not uint8 (N, H, W, C) with a test split of the same
    image shape."""
    if dataset is None:
        dataset = data.load_image_dataset(config.dataset, config.data_dir, config.manual_dir)
    else:
        data.check_in_memory(dataset)
        if config.dataset != dataset.name:
            raise ConfigError(
                f"config.dataset={config.dataset!r} but the arrays in memory are the "
                f"ImageDataset {dataset.name!r}: set config.dataset={dataset.name!r} (the run "
                f"records one name), or name the ImageDataset {config.dataset!r}")
    dataset = data.exclude_labels(dataset, config.exclude_labels)
    num_train = len(dataset.train_images)
    if config.batch_size > num_train:
        raise ConfigError(f"config.batch_size={config.batch_size} is larger than the "
                          f"{num_train} training examples of {config.dataset!r}")
    return dataset, num_train // config.batch_size


# --- What one program trains -------------------------------------------------------------------

class Models(NamedTuple):
    """The models one call of `fit` trains: one run, or the N members of a sweep.

    Attributes:
      config: the config every model shares (a sweep's base config: the fields in `hparams` and
        the seed may differ per model).
      members: each model's own config (one for a run): its initial state, keys and KL weight.
      hparams: {field: float32 (N,)} of the `builders.HYPERPARAMETERS` that differ between the
        models, passed to the step as arguments; {} for a run.
      stacked: False for one model without a model axis (a run), True for N stacked models.
      labels: each model in words ("" for a run), for the log and error messages.
      folders: where each model's picture grids go (``folder/images/``).
      saved_config: the config that checkpoints store and a resume must match.
      writes: JSON files written once the run is set up, {path: text} (config.json, sweep.json).
      logdirs: where each model's TensorBoard event files go (`vae_jax.app.summaries`).
    """

    config: ml_collections.ConfigDict
    members: tuple[ml_collections.ConfigDict, ...]
    hparams: dict[str, np.ndarray]
    stacked: bool
    labels: tuple[str, ...]
    folders: tuple[str, ...]
    saved_config: ml_collections.ConfigDict
    writes: dict[str, str]
    logdirs: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def shared_order(self) -> bool:
        """Whether every model draws the same data order (one seed): indices gathered once."""
        return len({c.seed for c in self.members}) == 1

    def keys(self) -> list[RunKeys]:
        return [builders.run_keys(c) for c in self.members]


def one_run(config: ml_collections.ConfigDict, workdir: str) -> Models:
    """The `Models` of a single run of `config` in `workdir`."""
    return Models(config, (config,), {}, False, ("",), (workdir,), config,
                  {run_folder.CONFIG_FILE: config.to_json(indent=2)},
                  (run_folder.tensorboard_dir(workdir),))


class _Layout(NamedTuple):
    """How the arrays of one program are laid out over the devices."""

    mesh: jax.sharding.Mesh
    state: jax.sharding.Sharding  # params, optimizer state, step, key
    indices: jax.sharding.Sharding  # one chunk of batch indices
    replicated: jax.sharding.Sharding  # images, test set, metrics


def _layout(models: Models) -> _Layout:
    """One run: data-parallel, the batch split over the devices (`distributed.make_mesh`); N
    models: the model axis split over the devices (`distributed.make_model_mesh`)."""
    P = jax.sharding.PartitionSpec  # pylint: disable=invalid-name
    named = jax.sharding.NamedSharding
    if not models.stacked:
        mesh = distributed.make_mesh(models.config.num_devices)
        if models.config.batch_size % mesh.size:
            raise ConfigError(f"config.batch_size={models.config.batch_size} must divide evenly "
                              f"over the {mesh.size} devices of the data-parallel mesh (or set "
                              "--config.num_devices)")
        replicated, batch_sharded = distributed.data_parallel_shardings(mesh)
        return _Layout(mesh, replicated, batch_sharded, replicated)
    mesh = distributed.make_model_mesh(models.size, models.config.num_devices)
    axis = mesh.axis_names[0]
    indices = named(mesh, P()) if models.shared_order else named(mesh, P(None, axis))
    return _Layout(mesh, named(mesh, P(axis)), indices, named(mesh, P()))


def _check_finite(models: Models, divergence: Divergence, epoch: int,
                  last_saved: int | None) -> None:
    """Raises `TrainingDivergedError` when `divergence` (from `train_steps`) names a step."""
    steps, bad = distributed.to_host(divergence)
    steps, bad = np.atleast_1d(steps), np.reshape(bad, (-1, len(CHECKED_TERMS)))
    diverged = [i for i in range(len(steps)) if steps[i]]
    if not diverged:
        return
    first = min(int(steps[i]) for i in diverged)
    terms = tuple(name for k, name in enumerate(CHECKED_TERMS) if any(bad[i][k] for i in diverged))
    kept = run_folder.kept(last_saved)
    if not models.stacked:
        raise TrainingDivergedError(
            f"training diverged at step {first} (epoch {epoch}): non-finite {', '.join(terms)} "
            f"(NaN or Inf); stopped without saving, {kept}; lower --config.learning_rate, or run "
            "with --config.debug_nans=True to find the operation", step=first, epoch=epoch,
            terms=terms)
    who = "; ".join(f"member {i} ({models.labels[i]}) at step {int(steps[i])}" for i in diverged)
    raise TrainingDivergedError(
        f"sweep training diverged in epoch {epoch}: {who}: non-finite {', '.join(terms)} (NaN or "
        f"Inf); stopped without saving, {kept}; drop those values from the sweep or lower the "
        "learning rate", step=first, epoch=epoch, terms=terms)


def _format_terms(terms: dict[str, float]) -> str:
    return (f"neg_elbo {terms['neg_elbo']:7.2f} (rec {terms['reconstruction_loss']:6.2f}, "
            f"kl {terms['kl']:5.2f})")


def pictures(vae: model_lib.VAE, params, test_x: jax.Array, key: jax.Array,
             count: int = PICTURE_COUNT) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(inputs, reconstructions, samples) of the epoch's picture grids: the first 4·`count` test
    images, the decoder means at their posterior means, and the decoder means of 64 draws
    z ~ p(z) from `key`, the model's prior (N(0, I) by default, a learned prior as trained so
    far). (A denoising run adds `denoising_pictures`.)"""
    inputs = test_x[: count * 4]
    mean, _ = vae.encode(params, inputs)
    recons = vae.observation_mean(vae.decode(params, mean))
    if isinstance(vae, hierarchical.TwoLayerVAE):  # ancestral: z₂ ~ N(0, I), z₁ ~ p(z₁|z₂)
        z = hierarchical.sample(vae, params, key, 64)
    else:
        z = vae.prior.sample(model_lib.prior_params(vae, params), key, 64, vae.latent_dim)
    return inputs, recons, vae.observation_mean(vae.decode(params, z))


def denoising_pictures(vae: model_lib.VAE, params, test_x: jax.Array, key: jax.Array, kind: str,
                       level, count: int = DENOISING_PICTURE_COUNT
                       ) -> tuple[jax.Array, jax.Array]:
    """(noisy, denoised) of the epoch's denoising picture (`run_folder.picture_grids`): the first
    `count` test images corrupted by `kind` at `level` with `key` (`corruption.corrupt`), and the
    decoder means at the encoder means of those noisy images; the clean row is ``test_x[:count]``
    (the inputs of `pictures`)."""
    noisy = corruption.corrupt(key, test_x[:count], kind, level)
    mean, _ = vae.encode(params, noisy)
    return noisy, vae.observation_mean(vae.decode(params, mean))


def _make_evaluate(models: Models, input_shape: tuple[int, ...],
                   replicated: jax.sharding.Sharding) -> Callable:
    """Returns jitted ``evaluate(params, hparams, test_data, eval_keys) -> (test metrics,
    pictures)``: `evaluation.elbo_means` and `pictures` of each model on its test set.

    One model: `test_data` is its test set, prepared once (`evaluation.test_set`). N models:
    `test_data` is the uint8 test images, and each model's test set is prepared with its own eval
    key inside a `lax.map` over the models, one after another, so memory does not grow with N.
    """
    config = models.config

    def one(params, hparams, test_x, eval_key):
        vae = builders.model(config, input_shape, hparams)
        grids = pictures(vae, params, test_x, jax.random.fold_in(eval_key, 2))
        if config.corruption != "none":  # noisy / denoised / clean rows
            grids += denoising_pictures(
                vae, params, test_x, jax.random.fold_in(eval_key, evaluation.PICTURE_NOISE_FOLD),
                config.corruption, builders.hyperparameter(config, hparams, "corruption_level"))
        return evaluation.elbo_means(vae, params, test_x, eval_key), grids

    if not models.stacked:
        return jax.jit(one, out_shardings=replicated)

    def each(params, hparams, test_images, eval_keys):
        return jax.lax.map(lambda m: one(m[0], m[1], evaluation.test_set(
            test_images, config.binarize, m[2]), m[2]), (params, hparams, eval_keys))

    return jax.jit(each, out_shardings=replicated)


def fit(models: Models, workdir: str,
        dataset: tuple[data.ImageDataset, int] | None = None,
        after_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Trains `models` in `workdir` (whose writer lock the caller holds), resuming from the newest
    intact checkpoint there (damaged newer ones are moved aside with a warning).

    Every epoch: trains, stopping with `TrainingDivergedError` when a step's loss or gradient is
    not finite; evaluates the single-sample test ELBO (`evaluation.elbo_means`); appends a line
    to ``metrics.jsonl`` (per-model lists for stacked models); writes picture grids into each
    model's folder and a TensorBoard event file of the model's metrics and pictures (and, in the
    first epoch it trains, its config) into its `Models.logdirs` folder
    (`vae_jax.app.summaries`); calls `after_epoch(record)`; and, every `save_every_epochs` epochs
    and after the last one, saves an Orbax checkpoint. Only process 0 writes files. `dataset` is
    `load_training_data(models.config)` when the caller has loaded it already. A resumed run
    drops the metrics lines of epochs after its checkpoint, has TensorBoard drop their events
    (`summaries.write_epoch`'s ``purge_step``) and redoes those epochs, so a run killed at any
    moment and started again ends with the metrics, pictures and bit-identical params of an
    uninterrupted run, and TensorBoard shows each step once. Returns the last metrics
    line (or the last checkpoint's step and epoch alone when there was nothing left to train).
    """
    run_folder.check_writable(workdir)
    config = models.config
    dataset, steps_per_epoch = dataset or load_training_data(config)
    num_train, image_shape = len(dataset.train_images), dataset.image_shape
    layout = _layout(models)
    main = distributed.is_main_process()
    log = functools.partial(print, flush=True) if main else lambda *args, **kwargs: None
    keys = models.keys()
    checkpointer = run_folder.checkpointer(workdir, config.max_to_keep)
    with contextlib.closing(checkpointer):
        models_states = [initial_state(c, image_shape, steps_per_epoch) for c in models.members]
        state = distributed.to_global(
            stack(models_states) if models.stacked else models_states[0], layout.state)
        run_folder.check_free_space(workdir, to_checkpoint(state), config.max_to_keep)
        restored = checkpointer.restore_latest(to_checkpoint(state), models.saved_config)
        last_saved = None
        if restored is not None:
            last_saved, tree = restored
            state = from_checkpoint(tree, config.prng_impl)
            log(f"Resuming {'the sweep ' if models.stacked else ''}from the checkpoint at step "
                f"{last_saved} (epoch {last_saved // steps_per_epoch}) in "
                f"{checkpointer.directory}")
        if main:
            run_folder.truncate_metrics(workdir, last_saved or 0)
            for name, text in models.writes.items():
                with run_folder.write_errors(name, "nothing was trained"):
                    run_folder.write_atomically(os.path.join(workdir, name), text)
        if layout.mesh.size > 1:
            per_device = models.size // layout.mesh.size
            what = (f"{per_device} model{'s' * (per_device > 1)} per device" if models.stacked
                    else f"{config.batch_size // layout.mesh.size} examples per device and step")
            log(f"{'Model' if models.stacked else 'Data'}-parallel over {layout.mesh.size} "
                f"devices ({layout.mesh.devices.flat[0].platform}"
                f"{f', {jax.process_count()} processes' if jax.process_count() > 1 else ''}): "
                f"{what}")
        start_step = int(np.ravel(distributed.to_host(state.step))[0])
        start_epoch = start_step // steps_per_epoch
        if start_epoch >= config.num_epochs:
            log(f"Already trained {start_epoch} epochs; nothing to do (raise --config.num_epochs "
                "to train further).")
            return {"step": start_step, "epoch": start_epoch}
        return _epochs(models, workdir, state, last_saved, start_step, dataset, steps_per_epoch,
                       layout, keys, checkpointer, after_epoch, log)


def _epochs(models: Models, workdir: str, state: TrainState, last_saved: int | None,
            start_step: int, dataset: data.ImageDataset, steps_per_epoch: int, layout: _Layout,
            keys: list[RunKeys], checkpointer: checkpointing.Checkpointer,
            after_epoch: Callable | None, log: Callable) -> dict[str, Any]:
    config, main = models.config, distributed.is_main_process()
    start_epoch = start_step // steps_per_epoch
    num_train, image_shape = len(dataset.train_images), dataset.image_shape
    pipeline = input_pipeline.resolve(config.input_pipeline, dataset.train_images.nbytes,
                                      layout.mesh.devices.flat)
    train_images = dataset.train_images
    if pipeline == "device":
        train_images = distributed.to_global(train_images, layout.replicated)
    else:
        log(f"Streaming the training set ({dataset.train_images.nbytes / 2**20:,.0f} MiB) "
            "from host memory, chunks of at most "
            f"{config.stream_chunk_mib:g} MiB copied ahead of the steps")
    test_data = distributed.to_global(dataset.test_images, layout.replicated)
    data.check_unit_interval(data.to_unit_interval(test_data), f"the {config.dataset!r} test set")
    if not models.stacked:
        test_data = jax.jit(evaluation.test_set, static_argnums=1)(
            test_data, config.binarize, keys[0].eval)
    hparams = distributed.to_global(models.hparams, layout.state)
    eval_keys = distributed.to_global(
        stack([k.eval for k in keys]) if models.stacked else keys[0].eval, layout.replicated)
    kl_weights = [builders.kl_weight(c) for c in models.members]
    train_steps = make_train_steps(
        config, image_shape, steps_per_epoch, models=models.stacked,
        shared_indices=models.shared_order,
        out_shardings=(layout.state, layout.replicated, layout.replicated))
    evaluate = _make_evaluate(models, image_shape, layout.replicated)
    show_progress = config.progress_bar and sys.stderr.isatty()
    step_bytes = config.batch_size * dataset.train_images[0].nbytes
    chunks = input_pipeline.num_chunks(
        steps_per_epoch, step_bytes * (1 if models.shared_order else models.size),
        config.stream_chunk_mib * 2**20 if pipeline == "stream" else None,
        at_least=20 if show_progress else 1)

    record: dict[str, Any] = {}
    for epoch in range(start_epoch + 1, config.num_epochs + 1):
        start = time.perf_counter()
        if models.shared_order:
            indices = epoch_batch_indices(keys[0].shuffle, epoch, num_train, config.batch_size)
        else:
            indices = member_batch_indices(stack([k.shuffle for k in keys]), epoch, num_train,
                                           config.batch_size)
        indices = np.asarray(indices)
        indices = indices.reshape(chunks, steps_per_epoch // chunks, *indices.shape[1:])
        batches = input_pipeline.epoch_chunks(pipeline, train_images, indices,
                                              layout.replicated, layout.indices)
        bar = (_progress_bar(steps_per_epoch, epoch, config.num_epochs) if show_progress
               else None)
        # debug_nans: jit off too, so that JAX names the operation, not the whole `lax.scan`.
        with jax.debug_nans(config.debug_nans), jax.disable_jit(config.debug_nans):
            state, train = _train_epoch(models, train_steps, state, hparams, batches, epoch,
                                        last_saved, bar)
        test, grids = distributed.to_host(evaluate(state.params, hparams, test_data, eval_keys))
        seconds = time.perf_counter() - start
        step = int(np.ravel(distributed.to_host(state.step))[0])

        # The checkpoint comes last: a run killed before it redoes this epoch, and drops the
        # metrics line written here (`fit`).
        record = {"step": step, "epoch": epoch, **_values("train_", train),
                  **_values("test_", test),
                  "kl_weight": _per_model(models, [float(w(step - 1)) for w in kl_weights]),
                  "epoch_time_s": round(seconds, 3)}
        with run_folder.write_errors(f"epoch {epoch}'s metrics, pictures and event files",
                                     run_folder.kept(last_saved)):
            if main:
                _write_epoch(models, workdir, epoch, record, grids,
                             start_step + 1 if epoch == start_epoch + 1 else None)
                if after_epoch is not None:
                    after_epoch(record)
        if epoch % config.save_every_epochs == 0 or epoch == config.num_epochs:
            checkpointer.save(step, to_checkpoint(state), models.saved_config)
            last_saved = step
        _log_epoch(models, log, epoch, step, train, test, seconds,
                   steps_per_epoch * config.batch_size)
    return record


def _write_epoch(models: Models, workdir: str, epoch: int, record: dict[str, Any], grids,
                 purge_step: int | None) -> None:
    """Process 0's files of an epoch, from host values: the metrics line, then each model's
    pictures and TensorBoard event file (with its config and `purge_step` in the first epoch a
    command trains, None after it). Raises the `OSError` of a file that cannot be written."""
    run_folder.append_metrics(workdir, record)
    for i, (folder, logdir) in enumerate(zip(models.folders, models.logdirs, strict=True)):
        pictures = run_folder.save_pictures(folder, epoch, *(
            unstack(g, i) if models.stacked else g for g in grids), columns=PICTURE_COUNT)
        summaries.write_epoch(
            logdir, run_folder.member_metrics(record, i), pictures,
            config_json=models.members[i].to_json(indent=2) if purge_step else None,
            purge_step=purge_step)


def _values(prefix: str, metrics: dict[str, np.ndarray]) -> dict[str, Any]:
    """{prefix + name: a float (one model) or a list of floats (one per model)}."""
    return {prefix + k: np.asarray(v).tolist() for k, v in metrics.items()}


def _per_model(models: Models, values: list[float]) -> float | list[float]:
    return values if models.stacked else values[0]


def _log_epoch(models: Models, log: Callable, epoch: int, step: int, train, test,
               seconds: float, examples: int) -> None:
    num_epochs = models.config.num_epochs
    if not models.stacked:
        log(f"epoch {epoch:3d}/{num_epochs}  step {step:6d}  train {_format_terms(train)}  "
            f"test {_format_terms(test)}  {seconds:6.2f} s ({examples / seconds:,.0f} ex/s)")
        return
    log(f"epoch {epoch:3d}/{num_epochs}  step {step:6d}  {models.size} models  {seconds:6.2f} s "
        f"({models.size * examples / seconds:,.0f} model-examples/s)")
    for i in range(models.size):
        member_train = {k: float(v[i]) for k, v in train.items()}
        member_test = {k: float(v[i]) for k, v in test.items()}
        log(f"    {f'[{i}] {models.labels[i]}':<36s} train {_format_terms(member_train)}  "
            f"test {_format_terms(member_test)}")


def _train_epoch(models: Models, train_steps: Callable, state: TrainState, hparams,
                 chunks: Iterator[tuple[jax.Array, jax.Array]], epoch: int,
                 last_saved: int | None, bar):
    """Runs the epoch's `chunks` of (images, indices into them) in one call each
    (`vae_jax.app.input_pipeline`), checking each call for non-finite steps; returns the new
    state and the epoch's mean train metrics (per model)."""
    chunk_metrics = []
    for chunk_images, chunk_indices in chunks:
        state, metrics, divergence = train_steps(state, hparams, chunk_images, chunk_indices)
        _check_finite(models, divergence, epoch, last_saved)
        chunk_metrics.append(metrics)
        if bar is not None:
            bar.update(chunk_indices.shape[0])
    if bar is not None:
        bar.close()
    return state, distributed.to_host(jax.tree.map(lambda *m: jnp.mean(jnp.stack(m), axis=0),
                                                   *chunk_metrics))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       dataset: data.ImageDataset | None = None) -> dict[str, float]:
    """Trains the VAE that `config` describes in `workdir` (`fit` of `one_run`), resuming from
    the newest intact checkpoint there. Returns the last metrics line.

    The data is `dataset` when given: images in memory, uint8 (N, H, W, C) in [0, 255] as TFDS
    gives them (`data.ImageDataset`; no TensorFlow needed), whose name ``config.dataset`` must
    be; the run folder then records them (``dataset.json``: name, sizes, image shape, SHA-256,
    `record_data`), so that its readers ask for the same arrays (``evaluation.evaluate_workdir(
    workdir, dataset=dataset)``) instead of loading a dataset by name. Else the data is the TFDS
    dataset ``config.dataset`` (the ``data`` extra).

    The run holds `workdir`'s writer lock throughout and checks before any training that it can
    write every folder and file it will (`vae_jax.app.run_folder`). Raises `ConfigError` for an
    invalid config, `WorkdirError` when another process writes `workdir`, when something in it
    cannot be written, or when a write fails mid-run (`CheckpointError` for a failed save): one
    line saying which checkpoint is kept; `TrainingDivergedError` for a non-finite step;
    `DataError` for bad arrays, or when `workdir`'s checkpoints were trained on other data
    (arrays in memory, a dataset by name, other arrays).
    """
    configs.validate(config)
    with run_folder.lock(workdir, distributed.is_main_process()):
        _check_not_a_sweep(workdir)
        loaded = None if dataset is None else load_training_data(config, dataset)
        models = record_data(one_run(config, workdir), workdir, dataset)
        return fit(models, workdir, loaded)


def record_data(models: Models, workdir: str, dataset: data.ImageDataset | None) -> Models:
    """`models`, also writing ``workdir/dataset.json`` (`run_folder.dataset_record`) when they
    train on the arrays in memory `dataset` (None: on the TFDS dataset ``config.dataset``, whose
    run has no such file: a stale one, of a run without checkpoints, is removed here). Call it
    holding `workdir`'s lock, before `fit`. Raises `DataError` when `workdir`'s checkpoints were
    trained on other data (`run_folder.check_dataset_record`), `WorkdirError` when a stale record
    cannot be removed."""
    record = None if dataset is None else run_folder.dataset_record(dataset)
    run_folder.check_dataset_record(workdir, record)
    if record is not None:
        return models._replace(writes={**models.writes,
                                       run_folder.DATASET_FILE: json.dumps(record, indent=2)})
    if distributed.is_main_process():
        with run_folder.write_errors(run_folder.DATASET_FILE, "nothing was trained"):
            run_folder.write_dataset_record(workdir, None)
    return models


def _check_not_a_sweep(workdir: str) -> None:
    """Raises `CheckpointError` when the newest checkpoint in `workdir` is a sweep's (an unreadable
    one is left to `Checkpointer.restore_latest`)."""
    saved = run_folder.newest_saved_config(workdir)
    if saved is not None and "sweep" in saved:
        raise CheckpointError(
            f"{workdir} holds a sweep of scripts/sweep.py, not one run: resume it with "
            f"scripts/sweep.py, or extract its members (scripts/sweep.py --workdir={workdir} "
            f"--extract=all) and continue one with --workdir={workdir}/members/II")


def _progress_bar(total: int, epoch: int, num_epochs: int):
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel

    return tqdm(total=total, desc=f"epoch {epoch}/{num_epochs}", unit="step", leave=False)
