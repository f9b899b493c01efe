"""Anomaly scores (`vae_jax.app.scores`, scripts/score.py): the detection metrics against hand
computations (ties included) and a brute-force pairwise count, the lossless coders against Pillow
and zlib themselves, the per-example scores against the evaluation's, compression_report's
figures; scripts/score.py end to end on a tiny run trained on mocked MNIST, and its one-line
errors (another image shape, an unknown split, a plain AE asked for an NLL, an output inside the
run folder, --held_out without excluded labels)."""

import functools
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import zlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import vae_jax
from conftest import REPO, assert_one_line_error
from mock_train import small_config
from vae_jax.app import data, evaluation, run_folder, runs, scores, training

MOCK_EXAMPLES = 64

# --- Detection metrics: hand computations -----------------------------------------------------

# in = [1, 2, 3, 3], OOD = [3, 4, 2]: 12 pairs (OOD, in).
IN, OUT = [1.0, 2.0, 3.0, 3.0], [3.0, 4.0, 2.0]


def test_auroc_by_hand_with_ties():
    # OOD 3 beats 1, 2 and ties 3, 3: 2 + ½·2 = 3; OOD 4 beats all four: 4; OOD 2 beats 1 and
    # ties 2: 1.5. (3 + 4 + 1.5) / 12.
    assert scores.auroc(IN, OUT) == pytest.approx(8.5 / 12)
    assert scores.auroc([0, 1], [2, 3]) == 1.0 and scores.auroc([2, 3], [0, 1]) == 0.0
    assert scores.auroc([5, 5, 5], [5, 5]) == 0.5


def test_auprc_by_hand_with_ties():
    # Thresholds 4, 3, 2, 1: (TP, FP) = (1, 0), (2, 2), (3, 3), (3, 4); recall 1/3, 2/3, 1, 1;
    # precision 1, 1/2, 1/2, 3/7. AP = 1/3·1 + 1/3·1/2 + 1/3·1/2 + 0·3/7 = 2/3.
    assert scores.auprc(IN, OUT) == pytest.approx(2 / 3)
    assert scores.auprc([0, 1], [2, 3]) == 1.0
    # Every score tied: one threshold, precision = the OOD fraction.
    assert scores.auprc([1, 1, 1], [1]) == pytest.approx(1 / 4)


def test_fpr_at_95_tpr_by_hand():
    # ⌈0.95·3⌉ = 3: the threshold is the 3rd-largest OOD score, 2; in ≥ 2: three of four.
    assert scores.fpr_at_tpr(IN, OUT) == 0.75
    # ⌈0.6·3⌉ = 2: threshold 3; in ≥ 3: two of four.
    assert scores.fpr_at_tpr(IN, OUT, tpr=0.6) == 0.5
    # 0.95·20 = 19 exactly (not 19.000000000000004 → 20): threshold 1, in ≥ 1: 19 of 20.
    assert scores.fpr_at_tpr(np.arange(20) + 0.5, np.arange(20)) == 0.95
    with pytest.raises(vae_jax.ConfigError, match="fpr_at_tpr: tpr must be a number in"):
        scores.fpr_at_tpr(IN, OUT, tpr=0.0)


def test_auroc_equals_a_brute_force_pairwise_count():
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = rng.integers(0, 8, rng.integers(1, 40)).astype(float)  # small integers: many ties
        t = rng.integers(0, 8, rng.integers(1, 40)).astype(float)
        pairs = [(1.0 if b > a else 0.5 if b == a else 0.0) for a in s for b in t]
        assert scores.auroc(s, t) == pytest.approx(np.mean(pairs), abs=1e-12)
        # FPR at 95 % TPR by brute force over every threshold.
        fprs = [np.mean(s >= tau) for tau in np.unique(np.concatenate([s, t]))
                if np.mean(t >= tau) >= 0.95]
        assert scores.fpr_at_tpr(s, t) == pytest.approx(min(fprs))


