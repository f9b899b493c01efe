"""The small test model trained on mocked MNIST, in-process or as its own process.

``python tests/mock_train.py WORKDIR NUM_EPOCHS DATA_DIR [SWEEP]`` is `train` as a script (with a
sweep specification such as ``beta=1,2``, `train_sweep`), for tests that kill training with
SIGKILL (scripts/train.py cannot see mocked data). `tfds.testing.mock_data`
draws its examples from a fixed seed, so every process trains on the same data.
"""

import os
import sys

import jax
import numpy as np

import tensorflow_datasets as tfds

import vae_jax

from vae_jax.app import configs, run_folder, sweep as sweep_lib, training

NUM_EXAMPLES = 64  # 4 steps per epoch at batch size 16


def small_config(**overrides):
    """The default config with a tiny MLP (32 hidden units, 4 latents), batch 16, no progress
    bar, one epoch; `overrides` change any field."""
    config = configs.get_default()
    config.update(hidden_dims=(32,), latent_dim=4, batch_size=16, num_epochs=1,
                  progress_bar=False)
    config.update(overrides)
    return config


def mocked_mnist():
    """A context in which TFDS serves NUM_EXAMPLES random train and test images."""
    return tfds.testing.mock_data(num_examples=NUM_EXAMPLES)


def train(workdir: str, num_epochs: int, data_dir: str) -> dict[str, float]:
    """`training.train_and_evaluate` of `small_config` on mocked MNIST."""
    with mocked_mnist():
        return training.train_and_evaluate(
            small_config(num_epochs=num_epochs, data_dir=data_dir), workdir)


def train_sweep(workdir: str, num_epochs: int, data_dir: str, spec: str) -> dict:
    """`sweep.train_sweep` of `spec` on `small_config` on mocked MNIST."""
    with mocked_mnist():
        return sweep_lib.train_sweep(small_config(num_epochs=num_epochs, data_dir=data_dir),
                                     sweep_lib.parse_sweep(spec), workdir)


def restore_latest(workdir, config):
    """(step, state tree) of the newest intact checkpoint of a `small_config` run (mocked MNIST)."""
    state = training.initial_state(config, (28, 28, 1), 1)
    checkpointer = run_folder.checkpointer(workdir)
    try:
        return checkpointer.restore_latest(training.to_checkpoint(state), config)
    finally:
        checkpointer.close()


def assert_bit_identical(tree_a, tree_b):
    assert jax.tree.structure(tree_a) == jax.tree.structure(tree_b)
    for a, b in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b)):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), strict=True)


if __name__ == "__main__":
    try:
        if len(sys.argv) > 4:
            train_sweep(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
        else:
            train(sys.argv[1], int(sys.argv[2]), sys.argv[3])
    except vae_jax.VAEJaxError as error:  # as scripts/train.py reports it (vae_jax.app.cli.run)
        sys.exit(f"error: {error}")
