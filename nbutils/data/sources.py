"""Where images come from: CIFAR archives, Kaggle-style image folders, synthetic shapes.

A source lists its items (label, pool, id) cheaply and decodes one item on demand,
so the split and the per-class caps are decided before any image is decoded.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from ..images import resize_image
from .shapes import SHAPE_CLASSES, render_shape
from .specs import DatasetError, DatasetSpec

__all__ = [
    "Source",
    "CifarSource",
    "ImageFolderSource",
    "ShapesSource",
    "ImageReadError",
    "make_source",
    "to_rgb",
    "IMAGE_EXTENSIONS",
    "CIFAR_ARCHIVES",
]

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
TRAIN_POOL, TEST_POOL = 0, 1
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Larger images are skipped (listed with the reason) instead of decoded in full: a 100 MP
# PNG takes 300 MB and seconds to decode only to be shrunk to 32 pixels. JPEGs are decoded
# at reduced size first (``draft``), so only their reduced size counts.
MAX_DECODED_PIXELS = 40_000_000


class ImageReadError(RuntimeError):
    """One image could not be decoded (it is skipped and listed, never fatal)."""


@dataclass
class Source:
    """Items of a dataset: labels, pool (train or test), ids; subclasses decode images."""

    name: str
    class_names: list[str]
    labels: np.ndarray
    pools: np.ndarray
    ids: list[str]
    has_masks: bool = False
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def has_test(self) -> bool:
        """Whether the dataset brings its own test split."""
        return bool((self.pools == TEST_POOL).any())

    def fingerprint(self) -> str:  # pragma: no cover - overridden
        """A short string that changes whenever the content changes."""
        raise NotImplementedError

    def read(self, index: int, size: int) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
        """Decode item ``index`` resized to ``size``: (uint8 HxWx3, mask or None, original WxH)."""
        raise NotImplementedError  # pragma: no cover


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode (grayscale, palette, RGBA, CMYK, 16-bit) to RGB.

    Transparent pixels are composited on white, as a viewer would show them.
    """
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


# --------------------------------------------------------------------------- CIFAR

