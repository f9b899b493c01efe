"""Pictures of a run: ``python scripts/visualize.py --workdir=DIR [--step=N] [--out=DIR/plots]``.

Restores the latest (or `--step`) checkpoint of a `scripts/train.py` run in DIR with its dataset
and writes PNGs to `--out`: reconstructions, prior samples (VAEs only: a plain autoencoder has no
prior), the latent scatter coloured by label (the top two principal axes when the latent space has
more than two dimensions), the manifold grid (2-D latent spaces only), interpolations, traversals,
training curves and the rate–distortion path over the epochs (VAEs only). See
`vae_jax.app.plots.visualize_run` for what each shows.

It needs matplotlib (the ``plots`` extra) and, for a run on a dataset by name, TensorFlow Datasets
(``data``): without them it stops with one line naming the ``pip install`` to run
(`vae_jax.app.optional`; a missing matplotlib before any other work).
"""

from absl import flags

from vae_jax.app import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Folder of a scripts/train.py run.", required=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to draw (default: the latest).")
_OUT = flags.DEFINE_string("out", None, "Folder for the PNG files (default: WORKDIR/plots).")
_SEED = flags.DEFINE_integer(
    "seed", None, "Fixes the test set's binarisation and the prior samples (default: the run's "
    "own keys: the test set that training evaluated).")
_DATA_DIR, _MANUAL_DIR = cli.define_data_dir_flags()
USAGE = "python scripts/visualize.py --workdir=DIR [--step=N] [--out=FOLDER] [--seed=S]"


def visualize():
    from vae_jax.app import plots  # pylint: disable=import-outside-toplevel

    written = plots.visualize_workdir(_WORKDIR.value, step=_STEP.value, out_dir=_OUT.value,
                                      data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value,
                                      seed=_SEED.value)
    for name, result in written.items():
        print(f"{name:16s} {result}", flush=True)


if __name__ == "__main__":
    cli.run(visualize, USAGE)
