"""Training with Optax: a jitted multi-step update over a device-resident dataset, and the loop
around it (`train_and_evaluate`) that evaluates, checkpoints with Orbax, logs and draws pictures.

Speed by design: the uint8 training images live on the device; each call of `train_steps` runs
many steps inside one `lax.scan` (gathering, scaling and binarising batches on the device), the
training state is donated, and every call has the same shapes, so nothing recompiles after the
first epoch and no batch ever crosses from the host.

Randomness is a function of (seed, step) alone: the key of step s is ``fold_in(noise_key, s)`` and
the data order of epoch e is a permutation drawn from ``fold_in(shuffle_key, e)``. A checkpoint
therefore holds everything a resumed run needs to continue exactly.

Every step also records whether its reconstruction term, KL term and gradient were finite; the host
reads the first bad step once per jitted call and stops with `TrainingDivergedError` before
anything of the bad state is evaluated or saved.
"""

import contextlib
import functools
import json
import math
import os
import shutil
import sys
import time
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vae_jax import iwae, model as model_lib, objectives
from vae_jax.app import (checkpointing, configs, data, distributed, images, input_pipeline,
                         run_folder, prng)
from vae_jax.errors import ConfigError, TrainingDivergedError

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
REPORTED_TERMS = ("neg_elbo", "reconstruction_loss", "kl")
CHECKED_TERMS = ("reconstruction", "KL", "gradient")  # the order of `Divergence.terms`


class TrainState(NamedTuple):
    """Everything that changes during training. `key` is the run's root key; it never changes."""

    params: Any
    opt_state: optax.OptState
    step: jax.Array  # int32 scalar: optimizer steps taken
    key: jax.Array  # typed PRNG key


class Divergence(NamedTuple):
    """Where a call of `train_steps` first went non-finite.

    Attributes:
      step: int32, the 1-based optimizer step whose reconstruction term, KL term or gradient was
        NaN or ±inf first; 0 when every step was finite.
      terms: bool (3,), which of `CHECKED_TERMS` were not finite at that step.
    """

    step: jax.Array
    terms: jax.Array


class RunKeys(NamedTuple):
    """Independent random streams derived from the root key, one per purpose."""

    init: jax.Array
    noise: jax.Array  # per step: binarisation and the reparameterisation ε
    shuffle: jax.Array  # per epoch: the data order
    eval: jax.Array  # fixed: the test set's binarisation and ε, the same at every evaluation

    @classmethod
    def from_root(cls, root: jax.Array) -> "RunKeys":
        return cls(*(jax.random.fold_in(root, i) for i in range(4)))


def reported_terms(terms: objectives.ELBOTerms) -> dict[str, jax.Array]:
    """ELBO terms → the positive losses we report, in nats: neg_elbo = reconstruction_loss + kl."""
    return {"neg_elbo": -terms.elbo, "reconstruction_loss": -terms.reconstruction, "kl": terms.kl}


def prepare_batch(key: jax.Array, images_uint8: jax.Array, binarize: bool) -> jax.Array:
    """uint8 images → float32 in [0, 1], dynamically binarised with `key` when `binarize`."""
    flat = data.to_unit_interval(jnp.reshape(images_uint8, (images_uint8.shape[0], -1)))
    x = data.binarize(key, flat) if binarize else flat
    return jnp.reshape(x, images_uint8.shape)  # one axis per example computes faster on CPUs


def make_loss_fn(vae: model_lib.VAE, objective: str = "elbo", free_bits: float = 0.0,
                 iwae_samples: int = 1) -> Callable:
    """Returns ``loss_fn(params, x, key, beta) -> (loss, ELBOTerms of batch means)`` for `jax.grad`
    with ``has_aux=True``: `objectives.loss` (the β-weighted ELBO with `free_bits`) when
    `objective` is "elbo", `iwae.iwae_loss` with K = `iwae_samples` (β unused) when "iwae"."""
    if objective == "elbo":
        return lambda params, x, key, beta: objectives.loss(params, vae, x, key, beta, free_bits)
    if objective == "iwae":
        return lambda params, x, key, beta: iwae.iwae_loss(params, vae, x, key, iwae_samples)
    raise ConfigError(f"objective must be one of {configs.OBJECTIVES}, got {objective!r}")


