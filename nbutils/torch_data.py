"""PyTorch adapter of :class:`~nbutils.data.ImageData`: batches on the device, augmented there.

Two ways to feed a model, one interface (iterables of ``(x, y)`` on the device, ``x``
normalised float NCHW in channels-last memory, ``y`` int64):

* :class:`TensorLoader` keeps a whole split on the device as one uint8 tensor and
  cuts batches out of it. Augmentation (random crop with zero padding and horizontal
  flip) is a single batched gather: no per-image Python work, so the GPU never waits.
* :class:`DeviceLoader` wraps a ``torch.utils.data.DataLoader`` with worker processes
  for splits that do not fit; the workers only read uint8 images, and the same batched
  augmentation runs on the device after the copy.

:func:`make_loaders` picks between them (``mode="auto"``) from the size of the data and
the memory of the device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from .data.core import ImageData, Split

__all__ = [
    "Augment",
    "augment_batch",
    "to_model_input",
    "TensorLoader",
    "UInt8Dataset",
    "DeviceLoader",
    "make_loaders",
    "fits_on_device",
    "choose_loader_mode",
]

LOADER_MODES = ("auto", "tensor", "dataloader")


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation: random crop after zero padding, random horizontal flip,
    and optionally TrivialAugment (:func:`nbutils.torch_augment.trivial_augment`)."""

    padding: int = 4
    flip: bool = True
    trivial: bool = False

    @property
    def active(self) -> bool:
        """Whether this augmentation changes anything."""
        return self.padding > 0 or self.flip or self.trivial