def test_metrics_refuse_empty_or_non_finite_scores():
    with pytest.raises(vae_jax.DataError, match="scores_in must be a non-empty 1-D"):
        scores.auroc([], [1.0])
    with pytest.raises(vae_jax.DataError, match="scores_out holds NaN"):
        scores.detection_metrics([1.0], [np.nan])
    for tpr in (0.0, 1.5, -1, float("nan"), np.array(2.0)):
        with pytest.raises(vae_jax.ConfigError, match=r"tpr must be a number in \(0, 1\], got"):
            scores.fpr_at_tpr([1.0], [2.0], tpr)
    for tpr in ("0.95", None, True, [0.95], 1j):
        with pytest.raises(vae_jax.ConfigError, match=r"tpr must be one real number"):
            scores.fpr_at_tpr([1.0], [2.0], tpr)
    for tpr in (np.float32(0.5), np.array(0.95), jnp.float32(0.95), 1):
        assert scores.fpr_at_tpr([1.0], [2.0], tpr) == 0.0
    with pytest.raises(vae_jax.DataError, match="scores_in must be a 1-D array of numbers, got "
                                                "\\['a'\\]"):
        scores.fpr_at_tpr(["a"], [1.0])


# --- Lossless coders --------------------------------------------------------------------------

def test_png_and_zlib_sizes_are_those_of_pillow_and_zlib():
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (3, 8, 8, 1), np.uint8)
    binary = (rng.random((3, 8, 8, 1)) < 0.3).astype(np.float32)
    bits = scores.png_bits(binary, binarized=True)
    for n in range(3):
        picture = Image.open(io.BytesIO(_png_bytes(binary[n])))
        assert picture.mode == "1"  # a 1-bit PNG that decodes to the same pixels
        np.testing.assert_array_equal(np.asarray(picture), binary[n, ..., 0] > 0.5)
        assert bits[n] == 8 * len(_png_bytes(binary[n]))
    assert scores.zlib_bits(binary, True)[0] == 8 * len(
        zlib.compress(np.packbits(binary[0].astype(np.uint8).ravel()).tobytes(), 9))
    assert scores.zlib_bits(grey)[1] == 8 * len(zlib.compress(grey[1].tobytes(), 9))
    assert scores.zlib_set_bits(grey) == 8 * len(zlib.compress(grey.tobytes(), 9))
    decoded = np.asarray(Image.open(io.BytesIO(_png_bytes(grey[2], grey_levels=True))))
    np.testing.assert_array_equal(decoded, grey[2, ..., 0])
    assert scores.raw_bits((28, 28, 1), binarized=True) == 784
    assert scores.raw_bits((28, 28, 1), binarized=False) == 6272


def _png_bytes(image, grey_levels=False):
    picture = (Image.fromarray(image[..., 0], mode="L") if grey_levels
               else Image.fromarray(image[..., 0] > 0.5))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


# --- Scores of a model ------------------------------------------------------------------------

def tiny_model(stochastic=True):
    vae = vae_jax.mlp_vae(input_shape=(6, 6, 1), latent_dim=3, hidden_dims=(16,),
                          stochastic=stochastic)
    x = jax.random.bernoulli(jax.random.key(1), 0.4, (10, 6, 6, 1)).astype(jnp.float32)
    return vae, vae.init(jax.random.key(0)), x


def test_scores_are_the_evaluations_and_the_complexity_formula():
    vae, params, x = tiny_model()
    key = jax.random.key(7)
    result = scores.score_examples(vae, params, x, key, binarized=True, num_samples=8,
                                   batch_size=4, progress=False)
    assert set(result) == {"reconstruction", "neg_elbo", "nll", "complexity", "png_bits"}
    report = evaluation.evaluate(vae, params, x, key, num_samples=8, batch_size=4,
                                 progress=False)
    assert np.mean(result["nll"]) == pytest.approx(report["nll"], rel=1e-6)
    assert np.mean(result["neg_elbo"]) == pytest.approx(report["neg_elbo"], rel=1e-5)
    np.testing.assert_allclose(result["complexity"],
                               result["nll"] / math.log(2) - scores.png_bits(x, True))
    mean, _ = vae.encode(params, x)
    expected = -jax.vmap(vae.log_likelihood, (None, 0, 0))(params, x, vae.decode(params, mean))
    np.testing.assert_allclose(result["reconstruction"], expected, rtol=1e-5)


