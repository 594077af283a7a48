"""Fine-tuning a pretrained image classifier with the Hugging Face stack (notebook 04).

Nothing here re-implements what the libraries provide: ``AutoImageProcessor``
resizes and normalises, ``AutoModelForImageClassification`` swaps the ImageNet
head for one with our classes (``id2label``/``label2id`` set, so the saved model
names them), and ``Trainer``/``TrainingArguments`` run the loop, mixed precision,
gradient accumulation and gradient checkpointing. This module adds what the
course needs around them:

* two strategies: ``linear_probe`` (only the new head learns; the backbone is
  frozen, BatchNorm statistics included) and ``fine_tune`` (everything learns,
  except optionally the first ``freeze_fraction`` of the backbone's blocks);
* :class:`EpochLogger`, a callback with one tqdm bar per run and one line per epoch,
  and :func:`history_from_log`, which turns the Trainer's log into the course's
  per-epoch history dicts;
* :func:`predict_proba`, :func:`save_classifier` and :func:`load_classifier` (the
  saved-model contract of ``nbutils.inference``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# isort: off
from . import hf_offline  # sets USE_TF=0 (and friends) before transformers loads
from .fitting import FitResult, Stopwatch
from .frameworks.registry import ModelRegistry
from .inference import ClassifierInfo, check_outputs, read_classifier_info, write_classifier_info
from .paths import clear_folder, folder_built_beside
from .settings import Settings

import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoImageProcessor,
    AutoModelForImageClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from .torch_models import count_parameters  # noqa: E402
from .torch_train import device_peak_mb, reset_device_peak  # noqa: E402
# isort: on

__all__ = [
    "STRATEGIES",
    "MODELS",
    "TransferConfig",
    "HFClassifier",
    "EpochLogger",
    "load_pretrained",
    "resize_processor",
    "backbone_units",
    "head_parameter_names",
    "set_trainable",
    "precision_flags", "training_arguments", "has_class_names",
    "fit",
    "history_from_log",
    "snapshot_weights",
    "restore_weights",
    "describe_phase",
    "strategy_table",
    "classifier_info",
    "predict_proba",
    "save_classifier",
    "load_classifier",
]

STRATEGIES = ("linear_probe", "fine_tune")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_BN_TYPES = (torch.nn.modules.batchnorm._BatchNorm,)
# Architectures this framework rebuilds: ``AutoModelForImageClassification`` reads the
# architecture from the saved ``config.json``, so there is one family, ``auto``.
MODELS = ModelRegistry("huggingface")


# ------------------------------------------------------------ model and processor


def _is_timm(model_or_processor: Any) -> bool:
    return type(model_or_processor).__name__.startswith("TimmWrapper")


def resize_processor(processor: Any, model: Any, image_size: int | None) -> tuple[Any, int]:
    """A processor that outputs ``image_size`` squares, and the size actually used.

    A timm processor gets a new ``pretrained_cfg`` (``input_size`` and ``crop_pct=1``:
    our images are already tight crops), which is also written into the model's
    config so that ``save_pretrained`` stores it. A transformers processor gets its
    ``size`` (and ``crop_size``) changed. Models with a fixed input size (ViT) keep
    their own size, with a note.
    """
    fixed = getattr(model.config, "image_size", None)
    if isinstance(fixed, int) and image_size and fixed != image_size:
        print(f"note: {type(model).__name__} takes {fixed}x{fixed} images; "
              f"image_size={image_size} is ignored")
        image_size = fixed
    if _is_timm(processor):
        pcfg = dict(model.config.pretrained_cfg)
        if image_size:
            pcfg["input_size"] = [3, int(image_size), int(image_size)]
            pcfg["crop_pct"] = 1.0
        model.config.pretrained_cfg = pcfg
        processor = type(processor)(pretrained_cfg=pcfg, architecture=model.config.architecture)
        return processor, int(pcfg["input_size"][-1])
    if not image_size:
        size = getattr(processor, "size", {}) or {}
        return processor, int(size.get("height", size.get("shortest_edge", 224)))
    size = dict(getattr(processor, "size", {}) or {})
    if "shortest_edge" in size:
        processor.size = {"shortest_edge": int(image_size)}
    else:
        processor.size = {"height": int(image_size), "width": int(image_size)}
    if getattr(processor, "crop_size", None) is not None:
        processor.crop_size = {"height": int(image_size), "width": int(image_size)}
    return processor, int(image_size)


@MODELS.register("auto")
def load_pretrained(source: str, class_names: Sequence[str],
                    image_size: int | None = None) -> tuple[Any, Any]:
    """Load a checkpoint with a new head for ``class_names`` and its matching processor.

    Args:
        source: a Hub id or local folder (see :func:`nbutils.hf_offline.resolve_checkpoint`).
        class_names: our classes; ``id2label``/``label2id`` are set from them.
        image_size: the processor's output size (``None``: the checkpoint's own).

    Returns:
        ``(model, processor)``; the model's old head is replaced by a randomly
        initialised one with ``len(class_names)`` outputs.
    """
    hf_offline.quiet_transformers()
    names = list(class_names)
    processor = AutoImageProcessor.from_pretrained(source)
    model = AutoModelForImageClassification.from_pretrained(
        source, num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)}, ignore_mismatched_sizes=True,
    )
    if hasattr(model.config, "label_names"):  # timm configs save their labels under this name
        model.config.label_names = names
    processor, _ = resize_processor(processor, model, image_size)
    return model, processor


# ------------------------------------------------------------------- freezing


def has_class_names(source: str) -> bool:
    """Whether the checkpoint at ``source`` ships a trained classification head with named
    classes (EfficientNet's 1,000 ImageNet classes do); a backbone-only checkpoint such as
    ``google/vit-base-patch16-224-in21k`` has placeholder labels (``LABEL_0``...) and a
    head that would answer at random."""
    from transformers import AutoConfig

    labels = list((AutoConfig.from_pretrained(source).id2label or {}).values())
    return len(labels) > 2 and not all(str(v).startswith("LABEL_") for v in labels)


def _head_prefix(model: Any) -> str | None:
    """The module name of the classification head (``classifier``, ``head``, ``fc`` ...)."""
    if _is_timm(model):
        head = model.timm_model.get_classifier()
        return next(name for name, mod in model.named_modules() if mod is head)
    if isinstance(getattr(model, "classifier", None), torch.nn.Module):
        return "classifier"
    return next((p for p in ("head", "fc", "score") if isinstance(
        getattr(model, p, None), torch.nn.Module)), None)


def head_module(model: Any) -> torch.nn.Module:
    """The classification head: the module whose input is the image's embedding."""
    prefix = _head_prefix(model)
    if not prefix:
        raise ValueError(f"Cannot find the classification head of {type(model).__name__}: "
                         "expected a 'classifier' (or 'head'/'fc') module.")
    return model.get_submodule(prefix)


def head_parameter_names(model: Any) -> list[str]:
    """Names of the classification head's parameters (what a linear probe trains)."""
    prefix = _head_prefix(model)
    names = [n for n, _ in model.named_parameters() if prefix and n.startswith(prefix + ".")]
    if not names:
        raise ValueError(f"Cannot find the classification head of {type(model).__name__}: "
                         "expected a 'classifier' (or 'head'/'fc') module.")
    return names


def _unit_of(name: str) -> str:
    """The block a parameter belongs to: its path up to the first numbered part."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return ".".join(parts[:-1]) or name


def backbone_units(model: Any) -> list[tuple[str, list[str]]]:
    """The backbone's blocks in depth order, each with its parameter names.

    A block is a parameter path up to its first index (``timm_model.blocks.3``,
    ``vit.encoder.layer.5``) or a named layer (``timm_model.conv_stem``).
    """
    head = set(head_parameter_names(model))
    units: dict[str, list[str]] = {}
    for name, _ in model.named_parameters():
        if name not in head:
            units.setdefault(_unit_of(name), []).append(name)
    return list(units.items())


def _keep_eval(module: torch.nn.Module, _inputs: Any) -> None:
    module.training = False


def set_trainable(model: Any, strategy: str, freeze_fraction: float = 0.0) -> dict[str, Any]:
    """Choose what learns: ``linear_probe`` (head only) or ``fine_tune``.

    For ``fine_tune`` the first ``freeze_fraction`` of the backbone's blocks (from the
    input side) stay frozen: the early layers hold generic edges and textures, and a
    frozen prefix also saves their backward pass. Frozen BatchNorm layers keep their
    ImageNet statistics (they stay in eval mode during training).

    Returns:
        ``{"strategy", "frozen_units", "trainable_units", "total_params",
        "trainable_params"}``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if not 0.0 <= freeze_fraction <= 1.0:
        raise ValueError(f"freeze_fraction must be in [0, 1], got {freeze_fraction}")
    units = backbone_units(model)
    n_frozen = len(units) if strategy == "linear_probe" else int(round(freeze_fraction * len(units)))
    frozen_names = {n for _, names in units[:n_frozen] for n in names}
    for name, param in model.named_parameters():
        param.requires_grad = name not in frozen_names
    for handle in getattr(model, "_nbutils_bn_hooks", []):
        handle.remove()
    model.train(model.training)  # undo the eval mode the old hooks forced on BatchNorm layers
    hooks = []
    for _name, module in model.named_modules():
        params = list(module.parameters(recurse=False))
        if isinstance(module, _BN_TYPES) and params and not any(p.requires_grad for p in params):
            hooks.append(module.register_forward_pre_hook(_keep_eval))
    model._nbutils_bn_hooks = hooks
    total, trainable = count_parameters(model), count_parameters(model, trainable_only=True)
    return {"strategy": strategy, "frozen_units": [u for u, _ in units[:n_frozen]],
            "trainable_units": [u for u, _ in units[n_frozen:]],
            "total_params": total, "trainable_params": trainable}


