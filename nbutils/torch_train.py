"""The course's one PyTorch training loop, its predictions, and the saved-model format.

:func:`fit` trains any classifier on loaders from :mod:`nbutils.torch_data` with the
tools a modern run uses: mixed precision on the GPU (bf16 where the card supports it,
else fp16 with a gradient scaler), channels-last memory, optional ``torch.compile``,
SGD with (Nesterov) momentum or AdamW, warm-up then linear or cosine decay of the learning rate,
label smoothing, gradient clipping, early stopping on validation accuracy, a
checkpoint after every epoch (written atomically) and resumption from it after an
interruption, tqdm progress, and seeded randomness (the loaders' generators and the
global RNG states are part of the checkpoint, so a resumed run draws the same batches).

:func:`save_classifier` writes ``model.safetensors`` + ``model_config.json`` +
``classifier.json``; :func:`load_classifier` (the saved-model contract of
:mod:`nbutils.inference`) reads them back.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from . import distributed
from .fitting import FitResult, Stopwatch
from .inference import ClassifierInfo, check_outputs, read_classifier_info, write_classifier_info
from .locks import RunLock
from .paths import atomic_write, atomic_write_text, clear_folder, resolve_path
from .settings import Settings
from .torch_augment import BatchMix, mixed_loss
from .torch_data import to_model_input
from .torch_models import MODELS, build_model

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
    "resolve_device",
    "Checkpointer",
    "EarlyStopping",
    "train_epoch",
    "device_peak_mb",
    "reset_device_peak",
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
SCHEDULES = ("linear", "cosine", "constant")


@dataclass
class TrainConfig(Settings):
    """Settings of one training run (all of them recorded in the checkpoint).

    Attributes:
        epochs: passes over the training set.
        optimizer: ``sgd`` (momentum, optionally Nesterov) or ``adamw``.
        lr: peak learning rate.
        momentum: SGD momentum (AdamW's beta1).
        nesterov: Nesterov momentum for SGD.
        weight_decay: L2 penalty (decoupled for AdamW); not applied to biases and norms.
        schedule: ``linear`` (warmup then linear decay to ~0), ``cosine`` (warmup
            then cosine decay to 0) or ``constant`` (warmup then flat).
        warmup_epochs: length of the linear warmup, in epochs (fractions allowed).
        label_smoothing: cross-entropy label smoothing.
        mixup_alpha: MixUp with λ ~ Beta(α, α) on every batch (0 = off).
        cutmix_alpha: CutMix with λ ~ Beta(α, α) (0 = off; with MixUp on too, each
            batch uses one of the two, at random).
        grad_clip: clip the global gradient norm to this value (0 = off).
        early_stopping_patience: stop after this many epochs without a better
            validation accuracy and restore the best weights (0 = off).
        mixed_precision: autocast on CUDA (bf16 if supported, else fp16 + scaler).
        channels_last: keep the model (and batches) in NHWC memory.
        compile: ``torch.compile`` the model for training.
        seed: seed of the global RNGs at the start of training.
        num_threads: CPU threads for the whole run: -1 leaves PyTorch's setting alone, 0
            takes one per idle core when training starts, n > 0 uses n.
    """

    epochs: int = 10
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "linear"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    grad_clip: float = 0.0
    early_stopping_patience: int = 0
    mixed_precision: bool = False
    channels_last: bool = True
    compile: bool = False
    seed: int = 42
    num_threads: int = -1

    def validate(self) -> None:
        """Known optimiser and schedule (ranges are checked by :class:`Settings`)."""
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule == "onecycle":
            raise ValueError("schedule 'onecycle' is now called 'linear' (warm-up, then linear "
                             "decay; not OneCycleLR): set schedule: linear")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")


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

    On the CPU, bf16 autocast when the CPU computes bf16 natively (AVX512-BF16 or AMX);
    otherwise autocast stays off, since emulated bf16 is slower than fp32.

    Args:
        device: the training device.
        requested: whether the config asks for mixed precision.
        bf16_supported: override the capability check (for tests); ``None`` asks CUDA
            (or, on the CPU, :func:`nbutils.hardware.cpu_has_bf16`).
    """
    device = torch.device(device)
    if not requested or device.type not in ("cuda", "cpu"):
        return AmpSettings(False)
    if device.type == "cpu":
        from .hardware import cpu_has_bf16

        native = cpu_has_bf16() if bf16_supported is None else bf16_supported
        return AmpSettings(True, torch.bfloat16, False) if native else AmpSettings(False)
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    if bf16_supported:
        return AmpSettings(True, torch.bfloat16, False)
    return AmpSettings(True, torch.float16, True)


def resolve_device(name: str | torch.device) -> torch.device:
    """The device to train on: ``name``, or the CPU (with a one-line note) when this PyTorch
    cannot use the Apple GPU that ``mps`` names."""
    device = torch.device(name)
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            print("note: this PyTorch cannot use the Apple GPU (mps); training on the CPU")
            return torch.device("cpu")
        print("note: on the Apple GPU (mps); operations it lacks run on the CPU")
    return device


def idle_cores(load_average: float | None = None) -> int:
    """Cores not busy with other work, at least 1.

    ``load_average`` is the number of cores other processes keep busy; by default it is
    measured now (:func:`nbutils.hardware.busy_cores_elsewhere`, a short sample that
    leaves out this process), falling back to the 1-minute load average. The load
    average alone also counts this process's own recent work (the data loading just
    before training, the notebook that ran before it), and would halve the threads of
    a run on an otherwise idle machine.
    """
    from .hardware import busy_cores_elsewhere

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load_average is None:
        load_average = busy_cores_elsewhere()
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


def _fix_threads(requested: int) -> int:
    """The CPU threads of a whole run, chosen once before it starts.

    ``requested`` > 0 is used as it is; 0 takes one per idle core now (see
    :func:`idle_cores`); -1 keeps PyTorch's setting. The count stays fixed for the run:
    results on the CPU depend on it (sums are split across threads differently), so a
    run with a given seed and thread count is bit-identical every time.
    """
    if requested < 0:
        return torch.get_num_threads()
    return set_threads(requested)


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
    return max(0.0, 1.0 - progress) * (1 - 1e-3) + 1e-3   # linear: down to lr/1000


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule: linear warmup, then linear decay, cosine decay or constant."""
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


class EpochWriter:
    """Per-epoch scalars as TensorBoard events (``with`` closes the file); no-op without a dir."""

    NAMES = {"train_loss": "loss/train", "val_loss": "loss/val", "train_acc": "accuracy/train",
             "val_acc": "accuracy/val", "lr": "learning_rate"}

    def __init__(self, log_dir: str | os.PathLike[str] | None, fresh: bool = True) -> None:
        self.writer = None
        if log_dir is not None:
            from .tracking import summary_writer

            if fresh:  # a new run replaces the old curves; a resumed one continues them
                clear_folder(log_dir)
            self.writer = summary_writer(log_dir)

    def write(self, row: dict[str, Any]) -> None:
        """One epoch's row of the history, as ``loss/train``, ``accuracy/val``, ..."""
        if self.writer is None:
            return
        for key, name in self.NAMES.items():
            value = row.get(key)
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(name, value, int(row["epoch"]))
        self.writer.flush()

    def __enter__(self) -> EpochWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.writer is not None:
            self.writer.close()


def _fingerprint(model: nn.Module, config: TrainConfig, steps_per_epoch: int) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed."""
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    return {"config": config.to_dict(), "steps_per_epoch": steps_per_epoch,
            "model": type(model).__name__, "shapes": shapes}


class Checkpointer:
    """``last_checkpoint.pt`` in one folder: written atomically, resumed only if it matches.

    The checkpoint holds everything a resumed run needs to continue as if it had never
    stopped: weights, optimiser, schedule, gradient scaler, the loader's shuffling
    state, every random generator, the history and the early-stopping state.
    """

    def __init__(self, folder: str | os.PathLike[str] | None, fingerprint: dict[str, Any],
                 writer: bool = True) -> None:
        self.path = Path(folder) / CHECKPOINT_FILE if folder else None
        self.fingerprint = fingerprint
        self.writer = writer  # under several processes only rank 0 writes; all of them read

    def load(self) -> dict[str, Any] | None:
        """The saved state, or ``None`` (no file, unreadable, or other settings: with a warning)."""
        if self.path is None or not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a damaged checkpoint means "start fresh"
            warnings.warn(f"Ignoring unreadable checkpoint {self.path} ({exc}); training from "
                          "scratch.", stacklevel=3)
            return None
        if state.get("fingerprint") != self.fingerprint:
            warnings.warn(f"The checkpoint in {self.path.parent} was written with other "
                          "settings; training from scratch.", stacklevel=3)
            return None
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (plus the fingerprint) atomically."""
        if self.path is not None and self.writer:
            with atomic_write(self.path, "wb") as handle:
                torch.save({"fingerprint": self.fingerprint, **state}, handle)

    def remove(self) -> None:
        """Delete the checkpoint (the finished model is saved by ``save_classifier``)."""
        if self.path is not None and self.writer:
            self.path.unlink(missing_ok=True)


class EarlyStopping:
    """Track the best validation accuracy; with ``patience`` > 0 keep its weights and stop.

    With ``patience == 0`` it only records the best epoch (for the run record).
    """

    def __init__(self, patience: int = 0) -> None:
        self.patience = patience
        self.best_acc, self.best_epoch, self.bad_epochs = -1.0, 0, 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def update(self, val_acc: float, epoch: int, model: nn.Module) -> bool:
        """Record epoch ``epoch``'s accuracy; ``True`` when training should stop."""
        if val_acc > self.best_acc:
            self.best_acc, self.best_epoch, self.bad_epochs = val_acc, epoch, 0
            if self.patience > 0:
                self.best_state = {k: v.detach().to("cpu", copy=True)
                                   for k, v in model.state_dict().items()}
            return False
        self.bad_epochs += 1
        return self.patience > 0 and self.bad_epochs >= self.patience

    def restore_best(self, model: nn.Module) -> None:
        """Load the best weights back (only when stopping early is on)."""
        if self.patience > 0 and self.best_state is not None:
            model.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        """For the checkpoint."""
        return {"best_acc": self.best_acc, "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs, "best_state": self.best_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.best_acc, self.best_epoch = float(state["best_acc"]), int(state["best_epoch"])
        self.bad_epochs, self.best_state = int(state["bad_epochs"]), state.get("best_state")


def make_train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    scaler: torch.amp.GradScaler,
    criterion: nn.Module,
    amp: AmpSettings,
    grad_clip: float = 0.0,
    compile_model: bool = False,
    mix: BatchMix | None = None,
    generator: torch.Generator | None = None,
) -> Any:
    """One optimisation step as a function ``step(x, y) -> (loss, logits)``.

    :func:`fit` and the benchmark (``python -m nbutils.bench torch``) both call this,
    so the benchmark measures exactly the course's loop. With ``mix`` (MixUp/CutMix)
    the batch is mixed first and the loss is taken on the mixed targets.
    """
    forward: nn.Module = torch.compile(model) if compile_model else model
    mixing = mix is not None and mix.active

    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y_a, y_b, lam = mix(x, y, generator) if mixing else (x, y, y, 1.0)
        with torch.autocast(x.device.type, dtype=amp.dtype, enabled=amp.enabled):
            out = forward(x)
            loss = mixed_loss(criterion, out, y_a, y_b, lam)
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


def train_epoch(model: nn.Module, loader: Any, step: Any, device: torch.device,
                progress: bool = True, desc: str = "epoch") -> dict[str, float]:
    """One pass over ``loader`` with ``step``: mean training loss, accuracy, images, seconds."""
    from tqdm.auto import tqdm

    model.train()
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not progress, total=len(loader),
                     unit="batch"):
        loss, out = step(x, y)
        loss_sum += loss.detach().float() * len(y)
        correct += (out.detach().argmax(1) == y).sum()
        seen += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    # under several processes: the loss and accuracy of every process's share together
    total_loss, total_correct, total_seen = distributed.all_reduce_sum(
        [float(loss_sum), float(correct), float(seen)])
    return {"train_loss": total_loss / total_seen, "train_acc": total_correct / total_seen,
            "images": int(total_seen), "seconds": time.perf_counter() - t0}


