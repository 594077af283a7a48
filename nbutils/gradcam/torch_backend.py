"""Grad-CAM for PyTorch modules: a forward hook captures the target layer's output.

The hook hands a copy of the layer's output to the rest of the network, so that
an in-place operation further on (``ReLU(inplace=True)``) cannot change the
tensor we differentiate against; ``torch.autograd.grad`` then returns the
gradient of the class scores with respect to that output without touching the
parameters' ``.grad``. The Hugging Face backend reuses everything here with its
own forward function.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..images import as_image_batch

__all__ = ["LayerInfo", "prepare", "prepare_inputs", "predict_logits", "model_device", "get_module", "layer_outputs",
           "default_layer", "candidate_layers", "forward_backward", "randomized_copy",
           "Forward", "ToGrid"]

Forward = Callable[[torch.Tensor], torch.Tensor]
ToGrid = Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]


@dataclass(frozen=True)
class LayerInfo:
    """A layer that could be a Grad-CAM target: its name and output shape (one image)."""

    name: str
    kind: str
    shape: tuple[int, ...]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for parameter-free modules)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def prepare_inputs(images: Any, info: Any = None, device: torch.device | str = "cpu",
                   interpolation: str = "bilinear") -> torch.Tensor:
    """Turn images into the NCHW float tensor a course PyTorch model expects.

    ``uint8`` (N, H, W, 3) images are resized to ``info.image_size`` (bilinear),
    scaled to [0, 1] and standardised with ``info.mean`` / ``info.std``, which is
    what the training notebooks' ``predict_proba`` does (``interpolation`` may be
    ``bicubic`` for models whose processor resizes that way). Float numpy arrays are
    taken as already standardised (NHWC like ``ImageData.normalize`` returns, or
    NCHW); tensors are used as they are.
    """
    if isinstance(images, torch.Tensor):
        return images.to(device)
    arr = as_image_batch(images)
    if arr.dtype != np.uint8:
        x = torch.from_numpy(np.array(arr, dtype=np.float32, copy=True))
        return (x.permute(0, 3, 1, 2) if x.shape[-1] == 3 else x).contiguous().to(device)
    x = torch.from_numpy(np.array(arr, copy=True)).to(device).permute(0, 3, 1, 2).float() / 255.0
    if info is not None:
        size = int(info.image_size)
        if tuple(x.shape[-2:]) != (size, size):
            x = torch.nn.functional.interpolate(x, size=(size, size), mode=interpolation,
                                                align_corners=False,
                                                antialias=x.shape[-1] > size).clamp(0, 1)
        mean = torch.as_tensor(info.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        std = torch.as_tensor(info.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
    return x.contiguous()


def prepare(model: nn.Module, images: Any, info: Any = None) -> torch.Tensor:
    """:func:`prepare_inputs` on the model's device."""
    return prepare_inputs(images, info, model_device(model))


def logits_of(output: Any) -> torch.Tensor:
    """Class scores from a model output: a tensor, a ``ModelOutput`` or a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"Cannot find class scores in a model output of type {type(output).__name__}")


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def get_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (as in ``model.named_modules()``), with a helpful error."""
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        import difflib

        close = difflib.get_close_matches(name, list(modules), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(f"No layer named {name!r} in {type(model).__name__}.{hint} "
                       "See nbutils.gradcam.candidate_layers(model) for the usable names.")
    return modules[name]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode and restore each one's own mode afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in modes:
            m.training = flag


def layer_outputs(model: nn.Module, x: torch.Tensor, forward: Forward | None = None
                  ) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """Run ``x`` once and list ``(name, module, output shape)`` in the order modules finish."""
    forward = forward or model
    found: list[tuple[str, nn.Module, tuple[int, ...]]] = []
    handles = []

    def make_hook(name: str) -> Callable:
        def hook(module: nn.Module, _inp: Any, out: Any) -> None:
            t = _first_tensor(out)
            if t is not None:
                found.append((name, module, tuple(t.shape)))
        return hook

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(make_hook(name)))
    try:
        with torch.no_grad(), eval_mode(model):
            forward(x)
    finally:
        for h in handles:
            h.remove()
    return found


def _is_pool(module: nn.Module) -> bool:
    return "pool" in type(module).__name__.lower()


def _spatial_maps(records: Sequence[tuple[str, nn.Module, tuple[int, ...]]]
                  ) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """Records whose output is an (N, C, h, w) feature map, pooling layers left out.

    Channels-last tensors (N, h, w, C), as inside ConvNeXt blocks, are recognised
    by their spatial size matching the last convolution's and left out too.
    """
    out, conv_hw, pooled = [], None, False
    for name, module, shape in records:
        if len(shape) != 4:
            pooled = False
            continue
        if isinstance(module, nn.Conv2d):
            conv_hw = shape[2:]
        channels_last = conv_hw is not None and shape[1:3] == conv_hw and shape[2:] != conv_hw
        # a container whose last step was a pooling layer outputs that pooled map
        pooled = _is_pool(module) or (pooled and next(module.children(), None) is not None)
        if not channels_last and not pooled:
            out.append((name, module, shape))
    return out