CIFAR_ARCHIVES = {
    "cifar10": ("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "c58f30108f718f92721af3b95e74349a"),
    "cifar100": ("cifar-100-python.tar.gz",
                 "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                 "eb9058c3a382ffc7106e4002c42a8d85"),
}


def _download(url: str, target: Path) -> None:
    from tqdm.auto import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as resp, open(tmp, "wb") as out:
            total = int(resp.headers.get("Content-Length", 0)) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {target.name}") as bar:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


class CifarSource(Source):
    """CIFAR-10 / CIFAR-100 from the official python archive (downloaded on first use)."""

    def __init__(self, kind: str, raw_dir: Path, download: bool = True) -> None:
        filename, url, md5 = CIFAR_ARCHIVES[kind]
        archive = raw_dir / filename
        if not archive.is_file():
            if not download:
                raise DatasetError(self._offline_message(kind, archive, url, "downloads are off"))
            try:
                _download(url, archive)
            except OSError as exc:
                raise DatasetError(self._offline_message(kind, archive, url, str(exc))) from exc
            if _md5(archive) != md5:
                archive.unlink()
                raise DatasetError(f"The download of {filename} is corrupt (MD5 mismatch); run again.")
        self.archive = archive
        self._check_md5(kind, archive, md5, url)
        images, labels, pools, names = self._parse(kind, archive)
        self._images = images
        super().__init__(
            name=kind, class_names=names, labels=labels, pools=pools,
            ids=[f"{kind}:{'train' if p == TRAIN_POOL else 'test'}:{i}"
                 for i, p in enumerate(pools)],
        )

    @staticmethod
    def _check_md5(kind: str, archive: Path, md5: str, url: str) -> None:
        """Refuse an archive that is not the published one, before unpickling anything.

        Unpickling runs code that the file chooses; only the archive whose checksum
        the course knows is opened.
        """
        found = _md5(archive)
        if found != md5:
            raise DatasetError(
                f"{archive} is not the published {kind} archive (MD5 {found}, expected "
                f"{md5}): it is damaged or another file. Delete it and run again to download "
                f"it, or put the archive from {url} there by hand.")

    @staticmethod
    def _offline_message(kind: str, archive: Path, url: str, reason: str) -> str:
        return (
            f"Could not download {kind} ({reason}).\n"
            f"Download {url} by hand on a machine with internet access and put it at\n"
            f"    {archive}\n"
            "(keep the name; do not unpack it). The archive is used from there on.\n"
            "Or work without it: the smoke profile uses synthetic data made offline "
            "(make course PROFILE=smoke), and any folder of images works as a dataset "
            "(make course DATASET=imagefolder:PATH)."
        )

    @staticmethod
    def _parse(kind: str, archive: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
        label_key = b"labels" if kind == "cifar10" else b"fine_labels"
        meta_name = "batches.meta" if kind == "cifar10" else "meta"
        names_key = b"label_names" if kind == "cifar10" else b"fine_label_names"
        train_parts, test_parts, names = [], [], None
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = sorted(
                    (m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name
                )
                for member in members:
                    base = member.name.rsplit("/", 1)[-1]
                    is_train = base.startswith("data_batch") or base == "train"
                    is_test = base in ("test_batch", "test")
                    if base == meta_name:
                        meta = pickle.load(tar.extractfile(member), encoding="bytes")
                        names = [n.decode() for n in meta[names_key]]
                    elif is_train or is_test:
                        batch = pickle.load(tar.extractfile(member), encoding="bytes")
                        part = (np.asarray(batch[b"data"], dtype=np.uint8),
                                np.asarray(batch[label_key], dtype=np.int64))
                        (train_parts if is_train else test_parts).append(part)
        except (tarfile.TarError, pickle.UnpicklingError, EOFError, KeyError, OSError,
                TypeError, ValueError) as exc:  # damaged bytes surface as any of these
            raise DatasetError(
                f"{archive} is not a readable {kind} archive ({exc}). Delete it and run again "
                "to download a fresh copy."
            ) from exc
        if names is None or not train_parts:
            raise DatasetError(f"{archive} lacks the {kind} metadata or training batches.")
        parts = train_parts + test_parts
        data = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        pools = np.concatenate(
            [np.full(len(p[1]), TRAIN_POOL) for p in train_parts]
            + [np.full(len(p[1]), TEST_POOL) for p in test_parts]
        ).astype(np.int8)
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return images, labels, pools, names

    def fingerprint(self) -> str:
        """Archive name and size."""
        return f"{self.archive.name}:{self.archive.stat().st_size}"

    def read(self, index: int, size: int) -> tuple[np.ndarray, None, tuple[int, int]]:
        """The CIFAR image at ``index`` resized to ``size``."""
        return resize_image(self._images[index], size), None, (32, 32)


# --------------------------------------------------------------------- image folder

SPLIT_FOLDERS = {"train": TRAIN_POOL, "training": TRAIN_POOL, "val": TRAIN_POOL,
                 "valid": TRAIN_POOL, "validation": TRAIN_POOL, "test": TEST_POOL,
                 "testing": TEST_POOL}


class ImageFolderSource(Source):
    """A Kaggle-style folder: ``PATH/<class>/*`` or ``PATH/train|test/<class>/*``.

    Any image size and mode is accepted (converted to RGB). Files that are not
    images, or that fail to decode, are skipped and listed in ``skipped``; empty
    class folders are dropped with a warning. A ``val``/``valid`` folder joins the
    training pool, because the course draws its own validation split.
    """

    def __init__(self, root: Path) -> None:
        root = root.expanduser()
        if not root.is_dir():
            raise DatasetError(
                f"Image folder not found: {root}. Give 'imagefolder:PATH' where PATH holds "
                "one folder per class (or train/ and test/ folders that do)."
            )
        self.root = root.resolve()
        subdirs = [d for d in sorted(self.root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
        split_dirs = {d: SPLIT_FOLDERS[d.name.lower()] for d in subdirs if d.name.lower() in SPLIT_FOLDERS}
        layout = split_dirs if split_dirs else {self.root: TRAIN_POOL}
        skipped: list[tuple[str, str]] = []
        per_class: dict[str, list[tuple[Path, int]]] = {}
        for split_dir, pool in layout.items():
            for class_dir in sorted(split_dir.iterdir()):
                if not class_dir.is_dir() or class_dir.name.startswith("."):
                    continue
                entries = per_class.setdefault(class_dir.name, [])
                for path in sorted(class_dir.rglob("*")):
                    if not path.is_file() or path.name.startswith("."):
                        continue
                    if path.suffix.lower() not in IMAGE_EXTENSIONS:
                        skipped.append((str(path.relative_to(self.root)), "not an image file"))
                        continue
                    entries.append((path, pool))
        empty = sorted(c for c, items in per_class.items()
                       if not any(p == TRAIN_POOL for _, p in items))
        for name in empty:
            warnings.warn(f"Class folder '{name}' has no training images and is left out.",
                          stacklevel=2)
            skipped.append((name + "/", "class has no training images"))
            per_class.pop(name)
        if not per_class:
            raise DatasetError(
                f"No images found under {self.root}. Expected PATH/<class>/*.png|jpg or "
                "PATH/train/<class>/* (and optionally PATH/test/<class>/*)."
            )
        class_names = sorted(per_class)
        paths, labels, pools = [], [], []
        for label, name in enumerate(class_names):
            for path, pool in per_class[name]:
                paths.append(path)
                labels.append(label)
                pools.append(pool)
        self._paths = paths
        super().__init__(
            name=self.root.name, class_names=class_names,
            labels=np.asarray(labels, dtype=np.int64), pools=np.asarray(pools, dtype=np.int8),
            ids=[str(p.relative_to(self.root)) for p in paths], skipped=skipped,
        )

    def fingerprint(self) -> str:
        """Hash of every file's relative path, size and modification time."""
        digest = hashlib.sha1()
        for path, rel in zip(self._paths, self.ids, strict=True):
            stat = path.stat()
            # file names need not be valid UTF-8: hash their bytes as the OS gives them
            digest.update(os.fsencode(rel) + f":{stat.st_size}:{stat.st_mtime_ns};".encode())
        return f"{os.fsencode(self.root).hex()}:{digest.hexdigest()}"

    def read(self, index: int, size: int) -> tuple[np.ndarray, None, tuple[int, int]]:
        """Decode, convert to RGB and resize one file; raises :class:`ImageReadError`."""
        path = self._paths[index]
        try:
            with Image.open(path) as img:
                original = img.size  # before draft(), which shrinks a JPEG's reported size
                img.draft("RGB", (size, size))  # fast JPEG downscale; no-op otherwise
                if img.size[0] * img.size[1] > MAX_DECODED_PIXELS:
                    raise ImageReadError(
                        f"{original[0]}x{original[1]} pixels is more than the "
                        f"{MAX_DECODED_PIXELS / 1e6:.0f} megapixels decoded per image; shrink "
                        "it (or save it as JPEG, which is decoded at reduced size)")
                img.load()
                rgb = to_rgb(img)
                return resize_image(rgb, size), None, original
        except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
            raise ImageReadError(f"{type(exc).__name__}: {exc}") from exc


# --------------------------------------------------------------------------- shapes

class ShapesSource(Source):
    """The synthetic ``shapes`` dataset: one class per geometric shape, masks kept.

    Every image is a function of its index alone, so the dataset is the same on
    every machine and needs no download.
    """

    VERSION = 1

    def __init__(self, per_class: int = 300) -> None:
        n = per_class * len(SHAPE_CLASSES)
        labels = np.arange(n, dtype=np.int64) % len(SHAPE_CLASSES)
        super().__init__(
            name="shapes", class_names=list(SHAPE_CLASSES), labels=labels,
            pools=np.zeros(n, dtype=np.int8), ids=[f"shapes:{i}" for i in range(n)],
            has_masks=True,
        )
        self.per_class = per_class

    def fingerprint(self) -> str:
        """Generator version and size."""
        return f"shapes-v{self.VERSION}:{self.per_class}"

    def read(self, index: int, size: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """Render image ``index`` at ``size`` pixels with its object mask."""
        image, mask = render_shape(index, int(self.labels[index]), size)
        return image, mask, (size, size)


def make_source(spec: DatasetSpec, raw_dir: Path, download: bool = True) -> Source:
    """Build the :class:`Source` for a parsed spec."""
    if spec.kind in CIFAR_ARCHIVES:
        return CifarSource(spec.kind, raw_dir, download=download)
    if spec.kind == "imagefolder":
        from ..paths import resolve_path

        return ImageFolderSource(resolve_path(spec.arg))
    if spec.kind == "shapes":
        return ShapesSource(int(spec.arg) if spec.arg else 300)
    raise DatasetError(f"No source for spec {spec.text!r}")  # pragma: no cover