def device_peak_mb(device: str | torch.device) -> float | None:
    """Peak memory PyTorch allocated on a CUDA ``device`` so far (MiB); ``None`` elsewhere."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return None


def reset_device_peak(device: str | torch.device) -> None:
    """Start a new peak-memory measurement on a CUDA ``device`` (no-op elsewhere).

    Cached blocks are released first, so the peak counts only what comes next.
    """
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when several processes train it
    (gradients are averaged across them in the backward pass), else ``model``."""
    info = distributed.current()
    if not info.active:
        return model
    ids = [device.index if device.index is not None else info.local_rank] \
        if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


@dataclass
class _Trainer:
    """The objects one run of :func:`fit` trains with (kept together for checkpoints)."""

    model: nn.Module
    loader: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    step: Any
    amp: AmpSettings

    @classmethod
    def create(cls, model: nn.Module, loader: Any, config: TrainConfig,
               device: torch.device) -> _Trainer:
        """Move the model, then build optimiser, schedule, scaler and the step function."""
        amp = amp_settings(device, config.mixed_precision)
        model.to(device)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        if len(loader) == 0:
            raise ValueError("The training loader yields no batches: lower batch_size or add data.")
        optimizer = make_optimizer(model, config)
        scheduler = make_scheduler(optimizer, config, len(loader))
        scaler = torch.amp.GradScaler(device.type, enabled=amp.use_scaler)
        criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        step = make_train_step(_data_parallel(model, device), optimizer, scheduler, scaler,
                               criterion, amp,
                               config.grad_clip, config.compile,
                               mix=BatchMix(config.mixup_alpha, config.cutmix_alpha),
                               generator=getattr(loader, "generator", None))
        return cls(model, loader, optimizer, scheduler, scaler, step, amp)

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser, schedule, scaler, loader and random state."""
        loader = self.loader.state_dict() if hasattr(self.loader, "state_dict") else {}
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "loader": loader, "rng": _rng_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if hasattr(self.loader, "load_state_dict"):
            self.loader.load_state_dict(state["loader"])
        _set_rng_state(state["rng"])


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
    tensorboard_dir: str | os.PathLike[str] | None = None,
) -> FitResult:
    """Train ``model`` in place and return its :class:`~nbutils.fitting.FitResult`.

    Args:
        model: the network (moved to ``device``).
        train_loader: a :class:`~nbutils.torch_data.TensorLoader` or ``DeviceLoader``
            (any iterable of device batches with ``len`` works; those two are resumable).
        val_loader: validation batches, or ``None`` (no early stopping then).
        config: the run's :class:`TrainConfig`.
        device: training device.
        checkpoint_dir: where ``last_checkpoint.pt`` is written after every epoch.
        resume: continue from a matching checkpoint in ``checkpoint_dir`` if there is one.
        keep_checkpoint: keep the checkpoint after a finished run.
        progress: show tqdm bars (epochs, and batches within the epoch).
        desc: label of the progress bar.
        tensorboard_dir: write each epoch's losses, accuracies and learning rate there
            as TensorBoard events (``tensorboard --logdir`` on its parent).

    Under several processes (``torchrun``, see :mod:`nbutils.distributed`) the model
    trains wrapped in DistributedDataParallel on each process's shard of the loader;
    the training loss and accuracy are summed over the processes, every process
    evaluates the whole validation split, and only rank 0 shows progress and writes the
    checkpoint and TensorBoard events (every process resumes from it).

    Returns:
        The result; ``extra`` holds ``amp``, ``images_per_second``, ``stopped_early`` and
        ``resumed_from_epoch``. When early stopping is on, the best weights are restored.
    """
    main = distributed.is_main()
    progress = progress and main
    if not main:
        tensorboard_dir = None
    with RunLock(checkpoint_dir) if checkpoint_dir and main else contextlib.nullcontext():
        return _fit(model, train_loader, val_loader, config, torch.device(device),
                    checkpoint_dir, resume, keep_checkpoint, progress, desc, tensorboard_dir)


def _fit(model: nn.Module, train_loader: Any, val_loader: Any | None, config: TrainConfig,
         device: torch.device, checkpoint_dir: str | os.PathLike[str] | None, resume: bool,
         keep_checkpoint: bool, progress: bool, desc: str,
         tensorboard_dir: str | os.PathLike[str] | None = None) -> FitResult:
    """:func:`fit` once the run folder is locked."""
    run = _Trainer.create(model, train_loader, config, device)
    ckpt = Checkpointer(checkpoint_dir, _fingerprint(model, config, len(train_loader)),
                        writer=distributed.is_main())
    stopper, history = EarlyStopping(config.early_stopping_patience), []
    torch.manual_seed(config.seed)
    if resume:
        history = _resume(ckpt, run, stopper, progress)
    resumed_from = len(history)
    reset_device_peak(device)
    threads = [_fix_threads(config.num_threads)] if device.type == "cpu" else []
    board = EpochWriter(tensorboard_dir, fresh=resumed_from == 0)

    def after_epoch(row: dict[str, Any]) -> None:
        ckpt.save({**run.state_dict(), "history": history, "stopper": stopper.state_dict()})
        board.write(row)

    with Stopwatch() as clock, board:
        images, seconds = _run_epochs(run, val_loader, config, device, history, stopper,
                                      after_epoch, progress, desc)
    stopped_early = len(history) < config.epochs
    if stopped_early and progress:
        print(f"Early stopping after epoch {len(history)}: best validation accuracy "
              f"{stopper.best_acc:.4f} at epoch {stopper.best_epoch}; restoring those weights.")
    stopper.restore_best(model)
    if not keep_checkpoint:
        ckpt.remove()
    elapsed = sum(h["seconds"] for h in history)
    return FitResult(
        history=history, train_seconds=elapsed, cpu_seconds=clock.cpu_seconds,
        best_epoch=stopper.best_epoch, device_peak_mb=device_peak_mb(device), threads=threads,
        load_average=clock.load,
        extra={"amp": run.amp.label, "images_per_second": images / seconds if seconds else 0.0,
               "stopped_early": stopped_early, "resumed_from_epoch": resumed_from})


def _resume(ckpt: Checkpointer, run: _Trainer, stopper: EarlyStopping,
            progress: bool) -> list[dict[str, Any]]:
    """Load a matching checkpoint into ``run`` and ``stopper``; the history so far."""
    state = ckpt.load()
    if state is None:
        return []
    run.load_state_dict(state)
    stopper.load_state_dict(state["stopper"])
    if progress:
        print(f"Resuming from the checkpoint of epoch {len(state['history'])} in "
              f"{ckpt.path.parent}")
    return list(state["history"])


def _run_epochs(run: _Trainer, val_loader: Any | None, config: TrainConfig,
                device: torch.device, history: list[dict[str, Any]], stopper: EarlyStopping,
                after_epoch: Any, progress: bool, desc: str) -> tuple[int, float]:
    """The epoch loop of :func:`fit`: train, validate, track the best, checkpoint.

    Returns the images and seconds of pure training.
    """
    from tqdm.auto import tqdm

    images, seconds = 0, 0.0
    bar = tqdm(range(len(history), config.epochs), desc=desc, disable=not progress,
               initial=len(history), total=config.epochs, unit="epoch")
    for epoch in bar:
        lr = float(run.optimizer.param_groups[0]["lr"])
        t0 = time.perf_counter()
        stats = train_epoch(run.model, run.loader, run.step, device, progress, f"epoch {epoch + 1}")
        images, seconds = images + stats["images"], seconds + stats["seconds"]
        distributed.broadcast_buffers(run.model)  # several processes: validate one model
        val_loss, val_acc = (evaluate(run.model, val_loader, run.amp) if val_loader is not None
                             else (float("nan"), float("nan")))
        history.append({"epoch": epoch + 1, "train_loss": stats["train_loss"],
                        "train_acc": stats["train_acc"], "val_loss": val_loss, "val_acc": val_acc,
                        "lr": lr, "seconds": round(time.perf_counter() - t0, 3)})
        stop = val_loader is not None and stopper.update(val_acc, epoch + 1, run.model)
        bar.set_postfix(loss=f"{stats['train_loss']:.3f}", acc=f"{stats['train_acc']:.3f}",
                        val_acc=f"{val_acc:.3f}")
        after_epoch(history[-1])
        if stop:
            break
    bar.close()
    return images, seconds


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
                    info: ClassifierInfo) -> Path:
    """Write ``model.safetensors``, ``model_config.json`` and ``classifier.json`` atomically.

    ``model`` must come from :func:`nbutils.torch_models.build_model` (any registered
    architecture): its ``model_config`` and family are written beside the weights, so
    :func:`load_classifier` can rebuild the same network.

    Returns:
        The folder, ready to pass as ``model_path`` to ``finish_run``.
    """
    from safetensors.torch import save as st_save

    config = getattr(model, "model_config", None)
    if config is None or not hasattr(config, "family"):
        raise ValueError("save_classifier needs a model built by nbutils.torch_models.build_model "
                         f"(registered families: {', '.join(MODELS.names())}); "
                         f"{type(model).__name__} carries no model_config.")
    folder = resolve_path(model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_write(folder / WEIGHTS_FILE, "wb") as handle:
        handle.write(st_save(state, metadata={"format": "pt"}))
    values = config.to_dict()
    if "pretrained" in values:
        values["pretrained"] = False   # the weights are in the file now
    atomic_write_text(folder / MODEL_CONFIG_FILE,
                      json.dumps({"family": config.family, **values}, indent=2) + "\n")
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
    """Rebuild a model saved by :func:`save_classifier` (the ``nbutils.inference`` contract).

    ``model_config.json`` names the architecture family (files written before families
    existed are AlexNets); any family in :data:`nbutils.torch_models.MODELS` is rebuilt.
    """
    from safetensors.torch import load_file

    folder = resolve_path(model_dir)
    info = info or read_classifier_info(folder)
    cfg_path, weights_path = folder / MODEL_CONFIG_FILE, folder / WEIGHTS_FILE
    for p in (cfg_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing: re-run notebook 02 (or the one that "
                                    "trained this model) to save it again.")
    values = json.loads(cfg_path.read_text())
    family = values.pop("family", "alexnet")
    model = build_model(MODELS.config_from_dict(family, values))
    try:
        state = load_file(str(weights_path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError: say which file
        raise ValueError(f"{weights_path} is not a readable safetensors file "
                         f"({type(exc).__name__}: {exc}); re-run notebook 02 to save it again."
                         ) from exc
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        size = int(info.image_size)
        check_outputs(info, model(torch.zeros(1, 3, size, size)).shape[-1], folder)
    device = torch.device(device)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return TorchClassifier(info, model, device)


def clone_model(model: nn.Module) -> nn.Module:
    """A deep copy (for comparisons that must not touch the original)."""
    return copy.deepcopy(model)