def _summarize(first_step: jax.Array, metrics: dict[str, jax.Array],
               nonfinite: jax.Array) -> tuple[dict[str, jax.Array], Divergence]:
    """Per-step metrics (num_steps,) and non-finite flags (num_steps, 3) → their means over the
    steps and the `Divergence` of the first bad step."""
    bad = jnp.any(nonfinite, axis=1)
    first = jnp.argmax(bad)
    divergence = Divergence(jnp.where(bad[first], first_step + first + 1, 0), nonfinite[first])
    return jax.tree.map(jnp.mean, metrics), divergence


def make_train_step(vae: model_lib.VAE, optimizer: optax.GradientTransformation,
                    kl_weight: optax.Schedule | float, binarize: bool, free_bits: float = 0.0,
                    objective: str = "elbo", iwae_samples: int = 1) -> Callable:
    """Returns the pure, unjitted ``step(state, images, indices) -> (state, (metrics, nonfinite))``
    of one optimizer update on the examples ``images[indices]``.

    The step draws its binarisation and ε from ``fold_in(noise_key, state.step)``, minimises
    `make_loss_fn(vae, objective, free_bits, iwae_samples)` with β = kl_weight(step) (a schedule,
    or a constant), and returns the loss, neg_elbo, reconstruction_loss and kl of the batch, and
    bool (3,) flags of a non-finite reconstruction term, KL term or gradient (`CHECKED_TERMS`).
    `make_train_steps` loops it; `vae_jax.app.sweep` vmaps it over models.
    """
    loss_fn = make_loss_fn(vae, objective, free_bits, iwae_samples)

    def step(state: TrainState, train_images: jax.Array, indices: jax.Array):
        noise = RunKeys.from_root(state.key).noise
        binarize_key, elbo_key = jax.random.split(jax.random.fold_in(noise, state.step))
        x = prepare_batch(binarize_key, train_images[indices], binarize)
        beta = kl_weight(state.step) if callable(kl_weight) else kl_weight
        (loss, means), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, x, elbo_key, beta)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # One sum per gradient: NaN or ±∞ anywhere makes it non-finite (as would a finite sum
        # past 3e38), and a sum reads the gradient once where jnp.isfinite then jnp.all twice.
        grads_finite = jnp.isfinite(sum(jnp.sum(g) for g in jax.tree.leaves(grads)))
        nonfinite = ~jnp.stack([jnp.isfinite(means.reconstruction), jnp.isfinite(means.kl),
                                grads_finite])
        metrics = {"loss": loss, **reported_terms(means)}
        return TrainState(params, opt_state, state.step + 1, state.key), (metrics, nonfinite)

    return step


def make_train_steps(vae: model_lib.VAE, optimizer: optax.GradientTransformation,
                     kl_weight: optax.Schedule | float, binarize: bool,
                     free_bits: float = 0.0, loop: str = "scan", objective: str = "elbo",
                     iwae_samples: int = 1) -> Callable:
    """Returns ``train_steps(state, images, batch_indices) -> (state, metrics, divergence)``.

    `images` is the uint8 training set (N, *input_shape) on the device; `batch_indices` is int32
    (num_steps, batch_size), one row of example indices per step, each step `make_train_step`.
    `metrics` holds the means over those steps of loss (−objective), neg_elbo,
    reconstruction_loss and kl, in nats per example; `divergence` (a `Divergence`) names the first
    step whose reconstruction term, KL term or gradient was not finite. Steps after it still run
    (on NaNs): the caller must discard the state. The incoming `state` is donated.

    `loop` chooses how the steps run: "scan", all of them in one jitted `lax.scan` (one dispatch
    per call: the fastest for MLPs); or "step", one jitted step per Python iteration (XLA:CPU runs
    convolutions inside a loop body several times slower than on their own). Both give the same
    results.
    """
    step = make_train_step(vae, optimizer, kl_weight, binarize, free_bits, objective,
                           iwae_samples)

    if loop == "scan":
        @functools.partial(jax.jit, donate_argnums=0)
        def scanned_steps(state: TrainState, train_images: jax.Array, batch_indices: jax.Array):
            first_step = state.step
            state, (metrics, nonfinite) = jax.lax.scan(
                lambda s, indices: step(s, train_images, indices), state, batch_indices)
            return (state, *_summarize(first_step, metrics, nonfinite))

        return scanned_steps
    if loop != "step":
        raise ConfigError(f"train_loop must be one of {configs.TRAIN_LOOPS[1:]} here, got {loop!r}")

    jitted_step = jax.jit(lambda state, images, batch_indices, i: step(state, images,
                                                                       batch_indices[i]),
                          donate_argnums=0)
    summarize = jax.jit(lambda first_step, outputs: _summarize(
        first_step, *jax.tree.map(lambda *xs: jnp.stack(xs), *outputs)))

    def stepped(state: TrainState, train_images: jax.Array, batch_indices: jax.Array):
        first_step = jnp.copy(state.step)  # `state` is donated to the first step
        outputs = []
        for i in range(batch_indices.shape[0]):
            state, output = jitted_step(state, train_images, batch_indices, i)
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


