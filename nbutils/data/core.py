"""The numpy core of the data layer: :func:`load` returns an :class:`ImageData`.

Every framework adapter (``nbutils.torch_data``, ``nbutils.keras_data``,
``nbutils.hf_data``) consumes exactly these arrays, this split and these
statistics, so the three frameworks see the same images.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..paths import (
    atomic_write_text,
    make_temp_dir,
    publish_folder,
    remove_stale_temp_dirs,
    resolve_path,
)
from .sources import ImageReadError, Source, make_source
from .specs import DatasetError, parse_spec
from .split import stratified_split

__all__ = ["Split", "ImageData", "load", "load_for", "channel_stats", "SPLITS"]

SPLITS = ("train", "val", "test")
CACHE_LAYOUT_VERSION = 2  # 2: meta.json records each array's shape and checksum


@dataclass
class Split:
    """One split: uint8 images (N, H, W, 3), int64 labels and optional masks / source ids."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    ids: list[str]
    masks: np.ndarray | None = None
    original_sizes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self, num_classes: int) -> np.ndarray:
        """Number of images per class."""
        return np.bincount(self.labels, minlength=num_classes)


@dataclass
class ImageData:
    """A dataset loaded, resized, split and described, independent of any framework."""

    spec: str
    name: str
    class_names: list[str]
    image_size: int
    seed: int
    train: Split
    val: Split
    test: Split
    mean: np.ndarray
    std: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)
    cache_dir: Path | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def splits(self) -> dict[str, Split]:
        """``{"train": ..., "val": ..., "test": ...}``."""
        return {"train": self.train, "val": self.val, "test": self.test}

    @property
    def has_masks(self) -> bool:
        """Whether object masks are known (the ``shapes`` dataset)."""
        return self.train.masks is not None

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """uint8 NHWC -> float32 NHWC, scaled to [0, 1] then standardised per channel."""
        x = np.asarray(images, dtype=np.float32) / 255.0
        return (x - self.mean) / self.std

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`normalize`, clipped to [0, 1] floats (for plotting)."""
        return np.clip(np.asarray(x, dtype=np.float32) * self.std + self.mean, 0.0, 1.0)

    def class_counts(self) -> dict[str, np.ndarray]:
        """Images per class for each split."""
        return {name: s.class_counts(self.num_classes) for name, s in self.splits.items()}

    def summary(self) -> str:
        """A few lines: spec, classes, split sizes, statistics, skipped files."""
        lines = [
            f"dataset  : {self.spec}  ({self.num_classes} classes, {self.image_size}x{self.image_size})",
            f"classes  : {', '.join(self.class_names)}",
            f"split    : train={len(self.train)}  val={len(self.val)}  test={len(self.test)}  "
            f"(seed {self.seed})",
            f"mean     : {[round(float(v), 4) for v in self.mean]}",
            f"std      : {[round(float(v), 4) for v in self.std]}",
        ]
        if self.skipped:
            lines.append(f"skipped  : {len(self.skipped)} files (see data.skipped)")
        return "\n".join(lines)


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 NHWC images, in [0, 1] units, computed in chunks."""
    if len(images) == 0:
        raise DatasetError("Cannot compute statistics of an empty training split.")
    total = np.zeros(3, np.float64)
    total_sq = np.zeros(3, np.float64)
    count = 0
    for start in range(0, len(images), chunk):
        block = np.asarray(images[start:start + chunk], dtype=np.float64) / 255.0
        total += block.sum(axis=(0, 1, 2))
        total_sq += (block ** 2).sum(axis=(0, 1, 2))
        count += block.shape[0] * block.shape[1] * block.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 1e-12))
    return mean.astype(np.float32), std.astype(np.float32)


