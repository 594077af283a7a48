"""Notebook 04 as a script: a linear probe, then fine-tuning, with the Hugging Face Trainer.

Under ``accelerate launch`` or ``torchrun`` the Trainer distributes itself (DDP; gloo on
CPUs): each process reads its share of every batch, and only the main process
predicts, saves the model and writes the run record.
"""

from __future__ import annotations

import os
from typing import Any

from .. import distributed, hf_data, hf_offline, hf_train
from ..data import load_for
from ..fitting import FitResult
from ..records import RunRecord
from ..runs import finish_run
from ..torch_models import count_parameters

__all__ = ["train"]


def _phase(cfg: Any, strategy: str, world: int) -> hf_train.TransferConfig:
    """One phase's settings; under ``world`` processes each takes ``batch_size / world``
    images per step (the Trainer's batch is per process), so ``batch_size`` means the
    batch of all processes together, as in the PyTorch recipe."""
    changes: dict[str, Any] = {}
    if world > 1:
        if cfg.model.batch_size % world:
            raise ValueError(f"batch_size {cfg.model.batch_size} does not split evenly over "
                             f"{world} processes: use a multiple of {world}")
        changes["batch_size"] = cfg.model.batch_size // world
        if cfg.device == "cpu":
            changes["threads"] = distributed.threads_per_process(cfg.hardware.cpu_count, world)
    return hf_train.TransferConfig.for_phase(cfg, strategy, **changes)


def train(cfg: Any, notebook: str) -> RunRecord | None:
    """Probe, fine-tune, pick by validation accuracy, save and record as ``notebook`` does."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    run_id = cfg.run_id(notebook)
    board = cfg.outputs_dir / "tensorboard" / run_id
    data = load_for(cfg, progress=False)
    ckpt = hf_offline.resolve_checkpoint(cfg.model.checkpoint)
    model, processor = hf_train.load_pretrained(ckpt.source, data.class_names,
                                                cfg.model.input_size)
    total_params = count_parameters(model)
    dsets = hf_data.prepare_datasets(data, processor, augment=cfg.model.augment, seed=cfg.seed)
    main = int(os.environ.get("RANK", "0")) == 0
    probe = hf_train.fit(model, dsets, _phase(cfg, "linear_probe", world), cfg.device,
                         progress=main, tensorboard_dir=board / "linear_probe" if main else None)
    probe_probs = hf_train.predict_proba(model, processor, data.test.images,
                                tta_flip=cfg.model.tta_flip) if main else None
    probe_weights = hf_train.snapshot_weights(model)
    finetune = hf_train.fit(model, dsets, _phase(cfg, "fine_tune", world), cfg.device,
                            phase_offset=len(probe.history), progress=main,
                            tensorboard_dir=board / "fine_tune" if main else None)
    if not main:
        return None
    phases = {"linear_probe": (probe, probe_probs, probe_weights), "fine_tune": (finetune,)}
    return _finish(cfg, notebook, data, model, processor, ckpt, total_params, phases, world)


def _finish(cfg: Any, notebook: str, data: Any, model: Any, processor: Any, ckpt: Any,
            total_params: int, phases: dict[str, tuple], world: int) -> RunRecord:
    """Choose the phase by validation accuracy, save and record (the main process)."""
    (probe, probe_probs, probe_weights), (finetune,) = phases["linear_probe"], phases["fine_tune"]
    finetune_probs = hf_train.predict_proba(model, processor, data.test.images,
                                tta_flip=cfg.model.tta_flip)
    final = "fine_tune" if finetune.final_val_acc >= probe.final_val_acc else "linear_probe"
    if final == "linear_probe":
        hf_train.restore_weights(model, probe_weights)
    probs = finetune_probs if final == "fine_tune" else probe_probs
    strategies = hf_train.strategy_table(
        [(probe, float((probe_probs.argmax(1) == data.test.labels).mean())),
         (finetune, float((finetune_probs.argmax(1) == data.test.labels).mean()))])
    model_dir = cfg.outputs_dir / "models" / cfg.run_id(notebook)
    info = hf_train.classifier_info(model, processor, cfg.model.input_size, cfg.model.checkpoint,
                                    extra={"strategy": final, "source": ckpt.kind,
                                       "tta_flip": bool(cfg.model.tta_flip)},
                                    source_size=data.image_size)
    hf_train.save_classifier(model_dir, model, info, processor=processor)
    return finish_run(
        cfg, data, notebook=notebook, model=f"{cfg.model.checkpoint} ({final})", probs=probs,
        fit=FitResult.combine(probe, finetune), num_params=total_params, model_path=model_dir,
        val_probs=hf_train.predict_proba(model, processor, data.val.images,
                                      tta_flip=cfg.model.tta_flip),
        extra={"checkpoint": cfg.model.checkpoint, "checkpoint_source": ckpt.kind,
               "input_size": cfg.model.input_size, "final_strategy": final,
               "strategies": strategies, "trained_by": "nbutils.train",
               "frozen_units_fine_tune": finetune.extra["trainable"]["frozen_units"],
               "distributed": {"world_size": world,
                               "trainer_processes": finetune.extra["processes"]}})
