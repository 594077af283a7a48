"""The synthetic ``shapes`` dataset: coloured shapes on textured backgrounds, with masks.

Each image is drawn from its index alone (a fixed random stream per index), so
the data are identical everywhere and Grad-CAM can be scored against the mask.
Colour and position are random and independent of the class: only the outline
tells the classes apart.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["SHAPE_CLASSES", "render_shape"]

SHAPE_CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")
_SUPERSAMPLE = 4
_GENERATOR_SEED = 20240611


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "square":
        pts = [(math.cos(angle + k * math.pi / 2 + math.pi / 4), math.sin(angle + k * math.pi / 2 + math.pi / 4))
               for k in range(4)]
    elif kind == "triangle":
        pts = [(math.cos(angle + k * 2 * math.pi / 3), math.sin(angle + k * 2 * math.pi / 3))
               for k in range(3)]
    elif kind == "star":
        pts = []
        for k in range(10):
            rad = 1.0 if k % 2 == 0 else 0.45
            a = angle + k * math.pi / 5
            pts.append((rad * math.cos(a), rad * math.sin(a)))
    elif kind == "cross":
        w = 0.33
        base = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w),
                (-1, w), (-1, -w), (-w, -w)]
        ca, sa = math.cos(angle), math.sin(angle)
        pts = [(x * ca - y * sa, x * sa + y * ca) for x, y in base]
    else:  # pragma: no cover - guarded by caller
        raise ValueError(kind)
    return [(cx + r * x, cy + r * y) for x, y in pts]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured background: a colour gradient, stripes and noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))
    t = (t - t.min()) / (np.ptp(t) + 1e-6)
    img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    freq = rng.uniform(2, 6) * 2 * math.pi
    theta = rng.uniform(0, math.pi)
    stripes = np.sin(freq * (xx * math.cos(theta) + yy * math.sin(theta)))
    img += 25 * stripes[..., None]
    img += rng.normal(0, 12, size=img.shape)
    return np.clip(img, 0, 255)


def render_shape(index: int, label: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Render image ``index`` of class ``label`` at ``size`` x ``size``.

    Returns:
        ``(image, mask)``: uint8 array (size, size, 3) and bool array (size, size)
        that is True on the object.
    """
    kind = SHAPE_CLASSES[label]
    rng = np.random.default_rng([_GENERATOR_SEED, index])
    big = size * _SUPERSAMPLE
    r = rng.uniform(0.2, 0.32) * big
    cx = rng.uniform(r * 1.05, big - r * 1.05)
    cy = rng.uniform(r * 1.05, big - r * 1.05)
    angle = rng.uniform(0, 2 * math.pi)
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    mask_img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask_img)
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif kind == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        inner = r * 0.55
        draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=0)
    else:
        draw.polygon(_polygon(kind, cx, cy, r, angle), fill=255)
    alpha = np.asarray(mask_img.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0
    background = _background(rng, size)
    # make sure the object stands out from the local background
    bg_mean = background[alpha > 0.5].mean(axis=0) if (alpha > 0.5).any() else background.mean((0, 1))
    colour_arr = np.asarray(colour, dtype=np.float32)
    if np.abs(colour_arr - bg_mean).sum() < 150:
        colour_arr = 255.0 - bg_mean
    shade = 1.0 + rng.normal(0, 0.04, size=(size, size, 1))
    image = background * (1 - alpha[..., None]) + colour_arr * shade * alpha[..., None]
    return np.clip(image, 0, 255).astype(np.uint8), alpha > 0.5
