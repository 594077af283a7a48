"""ONNX graphs of PyTorch and Hugging Face course models (``torch.onnx``, dynamo exporter).

The exported graph takes uint8 (N, S, S, 3) pixels and returns probabilities: the
conversion to float, the standardisation with the model's own statistics (and, for
the course's PyTorch models, the resize to the model's input size) are inside it,
written with the same :func:`nbutils.torch_data.to_model_input` the training loop uses.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..torch_data import to_model_input

__all__ = ["PixelsToProbs", "export_graph", "hf_resample"]


class PixelsToProbs(nn.Module):
    """uint8 NHWC pixels -> class probabilities, around a classifier's network."""

    def __init__(self, model: nn.Module, mean: Any, std: Any, size: int | None,
                 hf: bool = False) -> None:
        super().__init__()
        self.model, self.size, self.hf = model, size, hf
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Probabilities (N, K) for uint8 (N, H, W, 3) ``images``."""
        x = to_model_input(images, self.mean, self.std, channels_last=False, size=self.size)
        logits = self.model(pixel_values=x).logits if self.hf else self.model(x)
        return logits.float().softmax(-1)


def hf_resample(processor: Any) -> str:
    """The Pillow resampling name of a Hugging Face image processor's resize."""
    if type(processor).__name__.startswith("TimmWrapper"):
        return str(processor.data_config.get("interpolation", "bicubic"))
    from PIL import Image

    value = getattr(processor, "resample", Image.Resampling.BILINEAR)
    return Image.Resampling(int(value)).name.lower()


def export_graph(classifier: Any, path: Path, source_size: int) -> dict[str, Any]:
    """Write ``classifier``'s ONNX graph to ``path``.

    Returns:
        ``input_size`` (the side of the graph's uint8 input) and ``resample`` (how
        images are resized to it before the graph, as the framework's classifier does).
    """
    info = classifier.info
    hf = info.framework == "huggingface"
    model = classifier.model.to("cpu").eval()
    if hf:  # the processor resizes (Pillow) before the network; the graph standardises
        size, resample = int(info.image_size), hf_resample(classifier.processor)
        wrapper = PixelsToProbs(model, info.mean, info.std, None, hf=True)
    else:  # the course's loop resizes on the device: inside the graph here too
        size, resample = int(source_size), "bilinear"
        wrapper = PixelsToProbs(model, info.mean, info.std, int(info.image_size))
    example = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper.eval(), (example,), str(path), input_names=["image"],
                          output_names=["probs"], dynamic_shapes={"images": {0: batch}},
                          dynamo=True, external_data=False, verbose=False)
    return {"input_size": size, "resample": resample}
