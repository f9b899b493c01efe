"""Codes of a run: ``python scripts/codes.py --workdir=DIR --output=PREFIX [--split=test]``.

Exports the posterior means μ(x) (a plain autoencoder's codes), for a VAE the log-variances
log σ²(x), and the labels of a split of the run's dataset to PREFIX_mean.npy,
PREFIX_log_variance.npy, PREFIX_labels.npy and PREFIX.csv; prints the k-nearest-neighbour accuracy
of the test codes classified by the train codes (how much class structure the unsupervised codes
keep) and, for a VAE, the compression figures of the split: the rate KL(q‖p)/ln 2 and the
bits-back codelength −ELBO/ln 2 beside PNG and zlib, in bits per image. Writes PREFIX.json with
all of it, outside the run folder, which it only reads. See `vae_jax.app.scores`.
"""

import json

from absl import flags

from vae_jax.app import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Folder of a scripts/train.py run.", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Prefix of the files written; not inside any run "
                              "folder.", required=True)
_SPLIT = flags.DEFINE_string("split", "test", "Split of the run's dataset whose codes to export.")
_K = flags.DEFINE_integer("k", 5, "Neighbours of the k-NN classifier.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_SEED = flags.DEFINE_integer("seed", None, "Fixes the binarisation (default: the run's own "
                             "evaluation keys).")
_COMPRESSION = flags.DEFINE_bool("compression", True, "Report the compression figures (VAEs).")
_DATA_DIR, _MANUAL_DIR = cli.define_data_dir_flags()
_JSON = flags.DEFINE_bool("json", False, "Print the result as JSON instead of text.")
USAGE = "python scripts/codes.py --workdir=DIR --output=PREFIX [--split=test] [--k=5]"


def codes():
    from vae_jax.app import scores  # pylint: disable=import-outside-toplevel

    summary = scores.codes_workdir(_WORKDIR.value, _OUTPUT.value, split=_SPLIT.value, k=_K.value,
                                   step=_STEP.value, seed=_SEED.value, data_dir=_DATA_DIR.value,
                                   manual_dir=_MANUAL_DIR.value, compression=_COMPRESSION.value)
    print(json.dumps(summary, indent=2) if _JSON.value else scores.format_codes(summary),
          flush=True)


if __name__ == "__main__":
    cli.run(codes, USAGE)