def make_evaluate(vae: model_lib.VAE, chunk_size: int = 1000) -> Callable:
    """Returns jitted ``evaluate(params, x, key) -> {neg_elbo, reconstruction_loss, kl}``: the
    single-sample ELBO terms averaged over the float data x (N, *input_shape), computed
    `chunk_size` examples at a time to bound memory."""

    @jax.jit
    def evaluate(params, x: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
        keys = jax.random.split(key, x.shape[0])
        per_example = jax.lax.map(lambda xk: objectives.elbo(vae, params, xk[0], xk[1]),
                                  (x, keys), batch_size=chunk_size)
        return jax.tree.map(jnp.mean, reported_terms(per_example))

    return evaluate


def make_optimizer(config: ml_collections.ConfigDict,
                   steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam with `config.learning_rate`: constant, or (``lr_schedule="cosine"``) decayed along a
    half cosine to 0 over the run's `num_epochs` · `steps_per_epoch` steps."""
    if config.lr_schedule == "cosine":
        return optax.adam(optax.cosine_decay_schedule(config.learning_rate,
                                                      config.num_epochs * steps_per_epoch))
    return optax.adam(config.learning_rate)


def resolve_train_loop(config: ml_collections.ConfigDict) -> str:
    """`config.train_loop`, with "auto" made concrete: "step" for convolutional networks on a CPU
    backend (see `make_train_steps`), "scan" otherwise."""
    if config.train_loop != "auto":
        return config.train_loop
    return "step" if config.architecture == "conv" and jax.default_backend() == "cpu" else "scan"


def create_train_state(vae: model_lib.VAE, optimizer: optax.GradientTransformation,
                       root_key: jax.Array) -> TrainState:
    params = vae.init(RunKeys.from_root(root_key).init)
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32), root_key)


def to_checkpoint(state: TrainState) -> dict[str, Any]:
    """The pytree a checkpoint stores: the state, with the typed key as its raw key data."""
    return {"params": state.params, "opt_state": state.opt_state, "step": state.step,
            "key": jax.random.key_data(state.key)}


def from_checkpoint(tree: dict[str, Any], prng_impl: str) -> TrainState:
    """Inverse of `to_checkpoint`; `prng_impl` is the run's `config.prng_impl`."""
    key = prng.wrap_key_data(tree["key"], prng_impl)
    return TrainState(tree["params"], tree["opt_state"], tree["step"], key)


_DISK_MARGIN_BYTES = 64 * 2**20  # metrics, pictures and Orbax's own files


def check_free_space(workdir: str, tree: Any, max_to_keep: int) -> None:
    """Raises `ConfigError` at the start when `workdir`'s disk cannot hold `max_to_keep` + 1
    checkpoints of the arrays of `tree` (Orbax writes a new one before it deletes the oldest)."""
    checkpoint_bytes = sum(np.dtype(leaf.dtype).itemsize * leaf.size
                           for leaf in jax.tree.leaves(tree))
    needed = (max_to_keep + 1) * checkpoint_bytes + _DISK_MARGIN_BYTES
    free = shutil.disk_usage(workdir).free
    if free < needed:
        raise ConfigError(
            f"workdir {workdir!r} has {free / 2**20:.0f} MiB free but the run needs about "
            f"{needed / 2**20:.0f} MiB ({max_to_keep + 1} checkpoints of "
            f"{checkpoint_bytes / 2**20:.1f} MiB); free space or lower --config.max_to_keep")