def _cache_key(source: Source, settings: dict[str, Any]) -> str:
    payload = json.dumps({"fp": source.fingerprint(), "layout": CACHE_LAYOUT_VERSION, **settings},
                         sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


def _decode_split(
    source: Source, indices: np.ndarray, size: int, out_dir: Path | None, name: str,
    workers: int, progress: bool,
) -> tuple[dict[str, np.ndarray], list[str], list[tuple[str, str]]]:
    """Decode the items of one split into arrays (memory-mapped files when ``out_dir``)."""
    from tqdm.auto import tqdm

    n = len(indices)

    def alloc(suffix: str, shape: tuple, dtype: Any) -> np.ndarray:
        if out_dir is None:
            return np.zeros(shape, dtype)
        return np.lib.format.open_memmap(out_dir / f"{name}_{suffix}.npy", "w+", dtype, shape)

    images = alloc("images", (n, size, size, 3), np.uint8)
    masks = alloc("masks", (n, size, size), np.bool_) if source.has_masks else None
    sizes = np.zeros((n, 2), np.int32)
    ok = np.ones(n, bool)
    skipped: list[tuple[str, str]] = []

    def work(pos: int) -> None:
        idx = int(indices[pos])
        try:
            img, mask, original = source.read(idx, size)
        except ImageReadError as exc:
            ok[pos] = False
            skipped.append((source.ids[idx], str(exc)))
            return
        images[pos] = img
        if masks is not None:
            masks[pos] = mask
        sizes[pos] = original

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(tqdm(pool.map(work, range(n)), total=n, desc=f"decode {name}", disable=not progress,
                  leave=False))
    keep = np.flatnonzero(ok)
    arrays = {"images": images, "labels": source.labels[indices].astype(np.int64), "sizes": sizes}
    if masks is not None:
        arrays["masks"] = masks
    if len(keep) < n:  # drop unreadable files, compacting in place
        for key, arr in arrays.items():
            arrays[key] = np.ascontiguousarray(arr[keep])
    ids = [source.ids[int(indices[p])] for p in keep]
    return arrays, ids, sorted(skipped)


def _save_cache(cache_dir: Path, tmp_dir: Path, splits: dict, meta: dict) -> None:
    for name, (arrays, _ids) in splits.items():
        for key, arr in arrays.items():
            target = tmp_dir / f"{name}_{key}.npy"
            if isinstance(arr, np.memmap) and Path(arr.filename) == target:
                arr.flush()
            else:  # write beside, then swap, so an open memmap never sees a truncated file
                partial = tmp_dir / f".{name}_{key}.partial.npy"
                np.save(partial, arr)
                os.replace(partial, target)
    meta = {**meta, "arrays": {f"{name}_{key}": {"shape": list(arr.shape),
                                                 "sha1": _array_digest(np.asarray(arr))}
                               for name, (arrays, _ids) in splits.items()
                               for key, arr in arrays.items()}}
    atomic_write_text(tmp_dir / "meta.json", json.dumps(meta, indent=1))
    # another process may finish the same cache first: its arrays come from the same
    # files and settings, so keep them
    publish_folder(tmp_dir, cache_dir)


def _split_from_files(cache_dir: Path, name: str, ids: list[str]) -> Split:
    def get(key: str) -> np.ndarray | None:
        path = cache_dir / f"{name}_{key}.npy"
        return np.load(path, mmap_mode="r") if path.exists() else None

    images, labels = get("images"), get("labels")
    if images is None or labels is None:
        raise ValueError(f"{name}_images.npy or {name}_labels.npy is missing")
    sizes = get("sizes")
    return Split(name=name, images=images, labels=np.asarray(labels), ids=ids,
                 masks=get("masks"), original_sizes=None if sizes is None else np.asarray(sizes))


def _decode_all(source: Any, index: dict[str, Any], image_size: int, tmp_dir: Path | None,
                num_workers: int, progress: bool, spec: str
                ) -> tuple[dict[str, tuple[dict[str, np.ndarray], list[str]]], list[Any]]:
    """Decode every split: ``{split: (arrays, ids)}`` and the skipped files."""
    decoded, skipped = {}, list(source.skipped)
    for name in SPLITS:
        arrays, ids, bad = _decode_split(source, index[name], image_size, tmp_dir, name,
                                         num_workers, progress)
        decoded[name] = (arrays, ids)
        skipped.extend(bad)
    if len(decoded["train"][1]) == 0:
        raise DatasetError(f"No readable training images in {spec}.")
    return decoded, skipped


def _drop_empty_classes(decoded: dict[str, tuple[dict[str, np.ndarray], list[str]]],
                        class_names: list[str], skipped: list[Any], spec: str) -> list[str]:
    """Leave out the classes left without a readable training image (in place); refuse < 2.

    Which classes exist is only known once the images are decoded: a class folder whose
    files are all unreadable would otherwise stay as an output nothing teaches.
    """
    counts = np.bincount(decoded["train"][0]["labels"], minlength=len(class_names))
    keep = np.flatnonzero(counts > 0)
    if len(keep) < 2:
        found = ", ".join(class_names[i] for i in keep) or "none"
        raise DatasetError(f"{spec} has {len(keep)} class(es) with readable training images "
                           f"({found}); a classifier needs at least two. Add images of other "
                           "classes (one folder per class).")
    if len(keep) == len(class_names):
        return class_names
    remap = np.full(len(class_names), -1, np.int64)
    remap[keep] = np.arange(len(keep))
    for name, (arrays, ids) in decoded.items():
        rows = np.flatnonzero(remap[arrays["labels"]] >= 0)
        for key in arrays:
            arrays[key] = np.ascontiguousarray(arrays[key][rows])
        arrays["labels"] = remap[arrays["labels"]]
        decoded[name] = (arrays, [ids[int(r)] for r in rows])
    for i in np.flatnonzero(counts == 0):
        warnings.warn(f"Class '{class_names[i]}' has no readable training image and is left "
                      "out (its validation and test images too).", stacklevel=3)
        skipped.append((class_names[i] + "/", "no readable training image: class left out"))
    return [class_names[i] for i in keep]


def load(
    spec: str,
    image_size: int = 32,
    seed: int = 42,
    val_fraction: float = 0.1,
    test_fraction: float = 0.15,
    max_train_per_class: int | None = None,
    max_test_per_class: int | None = None,
    data_dir: str | os.PathLike[str] = "data",
    cache: bool = True,
    num_workers: int = 2,
    download: bool = True,
    progress: bool = True,
) -> ImageData:
    """Load a dataset spec as resized uint8 arrays with a fixed stratified split.

    Args:
        spec: ``cifar10``, ``cifar100``, ``imagefolder:PATH``, ``shapes`` or ``shapes:N``.
        image_size: images are resized to ``image_size`` x ``image_size``.
        seed: the split seed (the split is fixed for a given dataset and seed).
        val_fraction: share of each class's training pool held out for validation.
        test_fraction: share held out for testing when the dataset has no test split.
        max_train_per_class / max_test_per_class: per-class caps for quick runs.
        data_dir: downloads go to ``data_dir/raw``, decoded arrays to ``data_dir/processed``.
        cache: keep decoded arrays on disk (memory-mapped on later loads).
        num_workers: decoding threads.
        download: allow downloading CIFAR archives.
        progress: show progress bars.

    Returns:
        An :class:`ImageData`; unreadable files are listed in ``skipped``.
    """
    parsed = parse_spec(spec)
    root = resolve_path(data_dir)
    source = make_source(parsed, root / "raw", download=download)
    settings = {"size": image_size, "seed": seed, "val": val_fraction, "test": test_fraction,
                "max_train": max_train_per_class, "max_test": max_test_per_class}
    cache_dir = root / "processed" / f"{parsed.slug}-{image_size}px-{_cache_key(source, settings)}"
    if cache and (cached := _load_cached(cache_dir, spec, image_size, seed)) is not None:
        return cached
    index = stratified_split(source.labels, source.pools, seed, val_fraction, test_fraction,
                             max_train_per_class, max_test_per_class)
    tmp_dir = None
    if cache:
        remove_stale_temp_dirs(cache_dir.parent)
        tmp_dir = make_temp_dir(cache_dir)
    try:
        decoded, skipped = _decode_all(source, index, image_size, tmp_dir, num_workers,
                                       progress, spec)
        names = _drop_empty_classes(decoded, list(source.class_names), skipped, spec)
        mean, std = channel_stats(decoded["train"][0]["images"])
        if not cache:
            splits = {name: Split(name, a["images"], a["labels"], ids, a.get("masks"),
                                  a["sizes"]) for name, (a, ids) in decoded.items()}
            return ImageData(spec, source.name, names, image_size, seed, splits["train"],
                             splits["val"], splits["test"], mean, std,
                             [tuple(s) for s in skipped], None)
        _save_cache(cache_dir, tmp_dir, decoded, {
            "spec": spec, "name": source.name, "class_names": names, "image_size": image_size,
            "seed": seed, "mean": mean.tolist(), "std": std.tolist(), "skipped": skipped,
            "ids": {name: ids for name, (_a, ids) in decoded.items()}, **settings})
    finally:
        if tmp_dir is not None and tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
    data = _load_cached(cache_dir, spec, image_size, seed)
    if data is None:
        raise DatasetError(f"The cache just written in {cache_dir} does not read back; check "
                           "the disk (space, permissions) and run again.")
    return data


def _array_digest(arr: np.ndarray) -> str:
    """A cheap content checksum: shape, dtype and the bytes of up to 256 evenly spaced rows.

    Labels (small) are hashed whole by passing them with fewer rows than that bound, or
    by the caller; a zeroed, truncated or reshaped image file changes the digest.
    """
    digest = hashlib.sha1(f"{arr.shape}|{arr.dtype}".encode())
    rows = arr if len(arr) <= 256 else arr[np.linspace(0, len(arr) - 1, 256).astype(np.int64)]
    digest.update(np.ascontiguousarray(rows).tobytes())
    if arr.dtype.kind in "iub" and arr.ndim == 1:  # labels: every one of them
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()


def _load_cached(cache_dir: Path, spec: str, image_size: int, seed: int) -> ImageData | None:
    """The cached dataset, verified against the shapes and checksums in its ``meta.json``.

    ``None`` when there is no cache; a damaged one (missing or truncated file, other
    shape, changed content) is removed with a warning so that it is rebuilt.
    """
    meta_path = cache_dir / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        splits = {name: _split_from_files(cache_dir, name, meta["ids"][name]) for name in SPLITS}
        _verify_cache(splits, meta["arrays"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warnings.warn(f"The cached dataset in {cache_dir} is damaged ({exc}); rebuilding it.",
                      stacklevel=3)
        shutil.rmtree(cache_dir, ignore_errors=True)
        return None
    return ImageData(
        spec=spec, name=meta["name"], class_names=list(meta["class_names"]),
        image_size=image_size, seed=seed, train=splits["train"], val=splits["val"],
        test=splits["test"], mean=np.asarray(meta["mean"], np.float32),
        std=np.asarray(meta["std"], np.float32),
        skipped=[tuple(s) for s in meta["skipped"]], cache_dir=cache_dir,
    )


def _verify_cache(splits: dict[str, Split], expected: dict[str, dict[str, Any]]) -> None:
    """Raise ``ValueError`` naming the first array whose shape or checksum differs."""
    for name, split in splits.items():
        arrays = {"images": split.images, "labels": split.labels, "masks": split.masks,
                  "sizes": split.original_sizes}
        for key, arr in arrays.items():
            want = expected.get(f"{name}_{key}")
            if want is None:
                continue
            if arr is None or arr.ndim == 0:
                raise ValueError(f"{name}_{key}.npy is missing")
            if list(arr.shape) != want["shape"] or _array_digest(arr) != want["sha1"]:
                raise ValueError(f"{name}_{key}.npy has other shape or content than recorded")
        if len(split.ids) != len(split.labels):
            raise ValueError(f"{name} has {len(split.ids)} ids for {len(split.labels)} labels")


def load_for(cfg: Any, image_size: int | None = None, progress: bool = True) -> ImageData:
    """Load the dataset a :class:`~nbutils.config.RunConfig` names, with its data settings."""
    d = cfg.data
    return load(
        cfg.dataset, image_size=image_size or d["image_size"], seed=cfg.seed,
        val_fraction=d["val_fraction"], test_fraction=d["test_fraction"],
        max_train_per_class=d["max_train_per_class"], max_test_per_class=d["max_test_per_class"],
        data_dir=cfg.paths.data_dir, cache=d["cache"], num_workers=max(1, d["num_workers"]),
        progress=progress,
    )
