"""Residual networks for small images, in the PyTorch model registry (family ``resnet``).

The default is the ResNet-9 layout that trains CIFAR-10 fast (Page, 2018): a stem
convolution, then stages that each widen the channels with a convolution and halve
the resolution with max pooling, some followed by residual blocks, then a global max
pool and a linear classifier. ``residual=False`` builds the same layers without the
skip connections (a "plain" network of the same depth and cost), which is how the
lesson shows what the skips are for; deeper ``blocks`` make the difference larger.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from torch import Tensor, nn

from .torch_models import MODELS

__all__ = ["ResNetConfig", "ResidualBlock", "SmallResNet", "build_resnet",
           "config_from_settings"]


@dataclass
class ResNetConfig:
    """Everything needed to rebuild a model of the family (saved beside its weights).

    Attributes:
        num_classes: size of the output layer.
        image_size: input side length the model is trained on.
        widths: channels of the stem and of each stage (every stage after the stem
            halves the resolution).
        blocks: residual blocks after the stem and after each stage (same length as
            ``widths``); ``[0, 1, 0, 1]`` with four widths is ResNet-9.
        residual: add the skip connections (False: the same layers, plain).
        dropout: dropout before the classifier.
        head_scale: the logits are multiplied by this (ResNet-9 uses 0.125, which keeps
            the early softmax soft with the high learning rates it trains with).
    """

    family: ClassVar[str] = "resnet"

    num_classes: int = 10
    image_size: int = 32
    widths: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    blocks: list[int] = field(default_factory=lambda: [0, 1, 0, 1])
    residual: bool = True
    dropout: float = 0.0
    head_scale: float = 0.125

    def __post_init__(self) -> None:
        self.widths = [int(w) for w in self.widths]
        self.blocks = [int(b) for b in self.blocks]
        if len(self.widths) != len(self.blocks) or not self.widths:
            raise ValueError(f"widths and blocks need the same length, got {self.widths} and "
                             f"{self.blocks}")
        if min(self.widths) < 1 or min(self.blocks) < 0:
            raise ValueError("widths must be positive and blocks non-negative")
        if self.image_size < 2 ** (len(self.widths) - 1):
            raise ValueError(f"{len(self.widths) - 1} halvings need images of at least "
                             f"{2 ** (len(self.widths) - 1)} px, got {self.image_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ResNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"Unknown ResNetConfig field(s): {', '.join(unknown)}")
        return cls(**values)

    @property
    def name(self) -> str:
        """A short name: ``resnet9-w64``, ``plain9-w32``, ``resnet15-w32`` ..."""
        depth = len(self.widths) + 2 * sum(self.blocks) + 1
        return f"{'resnet' if self.residual else 'plain'}{depth}-w{self.widths[0]}"


def config_from_settings(settings: Any, num_classes: int, image_size: int,
                         **changes: Any) -> ResNetConfig:
    """A :class:`ResNetConfig` from notebook 02b's ``cfg.model`` settings, then ``changes``."""
    given = dict(settings)
    values = {k: given[k] for k in ("widths", "blocks", "dropout", "head_scale") if k in given}
    values.update(num_classes=num_classes, image_size=image_size, **changes)
    return ResNetConfig(**{k: list(v) if isinstance(v, tuple) else v for k, v in values.items()})


def conv_bn(cin: int, cout: int) -> nn.Sequential:
    """3x3 convolution, BatchNorm, ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """Two conv-BN-ReLU layers; with ``residual`` their output is added to the input.

    The skip gives the gradient a path around the block: in a deep stack the signal
    no longer has to pass through every layer to reach the early ones.
    """

    def __init__(self, channels: int, residual: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        """``x + body(x)`` (or ``body(x)`` for a plain block)."""
        out = self.body(x)
        return x + out if self.residual else out


class SmallResNet(nn.Module):
    """Stem, stages (widen + pool, then residual blocks), global max pool, linear."""

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        c = config
        layers: list[nn.Module] = [conv_bn(3, c.widths[0])]
        layers += [ResidualBlock(c.widths[0], c.residual) for _ in range(c.blocks[0])]
        for prev, width, n in zip(c.widths, c.widths[1:], c.blocks[1:], strict=False):
            layers += [conv_bn(prev, width), nn.MaxPool2d(2)]
            layers += [ResidualBlock(width, c.residual) for _ in range(n)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.dropout = nn.Dropout(c.dropout)
        self.classifier = nn.Linear(c.widths[-1], c.num_classes)
        self.head_scale = c.head_scale

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes) for normalised images (N, 3, H, W)."""
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(self.dropout(x)) * self.head_scale


@MODELS.register("resnet", config=ResNetConfig)
def build_resnet(config: ResNetConfig) -> nn.Module:
    """A :class:`SmallResNet` from its config (build it with ``torch_models.build_model``)."""
    return SmallResNet(config)
