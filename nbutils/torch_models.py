"""The AlexNet family used by notebook 02, and a torchinfo-style model summary.

* ``alexnet224``: the original 224-pixel network as torchvision builds it (five
  convolutions, three fully connected layers, ~61 M parameters), optionally with the
  ImageNet weights torchvision publishes. ``norm="lrn"`` puts back the local response
  normalisation of Krizhevsky et al. (2012) after the first two convolutions, which
  torchvision leaves out; ``norm="batchnorm"`` uses BatchNorm after every convolution.
* ``small``: the same shape for 32-64 pixel images: five 3x3-ish convolutions with
  overlapping max pooling after the first, second and fifth, then three fully
  connected layers with dropout. The widths are settings, the layout is AlexNet's.

:func:`summarize` lists layers, output shapes, parameters and FLOPs per image, measured
with ``torch.utils.flop_counter`` (multiply-adds of convolutions and matrix products
count 2 FLOPs; element-wise layers are not counted).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import nn

from .frameworks.registry import ModelRegistry

__all__ = [
    "MODELS",
    "ARCHITECTURES",
    "NORMS",
    "AlexNetConfig",
    "SmallAlexNet",
    "PretrainedWeightsError",
    "build_model",
    "alexnet224",
    "config_from_settings",
    "count_parameters",
    "ModelSummary",
    "summarize",
]

# The architectures ``load_classifier`` can rebuild: family name -> (builder, config class).
# A new architecture is one ``@MODELS.register("family", config=ItsConfig)`` builder whose
# config dataclass has ``family``, ``to_dict``, ``from_dict`` and ``name``.
MODELS = ModelRegistry("pytorch")

ARCHITECTURES = ("small", "alexnet224")
NORMS = ("batchnorm", "lrn", "none")


class PretrainedWeightsError(RuntimeError):
    """The ImageNet weights could not be downloaded or found in the torch hub cache."""


@dataclass
class AlexNetConfig:
    """Everything needed to rebuild a model of the family (saved beside its weights).

    Attributes:
        architecture: ``small`` (32-64 px) or ``alexnet224`` (torchvision, 224 px).
        num_classes: size of the output layer.
        image_size: input side length the model is trained on.
        norm: ``batchnorm``, ``lrn`` (the 2012 paper) or ``none``.
        widths: channels of the five convolutions (``small`` only).
        conv1_kernel: kernel size of the first convolution (``small`` only).
        fc_width: width of the two hidden fully connected layers (``small`` only).
        dropout: dropout probability before the hidden fully connected layers.
        pretrained: start ``alexnet224`` from torchvision's ImageNet weights.
    """

    family: ClassVar[str] = "alexnet"

    architecture: str = "small"
    num_classes: int = 10
    image_size: int = 32
    norm: str = "batchnorm"
    widths: list[int] = field(default_factory=lambda: [64, 128, 256, 256, 256])
    conv1_kernel: int = 3
    fc_width: int = 512
    dropout: float = 0.5
    pretrained: bool = False

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        self.widths = [int(w) for w in self.widths]
        if len(self.widths) != 5 or min(self.widths) < 1:
            raise ValueError(f"widths must list five positive channel counts, got {self.widths}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.pretrained and self.architecture != "alexnet224":
            raise ValueError("pretrained weights exist only for architecture 'alexnet224'")
        if self.pretrained and self.norm != "none":
            raise ValueError(
                "The ImageNet weights were trained without normalisation layers: use "
                "norm='none' with pretrained=True (or pretrained=False to train LRN/BatchNorm "
                "variants from scratch)."
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AlexNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"Unknown AlexNetConfig field(s): {', '.join(unknown)}")
        return cls(**values)

    @property
    def name(self) -> str:
        """A short human-readable model name, e.g. ``alexnet-small-bn``."""
        norm = {"batchnorm": "bn", "lrn": "lrn", "none": "plain"}[self.norm]
        base = "alexnet224" if self.architecture == "alexnet224" else "alexnet-small"
        return f"{base}-{norm}" + ("-imagenet" if self.pretrained else "")


def config_from_settings(settings: Any, num_classes: int, image_size: int,
                         **changes: Any) -> AlexNetConfig:
    """Build an :class:`AlexNetConfig` from the notebook's ``cfg.model`` settings."""
    keys = {f.name for f in fields(AlexNetConfig)} - {"num_classes", "image_size"}
    given = dict(settings)
    values = {k: given[k] for k in keys if k in given}
    values.update(num_classes=num_classes, image_size=image_size)
    values.update(changes)
    if "widths" in values:
        values["widths"] = list(values["widths"])
    return AlexNetConfig(**values)


