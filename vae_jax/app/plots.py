"""Pictures of a VAE as PNG files: image grids, latent scatter plots, manifold grids, interpolation
strips, traversals, training curves and rate–distortion plots; and `visualize_run`, all of them
for a trained run (what scripts/visualize.py writes).

matplotlib (the ``plots`` extra) is imported inside the functions, so ``import vae_jax`` stays
light; without it, every function that draws raises `vae_jax.app.optional.MissingDependencyError`,
one line naming ``pip install -e '.[plots]'`` (`visualize_run` and `visualize_workdir` before any
other work). Figures are
`matplotlib.figure.Figure` objects drawn on an Agg canvas, never pyplot's global figures: nothing
here changes matplotlib's backend or any global state, so the functions can be called from a
notebook with an inline backend, from threads, or from a script without a display.

Each ``save_*`` function writes one PNG and returns its path; each ``draw_*`` function draws on a
matplotlib `Axes` you pass, to compose your own figures (e.g. two scatter plots side by side).
Images are arrays (…, H, W, C) with values in [0, 1] (C = 1: grey levels, C = 3: RGB).
"""

import math
import os
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np

from vae_jax.app import images as images_lib, optional

DPI = 100


# --- Figures ---------------------------------------------------------------------------------

def _require_matplotlib(purpose: str = "drawing pictures") -> None:
    """Raises `optional.MissingDependencyError` (one line) unless matplotlib can be imported."""
    optional.require("matplotlib", purpose)


def _figure(width: float, height: float):
    """A matplotlib Figure on its own Agg canvas (no pyplot, no global state)."""
    _require_matplotlib()
    # pylint: disable=import-outside-toplevel
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    figure.savefig(path, format="png", dpi=DPI, bbox_inches="tight")
    return path


def _as_images(images: Any, leading: int) -> np.ndarray:
    """`images` as float32 (*leading axes, H, W, C); raises ValueError naming the shape."""
    array = np.asarray(images, np.float32)
    if array.ndim != leading + 3:
        raise ValueError(f"images must have {leading} leading axes and (H, W, C), got shape "
                         f"{array.shape}")
    return np.clip(array, 0.0, 1.0)