def test_a_plain_autoencoder_has_only_its_reconstruction_error():
    vae, params, x = tiny_model(stochastic=False)
    assert scores.check_scores(vae, None) == ("reconstruction",)
    result = scores.score_examples(vae, params, x, jax.random.key(0), True)
    assert set(result) == {"reconstruction"}
    for name in ("nll", "neg_elbo", "complexity"):
        with pytest.raises(vae_jax.ConfigError, match="plain autoencoder .* no q.z.x. and no "
                           "likelihood"):
            scores.check_scores(vae, [name])
    with pytest.raises(vae_jax.ConfigError, match="unknown score 'nl'"):
        scores.check_scores(vae, ["nl"])


def test_compression_report_of_a_binarised_model():
    vae, params, _ = tiny_model()
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (12, 6, 6, 1), np.uint8)
    key = jax.random.key(3)
    report = scores.compression_report(vae, params, images, key, binarize=True)
    x = evaluation.test_set(images, True, key)
    terms = evaluation.elbo_terms(vae, params, x, key)
    assert report["raw_bits"] == 36 and report["binarized"]
    assert report["rate_bits"] == pytest.approx(float(np.mean(terms["kl"])) / math.log(2))
    assert report["neg_elbo_bits"] == pytest.approx(
        float(np.mean(terms["neg_elbo"])) / math.log(2), rel=1e-6)
    assert report["png_bits"] == pytest.approx(np.mean(scores.png_bits(np.asarray(x), True)))
    assert "bits-back" in scores.format_compression(report)
    assert "dequantisation" not in scores.format_compression(report)
    dense = {**report, "dequantization_bits": 36 * math.log2(255)}  # a Gaussian likelihood's
    assert "(bits-back, lossless) *" in scores.format_compression(dense)
    assert "* with the dequantisation term D·log₂ 255 = 287.8 bits" in scores.format_compression(
        dense)
    with pytest.raises(vae_jax.ConfigError, match="plain autoencoder"):
        scores.compression_report(*tiny_model(False)[:2], images, key)
    with pytest.raises(vae_jax.DataError, match="x_uint8 must be uint8"):
        scores.compression_report(vae, params, images / 255.0, key)


def test_unknown_split_names_the_splits():
    data.check_split_name("mnist", "test[:10%]+train", ["train", "test"])
    data.check_split_name("mnist", "validation", [])  # nothing declared: not checked
    with pytest.raises(vae_jax.DataError, match=r"dataset 'mnist' has no split 'validation' "
                       r"\(its splits: test, train\)"):
        data.check_split_name("mnist", "validation[:5]", ["train", "test"])


def _fake_run(folder, *entries):
    folder.mkdir(parents=True)
    for name in entries:
        if "." in name:
            (folder / name).write_text("{}")
        else:
            (folder / name).mkdir()
    return folder


def test_output_inside_any_run_folder_is_refused(tmp_path):
    run = tmp_path / "run"
    other = _fake_run(tmp_path / "other", "config.json", "checkpoints")
    starting = _fake_run(tmp_path / "starting", ".lock", "config.json")  # before its 1st save
    sweep = _fake_run(tmp_path / "sweep", "sweep.json", "checkpoints")
    for prefix, where in ((run / "scores", run),  # the run read, even before it exists
                          (run / "plots" / "scores", run),
                          (tmp_path / "bg" / "x" / "scores", tmp_path / "bg"),  # --background
                          (other / "scores", other), (other / "checkpoints" / "1" / "s", other),
                          (starting / "scores", starting), (sweep / "00_a" / "s", sweep)):
        with pytest.raises(vae_jax.ConfigError, match=f"inside the run folder {where}"):
            scores.check_output(str(prefix), str(run), str(tmp_path / "bg"))
        assert not (tmp_path / "run").exists()
    for prefix in (f"{run}/.", f"{run}/..", f"{run}/", ""):  # names no file
        with pytest.raises(vae_jax.ConfigError, match="names no file"):
            scores.check_output(prefix, str(run))
    (tmp_path / "steps" / "checkpoints" / "60").mkdir(parents=True)  # what readers read as a run
    with pytest.raises(vae_jax.ConfigError, match=f"inside the run folder {tmp_path / 'steps'}"):
        scores.check_output(str(tmp_path / "steps" / "images" / "s"), str(run))
    project = _fake_run(tmp_path / "project", "config.json")  # one entry: not a run
    tools = _fake_run(tmp_path / "tools", "checkpoints")  # no step in it: not a run
    for prefix in (tmp_path / "elsewhere" / "scores", project / "out" / "scores",
                   tools / "out" / "scores"):
        scores.check_output(str(prefix), str(run), str(tmp_path / "bg"))
        assert os.path.isdir(os.path.dirname(prefix))
    assert scores.output_prefix("/a/b.npz") == "/a/b" and scores.output_prefix("/a/b") == "/a/b"


