"""Evaluate a run: ``python scripts/evaluate.py --workdir=DIR [--step=N] [--num_samples=K]``.

Restores the latest (or `--step`) checkpoint of a `scripts/train.py` run in DIR, evaluates it on the
test split (single-sample −ELBO, rate, distortion, the importance-weighted NLL estimate with K
samples, bits per dimension, active units, KL per latent dimension; for a plain autoencoder the
reconstruction loss and the code's sparsity instead), and the clean-target reconstruction
log-likelihood and PSNR at each of `--noise_levels` (denoising), prints a table and writes
DIR/eval.json. The test set and the samples are the run's own unless `--seed` is given, so the
single-sample −ELBO equals the `test_neg_elbo` of DIR/metrics.jsonl for that checkpoint. See
`vae_jax.app.evaluation` for the definitions.
"""

import json

from absl import flags

from vae_jax.app import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Folder of a scripts/train.py run.", required=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest).")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 5000,
                                    "Importance samples K per test example for the NLL estimate.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Test examples per jitted call.")
_CHUNK_SIZE = flags.DEFINE_integer("chunk_size", 20,
                                   "Importance samples per scan step (memory ∝ batch × chunk).")
_SEED = flags.DEFINE_integer(
    "seed", None, "Fixes the test set's binarisation and every sample (default: the run's own "
    "keys, so that the -ELBO equals the test_neg_elbo that training logged for the checkpoint).")
_DATA_DIR, _MANUAL_DIR = cli.define_data_dir_flags()
_NOISE_LEVELS = flags.DEFINE_list(
    "noise_levels", "0,0.1,0.3,0.5", "Denoising rows: corruption levels (σ for gaussian, p for "
    "mask and salt_and_pepper) at which the clean-target log p(x|z) and PSNR are reported; "
    "empty for none.")
_NOISE_KIND = flags.DEFINE_enum(
    "noise_kind", None, ["gaussian", "mask", "salt_and_pepper"],
    "Corruption of the denoising rows (default: the run's config.corruption, gaussian for a run "
    "trained without one).")
_JSON = flags.DEFINE_bool("json", False, "Print the report as JSON instead of a table.")
USAGE = "python scripts/evaluate.py --workdir=DIR [--step=N] [--num_samples=K] [--seed=S]"


def evaluate():
    from vae_jax.app import evaluation  # pylint: disable=import-outside-toplevel

    report = evaluation.evaluate_workdir(
        _WORKDIR.value, step=_STEP.value, num_samples=_NUM_SAMPLES.value,
        batch_size=_BATCH_SIZE.value, seed=_SEED.value, chunk_size=_CHUNK_SIZE.value,
        data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value,
        noise_levels=_NOISE_LEVELS.value or None, noise_kind=_NOISE_KIND.value)
    print(json.dumps(report, indent=2) if _JSON.value else evaluation.format_report(report),
          flush=True)


if __name__ == "__main__":
    cli.run(evaluate, USAGE)