def _show(ax, tiled: np.ndarray) -> None:
    """imshow of a tiled image in [0, 1]: grey levels (white ink on black) or RGB."""
    if tiled.shape[-1] == 1:
        ax.imshow(tiled[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(tiled, interpolation="nearest")


def _tile_rows(rows: np.ndarray, padding: int) -> np.ndarray:
    """(R, C, H, W, ch) → one tiled image, row r of the picture holding rows[r]."""
    r, c = rows.shape[:2]
    return images_lib.tile(rows.reshape((r * c,) + rows.shape[2:]), columns=c, padding=padding)


def _cell_centres(count: int, size: int, padding: int) -> np.ndarray:
    """Pixel centres of `count` cells of `size` pixels tiled with `padding`."""
    return padding + np.arange(count) * (size + padding) + (size - 1) / 2.0


def _tick_subset(count: int, most: int = 9) -> np.ndarray:
    """At most `most` evenly spread indices out of `count`, always the first and the last."""
    return np.unique(np.round(np.linspace(0, count - 1, min(count, most))).astype(int))


# --- Image grids -----------------------------------------------------------------------------

def draw_images(ax, images: Any, columns: int, title: Optional[str] = None) -> None:
    """Tiles images (N, H, W, C), row by row, `columns` per row, on `ax`."""
    tiled = images_lib.tile(_as_images(images, 1), columns=columns)
    _show(ax, tiled)
    ax.set_axis_off()
    if title:
        ax.set_title(title)


def save_image_grid(path: str, images: Any, columns: int = 8,
                    title: Optional[str] = None) -> str:
    """A grid of images (N, H, W, C), e.g. decoder means of prior samples; returns `path`."""
    images = _as_images(images, 1)
    rows = -(-len(images) // columns)
    h, w = images.shape[1:3]
    scale = 0.035  # inches per pixel: 28 px ≈ 1 inch
    figure = _figure(max(2.5, columns * (w + 2) * scale), rows * (h + 2) * scale + 0.5)
    draw_images(figure.add_subplot(), images, columns, title)
    return _save(figure, path)


def save_reconstructions(path: str, inputs: Any, reconstructions: Any, columns: int = 8,
                         title: Optional[str] = None) -> str:
    """Inputs (N, H, W, C) on the left, their reconstructions (N, H, W, C) on the right, in the
    same layout (example n at the same place in both panels); returns `path`."""
    inputs, reconstructions = _as_images(inputs, 1), _as_images(reconstructions, 1)
    if inputs.shape != reconstructions.shape:
        raise ValueError(f"inputs {inputs.shape} and reconstructions {reconstructions.shape} "
                         "must have one shape")
    rows = -(-len(inputs) // columns)
    h, w = inputs.shape[1:3]
    scale = 0.035
    figure = _figure(2 * columns * (w + 2) * scale + 0.4, rows * (h + 2) * scale + 0.8)
    left, right = figure.subplots(1, 2)
    draw_images(left, inputs, columns, "input x")
    draw_images(right, reconstructions, columns, "reconstruction E[x | z = μ(x)]")
    if title:
        figure.suptitle(title)
    return _save(figure, path)


# --- Latent scatter --------------------------------------------------------------------------

def _scatter_coordinates(codes: np.ndarray) -> tuple[np.ndarray, str, str]:
    """(N, 2) coordinates to plot and the two axis labels: the codes themselves for d = 2, the
    top two principal components for d > 2, (z, 0) for d = 1."""
    d = codes.shape[1]
    if d == 2:
        return codes, "z₁", "z₂"
    if d == 1:
        return np.stack([codes[:, 0], np.zeros(len(codes))], axis=1), "z₁", ""
    from vae_jax import latent  # pylint: disable=import-outside-toplevel

    p = latent.pca(codes, 2)
    ratio = np.asarray(p.explained_variance_ratio)
    projected = np.asarray(latent.pca_project(codes, p))
    return (projected, f"PC 1 ({100 * ratio[0]:.0f}% of variance, d = {d})",
            f"PC 2 ({100 * ratio[1]:.0f}% of variance)")


def draw_latent_scatter(ax, codes: Any, labels: Optional[Any] = None,
                        title: Optional[str] = None, equal_aspect: bool = True,
                        point_size: Optional[float] = None) -> None:
    """Scatter of codes (N, d) — posterior means or AE codes — coloured by integer labels (N,).

    d = 2 plots the codes; d > 2 their projection on the top two principal axes (`latent.pca`,
    the axis labels give the share of variance); d = 1 the codes on a line. `equal_aspect` keeps
    one unit the same length on both axes, so the picture shows the true shape of the cloud.
    `point_size` (points²) defaults to one that suits N: 2 for 10,000 codes, larger for fewer.
    """
    codes = np.asarray(codes, np.float32)
    if codes.ndim != 2 or len(codes) < 2:
        raise ValueError(f"codes must have shape (N ≥ 2, d), got {codes.shape}")
    if point_size is None:
        point_size = float(np.clip(20_000 / len(codes), 2.0, 25.0))
    xy, xlabel, ylabel = _scatter_coordinates(codes)
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=point_size, alpha=0.6, linewidths=0, rasterized=True)
    else:
        labels = np.asarray(labels)
        if labels.shape != (len(codes),):
            raise ValueError(f"labels must have shape ({len(codes)},), got {labels.shape}")
        classes = np.unique(labels)
        from matplotlib import colormaps  # pylint: disable=import-outside-toplevel

        cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
        for i, value in enumerate(classes):
            mask = labels == value
            ax.scatter(xy[mask, 0], xy[mask, 1], s=point_size, alpha=0.6, linewidths=0,
                       color=cmap(i % cmap.N), label=str(value), rasterized=True)
        legend = ax.legend(markerscale=8.0 / math.sqrt(point_size), fontsize="small",
                           loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        for handle in legend.legend_handles:
            handle.set_alpha(1.0)
    if equal_aspect:
        ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)


def save_latent_scatter(path: str, codes: Any, labels: Optional[Any] = None,
                        title: Optional[str] = None, equal_aspect: bool = True) -> str:
    """`draw_latent_scatter` as a PNG; returns `path`."""
    figure = _figure(6.5, 5.5)
    draw_latent_scatter(figure.add_subplot(), codes, labels, title, equal_aspect)
    return _save(figure, path)


# --- Manifold, interpolation, traversal ------------------------------------------------------

def draw_manifold(ax, images: Any, grid: Any, title: Optional[str] = None) -> None:
    """Decoded grid images (rows, columns, H, W, C) tiled without gaps, with the grid's latent
    coordinates (rows, columns, 2) as tick labels (x along the columns, y along the rows)."""
    images, grid = _as_images(images, 2), np.asarray(grid, np.float32)
    rows, columns, h, w = images.shape[:4]
    if grid.shape != (rows, columns, 2):
        raise ValueError(f"grid must have shape ({rows}, {columns}, 2), got {grid.shape}")
    _show(ax, _tile_rows(images, padding=0))
    xs, ys = _tick_subset(columns), _tick_subset(rows)
    ax.set_xticks(_cell_centres(columns, w, 0)[xs], [f"{v:.2g}" for v in grid[0, xs, 0]])
    ax.set_yticks(_cell_centres(rows, h, 0)[ys], [f"{v:.2g}" for v in grid[ys, 0, 1]])
    ax.set_xlabel("z₁")
    ax.set_ylabel("z₂")
    if title:
        ax.set_title(title)


def save_manifold(path: str, images: Any, grid: Any, title: Optional[str] = None) -> str:
    """`draw_manifold` as a PNG (e.g. of `latent.decode_grid` over `latent.quantile_grid`)."""
    images = _as_images(images, 2)
    rows, columns = images.shape[:2]
    side = min(10.0, max(4.0, 0.45 * max(rows, columns)))
    figure = _figure(side * columns / max(rows, columns) + 0.8,
                     side * rows / max(rows, columns) + 0.8)
    draw_manifold(figure.add_subplot(), images, grid, title)
    return _save(figure, path)


def draw_strips(ax, images: Any, row_labels: Optional[Sequence[str]] = None,
                column_labels: Optional[Sequence[str]] = None,
                title: Optional[str] = None) -> None:
    """Rows of images (rows, columns, H, W, C), e.g. interpolation paths or traversals, with
    optional labels for the rows (y ticks) and the columns (x ticks)."""
    images = _as_images(images, 2)
    rows, columns, h, w = images.shape[:4]
    _show(ax, _tile_rows(images, padding=2))
    ax.set_xticks(_cell_centres(columns, w, 2) if column_labels is not None else [],
                  list(column_labels) if column_labels is not None else [])
    ax.set_yticks(_cell_centres(rows, h, 2) if row_labels is not None else [],
                  list(row_labels) if row_labels is not None else [])
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title)


def _save_strips(path: str, images: Any, row_labels, column_labels, title) -> str:
    images = _as_images(images, 2)
    rows, columns, h, w = images.shape[:4]
    scale = 0.03
    figure = _figure(columns * (w + 2) * scale + 1.2, rows * (h + 2) * scale + 0.9)
    draw_strips(figure.add_subplot(), images, row_labels, column_labels, title)
    return _save(figure, path)


def save_interpolations(path: str, strips: Any, row_labels: Optional[Sequence[str]] = None,
                        title: Optional[str] = None) -> str:
    """Interpolation strips (S, T, H, W, C): row s is the decoded path of pair s, from t = 0 on
    the left to t = 1 on the right (e.g. `latent.interpolate_images` stacked); returns `path`."""
    strips = _as_images(strips, 2)
    steps = strips.shape[1]
    columns = [f"{t:.2g}" for t in np.linspace(0.0, 1.0, steps)]
    return _save_strips(path, strips, row_labels, columns, title or "interpolation, t →")


def save_traversals(path: str, images: Any, values: Any, title: Optional[str] = None) -> str:
    """A traversal grid (d, n, H, W, C), as `latent.decode_images(latent.traversals(z, values))`:
    row i sweeps latent dimension i through `values` (n,) — or through its own row of values
    (d, n) — the others fixed; returns `path`."""
    images, values = _as_images(images, 2), np.asarray(values, np.float32)
    d, n = images.shape[:2]
    if values.shape not in ((n,), (d, n)):
        raise ValueError(f"values must have shape ({n},) or ({d}, {n}), got {values.shape}")
    rows = [f"z{i + 1}" for i in range(d)]
    if values.ndim == 1:
        columns = [f"{v:.2g}" for v in values]
    else:  # one range per dimension: give it on the row label
        rows = [f"z{i + 1}: {values[i, 0]:.2g}…{values[i, -1]:.2g}" for i in range(d)]
        columns = None
    return _save_strips(path, images, rows, columns, title or "latent traversals")


# --- Training curves and rate–distortion ---------------------------------------------------

def save_training_curves(path: str, metrics: Any, title: Optional[str] = None) -> str:
    """Training curves from a run folder or its ``metrics.jsonl`` (read with
    `vae_jax.app.run_folder.read_metrics`), or from records (dicts with `epoch` and any of
    train_neg_elbo, test_neg_elbo, test_reconstruction_loss, test_kl; nats per example).

    Three panels against the epoch: −ELBO (train and test), the test distortion
    −log p(x|z) and the test rate KL(q(z|x) ‖ p(z)). Returns `path`; raises `ValueError` when
    there are no records, or for a path that is neither a folder nor a ``metrics.jsonl``."""
    records = list(metrics) if not isinstance(metrics, (str, os.PathLike)) else _records(metrics)
    if not records:
        raise ValueError("no metrics to plot")
    panels = (("−ELBO (nats)", (("train_neg_elbo", "train"), ("test_neg_elbo", "test"))),
              ("distortion −log p(x|z) (nats)",
               (("train_reconstruction_loss", "train"), ("test_reconstruction_loss", "test"))),
              ("rate KL(q(z|x) ‖ p(z)) (nats)", (("train_kl", "train"), ("test_kl", "test"))))
    figure = _figure(12.0, 3.6)
    from matplotlib.ticker import MaxNLocator  # pylint: disable=import-outside-toplevel

    axes = figure.subplots(1, 3)
    for ax, (ylabel, series) in zip(axes, panels):
        for key, name in series:
            points = [(r.get("epoch", r.get("step")), r[key]) for r in records if key in r]
            if points:
                x, y = zip(*points)
                ax.plot(x, y, marker="o", markersize=3, label=name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(frameon=False)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)


def read_metrics(path: str) -> list[dict[str, Any]]:
    """Deprecated (vae_jax 0.2, goes in 0.3): the records of a metrics.jsonl, read by
    `vae_jax.app.run_folder.read_metrics` of its run folder; warns `DeprecationWarning`."""
    import warnings  # pylint: disable=import-outside-toplevel

    warnings.warn("vae_jax.app.plots.read_metrics(path) is deprecated; call "
                  "vae_jax.app.run_folder.read_metrics(workdir)", DeprecationWarning, stacklevel=2)
    return _records(path)


def _records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The metrics records of a run folder, or of the ``metrics.jsonl`` file `path` names."""
    from vae_jax.app import run_folder  # pylint: disable=import-outside-toplevel

    path = os.fspath(path)
    if os.path.isdir(path):
        return run_folder.read_metrics(path)
    if os.path.basename(path) != run_folder.METRICS_FILE:
        raise ValueError(f"{path} is neither a run folder nor its {run_folder.METRICS_FILE}")
    return run_folder.read_metrics(os.path.dirname(path))


class RatePoint(NamedTuple):
    """One model (or one epoch of a run) in the rate–distortion plane, both in nats per example
    unless the plot says otherwise."""

    rate: float
    distortion: float
    label: str = ""


def draw_rate_distortion(ax, points: Sequence[Any], connect: bool = False,
                         iso_elbo: bool = True, xlabel: str = "rate KL(q(z|x) ‖ p(z)) (nats)",
                         ylabel: str = "distortion −log p(x|z) (nats)",
                         title: Optional[str] = None, name: Optional[str] = None) -> None:
    """Points (rate R, distortion D[, label]) — `RatePoint`s or tuples — with their labels.

    `connect` joins them in order (e.g. a run's epochs, or a sweep of β). With `iso_elbo`, dashed
    lines of constant R + D = −ELBO (slope −1) run through the points: moving along one trades
    rate for distortion at the same ELBO (Alemi et al. 2018); use it only when both are in nats.
    """
    points = [RatePoint(*p) for p in points]
    if not points:
        raise ValueError("no rate–distortion points to plot")
    rates = np.array([p.rate for p in points], np.float64)
    distortions = np.array([p.distortion for p in points], np.float64)
    line = ax.plot(rates, distortions, marker="o", linestyle="-" if connect else "none",
                   label=name)[0]
    for p in points:
        if p.label:
            ax.annotate(p.label, (p.rate, p.distortion), textcoords="offset points",
                        xytext=(4, 4), fontsize="small", color=line.get_color())
    if iso_elbo:
        span = max(np.ptp(rates), np.ptp(distortions), 1.0)
        r = np.linspace(rates.min() - 0.1 * span, rates.max() + 0.1 * span, 2)
        for total in sorted(set(np.round(rates + distortions, 6)))[:8]:
            ax.plot(r, total - r, color="grey", linestyle="--", linewidth=0.6, alpha=0.6)
        ax.set_xlim(r[0], r[-1])
        low, high = distortions.min(), distortions.max()
        ax.set_ylim(low - 0.1 * span, high + 0.1 * span)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)


def save_rate_distortion(path: str, points: Sequence[Any], connect: bool = False,
                         iso_elbo: bool = True, xlabel: str = "rate KL(q(z|x) ‖ p(z)) (nats)",
                         ylabel: str = "distortion −log p(x|z) (nats)",
                         title: Optional[str] = None) -> str:
    """`draw_rate_distortion` as a PNG: one point per model (a sweep) or per epoch; returns
    `path`."""
    figure = _figure(6.0, 4.8)
    draw_rate_distortion(figure.add_subplot(), points, connect, iso_elbo, xlabel, ylabel, title)
    return _save(figure, path)


# --- Every picture of a trained run -----------------------------------------------------------

PICTURES = ("reconstructions", "samples", "latent_scatter", "manifold", "interpolations",
            "traversals", "training_curves", "rate_distortion")


def visualize_run(run, out_dir: str, seed: Optional[int] = None,
                  max_points: int = 10_000) -> dict[str, str]:
    """Writes every picture that applies to a restored run (`vae_jax.app.runs.load_run`) to
    ``out_dir``, as ``NAME.png`` for NAME in `PICTURES`. Returns {NAME: path} of those written
    and {NAME: "skipped: why"} of those that do not apply.

    The test set is the one `vae_jax.app.evaluation` evaluates (`evaluation.test_set`: scaled to
    [0, 1] and, when the run binarised, binarised once), of which the first `max_points` images
    are shown; prior samples use ``fold_in(key, 2)``, as training's pictures do. With `seed` None
    the key is the run's own (`evaluation.eval_key`: the test set training evaluated), with an
    integer `seed` one drawn from ``jax.random.key(seed)``. Codes are posterior means μ(x) (the
    codes of a plain AE). Raises `ConfigError` for a bad `seed`, and `MissingDependencyError`
    first when matplotlib is not installed.

    - reconstructions: 32 test images beside E[x | z = μ(x)].
    - samples: 64 decoder means of z ~ p(z), the model's prior; skipped for a plain
      autoencoder, whose codes follow no known distribution (N(0, I) draws land anywhere
      relative to its codes).
    - latent_scatter: the codes of up to `max_points` test images coloured by label (d > 2: the
      top two principal axes).
    - manifold (d = 2 only): a 20 × 20 grid decoded; a VAE's along the prior's quantiles
      Φ⁻¹(0.05 … 0.95) for N(0, I), evenly over the 1st–99th percentiles of 10,000 draws from
      a learned prior (`prior_box`), an AE's evenly over the 1st–99th percentiles of its codes.
    - interpolations: linear paths (10 steps) between the codes of test images of different
      classes.
    - traversals: the code of the first test image with each dimension swept (VAE: −3 … 3, the
      range of N(0, I), or a learned prior's 1st–99th percentiles of that dimension; AE: those
      of its codes).
    - training_curves, rate_distortion: from ``workdir/metrics.jsonl`` (`run_folder.read_metrics`)
      when it has lines; the rate–distortion path over the epochs only for a VAE (an AE's rate
      is 0 by construction).
    """
    _require_matplotlib("drawing the pictures of a run")
    # pylint: disable=import-outside-toplevel
    import jax

    from vae_jax import hierarchical, latent
    from vae_jax.app import evaluation, run_folder

    vae, params, config = run.vae, run.params, run.config
    key = evaluation.eval_key(config, seed)
    os.makedirs(out_dir, exist_ok=True)
    # The whole test set, as evaluated, then its first images (a binarisation of fewer images
    # would not be a prefix of it).
    x = jax.jit(evaluation.test_set, static_argnums=1)(run.dataset.test_images, config.binarize,
                                                       key)[:max_points]
    labels = np.asarray(run.dataset.test_labels[:max_points])
    codes = jax.jit(latent.encode_means, static_argnums=(0, 3))(vae, params, x, 500)
    codes_np = np.asarray(codes)
    decode = jax.jit(latent.decode_images, static_argnums=0)
    kind = "VAE" if vae.stochastic else "plain AE"
    name = f"{kind}, d = {vae.latent_dim}, step {run.step}"
    written: dict[str, str] = {}

    def path(picture: str) -> str:
        return os.path.join(out_dir, f"{picture}.png")

    shown = x[:32]
    written["reconstructions"] = save_reconstructions(
        path("reconstructions"), shown, decode(vae, params, codes[:32]),
        title=f"test images and reconstructions ({name})")
    two_layers = isinstance(vae, hierarchical.TwoLayerVAE)
    standard = not two_layers and vae.prior.name == "standard_normal"
    prior = ("N(0, I)" if standard else "p(z₁|z₂) N(z₂; 0, I)" if two_layers
             else f"the learned {vae.prior.name} prior")
    # A learned prior's range: the box of its draws (N(0, I)'s is known: Φ⁻¹, ±3).
    prior_low, prior_high = (None, None) if standard or not vae.stochastic else \
        prior_box(vae, params, jax.random.fold_in(key, 3))
    if two_layers:
        samples = decode(vae, params, hierarchical.sample(vae, params, jax.random.fold_in(key, 2),
                                                          64))
    else:
        samples = latent.sample_images(vae, params, jax.random.fold_in(key, 2), 64) \
            if vae.stochastic else None
    if vae.stochastic:
        written["samples"] = save_image_grid(path("samples"), samples, 8,
                                             title=f"E[x|z], z ~ {prior} ({name})")
    else:
        written["samples"] = "skipped: a plain autoencoder has no prior p(z) to sample"
    written["latent_scatter"] = save_latent_scatter(
        path("latent_scatter"), codes_np, labels,
        title=f"codes μ(x) of {len(codes_np)} test images ({name})")
    low, high = np.percentile(codes_np, [1, 99], axis=0)
    if vae.latent_dim == 2:
        if vae.stochastic and standard:
            grid = latent.quantile_grid(20, 20)
            how = "prior quantiles Φ⁻¹(0.05…0.95)"
        elif vae.stochastic:
            grid = latent.linear_grid(20, 20, (prior_low[0], prior_high[0]),
                                      (prior_low[1], prior_high[1]))
            how = "1st–99th percentiles of the prior's draws"
        else:
            grid = latent.linear_grid(20, 20, (low[0], high[0]), (low[1], high[1]))
            how = "1st–99th percentiles of the codes"
        written["manifold"] = save_manifold(path("manifold"), decode(vae, params, grid), grid,
                                            title=f"decoded grid over {how} ({name})")
    else:
        written["manifold"] = (f"skipped: a manifold grid needs 2-D latents, this model has "
                               f"latent_dim={vae.latent_dim}")
    pairs = _pairs_of_different_classes(labels, 8)
    steps = 10
    strips = np.stack([np.asarray(decode(vae, params, latent.lerp(codes[a], codes[b], steps)))
                       for a, b in pairs])
    written["interpolations"] = save_interpolations(
        path("interpolations"), strips, [f"{labels[a]} → {labels[b]}" for a, b in pairs],
        title=f"linear interpolation between test codes ({name})")
    if vae.stochastic and standard:
        values = np.linspace(-3.0, 3.0, 11, dtype=np.float32)
    elif vae.stochastic:
        values = np.linspace(prior_low, prior_high, 11, axis=1).astype(np.float32)  # (d, 11)
    else:
        values = np.linspace(low, high, 11, axis=1).astype(np.float32)  # (d, 11)
    written["traversals"] = save_traversals(
        path("traversals"), decode(vae, params, latent.traversals(codes[0], values)), values,
        title=f"traversals around the code of test image 0 ({name})")
    records = run_folder.read_metrics(run.workdir)
    if records:
        written["training_curves"] = save_training_curves(path("training_curves"), records,
                                                          title=name)
    else:
        written["training_curves"] = "skipped: no metrics.jsonl in the workdir"
    rd = [RatePoint(r["test_kl"], r["test_reconstruction_loss"], f"epoch {r['epoch']}")
          for r in records if "test_kl" in r and "test_reconstruction_loss" in r]
    if not vae.stochastic:
        written["rate_distortion"] = "skipped: a plain autoencoder has no rate (its KL is 0)"
    elif rd:
        density = config.likelihood not in ("mse", "rmse")
        written["rate_distortion"] = save_rate_distortion(
            path("rate_distortion"), rd, connect=True, iso_elbo=density,
            ylabel=("distortion −log p(x|z) (nats)" if density
                    else f"distortion: −({config.likelihood} reconstruction term)"),
            title=f"test rate and distortion per epoch ({name})")
    else:
        written["rate_distortion"] = "skipped: no test_kl in metrics.jsonl"
    return written


def prior_box(vae, params, key, num: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """(low, high), each (latent_dim,): the 1st and 99th percentiles per dimension of `num` draws
    from the model's prior p(z) with `key` — the region a learned prior covers, where N(0, I)'s
    is known in closed form. Host arrays (float64)."""
    # pylint: disable=import-outside-toplevel
    import jax

    from vae_jax import hierarchical, model as model_lib

    if isinstance(vae, hierarchical.TwoLayerVAE):  # z₁'s marginal: ancestral draws
        draws = jax.jit(hierarchical.sample, static_argnums=(0, 3))(vae, params, key, num)
    else:
        draws = jax.jit(vae.prior.sample, static_argnums=(2, 3))(
            model_lib.prior_params(vae, params), key, num, vae.latent_dim)
    low, high = np.percentile(np.asarray(draws, np.float64), [1, 99], axis=0)
    return low, high


def _pairs_of_different_classes(labels: np.ndarray, count: int) -> list[tuple[int, int]]:
    """Up to `count` index pairs (a, b) of test examples with labels[a] ≠ labels[b] — the first
    example of each class to the first of the next class — or consecutive examples when there is
    one class only."""
    classes = np.unique(labels)
    firsts = [int(np.argmax(labels == c)) for c in classes]
    if len(firsts) >= 2:
        pairs = [(firsts[i], firsts[(i + 1) % len(firsts)]) for i in range(len(firsts))]
    else:
        pairs = [(i, i + 1) for i in range(min(count, len(labels) - 1))]
    return pairs[:count]


def visualize_workdir(workdir: str, step: Optional[int] = None, out_dir: Optional[str] = None,
                      data_dir: Optional[str] = None, manual_dir: Optional[str] = None,
                      seed: Optional[int] = None, dataset=None) -> dict[str, str]:
    """`visualize_run` of checkpoint `step` (None: the newest intact one) of the run in
    `workdir`, into `out_dir` (default ``workdir/plots``), reading the run only; `seed` as in
    `visualize_run` (None: the run's own test set); `dataset`: for a run trained on arrays in
    memory, the `vae_jax.app.data.ImageDataset` it was trained on (`runs.load_run`). Raises
    `vae_jax.VAEJaxError` subclasses for a missing workdir, checkpoint or dataset, a run on
    arrays in memory without them or with other arrays (see `vae_jax.app.runs.load_run`), and
    `ConfigError` for a bad `seed` or an `out_dir` that cannot be written, and
    `MissingDependencyError` when matplotlib is not installed, before any work."""
    _require_matplotlib("drawing the pictures of a run")
    # pylint: disable=import-outside-toplevel
    from vae_jax.app import evaluation, run_folder, runs

    evaluation.check_seed(seed)
    run_folder.resolve_step(workdir, step)
    runs.check_dataset(workdir, dataset, data_dir, manual_dir, "plots.visualize_workdir")
    out_dir = out_dir or os.path.join(workdir, run_folder.PLOTS_DIR)
    run_folder.check_reader_output(out_dir, f"the pictures to {out_dir}",
                                   "pass --out=FOLDER outside every run folder", runs=(workdir,),
                                   allowed=os.path.join(workdir, run_folder.PLOTS_DIR))
    run = runs.load_run(workdir, step, data_dir, manual_dir, dataset)
    return visualize_run(run, out_dir, seed)


def save_score_histograms(path: str, scores_in: dict[str, Any], scores_out: dict[str, Any],
                          in_name: str, out_name: str, units: dict[str, str],
                          metrics: Optional[dict[str, dict[str, float]]] = None,
                          title: Optional[str] = None) -> str:
    """One panel per score named in `units` (name → unit, in panel order): histograms
    (densities, shared bins over the 0.5–99.5th percentiles of both sets; the scores beyond
    are counted in the end bins, and the axis label says how many) of the
    in-distribution scores `scores_in[name]` and the out-of-distribution `scores_out[name]`,
    each (N,), the AUROC of `metrics[name]["auroc"]` in the panel's title when given (as
    `vae_jax.app.scores.detection_metrics` computes it). Returns `path`."""
    names = list(units)
    figure = _figure(4.0 * len(names), 3.2)
    for i, name in enumerate(names):
        ax = figure.add_subplot(1, len(names), i + 1)
        both = np.concatenate([scores_in[name], scores_out[name]])
        low, high = np.percentile(both, [0.5, 99.5])
        bins = np.linspace(low, high if high > low else low + 1.0, 60)
        ax.hist(np.clip(scores_in[name], low, high), bins, density=True, alpha=0.55,
                label=f"in: {in_name}")
        ax.hist(np.clip(scores_out[name], low, high), bins, density=True, alpha=0.55,
                label=f"OOD: {out_name}")
        heading = f"{name} ({units[name]})"
        if metrics and name in metrics:
            heading += f", AUROC {metrics[name]['auroc']:.3f}"
        ax.set_title(heading, fontsize=9)
        outside = int(np.sum((both < low) | (both > high)))
        ax.set_xlabel("score (higher = more anomalous)" + (
            f"\n{outside} of {len(both)} beyond the range counted in the end bins"
            if outside else ""), fontsize=8)
        if i == 0:
            ax.legend(fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10, y=1.04)
    return _save(figure, path)
