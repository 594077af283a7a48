"""Figures of notebook 05: the models side by side.

Built on :mod:`nbutils.plots` (confusion matrices, reliability diagrams, image
grids) and on the tables of :mod:`nbutils.compare`; no deep learning framework.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

from .. import plots
from ..metrics import expected_calibration_error, reliability_bins
from .runs import RunSet
from .stats import EnsembleResult
from .table import Comparison

__all__ = [
    "plot_accuracy_vs",
    "plot_per_class_heatmap",
    "plot_confusions",
    "plot_reliabilities",
    "plot_disagreements",
    "comparison_figures",
]


def plot_accuracy_vs(table: Any, column: str, xlabel: str, log: bool = True,
                     title: str = "") -> plt.Figure:
    """Test accuracy (with its 95% interval) against one cost column of the table.

    Rows whose ``column`` is missing are left out; the ensemble is drawn as a star.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    shown = table[table[column].notna()] if column in table else table.iloc[0:0]
    for label, row in shown.iterrows():
        is_ens = row.get("framework") == "ensemble"
        yerr = [[row["accuracy"] - row["acc_ci_low"]], [row["acc_ci_high"] - row["accuracy"]]]
        ax.errorbar(row[column], row["accuracy"], yerr=yerr, fmt="*" if is_ens else "o",
                    ms=12 if is_ens else 7, capsize=3, label=label)
    if log and len(shown) and (shown[column] > 0).all():
        ax.set_xscale("log")
        low, high = float(shown[column].min()), float(shown[column].max())
        ax.xaxis.set_major_formatter(EngFormatter(sep=" "))
        if high < 10 * low:  # less than a decade: label a few minor ticks (2x, 5x) too
            ax.xaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
            ax.xaxis.set_minor_formatter(EngFormatter(sep=" "))
        else:
            ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (95% interval)")
    ax.grid(alpha=0.3)
    if len(shown):
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, f"no '{column}' values to plot", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_title(title or f"accuracy vs {xlabel}")
    fig.tight_layout()
    return fig


def plot_per_class_heatmap(df: Any, title: str = "per-class F1", cmap: str = "viridis",
                           vmin: float = 0.0, vmax: float = 1.0) -> plt.Figure:
    """Models (rows) x classes (columns) heat map with the values written in."""
    values = np.asarray(df.values, dtype=np.float64)
    n_rows, n_cols = values.shape
    fig, ax = plt.subplots(figsize=(0.75 * n_cols + 3.5, 0.5 * n_rows + 1.6))
    im = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(n_cols), [str(c) for c in df.columns], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n_rows), [str(i) for i in df.index], fontsize=8)
    if n_cols <= 20:
        for i in range(n_rows):
            for j in range(n_cols):
                if np.isfinite(values[i, j]):
                    dark = (values[i, j] - vmin) / (vmax - vmin or 1) < 0.5
                    ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if dark else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def _named_probs(runset: RunSet, ensemble: EnsembleResult | None) -> list[tuple[str, np.ndarray]]:
    named = [(r.label, r.probs) for r in runset.runs]
    if ensemble is not None:
        named.append((ensemble.label, ensemble.probs))
    return named


