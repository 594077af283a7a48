"""Run an exported ONNX classifier with ONNX Runtime, NumPy and Pillow only.

An export folder (written by :func:`nbutils.export.export_onnx`) holds ``model.onnx``
and a ``classifier.json`` whose framework is ``onnx``; its ``extra`` says how images
reach the graph: the graph takes uint8 (N, S, S, 3) pixels at ``input_size`` S, and
every normalisation the model needs happens inside it. This module imports no
deep-learning framework, so a deployed model needs only ``onnxruntime``, ``numpy``
and ``pillow`` (plus this package).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..inference import ClassifierInfo, check_outputs, read_classifier_info
from ..paths import resolve_path

__all__ = ["ONNX_FILE", "RESAMPLE", "OnnxClassifier", "load_classifier", "resize_batch"]

ONNX_FILE = "model.onnx"
RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
            "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}


def resize_batch(images: np.ndarray, size: int, resample: str = "bilinear") -> np.ndarray:
    """uint8 NHWC images resized to ``size`` x ``size`` with Pillow (unchanged if they fit)."""
    if images.shape[1:3] == (size, size):
        return images
    method = RESAMPLE[resample]
    return np.stack([np.asarray(Image.fromarray(img).resize((size, size), method), np.uint8)
                     for img in images])


def _session(path: Path, threads: int = 0) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: no warnings about unused initialisers
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])


@dataclass
class OnnxClassifier:
    """An exported model: ``info``, the ONNX Runtime session (``model``) and ``predict_proba``."""

    info: ClassifierInfo
    model: Any
    path: Path

    @property
    def input_size(self) -> int:
        """The side of the graph's input images."""
        return int(self.info.extra.get("input_size", self.info.image_size))

    def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, K) float32 probabilities for uint8 (N, H, W, 3) images of any size.

        Images are resized to the graph's input with the model's own resampling; with
        ``tta_flip`` in the info the probabilities of each image and its mirror image
        are averaged, as the framework's classifier does.
        """
        arr = np.asarray(images)
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"predict_proba expects uint8 (N, H, W, 3) images, got "
                             f"{arr.dtype} {arr.shape}")
        k = len(self.info.class_names)
        if len(arr) == 0:
            return np.zeros((0, k), np.float32)
        arr = resize_batch(arr, self.input_size, str(self.info.extra.get("resample", "bilinear")))
        probs = self._run(arr, batch_size)
        if self.info.extra.get("tta_flip"):
            probs = 0.5 * (probs + self._run(np.ascontiguousarray(arr[:, :, ::-1]), batch_size))
        return probs.astype(np.float32)

    def _run(self, arr: np.ndarray, batch_size: int) -> np.ndarray:
        name = self.model.get_inputs()[0].name
        step = max(1, int(batch_size))
        return np.concatenate([self.model.run(None, {name: np.ascontiguousarray(arr[i:i + step])})[0]
                               for i in range(0, len(arr), step)])

    def __repr__(self) -> str:
        return (f"OnnxClassifier({self.info.model}, {len(self.info.class_names)} classes, "
                f"{self.input_size}px, from {self.info.extra.get('exported_from', '?')})")


def load_classifier(model_dir: str | os.PathLike[str], info: ClassifierInfo | None = None,
                    device: str = "cpu", threads: int = 0) -> OnnxClassifier:
    """Open an export folder (the ``nbutils.inference`` contract); ONNX Runtime on the CPU."""
    folder = resolve_path(model_dir)
    info = info or read_classifier_info(folder)
    path = folder / str(info.extra.get("onnx_file", ONNX_FILE))
    if not path.is_file():
        raise FileNotFoundError(f"No {path.name} in {folder}: export the model again with "
                                "python -m nbutils.export MODEL_DIR --format onnx")
    try:
        session = _session(path, threads)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types: say which file
        raise ValueError(f"{path} is not a model ONNX Runtime can open ({type(exc).__name__}: "
                         f"{exc}); export it again.") from exc
    check_outputs(info, int(session.get_outputs()[0].shape[-1]), folder)
    return OnnxClassifier(info=info, model=session, path=path)
