"""``python -m nbutils.bench torch``: the course's PyTorch loop against a textbook one.

Both sides train and run inference on the same model and the same images:

* **course**: the split kept on the device as uint8 (:class:`~nbutils.torch_data.TensorLoader`),
  batched crop/flip augmentation on the device, channels-last memory, mixed precision
  and ``torch.compile`` as the profile says, and the very training step
  :func:`~nbutils.torch_train.fit` runs (:func:`~nbutils.torch_train.make_train_step`).
* **textbook**: a ``DataLoader`` over PIL images with torchvision transforms
  (``RandomCrop(padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``),
  fp32, NCHW, a plain SGD step.

It prints images/s for both, their ratio, FLOPs per image, the achieved FLOP/s as a
share of the machine's measured matrix-multiply FLOP/s, and peak memory. All figures
come from this one run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..torch_train import device_peak_mb, reset_device_peak


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None,
                 repeats: int = 5) -> float:
    """Measured FLOP/s of an n x n matrix product (the machine's practical peak).

    ``n`` defaults to 1024 on the CPU and 8192 on a GPU (large enough to fill it).
    """
    if n is None:
        n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


def _time_steps(step: Callable[[torch.Tensor, torch.Tensor], Any],
                batches: Iterator[tuple[torch.Tensor, torch.Tensor]], warmup: int, steps: int,
                device: torch.device, batch_size: int) -> float:
    """Images per second over ``steps`` calls after ``warmup`` calls (input time included)."""
    for _ in range(warmup):
        step(*next(batches))
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(*next(batches))
    _sync(device)
    return steps * batch_size / (time.perf_counter() - t0)


def _forever(loader: Any) -> Iterator[Any]:
    while True:
        yield from loader


class _PILDataset(torch.utils.data.Dataset):
    """The textbook input pipeline: one PIL image at a time through torchvision transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Any) -> None:
        self.images = np.asarray(images)
        self.labels = np.asarray(labels, np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def _textbook_loader(images: np.ndarray, labels: np.ndarray, mean: Any, std: Any,
                     batch_size: int, train: bool, workers: int, size: int) -> Any:
    from torchvision import transforms as T  # noqa: N812

    ops: list[Any] = []
    if images.shape[1] != size:
        ops.append(T.Resize(size))
    if train:
        ops += [T.RandomCrop(size, padding=4), T.RandomHorizontalFlip()]
    ops += [T.ToTensor(), T.Normalize(list(map(float, mean)), list(map(float, std)))]
    return torch.utils.data.DataLoader(
        _PILDataset(images, labels, T.Compose(ops)), batch_size=batch_size, shuffle=train,
        drop_last=train, num_workers=workers, persistent_workers=workers > 0,
    )


@dataclass
class _Bench:
    """What both loops are measured on: data, model config, settings and device."""

    cfg: Any
    data: Any
    images: np.ndarray
    labels: np.ndarray
    test_images: np.ndarray
    mconf: Any
    tconf: Any
    amp: Any
    device: torch.device
    size: int
    batch_size: int


def _prepare(args: argparse.Namespace) -> tuple[_Bench, str, int]:
    """Resolve the config, load the data; also returns the dataset spec and threads."""
    import nbutils
    from nbutils import torch_models, torch_train
    from nbutils.data import load_for

    probe = nbutils.setup(args.profile, model="alexnet", verbose=False)
    dataset = args.dataset or probe.dataset
    cfg = nbutils.setup(args.profile, model="alexnet", dataset=dataset, verbose=False,
                        batch_size=args.batch_size, architecture=args.architecture,
                        precision=args.precision)
    m = cfg.model
    threads = torch_train.set_threads(args.threads if args.threads is not None else m.num_threads)
    data = load_for(cfg, progress=False)
    keep = slice(0, args.max_images or None)
    images, labels = data.train.images[keep], data.train.labels[keep]
    bs = m.batch_size
    if len(labels) < bs:
        raise SystemExit(f"Only {len(labels)} training images for batch size {bs}: "
                         "lower --batch-size or use a larger dataset.")
    size = 224 if m.architecture == "alexnet224" else data.image_size
    device = torch.device(cfg.device)
    tconf = torch_train.TrainConfig.from_settings(m, mixed_precision=cfg.mixed_precision)
    test_images = np.asarray(data.test.images if len(data.test) >= bs else images[:bs])
    bench = _Bench(cfg, data, images, labels, test_images,
                   torch_models.config_from_settings(m, data.num_classes, size), tconf,
                   torch_train.amp_settings(device, tconf.mixed_precision), device, size, bs)
    return bench, dataset, threads


def _course_loop(b: _Bench, args: argparse.Namespace) -> dict[str, Any]:
    """The course's training step and ``predict_proba``: images/s and peak memory."""
    from nbutils import torch_data, torch_models, torch_train

    m, tconf, device, bs = b.cfg.model, b.tconf, b.device, b.batch_size
    torch.manual_seed(b.cfg.seed)
    model = torch_models.build_model(b.mconf).to(device)
    if tconf.channels_last:
        model.to(memory_format=torch.channels_last)
    loader = torch_data.TensorLoader(
        b.images, b.labels, b.data.mean, b.data.std, bs, device, shuffle=True,
        augment=torch_data.Augment(m.augment_padding, m.augment_flip), drop_last=True,
        channels_last=tconf.channels_last, size=b.size, seed=0)
    opt = torch_train.make_optimizer(model, tconf)
    scaler = torch.amp.GradScaler(device.type, enabled=b.amp.use_scaler)
    step = torch_train.make_train_step(model, opt, None, scaler,
                                       nn.CrossEntropyLoss(label_smoothing=tconf.label_smoothing),
                                       b.amp, tconf.grad_clip, tconf.compile)
    reset_device_peak(device)
    train = _time_steps(step, _forever(loader), args.warmup, args.steps, device, bs)
    train_peak = device_peak_mb(device)
    model.eval()
    n_inf = min(len(b.test_images), bs * args.steps)

    def predict(images: np.ndarray) -> None:
        torch_train.predict_proba(model, images, b.data.mean, b.data.std, bs, device, b.size,
                                  mixed_precision=tconf.mixed_precision,
                                  channels_last=tconf.channels_last)

    predict(b.test_images[:bs])
    reset_device_peak(device)
    t0 = time.perf_counter()
    predict(b.test_images[:n_inf])
    _sync(device)
    return {"train": train, "infer": n_inf / (time.perf_counter() - t0),
            "train_peak": train_peak, "infer_peak": device_peak_mb(device)}


def _textbook_loop(b: _Bench, args: argparse.Namespace) -> dict[str, Any]:
    """A plain DataLoader + fp32 SGD loop, as tutorials write it: images/s and peak memory."""
    from nbutils import torch_models

    device, bs = b.device, b.batch_size
    torch.manual_seed(b.cfg.seed)
    base = torch_models.build_model(b.mconf).to(device)
    opt = torch.optim.SGD(base.parameters(), lr=b.tconf.lr, momentum=b.tconf.momentum,
                          weight_decay=b.tconf.weight_decay)
    criterion = nn.CrossEntropyLoss()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = criterion(base(x.to(device)), y.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()

    workers = args.workers if args.workers is not None else b.cfg.data.num_workers
    loader = _textbook_loader(b.images, b.labels, b.data.mean, b.data.std, bs, True, workers,
                              b.size)
    reset_device_peak(device)
    train = _time_steps(step, _forever(loader), args.warmup, args.steps, device, bs)
    train_peak = device_peak_mb(device)
    base.eval()
    n_inf = min(len(b.test_images), bs * args.steps)
    test = _textbook_loader(b.test_images[:n_inf], np.zeros(n_inf, np.int64), b.data.mean,
                            b.data.std, bs, False, workers, b.size)
    with torch.no_grad():
        for x, _ in test:           # warm-up pass (workers start, kernels chosen)
            base(x.to(device))
            break
        reset_device_peak(device)
        _sync(device)
        t0 = time.perf_counter()
        for x, _ in test:
            base(x.to(device)).softmax(1).cpu()
        _sync(device)
    return {"train": train, "infer": n_inf / (time.perf_counter() - t0),
            "train_peak": train_peak, "infer_peak": device_peak_mb(device)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure both pipelines; return the figures (also printed by :func:`main`)."""
    from nbutils import torch_models
    from nbutils.fitting import load_average
    from nbutils.hardware import peak_rss_mb

    b, dataset, threads = _prepare(args)
    flops = torch_models.summarize(torch_models.build_model(b.mconf),
                                   (3, b.size, b.size)).flops_per_image
    peak32 = matmul_flops(b.device, torch.float32)
    peak = matmul_flops(b.device, b.amp.dtype) if b.amp.enabled else peak32
    load = load_average()
    course, book = _course_loop(b, args), _textbook_loop(b, args)
    return {
        "device": str(b.device), "hardware": b.cfg.hardware.describe(), "threads": threads,
        "profile": b.cfg.profile, "dataset": dataset, "model": b.mconf.name,
        "image_size": b.size, "batch_size": b.batch_size, "amp": b.amp.label,
        "compile": b.tconf.compile, "flops_per_image": flops, "matmul_flops": peak,
        "matmul_flops_fp32": peak32, "load_average": load,
        "course_train_ips": course["train"], "textbook_train_ips": book["train"],
        "train_ratio": course["train"] / book["train"],
        "course_infer_ips": course["infer"], "textbook_infer_ips": book["infer"],
        "infer_ratio": course["infer"] / book["infer"],
        "course_train_flops": 3.0 * flops * course["train"],
        "textbook_train_flops": 3.0 * flops * book["train"],
        "course_infer_flops": flops * course["infer"],
        "course_train_util": 3.0 * flops * course["train"] / peak,
        "textbook_train_util": 3.0 * flops * book["train"] / peak32,
        "course_infer_util": flops * course["infer"] / peak,
        "peak_device_mb": {"course_train": course["train_peak"],
                           "course_infer": course["infer_peak"],
                           "textbook_train": book["train_peak"],
                           "textbook_infer": book["infer_peak"]},
        "peak_host_rss_mb": peak_rss_mb(),
    }


def format_results(r: dict[str, Any]) -> str:
    """The figures as a small text report."""
    def mb(v: float | None) -> str:
        return "n/a (CPU)" if v is None else f"{v:,.0f} MiB"

    peaks = r["peak_device_mb"]
    lines = [
        f"device      : {r['device']} [{r['hardware']}], {r['threads']} threads, "
        f"load average {r['load_average']:.2f}" if r["load_average"] is not None else
        f"device      : {r['device']} [{r['hardware']}], {r['threads']} threads",
        f"profile     : {r['profile']}   dataset: {r['dataset']}",
        f"model       : {r['model']} at {r['image_size']} px, batch {r['batch_size']}, "
        f"amp {r['amp']}, compile {r['compile']}",
        f"FLOPs/image : {r['flops_per_image'] / 1e6:,.1f} MFLOP forward "
        f"(training step ~3x = {3 * r['flops_per_image'] / 1e6:,.1f} MFLOP)",
        f"matmul peak : {r['matmul_flops'] / 1e9:,.1f} GFLOP/s measured in the course's precision"
        + ("" if r["amp"] == "off" else f", {r['matmul_flops_fp32'] / 1e9:,.1f} GFLOP/s in fp32 "
           "(the textbook's reference)"),
        "",
        f"{'':<10}{'train img/s':>14}{'infer img/s':>14}{'train GFLOP/s':>16}{'of peak':>9}"
        f"{'peak mem (train)':>20}",
        f"{'course':<10}{r['course_train_ips']:>14,.0f}{r['course_infer_ips']:>14,.0f}"
        f"{r['course_train_flops'] / 1e9:>16,.1f}{r['course_train_util']:>9.1%}"
        f"{mb(peaks['course_train']):>20}",
        f"{'textbook':<10}{r['textbook_train_ips']:>14,.0f}{r['textbook_infer_ips']:>14,.0f}"
        f"{r['textbook_train_flops'] / 1e9:>16,.1f}{r['textbook_train_util']:>9.1%}"
        f"{mb(peaks['textbook_train']):>20}",
        f"{'ratio':<10}{r['train_ratio']:>13.2f}x{r['infer_ratio']:>13.2f}x",
        "",
        f"course inference: {r['course_infer_flops'] / 1e9:,.1f} GFLOP/s "
        f"({r['course_infer_util']:.1%} of peak), peak memory {mb(peaks['course_infer'])}; "
        f"host peak RSS {r['peak_host_rss_mb']:,.0f} MiB",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m nbutils.bench torch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="auto", help="config profile (default: auto)")
    p.add_argument("--dataset", default=None,
                   help="dataset spec (default: the profile's)")
    p.add_argument("--architecture", default=None, choices=("small", "alexnet224"))
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--precision", default=None, choices=("auto", "fp32", "bf16", "fp16"),
                   help="the course loop's precision (default: the profile's; the textbook "
                        "loop is always fp32)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per pipeline")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--workers", type=int, default=None,
                   help="textbook DataLoader workers (default: the profile's num_workers)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: the profile's num_threads; 0 = every core)")
    p.add_argument("--max-images", type=int, default=0, help="use only this many training images")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    """Entry point of ``python -m nbutils.bench torch``."""
    args = parse_args(argv)
    results = run(args)
    print(format_results(results))
    if args.json is not None:
        import json

        from ..paths import atomic_write_text

        atomic_write_text(args.json, json.dumps(results, indent=2, default=str) + "\n")
    return 0
