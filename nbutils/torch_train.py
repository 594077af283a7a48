"""The course's one PyTorch training loop, its predictions, and the saved-model format.

:func:`fit` trains any classifier on loaders from :mod:`nbutils.torch_data` with the
tools a modern run uses: mixed precision on the GPU (bf16 where the card supports it,
else fp16 with a gradient scaler), channels-last memory, optional ``torch.compile``,
SGD with (Nesterov) momentum or AdamW, warmup + cosine or one-cycle learning rates,
label smoothing, gradient clipping, early stopping on validation accuracy, a
checkpoint after every epoch (written atomically) and resumption from it after an
interruption, tqdm progress, and seeded randomness (the loaders' generators and the
global RNG states are part of the checkpoint, so a resumed run draws the same batches).

:func:`save_classifier` writes ``model.safetensors`` + ``model_config.json`` +
``classifier.json``; :func:`load_classifier` (the saved-model contract of
:mod:`nbutils.inference`) reads them back.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from .inference import ClassifierInfo, write_classifier_info
from .paths import atomic_write, atomic_write_text, resolve_path
from .torch_data import to_model_input
from .torch_models import AlexNetConfig, build_model

__all__ = [
    "TrainConfig",
    "FitResult",
    "AmpSettings",
    "amp_settings",
    "idle_cores",
    "set_threads",
    "make_optimizer",
    "make_scheduler",
    "make_train_step",
    "fit",
    "evaluate",
    "predict_proba",
    "save_classifier",
    "load_classifier",
    "TorchClassifier",
    "CHECKPOINT_FILE",
    "WEIGHTS_FILE",
    "MODEL_CONFIG_FILE",
]

CHECKPOINT_FILE = "last_checkpoint.pt"
WEIGHTS_FILE = "model.safetensors"
MODEL_CONFIG_FILE = "model_config.json"
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine", "constant")


@dataclass
class TrainConfig:
    """Settings of one training run (all of them recorded in the checkpoint).

    Attributes:
        epochs: passes over the training set.
        optimizer: ``sgd`` (momentum, optionally Nesterov) or ``adamw``.
        lr: peak learning rate.
        momentum: SGD momentum (AdamW's beta1).
        nesterov: Nesterov momentum for SGD.
        weight_decay: L2 penalty (decoupled for AdamW); not applied to biases and norms.
        schedule: ``onecycle`` (warmup then linear decay to ~0), ``cosine`` (warmup
            then cosine decay to 0) or ``constant`` (warmup then flat).
        warmup_epochs: length of the linear warmup, in epochs (fractions allowed).
        label_smoothing: cross-entropy label smoothing.
        grad_clip: clip the global gradient norm to this value (0 = off).
        early_stopping_patience: stop after this many epochs without a better
            validation accuracy and restore the best weights (0 = off).
        mixed_precision: autocast on CUDA (bf16 if supported, else fp16 + scaler).
        channels_last: keep the model (and batches) in NHWC memory.
        compile: ``torch.compile`` the model for training.
        seed: seed of the global RNGs at the start of training.
        num_threads: CPU threads: -1 leaves PyTorch's setting alone, 0 re-chooses one per
            idle core before every epoch (the machine's load changes), n > 0 uses n.
    """

    epochs: int = 10
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    grad_clip: float = 0.0
    early_stopping_patience: int = 0
    mixed_precision: bool = False
    channels_last: bool = True
    compile: bool = False
    seed: int = 42
    num_threads: int = -1

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")

    @classmethod
    def from_settings(cls, settings: Any, **changes: Any) -> TrainConfig:
        """Pick the matching keys out of ``cfg.model`` (plus ``changes``)."""
        names = {f.name for f in fields(cls)}
        given = dict(settings)
        values = {k: given[k] for k in names if k in given}
        values.update(changes)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return asdict(self)


@dataclass
class FitResult:
    """What :func:`fit` returns."""

    history: list[dict[str, float]]
    train_seconds: float
    best_epoch: int
    stopped_early: bool = False
    resumed_from_epoch: int = 0
    device_peak_mb: float | None = None
    amp: str = "off"
    images_per_second: float = 0.0
    cpu_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AmpSettings:
    """How autocast is used: ``enabled``, its ``dtype`` and whether a scaler is needed."""

    enabled: bool
    dtype: torch.dtype = torch.float32
    use_scaler: bool = False

    @property
    def label(self) -> str:
        """``bf16``, ``fp16+scaler`` or ``off``."""
        if not self.enabled:
            return "off"
        return "bf16" if self.dtype == torch.bfloat16 else "fp16+scaler"


def amp_settings(device: str | torch.device, requested: bool,
                 bf16_supported: bool | None = None) -> AmpSettings:
    """Choose the mixed-precision mode: bf16 on GPUs that support it, fp16 + scaler otherwise.

    On the CPU autocast stays off: without bf16 matrix units it is slower than fp32.

    Args:
        device: the training device.
        requested: whether the config asks for mixed precision.
        bf16_supported: override the capability check (for tests); ``None`` asks CUDA.
    """
    device = torch.device(device)
    if not requested or device.type != "cuda":
        return AmpSettings(False)
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    if bf16_supported:
        return AmpSettings(True, torch.bfloat16, False)
    return AmpSettings(True, torch.float16, True)


def idle_cores(load_average: float | None = None) -> int:
    """Cores not busy with other work: usable cores minus the 1-minute load, at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load_average is None:
        load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, int(round(cores - load_average))))


