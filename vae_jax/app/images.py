"""Image grids as PNG files (numpy + Pillow; no plotting library needed)."""

import os

import numpy as np
from PIL import Image


def tile(images: np.ndarray, columns: int, padding: int = 2) -> np.ndarray:
    """Tiles images (N, H, W, C) with values in [0, 1] into one (rows·(H+p)+p, columns·(W+p)+p, C)
    array on a white background, row by row."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C), got {images.shape}")
    n, h, w, c = images.shape
    rows = -(-n // columns)
    grid = np.ones((rows * (h + padding) + padding, columns * (w + padding) + padding, c),
                   np.float32)
    for i, image in enumerate(images):
        top = padding + (i // columns) * (h + padding)
        left = padding + (i % columns) * (w + padding)
        grid[top:top + h, left:left + w] = image
    return grid


def render_grid(images: np.ndarray, columns: int, scale: int = 2) -> np.ndarray:
    """The picture `save_grid` writes: `images` (N, H, W, C) in [0, 1] tiled (`tile`), clipped to
    [0, 1], as uint8 (rows·(H+2)+2, columns·(W+2)+2, C) scaled by the integer `scale` (each pixel
    `scale`×`scale`)."""
    grid = np.clip(tile(images, columns), 0.0, 1.0)
    grid = (grid * 255.0 + 0.5).astype(np.uint8)
    return grid.repeat(scale, axis=0).repeat(scale, axis=1)


def write_png(path: str, picture: np.ndarray) -> None:
    """Writes a uint8 picture (H, W, C) with C = 1 (grey), 3 or 4 as a PNG, atomically (one
    rename: a kill leaves the old picture or the new one)."""
    picture = Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture)
    picture.save(path + ".tmp", format="PNG")
    os.replace(path + ".tmp", path)


def save_grid(path: str, images: np.ndarray, columns: int, scale: int = 2) -> None:
    """Writes `images` (N, H, W, C) in [0, 1] as a tiled PNG (`render_grid`), each pixel
    `scale`×`scale`, atomically (one rename: a kill leaves the old picture or the new one)."""
    write_png(path, render_grid(images, columns, scale))
