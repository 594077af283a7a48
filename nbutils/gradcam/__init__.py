"""Grad-CAM for the course's three frameworks behind one call.

    from nbutils.gradcam import gradcam
    result = gradcam(classifier, images)           # a reloaded course model, uint8 images
    result.maps                                    # (N, H, W) in [0, 1], on the images' grid

``model`` may be a reloaded course classifier (``nbutils.inference.load_classifier``:
its ``info`` gives the input size and standardisation) or a native model: a
PyTorch ``nn.Module``, a ``keras.Model`` or a Hugging Face ``PreTrainedModel``.
The backend is picked from the model's type without importing the other
frameworks. Images are uint8 (N, H, W, 3) pixels, prepared the way the model
expects (resized to ``info.image_size``, standardised, or left raw for Keras
models that rescale inside), or an already prepared float batch.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy as np

from ..frameworks.registry import frameworks, gradcam_backends
from .core import METHODS, CAMResult, compute_cam, normalize_maps, resize_bilinear, resolve_targets

__all__ = ["METHODS", "CAMResult", "gradcam", "framework_of", "unwrap", "default_target_layer",
           "candidate_layers", "randomized_copy", "prepare_inputs"]



def framework_of(model: Any) -> str:
    """The framework id of a native model, read from its class hierarchy (no imports).

    The first class of the hierarchy defined in a module a registered framework names
    (its ``native_modules``) decides, so a Hugging Face model, which is also a torch
    ``nn.Module``, is ``huggingface``.
    """
    for cls in type(model).__mro__:
        for fw in frameworks():
            if fw.native_modules and cls.__module__.startswith(fw.native_modules):
                return fw.id
    raise TypeError(f"Grad-CAM supports torch nn.Module, keras.Model and Hugging Face models; "
                    f"got {type(model).__name__}. Pass the native model or a reloaded course "
                    "classifier (nbutils.inference.load_classifier).")


def unwrap(model: Any, info: Any = None) -> tuple[Any, Any]:
    """``(native model, info)`` from a reloaded classifier or a native model."""
    if hasattr(model, "predict_proba") and hasattr(model, "model") and hasattr(model, "info"):
        return model.model, info if info is not None else model.info
    return model, info


def _backend(framework: str) -> ModuleType:
    """The Grad-CAM backend of ``framework``, from the framework registry."""
    backends = gradcam_backends()
    if framework not in backends:
        raise TypeError(f"No Grad-CAM backend for framework {framework!r}; "
                        f"available: {', '.join(backends)}")
    return importlib.import_module(backends[framework])


def prepare_inputs(model: Any, images: Any, info: Any = None) -> Any:
    """Images in the model's own input convention (a torch tensor or a float numpy array)."""
    native, info = unwrap(model, info)
    return _backend(framework_of(native)).prepare(native, images, info)


def _probe(model: Any, images: Any, info: Any) -> Any:
    """One prepared image (from ``images`` or a grey one of ``info.image_size``)."""
    if images is None:
        size = int(getattr(info, "image_size", 32) or 32)
        images = np.full((1, size, size, 3), 128, np.uint8)
    return prepare_inputs(model, images[:1], info)


def default_target_layer(model: Any, images: Any = None, info: Any = None) -> str:
    """The layer :func:`gradcam` explains when ``target_layer`` is ``None``."""
    native, info = unwrap(model, info)
    return _backend(framework_of(native)).default_layer(native, _probe(native, images, info))


def candidate_layers(model: Any, images: Any = None, info: Any = None) -> list:
    """Target layers to choose from, shallow to deep (``LayerInfo(name, kind, shape)``)."""
    native, info = unwrap(model, info)
    return _backend(framework_of(native)).candidate_layers(native, _probe(native, images, info))


