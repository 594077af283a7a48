"""A learning-rate range test (Smith, 2017; fastai's ``lr_find``) for PyTorch models.

Train for a few hundred steps while the learning rate grows exponentially from tiny to
huge, and record the (smoothed) loss. The loss first stays flat (the rate is too small
to matter), then falls (useful rates), then explodes (too large). A good rate to train
with lies on the falling part, well before the minimum: where the loss falls fastest,
or about a tenth of the rate at the minimum. The model's weights are restored after.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from itertools import cycle
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["LRFinderResult", "lr_find"]


@dataclass
class LRFinderResult:
    """What the range test saw: learning rates and smoothed losses, and the suggestions."""

    lrs: np.ndarray
    losses: np.ndarray          # exponentially smoothed, bias-corrected
    steepest: float             # rate where the smoothed loss falls fastest
    min_over_10: float          # a tenth of the rate at the smallest loss
    diverged: bool              # stopped early because the loss exploded

    @property
    def suggestion(self) -> float:
        """The rate to train with: the steepest descent, unless it sits past the minimum."""
        return self.steepest if self.steepest <= 10 * self.min_over_10 else self.min_over_10

    def plot(self, ax: Any = None) -> Any:
        """Loss against learning rate (log axis) with both suggestions marked."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5.5, 3.5))
        ax.plot(self.lrs, self.losses, lw=1.5)
        ax.set_xscale("log")
        ax.axvline(self.steepest, color="tab:green", ls="--",
                   label=f"steepest descent {self.steepest:.2g}")
        ax.axvline(self.min_over_10, color="tab:orange", ls=":",
                   label=f"minimum / 10 {self.min_over_10:.2g}")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss (smoothed)")
        ax.legend(fontsize=8)
        return ax


def _optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float
               ) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=momentum > 0,
                           weight_decay=weight_decay)


def lr_find(model: nn.Module, loader: Any, *, start_lr: float = 1e-5, end_lr: float = 3.0,
            num_steps: int = 100, momentum: float = 0.9, weight_decay: float = 5e-4,
            beta: float = 0.9, diverge: float = 4.0, criterion: nn.Module | None = None,
            autocast_dtype: torch.dtype | None = None) -> LRFinderResult:
    """Run the range test on batches of ``loader`` (cycled) and restore ``model`` after.

    The loader's random state (shuffling, augmentation) is put back too, so the training
    that follows draws the same batches as it would without the test.

    Args:
        model: the network, already on the loader's device.
        loader: an iterable of ``(x, y)`` training batches.
        start_lr, end_lr: the range, covered exponentially in ``num_steps`` steps.
        momentum, weight_decay: of the SGD optimiser the test uses.
        beta: smoothing of the recorded loss (exponential moving average).
        diverge: stop once the smoothed loss exceeds this multiple of its minimum.
        criterion: the loss (cross-entropy by default).
        autocast_dtype: run the forward pass under autocast with this dtype (as the
            training will, e.g. ``torch.bfloat16``); ``None`` keeps fp32.
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    criterion = criterion or nn.CrossEntropyLoss()
    saved = copy.deepcopy(model.state_dict())
    loader_state = loader.state_dict() if hasattr(loader, "state_dict") else None
    was_training = model.training
    factor = (end_lr / start_lr) ** (1.0 / max(1, num_steps - 1))
    optimizer = _optimizer(model, start_lr, momentum, weight_decay)
    lrs, losses, avg, best, diverged = [], [], 0.0, math.inf, False
    model.train()
    try:
        for i, (x, y) in zip(range(num_steps), cycle(loader), strict=False):
            lr = start_lr * factor ** i
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(x.device.type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None):
                loss = criterion(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            avg = beta * avg + (1 - beta) * float(loss.detach())
            smoothed = avg / (1 - beta ** (i + 1))
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            if not math.isfinite(smoothed) or (i > 5 and smoothed > diverge * best):
                diverged = True
                break
    finally:
        model.load_state_dict(saved)
        model.train(was_training)
        if loader_state is not None:
            loader.load_state_dict(loader_state)
    return _suggest(np.asarray(lrs), np.asarray(losses), diverged)


def _suggest(lrs: np.ndarray, losses: np.ndarray, diverged: bool) -> LRFinderResult:
    if len(lrs) < 3:
        raise ValueError("the range test needs at least 3 steps; raise num_steps or lower "
                         "start_lr (the loss diverged at once)")
    finite = np.isfinite(losses)
    lrs, losses = lrs[finite], losses[finite]
    i_min = int(np.argmin(losses))
    slopes = np.gradient(losses, np.log(lrs))
    i_steep = int(np.argmin(slopes[: max(1, i_min)]))  # on the way down to the minimum
    return LRFinderResult(lrs=lrs, losses=losses, steepest=float(lrs[i_steep]),
                          min_over_10=float(lrs[i_min] / 10), diverged=diverged)
