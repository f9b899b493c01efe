"""Training with Optax: a jitted multi-step update over a device-resident dataset, and the loop
around it (`train_and_evaluate`) that evaluates, checkpoints with Orbax, logs and draws pictures.

Speed by design: the uint8 training images live on the device; each call of `train_steps` runs
many steps inside one `lax.scan` (gathering, scaling and binarising batches on the device), the
training state is donated, and every call has the same shapes, so nothing recompiles after the
first epoch and no batch ever crosses from the host.

Randomness is a function of (seed, step) alone: the key of step s is ``fold_in(noise_key, s)`` and
the data order of epoch e is a permutation drawn from ``fold_in(shuffle_key, e)``. A checkpoint
therefore holds everything a resumed run needs to continue exactly.
"""

import functools
import json
import os
import sys
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vae_jax import checkpointing, configs, data, images, model as model_lib, objectives
from vae_jax.errors import ConfigError

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
REPORTED_TERMS = ("neg_elbo", "reconstruction_loss", "kl")


class TrainState(NamedTuple):
    """Everything that changes during training. `key` is the run's root key; it never changes."""

    params: Any
    opt_state: optax.OptState
    step: jax.Array  # int32 scalar: optimizer steps taken
    key: jax.Array  # typed PRNG key


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
    x = data.to_unit_interval(images_uint8)
    return data.binarize(key, x) if binarize else x


def make_train_steps(vae: model_lib.VAE, optimizer: optax.GradientTransformation, beta: float,
                     binarize: bool) -> Callable:
    """Returns ``train_steps(state, images, batch_indices) -> (state, metrics)``, jitted.

    `images` is the uint8 training set (N, *input_shape) on the device; `batch_indices` is int32
    (num_steps, batch_size), one row of example indices per step. The steps run in one `lax.scan`;
    `metrics` holds the means over those steps of loss (−objective), neg_elbo, reconstruction_loss
    and kl, in nats per example. The incoming `state` is donated.
    """

    @functools.partial(jax.jit, donate_argnums=0)
    def train_steps(state: TrainState, train_images: jax.Array, batch_indices: jax.Array):
        noise = RunKeys.from_root(state.key).noise

        def step(state: TrainState, indices: jax.Array):
            binarize_key, elbo_key = jax.random.split(jax.random.fold_in(noise, state.step))
            x = prepare_batch(binarize_key, train_images[indices], binarize)
            grad_fn = jax.value_and_grad(objectives.loss, has_aux=True)
            (loss, means), grads = grad_fn(state.params, vae, x, elbo_key, beta)
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            metrics = {"loss": loss, **reported_terms(means)}
            return TrainState(params, opt_state, state.step + 1, state.key), metrics

        state, metrics = jax.lax.scan(step, state, batch_indices)
        return state, jax.tree.map(jnp.mean, metrics)

    return train_steps


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


def create_train_state(vae: model_lib.VAE, optimizer: optax.GradientTransformation,
                       root_key: jax.Array) -> TrainState:
    params = vae.init(RunKeys.from_root(root_key).init)
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32), root_key)


def _to_checkpoint(state: TrainState) -> dict[str, Any]:
    return {"params": state.params, "opt_state": state.opt_state, "step": state.step,
            "key": jax.random.key_data(state.key)}


def _from_checkpoint(tree: dict[str, Any], prng_impl: str) -> TrainState:
    key = jax.random.wrap_key_data(tree["key"], impl=prng_impl)
    return TrainState(tree["params"], tree["opt_state"], tree["step"], key)


def _progress_chunks(steps: int, wanted: int) -> int:
    """The divisor of `steps` closest to `wanted`: how many equal calls make up an epoch."""
    divisors = [d for d in range(1, steps + 1) if steps % d == 0]
    return min(divisors, key=lambda d: abs(d - wanted))


def _prepare_workdir(workdir: str) -> None:
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, ".write_test")
        with open(probe, "w", encoding="utf-8") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as error:
        raise ConfigError(f"workdir {workdir!r} is not writable: {error.strerror}") from None