def _lrn() -> nn.LocalResponseNorm:
    """The paper's response normalisation: k=2, n=5, alpha=1e-4, beta=0.75."""
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)


def _conv_block(cin: int, cout: int, kernel: int, norm: str, stride: int = 1,
                lrn_here: bool = False) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2,
                                         bias=norm != "batchnorm")]
    if norm == "batchnorm":
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    if norm == "lrn" and lrn_here:
        layers.append(_lrn())
    return layers


class SmallAlexNet(nn.Module):
    """AlexNet's layout for small images: 5 convolutions, 3 overlapping pools, 3 FC layers.

    conv1 -> pool -> conv2 -> pool -> conv3 -> conv4 -> conv5 -> pool -> FC -> FC -> FC,
    ReLU everywhere, dropout before the two hidden FC layers, 3x3/stride-2 max pooling
    (overlapping, as in the paper). LRN follows the first two convolutions when
    ``norm="lrn"``; BatchNorm follows every convolution when ``norm="batchnorm"``.
    """

    def __init__(self, config: AlexNetConfig) -> None:
        super().__init__()
        w = config.widths
        norm = config.norm
        pool = lambda: nn.MaxPool2d(kernel_size=3, stride=2, padding=1)  # noqa: E731
        self.features = nn.Sequential(
            *_conv_block(3, w[0], config.conv1_kernel, norm, lrn_here=True), pool(),
            *_conv_block(w[0], w[1], 3, norm, lrn_here=True), pool(),
            *_conv_block(w[1], w[2], 3, norm),
            *_conv_block(w[2], w[3], 3, norm),
            *_conv_block(w[3], w[4], 3, norm), pool(),
        )
        self.pool_size = max(1, -(-config.image_size // 8))  # ceil: 32 px -> 4, 64 px -> 8
        self.pool_size = min(self.pool_size, 4)
        self.avgpool = nn.AdaptiveAvgPool2d(self.pool_size)
        flat = w[4] * self.pool_size ** 2
        self.classifier = nn.Sequential(
            nn.Dropout(config.dropout),
            nn.Linear(flat, config.fc_width),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(config.fc_width, config.fc_width),
            nn.ReLU(inplace=True),
            nn.Linear(config.fc_width, config.num_classes),
        )
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) for normalised images (B, 3, H, W)."""
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _load_imagenet_alexnet() -> nn.Module:
    """torchvision's AlexNet with ImageNet weights, or a clear error when they are unavailable."""
    from torchvision.models import AlexNet_Weights, alexnet

    weights = AlexNet_Weights.IMAGENET1K_V1
    try:
        return alexnet(weights=weights, progress=False)
    except Exception as exc:  # noqa: BLE001 - network, proxy, SSL, corrupt file ...
        hub = torch.hub.get_dir()
        raise PretrainedWeightsError(
            f"Could not get the ImageNet weights of AlexNet ({type(exc).__name__}: {exc}). "
            f"Either connect to the internet and re-run, or download {weights.url} by hand "
            f"into {hub}/checkpoints/, or set pretrained: false to train from scratch."
        ) from exc


def alexnet224(config: AlexNetConfig) -> nn.Module:
    """The 224-pixel AlexNet of torchvision, with LRN or BatchNorm inserted if asked for."""
    from torchvision.models import alexnet

    model = _load_imagenet_alexnet() if config.pretrained else alexnet()
    if config.norm != "none":
        layers: list[nn.Module] = []
        convs_seen = 0
        for layer in model.features:
            if isinstance(layer, nn.Conv2d):
                convs_seen += 1
                layers.append(layer)
                if config.norm == "batchnorm":
                    layer.bias = None
                    layers.append(nn.BatchNorm2d(layer.out_channels))
                continue
            layers.append(layer)
            if isinstance(layer, nn.ReLU) and config.norm == "lrn" and convs_seen <= 2:
                layers.append(_lrn())
        model.features = nn.Sequential(*layers)
    if config.dropout != 0.5:
        for m in model.classifier:
            if isinstance(m, nn.Dropout):
                m.p = config.dropout
    last = model.classifier[-1]
    if last.out_features != config.num_classes:
        model.classifier[-1] = nn.Linear(last.in_features, config.num_classes)
    return model


@MODELS.register("alexnet", config=AlexNetConfig)
def build_alexnet(config: AlexNetConfig) -> nn.Module:
    """The AlexNet family: the 224-pixel original or the small-image version."""
    if config.architecture == "alexnet224":
        return alexnet224(config)
    return SmallAlexNet(config)


def build_model(config: Any, family: str | None = None) -> nn.Module:
    """Build a registered architecture from its config object (or a dict of ``family``).

    The config is attached as ``model.model_config``, so ``save_classifier`` can write
    it beside the weights and ``load_classifier`` can rebuild the same network.
    """
    if isinstance(config, dict):
        config = MODELS.config_from_dict(family or "alexnet", config)
    model = MODELS.build(family or type(config).family, config)
    model.model_config = config
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@dataclass
class ModelSummary:
    """Rows of (name, type, output shape, parameters, FLOPs per image) and totals."""

    rows: list[dict[str, Any]]
    input_shape: tuple[int, ...]
    total_params: int
    trainable_params: int
    flops_per_image: int

    def __str__(self) -> str:
        w = max([16] + [len(r["name"]) + 2 for r in self.rows])  # the layer names' column
        header = f"{'layer':<{w}}{'type':<20}{'output shape':<22}{'params':>12}{'MFLOPs':>10}"
        lines = [header, "-" * len(header)]
        for r in self.rows:
            shape = "x".join(str(s) for s in r["output_shape"])
            mflops = f"{r['flops'] / 1e6:.1f}" if r["flops"] else "-"
            lines.append(f"{r['name']:<{w}}{r['type']:<20}{shape:<22}{r['params']:>12,}"
                         f"{mflops:>10}")
        lines.append("-" * len(header))
        shape = "x".join(str(s) for s in self.input_shape)
        lines.append(f"input {shape}   parameters {self.total_params:,} "
                     f"(trainable {self.trainable_params:,})   "
                     f"FLOPs/image {self.flops_per_image / 1e6:,.1f} M "
                     f"(weights {self.total_params * 4 / 2 ** 20:.1f} MiB in fp32)")
        return "\n".join(lines)

    def to_dataframe(self) -> Any:
        """The rows as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows)


def summarize(model: nn.Module, input_shape: tuple[int, int, int] = (3, 32, 32),
              device: str | torch.device | None = None) -> ModelSummary:
    """A torchinfo-style table: every leaf layer's output shape, parameters and FLOPs.

    Runs one image through ``model`` in eval mode (its train/eval mode is restored).
    FLOPs come from ``torch.utils.flop_counter`` and count convolutions and matrix
    products (2 FLOPs per multiply-add), per image.
    """
    from torch.utils.flop_counter import FlopCounterMode

    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    names = {m: n for n, m in model.named_modules()}
    shapes: dict[str, tuple[int, ...]] = {}
    order: list[nn.Module] = []

    def hook(module: nn.Module, _inp: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            shapes[names[module]] = tuple(out.shape[1:])
            order.append(module)

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    prefix = type(model).__name__ + "."
    per_module = {key[len(prefix):]: sum(v.values())
                  for key, v in counter.get_flop_counts().items() if key.startswith(prefix)}
    rows = []
    for m in order:
        name = names[m]
        rows.append({
            "name": name, "type": type(m).__name__, "output_shape": shapes[name],
            "params": sum(p.numel() for p in m.parameters(recurse=False)),
            "flops": int(per_module.get(name, 0)),
        })
    return ModelSummary(rows=rows, input_shape=tuple(input_shape),
                        total_params=count_parameters(model),
                        trainable_params=count_parameters(model, trainable_only=True),
                        flops_per_image=int(counter.get_total_flops()))


# the other registered families (imported here so that load_classifier finds them)
from . import torch_resnet  # noqa: E402,F401