def test_pictures_go_to_the_runs_plots_or_outside_every_run(tmp_path):
    run = _fake_run(tmp_path / "run", "config.json", "checkpoints")
    other = _fake_run(tmp_path / "other", "config.json", "metrics.jsonl")
    check = functools.partial(run_folder.check_reader_output, what="the pictures", fix="fix",
                              runs=(str(run),), allowed=str(run / "plots"))
    for folder in (run / "plots", run / "plots" / "step_5", tmp_path / "pictures"):
        check(str(folder))
    for folder, where in ((run, run), (run / "images", run), (other / "plots", other)):
        with pytest.raises(vae_jax.ConfigError, match=f"the pictures would land inside the run "
                                                      f"folder {where},.*: fix"):
            check(str(folder))
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json", "plots"]
    # A plots/ that links into another run is not the run's own.
    linked = _fake_run(tmp_path / "linked", "config.json", "checkpoints")
    (linked / "plots").symlink_to(other)
    with pytest.raises(vae_jax.ConfigError, match=f"inside the run folder {other}"):
        run_folder.check_reader_output(str(linked / "plots"), "the pictures", "fix",
                                       runs=(str(linked),), allowed=str(linked / "plots"))


def test_overlapping_sets_and_unseen_labels_are_warned_of():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 4, 4, 1), dtype=np.uint8)
    labels = np.arange(10)

    def warnings(in_images, out_images, in_labels=labels[:6], excluded=(), in_name="mnist"):
        raw = {"in": (in_images, in_labels), "out": (out_images, labels[:len(out_images)])}
        sets = {"in": (None, in_labels, in_name, "test"), "out": (None, None, "x", "test")}
        return scores._set_warnings(raw, sets, excluded, "mnist", held_out=False)

    assert not warnings(images[:6], images[6:])
    assert warnings(images[:6], images[4:]) == [
        "2 of the 6 OOD images are also in the in-distribution set (identical pixels): the two "
        "splits overlap"]
    assert warnings(images[:6], images[:6])[0].startswith("6 of the 6 OOD images")
    assert warnings(images[:6], images[6:], excluded=(1, 7))[0].startswith(
        "the in-distribution set holds 1 images of the labels [1, 7]")
    assert not warnings(images[:6], images[6:], excluded=(1,), in_name="fashion_mnist")


# --- score_workdir and scripts/score.py on a mocked run ------------------------------------------

@pytest.fixture(scope="module", name="mocked_run")
def fixture_mocked_run(tmp_path_factory):
    """A 1-epoch run of `small_config` on mocked MNIST; the mock stays on for the module."""
    root = tmp_path_factory.mktemp("scores")
    workdir = str(root / "run")
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        training.train_and_evaluate(small_config(num_epochs=1, data_dir=str(root / "tfds")),
                                    workdir)
        yield workdir


def run_mocked(script, *args, splits=False):
    """scripts/`script` in a subprocess under tfds.testing.mock_data; with `splits`, the mocked
    datasets are taken to declare the splits train and test (mocked TFDS declares none)."""
    path = str(REPO / "scripts" / script)
    patch = ("import vae_jax.app.scores\n"
             "vae_jax.app.data._declared_splits = lambda builder: ['train', 'test']\n"
             if splits else "")
    command = [sys.executable, "-c",
               "import runpy, sys, tensorflow_datasets as tfds\n" + patch +
               f"sys.argv = [{path!r}] + sys.argv[1:]\n"
               f"with tfds.testing.mock_data(num_examples={MOCK_EXAMPLES}):\n"
               f"    runpy.run_path({path!r}, run_name='__main__')", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})


def run_score(*args, splits=False):
    return run_mocked("score.py", *args, splits=splits)


