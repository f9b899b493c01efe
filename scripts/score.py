"""Anomaly scores: ``python scripts/score.py --workdir=DIR --dataset=NAME --output=PREFIX``.

Scores every image of an out-of-distribution (OOD) split (``--dataset``, ``--split``) and of the
in-distribution split (``--in_dataset``, ``--in_split``; default: the run's own dataset, test split)
with the run's model: −ELBO, the importance-weighted NLL (K = ``--num_samples``), the
input-complexity score S(x) = −log2 p(x) − L(x) (L: PNG bits; Serrà et al. 2020) and the
reconstruction error (a plain autoencoder's only score); with ``--background=DIR`` (a second run)
the likelihood ratio nll − nll_background (Ren et al. 2019). Prints AUROC, AUPRC and FPR at 95 % TPR of
OOD-vs-in for each score (higher score = more anomalous, OOD positive) and writes PREFIX.npz,
PREFIX.csv, PREFIX.json and the histograms PREFIX.png — outside the run folder, which it only reads.
``--held_out`` compares, for a run trained without some labels (config.exclude_labels), the test
images of the kept labels with those of the excluded ones. See `vae_jax.app.scores`.
"""

import json

from absl import flags

from vae_jax.app import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Folder of a scripts/train.py run.", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Prefix of the files written (PREFIX.npz, .csv, "
                              ".json, .png); not inside any run folder.", required=True)
_DATASET = flags.DEFINE_string("dataset", None, "TFDS image dataset scored as OOD (default: the "
                               "run's own).")
_SPLIT = flags.DEFINE_string("split", "test", "Its split (any TFDS split, e.g. test[:1000]).")
_IN_DATASET = flags.DEFINE_string("in_dataset", None, "In-distribution dataset (default: the "
                                  "run's own).")
_IN_SPLIT = flags.DEFINE_string("in_split", None, "In-distribution split (default: test; with "
                                "--held_out, --split).")
_HELD_OUT = flags.DEFINE_bool("held_out", False, "In = --split images of the labels the run was "
                              "trained on, OOD = those of config.exclude_labels.")
_SCORES = flags.DEFINE_list("scores", None, "Scores to compute, of reconstruction, neg_elbo, nll, "
                            "complexity (default: every one the model defines).")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 100, "Importance samples K per image (nll, "
                                    "complexity).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Images per jitted call of the NLL.")
_CHUNK_SIZE = flags.DEFINE_integer("chunk_size", 20, "Importance samples per scan step.")
_SEED = flags.DEFINE_integer("seed", None, "Fixes the binarisation and samples (default: the "
                             "run's own evaluation keys).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_DATA_DIR, _MANUAL_DIR = cli.define_data_dir_flags()
_DATASET_MANUAL_DIR = flags.DEFINE_string("dataset_manual_dir", None, "Original files of "
                                          "--dataset when it is not the run's dataset.")
_IN_MANUAL_DIR = flags.DEFINE_string("in_manual_dir", None, "Original files of --in_dataset when "
                                     "it is not the run's dataset.")
_BACKGROUND = flags.DEFINE_string(
    "background", None, "Folder of a background run (same image shape and binarisation): adds "
    "likelihood_ratio = nll - nll_background (Ren et al. 2019).")
_HISTOGRAM = flags.DEFINE_bool("histogram", True, "Draw PREFIX.png (needs matplotlib).")
_JSON = flags.DEFINE_bool("json", False, "Print the result as JSON instead of a table.")
USAGE = ("python scripts/score.py --workdir=DIR --output=PREFIX [--dataset=NAME] [--split=test] "
         "[--in_dataset=NAME] [--in_split=test] [--held_out] [--num_samples=K]")


def score():
    from vae_jax.app import scores  # pylint: disable=import-outside-toplevel

    summary = scores.score_workdir(
        _WORKDIR.value, _OUTPUT.value, out_dataset=_DATASET.value, out_split=_SPLIT.value,
        in_dataset=_IN_DATASET.value, in_split=_IN_SPLIT.value, held_out=_HELD_OUT.value,
        scores=_SCORES.value, num_samples=_NUM_SAMPLES.value, batch_size=_BATCH_SIZE.value,
        chunk_size=_CHUNK_SIZE.value, seed=_SEED.value, step=_STEP.value,
        data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value,
        out_manual_dir=_DATASET_MANUAL_DIR.value, in_manual_dir=_IN_MANUAL_DIR.value,
        histogram=_HISTOGRAM.value, background=_BACKGROUND.value)
    print(json.dumps(summary, indent=2) if _JSON.value else scores.format_scores(summary),
          flush=True)


def manual_dir_flag(name: str) -> str:
    """The flag that gives the original files of dataset `name`."""
    if name == _DATASET.value:
        return "--dataset_manual_dir"
    return "--in_manual_dir" if name == _IN_DATASET.value else "--manual_dir"


if __name__ == "__main__":
    cli.run(score, USAGE, manual_dir_flag=manual_dir_flag)
