"""Training runs: finishing one the same way in every framework, and finding them again.

:func:`finish_run` turns a model's test probabilities and its :class:`~nbutils.fitting.FitResult`
into the metrics, the test probabilities, the example predictions (CSV and image
grid), the standard figures and the :class:`~nbutils.records.RunRecord`, so notebooks
02, 03 and 04 end with one call and notebook 05 finds identical files for each.

:func:`find_runs` is the one look-up of the runs of a dataset and profile that
notebooks 05 and 06 share: the records found, the training notebooks of the framework
registry that have none (with the command that produces them), and the files that
could not be read.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import RunConfig
from .data.core import ImageData
from .data.specs import parse_spec
from .fitting import FitResult
from .frameworks.registry import framework_of_notebook, training_notebooks
from .hardware import library_versions, peak_rss_mb
from .metrics import classification_metrics
from .paths import atomic_write, atomic_write_text, resolve_path
from .records import RunRecord, find_records, read_record, write_record

__all__ = ["finish_run", "example_indices", "record_class_table", "load_test_probabilities",
           "other_runs_summary", "MissingRun", "FoundRuns", "find_runs", "produce_command",
           "with_rerun_command", "load_run_data", "is_seed_replicate", "notebook_record"]

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


def record_class_table(record: RunRecord) -> Any:
    """A run record's per-class precision/recall/F1/support as a pandas DataFrame."""
    import pandas as pd

    df = pd.DataFrame(record.test.per_class).T
    df["support"] = df["support"].astype(int)
    return df.round(3)


def printable_id(image_id: str) -> str:
    """An image id that prints and encodes as UTF-8: bytes of a file name that are not
    valid UTF-8 (kept by Python as surrogates) are shown as ``\\xNN``."""
    return os.fsencode(image_id).decode("utf-8", "backslashreplace")


def _write_examples_csv(path: Path, ids: list[str], labels: np.ndarray, probs: np.ndarray,
                        idx: np.ndarray, class_names: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["test_index", "image_id", "true", "predicted", "confidence", "correct"])
    for i in idx:
        pred = int(probs[i].argmax())
        writer.writerow([int(i), printable_id(ids[i]), class_names[labels[i]], class_names[pred],
                         f"{probs[i, pred]:.4f}", bool(pred == labels[i])])
    atomic_write_text(path, buf.getvalue())


def load_test_probabilities(path: str | Path) -> dict[str, np.ndarray]:
    """Read the ``*_test_probs.npz`` file a run wrote: ``probs``, ``labels``, ``ids``
    (and ``val_probs``, ``val_labels`` when the run saved them)."""
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def finish_run(
    cfg: RunConfig,
    data: ImageData,
    *,
    notebook: str,
    model: str,
    probs: np.ndarray,
    fit: FitResult,
    num_params: int,
    model_path: str | Path | None = None,
    framework: str | None = None,
    extra: dict[str, Any] | None = None,
    n_examples: int = 10,
    show: bool = True,
    val_probs: np.ndarray | None = None,
) -> RunRecord:
    """Score test probabilities, write every standard output, and return the record.

    Training time, CPU time, threads, load and peak memory come from ``fit`` (what the
    framework's ``fit`` returned; ``FitResult.combine`` joins phases); ``extra`` adds
    what only this notebook knows. ``framework`` defaults to the one whose training
    notebook is ``notebook`` in the framework registry. ``val_probs``, the model's
    probabilities on the validation split, are saved beside the test ones (notebook 05
    fits its temperature scaling on them).

    Writes under ``cfg.outputs_dir``: ``metrics/<run_id>.json``,
    ``predictions/<run_id>_test_probs.npz``, ``predictions/<run_id>_examples.csv``
    and ``figures/<run_id>_{curves,confusion,examples}.png``.
    """
    labels = np.asarray(data.test.labels)
    probs = np.asarray(probs, dtype=np.float64)
    metrics = classification_metrics(labels, probs, data.class_names)
    peaks = {"host_rss": round(peak_rss_mb(), 1)}
    if fit.device_peak_mb is not None:
        peaks["device"] = round(fit.device_peak_mb, 1)
    record = RunRecord(
        notebook=notebook, framework=framework or framework_of_notebook(notebook).id,
        model=model, dataset=data.spec, profile=cfg.profile, seed=cfg.seed,
        config=cfg.to_dict(), class_names=list(data.class_names), num_params=int(num_params),
        train_seconds=float(fit.train_seconds), history=[dict(h) for h in fit.history],
        test=metrics, peak_memory_mb=peaks, library_versions=library_versions(),
        device={"type": cfg.device, "name": cfg.hardware.describe()},
        extra={**fit.record_extra(), **dict(extra or {})},
    )
    idx = example_indices(labels, n_examples, seed=cfg.seed)
    if val_probs is not None and np.shape(val_probs) != (len(data.val), len(data.class_names)):
        raise ValueError(f"val_probs has shape {np.shape(val_probs)}; expected "
                         f"({len(data.val)}, {len(data.class_names)}) for the validation split")
    artifacts = _write_predictions(cfg.outputs_dir, record.run_id, data, probs, idx, val_probs)
    if model_path is not None:
        artifacts["model"] = str(model_path)
    artifacts.update(_write_figures(cfg.outputs_dir, record, data, probs, idx, show))
    record.artifacts = artifacts
    path = write_record(record, cfg.outputs_dir)
    if cfg.values.get("tracking", "none") == "mlflow":
        from .tracking import log_run

        record.extra["mlflow_run_id"] = log_run(record, path, cfg.outputs_dir)
        write_record(record, cfg.outputs_dir)
    return record