def set_threads(num_threads: int = 0) -> int:
    """Set PyTorch's CPU threads; 0 = one per idle core (see :func:`idle_cores`).

    On a machine shared with other jobs, more threads than idle cores make each
    parallel operation wait for its slowest, descheduled thread: a 2-core machine under
    load trains several times faster with 1 thread than with 2.
    """
    if num_threads <= 0:
        num_threads = idle_cores()
    torch.set_num_threads(num_threads)
    return num_threads


def _epoch_threads(requested: int) -> int:
    """Threads for the next epoch: ``requested``, or (0) the idle cores, not counting ours."""
    if requested > 0:
        torch.set_num_threads(requested)
        return requested
    ours = torch.get_num_threads()
    others = max(0.0, os.getloadavg()[0] - ours) if hasattr(os, "getloadavg") else 0.0
    return set_threads(idle_cores(others))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and normalisation parameters (1-D tensors)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov) or AdamW with decay on weights only."""
    groups = _param_groups(model, config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov and config.momentum > 0)
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.momentum, 0.999))


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate after ``step`` optimiser steps."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    rest = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / rest)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress) * (1 - 1e-3) + 1e-3   # onecycle: linear to lr/1000


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule: linear warmup, then one-cycle (linear), cosine or constant."""
    total = config.epochs * steps_per_epoch
    warmup = min(total - 1, int(round(config.warmup_epochs * steps_per_epoch)))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, max(0, warmup), config.schedule))


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fingerprint(model: nn.Module, config: TrainConfig, steps_per_epoch: int) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed."""
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    return {"config": config.to_dict(), "steps_per_epoch": steps_per_epoch,
            "model": type(model).__name__, "shapes": shapes}


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_write(path, "wb") as handle:
        torch.save(state, handle)


def _load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint means "start fresh"
        warnings.warn(f"Ignoring unreadable checkpoint {path} ({exc}); training from scratch.",
                      stacklevel=3)
        return None


def make_train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    scaler: torch.amp.GradScaler,
    criterion: nn.Module,
    amp: AmpSettings,
    grad_clip: float = 0.0,
    compile_model: bool = False,
) -> Any:
    """One optimisation step as a function ``step(x, y) -> (loss, logits)``.

    :func:`fit` and the benchmark (``python -m nbutils.bench torch``) both call this,
    so the benchmark measures exactly the course's loop.
    """
    forward: nn.Module = torch.compile(model) if compile_model else model

    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(x.device.type, dtype=amp.dtype, enabled=amp.enabled):
            out = forward(x)
            loss = criterion(out, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        return loss, out

    return step


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, amp: AmpSettings | None = None,
             label_smoothing: float = 0.0) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` over ``loader`` (eval mode)."""
    amp = amp or AmpSettings(False)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64)
    correct = 0
    total = 0
    for x, y in loader:
        with torch.autocast(x.device.type, dtype=amp.dtype, enabled=amp.enabled):
            out = model(x)
        loss = F.cross_entropy(out.float(), y, reduction="sum", label_smoothing=label_smoothing)
        loss_sum += loss.double().cpu()
        correct += int((out.argmax(1) == y).sum())
        total += len(y)
    model.train(was_training)
    if total == 0:
        return float("nan"), float("nan")
    return float(loss_sum) / total, correct / total


