"""A shortcut to learn: a small class-coloured marker stamped into some splits only.

Real datasets carry shortcuts (a watermark on one class's photos, a hospital's tag on
the X-rays of the sick). :func:`with_shortcut` builds one on purpose: every image of the
chosen splits gets a small square in the top-left corner whose colour says its class,
so a network can score perfectly there by looking at the corner alone. The test split
stays clean, which is where the shortcut shows: accuracy falls, and Grad-CAM's maps
point at the corner instead of the object (notebook 06's lab).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .core import ImageData, Split

__all__ = ["MARKER_PALETTE", "stamp_marker", "marker_mask", "with_shortcut"]

# one clearly different colour per class (cycled when there are more classes)
MARKER_PALETTE = np.array([
    [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255], [0, 255, 255],
    [255, 128, 0], [128, 0, 255], [255, 255, 255], [0, 0, 0],
], dtype=np.uint8)


def _side(image_size: int) -> int:
    return max(2, image_size // 8)  # 4 px on a 32 px image


def stamp_marker(images: np.ndarray, labels: np.ndarray, share: float = 1.0,
                 seed: int = 0) -> np.ndarray:
    """A copy of uint8 ``images`` (N, H, W, 3) with the class's colour in a corner square.

    ``share`` of the images (chosen at random with ``seed``) are stamped, the rest are
    left as they are: 1.0 makes the marker a perfect predictor of the class.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    out = np.array(images, dtype=np.uint8, copy=True)
    side = _side(out.shape[1])
    chosen = np.random.default_rng(seed).random(len(out)) < share
    colours = MARKER_PALETTE[np.asarray(labels) % len(MARKER_PALETTE)]
    out[chosen, :side, :side, :] = colours[chosen, None, None, :]
    return out


def marker_mask(image_size: int, n: int = 1) -> np.ndarray:
    """(n, size, size) boolean masks of the marker's square (for "does the map point at it")."""
    mask = np.zeros((n, image_size, image_size), dtype=bool)
    side = _side(image_size)
    mask[:, :side, :side] = True
    return mask


def with_shortcut(data: ImageData, splits: tuple[str, ...] = ("train", "val"),
                  share: float = 1.0, seed: int = 0) -> ImageData:
    """``data`` with the marker stamped into ``splits`` (train and validation by default:
    what the developer sees looks excellent); the other splits stay clean."""
    unknown = set(splits) - {"train", "val", "test"}
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}; use train, val or test")
    changed = {}
    for offset, name in enumerate(splits):
        split: Split = data.splits[name]
        changed[name] = dataclasses.replace(
            split, images=stamp_marker(split.images, split.labels, share, seed + offset))
    return dataclasses.replace(data, spec=f"{data.spec}+shortcut", cache_dir=None, **changed)