def _write_predictions(out: Path, run_id: str, data: ImageData, probs: np.ndarray,
                       idx: np.ndarray, val_probs: np.ndarray | None = None) -> dict[str, str]:
    """The test (and validation) probabilities (npz) and the example predictions (CSV)."""
    labels = np.asarray(data.test.labels)
    probs_path = out / "predictions" / f"{run_id}_test_probs.npz"
    arrays = {"probs": probs.astype(np.float32), "labels": labels,
              "ids": np.asarray(data.test.ids)}
    if val_probs is not None:
        arrays.update(val_probs=np.asarray(val_probs, np.float32),
                      val_labels=np.asarray(data.val.labels))
    with atomic_write(probs_path, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    examples_csv = out / "predictions" / f"{run_id}_examples.csv"
    _write_examples_csv(examples_csv, data.test.ids, labels, probs, idx, data.class_names)
    return {"test_probs": str(probs_path), "examples_csv": str(examples_csv)}


def _write_figures(out: Path, record: RunRecord, data: ImageData, probs: np.ndarray,
                   idx: np.ndarray, show: bool) -> dict[str, str]:
    """Curves, confusion matrix and example grid; shown (in a notebook) or closed."""
    from . import plots

    labels = np.asarray(data.test.labels)
    figures = {
        "curves": (plots.plot_history(record.history, title=f"{record.model}: training curves")
                   if record.history else None),
        "confusion": plots.plot_confusion_matrix(record.test.confusion_matrix, data.class_names,
                                                 title=f"{record.model}: test confusion matrix"),
        "examples": plots.plot_predictions(data.test.images[idx], labels[idx], probs[idx],
                                           data.class_names),
    }
    artifacts = {}
    for name, fig in figures.items():
        if fig is None:
            continue
        path = plots.save_figure(fig, out / "figures" / f"{record.run_id}_{name}.png")
        artifacts[f"figure_{name}"] = str(path)
        if show:
            plots.plt.show()
        else:
            plots.plt.close(fig)
    return artifacts


def other_runs_summary(cfg: RunConfig, exclude_notebook: str) -> list[str]:
    """One line per other notebook's run on the same dataset and profile.

    Each line gives the notebook, test accuracy, training seconds and model, so a
    notebook can put its own result beside the others without reading their files.
    Runs of ``exclude_notebook`` are left out; an empty list means nothing else ran.
    """
    found = find_runs(cfg.outputs_dir, cfg.dataset, cfg.profile)
    return [f"{r.notebook}: test accuracy {r.test.accuracy:.1%} after {r.train_seconds:.0f} s "
            f"of training ({r.model})" for r in found.records if r.notebook != exclude_notebook]


# --------------------------------------------------------------------------- finding runs


def produce_command(profile: str, dataset: str, prefixes: list[str]) -> str:
    """``python -m nbutils.run --profile P --dataset D --only 02,03``: makes those runs."""
    return (f"python -m nbutils.run --profile {profile} --dataset {dataset} "
            f"--only {','.join(prefixes)}")


@dataclass(frozen=True)
class MissingRun:
    """A registered training notebook with no record for this dataset and profile."""

    prefix: str
    framework: str
    label: str
    command: str


@dataclass
class FoundRuns:
    """The runs of one dataset and profile, the missing ones and the unreadable files."""

    dataset: str
    slug: str
    profile: str
    records: list[RunRecord] = field(default_factory=list)
    missing: list[MissingRun] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def command(self) -> str:
        """The command that trains what is missing (or every training notebook)."""
        prefixes = [m.prefix for m in self.missing] or list(training_notebooks())
        return produce_command(self.profile, self.dataset, prefixes)


def _concerns(path: Path, slug: str, profile: str) -> bool:
    """Whether an unreadable record file (``<notebook>__<slug>__<profile>.json``) is ours."""
    parts = path.stem.split("__")
    return len(parts) != 3 or (parts[1] == slug and parts[2] == profile)


def with_rerun_command(reason: str, path: Path, profile: str, dataset: str) -> str:
    """``reason`` followed by the command that re-creates the run whose file is ``path``."""
    prefix = path.name.split("_", 1)[0]
    if not prefix.isdigit():
        return reason
    return f"{reason} To re-create it: {produce_command(profile, dataset, [prefix])}"


def is_seed_replicate(record: RunRecord) -> bool:
    """Whether ``record`` is a run repeated with another seed and nothing else changed
    (its variant is ``seed-N``, what ``python -m nbutils.run --seeds`` makes)."""
    return re.fullmatch(r"seed-\d+", str(record.config.get("variant", ""))) is not None


def notebook_record(cfg: Any, notebook: str) -> RunRecord | None:
    """The record ``notebook`` (or its ``nbutils.train`` recipe) wrote with ``cfg``'s
    settings, if any: the notebook's own run when ``cfg`` has no overrides, else the
    variant's (``cfg.run_id``)."""
    path = cfg.outputs_dir / "metrics" / f"{cfg.run_id(notebook)}.json"
    return read_record(path) if path.exists() else None


def find_runs(outputs_dir: str | Path, dataset: str, profile: str) -> FoundRuns:
    """The records of ``dataset`` (matched by its slug) and ``profile``, sorted by notebook.

    ``missing`` lists each training notebook of the framework registry with no record
    and no unreadable file; ``problems`` the unreadable record files of this dataset and
    profile, each with the command that re-creates it.
    """
    slug = parse_spec(dataset).slug
    records, problems = find_records(resolve_path(outputs_dir), dataset=dataset, profile=profile)
    problems = [(p, with_rerun_command(why, p, profile, dataset)) for p, why in problems
                if _concerns(p, slug, profile)]
    mine = sorted(records, key=lambda r: r.notebook)
    present = {r.notebook[:2] for r in mine} | {p.name[:2] for p, _ in problems}
    missing = [MissingRun(prefix, fw.id, fw.label, produce_command(profile, dataset, [prefix]))
               for prefix, fw in training_notebooks().items() if prefix not in present]
    return FoundRuns(dataset=dataset, slug=slug, profile=profile, records=mine,
                     missing=missing, problems=problems)


def load_run_data(record: RunRecord) -> ImageData:
    """The dataset of a run, split as it was trained (never downloads; quiet)."""
    from .data import load

    d = dict(record.config.get("data") or {})
    return load(record.dataset, image_size=int(d.get("image_size", 32)), seed=int(record.seed),
                val_fraction=d.get("val_fraction", 0.1), test_fraction=d.get("test_fraction", 0.15),
                max_train_per_class=d.get("max_train_per_class"),
                max_test_per_class=d.get("max_test_per_class"),
                data_dir=(record.config.get("paths") or {}).get("data_dir", "data"),
                num_workers=1, download=False, progress=False)
