"""Notebook 05's tables and the whole comparison."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..metrics import classification_metrics, expected_calibration_error, top_k_accuracy
from .runs import RunSet
from .speed import SpeedResult
from .stats import (
    EnsembleResult,
    disagreements,
    ensemble_vs_best,
    pairwise_significance,
    wilson_interval,
)

__all__ = ["build_table", "per_class_table", "Comparison", "build_comparison"]

# Table columns that hold costs; for the ensemble they are the sums over its members.
_SUMMED = ("params", "size_mib", "train_s", "latency_ms", "onnx_latency_ms")


def _metric_row(label: str, labels: np.ndarray, probs: np.ndarray, class_names: list[str],
                ece_bins: int) -> dict[str, Any]:
    m = classification_metrics(labels, probs, class_names)
    n = len(labels)
    low, high = wilson_interval(int(round(m.accuracy * n)), n)
    row: dict[str, Any] = {
        "model": label, "accuracy": m.accuracy, "acc_ci_low": low, "acc_ci_high": high,
        "macro_precision": m.macro_precision, "macro_recall": m.macro_recall,
        "macro_f1": m.macro_f1,
        "ece": expected_calibration_error(labels, probs, ece_bins),
        "top5_accuracy": top_k_accuracy(labels, probs, 5) if len(class_names) > 5 else None,
    }
    for name, scores in m.per_class.items():
        row[f"err_{name}"] = 1.0 - scores["recall"] if scores["support"] else float("nan")
    return row


def _run_row(run: Any, class_names: list[str], sp: SpeedResult | None,
             ece_bins: int) -> dict[str, Any]:
    """One model's row: metrics from its test probabilities, costs from its record and timing."""
    rec = run.record
    row = _metric_row(run.label, run.labels, run.probs, class_names, ece_bins)
    row.update({
        "framework": rec.framework, "notebook": rec.notebook, "params": rec.num_params,
        "size_mib": sp.size_mib if sp else None, "epochs": len(rec.history),
        "train_s": rec.train_seconds,
        "latency_ms": sp.latency_ms if sp else None,
        "latency_p90_ms": sp.latency_p90_ms if sp else None,
        "onnx_latency_ms": sp.onnx_latency_ms if sp else None,
        "throughput_ips": sp.throughput_ips if sp else None,
        "train_peak_host_mib": rec.peak_memory_mb.get("host_rss"),
        "train_peak_device_mib": rec.peak_memory_mb.get("device"),
    })
    return row


def _ensemble_row(ensemble: EnsembleResult, runset: RunSet, rows: list[dict[str, Any]],
                  ece_bins: int) -> dict[str, Any]:
    """The ensemble's row: its own metrics, the summed costs of its members."""
    row = _metric_row(ensemble.label, runset.labels, ensemble.probs, runset.class_names,
                      ece_bins)
    row.update({"framework": "ensemble", "notebook": "+".join(ensemble.members)})
    members = [r for r in rows if r["model"] in ensemble.members]
    for col in _SUMMED:
        vals = [r[col] for r in members]
        row[col] = None if any(v is None for v in vals) else float(sum(vals))
    thr = [r["throughput_ips"] for r in members]
    row["throughput_ips"] = (None if any(not v for v in thr)
                             else 1.0 / sum(1.0 / v for v in thr))
    for col in ("train_peak_host_mib", "train_peak_device_mib"):
        vals = [r[col] for r in members if r[col] is not None]
        row[col] = max(vals) if vals else None
    return row


