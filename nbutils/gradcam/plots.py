"""Figures for notebook 06: heat-map overlays, model x image grids and the checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["overlay", "plot_cam_grid", "plot_layer_effect", "plot_localisation",
           "plot_randomization", "plot_deletion", "plot_correct_vs_wrong"]


def overlay(images: np.ndarray, maps: np.ndarray, alpha: float = 0.45, cmap: str = "jet"
            ) -> np.ndarray:
    """Blend heat maps onto images: float [0, 1] RGB, for one image or a batch.

    Args:
        images: uint8 (H, W, 3) or (N, H, W, 3).
        maps: (H, W) or (N, H, W) in [0, 1] on the same grid.
        alpha: weight of the heat map.
        cmap: a matplotlib colour map.
    """
    img = np.asarray(images, dtype=np.float32)
    if img.max() > 1.0:
        img = img / 255.0
    heat = plt.get_cmap(cmap)(np.clip(np.asarray(maps, dtype=np.float32), 0, 1))[..., :3]
    if heat.shape[:-1] != img.shape[:-1]:
        raise ValueError(f"maps {np.shape(maps)} must match images {np.shape(images)} (H, W)")
    return np.clip((1 - alpha) * img + alpha * heat, 0.0, 1.0)


def _clean(ax: plt.Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _contour(ax: plt.Axes, mask: np.ndarray | None) -> None:
    if mask is not None and np.asarray(mask).any():
        ax.contour(np.asarray(mask, dtype=float), levels=[0.5], colors="white", linewidths=0.8)


def _mark_peak(ax: plt.Axes, cam: np.ndarray) -> None:
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    ax.plot([x], [y], marker="+", color="white", ms=7, mew=1.5)


def plot_cam_grid(
    images: np.ndarray,
    maps: Mapping[str, np.ndarray],
    labels: Sequence[int],
    preds: Mapping[str, Sequence[int]],
    class_names: Sequence[str],
    probs: Mapping[str, np.ndarray] | None = None,
    masks: np.ndarray | None = None,
    cell: float = 1.6,
    title: str | None = None,
) -> plt.Figure:
    """Rows = images, columns = the image and one overlay per model.

    Each overlay is titled with that model's predicted class (and probability),
    green when right and red when wrong; the first column gives the true class
    and, when masks are given, every panel outlines the object and marks the
    map's maximum with a cross.
    """
    names = list(maps)
    n = len(images)
    fig, axes = plt.subplots(n, len(names) + 1, figsize=(cell * (len(names) + 1), cell * n + 0.4),
                             squeeze=False)
    for i in range(n):
        ax = axes[i, 0]
        ax.imshow(images[i])
        _contour(ax, None if masks is None else masks[i])
        ax.set_title(f"true: {class_names[labels[i]]}", fontsize=8)
        _clean(ax)
        for j, name in enumerate(names, start=1):
            ax = axes[i, j]
            ax.imshow(overlay(images[i], maps[name][i]))
            _contour(ax, None if masks is None else masks[i])
            _mark_peak(ax, maps[name][i])
            p = int(preds[name][i])
            conf = f" ({probs[name][i, p]:.0%})" if probs is not None else ""
            ax.set_title(f"{class_names[p]}{conf}", fontsize=8,
                         color="green" if p == labels[i] else "red")
            _clean(ax)
            if i == 0:
                ax.text(0.5, 1.32, name, transform=ax.transAxes, ha="center", fontsize=9,
                        fontweight="bold")
    if title:
        fig.suptitle(title, y=1.0)
    fig.tight_layout()
    return fig


def plot_layer_effect(images: np.ndarray, maps_by_layer: Mapping[str, np.ndarray],
                      masks: np.ndarray | None = None, title: str = "", cell: float = 1.6
                      ) -> plt.Figure:
    """Rows = images, columns = target layers (shallow to deep), each map on its image."""
    layers = list(maps_by_layer)
    n = len(images)
    fig, axes = plt.subplots(n, len(layers), figsize=(cell * len(layers), cell * n + 0.5),
                             squeeze=False)
    for j, layer in enumerate(layers):
        for i in range(n):
            ax = axes[i, j]
            ax.imshow(overlay(images[i], maps_by_layer[layer][i]))
            _contour(ax, None if masks is None else masks[i])
            _clean(ax)
            if i == 0:
                ax.set_title(layer, fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_correct_vs_wrong(images: np.ndarray, maps_pred: np.ndarray, maps_other: np.ndarray,
                          labels: Sequence[int], preds: Sequence[int], others: Sequence[int],
                          class_names: Sequence[str], masks: np.ndarray | None = None,
                          title: str = "", cell: float = 1.6) -> plt.Figure:
    """Columns: the image, the map for the predicted class, the map for another class.

    ``others`` is the true class for a misclassified image and, typically, the
    runner-up class for a correct one (titled as such).
    """
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(cell * 3, cell * n + 0.5), squeeze=False)
    for i in range(n):
        right = int(preds[i]) == int(labels[i])
        other_tag = "2nd guess" if right else "true"
        panels = [(np.asarray(images[i], np.float32) / 255.0, f"true: {class_names[labels[i]]}",
                   "black"),
                  (overlay(images[i], maps_pred[i]), f"pred '{class_names[preds[i]]}'",
                   "green" if right else "red"),
                  (overlay(images[i], maps_other[i]),
                   f"{other_tag} '{class_names[others[i]]}'", "black")]
        for j, (img, text, color) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(img)
            _contour(ax, None if masks is None else masks[i])
            ax.set_title(text, fontsize=8, color=color)
            _clean(ax)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_localisation(scores: Mapping[str, Mapping[str, float]], title: str = "") -> plt.Figure:
    """Pointing game and energy inside the mask per model, against the chance rate."""
    names = list(scores)
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.3 * len(names), 3.4))
    for ax, key, label in zip(axes, ("pointing_game", "energy"),
                              ("pointing game (max on object)", "energy inside the object"),
                              strict=True):
        values = [scores[n][key] for n in names]
        bars = ax.bar(names, values, color="tab:blue", alpha=0.8)
        chance = np.mean([scores[n]["chance"] for n in names]) if names else 0.0
        ax.axhline(chance, color="k", ls="--", lw=1, label=f"chance = mask area ({chance:.2f})")
        for bar, v in zip(bars, values, strict=True):
            ax.text(bar.get_x() + bar.get_width() / 2, v + 0.02, f"{v:.2f}", ha="center",
                    fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(label, fontsize=10)
        ax.legend(fontsize=8, loc="upper right")
        ax.tick_params(axis="x", labelsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_randomization(images: np.ndarray, results: Mapping[str, Any], n: int = 3,
                       cell: float = 1.7) -> plt.Figure:
    """Per model, ``n`` images: map of the trained model | map after re-initialisation."""
    names = list(results)
    n = min(n, len(images))
    fig, axes = plt.subplots(len(names), 2 * n + 1,
                             figsize=(cell * (2 * n) + 2.6, cell * len(names) + 0.4),
                             squeeze=False, gridspec_kw={"width_ratios": [1] * (2 * n) + [1.6]})
    for r, name in enumerate(names):
        res = results[name]
        for i in range(n):
            for k, (maps, tag) in enumerate(((res.maps_trained, "trained"),
                                             (res.maps_random, "random"))):
                ax = axes[r, 2 * i + k]
                ax.imshow(overlay(images[i], maps[i]))
                rho = res.rho[i]
                text = tag if k == 0 else f"{tag}, ρ={rho:.2f}" if np.isfinite(rho) else tag
                ax.set_title(text, fontsize=7)
                _clean(ax)
        axes[r, 0].set_ylabel(name, fontsize=9)
        ax = axes[r, -1]
        finite = res.rho[np.isfinite(res.rho)]
        ax.hist(finite, bins=np.linspace(-1, 1, 21), color="tab:orange", alpha=0.8)
        ax.axvline(res.mean, color="k", ls="--", lw=1)
        ax.set_title(f"rank corr. mean {res.mean:.2f}", fontsize=8)
        ax.set_xlim(-1, 1)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def plot_deletion(curves: Mapping[str, Any], title: str = "") -> plt.Figure:
    """Probability of the explained class as pixels are removed: Grad-CAM order vs random."""
    names = list(curves)
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(3.6 * max(1, len(names)), 3.2),
                             squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        d = curves[name]
        ax.plot(d.fractions, d.saliency, "-o", ms=3,
                label=f"Grad-CAM order (AUC {d.auc_saliency:.2f})")
        ax.plot(d.fractions, d.random, "-s", ms=3, label=f"random pixels (AUC {d.auc_random:.2f})")
        if d.random_smooth is not None:
            ax.plot(d.fractions, d.random_smooth, "-^", ms=3,
                    label=f"random blobs (AUC {d.auc_random_smooth:.2f})")
        ax.set_xlabel("share of pixels removed")
        ax.set_ylabel("probability of the class")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
