"""Codes for dimensionality reduction (`vae_jax.app.scores.knn_predict`, `knn_accuracy`,
scripts/codes.py): the k-nearest-neighbour classifier against a brute-force count, its tie rules
by hand; scripts/codes.py end to end on a tiny run trained on mocked MNIST (the exported arrays
are the encoder's, the CSV holds them, the compression figures are there) and its one-line
errors."""

import csv
import json
import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import vae_jax
from conftest import assert_one_line_error
from test_scores import MOCK_EXAMPLES, fixture_mocked_run, run_mocked  # noqa: F401 (fixture)
from vae_jax.app import evaluation, runs, scores



def brute_force_knn(train, labels, test, k):
    """Each test point: the k nearest by an explicit distance per pair (stable on ties), then a
    count of the votes; a tie in votes goes to the tied class whose member is nearest."""
    predictions = []
    for point in test:
        distances = [float(np.sqrt(np.sum((point - t) ** 2))) for t in train]
        order = sorted(range(len(train)), key=lambda i: (distances[i], i))[:k]
        votes = {}
        for i in order:
            votes[labels[i]] = votes.get(labels[i], 0) + 1
        best = max(votes.values())
        predictions.append(next(labels[i] for i in order if votes[labels[i]] == best))
    return np.array(predictions)


@pytest.mark.parametrize("k", [1, 3, 5, 8])
def test_knn_equals_a_brute_force_count(k):
    rng = np.random.default_rng(k)
    train = rng.normal(size=(60, 3))
    labels = rng.integers(0, 4, 60)
    test = rng.normal(size=(25, 3))
    expected = brute_force_knn(train, labels, test, k)
    np.testing.assert_array_equal(scores.knn_predict(train, labels, test, k, batch_size=7),
                                  expected)
    test_labels = rng.integers(0, 4, 25)
    assert scores.knn_accuracy(train, labels, test, test_labels, k) == pytest.approx(
        np.mean(expected == test_labels))


def test_knn_ties_by_hand():
    train = np.array([[0.0], [1.0], [-2.0], [3.0]])
    labels = np.array([7, 5, 5, 7])
    # k = 2 from 0.4: neighbours 0 (7) and 1 (5), one vote each: the nearest, 7.
    # k = 2 from 0.6: neighbours 1 (5) and 0 (7): 5. k = 4: two votes each: the nearest's class.
    # From 0.5 the two nearest are equally far: the lower index (0, label 7) comes first.
    assert scores.knn_predict(train, labels, [[0.4], [0.6], [0.5]], k=2).tolist() == [7, 5, 7]
    assert scores.knn_predict(train, labels, [[2.9]], k=4).tolist() == [7]
    assert scores.knn_predict(train, labels, [[0.5]], k=1).tolist() == [7]
    assert scores.knn_predict(train, labels, [[-1.9]], k=3).tolist() == [5]  # 5, 7, 5: two votes


def test_knn_refuses_bad_input():
    train, labels = np.zeros((4, 2)), np.arange(4)
    with pytest.raises(vae_jax.ConfigError, match="k must be a positive integer and at most 4"):
        scores.knn_predict(train, labels, np.zeros((1, 2)), k=5)
    with pytest.raises(vae_jax.DataError, match="codes must be"):
        scores.knn_predict(train, labels, np.zeros((1, 3)))
    with pytest.raises(vae_jax.DataError, match="test_labels must have shape"):
        scores.knn_accuracy(train, labels, np.zeros((2, 2)), np.zeros(3))


def run_codes(*args):
    return run_mocked("codes.py", *args)


@pytest.mark.slow
def test_codes_script_exports_codes_knn_and_compression(mocked_run, tmp_path):
    before = sorted(os.listdir(mocked_run))
    prefix = tmp_path / "codes"
    result = run_codes(f"--workdir={mocked_run}", f"--output={prefix}", "--k=3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3-NN accuracy" in result.stdout and "bits-back" in result.stdout
    mean = np.load(f"{prefix}_mean.npy")
    log_variance = np.load(f"{prefix}_log_variance.npy")
    labels = np.load(f"{prefix}_labels.npy")
    assert mean.shape == log_variance.shape == (MOCK_EXAMPLES, 4)
    # The encoder's (μ, log σ²) of the test set as the evaluation prepares it.
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        run = runs.load_run(mocked_run)
    key = evaluation.eval_key(run.config)
    x = evaluation.test_set(run.dataset.test_images, True, key)
    expected_mean, expected_log_variance = run.vae.encode(run.params, x)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_variance, expected_log_variance, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, run.dataset.test_labels)
    with open(f"{prefix}.csv", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == (["label"] + [f"mean_{i}" for i in range(4)]
                       + [f"log_variance_{i}" for i in range(4)])
    assert len(rows) == 1 + MOCK_EXAMPLES
    np.testing.assert_allclose(np.array(rows[1][1:], float), np.concatenate(
        [mean[0], log_variance[0]]), rtol=1e-6)
    summary = json.loads(open(f"{prefix}.json", encoding="utf-8").read())
    train_mean = np.asarray(run.vae.encode(run.params, evaluation.test_set(
        run.dataset.train_images, True, key))[0])
    assert summary["knn"]["accuracy"] == pytest.approx(scores.knn_accuracy(
        train_mean, run.dataset.train_labels, mean, labels, 3))
    compression = summary["compression"]
    assert compression["raw_bits"] == 784 and compression["binarized"]
    assert compression["neg_elbo_bits"] > compression["rate_bits"] > 0
    assert sorted(os.listdir(mocked_run)) == before


@pytest.mark.slow
def test_codes_script_refuses_an_output_in_the_run_folder(mocked_run):
    assert_one_line_error(run_codes(f"--workdir={mocked_run}",
                                    f"--output={os.path.join(mocked_run, 'codes')}"),
                          "would land inside the run folder")


def test_k_smallest_is_a_stable_argsort_with_and_without_ties():
    rng = np.random.default_rng(5)
    for distances in (rng.random((6, 200)), rng.integers(0, 3, (6, 200)).astype(float),
                      rng.integers(0, 40, (6, 200)).astype(float)):
        for k in (1, 5, 40):
            np.testing.assert_array_equal(
                scores._k_smallest(distances, k),  # pylint: disable=protected-access
                np.argsort(distances, axis=1, kind="stable")[:, :k])