def fit(
    model: nn.Module,
    train_loader: Any,
    val_loader: Any | None,
    config: TrainConfig,
    device: str | torch.device = "cpu",
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    keep_checkpoint: bool = False,
    progress: bool = True,
    desc: str = "train",
) -> FitResult:
    """Train ``model`` in place and return its per-epoch history.

    Args:
        model: the network (moved to ``device``).
        train_loader: a :class:`~nbutils.torch_data.TensorLoader` or ``DeviceLoader``
            (any iterable of device batches with ``len`` works; those two are resumable).
        val_loader: validation batches, or ``None`` (no early stopping then).
        config: the run's :class:`TrainConfig`.
        device: training device.
        checkpoint_dir: where ``last_checkpoint.pt`` is written after every epoch.
        resume: continue from a matching checkpoint in ``checkpoint_dir`` if there is one.
        keep_checkpoint: keep the checkpoint after a finished run (default: remove it,
            the final weights are saved by :func:`save_classifier`).
        progress: show tqdm bars (epochs, and batches within the epoch).
        desc: label of the progress bar.

    Returns:
        A :class:`FitResult`; when early stopping is on, the best weights are restored.
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    amp = amp_settings(device, config.mixed_precision)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError("The training loader yields no batches: lower batch_size or add data.")
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=amp.use_scaler)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    step = make_train_step(model, optimizer, scheduler, scaler, criterion, amp,
                           config.grad_clip, config.compile)

    history: list[dict[str, float]] = []
    start_epoch, elapsed, best_acc, best_epoch, bad_epochs = 0, 0.0, -1.0, 0, 0
    best_state: dict[str, torch.Tensor] | None = None
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir else None
    fingerprint = _fingerprint(model, config, steps_per_epoch)
    torch.manual_seed(config.seed)
    if ckpt_path is not None and resume:
        state = _load_checkpoint(ckpt_path)
        if state is not None and state.get("fingerprint") != fingerprint:
            warnings.warn(f"The checkpoint in {ckpt_path.parent} was written with other settings; "
                          "training from scratch.", stacklevel=2)
            state = None
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            if hasattr(train_loader, "load_state_dict"):
                train_loader.load_state_dict(state["loader"])
            _set_rng_state(state["rng"])
            history = list(state["history"])
            start_epoch, elapsed = int(state["epoch"]), float(state["elapsed"])
            best_acc, best_epoch = float(state["best_acc"]), int(state["best_epoch"])
            bad_epochs, best_state = int(state["bad_epochs"]), state.get("best_state")
            if progress:
                print(f"Resuming from the checkpoint of epoch {start_epoch} in {ckpt_path.parent}")
    resumed_from = start_epoch
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    stopped_early = False
    images_seen, compute_seconds = 0, 0.0
    cpu_start = time.process_time()
    epoch_bar = tqdm(range(start_epoch, config.epochs), desc=desc, disable=not progress,
                     initial=start_epoch, total=config.epochs, unit="epoch")
    threads_used: list[int] = []
    for epoch in epoch_bar:
        if stopped_early:
            break
        if device.type == "cpu" and config.num_threads >= 0:
            threads_used.append(_epoch_threads(config.num_threads))
        model.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        lr_used = optimizer.param_groups[0]["lr"]
        batches = tqdm(train_loader, desc=f"epoch {epoch + 1}", leave=False, disable=not progress,
                       total=steps_per_epoch, unit="batch")
        for x, y in batches:
            loss, out = step(x, y)
            loss_sum += loss.detach().float() * len(y)
            correct += (out.detach().argmax(1) == y).sum()
            seen += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_time = time.perf_counter() - t0
        images_seen += seen
        compute_seconds += train_time
        val_loss, val_acc = (evaluate(model, val_loader, amp) if val_loader is not None
                             else (float("nan"), float("nan")))
        seconds = time.perf_counter() - t0
        elapsed += seconds
        row = {"epoch": epoch + 1, "train_loss": float(loss_sum) / seen,
               "train_acc": float(correct) / seen, "val_loss": val_loss, "val_acc": val_acc,
               "lr": float(lr_used), "seconds": round(seconds, 3)}
        history.append(row)
        if val_loader is not None and config.early_stopping_patience > 0:
            if val_acc > best_acc:
                best_acc, best_epoch, bad_epochs = val_acc, epoch + 1, 0
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            else:
                bad_epochs += 1
                stopped_early = bad_epochs >= config.early_stopping_patience
        elif val_loader is not None and val_acc > best_acc:  # the best epoch, for the record
            best_acc, best_epoch = val_acc, epoch + 1
        epoch_bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row['train_acc']:.3f}",
                              val_acc=f"{val_acc:.3f}")
        if ckpt_path is not None:
            _save_checkpoint(ckpt_path, {
                "fingerprint": fingerprint, "epoch": epoch + 1, "elapsed": elapsed,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "loader": train_loader.state_dict() if hasattr(train_loader, "state_dict") else {},
                "rng": _rng_state(), "history": history, "best_acc": best_acc,
                "best_epoch": best_epoch, "bad_epochs": bad_epochs, "best_state": best_state,
            })
    epoch_bar.close()
    if stopped_early and progress:
        print(f"Early stopping after epoch {len(history)}: best validation accuracy "
              f"{best_acc:.4f} at epoch {best_epoch}; restoring those weights.")
    if best_state is not None and config.early_stopping_patience > 0:
        model.load_state_dict(best_state)
    if ckpt_path is not None and not keep_checkpoint:
        ckpt_path.unlink(missing_ok=True)
    peak = (torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None)
    return FitResult(history=history, train_seconds=elapsed, best_epoch=best_epoch,
                     stopped_early=stopped_early, resumed_from_epoch=resumed_from,
                     device_peak_mb=peak, amp=amp.label,
                     images_per_second=images_seen / compute_seconds if compute_seconds else 0.0,
                     cpu_seconds=time.process_time() - cpu_start,
                     extra={"threads_per_epoch": threads_used} if threads_used else {})


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    images: np.ndarray,
    mean: Any,
    std: Any,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    image_size: int | None = None,
    tta_flip: bool = False,
    mixed_precision: bool = False,
    channels_last: bool = True,
) -> np.ndarray:
    """Class probabilities (N, K) for uint8 (N, H, W, 3) images.

    Args:
        model: the classifier (put in eval mode for the call).
        images: uint8 images of any size (resized to ``image_size`` when given).
        mean, std: the training statistics in [0, 1] units.
        batch_size: images per forward pass.
        device: defaults to the model's device.
        image_size: side length the model expects.
        tta_flip: average the probabilities of each image and its mirror image.
        mixed_precision: autocast on CUDA (see :func:`amp_settings`).
        channels_last: feed channels-last batches.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"predict_proba expects uint8 (N, H, W, 3) images, got {images.shape}")
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    amp = amp_settings(device, mixed_precision)
    mean_t = torch.as_tensor(np.asarray(mean, np.float32), device=device)
    std_t = torch.as_tensor(np.asarray(std, np.float32), device=device)
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.array(images[start:start + batch_size],
                                                      dtype=np.uint8)).to(device)
        x = to_model_input(chunk, mean_t, std_t, channels_last, image_size)
        with torch.autocast(device.type, dtype=amp.dtype, enabled=amp.enabled):
            probs = model(x).float().softmax(1)
            if tta_flip:
                probs = 0.5 * (probs + model(x.flip(3)).float().softmax(1))
        out.append(probs.cpu().numpy())
    model.train(was_training)
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(out).astype(np.float32)


