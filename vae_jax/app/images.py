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


def save_grid(path: str, images: np.ndarray, columns: int, scale: int = 2) -> None:
    """Writes `images` (N, H, W, C) in [0, 1] as a tiled PNG, each pixel `scale`×`scale`,
    atomically (one rename: a kill leaves the old picture or the new one)."""
    grid = np.clip(tile(images, columns), 0.0, 1.0)
    grid = (grid * 255.0 + 0.5).astype(np.uint8)
    grid = grid[..., 0] if grid.shape[-1] == 1 else grid
    picture = Image.fromarray(grid)
    if scale != 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    picture.save(path + ".tmp", format="PNG")
    os.replace(path + ".tmp", path)