def write_atomically(path: str, text: str) -> None:
    """Replaces the file at `path` by `text` with one rename: a kill leaves the old or new file."""
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def _metrics_line_step(line: str) -> float:
    """The step of a metrics line; +inf for a line cut short by a kill."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def truncate_metrics(path: str, last_step: int) -> None:
    """Drops the metrics lines of epochs after checkpoint `last_step` (0: no checkpoint), and a
    last line cut short: a killed run writes them before it checkpoints, and this run redoes
    those epochs."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    kept = [line for line in lines if _metrics_line_step(line) <= last_step]
    if kept != lines:
        write_atomically(path, "".join(kept))


def _check_finite(divergence: Divergence, epoch: int, last_saved: int | None) -> None:
    """Raises `TrainingDivergedError` when `divergence` (from `train_steps`) names a step."""
    step, bad = distributed.to_host(divergence)
    if step == 0:
        return
    terms = tuple(name for name, flag in zip(CHECKED_TERMS, bad) if flag)
    kept = run_folder.kept(last_saved)
    raise TrainingDivergedError(
        f"training diverged at step {step} (epoch {epoch}): non-finite {', '.join(terms)} (NaN or "
        f"Inf); stopped without saving, {kept}; lower --config.learning_rate, or run with "
        "--config.debug_nans=True to find the operation", step=int(step), epoch=epoch, terms=terms)


def _format_terms(terms: dict[str, float]) -> str:
    return (f"neg_elbo {terms['neg_elbo']:7.2f} (rec {terms['reconstruction_loss']:6.2f}, "
            f"kl {terms['kl']:5.2f})")


def write_pictures(workdir: str, epoch: int, vae: model_lib.VAE, params, test_x: jax.Array,
                   key: jax.Array, count: int = 8) -> None:
    """Writes ``images/reconstructions_epochNNN.png`` (inputs in odd rows, reconstruction means
    below them) and ``images/samples_epochNNN.png`` (decoder means of 64 draws from the prior)."""
    inputs = test_x[: count * 4]
    mean, _ = vae.encode(params, inputs)
    recons = vae.observation_mean(vae.decode(params, mean))
    z = jax.random.normal(key, (64, vae.latent_dim))
    samples = vae.observation_mean(vae.decode(params, z))
    inputs, recons, samples = distributed.to_host((inputs, recons, samples))
    if not distributed.is_main_process():
        return
    folder = os.path.join(workdir, "images")
    os.makedirs(folder, exist_ok=True)
    rows = [r for i in range(4) for r in (inputs[i * count:(i + 1) * count],
                                          recons[i * count:(i + 1) * count])]
    images.save_grid(os.path.join(folder, f"reconstructions_epoch{epoch:03d}.png"),
                     np.concatenate(rows), columns=count)
    images.save_grid(os.path.join(folder, f"samples_epoch{epoch:03d}.png"), samples, columns=8)


def _resume(checkpointer: checkpointing.Checkpointer, state: TrainState,
            config: ml_collections.ConfigDict, metrics_path: str) -> tuple[TrainState, int | None]:
    """The state of the newest intact checkpoint (or `state` when there is none) and its step;
    drops the metrics lines of epochs after that checkpoint."""
    restored = checkpointer.restore_latest(to_checkpoint(state), config)
    last_saved = None
    if restored is not None:
        last_saved, tree = restored
        state = from_checkpoint(tree, config.prng_impl)
    if distributed.is_main_process():
        truncate_metrics(metrics_path, last_saved or 0)
    return state, last_saved


def _train_epoch(train_steps: Callable, state: TrainState,
                 chunks: Iterator[tuple[jax.Array, jax.Array]], epoch: int,
                 last_saved: int | None, bar):
    """Runs the epoch's `chunks` of (images, indices (steps, batch_size) into them) in one call
    each (`vae_jax.app.input_pipeline`), checking each call for non-finite steps; returns the new
    state and the epoch's mean train metrics."""
    chunk_metrics = []
    for chunk_images, chunk_indices in chunks:
        state, metrics, divergence = train_steps(state, chunk_images, chunk_indices)
        _check_finite(divergence, epoch, last_saved)
        chunk_metrics.append(metrics)
        if bar is not None:
            bar.update(chunk_indices.shape[0])
    if bar is not None:
        bar.close()
    return state, distributed.to_host(jax.tree.map(lambda *m: jnp.mean(jnp.stack(m)),
                                                   *chunk_metrics))


