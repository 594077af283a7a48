"""What every framework's ``fit`` returns, and the clock it is measured with.

``torch_train.fit``, ``keras_train.fit`` and ``hf_train.fit`` all return a
:class:`FitResult` with the same fields, and ``finish_run(..., fit=result)`` takes
the timing, threads and memory for the run record from it, so no notebook
assembles bookkeeping by hand. This module imports no framework.
"""

from __future__ import annotations

import math
import os
import resource
import time
from dataclasses import dataclass, field
from typing import Any

from .hardware import peak_rss_mb

__all__ = ["FitResult", "Stopwatch", "cpu_seconds", "load_average"]


def cpu_seconds() -> float:
    """CPU seconds this process has used so far (all threads, user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_average() -> float | None:
    """The machine's 1-minute load average, or ``None`` where the platform has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


class Stopwatch:
    """Wall-clock and CPU seconds of a block, and the load average before and after.

    ``with Stopwatch() as clock: ...`` then ``clock.seconds``, ``clock.cpu_seconds``,
    ``clock.load``.
    """

    def __enter__(self) -> Stopwatch:
        self.load = [load_average()]
        self._wall, self._cpu = time.perf_counter(), cpu_seconds()
        self.seconds = self.cpu_seconds = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._wall
        self.cpu_seconds = cpu_seconds() - self._cpu
        self.load.append(load_average())


@dataclass
class FitResult:
    """One training run, the same fields for every framework.

    Attributes:
        history: one dict per epoch (``epoch, train_loss, train_acc, val_loss, val_acc,
            lr, seconds``, plus what a framework adds).
        train_seconds: wall-clock seconds of training (validation included).
        cpu_seconds: CPU seconds of this process while training (all threads); it
            depends much less on other work sharing the machine.
        best_epoch: the epoch with the best validation accuracy (1-based; 0 if none).
        host_peak_mb: the process's peak resident memory after training, in MiB.
        device_peak_mb: peak accelerator memory while training (``None`` without one).
        threads: CPU threads used (one entry per epoch where that can change).
        load_average: the machine's 1-minute load before and after training.
        extra: what only one framework knows (mixed precision, strategy, ...).
    """

    history: list[dict[str, Any]]
    train_seconds: float
    cpu_seconds: float = 0.0
    best_epoch: int = 0
    host_peak_mb: float = field(default_factory=peak_rss_mb)
    device_peak_mb: float | None = None
    threads: list[int] = field(default_factory=list)
    load_average: list[float | None] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        """Epochs trained."""
        return len(self.history)

    @property
    def final_val_acc(self) -> float:
        """Validation accuracy after the last epoch (NaN without validation)."""
        return float(self.history[-1].get("val_acc", math.nan)) if self.history else math.nan

    @property
    def best_val_acc(self) -> float:
        """The best validation accuracy of any epoch (NaN without validation)."""
        values = [h["val_acc"] for h in self.history if not math.isnan(h.get("val_acc", math.nan))]
        return float(max(values)) if values else math.nan

    def record_extra(self) -> dict[str, Any]:
        """What ``finish_run`` stores in the run record's ``extra`` for this fit."""
        out: dict[str, Any] = {"best_epoch": self.best_epoch,
                               "train_cpu_seconds": round(self.cpu_seconds, 1)}
        if self.threads:
            out["threads"] = list(self.threads)
        if self.load_average:
            out["load_average"] = list(self.load_average)
        return {**out, **self.extra}

    def summary(self) -> str:
        """One line: epochs, validation accuracy, wall and CPU seconds."""
        return (f"{self.epochs} epoch(s), final val acc {self.final_val_acc:.3f} "
                f"(best {self.best_val_acc:.3f} at epoch {self.best_epoch}), "
                f"{self.train_seconds:.1f} s (CPU time {self.cpu_seconds:.0f} s)")

    @classmethod
    def combine(cls, *parts: FitResult) -> FitResult:
        """Consecutive phases of one run (a linear probe, then fine-tuning) as one result.

        Histories are concatenated, times added, peaks maximised; each part's ``extra``
        is kept under ``phases``.
        """
        history = [dict(h) for p in parts for h in p.history]
        vals = [h.get("val_acc", -math.inf) for h in history]
        best = int(max(range(len(vals)), key=vals.__getitem__)) + 1 if history else 0
        devices = [p.device_peak_mb for p in parts if p.device_peak_mb is not None]
        return cls(history=history, train_seconds=sum(p.train_seconds for p in parts),
                   cpu_seconds=sum(p.cpu_seconds for p in parts), best_epoch=best,
                   host_peak_mb=max(p.host_peak_mb for p in parts),
                   device_peak_mb=max(devices) if devices else None,
                   threads=[t for p in parts for t in p.threads],
                   load_average=[parts[0].load_average[0] if parts[0].load_average else None,
                                 parts[-1].load_average[-1] if parts[-1].load_average else None],
                   extra={"phases": [p.extra for p in parts]})