def randomized_copy(model: Any, seed: int = 0) -> Any:
    """A copy of the native model with its weights re-initialised (for the sanity check)."""
    native, _info = unwrap(model)
    return _backend(framework_of(native)).randomized_copy(native, seed)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _cam_batch(backend: ModuleType, native: Any, batch: Any, info: Any, layer: str,
               cls: np.ndarray | None, method: str, tta: bool
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw maps, probabilities and explained classes of one batch (with flip TTA if asked)."""
    x = prepare_inputs(native, batch, info)
    if not tta:
        act, grad, logits, used = backend.forward_backward(native, x, layer, cls)
        return compute_cam(act, grad, method), _softmax(logits.astype(np.float64)), used
    xf = prepare_inputs(native, np.ascontiguousarray(batch[:, :, ::-1]), info)
    if cls is None:
        cls = (_softmax(backend.predict_logits(native, x).astype(np.float64))
               + _softmax(backend.predict_logits(native, xf).astype(np.float64))).argmax(1)
    act, grad, logits, used = backend.forward_backward(native, x, layer, cls)
    act_f, grad_f, logits_f, _used = backend.forward_backward(native, xf, layer, cls)
    raw = 0.5 * (compute_cam(act, grad, method) + compute_cam(act_f, grad_f, method)[:, :, ::-1])
    probs = 0.5 * (_softmax(logits.astype(np.float64)) + _softmax(logits_f.astype(np.float64)))
    return raw, probs, used


def _image_size(images: Any, is_pixels: bool, framework: str) -> tuple[int, int]:
    """(H, W) of the images: NHWC pixels, or a prepared NCHW tensor (torch, HF) / NHWC (Keras)."""
    if is_pixels or framework == "keras":
        return tuple(images.shape[1:3])
    return tuple(images.shape[-2:])


def gradcam(model: Any, images: Any, target_layer: str | None = None,
            target_class: int | np.ndarray | list[int] | None = None, method: str = "gradcam",
            *, info: Any = None, batch_size: int = 32, output_size: tuple[int, int] | None = None,
            progress: bool = False, tta: bool | None = None) -> CAMResult:
    """Grad-CAM (or Grad-CAM++) maps for a batch of images.

    Args:
        model: a reloaded course classifier or a native torch / Keras / Hugging Face model.
        images: uint8 (N, H, W, 3) pixels, or a batch already in the model's input
            convention (torch NCHW tensor, float NHWC array).
        target_layer: layer name (``named_modules()`` name for torch and Hugging Face,
            ``layer.name`` for Keras); ``None`` picks :func:`default_target_layer`.
        target_class: ``None`` explains each image's predicted class; an int or one
            class per image explains those.
        method: ``"gradcam"`` or ``"gradcam++"``.
        info: a :class:`~nbutils.inference.ClassifierInfo` (image size, mean, std);
            taken from the classifier when ``model`` is one.
        batch_size: images per forward/backward pass.
        output_size: (H, W) of the returned maps; defaults to the images' size.
        progress: show a progress bar over batches.
        tta: explain the classifier's flip test-time augmentation (``None`` follows
            ``info.extra["tta_flip"]``; uint8 images only): the class their averaged
            probabilities predict is explained on the image and its mirror image, and
            the two maps (the second mirrored back) are averaged.

    Returns:
        A :class:`~nbutils.gradcam.core.CAMResult`.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown Grad-CAM method {method!r}; use one of {METHODS}")
    native, info = unwrap(model, info)
    fw, n = framework_of(native), len(images)
    backend = _backend(fw)
    if n == 0:
        raise ValueError("gradcam() needs at least one image")
    classes = resolve_targets(target_class, n)
    is_pixels = isinstance(images, np.ndarray) and images.dtype == np.uint8
    layer = target_layer or default_target_layer(native, images[:1], info)
    if tta is None:
        tta = bool((getattr(info, "extra", None) or {}).get("tta_flip", False))
    tta = bool(tta) and is_pixels

    from tqdm.auto import tqdm

    parts = [_cam_batch(backend, native, images[start:start + batch_size], info, layer,
                        None if classes is None else classes[start:start + batch_size], method, tta)
             for start in tqdm(range(0, n, batch_size), desc=f"Grad-CAM ({fw})",
                               disable=not progress, leave=False)]
    raw = np.concatenate([p[0] for p in parts]).astype(np.float32)
    maps = normalize_maps(resize_bilinear(raw, output_size or _image_size(images, is_pixels, fw)))
    return CAMResult(maps=maps, raw=raw, class_idx=np.concatenate([p[2] for p in parts]),
                     probs=np.concatenate([p[1] for p in parts]).astype(np.float32), layer=layer,
                     method=method, framework=fw, extra={"tta_flip": tta})
