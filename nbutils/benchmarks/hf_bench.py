"""``python -m nbutils.bench hf``: training and inference throughput of notebook 04's model.

For the profile's checkpoint (or ``--checkpoint``) at its image size this measures,
in one run and on random images:

* the image processor alone (uint8 images -> ``pixel_values``), images/s;
* inference (forward pass, no gradients), images/s;
* training steps (forward, backward, AdamW step) for the linear probe and for
  fine-tuning with the profile's ``freeze_fraction``, images/s, with the profile's
  precision and gradient checkpointing; on a GPU also the peak memory of each;
* end-to-end ``predict_proba`` (processor + model), images/s;

and prints the ratios between them. Timings on a shared machine depend on its load,
which is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import time
from contextlib import nullcontext
from typing import Any

import numpy as np

from .. import hf_offline  # noqa: F401  (environment first)

__all__ = ["main", "measure"]


def _load() -> str:
    try:
        return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:  # pragma: no cover - not on Linux/macOS
        return "load average unknown"


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _autocast(device: str, precision: str) -> Any:
    import torch

    if precision in ("fp32", "auto") or device not in ("cuda", "cpu"):
        return nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device, dtype=dtype)


def _train_rate(model: Any, pixels: Any, labels: Any, device: str, precision: str, steps: int,
                warmup: int) -> tuple[float, float | None]:
    """Images/s of full training steps, and peak GPU memory (MiB) on CUDA."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    scaler = torch.amp.GradScaler("cuda") if device == "cuda" and precision == "fp16" else None
    model.train()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        with _autocast(device, precision):
            loss = model(pixel_values=pixels, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
    _sync(device)
    rate = steps * len(labels) / (time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return rate, peak


def _infer_rate(model: Any, pixels: Any, device: str, precision: str, steps: int,
                warmup: int) -> float:
    import torch

    model.eval()
    with torch.inference_mode(), _autocast(device, precision):
        for i in range(warmup + steps):
            if i == warmup:
                _sync(device)
                start = time.perf_counter()
            model(pixel_values=pixels)
    _sync(device)
    return steps * len(pixels) / (time.perf_counter() - start)


def measure(checkpoint: str, image_size: int, batch_size: int, device: str = "cpu",
            precision: str = "fp32", gradient_checkpointing: bool = False,
            freeze_fraction: float = 0.0, steps: int = 5, warmup: int = 1,
            num_classes: int = 10, threads: int | None = None, channels_last: bool = False,
            seed: int = 0) -> dict[str, Any]:
    """Run every measurement once and return the figures (images/s, MiB)."""
    import torch

    from .. import hf_data, hf_train

    if threads and device == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    resolved = hf_offline.resolve_checkpoint(checkpoint, verbose=False)
    names = [f"class_{i}" for i in range(num_classes)]
    model, processor = hf_train.load_pretrained(resolved.source, names, image_size)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if gradient_checkpointing and getattr(model, "supports_gradient_checkpointing", False):
        model.gradient_checkpointing_enable()
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8)
    pil = hf_data.to_pil(images)

    start = time.perf_counter()
    reps = max(1, steps)
    for _ in range(reps):
        pixels = processor(images=pil, return_tensors="pt")["pixel_values"]
    processor_rate = reps * batch_size / (time.perf_counter() - start)
    pixels = pixels.to(device)
    labels = torch.as_tensor(rng.integers(0, num_classes, batch_size), device=device)

    out: dict[str, Any] = {"checkpoint": checkpoint, "source": resolved.kind,
                           "model": type(model).__name__, "image_size": int(pixels.shape[-1]),
                           "batch_size": batch_size, "device": device, "precision": precision,
                           "gradient_checkpointing": gradient_checkpointing,
                           "channels_last": channels_last,
                           "threads": torch.get_num_threads(), "processor_ips": processor_rate}
    out["inference_ips"] = _infer_rate(model, pixels, device, precision, steps, warmup)
    for strategy, fraction in (("linear_probe", 1.0), ("fine_tune", freeze_fraction)):
        info = hf_train.set_trainable(model, strategy, fraction)
        rate, peak = _train_rate(model, pixels, labels, device, precision, steps, warmup)
        out[f"train_{strategy}_ips"] = rate
        out[f"train_{strategy}_trainable"] = info["trainable_params"]
        out[f"train_{strategy}_peak_mib"] = peak
    out["freeze_fraction"] = freeze_fraction
    start = time.perf_counter()
    hf_train.predict_proba(model, processor, np.concatenate([images] * 2), batch_size=batch_size)
    out["predict_proba_ips"] = 2 * batch_size / (time.perf_counter() - start)
    return out


def _report(r: dict[str, Any]) -> str:
    lines = [
        f"model        : {r['model']} from {r['checkpoint']} ({r['source']}), "
        f"{r['image_size']}x{r['image_size']}, batch {r['batch_size']}, {r['device']}, "
        f"{r['precision']}, {r['threads']} thread(s), gradient checkpointing "
        f"{'on' if r['gradient_checkpointing'] else 'off'}, channels_last "
        f"{'on' if r['channels_last'] else 'off'}",
        f"processor    : {r['processor_ips']:9.1f} images/s (uint8 -> pixel_values)",
        f"inference    : {r['inference_ips']:9.1f} images/s (forward only)",
    ]
    for strategy in ("linear_probe", "fine_tune"):
        extra = ""
        if strategy == "fine_tune":
            extra = f", freeze_fraction {r['freeze_fraction']}"
        peak = r[f"train_{strategy}_peak_mib"]
        mem = f", peak {peak:,.0f} MiB" if peak is not None else ", GPU memory not measured (CPU)"
        lines.append(f"train {strategy:<12}: {r[f'train_{strategy}_ips']:7.1f} images/s "
                     f"({r[f'train_{strategy}_trainable']:,} trainable{extra}{mem})")
    lines += [
        f"predict_proba: {r['predict_proba_ips']:9.1f} images/s (processor + model)",
        "ratios       : inference / fine-tune training "
        f"{r['inference_ips'] / r['train_fine_tune_ips']:.2f}x, linear probe / fine-tune "
        f"training {r['train_linear_probe_ips'] / r['train_fine_tune_ips']:.2f}x, "
        f"processor share of predict_proba {r['predict_proba_ips'] / r['processor_ips']:.0%}",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Command line entry point: ``python -m nbutils.bench hf --help``."""
    parser = argparse.ArgumentParser(prog="python -m nbutils.bench hf", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="auto", help="profile whose hf_transfer settings to use")
    parser.add_argument("--checkpoint", help="override the profile's checkpoint")
    parser.add_argument("--image-size", type=int, help="override the profile's image_size")
    parser.add_argument("--batch-size", type=int, help="override the profile's batch_size")
    parser.add_argument("--freeze-fraction", type=float, help="override freeze_fraction")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--threads", type=int, help="PyTorch CPU threads")
    parser.add_argument("--channels-last", choices=("on", "off"),
                        help="override the profile's channels_last")
    args = parser.parse_args(argv)

    import torch

    import nbutils

    cfg = nbutils.setup(args.profile, model="hf_transfer", verbose=False,
                        checkpoint=args.checkpoint, input_size=args.image_size,
                        batch_size=args.batch_size, freeze_fraction=args.freeze_fraction,
                        channels_last=None if args.channels_last is None
                        else args.channels_last == "on")
    m = cfg.model
    device = cfg.device
    precision = cfg.precision
    if precision == "mixed":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    print(f"profile {cfg.profile} · {cfg.hardware.describe()} · {_load()}")
    result = measure(m.checkpoint, m.input_size, m.batch_size, device=device, precision=precision,
                     gradient_checkpointing=m.gradient_checkpointing,
                     freeze_fraction=m.freeze_fraction, steps=args.steps, warmup=args.warmup,
                     threads=args.threads, channels_last=m.channels_last)
    print(_report(result))
    print(f"after: {_load()}")
    return 0