def default_layer(model: nn.Module, x: torch.Tensor, forward: Forward | None = None) -> str:
    """The last convolutional feature map before the classifier head.

    Among the modules whose output is an (N, C, h, w) map, the one that finishes
    last with h * w > 1, pooling left out (a pooling layer, or a container that
    ends with one, only subsamples the map before it): for an AlexNet/VGG-style
    ``features`` body the activation of its last convolution, for a ResNet its
    last stage, for an EfficientNet its activated head convolution.
    """
    maps = _spatial_maps(layer_outputs(model, x[:1], forward))
    if not maps:
        raise ValueError(f"{type(model).__name__} has no convolutional feature map (no module "
                         "outputs an (N, C, h, w) tensor); pass target_layer=<module name>.")
    wide = [r for r in maps if r[2][2] * r[2][3] > 1]
    return (wide or maps)[-1][0]


def candidate_layers(model: nn.Module, x: torch.Tensor, forward: Forward | None = None
                     ) -> list[LayerInfo]:
    """Usable target layers, shallow to deep: the last feature map before each convolution.

    Maps are cut into segments that each start at a ``Conv2d``; the last module of
    each segment (the activated output of that convolution, or the block that
    contains it) is a candidate, and so is the default layer.
    """
    records = layer_outputs(model, x[:1], forward)
    maps = [r for r in _spatial_maps(records) if r[2][2] * r[2][3] > 1]
    out: list[LayerInfo] = []
    for i, (name, module, shape) in enumerate(maps):
        last = i + 1 == len(maps)
        if last or isinstance(maps[i + 1][1], nn.Conv2d):
            out.append(LayerInfo(name, type(module).__name__, tuple(shape[1:])))
    return out


def forward_backward(
    model: nn.Module, x: torch.Tensor, layer: str, classes: np.ndarray | None,
    forward: Forward | None = None, to_grid: ToGrid | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One batched forward and backward pass.

    Returns:
        ``(activations, gradients, logits, classes)``: activations and gradients of
        ``layer`` as (N, C, h, w) numpy arrays, the logits (N, K) and the explained
        class per image (the prediction when ``classes`` is ``None``).
    """
    module = get_module(model, layer)
    forward = forward or model
    store: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _inp: Any, out: Any) -> Any:
        t = _first_tensor(out)
        if t is None:
            raise TypeError(f"Layer {layer!r} does not output a tensor; pick another layer")
        store["act"] = t
        copy_ = t.clone()  # later in-place ops change the copy, not the captured tensor
        if isinstance(out, torch.Tensor):
            return copy_
        return type(out)([copy_, *out[1:]])

    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad(), eval_mode(model):
            x = x.detach().requires_grad_(True)
            logits = logits_of(forward(x))
            if classes is None:
                target = logits.argmax(dim=1)
            else:
                target = torch.as_tensor(classes, dtype=torch.long, device=logits.device)
            score = logits.gather(1, target[:, None]).sum()
            act = store["act"]
            (grad,) = torch.autograd.grad(score, act)
    finally:
        handle.remove()
    act, grad = act.detach(), grad.detach()
    if to_grid is not None:
        hw = (int(x.shape[-2]), int(x.shape[-1]))
        act, grad = to_grid(act, hw), to_grid(grad, hw)
    if act.ndim != 4:
        raise ValueError(f"Layer {layer!r} outputs shape {tuple(act.shape)}, not a (N, C, h, w) "
                         "feature map; pick a convolutional layer")
    return (act.float().cpu().numpy(), grad.float().cpu().numpy(),
            logits.detach().float().cpu().numpy(), target.cpu().numpy().astype(np.int64))


def _reinit(module: nn.Module) -> bool:
    """Re-initialise one module's own parameters; ``False`` if it has no rule."""
    if isinstance(module, nn.modules.conv._ConvNd):
        fan_out = module.out_channels // module.groups * math.prod(module.kernel_size)
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))  # He, fan-out
        if module.bias is not None:
            nn.init.zeros_(module.bias)
        return True
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.01)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
        return True
    if hasattr(module, "reset_parameters") and callable(module.reset_parameters):
        module.reset_parameters()  # normalisation layers: unit scale, zero shift
        if hasattr(module, "reset_running_stats"):
            module.reset_running_stats()
        return True
    return False


def predict_logits(model: nn.Module, x: torch.Tensor, forward: Forward | None = None
                   ) -> np.ndarray:
    """Class scores (N, K) of a prepared batch, without gradients."""
    forward = forward or model
    with torch.no_grad(), eval_mode(model):
        return logits_of(forward(x)).float().cpu().numpy()


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every weight re-initialised (Adebayo et al. 2018).

    The usual CNN initialisation, so that activations neither vanish nor explode
    through a deep network: He-normal (fan-out) convolutions, N(0, 0.01) linear
    layers, normalisation layers reset (unit scale, zero shift, fresh running
    statistics). Other parameters (position embeddings, class tokens, layer
    scales) are drawn from N(0, 0.02). The global random state is left as it was.
    """
    clone = copy.deepcopy(model)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        covered: set[int] = set()
        with torch.no_grad():
            for module in clone.modules():
                if _reinit(module):
                    covered.update(id(p) for p in module.parameters(recurse=False))
            for p in clone.parameters():
                if id(p) not in covered:
                    p.normal_(0.0, 0.02)
    finally:
        torch.random.set_rng_state(gen_state)
    return clone.eval()