def build_table(
    runset: RunSet,
    speed: Mapping[str, SpeedResult] | None = None,
    ece_bins: int = 15,
    ensemble: EnsembleResult | None = None,
) -> Any:
    """The comparison table: one row per model (and the ensemble, if given).

    Columns: ``framework, notebook, accuracy, acc_ci_low, acc_ci_high,
    macro_precision, macro_recall, macro_f1, ece, params, size_mib, epochs,
    train_s, latency_ms, latency_p90_ms, onnx_latency_ms, throughput_ips, train_peak_host_mib,
    train_peak_device_mib`` and ``err_<class>`` (top-1 error per class = 1 -
    recall). Metrics come from the saved test probabilities; latency, throughput
    and size from ``speed``. For the ensemble, parameters, size, training time and
    latency are the sums over its members (it runs them all), throughput the
    inverse of the summed per-image times.
    """
    import pandas as pd

    speed = speed or {}
    rows = [_run_row(run, runset.class_names, speed.get(run.label), ece_bins)
            for run in runset.runs]
    if ensemble is not None:
        rows.append(_ensemble_row(ensemble, runset, rows, ece_bins))
    columns = ["model", "framework", "notebook", "accuracy", "top5_accuracy", "acc_ci_low",
               "acc_ci_high",
               "macro_precision", "macro_recall", "macro_f1", "ece", "params", "size_mib",
               "epochs", "train_s", "latency_ms", "latency_p90_ms", "onnx_latency_ms",
               "throughput_ips",
               "train_peak_host_mib", "train_peak_device_mib"]
    columns += [f"err_{c}" for c in runset.class_names]
    table = pd.DataFrame(rows, columns=columns).set_index("model")
    numeric = [c for c in columns[3:] if c != "epochs"]
    table[numeric] = table[numeric].astype(float)
    return table


def per_class_table(runset: RunSet, metric: str = "f1",
                    ensemble: EnsembleResult | None = None) -> Any:
    """Models x classes table of one per-class metric: ``f1``, ``precision``, ``recall``
    or ``error`` (top-1 error = 1 - recall)."""
    import pandas as pd

    key = "recall" if metric == "error" else metric
    if key not in ("f1", "precision", "recall"):
        raise ValueError(f"metric must be f1, precision, recall or error, got {metric!r}")
    named = [(r.label, r.probs) for r in runset.runs]
    if ensemble is not None:
        named.append((ensemble.label, ensemble.probs))
    data = {}
    for label, probs in named:
        m = classification_metrics(runset.labels, probs, runset.class_names)
        values = [m.per_class[c][key] for c in runset.class_names]
        data[label] = [1.0 - v for v in values] if metric == "error" else values
    return pd.DataFrame.from_dict(data, orient="index", columns=runset.class_names)


@dataclass
class Comparison:
    """Everything notebook 05 shows and writes."""

    runset: RunSet
    table: Any
    per_class_f1: Any
    per_class_error: Any
    ensemble: EnsembleResult | None
    pairwise: Any
    disagreement: dict[str, Any]
    speed: dict[str, SpeedResult]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        """The single models' labels, in table order."""
        return [r.label for r in self.runset.runs]


def build_comparison(
    runset: RunSet,
    speed: Mapping[str, SpeedResult] | None = None,
    *,
    ece_bins: int = 15,
    n_boot: int = 2000,
    seed: int = 0,
    n_disagreements: int = 16,
    settings: Mapping[str, Any] | None = None,
) -> Comparison:
    """Compute the table, the ensemble, the paired tests and the disagreements."""
    ens = ensemble_vs_best(runset, n_boot=n_boot, seed=seed)
    return Comparison(
        runset=runset,
        table=build_table(runset, speed, ece_bins=ece_bins, ensemble=ens),
        per_class_f1=per_class_table(runset, "f1", ensemble=ens),
        per_class_error=per_class_table(runset, "error", ensemble=ens),
        ensemble=ens,
        pairwise=pairwise_significance(runset, n_boot=n_boot, seed=seed, ensemble=ens),
        disagreement=disagreements(runset, limit=n_disagreements),
        speed=dict(speed or {}),
        settings={"ece_bins": ece_bins, "bootstrap_samples": n_boot, "seed": seed,
                  **dict(settings or {})},
    )