@pytest.mark.slow
def test_score_script_writes_scores_metrics_and_histograms(mocked_run, tmp_path):
    before = sorted(os.listdir(mocked_run))
    prefix = tmp_path / "out" / "fashion"
    result = run_score(f"--workdir={mocked_run}", "--dataset=fashion_mnist",
                       f"--output={prefix}.npz", "--num_samples=4", "--batch_size=16")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "AUROC" in result.stdout and "complexity (bits)" in result.stdout
    summary = json.loads((tmp_path / "out" / "fashion.json").read_text())
    assert summary["in"] == {"dataset": "mnist", "split": "test", "num_examples": MOCK_EXAMPLES}
    assert summary["out"]["dataset"] == "fashion_mnist" and summary["num_samples"] == 4
    assert set(summary["metrics"]) == {"reconstruction", "neg_elbo", "nll", "complexity"}
    arrays = np.load(f"{prefix}.npz")
    for name, metrics in summary["metrics"].items():
        assert metrics["auroc"] == pytest.approx(scores.auroc(arrays[f"in_{name}"],
                                                              arrays[f"out_{name}"]))
        assert arrays[f"out_{name}"].shape == (MOCK_EXAMPLES,)
    lines = (tmp_path / "out" / "fashion.csv").read_text().splitlines()
    assert lines[0] == "set,index,label,reconstruction,neg_elbo,nll,complexity,png_bits"
    assert len(lines) == 1 + 2 * MOCK_EXAMPLES
    assert (tmp_path / "out" / "fashion.png").stat().st_size > 0
    assert sorted(os.listdir(mocked_run)) == before  # the run folder only read


@pytest.mark.slow
def test_score_script_refuses_another_image_shape(mocked_run, tmp_path):
    out = f"--output={tmp_path / 's'}"
    assert_one_line_error(run_score(f"--workdir={mocked_run}", "--dataset=cifar10", out,
                                    "--nohistogram"),
                          "'cifar10' test images have shape (32, 32, 3), but the run models "
                          "images of shape (28, 28, 1)")


@pytest.mark.slow
def test_score_script_refuses_an_unknown_split(mocked_run, tmp_path):
    out = f"--output={tmp_path / 's'}"
    assert_one_line_error(run_score(f"--workdir={mocked_run}", "--split=validation", out,
                                    "--nohistogram", splits=True),
                          "dataset 'mnist' has no split 'validation' (its splits: test, train)")


def _with_config(workdir, tmp_path, **fields):
    """A copy of `workdir` whose newest checkpoint is re-saved at a later step with `fields`
    added to its config (as a run of a config with those fields would save it)."""
    copy = str(tmp_path / "run")
    shutil.copytree(workdir, copy)
    checkpointer = run_folder.checkpointer(copy)
    step = run_folder.checkpoint_steps(copy)[-1]
    config = ml_collections.ConfigDict({**checkpointer.saved_config(step), **fields})
    base = small_config(**{k: v for k, v in config.items() if k in small_config()})
    state = training.initial_state(base, (28, 28, 1), 1)
    checkpointer.save(step + 1, training.to_checkpoint(state), config)
    checkpointer.close()
    return copy


