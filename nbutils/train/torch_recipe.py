"""Notebooks 02 and 02b as a script: AlexNet or ResNet with the course's PyTorch loop.

Under ``torchrun`` every process trains its shard of each batch in
DistributedDataParallel (see :func:`nbutils.torch_train.fit`); rank 0 alone predicts,
saves the model and writes the run record, which notes the job's size and a digest of
each process's final weights (they must agree).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import distributed, torch_data, torch_models, torch_resnet, torch_train
from ..data import load_for
from ..inference import ClassifierInfo
from ..records import RunRecord
from ..runs import finish_run

__all__ = ["train", "build"]


def build(cfg: Any, num_classes: int, size: int) -> tuple[Any, nn.Module]:
    """The model config and a freshly initialised network, seeded as the notebook seeds it."""
    family = torch_resnet if cfg.model_name == "resnet" else torch_models
    model_config = family.config_from_settings(cfg.model, num_classes, size)
    torch.manual_seed(cfg.seed)
    return model_config, torch_models.build_model(model_config)


def _augment(settings: Any) -> torch_data.Augment:
    return torch_data.Augment(settings.augment_padding, settings.augment_flip,
                              trivial=bool(settings.get("trivial_augment", False)))


def train(cfg: Any, notebook: str) -> RunRecord | None:
    """Train, evaluate, save and record ``cfg.model_name`` as ``notebook`` does."""
    settings = cfg.model
    device = torch_train.resolve_device(cfg.device)
    job = distributed.init_from_env(device.type)
    if job.active and device.type == "cuda":
        device = torch.device("cuda", job.local_rank)
    threads = settings.num_threads
    if job.active and device.type == "cpu" and threads <= 0:
        threads = distributed.threads_per_process(torch_train.idle_cores(), job.world_size)
    torch_train.set_threads(threads)
    run_id = cfg.run_id(notebook)
    data = load_for(cfg, progress=False)
    size = 224 if settings.get("architecture") == "alexnet224" else data.image_size
    loaders = torch_data.make_loaders(
        data, settings.batch_size, device, mode=settings.get("loader", "auto"),
        augment=_augment(settings), seed=cfg.seed, channels_last=settings.channels_last,
        size=size, num_workers=cfg.data.num_workers, shard=(job.rank, job.world_size))
    model_config, model = build(cfg, data.num_classes, size)
    summary = torch_models.summarize(model, (3, size, size))
    if job.active and settings.sync_batchnorm and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    result = torch_train.fit(
        model, loaders["train"], loaders["val"],
        torch_train.TrainConfig.from_settings(settings, mixed_precision=cfg.mixed_precision,
                                              seed=cfg.seed, num_threads=threads),
        device, checkpoint_dir=cfg.outputs_dir / "checkpoints" / run_id
        if settings.checkpoint else None,
        tensorboard_dir=cfg.outputs_dir / "tensorboard" / run_id)
    digests = distributed.gather_objects(distributed.weights_digest(model))
    if not job.is_main:
        return None
    return _finish(cfg, notebook, data, model, model_config, summary, result, size,
                   {"world_size": job.world_size, "backend": job.backend,
                    "weights_identical": len(set(digests)) == 1, "weight_digests": digests})


def _finish(cfg: Any, notebook: str, data: Any, model: nn.Module, model_config: Any,
            summary: Any, result: Any, size: int, job: dict[str, Any]) -> RunRecord:
    """Test/validation probabilities, the saved model and the run record (rank 0)."""
    settings, device = cfg.model, next(model.parameters()).device
    probs, val_probs = (torch_train.predict_proba(
        model, split.images, data.mean, data.std, batch_size=2 * settings.batch_size,
        device=device, image_size=size, tta_flip=settings.tta_flip)  # fp32, as reloaded
        for split in (data.test, data.val))
    model_dir = cfg.outputs_dir / "models" / cfg.run_id(notebook)
    info = ClassifierInfo(framework="pytorch", model=model_config.name,
                          class_names=list(data.class_names), image_size=size,
                          mean=[float(v) for v in data.mean], std=[float(v) for v in data.std],
                          extra={"tta_flip": bool(settings.tta_flip)},
                          source_size=data.image_size)
    torch_train.save_classifier(model_dir, model, info)
    extra = {"flops_per_image": summary.flops_per_image, "tta_flip": bool(settings.tta_flip),
             "model_config": model_config.to_dict(), "trained_by": "nbutils.train",
             "loader": settings.get("loader", "auto"),
             "distributed": job}
    if cfg.model_name == "resnet":
        extra["lr"] = settings.lr
    return finish_run(cfg, data, notebook=notebook, framework="pytorch", model=model_config.name,
                      probs=probs, fit=result, num_params=summary.total_params,
                      model_path=model_dir, val_probs=val_probs, extra=extra)

