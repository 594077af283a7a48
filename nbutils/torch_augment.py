"""Batch-level augmentation for the PyTorch loop: MixUp, CutMix and TrivialAugment.

Everything works on whole batches on the training device, with per-image random
parameters drawn from the loader's generator: no Python loop over images.

* **MixUp** (Zhang et al., 2018) blends each image with another of the batch,
  ``x = λ x_i + (1 − λ) x_j``, and the target the same way.
* **CutMix** (Yun et al., 2019) pastes a box of another image instead; λ is the share
  of the image that stays, computed from the box actually pasted.
* **TrivialAugment** (Müller & Hutter, 2021) applies one randomly chosen operation with a
  random strength to each image. torchvision's ``TrivialAugmentWide`` draws one
  operation per *call*, so on a batch every image would get the same one; here each
  image gets its own, from the operations below, in a fixed number of tensor passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812

__all__ = ["TRIVIAL_OPS", "trivial_augment", "cutmix_box", "BatchMix", "soft_targets",
           "mixed_loss"]

# name -> largest strength (the strength of each image is uniform in [0, max])
TRIVIAL_OPS = {
    "identity": 0.0,
    "brightness": 0.9,     # factor 1 ± s
    "contrast": 0.9,       # factor 1 ± s around the image's mean grey
    "saturation": 0.9,     # factor 1 ± s around the pixel's grey
    "solarize": 1.0,       # invert pixels above 255 (1 − s)
    "posterize": 6.0,      # keep 8 − round(s) bits
    "autocontrast": 1.0,   # stretch each channel to 0..255
    "rotate": 30.0,        # ± s degrees
    "shear_x": 0.3,        # ± s
    "shear_y": 0.3,
    "translate_x": 0.3,    # ± s of the width
    "translate_y": 0.3,
}
_OPS = list(TRIVIAL_OPS)


def _pick(op: torch.Tensor, name: str, value: torch.Tensor, neutral: float) -> torch.Tensor:
    """Per image: ``value`` where the image's operation is ``name``, ``neutral`` elsewhere."""
    return torch.where(op == _OPS.index(name), value, torch.full_like(value, neutral))


