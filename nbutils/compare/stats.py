"""Notebook 05's statistics: intervals, the ensemble, paired tests and disagreements."""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from ..metrics import McNemarResult, bootstrap_accuracy_diff, ensemble_probabilities, mcnemar_test
from .runs import RunSet

__all__ = ["wilson_interval", "EnsembleResult", "ensemble_vs_best", "pairwise_significance",
           "disagreements"]


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% for ``z=1.96``); (0, 1) when n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class EnsembleResult:
    """The mean-of-probabilities ensemble of all runs against the best single run."""

    label: str
    members: list[str]
    probs: np.ndarray
    accuracy: float
    best_label: str
    best_accuracy: float
    mcnemar: McNemarResult
    diff: float
    ci_low: float
    ci_high: float

    @property
    def beats_best(self) -> bool:
        """Higher accuracy than the best single model (not necessarily significantly)."""
        return self.accuracy > self.best_accuracy

    def verdict(self) -> str:
        """One sentence on whether the ensemble helps, and whether it is significant."""
        word = ("beats" if self.diff > 0 else "ties with" if self.diff == 0 else "is worse than")
        sig = ("significant" if self.mcnemar.significant else "not significant")
        return (f"The ensemble of {len(self.members)} ({self.accuracy:.1%}) {word} the best single "
                f"model, {self.best_label} ({self.best_accuracy:.1%}): difference "
                f"{self.diff:+.1%}, 95% bootstrap interval [{self.ci_low:+.1%}, {self.ci_high:+.1%}],"
                f" McNemar p = {self.mcnemar.p_value:.3g} ({sig} at 5%).")


def ensemble_vs_best(runset: RunSet, n_boot: int = 2000, seed: int = 0) -> EnsembleResult | None:
    """Average all runs' probabilities and test the result against the best single run.

    ``None`` with fewer than two runs. The best single run is the most accurate
    (the first in notebook order on a tie); note that choosing it on the test set
    flatters it slightly.
    """
    if len(runset.runs) < 2:
        return None
    probs = ensemble_probabilities([r.probs for r in runset.runs])
    labels = runset.labels
    correct = probs.argmax(1) == labels
    best = max(runset.runs, key=lambda r: r.correct.mean())  # first in notebook order on a tie
    diff, low, high = bootstrap_accuracy_diff(correct, best.correct, n_boot=n_boot, seed=seed)
    return EnsembleResult(
        label=f"ensemble (mean of {len(runset.runs)})", members=[r.label for r in runset.runs],
        probs=probs, accuracy=float(correct.mean()), best_label=best.label,
        best_accuracy=float(best.correct.mean()), mcnemar=mcnemar_test(correct, best.correct),
        diff=diff, ci_low=low, ci_high=high)


def pairwise_significance(runset: RunSet, n_boot: int = 2000, seed: int = 0,
                          ensemble: EnsembleResult | None = None) -> Any:
    """Paired tests of every pair of models on the same test images.

    One row per pair ``(a, b)``: both accuracies, the difference ``a - b`` with a
    paired bootstrap 95% interval, McNemar's ``b`` (only a right), ``c`` (only b
    right), the exact two-sided p-value and whether p < 0.05.
    """
    import pandas as pd

    named = [(r.label, r.correct) for r in runset.runs]
    if ensemble is not None:
        named.append((ensemble.label, ensemble.probs.argmax(1) == runset.labels))
    rows = []
    for (la, ca), (lb, cb) in combinations(named, 2):
        diff, low, high = bootstrap_accuracy_diff(ca, cb, n_boot=n_boot, seed=seed)
        mc = mcnemar_test(ca, cb)
        rows.append({"model_a": la, "model_b": lb, "acc_a": float(ca.mean()),
                     "acc_b": float(cb.mean()), "diff": diff, "ci_low": low, "ci_high": high,
                     "only_a_right": mc.b, "only_b_right": mc.c, "p_value": mc.p_value,
                     "significant": mc.significant})
    columns = ["model_a", "model_b", "acc_a", "acc_b", "diff", "ci_low", "ci_high",
               "only_a_right", "only_b_right", "p_value", "significant"]
    return pd.DataFrame(rows, columns=columns)


def disagreements(runset: RunSet, limit: int | None = None) -> dict[str, Any]:
    """Test images on which the models do not all predict the same class.

    Returns a dict with ``indices`` (most-split first: by the number of distinct
    predictions, then images some model gets right, then index), the per-model
    ``preds`` (models x images) and counts: ``n_test``, ``all_agree``,
    ``all_agree_right``, ``all_agree_wrong``, ``disagree``, ``some_right`` (among
    disagreements, at least one model right) and ``oracle_accuracy`` (right if
    any model is right: an upper bound for combining them).
    """
    if not runset.runs:
        return {"indices": np.zeros(0, dtype=np.int64), "preds": np.zeros((0, 0), dtype=np.int64),
                "n_test": 0, "all_agree": 0, "all_agree_right": 0, "all_agree_wrong": 0,
                "disagree": 0, "some_right": 0, "oracle_accuracy": float("nan")}
    preds = np.stack([r.preds for r in runset.runs])
    labels = runset.labels
    distinct = np.array([len(set(col)) for col in preds.T], dtype=np.int64)
    agree = distinct == 1
    any_right = (preds == labels).any(axis=0)
    idx = np.flatnonzero(~agree)
    order = np.lexsort((idx, ~any_right[idx], -distinct[idx]))
    idx = idx[order]
    if limit is not None:
        idx = idx[:limit]
    return {
        "indices": idx, "preds": preds, "n_test": int(len(labels)),
        "all_agree": int(agree.sum()),
        "all_agree_right": int((agree & (preds[0] == labels)).sum()),
        "all_agree_wrong": int((agree & (preds[0] != labels)).sum()),
        "disagree": int((~agree).sum()), "some_right": int((~agree & any_right).sum()),
        "oracle_accuracy": float(any_right.mean()) if len(labels) else float("nan"),
    }


