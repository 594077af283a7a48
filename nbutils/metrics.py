"""Classification metrics from predicted probabilities, in plain NumPy.

One evaluation path for every framework: each notebook produces an (N, K)
probability matrix on the test split and everything else is computed here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .records import TestMetrics

__all__ = [
    "confusion_matrix",
    "per_class_scores",
    "classification_metrics",
    "top_k_accuracy",
    "expected_calibration_error",
    "reliability_bins",
    "mcnemar_test",
    "bootstrap_accuracy_diff",
    "ensemble_probabilities",
    "McNemarResult",
]


def _check(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs must be (N, K) with N={labels.shape[0]}, got {probs.shape}")
    return labels, probs


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """K x K counts, rows = true class, columns = predicted class."""
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    return np.bincount(labels * num_classes + preds, minlength=num_classes ** 2).reshape(
        num_classes, num_classes
    )


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(int)}


def top_k_accuracy(labels: np.ndarray, probs: np.ndarray, k: int = 5) -> float:
    """Share of images whose true class is among the ``k`` most probable (ties: lower index)."""
    labels, probs = _check(labels, probs)
    if len(labels) == 0:
        return 0.0
    k = min(int(k), probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def classification_metrics(
    labels: np.ndarray, probs: np.ndarray, class_names: list[str]
) -> TestMetrics:
    """Accuracy, macro precision/recall/F1, per-class scores and the confusion matrix.

    Top-5 accuracy is added when there are more than 5 classes (with 5 or fewer it is 1).
    """
    labels, probs = _check(labels, probs)
    k = len(class_names)
    if probs.shape[1] != k:
        raise ValueError(f"probs has {probs.shape[1]} columns for {k} classes")
    preds = probs.argmax(axis=1)
    cm = confusion_matrix(labels, preds, k)
    scores = per_class_scores(cm)
    present = scores["support"] > 0  # macro average over classes present in the test set
    per_class = {
        name: {
            "precision": float(scores["precision"][i]),
            "recall": float(scores["recall"][i]),
            "f1": float(scores["f1"][i]),
            "support": int(scores["support"][i]),
        }
        for i, name in enumerate(class_names)
    }
    return TestMetrics(
        accuracy=float((preds == labels).mean()) if len(labels) else 0.0,
        macro_precision=float(scores["precision"][present].mean()) if present.any() else 0.0,
        macro_recall=float(scores["recall"][present].mean()) if present.any() else 0.0,
        macro_f1=float(scores["f1"][present].mean()) if present.any() else 0.0,
        confusion_matrix=cm.astype(int).tolist(),
        per_class=per_class,
        n_test=int(len(labels)),
        top5_accuracy=top_k_accuracy(labels, probs, 5) if k > 5 else None,
    )


def reliability_bins(
    labels: np.ndarray, probs: np.ndarray, n_bins: int = 15
) -> dict[str, np.ndarray]:
    """Confidence, accuracy and count per equal-width confidence bin."""
    labels, probs = _check(labels, probs)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_conf = np.bincount(which, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(which, weights=correct, minlength=n_bins) / count
    return {"edges": edges, "confidence": mean_conf, "accuracy": accuracy, "count": count}


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over confidence bins."""
    bins = reliability_bins(labels, probs, n_bins)
    count = bins["count"]
    if count.sum() == 0:
        return 0.0
    gap = np.abs(np.nan_to_num(bins["accuracy"]) - np.nan_to_num(bins["confidence"]))
    return float((gap * count).sum() / count.sum())


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test: ``b`` = only A right, ``c`` = only B right."""

    b: int
    c: int
    p_value: float

    @property
    def significant(self) -> bool:
        """p < 0.05."""
        return self.p_value < 0.05


def mcnemar_test(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemarResult:
    """Exact (binomial) McNemar test on paired per-image correctness of two models.

    The p-value is two-sided: the chance, if both models were equally accurate,
    of a split of the discordant images at least as lopsided as the one observed.
    """
    a = np.asarray(correct_a, dtype=bool)
    b_arr = np.asarray(correct_b, dtype=bool)
    if a.shape != b_arr.shape:
        raise ValueError("both models must be scored on the same images")
    b = int((a & ~b_arr).sum())
    c = int((~a & b_arr).sum())
    n = b + c
    if n == 0:
        return McNemarResult(b, c, 1.0)
    return McNemarResult(b, c, float(min(1.0, 2.0 * _binomial_lower_tail(min(b, c), n))))


def _binomial_lower_tail(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), in log space so any ``n`` works.

    ``math.comb(n, i) / 2.0 ** n`` overflows once ``n`` passes about 1,024 (a full-size
    test set); the log-sum-exp of ``log C(n, i) - n log 2`` does not.
    """
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2.0)
            for i in range(k + 1)]
    top = max(logs)
    return math.exp(top) * math.fsum(math.exp(v - top) for v in logs)


def bootstrap_accuracy_diff(
    correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = 2000, seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Accuracy(A) - accuracy(B) with a paired bootstrap interval: (diff, low, high)."""
    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    diffs = a[idx].mean(axis=1) - b[idx].mean(axis=1)
    alpha = (1 - level) / 2
    return float(a.mean() - b.mean()), float(np.quantile(diffs, alpha)), float(
        np.quantile(diffs, 1 - alpha)
    )


def ensemble_probabilities(prob_list: list[np.ndarray],
                           weights: list[float] | np.ndarray | None = None) -> np.ndarray:
    """Mean of several models' probability matrices (same images, same class order).

    ``weights`` (one non-negative number per model, not all zero) gives a weighted mean;
    choose them on the validation split, never on the images being scored.
    """
    if not prob_list:
        raise ValueError("need at least one probability matrix")
    shapes = {np.shape(p) for p in prob_list}
    if len(shapes) != 1:
        raise ValueError(f"probability matrices differ in shape: {sorted(shapes)}")
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in prob_list])
    if weights is None:
        return stacked.mean(axis=0)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(prob_list),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {len(prob_list)} non-negative numbers, not all zero; "
                         f"got {weights!r}")
    return np.tensordot(w / w.sum(), stacked, axes=1)
