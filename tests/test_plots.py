"""Pictures (vae_jax.plots): every plot writes a PNG of the expected size, bad shapes are named,
and importing vae_jax does not import matplotlib."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vae_jax.app import plots, run_folder

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_size=(100, 100)):
    """`path` is a PNG that decodes, at least `min_size` pixels and not of one colour."""
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE, path
    with Image.open(path) as picture:
        picture.load()
        assert picture.width >= min_size[0] and picture.height >= min_size[1], picture.size
        extrema = picture.convert("L").getextrema()
        assert extrema[0] < extrema[1], "a blank picture"


def fake_images(*shape, channels=1, seed=0):
    return np.random.default_rng(seed).uniform(size=shape + (8, 8, channels)).astype(np.float32)


def test_importing_vae_jax_and_plots_does_not_import_matplotlib():
    code = ("import sys, vae_jax, vae_jax.plots, vae_jax.latent\n"
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("channels", [1, 3])
def test_image_grid_and_reconstructions(tmp_path, channels):
    grid = plots.save_image_grid(str(tmp_path / "grid.png"), fake_images(20, channels=channels),
                                 columns=6, title="samples")
    assert_png(grid)
    pair = plots.save_reconstructions(str(tmp_path / "sub" / "rec.png"), fake_images(16, seed=1),
                                      fake_images(16, seed=2), columns=8)
    assert_png(pair, (300, 50))
    with Image.open(grid) as a, Image.open(pair) as b:
        assert b.width > a.width  # two panels side by side


@pytest.mark.parametrize("latent_dim", [1, 2, 6])
def test_latent_scatter_of_any_latent_size(tmp_path, latent_dim):
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(300, latent_dim))
    labels = rng.integers(0, 10, size=300)
    assert_png(plots.save_latent_scatter(str(tmp_path / "scatter.png"), codes, labels, "codes"))
    assert_png(plots.save_latent_scatter(str(tmp_path / "plain.png"), codes))


def test_scatter_axes_name_the_principal_components_for_larger_latents():
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(200, 5)) * np.array([5.0, 1.0, 1.0, 0.1, 0.1])
    figure = plots._figure(4, 4)  # pylint: disable=protected-access
    ax = figure.add_subplot()
    plots.draw_latent_scatter(ax, codes, rng.integers(0, 3, size=200))
    assert ax.get_xlabel().startswith("PC 1") and "d = 5" in ax.get_xlabel()
    assert ax.get_ylabel().startswith("PC 2")
    figure = plots._figure(4, 4)  # pylint: disable=protected-access
    ax = figure.add_subplot()
    plots.draw_latent_scatter(ax, codes[:, :2])
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("z₁", "z₂")


@pytest.mark.slow
def test_manifold_interpolations_and_traversals(tmp_path):
    from vae_jax import latent  # pylint: disable=import-outside-toplevel

    grid = np.asarray(latent.quantile_grid(5, 4))
    assert_png(plots.save_manifold(str(tmp_path / "manifold.png"), fake_images(5, 4), grid,
                                   "manifold"))
    assert_png(plots.save_interpolations(str(tmp_path / "interp.png"), fake_images(3, 7),
                                         ["0 → 1", "1 → 2", "2 → 3"]), (150, 60))
    assert_png(plots.save_traversals(str(tmp_path / "trav.png"), fake_images(4, 9),
                                     np.linspace(-3, 3, 9)), (150, 60))
    per_dim = np.stack([np.linspace(-i - 1, i + 1, 9) for i in range(4)])
    assert_png(plots.save_traversals(str(tmp_path / "trav2.png"), fake_images(4, 9), per_dim),
               (150, 60))


def test_bad_shapes_are_named(tmp_path):
    with pytest.raises(ValueError, match="grid must have shape \\(5, 4, 2\\)"):
        plots.save_manifold(str(tmp_path / "m.png"), fake_images(5, 4), np.zeros((4, 5, 2)))
    with pytest.raises(ValueError, match="values must have shape"):
        plots.save_traversals(str(tmp_path / "t.png"), fake_images(4, 9), np.zeros(8))
    with pytest.raises(ValueError, match="must have one shape"):
        plots.save_reconstructions(str(tmp_path / "r.png"), fake_images(4), fake_images(5))
    with pytest.raises(ValueError, match="labels must have shape \\(10,\\)"):
        plots.save_latent_scatter(str(tmp_path / "s.png"), np.zeros((10, 2)), np.zeros(9))
    with pytest.raises(ValueError, match="images must have 1 leading axes"):
        plots.save_image_grid(str(tmp_path / "g.png"), np.zeros((8, 8, 1)))
    with pytest.raises(ValueError, match="no rate–distortion points"):
        plots.save_rate_distortion(str(tmp_path / "rd.png"), [])


def test_training_curves_from_metrics_jsonl_with_a_cut_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": 10 * e, "epoch": e, "train_neg_elbo": 200.0 / e,
                         "test_neg_elbo": 190.0 / e, "test_kl": 5.0 + e,
                         "test_reconstruction_loss": 185.0 / e - e}) for e in range(1, 5)]
    path.write_text("\n".join(lines) + '\n{"step": 50, "epo')  # a run killed mid-write
    records = run_folder.read_metrics(str(tmp_path))
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert_png(plots.save_training_curves(str(tmp_path / "curves.png"), str(path)), (600, 150))
    assert_png(plots.save_training_curves(str(tmp_path / "curves1.png"), tmp_path), (600, 150))
    assert_png(plots.save_training_curves(str(tmp_path / "curves2.png"), records[:1]))
    with pytest.raises(ValueError, match="no metrics"):
        plots.save_training_curves(str(tmp_path / "none.png"), [])
    with pytest.raises(ValueError, match="neither a run folder nor its metrics.jsonl"):
        plots.save_training_curves(str(tmp_path / "x.png"), str(tmp_path / "curves.png"))
    with pytest.warns(DeprecationWarning, match="run_folder.read_metrics"):
        assert plots.read_metrics(str(path)) == records  # the old name, for one release


def test_rate_distortion_takes_a_sweep_of_points(tmp_path):
    sweep = [(1.0, 160.0, "β = 8"), (4.0, 140.0, "β = 1"), (plots.RatePoint(9.0, 131.0, "β = 0.1"))]
    assert_png(plots.save_rate_distortion(str(tmp_path / "rd.png"), sweep, connect=True))
    assert_png(plots.save_rate_distortion(str(tmp_path / "rd2.png"), [(3.0, 0.2)],
                                          iso_elbo=False, ylabel="RMSE"))


def test_score_histograms_say_how_many_scores_lie_beyond_their_range(tmp_path, monkeypatch):
    labels = []
    real_save = plots._save

    def save(figure, path):
        labels.extend(ax.get_xlabel() for ax in figure.axes)
        return real_save(figure, path)

    monkeypatch.setattr(plots, "_save", save)
    rng = np.random.default_rng(0)
    inside, out = rng.normal(0, 1, 300), rng.normal(2, 1, 300)
    out[:5] = 1e6  # far outliers: drawn in the last bin, and counted
    path = plots.save_score_histograms(
        str(tmp_path / "h.png"), {"nll": inside, "flat": np.ones(10)},
        {"nll": out, "flat": np.ones(10)}, "a", "b", {"nll": "nats", "flat": "nats"},
        {"nll": {"auroc": 0.9}})
    assert Image.open(path).size[0] > 0
    both = np.concatenate([inside, out])
    low, high = np.percentile(both, [0.5, 99.5])
    outside = int(np.sum((both < low) | (both > high)))
    assert outside > 0
    assert labels[0].endswith(f"\n{outside} of 600 beyond the range counted in the end bins")
    assert labels[1] == "score (higher = more anomalous)"  # constant scores: nothing beyond
