"""Which test images a model gets most wrong, and which classes it confuses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TopLoss", "top_losses", "confused_pairs"]


@dataclass(frozen=True)
class TopLoss:
    """One test image the model is confidently wrong about."""

    index: int
    label: int
    pred: int
    loss: float        # -log p(true class)
    p_pred: float      # probability of the predicted class
    p_true: float      # probability of the true class


def top_losses(labels: np.ndarray, probs: np.ndarray, n: int = 9,
               wrong_only: bool = True) -> list[TopLoss]:
    """The ``n`` images with the highest loss -log p(true class), highest first.

    With ``wrong_only`` (default) only misclassified images are listed: those the model
    is most confidently wrong about.
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    p_true = probs[np.arange(len(labels)), labels]
    loss = -np.log(np.clip(p_true, 1e-12, 1.0))
    preds = probs.argmax(axis=1)
    candidates = np.flatnonzero(preds != labels) if wrong_only else np.arange(len(labels))
    order = candidates[np.argsort(-loss[candidates], kind="stable")][:n]
    return [TopLoss(int(i), int(labels[i]), int(preds[i]), float(loss[i]),
                    float(probs[i, preds[i]]), float(p_true[i])) for i in order]


def confused_pairs(confusion: np.ndarray | list, class_names: list[str],
                   n: int = 5) -> list[tuple[str, str, int]]:
    """The ``n`` largest off-diagonal cells: ``(true class, predicted class, count)``.

    Rows of ``confusion`` are true classes, columns predictions (as in the run records).
    """
    cm = np.asarray(confusion, dtype=np.int64).copy()
    np.fill_diagonal(cm, 0)
    flat = np.argsort(-cm, axis=None, kind="stable")[:n]
    pairs = [(class_names[i], class_names[j], int(cm[i, j]))
             for i, j in zip(*np.unravel_index(flat, cm.shape), strict=True)]
    return [p for p in pairs if p[2] > 0]
