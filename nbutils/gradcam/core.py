"""The framework-free part of Grad-CAM: weights, maps, normalisation and resizing.

Each backend returns the target layer's activations ``A`` and the gradients
``dy_c/dA`` of the target class score as numpy arrays shaped (N, C, h, w); the
maths below turns them into maps, batched over images.

Grad-CAM (Selvaraju et al., 2017)::

    alpha_k = mean_ij  dy_c / dA_k[i, j]              (one weight per channel)
    L_c     = ReLU( sum_k alpha_k * A_k )             (an h x w map)

Grad-CAM++ (Chattopadhay et al., 2018) weights each position's positive gradient
by a factor built from second and third powers of the gradient, which spreads
the map over several instances of an object instead of the most salient one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["METHODS", "CAMResult", "cam_weights", "compute_cam", "is_constant", "normalize_maps",
           "resize_bilinear", "resolve_targets"]

METHODS = ("gradcam", "gradcam++")
_EPS = 1e-7


@dataclass
class CAMResult:
    """Grad-CAM maps for a batch of images.

    Attributes:
        maps: (N, H, W) float32 in [0, 1], resized to the images' size, each
            scaled so that its maximum is 1 (all zeros when the map is empty).
        raw: (N, h, w) float32, the un-normalised map at the layer's resolution.
        class_idx: (N,) int64, the class each map explains.
        probs: (N, K) float32, the model's probabilities for the inputs.
        layer: name of the target layer.
        method: ``gradcam`` or ``gradcam++``.
        framework: ``pytorch``, ``keras`` or ``huggingface``.
    """

    maps: np.ndarray
    raw: np.ndarray
    class_idx: np.ndarray
    probs: np.ndarray
    layer: str
    method: str
    framework: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def predictions(self) -> np.ndarray:
        """(N,) predicted classes (argmax of ``probs``)."""
        return self.probs.argmax(axis=1)

    def __len__(self) -> int:
        return len(self.maps)


def cam_weights(activations: np.ndarray, gradients: np.ndarray, method: str = "gradcam"
                ) -> np.ndarray:
    """Per-channel weights (N, C) from activations and gradients (N, C, h, w)."""
    if method == "gradcam":
        return gradients.mean(axis=(2, 3))
    if method == "gradcam++":
        g2 = gradients ** 2
        g3 = g2 * gradients
        sum_a = activations.sum(axis=(2, 3), keepdims=True)
        denom = 2.0 * g2 + sum_a * g3
        # the usual small constant in the denominator, relative to each image's scale
        eps = _EPS * np.abs(denom).max(axis=(1, 2, 3), keepdims=True)
        safe = np.where(np.abs(denom) > eps, denom, np.where(denom < 0, -eps, eps))
        alpha = np.where((gradients != 0) & (eps > 0), g2 / np.where(safe != 0, safe, 1.0), 0.0)
        return (alpha * np.maximum(gradients, 0.0)).sum(axis=(2, 3))
    raise ValueError(f"Unknown Grad-CAM method {method!r}; use one of {METHODS}")


def compute_cam(activations: np.ndarray, gradients: np.ndarray, method: str = "gradcam"
                ) -> np.ndarray:
    """ReLU of the weighted channel sum: (N, C, h, w) -> (N, h, w) float32."""
    a = np.asarray(activations, dtype=np.float32)
    g = np.asarray(gradients, dtype=np.float32)
    if a.shape != g.shape or a.ndim != 4:
        raise ValueError(f"activations and gradients must both be (N, C, h, w); got {a.shape} "
                         f"and {g.shape}")
    weights = cam_weights(a, g, method)
    cam = np.einsum("nc,nchw->nhw", weights, a)
    return np.maximum(cam, 0.0).astype(np.float32)


def is_constant(maps: np.ndarray, rtol: float = 1e-5) -> np.ndarray:
    """(N,) whether each map is constant, relative to its own scale (all zero included).

    The test is relative because the scale of a map means nothing: a network with
    small activations (freshly initialised, say) has maps of 1e-10 that still rank
    positions.
    """
    m = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    lo, hi = m.min(axis=1), m.max(axis=1)
    return (hi - lo) <= rtol * np.maximum(np.abs(lo), np.abs(hi))


def normalize_maps(maps: np.ndarray) -> np.ndarray:
    """Scale each map to [0, 1] by its min and max; constant maps become zeros."""
    m = np.asarray(maps, dtype=np.float64)
    lo = m.min(axis=(1, 2), keepdims=True)
    span = m.max(axis=(1, 2), keepdims=True) - lo
    flat = is_constant(m)[:, None, None]
    out = np.where(flat, 0.0, (m - lo) / np.where(flat, 1.0, span))
    return out.astype(np.float32)


def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights for bilinear resizing (half-pixel centres)."""
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0.0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def resize_bilinear(arrays: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (N, h, w) or (N, h, w, C) arrays to ``size`` = (H, W), batched.

    Uses pixel-centre alignment (like ``align_corners=False``), so a map keeps its
    position when enlarged: the top-left layer cell covers the top-left image block.
    """
    x = np.asarray(arrays, dtype=np.float32)
    h, w = x.shape[1:3]
    H, W = int(size[0]), int(size[1])
    if (h, w) == (H, W):
        return x.copy()
    y0, y1, wy = _axis_weights(h, H)
    x0, x1, wx = _axis_weights(w, W)
    extra = (1,) * (x.ndim - 3)
    wy = wy.reshape(1, H, 1, *extra)
    wx = wx.reshape(1, 1, W, *extra)
    top = x[:, y0][:, :, x0] * (1 - wx) + x[:, y0][:, :, x1] * wx
    bottom = x[:, y1][:, :, x0] * (1 - wx) + x[:, y1][:, :, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)


def resolve_targets(target_class: Any, n: int) -> np.ndarray | None:
    """``None`` (explain the predicted class), an int for all images, or one per image."""
    if target_class is None:
        return None
    arr = np.asarray(target_class)
    if arr.ndim == 0:
        return np.full(n, int(arr), dtype=np.int64)
    arr = arr.astype(np.int64).reshape(-1)
    if len(arr) != n:
        raise ValueError(f"target_class has {len(arr)} entries for {n} images; pass one class "
                         "per image, a single int, or None for the predicted class")
    return arr