def load_training_data(config: ml_collections.ConfigDict) -> tuple[data.ImageDataset, int]:
    """The dataset `config` names and its steps per epoch (the last incomplete batch dropped);
    raises `ConfigError` when one batch is larger than the training split."""
    dataset = data.load_image_dataset(config.dataset, config.data_dir, config.manual_dir)
    num_train = len(dataset.train_images)
    if config.batch_size > num_train:
        raise ConfigError(f"config.batch_size={config.batch_size} is larger than the "
                          f"{num_train} training examples of {config.dataset!r}")
    return dataset, num_train // config.batch_size


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains the VAE that `config` describes, resuming from the newest intact checkpoint in
    `workdir` (damaged newer ones are moved aside with a warning: `Checkpointer.restore_latest`).

    Every epoch: trains, stopping with `TrainingDivergedError` when a step's loss or gradient is not
    finite; evaluates the single-sample test ELBO; appends a line to ``workdir/metrics.jsonl``;
    writes picture grids; and, every `save_every_epochs` epochs and after the last one, saves an
    Orbax checkpoint. A resumed run drops the metrics lines of epochs after its checkpoint and
    redoes those epochs, so a run killed at any moment and started again ends with the files and
    the bit-identical params of an uninterrupted run. Returns the last metrics line (or the last
    checkpoint's step alone when there was nothing left to train).

    The run holds `workdir`'s writer lock throughout and checks before any training that it can
    write every folder and file it will (`vae_jax.app.run_folder`). Raises `WorkdirError` when another
    process writes `workdir`, when something in it cannot be written, or when a write fails
    mid-run (`CheckpointError` for a failed save): one line saying which checkpoint is kept.
    """
    configs.validate(config)
    with run_folder.lock(workdir, distributed.is_main_process()):
        return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    run_folder.check_writable(workdir)
    dataset, steps_per_epoch = load_training_data(config)
    num_train = len(dataset.train_images)

    mesh = distributed.make_mesh(config.num_devices)
    if config.batch_size % mesh.size:
        raise ConfigError(f"config.batch_size={config.batch_size} must divide evenly over the "
                          f"{mesh.size} devices of the data-parallel mesh (or set "
                          "--config.num_devices)")
    replicated, batch_sharded = distributed.data_parallel_shardings(mesh)
    main = distributed.is_main_process()
    log = functools.partial(print, flush=True) if main else lambda *args, **kwargs: None
    vae = model_lib.from_config(config, dataset.image_shape)
    optimizer = make_optimizer(config, steps_per_epoch)
    root_key = prng.key(config.seed, config.prng_impl)
    keys = RunKeys.from_root(root_key)
    checkpointer = checkpointing.Checkpointer(os.path.join(workdir, CHECKPOINT_DIR),
                                              config.max_to_keep)
    metrics_path = os.path.join(workdir, METRICS_FILE)
    with contextlib.closing(checkpointer):
        initial_state = distributed.to_global(create_train_state(vae, optimizer, root_key),
                                              replicated)
        check_free_space(workdir, to_checkpoint(initial_state), config.max_to_keep)
        state, last_saved = _resume(checkpointer, initial_state, config, metrics_path)
        if last_saved is not None:
            log(f"Resuming from the checkpoint at step {last_saved} (epoch "
                f"{last_saved // steps_per_epoch}) in {checkpointer.directory}")
        if main:
            with run_folder.write_errors("config.json", "nothing was trained"):
                write_atomically(os.path.join(workdir, "config.json"), config.to_json(indent=2))
        if mesh.size > 1:
            log(f"Data-parallel over {mesh.size} devices ({mesh.devices.flat[0].platform}"
                f"{f', {jax.process_count()} processes' if jax.process_count() > 1 else ''}): "
                f"{config.batch_size // mesh.size} examples per device and step")
        start_step = int(distributed.to_host(state.step))
        start_epoch = start_step // steps_per_epoch
        if start_epoch >= config.num_epochs:
            log(f"Already trained {start_epoch} epochs; nothing to do (raise --config.num_epochs "
                "to train further).")
            return {"step": start_step, "epoch": start_epoch}

        pipeline = input_pipeline.resolve(config.input_pipeline, dataset.train_images.nbytes,
                                          mesh.devices.flat)
        train_images = dataset.train_images
        if pipeline == "device":
            train_images = distributed.to_global(train_images, replicated)
        else:
            log(f"Streaming the training set ({dataset.train_images.nbytes / 2**20:,.0f} MiB) "
                "from host memory, chunks of at most "
                f"{config.stream_chunk_mib:g} MiB copied ahead of the steps")
        test_x = jax.jit(prepare_batch, static_argnums=2)(
            jax.random.fold_in(keys.eval, 0), dataset.test_images, config.binarize)
        data.check_unit_interval(test_x, f"the {config.dataset!r} test set")
        test_x = distributed.to_global(test_x, replicated)
        eval_key, picture_key = distributed.to_global(
            (jax.random.fold_in(keys.eval, 1), jax.random.fold_in(keys.eval, 2)), replicated)
        kl_weight = objectives.kl_weight_schedule(config.beta, config.kl_warmup_steps)
        train_steps = make_train_steps(vae, optimizer, kl_weight, config.binarize,
                                       config.free_bits, resolve_train_loop(config),
                                       config.objective, config.iwae_samples)
        evaluate = make_evaluate(vae)
        show_progress = config.progress_bar and sys.stderr.isatty()
        step_bytes = config.batch_size * dataset.train_images[0].nbytes
        chunks = input_pipeline.num_chunks(
            steps_per_epoch, step_bytes,
            config.stream_chunk_mib * 2**20 if pipeline == "stream" else None,
            at_least=20 if show_progress else 1)

        record: dict[str, float] = {}
        for epoch in range(start_epoch + 1, config.num_epochs + 1):
            start = time.perf_counter()
            indices = np.asarray(epoch_batch_indices(keys.shuffle, epoch, num_train,
                                                     config.batch_size))
            indices = indices.reshape(chunks, steps_per_epoch // chunks, config.batch_size)
            batches = input_pipeline.epoch_chunks(pipeline, train_images, indices, replicated,
                                                  batch_sharded)
            bar = (_progress_bar(steps_per_epoch, epoch, config.num_epochs) if show_progress
                   else None)
            # debug_nans: jit off too, so that JAX names the operation, not the whole `lax.scan`.
            with jax.debug_nans(config.debug_nans), jax.disable_jit(config.debug_nans):
                state, train = _train_epoch(train_steps, state, batches, epoch, last_saved,
                                            bar)
            test = distributed.to_host(evaluate(state.params, test_x, eval_key))
            seconds = time.perf_counter() - start
            step = int(distributed.to_host(state.step))

            # The checkpoint comes last: a run killed before it redoes this epoch, and drops the
            # metrics line written here (`_resume`).
            record = {"step": step, "epoch": epoch,
                      **{f"train_{k}": float(v) for k, v in train.items()},
                      **{f"test_{k}": float(v) for k, v in test.items()},
                      "kl_weight": float(kl_weight(step - 1)), "epoch_time_s": round(seconds, 3)}
            kept = run_folder.kept(last_saved)
            with run_folder.write_errors(f"epoch {epoch}'s metrics and pictures", kept):
                if main:
                    with open(metrics_path, "a", encoding="utf-8") as f:
                        f.write(json.dumps(record) + "\n")
                write_pictures(workdir, epoch, vae, state.params, test_x, picture_key)
            if epoch % config.save_every_epochs == 0 or epoch == config.num_epochs:
                checkpointer.save(step, to_checkpoint(state), config)
                last_saved = step
            log(f"epoch {epoch:3d}/{config.num_epochs}  step {step:6d}  "
                f"train {_format_terms(train)}  test {_format_terms(test)}  "
                f"{seconds:6.2f} s ({steps_per_epoch * config.batch_size / seconds:,.0f} ex/s)")
        return record


def _progress_bar(total: int, epoch: int, num_epochs: int):
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel

    return tqdm(total=total, desc=f"epoch {epoch}/{num_epochs}", unit="step", leave=False)