# ------------------------------------------------------------------- training


def precision_flags(precision: str, device: str) -> dict[str, bool]:
    """``{"fp16": ..., "bf16": ...}`` for ``TrainingArguments``.

    ``auto`` picks bf16 on GPUs that support it, else fp16, and fp32 elsewhere. On the
    CPU ``bf16`` trains under bf16 autocast (``use_cpu``), as the run config chooses on
    CPUs that compute bf16 natively (:func:`nbutils.config.resolve_precision`); fp16
    needs a CUDA GPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if device == "cpu" and precision == "bf16":
        return {"fp16": False, "bf16": True}
    if device != "cuda":  # the CPU in fp32, or Apple's mps
        if precision in ("fp16", "bf16"):
            print(f"note: precision={precision} is not used on {device}; training in fp32")
        return {"fp16": False, "bf16": False}
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return {"fp16": precision == "fp16", "bf16": precision == "bf16"}


class _Meter:
    """Running training loss and accuracy over one epoch."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss_sum, self.correct, self.count = 0.0, 0, 0

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        with torch.no_grad():
            logits = logits.detach().float()
            self.loss_sum += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            self.correct += int((logits.argmax(-1) == labels).sum())
            self.count += int(labels.numel())

    def result(self) -> tuple[float, float]:
        """Mean loss and accuracy, over every process of a distributed run."""
        from .distributed import all_reduce_sum

        loss_sum, correct, count = all_reduce_sum([self.loss_sum, self.correct, self.count])
        n = max(count, 1)
        return loss_sum / n, correct / n


