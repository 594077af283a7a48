"""Finishing a training run the same way in every framework notebook.

Given test-set probabilities, :func:`finish_run` computes the metrics, writes the
test probabilities, the example predictions (CSV and image grid), the standard
figures and the :class:`~nbutils.records.RunRecord`, so notebooks 02, 03 and 04
end with one call and notebook 05 finds identical files for each.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from .config import RunConfig
from .data.core import ImageData
from .hardware import library_versions, peak_rss_mb
from .metrics import classification_metrics
from .paths import atomic_write, atomic_write_text
from .records import RunRecord, find_records, write_record

__all__ = ["finish_run", "example_indices", "per_class_table", "load_test_probabilities",
           "other_runs_summary"]


def example_indices(labels: np.ndarray, n: int = 10, seed: int = 0) -> np.ndarray:
    """``n`` fixed test indices spread over the classes (the same for every model)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    chosen: list[int] = []
    classes = np.unique(labels)
    for cls in classes:  # one per class first, then fill
        hit = order[labels[order] == cls]
        if len(hit) and len(chosen) < n:
            chosen.append(int(hit[0]))
    for idx in order:
        if len(chosen) >= n:
            break
        if int(idx) not in chosen:
            chosen.append(int(idx))
    return np.asarray(sorted(chosen), dtype=np.int64)


def per_class_table(record: RunRecord) -> Any:
    """Per-class precision/recall/F1/support as a pandas DataFrame."""
    import pandas as pd

    df = pd.DataFrame(record.test.per_class).T
    df["support"] = df["support"].astype(int)
    return df.round(3)


def _write_examples_csv(path: Path, ids: list[str], labels: np.ndarray, probs: np.ndarray,
                        idx: np.ndarray, class_names: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["test_index", "image_id", "true", "predicted", "confidence", "correct"])
    for i in idx:
        pred = int(probs[i].argmax())
        writer.writerow([int(i), ids[i], class_names[labels[i]], class_names[pred],
                         f"{probs[i, pred]:.4f}", bool(pred == labels[i])])
    atomic_write_text(path, buf.getvalue())


def load_test_probabilities(path: str | Path) -> dict[str, np.ndarray]:
    """Read the ``*_test_probs.npz`` file a run wrote: ``probs``, ``labels``, ``ids``."""
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def finish_run(
    cfg: RunConfig,
    data: ImageData,
    *,
    notebook: str,
    framework: str,
    model: str,
    probs: np.ndarray,
    history: list[dict[str, float]],
    train_seconds: float,
    num_params: int,
    model_path: str | Path | None = None,
    device_peak_mb: float | None = None,
    device: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    n_examples: int = 10,
    show: bool = True,
) -> RunRecord:
    """Score test probabilities, write every standard output, and return the record.

    Writes under ``cfg.outputs_dir``: ``metrics/<run_id>.json``,
    ``predictions/<run_id>_test_probs.npz``, ``predictions/<run_id>_examples.csv``
    and ``figures/<run_id>_{curves,confusion,examples}.png``.
    """
    from . import plots

    labels = np.asarray(data.test.labels)
    probs = np.asarray(probs, dtype=np.float64)
    metrics = classification_metrics(labels, probs, data.class_names)
    record = RunRecord(
        notebook=notebook, framework=framework, model=model, dataset=data.spec,
        profile=cfg.profile, seed=cfg.values["seed"], config=cfg.to_dict(),
        class_names=list(data.class_names), num_params=int(num_params),
        train_seconds=float(train_seconds), history=[dict(h) for h in history], test=metrics,
        peak_memory_mb={"host_rss": round(peak_rss_mb(), 1),
                        **({"device": round(device_peak_mb, 1)} if device_peak_mb is not None else {})},
        library_versions=library_versions(),
        device=device or {"type": cfg.values["device"], "name": cfg.hardware.describe()},
        extra=dict(extra or {}),
    )
    out = cfg.outputs_dir
    run_id = record.run_id
    pred_dir, fig_dir = out / "predictions", out / "figures"
    probs_path = pred_dir / f"{run_id}_test_probs.npz"
    with atomic_write(probs_path, "wb") as handle:
        np.savez_compressed(handle, probs=probs.astype(np.float32), labels=labels,
                            ids=np.asarray(data.test.ids))
    idx = example_indices(labels, n_examples, seed=cfg.values["seed"])
    examples_csv = pred_dir / f"{run_id}_examples.csv"
    _write_examples_csv(examples_csv, data.test.ids, labels, probs, idx, data.class_names)

    figures = {
        "curves": plots.plot_history(history, title=f"{model}: training curves") if history else None,
        "confusion": plots.plot_confusion_matrix(metrics.confusion_matrix, data.class_names,
                                                 title=f"{model}: test confusion matrix"),
        "examples": plots.plot_predictions(data.test.images[idx], labels[idx], probs[idx],
                                           data.class_names),
    }
    artifacts = {"test_probs": str(probs_path), "examples_csv": str(examples_csv)}
    if model_path is not None:
        artifacts["model"] = str(model_path)
    for name, fig in figures.items():
        if fig is None:
            continue
        path = plots.save_figure(fig, fig_dir / f"{run_id}_{name}.png")
        artifacts[f"figure_{name}"] = str(path)
        if show:
            plots.plt.show()
        else:
            plots.plt.close(fig)
    record.artifacts = artifacts
    write_record(record, out)
    return record


def other_runs_summary(cfg: RunConfig, exclude_notebook: str) -> list[str]:
    """One line per other notebook's run on the same dataset and profile.

    Each line gives the notebook, test accuracy, training seconds and model, so a
    notebook can put its own result beside the others without reading their files.
    Runs of ``exclude_notebook`` are left out; an empty list means nothing else ran.
    """
    records, _ = find_records(cfg.outputs_dir, dataset=cfg.values["dataset"], profile=cfg.profile)
    return [f"{r.notebook}: test accuracy {r.test.accuracy:.1%} after {r.train_seconds:.0f} s "
            f"of training ({r.model})" for r in records if r.notebook != exclude_notebook]