def augment_batch(images: torch.Tensor, aug: Augment,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomly crop (with zero padding) and flip a uint8 NHWC batch in one gather.

    Every image gets its own offsets and flip, drawn on the batch's device; the crop and
    the flip are folded into one advanced-indexing gather, so the cost is one pass over
    the batch whatever its size.

    Args:
        images: uint8 (or float) tensor (B, H, W, C).
        aug: the augmentation settings.
        generator: random generator living on ``images.device`` (for reproducibility).

    Returns:
        A new (B, H, W, C) tensor of the same dtype and device.
    """
    if images.ndim != 4:
        raise ValueError(f"augment_batch expects (B, H, W, C) images, got shape {tuple(images.shape)}")
    if not aug.active:
        return images
    if aug.trivial:
        from .torch_augment import trivial_augment

        images = trivial_augment(images, generator)
        if not (aug.padding > 0 or aug.flip):
            return images
    b, h, w, _ = images.shape
    dev = images.device
    p = int(aug.padding)
    padded = F.pad(images, (0, 0, p, p, p, p)) if p > 0 else images
    if p > 0:
        oy = torch.randint(0, 2 * p + 1, (b,), device=dev, generator=generator)
        ox = torch.randint(0, 2 * p + 1, (b,), device=dev, generator=generator)
    else:
        oy = ox = torch.zeros(b, dtype=torch.long, device=dev)
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = oy[:, None] + ar_h[None, :]                               # (B, H)
    cols = ox[:, None] + ar_w[None, :]                               # (B, W)
    if aug.flip:
        flip = torch.rand(b, device=dev, generator=generator) < 0.5
        cols = torch.where(flip[:, None], ox[:, None] + (w - 1 - ar_w)[None, :], cols)
    batch_idx = torch.arange(b, device=dev)[:, None, None]
    return padded[batch_idx, rows[:, :, None], cols[:, None, :]]


def to_model_input(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                   channels_last: bool = True, size: int | None = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 NHWC batch -> normalised float NCHW (channels-last memory unless told not to).

    Args:
        images: uint8 (B, H, W, 3) tensor on the target device.
        mean, std: (3,) tensors in [0, 1] units on the same device.
        channels_last: keep NHWC memory (the layout fast convolution kernels prefer).
        size: resize to ``size`` x ``size`` (bilinear) when it differs from the input.
        dtype: floating dtype of the result.
    """
    x = images.permute(0, 3, 1, 2).to(dtype)        # NCHW view of NHWC memory = channels_last
    scale = (std.to(dtype) * 255.0).view(1, -1, 1, 1)
    shift = (mean.to(dtype) * 255.0).view(1, -1, 1, 1)
    x = (x - shift) / scale
    if size is not None and (x.shape[-2] != size or x.shape[-1] != size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > size)
    if channels_last:
        return x.contiguous(memory_format=torch.channels_last)
    return x.contiguous()


def _stats(data: ImageData, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.as_tensor(np.asarray(data.mean, np.float32), device=device)
    std = torch.as_tensor(np.asarray(data.std, np.float32), device=device)
    return mean, std


def _generator(device: torch.device, seed: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


class _BaseLoader:
    """What both loaders share: normalisation, augmentation, a seeded generator."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, device: torch.device,
                 augment: Augment | None, seed: int, channels_last: bool,
                 size: int | None) -> None:
        self.device = torch.device(device)
        self.mean, self.std = mean.to(self.device), std.to(self.device)
        self.augment = augment if augment is not None and augment.active else None
        self.channels_last = channels_last
        self.size = size
        self.generator = _generator(self.device, seed)

    def _prepare(self, images_u8: torch.Tensor) -> torch.Tensor:
        if self.augment is not None:
            images_u8 = augment_batch(images_u8, self.augment, self.generator)
        return to_model_input(images_u8, self.mean, self.std, self.channels_last, self.size)

    def state_dict(self) -> dict[str, Any]:
        """Random state, so a resumed run draws the same batches as an uninterrupted one."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.generator.set_state(state["generator"].cpu() if hasattr(state["generator"], "cpu")
                                 else state["generator"])


class TensorLoader(_BaseLoader):
    """A split held on the device as uint8; batches are sliced and augmented there.

    Args:
        images: uint8 (N, H, W, 3) array (numpy or memmap).
        labels: int (N,) labels.
        mean, std: per-channel statistics in [0, 1] units.
        batch_size: images per batch.
        device: where the tensors live and the batches are made.
        shuffle: reshuffle every epoch (with this loader's own seeded generator).
        augment: training augmentation, or ``None``.
        drop_last: skip a last, smaller batch (keeps BatchNorm statistics sane).
        seed: seed of the loader's generator.
        channels_last: produce channels-last batches.
        size: resize batches to this side length (e.g. 224 for the original AlexNet).
        shard: ``(rank, world_size)`` under several processes: every process draws the
            same order of the whole split, and each takes its share of every batch
            (``batch_size`` stays the batch of all processes together, so the
            learning rate and schedule mean what they mean on one process).
    """

    kind = "tensor"

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: Any, std: Any,
                 batch_size: int, device: str | torch.device = "cpu", shuffle: bool = False,
                 augment: Augment | None = None, drop_last: bool = False, seed: int = 0,
                 channels_last: bool = True, size: int | None = None,
                 shard: tuple[int, int] = (0, 1)) -> None:
        device = torch.device(device)
        super().__init__(torch.as_tensor(np.asarray(mean, np.float32)),
                         torch.as_tensor(np.asarray(std, np.float32)), device, augment, seed,
                         channels_last, size)
        self.rank, self.world_size = _check_shard(shard, batch_size)
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = torch.from_numpy(np.array(images, dtype=np.uint8)).to(device)  # a copy
        self.labels = torch.from_numpy(np.array(labels, dtype=np.int64)).to(device)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last and len(self.labels) > self.batch_size

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def num_images(self) -> int:
        """Images per epoch (before ``drop_last``)."""
        return len(self.labels)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = (torch.randperm(n, device=self.device, generator=self.generator)
                 if self.shuffle else None)
        for i in range(len(self)):
            sl = slice(i * self.batch_size, min(n, (i + 1) * self.batch_size))
            if order is None:
                x, y = self.images[sl], self.labels[sl]
            else:
                idx = order[sl][self.rank::self.world_size]
                x, y = self.images[idx], self.labels[idx]
            yield self._prepare(x), y


def _check_shard(shard: tuple[int, int], batch_size: int) -> tuple[int, int]:
    rank, world = int(shard[0]), int(shard[1])
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard}")
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} does not split evenly over {world} processes: "
                         f"use a multiple of {world}")
    return rank, world