class CourseTrainer(Trainer):
    """``Trainer`` that also measures training accuracy, batch by batch, for the curves."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.meter = _Meter()

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        labels = inputs.get("labels")
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                             num_items_in_batch=num_items_in_batch)
        if model.training and labels is not None:
            logits = outputs["logits"] if isinstance(outputs, dict) else outputs[1]
            self.meter.update(logits, labels)
        return (loss, outputs) if return_outputs else loss


class EpochLogger(TrainerCallback):
    """One tqdm bar per training run and one printed line per epoch.

    At the end of each epoch it adds the epoch's training loss/accuracy, learning
    rate and seconds to the Trainer's ``log_history``, where
    :func:`history_from_log` finds them beside the Trainer's own evaluation logs.
    """

    def __init__(self, trainer: CourseTrainer, desc: str = "train", progress: bool = True) -> None:
        self.trainer = trainer
        self.desc = desc
        self.progress = progress
        self.bar: Any = None
        self._t0 = 0.0
        self._pending: dict[str, float] = {}

    def _write(self, text: str) -> None:
        from tqdm.auto import tqdm

        tqdm.write(text) if self.bar is not None else print(text)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.max_steps, desc=self.desc, unit="step", leave=False,
                        disable=not self.progress)

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.meter.reset()
        self._t0 = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        loss, acc = self.trainer.meter.result()
        scheduler = kwargs.get("lr_scheduler")
        lr = float(scheduler.get_last_lr()[0]) if scheduler is not None else float("nan")
        entry = {"epoch": round(float(state.epoch), 4), "step": state.global_step,
                 "train_epoch_loss": loss, "train_epoch_acc": acc, "learning_rate_end": lr,
                 "epoch_seconds": time.perf_counter() - self._t0}
        state.log_history.append(entry)
        self._pending = entry

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None,
                    **kwargs: Any) -> None:
        metrics = metrics or {}
        e = self._pending
        if not e:
            return
        self._write(f"{self.desc} epoch {round(e['epoch'])}: train loss {e['train_epoch_loss']:.4f}"
                    f" acc {e['train_epoch_acc']:.3f} | val loss {metrics.get('eval_nll', math.nan):.4f}"
                    f" acc {metrics.get('eval_accuracy', math.nan):.3f} | "
                    f"{e['epoch_seconds']:.1f} s")
        self._pending = {}

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def history_from_log(log_history: Sequence[dict[str, Any]], phase: str | None = None,
                     epoch_offset: int = 0) -> list[dict[str, Any]]:
    """Turn a Trainer ``log_history`` into the course's per-epoch dicts.

    Returns:
        ``[{"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}, ...]``
        (plus ``"phase"`` when given); epochs are numbered from ``epoch_offset + 1``.
    """
    rows: dict[int, dict[str, Any]] = {}
    for entry in log_history:
        if "epoch" not in entry:
            continue
        epoch = max(1, int(math.ceil(float(entry["epoch"]) - 1e-6)))
        row = rows.setdefault(epoch, {})
        if "train_epoch_loss" in entry:
            row.update(train_loss=entry["train_epoch_loss"], train_acc=entry["train_epoch_acc"],
                       lr=entry["learning_rate_end"], seconds=entry["epoch_seconds"])
        if "eval_nll" in entry:  # plain cross-entropy, comparable with train_loss
            row["val_loss"] = entry["eval_nll"]
        elif "eval_loss" in entry and "val_loss" not in row:
            row["val_loss"] = entry["eval_loss"]
        if "eval_accuracy" in entry:
            row["val_acc"] = entry["eval_accuracy"]
        if "learning_rate" in entry and "lr" not in row:
            row["lr"] = entry["learning_rate"]
    out = []
    for epoch in sorted(rows):
        row = rows[epoch]
        if "train_loss" not in row:
            continue
        rec = {"epoch": epoch + epoch_offset}
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"):
            if key in row:
                rec[key] = float(row[key])
        if phase is not None:
            rec["phase"] = phase
        out.append(rec)
    return out


def _eval_metrics(eval_pred: Any) -> dict[str, float]:
    """Accuracy and plain cross-entropy (``eval_loss`` includes any label smoothing)."""
    logits, labels = eval_pred
    logits = np.asarray(logits[0] if isinstance(logits, tuple) else logits, dtype=np.float64)
    labels = np.asarray(labels)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    nll = -log_probs[np.arange(len(labels)), labels].mean()
    return {"accuracy": float((logits.argmax(-1) == labels).mean()), "nll": float(nll)}


def _checkpointing_args(enable: bool) -> dict[str, bool]:
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    key = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {key: bool(enable)}


@dataclass
class TransferConfig(Settings):
    """One phase of transfer learning (a linear probe or fine-tuning).

    Build it with :meth:`for_phase` from a notebook's config: the probe takes
    ``probe_epochs`` and ``probe_learning_rate``, fine-tuning ``epochs`` and
    ``learning_rate``; the precision is the run's (``precision`` in the profile).

    Attributes:
        strategy: ``linear_probe`` or ``fine_tune`` (see :func:`set_trainable`).
        epochs, batch_size, learning_rate, weight_decay, warmup_ratio: the usual.
        gradient_accumulation_steps: micro-batches per optimizer step (effective
            batch = ``batch_size * gradient_accumulation_steps``).
        gradient_checkpointing: recompute activations in the backward pass (less
            memory, about 20-30% slower).
        precision: ``auto``/``fp32``/``fp16``/``bf16`` (see :func:`precision_flags`).
        freeze_fraction: share of backbone blocks kept frozen when fine-tuning.
        label_smoothing: label smoothing factor of the cross-entropy.
        channels_last: store convolution weights channels-last (NHWC), which oneDNN and
            cuDNN run faster for CNNs (about 1.5x for EfficientNet training on a CPU).
        seed: Trainer seed (shuffling; the head was initialised when loaded).
        num_workers: DataLoader worker processes.
        threads: PyTorch CPU threads (0: PyTorch's default).
    """

    strategy: str = "fine_tune"
    epochs: int = 2
    batch_size: int = 32
    precision: str = "auto"
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    freeze_fraction: float = 0.0
    label_smoothing: float = 0.0
    channels_last: bool = False
    seed: int = 42
    num_workers: int = 0
    threads: int = 0

    def validate(self) -> None:
        """A known strategy (ranges are checked by :class:`Settings`)."""
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")

    @classmethod
    def for_phase(cls, cfg: Any, strategy: str, **changes: Any) -> TransferConfig:
        """The settings of one phase, from a notebook-04 :class:`~nbutils.config.RunConfig`."""
        m = cfg.model
        probe = strategy == "linear_probe"
        precision = "auto" if cfg.precision == "mixed" else cfg.precision
        values = dict(strategy=strategy, epochs=m.probe_epochs if probe else m.epochs,
                      learning_rate=m.probe_learning_rate if probe else m.learning_rate,
                      precision=precision, seed=cfg.seed, num_workers=cfg.data.num_workers,
                      threads=cfg.hardware.cpu_count)
        return cls.from_settings(m, **{**values, **changes})


def training_arguments(config: TransferConfig, device: str, out_dir: str) -> TrainingArguments:
    """``TrainingArguments`` for one phase: per-epoch evaluation, no saving, no reports."""
    return TrainingArguments(
        output_dir=out_dir, num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size * 2, learning_rate=config.learning_rate,
        weight_decay=config.weight_decay, warmup_steps=config.warmup_ratio,
        lr_scheduler_type="cosine", gradient_accumulation_steps=config.gradient_accumulation_steps,
        **_checkpointing_args(config.gradient_checkpointing),
        **precision_flags(config.precision, device),
        label_smoothing_factor=config.label_smoothing, eval_strategy="epoch",
        logging_strategy="epoch", save_strategy="no", report_to="none",
        remove_unused_columns=False, label_names=["labels"], seed=config.seed,
        data_seed=config.seed, use_cpu=device == "cpu",  # cuda or mps: the Trainer finds it
        dataloader_num_workers=config.num_workers, dataloader_pin_memory=device == "cuda",
        disable_tqdm=True,
    )


def _set_callbacks(trainer: Any, desc: str, progress: bool,
                   tensorboard_dir: str | os.PathLike[str] | None) -> None:
    """The course's epoch logger instead of the Trainer's printers, and TensorBoard events."""
    for cb in list(trainer.callback_handler.callbacks):
        if type(cb).__name__ in ("PrinterCallback", "ProgressCallback", "NotebookProgressCallback"):
            trainer.remove_callback(cb)
    trainer.add_callback(EpochLogger(trainer, desc=desc, progress=progress))
    if tensorboard_dir is not None:
        from .tracking import summary_writer

        writer = summary_writer(clear_folder(tensorboard_dir))  # a re-run starts afresh
        from transformers.integrations import TensorBoardCallback  # after: it imports torch's

        trainer.add_callback(TensorBoardCallback(writer))


def fit(model: Any, dsets: Any, config: TransferConfig, device: str = "cpu",
        progress: bool = True, phase_offset: int = 0,
        tensorboard_dir: str | os.PathLike[str] | None = None) -> FitResult:
    """Train ``model`` in place with the Hugging Face ``Trainer``.

    Args:
        model: from :func:`load_pretrained`.
        dsets: from :func:`nbutils.hf_data.prepare_datasets` (``train`` and ``val`` used).
        config: the phase's :class:`TransferConfig`.
        device: ``cpu`` or ``cuda``.
        progress: show the tqdm bar.
        phase_offset: first epoch number minus one in the returned history.
        tensorboard_dir: write the Trainer's per-epoch logs there as TensorBoard events
            (transformers' own ``TensorBoardCallback``).

    Returns:
        A :class:`~nbutils.fitting.FitResult` whose ``extra`` holds ``strategy`` and
        ``trainable`` (what :func:`set_trainable` froze and left to learn).
    """
    from .hf_data import collate

    trainable = set_trainable(model, config.strategy, config.freeze_fraction)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    if device == "cpu" and config.threads:
        torch.set_num_threads(int(config.threads))
    out_dir = tempfile.mkdtemp(prefix="nbutils-hf-trainer-")
    trainer = CourseTrainer(model=model, args=training_arguments(config, device, out_dir),
                            train_dataset=dsets["train"], eval_dataset=dsets["val"],
                            data_collator=collate, compute_metrics=_eval_metrics)
    _set_callbacks(trainer, config.strategy, progress, tensorboard_dir)
    reset_device_peak(device)
    try:
        with Stopwatch() as clock:
            trainer.train()
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        # mixed precision wrapped model.forward in autocast; take it off, so that what is
        # predicted next (and recorded) is what the saved model predicts when reloaded
        trainer.accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    model.eval()
    history = history_from_log(trainer.state.log_history, phase=config.strategy,
                               epoch_offset=phase_offset)
    vals = [h.get("val_acc", -math.inf) for h in history]
    best = phase_offset + int(np.argmax(vals)) + 1 if history else 0
    return FitResult(history=history, train_seconds=clock.seconds, cpu_seconds=clock.cpu_seconds,
                     best_epoch=best, device_peak_mb=device_peak_mb(device),
                     threads=[torch.get_num_threads()] if device == "cpu" else [],
                     load_average=clock.load,
                     extra={"strategy": config.strategy, "trainable": trainable,
                            "processes": int(trainer.args.world_size)})


def strategy_table(phases: Sequence[tuple[FitResult, float]]) -> dict[str, dict[str, Any]]:
    """Per strategy: epochs, trainable weights, seconds, validation and test accuracy.

    ``phases`` pairs each phase's :class:`FitResult` with its test accuracy; the table is
    what notebook 04 shows and keeps in the run record.
    """
    return {run.extra["strategy"]: {
        "epochs": run.epochs, "trainable_params": run.extra["trainable"]["trainable_params"],
        "train_seconds": round(run.train_seconds, 1), "cpu_seconds": round(run.cpu_seconds, 1),
        "val_acc": round(run.final_val_acc, 4), "test_acc": round(acc, 4)}
        for run, acc in phases}


def describe_phase(result: FitResult) -> str:
    """One line: strategy, epochs, validation accuracy, time, trainable weights."""
    t = result.extra["trainable"]
    return (f"{result.extra['strategy']}: {result.summary()}, trainable "
            f"{t['trainable_params']:,} of {t['total_params']:,} weights")


def snapshot_weights(model: Any) -> dict[str, torch.Tensor]:
    """A copy of the model's weights (on the CPU), to go back to with :func:`restore_weights`."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def restore_weights(model: Any, snapshot: dict[str, torch.Tensor]) -> None:
    """Load weights saved by :func:`snapshot_weights` back into ``model``."""
    model.load_state_dict(snapshot)


# ------------------------------------------------------------------ inference


def _model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def predict_proba(model: Any, processor: Any, images: np.ndarray, batch_size: int = 64,
                  progress: bool = False, tta_flip: bool = False) -> np.ndarray:
    """(N, K) class probabilities for uint8 (N, H, W, 3) images of any size; with
    ``tta_flip`` the mean of each image's and its mirror image's (as notebooks 02 and 03)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got shape {images.shape}")
    probs = _predict(model, processor, images, batch_size, progress)
    if tta_flip and len(images):
        probs = (probs + _predict(model, processor, images[:, :, ::-1], batch_size, progress)) / 2
    return probs


def pixel_batches(processor: Any, images: np.ndarray, batch_size: int, device: Any,
                  progress: bool = False) -> Iterator[torch.Tensor]:
    """The processor's ``pixel_values`` for uint8 images, one batch at a time, on ``device``."""
    from PIL import Image
    from tqdm.auto import tqdm

    for start in tqdm(range(0, len(images), batch_size), desc="predict", leave=False,
                      disable=not progress):
        batch = [Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8))
                 for img in images[start:start + batch_size]]
        yield processor(images=batch, return_tensors="pt")["pixel_values"].to(device)


def _predict(model: Any, processor: Any, images: np.ndarray, batch_size: int,
             progress: bool) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode():
        for pixels in pixel_batches(processor, images, batch_size, _model_device(model),
                                    progress):
            logits = model(pixel_values=pixels).logits.float()
            out.append(torch.softmax(logits, dim=-1).cpu().numpy())
    k = int(model.config.num_labels)
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, k))


