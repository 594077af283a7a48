"""The Hugging Face adapter of the data layer: ``datasets.Dataset`` from :class:`ImageData`.

The images, labels and train/val/test split are exactly those that notebooks 02
and 03 use. Each split becomes a ``datasets.Dataset`` with an ``image`` column
(decoded to PIL images, like the datasets of the Hugging Face course) and a
``label`` column (a ``ClassLabel`` that knows the class names). The model's image
processor is applied on the fly with ``with_transform``, so nothing is resized or
normalised ahead of time. Because the transform replaces the columns, the Trainer
must be told ``remove_unused_columns=False`` or it drops the ``image`` column
before the transform ever sees it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import hf_offline  # noqa: F401  (sets USE_TF=0 before datasets/transformers load)
from .data.core import SPLITS, ImageData, Split

__all__ = ["to_pil", "random_shift", "split_to_dataset", "to_datasets", "make_transform", "prepare_datasets", "collate"]


def to_pil(images: np.ndarray) -> list[Any]:
    """uint8 (N, H, W, 3) images as a list of PIL images (what processors and pipelines take)."""
    from PIL import Image

    return [Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8)) for img in np.asarray(images)]


def split_to_dataset(split: Split, class_names: Sequence[str]) -> Any:
    """One split as a ``datasets.Dataset`` with ``image`` (Image) and ``label`` (ClassLabel)."""
    from datasets import ClassLabel, Dataset, Features, Image, Value

    features = Features({"image": Image(), "label": ClassLabel(names=list(class_names)),
                         "image_id": Value("string")})
    images = [np.asarray(img) for img in split.images]
    return Dataset.from_dict(
        {"image": images, "label": np.asarray(split.labels).tolist(), "image_id": list(split.ids)},
        features=features,
    )


def to_datasets(data: ImageData) -> Any:
    """The train/val/test splits of ``data`` as a ``datasets.DatasetDict``."""
    from datasets import DatasetDict

    return DatasetDict({name: split_to_dataset(data.splits[name], data.class_names)
                        for name in SPLITS})


def random_shift(image: np.ndarray, rng: random.Random, pad: int | None = None) -> np.ndarray:
    """Pad by reflection and crop back at a random offset: the classic CIFAR augmentation.

    ``pad`` defaults to an eighth of the image side (4 pixels for 32x32 images).
    """
    h, w = image.shape[:2]
    pad = max(1, min(h, w) // 8) if pad is None else pad
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    top, left = rng.randint(0, 2 * pad), rng.randint(0, 2 * pad)
    return padded[top:top + h, left:left + w]


def make_transform(processor: Any, train: bool = False, hflip: bool = True, shift: bool = True,
                   seed: int | None = None) -> Callable[[dict[str, list]], dict[str, Any]]:
    """A batch transform for ``with_transform``: PIL images -> ``pixel_values`` + ``labels``.

    Args:
        processor: the model's image processor (resizes and normalises).
        train: augment the images (what ``hflip`` and ``shift`` ask for).
        hflip: flip half of the training images left-right.
        shift: move training images by a few pixels (:func:`random_shift`).
        seed: seed of the augmentation's random numbers.
    """
    from PIL import Image

    rngs: dict[int, random.Random] = {}

    def worker_rng() -> random.Random:
        # each DataLoader worker gets its own stream (copies of one stream would repeat)
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        wid = info.id if info is not None else -1
        if wid not in rngs:
            rngs[wid] = random.Random(None if seed is None else seed * 1000 + wid + 1)
        return rngs[wid]

    def augment(img: Any) -> Any:
        rng = worker_rng()
        arr = np.asarray(img)
        if shift:
            arr = random_shift(arr, rng)
        if hflip and rng.random() < 0.5:
            arr = arr[:, ::-1]
        return Image.fromarray(np.ascontiguousarray(arr))

    def transform(batch: dict[str, list]) -> dict[str, Any]:
        images = [img.convert("RGB") for img in batch["image"]]
        if train:
            images = [augment(img) for img in images]
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": list(pixels), "labels": list(batch["label"])}

    return transform


def prepare_datasets(data: ImageData, processor: Any, augment: bool = True,
                     seed: int = 42) -> Any:
    """``DatasetDict`` of train/val/test with the processor applied on the fly.

    Only the training split is augmented (random flips and shifts when ``augment``). Items come out as
    ``{"pixel_values": FloatTensor (3, H, W), "labels": int}``.
    """
    dsets = to_datasets(data)
    for name in SPLITS:
        is_train = name == "train"
        dsets[name] = dsets[name].with_transform(
            make_transform(processor, train=is_train and augment, seed=seed))
    return dsets


def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack items into a batch for the Trainer: ``pixel_values`` (B, 3, H, W), ``labels`` (B,)."""
    import torch

    return {"pixel_values": torch.stack([ex["pixel_values"] for ex in examples]),
            "labels": torch.tensor([int(ex["labels"]) for ex in examples], dtype=torch.long)}
