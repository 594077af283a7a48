"""Photos the course can classify without a download: scikit-image's bundled samples.

They are ordinary photographs (a cat, a rocket, an astronaut, a cup of coffee) of any
size, so they show what a model trained on small, tightly cropped images makes of
real-world pictures, including objects outside its classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .paths import atomic_write

__all__ = ["SAMPLE_PHOTOS", "sample_photo", "sample_photos", "write_sample_photos"]

# file name -> (scikit-image function, what the photo shows, its CIFAR-10 class or None)
SAMPLE_PHOTOS = {
    "chelsea_the_cat.jpg": ("chelsea", "a cat", "cat"),
    "rocket.jpg": ("rocket", "a rocket on its launch pad", None),
    "astronaut.jpg": ("astronaut", "an astronaut", None),
    "coffee.jpg": ("coffee", "a cup of coffee", None),
}


def sample_photo(name: str) -> np.ndarray:
    """One sample photo as uint8 (H, W, 3), by file name or scikit-image name."""
    import skimage.data

    by_skimage = {fn: key for key, (fn, _, _) in SAMPLE_PHOTOS.items()}
    func = SAMPLE_PHOTOS[name][0] if name in SAMPLE_PHOTOS else name
    if func not in by_skimage:
        raise KeyError(f"Unknown sample photo {name!r}; choose from {', '.join(SAMPLE_PHOTOS)}")
    return np.asarray(getattr(skimage.data, func)(), dtype=np.uint8)


def sample_photos() -> dict[str, np.ndarray]:
    """Every sample photo, by file name."""
    return {name: sample_photo(name) for name in SAMPLE_PHOTOS}


def write_sample_photos(folder: str | Path) -> list[Path]:
    """Write the sample photos as JPEG files into ``folder`` (kept if already there)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in sample_photos().items():
        path = out / name
        if not path.is_file():
            with atomic_write(path, "wb") as handle:
                Image.fromarray(image).save(handle, format="JPEG", quality=92)
        paths.append(path)
    return paths