@dataclass
class HFClassifier:
    """A reloaded Hugging Face course model (see :mod:`nbutils.inference`)."""

    info: ClassifierInfo
    model: Any
    processor: Any

    def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, K) probabilities for uint8 (N, H, W, 3) images; the processor resizes them
        (and the mirror image is averaged in when ``classifier.json`` says ``tta_flip``)."""
        return predict_proba(self.model, self.processor, images, batch_size,
                             tta_flip=bool(self.info.extra.get("tta_flip", False)))


def classifier_info(model: Any, processor: Any, image_size: int, checkpoint: str,
                    extra: dict[str, Any] | None = None,
                    source_size: int | None = None) -> ClassifierInfo:
    """The ``classifier.json`` contents for a fine-tuned model.

    ``source_size`` is the side of the dataset's images before the processor
    resized them (``data.image_size``): new photos are fitted to it first.
    """
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if _is_timm(processor):
        mean, std = processor.data_config["mean"], processor.data_config["std"]
    else:
        mean, std = processor.image_mean, processor.image_std
    return ClassifierInfo(framework="huggingface", model=type(model).__name__, class_names=names,
                          image_size=int(image_size), mean=[float(v) for v in mean],
                          std=[float(v) for v in std],
                          extra={"checkpoint": checkpoint, **(extra or {})},
                          source_size=None if source_size is None else int(source_size))


def save_classifier(model_dir: str | os.PathLike[str], model: Any, info: ClassifierInfo, *,
                    processor: Any) -> Path:
    """``save_pretrained`` the model and its image ``processor`` plus ``classifier.json``.

    Everything is written to a temporary folder beside ``model_dir`` that then
    replaces it, so a crash never leaves half a model. The folder loads with
    ``pipeline("image-classification", model=model_dir)`` and
    :func:`nbutils.inference.load_classifier`.
    """
    target = Path(model_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    with folder_built_beside(target) as tmp:
        model.to(memory_format=torch.contiguous_format)  # safetensors stores contiguous tensors
        model.save_pretrained(tmp)
        if not _is_timm(processor):  # timm keeps its processor settings in config.json
            processor.save_pretrained(tmp)
        write_classifier_info(tmp, info)
    return target


def load_classifier(model_dir: str | os.PathLike[str], info: ClassifierInfo | None = None,
                    device: str = "cpu") -> HFClassifier:
    """Reload a model saved by :func:`save_classifier` (the ``nbutils.inference`` contract)."""
    hf_offline.quiet_transformers()
    folder = str(model_dir)
    info = info or read_classifier_info(folder)
    try:
        processor = AutoImageProcessor.from_pretrained(folder)
        model = AutoModelForImageClassification.from_pretrained(folder).to(device).eval()
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ValueError: say where
        raise ValueError(f"Could not load the Hugging Face model in {folder} "
                         f"({type(exc).__name__}: {exc}); re-run notebook 04 to save it again."
                         ) from exc
    check_outputs(info, int(model.config.num_labels), folder)
    return HFClassifier(info=info, model=model, processor=processor)