@pytest.mark.slow
def test_held_out_labels_and_a_plain_autoencoders_scores_and_codes(mocked_run, tmp_path):
    with pytest.raises(vae_jax.ConfigError, match="--held_out needs a run trained without some "
                       "labels"):
        scores.score_workdir(mocked_run, str(tmp_path / "x"), held_out=True)
    held = _with_config(mocked_run, tmp_path, exclude_labels=(0, 1, 2))
    summary = scores.score_workdir(held, str(tmp_path / "held"), held_out=True, num_samples=2,
                                   batch_size=16, histogram=False, progress=False)
    arrays = np.load(tmp_path / "held.npz")
    assert np.isin(arrays["out_labels"], [0, 1, 2]).all()
    assert not np.isin(arrays["in_labels"], [0, 1, 2]).any()
    assert len(arrays["in_labels"]) + len(arrays["out_labels"]) == MOCK_EXAMPLES
    assert summary["held_out_labels"] == [0, 1, 2] and "auroc" in summary["metrics"]["nll"]
    assert summary["warnings"] == []
    with pytest.raises(vae_jax.ConfigError, match="--held_out takes both sets from --split=test: "
                                                  "drop --in_split=train"):
        scores.score_workdir(held, str(tmp_path / "x"), held_out=True, in_split="train")
    # Without --held_out the run's own test split, labels 0-2 included, is the in-set: said.
    unheld = scores.score_workdir(held, str(tmp_path / "unheld"), out_dataset="fashion_mnist",
                                  scores=["neg_elbo"], histogram=False, progress=False)
    # (Mocked TFDS draws the same images for every dataset: the sets overlap, and are said to.)
    assert len(unheld["warnings"]) == 2 and unheld["warnings"][1] == (
        f"{MOCK_EXAMPLES} of the {MOCK_EXAMPLES} OOD images are also in the in-distribution set "
        "(identical pixels): the two splits overlap")
    assert re.fullmatch(r"the in-distribution set holds \d+ images of the labels \[0, 1, 2\] "
                        r"the run was trained without: pass --held_out to score them as OOD",
                        unheld["warnings"][0])
    assert "warning: the in-distribution set holds" in scores.format_scores(unheld)
    # The train split of a run trained without labels 0-2 is still scored and probed whole.
    train = scores.score_workdir(held, str(tmp_path / "held_train"), held_out=True,
                                 out_split="train", scores=["neg_elbo"], histogram=False,
                                 progress=False)
    assert train["in"]["num_examples"] + train["out"]["num_examples"] == MOCK_EXAMPLES
    assert train["out"]["num_examples"] > 0
    codes = scores.codes_workdir(held, str(tmp_path / "held_codes"), split="train", k=3,
                                 compression=False)
    assert codes["excluded_from_training"] == [0, 1, 2]
    assert np.isin(np.load(tmp_path / "held_codes_labels.npy"), [0, 1, 2]).any()
    assert "trained without" in scores.format_codes(codes)
    # The likelihood ratio against a background run: against the run itself it is 0 (the same
    # model, images and keys); against another, nll − the other's nll.
    itself = scores.score_workdir(held, str(tmp_path / "ratio"), held_out=True, num_samples=2,
                                  batch_size=16, histogram=False, progress=False,
                                  background=held, scores=["nll"])
    ratio = np.load(tmp_path / "ratio.npz")
    np.testing.assert_array_equal(ratio["in_likelihood_ratio"], 0.0)
    assert itself["metrics"]["likelihood_ratio"]["auroc"] == 0.5
    scores.score_workdir(held, str(tmp_path / "ratio2"), held_out=True, num_samples=2,
                         batch_size=16, histogram=False, progress=False, background=mocked_run)
    ratio = np.load(tmp_path / "ratio2.npz")
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        other = runs.load_run(mocked_run)
    key = evaluation.eval_key(other.config)  # the held copy's too: the same seed
    x = evaluation.test_set(other.dataset.test_images, True, key)
    kept = np.asarray(x)[~np.isin(other.dataset.test_labels, [0, 1, 2])]  # the "in" images
    other_nll = scores.iwae_nll(other.vae, other.params, kept, key, 2, 16, progress=False)
    np.testing.assert_allclose(ratio["in_likelihood_ratio"], ratio["in_nll"] - other_nll,
                               rtol=1e-6, atol=1e-4)
    ae = _with_config(mocked_run, tmp_path / "ae", model="ae")
    with pytest.raises(vae_jax.ConfigError, match=r"plain autoencoder \(model='ae'\) .*"
                       r"\(--scores=reconstruction\)"):
        scores.score_workdir(ae, str(tmp_path / "ae_scores"), scores=["nll"])
    summary = scores.score_workdir(ae, str(tmp_path / "ae_scores"), out_dataset="fashion_mnist",
                                   histogram=False, progress=False)
    assert summary["scores"] == ["reconstruction"]
    assert list(summary["metrics"]) == ["reconstruction"]
    codes = scores.codes_workdir(ae, str(tmp_path / "ae_codes"), k=3)
    assert "compression" not in codes and "log_variance" not in codes["files"]
    assert np.load(tmp_path / "ae_codes_mean.npy").shape == (MOCK_EXAMPLES, 4)