def save_classifier(model_dir: str | os.PathLike[str], model: nn.Module,
                    model_config: AlexNetConfig | dict[str, Any], info: ClassifierInfo) -> Path:
    """Write ``model.safetensors``, ``model_config.json`` and ``classifier.json`` atomically.

    Returns:
        The folder, ready to pass as ``model_path`` to ``finish_run``.
    """
    from safetensors.torch import save as st_save

    folder = resolve_path(model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_write(folder / WEIGHTS_FILE, "wb") as handle:
        handle.write(st_save(state, metadata={"format": "pt"}))
    cfg_dict = model_config.to_dict() if isinstance(model_config, AlexNetConfig) else dict(model_config)
    cfg_dict = {**cfg_dict, "pretrained": False}   # the weights are in the file now
    atomic_write_text(folder / MODEL_CONFIG_FILE, json.dumps(cfg_dict, indent=2) + "\n")
    write_classifier_info(folder, info)
    return folder


class TorchClassifier:
    """A reloaded PyTorch classifier: ``info``, ``model`` (eval mode) and ``predict_proba``."""

    def __init__(self, info: ClassifierInfo, model: nn.Module, device: str | torch.device) -> None:
        self.info = info
        self.model = model.eval()
        self.device = torch.device(device)

    def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, K) probabilities for uint8 (N, H, W, 3) images of any size."""
        return predict_proba(self.model, images, self.info.mean, self.info.std,
                             batch_size=batch_size, device=self.device,
                             image_size=self.info.image_size,
                             tta_flip=bool(self.info.extra.get("tta_flip", False)))

    def __repr__(self) -> str:
        return (f"TorchClassifier({self.info.model}, {len(self.info.class_names)} classes, "
                f"{self.info.image_size}px, device={self.device})")


def load_classifier(model_dir: str | os.PathLike[str], info: ClassifierInfo | None = None,
                    device: str | torch.device = "cpu") -> TorchClassifier:
    """Rebuild a model saved by :func:`save_classifier` (the ``nbutils.inference`` contract)."""
    from safetensors.torch import load_file

    from .inference import read_classifier_info

    folder = resolve_path(model_dir)
    info = info or read_classifier_info(folder)
    cfg_path, weights_path = folder / MODEL_CONFIG_FILE, folder / WEIGHTS_FILE
    for p in (cfg_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing: re-run notebook 02 to save the model again.")
    config = AlexNetConfig.from_dict(json.loads(cfg_path.read_text()))
    model = build_model(config)
    model.load_state_dict(load_file(str(weights_path), device="cpu"))
    device = torch.device(device)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return TorchClassifier(info, model, device)


def clone_model(model: nn.Module) -> nn.Module:
    """A deep copy (for comparisons that must not touch the original)."""
    return copy.deepcopy(model)