class UInt8Dataset(torch.utils.data.Dataset):
    """Map-style dataset of uint8 HWC images; reopens memory-mapped files inside workers."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self._filename = getattr(images, "filename", None)
        self._shape = images.shape
        # a memmap is reopened lazily in each worker instead of being pickled whole
        self._images: np.ndarray | None = None if self._filename else images
        self.labels = np.asarray(labels, dtype=np.int64)

    def _array(self) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self._filename, mmap_mode="r")
        return self._images

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(np.array(self._array()[index], dtype=np.uint8)), int(self.labels[index])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self._filename:
            state["_images"] = None
        return state


class DeviceLoader(_BaseLoader):
    """A ``DataLoader`` with workers reading uint8 images; augmentation runs on the device.

    Same arguments as :class:`TensorLoader`, plus ``num_workers``.
    """

    kind = "dataloader"

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: Any, std: Any,
                 batch_size: int, device: str | torch.device = "cpu", shuffle: bool = False,
                 augment: Augment | None = None, drop_last: bool = False, seed: int = 0,
                 channels_last: bool = True, size: int | None = None,
                 num_workers: int = 2, shard: tuple[int, int] = (0, 1)) -> None:
        device = torch.device(device)
        super().__init__(torch.as_tensor(np.asarray(mean, np.float32)),
                         torch.as_tensor(np.asarray(std, np.float32)), device, augment, seed,
                         channels_last, size)
        self.dataset = UInt8Dataset(images, labels)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        rank, world = _check_shard(shard, self.batch_size)
        self.sampler_generator = _generator(torch.device("cpu"), seed + 1)
        self.sampler = None if world == 1 else torch.utils.data.distributed.DistributedSampler(
            self.dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed + 1,
            drop_last=drop_last)
        self.epoch = 0
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=self.batch_size // world,
            shuffle=shuffle and self.sampler is None, sampler=self.sampler,
            drop_last=drop_last and len(self.dataset) > self.batch_size,
            num_workers=num_workers, pin_memory=device.type == "cuda",
            persistent_workers=num_workers > 0,
            generator=self.sampler_generator if self.sampler is None else None,
        )

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def num_images(self) -> int:
        """Images per epoch (before ``drop_last``)."""
        return len(self.dataset)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        non_blocking = self.device.type == "cuda"
        if self.sampler is not None:  # a new shuffle of the shards every epoch
            self.sampler.set_epoch(self.epoch)
            self.epoch += 1
        for x, y in self.loader:
            x = x.to(self.device, non_blocking=non_blocking)
            y = y.to(self.device, non_blocking=non_blocking)
            yield self._prepare(x), y

    def state_dict(self) -> dict[str, Any]:
        """Random state of the augmentation and of the shuffling."""
        return {**super().state_dict(), "sampler": self.sampler_generator.get_state(),
                "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        super().load_state_dict(state)
        if "sampler" in state:
            self.sampler_generator.set_state(state["sampler"])
        self.epoch = int(state.get("epoch", 0))


def _available_memory(device: torch.device) -> float:
    """Free bytes on a CUDA device, or available host RAM for the CPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return float(free)
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    return 4.0 * 2 ** 30


def fits_on_device(nbytes: int, device: str | torch.device, fraction: float = 0.25) -> bool:
    """Whether ``nbytes`` of uint8 images fit in ``fraction`` of the device's free memory."""
    return nbytes <= fraction * _available_memory(torch.device(device))


def choose_loader_mode(data: ImageData, device: str | torch.device, mode: str = "auto") -> str:
    """``tensor`` when the three splits fit on the device, else ``dataloader``."""
    if mode not in LOADER_MODES:
        raise ValueError(f"loader mode must be one of {LOADER_MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    nbytes = sum(int(np.prod(s.images.shape)) for s in data.splits.values())
    return "tensor" if fits_on_device(nbytes, device) else "dataloader"


def make_loaders(
    data: ImageData,
    batch_size: int,
    device: str | torch.device = "cpu",
    *,
    mode: str = "auto",
    augment: Augment | None = Augment(),
    seed: int = 0,
    channels_last: bool = True,
    size: int | None = None,
    num_workers: int = 2,
    eval_batch_size: int | None = None,
    splits: tuple[str, ...] = ("train", "val", "test"),
    shard: tuple[int, int] = (0, 1),
) -> dict[str, TensorLoader | DeviceLoader]:
    """Loaders for the splits of ``data``: the training one shuffled and augmented.

    Args:
        data: the dataset.
        batch_size: training batch size.
        device: where batches are produced.
        mode: ``auto`` (tensor loader when the data fit, else DataLoader), ``tensor`` or
            ``dataloader``.
        augment: training augmentation (``None`` for none).
        seed: seed of the loaders' generators.
        channels_last: produce channels-last batches.
        size: resize batches to this side (``None``: keep ``data.image_size``).
        num_workers: DataLoader workers (``dataloader`` mode).
        eval_batch_size: batch size of val/test loaders (default: 2 x batch_size).
        splits: which splits to build.
        shard: ``(rank, world_size)`` of this process under several processes: the
            training split is shared out (see :class:`TensorLoader`); every process
            evaluates the whole validation and test splits.
    """
    device = torch.device(device)
    chosen = choose_loader_mode(data, device, mode)
    eval_bs = eval_batch_size or 2 * batch_size
    loaders: dict[str, TensorLoader | DeviceLoader] = {}
    for offset, name in enumerate(splits):
        split: Split = data.splits[name]
        train = name == "train"
        kwargs: dict[str, Any] = dict(
            batch_size=batch_size if train else eval_bs, device=device, shuffle=train,
            augment=augment if train else None, drop_last=train, seed=seed + 10 * offset,
            channels_last=channels_last, size=size, shard=shard if train else (0, 1),
        )
        if chosen == "tensor":
            loaders[name] = TensorLoader(split.images, split.labels, data.mean, data.std, **kwargs)
        else:
            loaders[name] = DeviceLoader(split.images, split.labels, data.mean, data.std,
                                         num_workers=num_workers, **kwargs)
    return loaders
