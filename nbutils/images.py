"""Small image helpers shared by every framework (numpy and Pillow only)."""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["resize_image", "resize_images", "as_image_batch", "FIT_POLICIES", "fit_image"]


def resize_image(image: Image.Image | np.ndarray, size: int) -> np.ndarray:
    """One image as a uint8 ``size`` x ``size`` array (PIL bilinear; unchanged if it fits)."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 NHWC images resized to ``size`` (PIL bilinear, as the data layer does)."""
    if images.shape[1:3] == (size, size):
        return images
    return np.stack([resize_image(img, size) for img in images])


def as_image_batch(images: object) -> np.ndarray:
    """``images`` as an (N, H, W, C) array: a single (H, W, C) image gains a batch axis."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"images must be (N, H, W, 3); got shape {arr.shape}")
    return arr


FIT_POLICIES = ("squash", "crop")


def fit_image(image: Image.Image | np.ndarray, size: int, policy: str = "squash") -> np.ndarray:
    """A photo of any shape as a uint8 ``size`` x ``size`` array.

    ``squash`` resizes the whole picture to a square (the aspect ratio changes; this is
    what the data layer did to every training image), ``crop`` first cuts the largest
    centred square (nothing is distorted, the borders of the longer side are lost).
    """
    if policy not in FIT_POLICIES:
        raise ValueError(f"Unknown fit policy {policy!r}; use one of {FIT_POLICIES}")
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))
    if policy == "crop" and img.size[0] != img.size[1]:
        side = min(img.size)
        left, top = (img.size[0] - side) // 2, (img.size[1] - side) // 2
        img = img.crop((left, top, left + side, top + side))
    return resize_image(img, size)
