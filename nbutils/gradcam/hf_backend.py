"""Grad-CAM for Hugging Face image classifiers: CNN backbones and vision transformers.

CNN backbones (ResNet, ConvNeXt, EfficientNet, ``TimmWrapper`` around a timm CNN)
are PyTorch modules with spatial feature maps, so the PyTorch backend's hooks
apply as they are; only the forward call differs (``model(pixel_values=x).logits``).

Vision transformers have no feature map: a layer outputs tokens (N, T, D), the
first few of them (class token, registers) not tied to a position. The patch
tokens are reshaped to the patch grid (N, D, h, w), h = image height / patch
size, read from the model config. The default target is a normalisation layer
of the last block: the class token is pooled after the last block, so the last
block's outputs at the patch positions get no gradient at all, while the
input of its attention (``layernorm_before`` in ViT, ``norm1`` in timm) does.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import numpy as np
import torch
from torch import nn

from . import torch_backend as tb

__all__ = ["prepare", "prepare_inputs", "interpolation_of", "forward_fn", "is_token_model",
           "patch_size", "tokens_to_grid",
           "default_layer", "candidate_layers", "forward_backward", "predict_logits",
           "randomized_copy"]

_DEFAULT_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prepare_inputs(images: Any, info: Any = None, device: torch.device | str = "cpu"
                   ) -> torch.Tensor:
    """uint8 NHWC images -> ``pixel_values`` (N, 3, S, S) resized and standardised with ``info``."""
    return tb.prepare_inputs(images, info, device)


def interpolation_of(model: nn.Module) -> str:
    """How the model's processor resizes: timm's ``pretrained_cfg`` says, else bilinear."""
    pcfg = getattr(getattr(model, "config", None), "pretrained_cfg", None) or {}
    mode = str(pcfg.get("interpolation", "bilinear")).lower() if isinstance(pcfg, dict) else ""
    return "bicubic" if mode == "bicubic" else "bilinear"


def prepare(model: nn.Module, images: Any, info: Any = None) -> torch.Tensor:
    """:func:`prepare_inputs` on the model's device, resized as its processor does."""
    return tb.prepare_inputs(images, info, tb.model_device(model), interpolation_of(model))


def forward_fn(model: nn.Module) -> tb.Forward:
    """``x -> logits`` for a ``*ForImageClassification`` model."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        return tb.logits_of(model(pixel_values=x))
    return forward


def is_token_model(model: nn.Module) -> bool:
    """Whether the model is a vision transformer (it has a patch-embedding module)."""
    return any("patchembed" in type(m).__name__.lower() for m in model.modules())


def patch_size(model: nn.Module) -> tuple[int, int] | None:
    """The patch size from the config (``config.patch_size``) or the patch-embedding module."""
    cfg = getattr(model, "config", None)
    value = getattr(cfg, "patch_size", None)
    if value is None:
        for m in model.modules():
            if "patchembed" in type(m).__name__.lower() and hasattr(m, "patch_size"):
                value = m.patch_size
                break
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)


def tokens_to_grid(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(N, T, D) tokens -> (N, D, h, w): drop the leading non-patch tokens, reshape row-major."""
    if tokens.ndim == 4:
        return tokens
    if tokens.ndim != 3:
        raise ValueError(f"Expected (N, tokens, dim) tokens, got shape {tuple(tokens.shape)}")
    n, t, d = tokens.shape
    gh, gw = grid
    prefix = t - gh * gw
    if prefix < 0:
        raise ValueError(f"{t} tokens cannot hold a {gh}x{gw} patch grid")
    return tokens[:, prefix:, :].reshape(n, gh, gw, d).permute(0, 3, 1, 2)


def _grid_fn(model: nn.Module) -> tb.ToGrid:
    """The token reshape for this model: grid = input size // patch size."""
    patch = patch_size(model)

    def to_grid(tokens: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        if patch is not None:
            grid = (hw[0] // patch[0], hw[1] // patch[1])
        else:  # square grid behind up to 8 leading tokens
            t = tokens.shape[1]
            side = next((math.isqrt(t - k) for k in range(9) if t - k > 0
                         and math.isqrt(t - k) ** 2 == t - k), None)
            if side is None:
                raise ValueError(f"Cannot find a square patch grid in {t} tokens")
            grid = (side, side)
        return tokens_to_grid(tokens, grid)

    return to_grid


def _token_norms(model: nn.Module, x: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    forward = forward_fn(model)
    return [(name, shape) for name, module, shape in tb.layer_outputs(model, x[:1], forward)
            if len(shape) == 3 and "norm" in type(module).__name__.lower()]


def _token_default(model: nn.Module, x: torch.Tensor) -> str:
    """The last normalisation layer whose patch tokens receive a gradient."""
    norms = _token_norms(model, x)
    if not norms:
        raise ValueError(f"{type(model).__name__}: no normalisation layer outputs tokens; "
                         "pass target_layer=<module name>")
    forward, to_grid = forward_fn(model), _grid_fn(model)
    probe = x[:1]
    for name, _shape in reversed(norms):
        _act, grad, _logits, _cls = tb.forward_backward(model, probe, name, None, forward, to_grid)
        if np.abs(grad).sum() > 0:
            return name
    return norms[0][0]


def default_layer(model: nn.Module, x: torch.Tensor) -> str:
    """Last convolutional feature map for CNNs; last block's attention-input norm for ViTs."""
    cached = _DEFAULT_CACHE.get(model)
    if cached is not None:
        return cached
    if is_token_model(model):
        name = _token_default(model, x)
    else:
        name = tb.default_layer(model, x, forward_fn(model))
    _DEFAULT_CACHE[model] = name
    return name


def candidate_layers(model: nn.Module, x: torch.Tensor) -> list[tb.LayerInfo]:
    """Usable target layers, shallow to deep (token norms for ViTs, feature maps for CNNs)."""
    if is_token_model(model):
        to_grid = _grid_fn(model)
        hw = (int(x.shape[-2]), int(x.shape[-1]))
        out = []
        for name, shape in _token_norms(model, x):
            grid = to_grid(torch.zeros(shape), hw).shape
            out.append(tb.LayerInfo(name, "tokens", tuple(grid[1:])))
        return out
    return tb.candidate_layers(model, x, forward_fn(model))


def forward_backward(model: nn.Module, x: torch.Tensor, layer: str, classes: np.ndarray | None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Activations, gradients (N, C, h, w), logits and classes for one batch."""
    to_grid = _grid_fn(model) if is_token_model(model) else None
    return tb.forward_backward(model, x, layer, classes, forward_fn(model), to_grid)


def predict_logits(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Class scores (N, K) of a prepared batch, without gradients."""
    return tb.predict_logits(model, x, forward_fn(model))


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy with every weight re-initialised (see :func:`torch_backend.randomized_copy`)."""
    return tb.randomized_copy(model, seed)
