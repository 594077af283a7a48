"""Figures shared by the notebooks: image grids, curves, confusion matrices, calibration."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from .paths import atomic_write

__all__ = [
    "image_grid",
    "plot_samples_per_class",
    "plot_history",
    "plot_runs",
    "plot_confusion_matrix",
    "plot_predictions",
    "plot_reliability",
    "save_figure",
]


def _as_display(images: np.ndarray) -> np.ndarray:
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 1)
    return arr


def image_grid(
    images: np.ndarray,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    title_colors: Sequence[str] | None = None,
    cell: float = 1.6,
    suptitle: str | None = None,
    cmap: str | None = None,
) -> plt.Figure:
    """Show images (uint8 or [0, 1] floats, NHWC, or HW maps with ``cmap``) in a grid
    with optional titles."""
    images = _as_display(images)
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, cell * nrows + 0.3), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i], cmap=cmap)
        if titles is not None:
            color = title_colors[i] if title_colors is not None else "black"
            ax.set_title(titles[i], fontsize=7, color=color)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_samples_per_class(data: Any, split: str = "train", per_class: int = 8,
                           seed: int = 0) -> plt.Figure:
    """A grid with one row per class and ``per_class`` random images of that class."""
    s = data.splits[split]
    rng = np.random.default_rng(seed)
    k = data.num_classes
    fig, axes = plt.subplots(k, per_class, figsize=(1.2 * per_class + 1.2, 1.2 * k), squeeze=False)
    for c in range(k):
        idx = np.flatnonzero(s.labels == c)
        chosen = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for j in range(per_class):
            ax = axes[c, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(chosen):
                ax.imshow(s.images[chosen[j]])
        axes[c, 0].set_ylabel(data.class_names[c], rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(f"{split}: {per_class} random images per class")
    fig.tight_layout()
    return fig


def _epoch_axis(ax: plt.Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)


def _marks(ax: plt.Axes, chance: float | None, phases: Sequence[tuple[float, str]]) -> None:
    if chance is not None:
        ax.axhline(chance, color="grey", ls=":", lw=1, label=f"chance ({chance:.0%})")
    for x, label in phases:
        ax.axvline(x, color="black", ls="--", lw=0.8)
        ax.annotate(label, (x, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -10),
                    textcoords="offset points", fontsize=8)


def plot_history(history: Sequence[dict[str, float]], title: str = "",
                 chance: float | None = None,
                 phases: Sequence[tuple[float, str]] = ()) -> plt.Figure:
    """Loss and accuracy per epoch, train vs validation.

    ``chance`` draws the accuracy of guessing on the accuracy panel; ``phases`` marks
    where a new phase starts, as ``(epoch, label)`` (a vertical line on both panels).
    """
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, metric in zip(axes, ("loss", "acc"), strict=True):
        for split, style in (("train", "-o"), ("val", "-s")):
            key = f"{split}_{metric}"
            values = [h.get(key) for h in history]
            if any(v is not None for v in values):
                ax.plot(epochs, [np.nan if v is None else v for v in values], style, ms=3,
                        label=split)
        _epoch_axis(ax)
        ax.set_ylabel("accuracy" if metric == "acc" else "loss")
        _marks(ax, chance if metric == "acc" else None, phases)
        ax.legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_runs(runs: dict[str, Sequence[dict[str, float]]],
              metrics: Sequence[str] = ("train_loss", "val_acc"), title: str = "",
              chance: float | None = None) -> plt.Figure:
    """Several short runs side by side: one panel per metric, one line per run.

    ``runs`` maps a label to its per-epoch history (``train_loss``, ``val_acc``, ...);
    ``chance`` draws the accuracy of guessing on the accuracy panels.
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.3), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for label, history in runs.items():
            ax.plot([h.get("epoch", i + 1) for i, h in enumerate(history)],
                    [h[metric] for h in history], marker="o", ms=3, label=label)
        _epoch_axis(ax)
        ax.set_title(metric.replace("_", " ").replace("acc", "accuracy").replace("val ", "validation "))
        _marks(ax, chance if metric.endswith("acc") else None, ())
        ax.legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(
    cm: np.ndarray | list, class_names: Sequence[str], normalize: bool = True,
    title: str = "", ax: plt.Axes | None = None,
) -> plt.Figure:
    """Confusion matrix heat map (row-normalised by default), counts annotated."""
    cm = np.asarray(cm, dtype=np.float64)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    k = len(class_names)
    if ax is None:
        fig, ax = plt.subplots(figsize=(0.55 * k + 2.5, 0.55 * k + 2))
    else:
        fig = ax.figure
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if shown[i, j] > 0.5 * shown.max() else "black")
    ax.set_title(title or ("confusion matrix (row-normalised)" if normalize else "confusion matrix"))
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def plot_predictions(
    images: np.ndarray, labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str],
    ncols: int = 5,
) -> plt.Figure:
    """Images titled ``pred (conf) / true``, green when right and red when wrong."""
    preds = np.asarray(probs).argmax(axis=1)
    conf = np.asarray(probs).max(axis=1)
    titles = [f"{class_names[p]} ({c:.0%})\ntrue: {class_names[t]}"
              for p, c, t in zip(preds, conf, labels, strict=True)]
    colors = ["green" if p == t else "red" for p, t in zip(preds, labels, strict=True)]
    return image_grid(images, titles, ncols=ncols, title_colors=colors, cell=2.0)


def plot_reliability(bins: dict[str, np.ndarray], title: str = "", ax: plt.Axes | None = None
                     ) -> plt.Figure:
    """Reliability diagram: accuracy per confidence bin against the diagonal, with the number
    of images in each bin above its bar. A bar below the diagonal is over-confidence (the
    model is right less often than it claims); above it, under-confidence."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(4, 4))
    else:
        fig = ax.figure
    edges = bins["edges"]
    centers = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    acc = np.nan_to_num(bins["accuracy"])
    ax.bar(centers, acc, width=width * 0.9, alpha=0.7, label="accuracy")
    for x, a, n in zip(centers, acc, bins.get("count", np.zeros_like(acc)), strict=True):
        if n:
            ax.text(x, min(a + 0.02, 0.93), str(int(n)), ha="center", fontsize=6)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title or "reliability diagram (n per bin)")
    return fig


def save_figure(fig: plt.Figure, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Save a figure atomically as PNG (parents created); returns the path."""
    target = Path(path)
    with atomic_write(target, "wb") as handle:
        fig.savefig(handle, format="png", dpi=dpi, bbox_inches="tight")
    return target
