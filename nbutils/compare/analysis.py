"""Notebook 05's error analysis and calibration: top-5, top losses, confused pairs,
temperature scaling fitted on each run's validation probabilities."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .. import plots
from ..calibration import Calibration, apply_temperature, calibrate
from ..error_analysis import confused_pairs, top_losses
from ..metrics import confusion_matrix, expected_calibration_error, reliability_bins
from .runs import RunSet

__all__ = ["calibrate_runs", "calibration_markdown", "confused_pairs_markdown",
           "plot_top_losses", "plot_calibration", "seed_spread", "seed_spread_markdown"]


def calibrate_runs(runset: RunSet, ece_bins: int = 15) -> dict[str, Calibration | None]:
    """Each run's temperature scaling, fitted on its validation split (``None`` without one)."""
    return {run.label: (None if run.val_probs is None else
                        calibrate(run.val_labels, run.val_probs, run.labels, run.probs, ece_bins))
            for run in runset.runs}


def calibration_markdown(fitted: dict[str, Calibration | None]) -> str:
    """Temperature, NLL (validation, test) and test ECE before -> after, as Markdown."""
    lines = ["| model | T | val NLL | test NLL | test ECE |", "|---|---|---|---|---|"]
    for label, c in fitted.items():
        if c is None:
            lines.append(f"| {label} | - | no validation probabilities saved: re-run its "
                         "training notebook | | |")
            continue
        lines.append(f"| {label} | {c.temperature:.2f} | {c.val_nll_before:.3f} → "
                     f"{c.val_nll_after:.3f} | {c.test_nll_before:.3f} → {c.test_nll_after:.3f} "
                     f"| {c.test_ece_before:.3f} → {c.test_ece_after:.3f} |")
    return "\n".join(lines)


def confused_pairs_markdown(runset: RunSet, n: int = 5) -> str:
    """Each model's ``n`` most frequent (true → predicted) confusions, as Markdown."""
    k = len(runset.class_names)
    lines = ["| model | most confused (true → predicted: images) |", "|---|---|"]
    for run in runset.runs:
        cm = confusion_matrix(run.labels, run.preds, k)
        pairs = confused_pairs(cm, runset.class_names, n)
        text = ", ".join(f"{t} → {p}: {c}" for t, p, c in pairs) or "no mistakes"
        lines.append(f"| {run.label} | {text} |")
    return "\n".join(lines)


def plot_top_losses(runset: RunSet, images: np.ndarray, n: int = 6) -> plt.Figure:
    """Per model (rows), the ``n`` test images it is most confidently wrong about."""
    rows = max(1, len(runset.runs))
    fig, axes = plt.subplots(rows, n, figsize=(1.7 * n, 2.0 * rows), squeeze=False)
    names = runset.class_names
    for row, run in zip(axes, runset.runs, strict=False):
        losses = top_losses(run.labels, run.probs, n)
        for ax, loss in zip(row, losses, strict=False):
            ax.imshow(images[loss.index])
            ax.set_title(f"{names[loss.pred]} {loss.p_pred:.2f}\ntrue {names[loss.label]} "
                         f"{loss.p_true:.2f}", fontsize=7, color="tab:red")
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(run.label[:18], fontsize=8)
    fig.suptitle("most confidently wrong: predicted class and probability / true class", fontsize=9)
    fig.tight_layout()
    return fig


def plot_calibration(runset: RunSet, fitted: dict[str, Calibration | None],
                     n_bins: int = 15) -> plt.Figure:
    """Test reliability diagrams before (top) and after (bottom) temperature scaling."""
    runs = [r for r in runset.runs if fitted.get(r.label) is not None]
    cols = max(1, len(runs))
    fig, axes = plt.subplots(2, cols, figsize=(3.4 * cols, 6.8), squeeze=False)
    for col, run in enumerate(runs):
        t = fitted[run.label].temperature
        for row, probs in enumerate((run.probs, apply_temperature(run.probs, t))):
            bins = reliability_bins(run.labels, probs, n_bins)
            ece = expected_calibration_error(run.labels, probs, n_bins)
            when = "before" if row == 0 else f"after, T = {t:.2f}"
            plots.plot_reliability(bins, title=f"{run.label[:22]} ({when})\nECE = {ece:.3f}",
                                   ax=axes[row, col])
            axes[row, col].title.set_fontsize(8)
    fig.tight_layout()
    return fig


def seed_spread(runset: RunSet) -> dict[str, dict[str, float | list]]:
    """Per run with seed replicates: its test accuracies over the seeds, mean, sd, range."""
    out: dict[str, dict[str, float | list]] = {}
    for run in runset.runs:
        reps = [r for r in runset.replicates if r.record.notebook == run.record.notebook
                and r.record.model == run.record.model]
        if not reps:
            continue
        accs = [float(run.correct.mean())] + [float(r.correct.mean()) for r in reps]
        seeds = [run.record.seed] + [r.record.seed for r in reps]
        out[run.label] = {"seeds": seeds, "accuracies": accs, "mean": float(np.mean(accs)),
                          "sd": float(np.std(accs, ddof=1)), "range": max(accs) - min(accs)}
    return out


def seed_spread_markdown(spread: dict[str, dict[str, float | list]]) -> str:
    """The seed spread as Markdown (one row per model with replicates)."""
    if not spread:
        return ("*No run was repeated with other seeds: `python -m nbutils.run --only 02 "
                "--seeds 43,44` (or `make course SEEDS=43,44`) trains them.*")
    lines = ["| model | seeds | test accuracy per seed | mean ± sd | range |",
             "|---|---|---|---|---|"]
    for label, s in spread.items():
        accs = ", ".join(f"{a:.1%}" for a in s["accuracies"])
        lines.append(f"| {label} | {', '.join(map(str, s['seeds']))} | {accs} | "
                     f"{s['mean']:.1%} ± {s['sd']:.1%} | {s['range'] * 100:.1f} points |")
    return "\n".join(lines)