def plot_confusions(runset: RunSet, ensemble: EnsembleResult | None = None) -> plt.Figure:
    """Test confusion matrices of all models in a grid of two columns, each row of a
    matrix normalised to sum to 1 (the colour is the share of that true class; the
    number in a cell is the count of images)."""
    from ..metrics import confusion_matrix

    named = _named_probs(runset, ensemble)
    k = len(runset.class_names)
    side = 0.45 * k + 2.2
    ncols = min(2, max(1, len(named)))
    nrows = max(1, -(-len(named) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(side * ncols, side * nrows), squeeze=False)
    for ax in axes.flat[len(named):]:
        ax.axis("off")
    for ax, (label, probs) in zip(axes.flat, named, strict=False):
        cm = confusion_matrix(runset.labels, probs.argmax(1), k)
        plots.plot_confusion_matrix(cm, runset.class_names, title=label, ax=ax)
    fig.suptitle("test confusion matrices: rows = true class, normalised per row; "
                 "cell numbers = image counts", fontsize=9)
    fig.tight_layout()
    return fig


def plot_reliabilities(runset: RunSet, n_bins: int = 15,
                       ensemble: EnsembleResult | None = None) -> plt.Figure:
    """Reliability diagrams of all models, side by side, titled with their ECE."""
    named = _named_probs(runset, ensemble)
    fig, axes = plt.subplots(1, max(1, len(named)), figsize=(3.6 * max(1, len(named)), 3.8),
                             squeeze=False)
    for ax, (label, probs) in zip(axes[0], named, strict=False):
        bins = reliability_bins(runset.labels, probs, n_bins)
        ece = expected_calibration_error(runset.labels, probs, n_bins)
        plots.plot_reliability(bins, title=f"{label}\nECE = {ece:.3f}", ax=ax)
        ax.title.set_fontsize(9)
    fig.tight_layout()
    return fig


def _names(runset: RunSet) -> list[str]:
    """Short model names for titles: the framework, unless two runs share it."""
    frameworks = [r.record.framework for r in runset.runs]
    if len(set(frameworks)) == len(frameworks):
        return frameworks
    return [r.record.model[:14] for r in runset.runs]


def plot_disagreements(images: np.ndarray, runset: RunSet, disagreement: dict[str, Any],
                       ncols: int = 8, max_images: int | None = None) -> plt.Figure | None:
    """The test images on which the models disagree, titled with each model's guess.

    A ``+`` marks a right prediction and ``-`` a wrong one; the title is green when
    the majority is right. ``None`` when there is nothing to show.
    """
    idx = np.asarray(disagreement["indices"])[:max_images]
    if len(idx) == 0 or len(runset.runs) < 2:
        return None
    preds = disagreement["preds"]
    names, labels = runset.class_names, runset.labels
    short = _names(runset)
    ncols = max(1, min(ncols, len(idx)))
    nrows = int(np.ceil(len(idx) / ncols))
    lines_per_title = len(runset.runs) + 1
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, layout="constrained",
                             figsize=(1.9 * ncols, (1.7 + 0.14 * lines_per_title) * nrows + 0.4))
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, idx, strict=False):
        lines = [f"true: {names[labels[i]]}"]
        right = 0
        for k, name in enumerate(short):
            ok = preds[k, i] == labels[i]
            right += int(ok)
            lines.append(f"{'+' if ok else '-'} {name}: {names[preds[k, i]]}")
        ax.imshow(np.asarray(images[i]))
        ax.set_title("\n".join(lines), fontsize=7, loc="left",
                     color="green" if right * 2 > len(short) else "red")
    fig.suptitle("test images on which the models disagree (+ right, - wrong)")
    return fig


def comparison_figures(comparison: Comparison, images: np.ndarray | None = None,
                       n_bins: int | None = None, show: Sequence[str] | None = None
                       ) -> dict[str, plt.Figure]:
    """All figures of the comparison by file name (disagreements only with ``images``).

    ``show`` limits which are made; an empty comparison gives an empty dict.
    """
    rs = comparison.runset
    if not rs.runs:
        return {}
    n_bins = n_bins or comparison.settings.get("ece_bins", 15)
    makers = {
        "accuracy_vs_train_time": lambda: plot_accuracy_vs(
            comparison.table, "train_s", "training time (s)"),
        "accuracy_vs_params": lambda: plot_accuracy_vs(
            comparison.table, "params", "parameters"),
        "per_class_f1": lambda: plot_per_class_heatmap(
            comparison.per_class_f1, "per-class F1 on the test set"),
        "confusion_matrices": lambda: plot_confusions(rs, comparison.ensemble),
        "reliability": lambda: plot_reliabilities(rs, n_bins, comparison.ensemble),
        "disagreements": lambda: (plot_disagreements(images, rs, comparison.disagreement)
                                  if images is not None else None),
    }
    figures = {}
    for name, make in makers.items():
        if show is not None and name not in show:
            continue
        fig = make()
        if fig is not None:
            figures[name] = fig
    return figures