def _affine(x: torch.Tensor, op: torch.Tensor, s: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Rotate, shear or translate each image of a float NCHW batch (one grid_sample)."""
    b = x.shape[0]
    angle = _pick(op, "rotate", sign * s * math.pi / 180.0, 0.0)
    shear_x = _pick(op, "shear_x", sign * s, 0.0)
    shear_y = _pick(op, "shear_y", sign * s, 0.0)
    tx = _pick(op, "translate_x", sign * s * 2.0, 0.0)   # grid units: 2 = the full width
    ty = _pick(op, "translate_y", sign * s * 2.0, 0.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos + shear_x * sin, -sin + shear_x * cos, tx], 1),
                         torch.stack([sin + shear_y * cos, cos - shear_y * sin, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), [b, x.shape[1], x.shape[2], x.shape[3]],
                         align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _colour(x: torch.Tensor, op: torch.Tensor, s: torch.Tensor, sign: torch.Tensor
            ) -> torch.Tensor:
    """Brightness, contrast, saturation and autocontrast on a float NCHW batch in [0, 255]."""
    view = (-1, 1, 1, 1)
    x = x * _pick(op, "brightness", 1 + sign * s, 1.0).view(view)
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    c = _pick(op, "contrast", 1 + sign * s, 1.0).view(view)
    x = grey.mean(dim=(2, 3), keepdim=True) * (1 - c) + x * c
    sat = _pick(op, "saturation", 1 + sign * s, 1.0).view(view)
    x = grey * (1 - sat) + x * sat
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    stretched = (x - lo) * 255.0 / (hi - lo).clamp_min(1.0)
    auto = (op == _OPS.index("autocontrast")).view(view)
    return torch.where(auto, stretched, x).clamp(0, 255)


def _tone(x: torch.Tensor, op: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Solarize and posterize on a uint8 NCHW batch."""
    view = (-1, 1, 1, 1)
    threshold = _pick(op, "solarize", 255.0 * (1 - s), 256.0).view(view)
    x = torch.where(x.float() >= threshold, 255 - x, x)
    bits = _pick(op, "posterize", 8 - torch.round(s), 8.0).clamp(2, 8).to(torch.int64)
    mask = (255 << (8 - bits)).to(torch.uint8) & 255
    return x & mask.view(view).to(torch.uint8)


def trivial_augment(images: torch.Tensor, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
    """TrivialAugment on a uint8 (B, H, W, C) batch: one random operation per image.

    Returns a new uint8 tensor of the same shape on the same device.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"trivial_augment expects a uint8 (B, H, W, C) batch, got "
                         f"{images.dtype} {tuple(images.shape)}")
    b, dev = images.shape[0], images.device
    op = torch.randint(0, len(_OPS), (b,), device=dev, generator=generator)
    top = torch.tensor([TRIVIAL_OPS[name] for name in _OPS], device=dev)[op]
    s = torch.rand(b, device=dev, generator=generator) * top
    sign = torch.where(torch.rand(b, device=dev, generator=generator) < 0.5, -1.0, 1.0)
    x = _tone(images.permute(0, 3, 1, 2), op, s).float()
    x = _affine(_colour(x, op, s, sign), op, s, sign)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def cutmix_box(lam: float, height: int, width: int, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> tuple[int, int, int, int]:
    """A box ``(top, left, bottom, right)`` covering about ``1 − lam`` of the image.

    Its centre is uniform over the image and it is clipped at the borders, so its real
    area can be smaller: :class:`BatchMix` recomputes λ from the box it pastes.
    """
    ratio = math.sqrt(max(0.0, 1.0 - lam))
    h, w = int(round(height * ratio)), int(round(width * ratio))
    cy = int(torch.randint(0, height, (1,), generator=generator, device=device))
    cx = int(torch.randint(0, width, (1,), generator=generator, device=device))
    top, bottom = max(cy - h // 2, 0), min(cy - h // 2 + h, height)
    left, right = max(cx - w // 2, 0), min(cx - w // 2 + w, width)
    return top, left, bottom, right


@dataclass
class BatchMix:
    """MixUp and/or CutMix of a float NCHW batch; with both on, each batch uses one of them.

    Attributes:
        mixup_alpha: MixUp's Beta(α, α) parameter (0 = off).
        cutmix_alpha: CutMix's Beta(α, α) parameter (0 = off).
    """

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    @property
    def active(self) -> bool:
        """Whether any mixing is on."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    @staticmethod
    def _beta(alpha: float, generator: torch.Generator | None, device: torch.device) -> float:
        """One Beta(α, α) draw from ``generator`` (Jöhnk's method: two uniforms, accept
        when U^(1/α) + V^(1/α) <= 1), so a seeded run mixes the same way every time."""
        for _ in range(10_000):
            u, v = torch.rand(2, device=device, generator=generator).double().tolist()
            a, b = u ** (1.0 / alpha), v ** (1.0 / alpha)
            if 0 < a + b <= 1.0:
                return a / (a + b)
        return 0.5  # pragma: no cover - acceptance is at least 1 % for alpha <= 4

    def __call__(self, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """``(mixed x, y, y of the partner image, λ)``: the loss is λ·CE(y) + (1 − λ)·CE(y2)."""
        if not self.active:
            return x, y, y, 1.0
        dev = x.device
        perm = torch.randperm(x.shape[0], device=dev, generator=generator)
        use_cutmix = self.cutmix_alpha > 0 and (
            self.mixup_alpha <= 0 or float(torch.rand(1, device=dev, generator=generator)) < 0.5)
        lam = self._beta(self.cutmix_alpha if use_cutmix else self.mixup_alpha, generator, dev)
        if not use_cutmix:
            return lam * x + (1 - lam) * x[perm], y, y[perm], lam
        top, left, bottom, right = cutmix_box(lam, x.shape[2], x.shape[3], generator, dev)
        mixed = x.clone()
        mixed[:, :, top:bottom, left:right] = x[perm, :, top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / (x.shape[2] * x.shape[3])
        return mixed, y, y[perm], lam


def soft_targets(y: torch.Tensor, y2: torch.Tensor, lam: float, num_classes: int
                 ) -> torch.Tensor:
    """The mixed target distribution λ·onehot(y) + (1 − λ)·onehot(y2) (rows sum to one)."""
    return (lam * F.one_hot(y, num_classes).float()
            + (1 - lam) * F.one_hot(y2, num_classes).float())


def mixed_loss(criterion: torch.nn.Module, out: torch.Tensor, y: torch.Tensor,
               y2: torch.Tensor, lam: float) -> torch.Tensor:
    """λ·criterion(out, y) + (1 − λ)·criterion(out, y2): the loss on the mixed targets."""
    if lam >= 1.0:
        return criterion(out, y)
    return lam * criterion(out, y) + (1 - lam) * criterion(out, y2)
