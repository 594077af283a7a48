"""Notebook 06's shortcut lab: train on images with a class-coloured marker, test on clean ones.

Two small AlexNets are trained with the course's loop on the synthetic ``shapes`` data,
one on clean images and one on images whose class is also written in a corner
(:func:`nbutils.data.shortcut.with_shortcut`). Both are then scored on the clean test
split and on the same test images with the marker, and Grad-CAM says where each looks:
on the object (the shapes' masks) or on the marker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["LabModel", "train_one", "train_pair", "score"]


@dataclass
class LabModel:
    """One lab model: its classifier and what it scored."""

    name: str
    classifier: Any
    val_acc: float
    scores: dict[str, float] = field(default_factory=dict)
    maps: np.ndarray | None = None


def train_one(name: str, data: Any, epochs: int, seed: int, precision_mixed: bool) -> LabModel:
    """The lab's small AlexNet trained on ``data`` (no augmentation, a fixed recipe)."""
    import torch

    from .. import torch_data, torch_models, torch_train
    from ..inference import ClassifierInfo

    torch.manual_seed(seed)
    config = torch_models.AlexNetConfig(num_classes=data.num_classes, image_size=data.image_size)
    net = torch_models.build_model(config)
    loaders = torch_data.make_loaders(data, 64, "cpu", augment=None, seed=seed,
                                      splits=("train", "val"))
    run = torch_train.fit(net, loaders["train"], loaders["val"], torch_train.TrainConfig(
        epochs=epochs, lr=0.05, mixed_precision=precision_mixed, seed=seed), "cpu", desc=name)
    info = ClassifierInfo(framework="pytorch", model=config.name,
                          class_names=list(data.class_names), image_size=data.image_size,
                          mean=[float(v) for v in data.mean], std=[float(v) for v in data.std])
    return LabModel(name, torch_train.TorchClassifier(info, net.eval(), "cpu"),
                    run.history[-1]["val_acc"])


def train_pair(clean: Any, marked: Any, epochs: int, seed: int = 42,
               mixed_precision: bool = False) -> list[LabModel]:
    """A model trained on ``clean`` data and one trained on ``marked`` data, same recipe."""
    return [train_one("clean", clean, epochs, seed, mixed_precision),
            train_one("marked", marked, epochs, seed, mixed_precision)]


def score(model: LabModel, test: Any, marked_images: np.ndarray, object_masks: np.ndarray,
          marker_masks: np.ndarray) -> LabModel:
    """Accuracy on the clean and the marked test images, and where Grad-CAM's maximum
    falls on the marked ones: on the object, or on the marker."""
    from . import gradcam
    from .evaluate import pointing_hits

    clean_acc = float((model.classifier.predict_proba(test.images).argmax(1) == test.labels).mean())
    marked_acc = float((model.classifier.predict_proba(marked_images).argmax(1)
                        == test.labels).mean())
    cam = gradcam(model.classifier, marked_images, tta=False)
    model.maps = cam.maps
    model.scores = {"clean test acc": clean_acc, "marked test acc": marked_acc,
                    "maps on object": float(pointing_hits(cam.maps, object_masks).mean()),
                    "maps on marker": float(pointing_hits(cam.maps, marker_masks).mean())}
    return model