def _truncate_metrics(path: str, last_step: int) -> None:
    """Drops metrics lines written after the checkpoint we resume from (a crash can leave some)."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    kept = [line for line in lines if json.loads(line)["step"] <= last_step]
    if len(kept) != len(lines):
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(kept)


def _format_terms(terms: dict[str, float]) -> str:
    return (f"neg_elbo {terms['neg_elbo']:7.2f} (rec {terms['reconstruction_loss']:6.2f}, "
            f"kl {terms['kl']:5.2f})")


def write_pictures(workdir: str, epoch: int, vae: model_lib.VAE, params, test_x: jax.Array,
                   key: jax.Array, count: int = 8) -> None:
    """Writes ``images/reconstructions_epochNNN.png`` (inputs in odd rows, reconstruction means
    below them) and ``images/samples_epochNNN.png`` (decoder means of 64 draws from the prior)."""
    folder = os.path.join(workdir, "images")
    os.makedirs(folder, exist_ok=True)
    inputs = test_x[: count * 4]
    mean, _ = vae.encode(params, inputs)
    recons = jax.nn.sigmoid(vae.decode(params, mean))
    rows = [r for i in range(4) for r in (inputs[i * count:(i + 1) * count],
                                          recons[i * count:(i + 1) * count])]
    images.save_grid(os.path.join(folder, f"reconstructions_epoch{epoch:03d}.png"),
                     np.concatenate([np.asarray(r) for r in rows]), columns=count)
    z = jax.random.normal(key, (64, vae.latent_dim))
    samples = jax.nn.sigmoid(vae.decode(params, z))
    images.save_grid(os.path.join(folder, f"samples_epoch{epoch:03d}.png"), np.asarray(samples),
                     columns=8)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains the VAE that `config` describes, resuming from the latest checkpoint in `workdir`.

    After every epoch: evaluates the single-sample test ELBO, saves an Orbax checkpoint, appends a
    line to ``workdir/metrics.jsonl`` and writes picture grids. Returns the last metrics line (or
    the last checkpoint's step alone when there was nothing left to train).
    """
    configs.validate(config)
    _prepare_workdir(workdir)
    dataset = data.load_image_dataset(config.dataset, config.data_dir, config.manual_dir)
    num_train = len(dataset.train_images)
    if config.batch_size > num_train:
        raise ConfigError(f"config.batch_size={config.batch_size} is larger than the "
                          f"{num_train} training examples of {config.dataset!r}")
    steps_per_epoch = num_train // config.batch_size

    vae = model_lib.from_config(config, dataset.image_shape)
    optimizer = optax.adam(config.learning_rate)
    root_key = jax.random.key(config.seed, impl=config.prng_impl)
    keys = RunKeys.from_root(root_key)
    state = create_train_state(vae, optimizer, root_key)

    checkpointer = checkpointing.Checkpointer(os.path.join(workdir, CHECKPOINT_DIR),
                                              config.max_to_keep)
    metrics_path = os.path.join(workdir, METRICS_FILE)
    latest = checkpointer.latest_step()
    if latest is not None:
        restored = checkpointer.restore(latest, _to_checkpoint(state), config)
        state = _from_checkpoint(restored, config.prng_impl)
        _truncate_metrics(metrics_path, latest)
        print(f"Resuming from the checkpoint at step {latest} (epoch {latest // steps_per_epoch})"
              f" in {checkpointer.directory}", flush=True)
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
        f.write(config.to_json(indent=2))
    start_epoch = int(state.step) // steps_per_epoch
    if start_epoch >= config.num_epochs:
        print(f"Already trained {start_epoch} epochs; nothing to do (raise --config.num_epochs "
              "to train further).", flush=True)
        checkpointer.close()
        return {"step": int(state.step), "epoch": start_epoch}

    train_images = jax.device_put(dataset.train_images)
    test_x = jax.jit(prepare_batch, static_argnums=2)(
        jax.random.fold_in(keys.eval, 0), jax.device_put(dataset.test_images), config.binarize)
    train_steps = make_train_steps(vae, optimizer, config.beta, config.binarize)
    evaluate = make_evaluate(vae)
    show_progress = config.progress_bar and sys.stderr.isatty()
    chunks = _progress_chunks(steps_per_epoch, 20) if show_progress else 1

    record: dict[str, float] = {}
    for epoch in range(start_epoch + 1, config.num_epochs + 1):
        start = time.perf_counter()
        indices = epoch_batch_indices(keys.shuffle, epoch, num_train, config.batch_size)
        indices = indices.reshape(chunks, steps_per_epoch // chunks, config.batch_size)
        bar = _progress_bar(steps_per_epoch, epoch, config.num_epochs) if show_progress else None
        chunk_metrics = []
        for chunk in range(chunks):
            state, metrics = train_steps(state, train_images, indices[chunk])
            chunk_metrics.append(metrics)
            if bar is not None:
                jax.block_until_ready(metrics)
                bar.update(steps_per_epoch // chunks)
        if bar is not None:
            bar.close()
        train = jax.device_get(jax.tree.map(lambda *m: jnp.mean(jnp.stack(m)), *chunk_metrics))
        test = jax.device_get(evaluate(state.params, test_x, jax.random.fold_in(keys.eval, 1)))
        seconds = time.perf_counter() - start
        step = int(state.step)

        checkpointer.save(step, _to_checkpoint(state), config)
        record = {"step": step, "epoch": epoch,
                  **{f"train_{k}": float(v) for k, v in train.items()},
                  **{f"test_{k}": float(v) for k, v in test.items()},
                  "epoch_time_s": round(seconds, 3)}
        with open(metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        write_pictures(workdir, epoch, vae, state.params, test_x, jax.random.fold_in(keys.eval, 2))
        print(f"epoch {epoch:3d}/{config.num_epochs}  step {step:6d}  "
              f"train {_format_terms(train)}  test {_format_terms(test)}  "
              f"{seconds:6.2f} s ({steps_per_epoch * config.batch_size / seconds:,.0f} ex/s)",
              flush=True)
    checkpointer.close()
    return record


def _progress_bar(total: int, epoch: int, num_epochs: int):
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel

    return tqdm(total=total, desc=f"epoch {epoch}/{num_epochs}", unit="step", leave=False)
