"""Small image helpers shared by every framework (numpy and Pillow only)."""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["resize_image", "resize_images", "as_image_batch"]


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
