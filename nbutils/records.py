"""Run records: one versioned JSON file per training run, the same fields for every framework.

Notebook 05 compares runs by reading these files alone, so every training
notebook fills the same schema; framework-specific extras go under ``extra``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .frameworks.registry import framework_ids
from .paths import atomic_write_json, resolve_path

__all__ = [
    "SCHEMA_VERSION",
    "RecordError",
    "TestMetrics",
    "RunRecord",
    "make_run_id",
    "dataset_slug",
    "record_path",
    "write_record",
    "read_record",
    "find_records",
]

SCHEMA_VERSION = 1


class RecordError(ValueError):
    """A run record is malformed or of a schema this version cannot read."""


def make_run_id(notebook: str, dataset: str, profile: str, variant: str = "") -> str:
    """``<notebook>__<dataset slug>__<profile>[__<variant>]``: the one place a run id is made.

    ``cfg.run_id(notebook)`` and ``RunRecord.run_id`` both call it, so a run's model,
    checkpoint, figures and record share one name. ``variant`` names the overrides of
    the profile's settings (``epochs-5``), so two variants never overwrite each other.
    """
    return f"{notebook}__{dataset_slug(dataset)}__{profile}" + (f"__{variant}" if variant else "")


def dataset_slug(spec: str) -> str:
    """The dataset's part of a run id (``imagefolder-cifar10-subset``), also for odd specs."""
    from .data.specs import parse_spec

    try:
        return parse_spec(spec).slug
    except Exception:  # noqa: BLE001 - unusual specs still get a name
        return "".join(c if c.isalnum() else "-" for c in spec)


@dataclass
class TestMetrics:
    """Test-set metrics of a run (macro averages over classes)."""

    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    confusion_matrix: list[list[int]]
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    n_test: int = 0
    top5_accuracy: float | None = None  # when there are more than 5 classes


@dataclass
class RunRecord:
    """Everything a later notebook needs to know about one training run."""

    notebook: str
    framework: str
    model: str
    dataset: str
    profile: str
    seed: int
    config: dict[str, Any]
    class_names: list[str]
    num_params: int
    train_seconds: float
    history: list[dict[str, float]]
    test: TestMetrics
    peak_memory_mb: dict[str, float]
    library_versions: dict[str, str]
    device: dict[str, Any]
    artifacts: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    schema_version: int = SCHEMA_VERSION

    def validate(self) -> RunRecord:
        """Check types and ranges; raise :class:`RecordError` naming the bad field."""
        if self.framework not in framework_ids():
            raise RecordError(f"framework must be one of {framework_ids()}, "
                              f"got {self.framework!r}")
        for name in ("notebook", "model", "dataset", "profile"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise RecordError(f"'{name}' must be a non-empty string")
        if not isinstance(self.num_params, int) or self.num_params < 0:
            raise RecordError(f"'num_params' must be a non-negative int, got {self.num_params!r}")
        if not self.train_seconds >= 0:
            raise RecordError(f"'train_seconds' must be >= 0, got {self.train_seconds!r}")
        t = self.test
        for name in ("accuracy", "macro_precision", "macro_recall", "macro_f1"):
            value = getattr(t, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise RecordError(f"'test.{name}' must be a number in [0, 1], got {value!r}")
        k = len(self.class_names)
        cm = t.confusion_matrix
        if len(cm) != k or any(len(row) != k for row in cm):
            raise RecordError(f"'test.confusion_matrix' must be {k}x{k} for {k} classes")
        if not isinstance(self.history, list) or not all(isinstance(h, dict) for h in self.history):
            raise RecordError("'history' must be a list of per-epoch dicts")
        return self

    @property
    def run_id(self) -> str:
        """``<notebook>__<dataset slug>__<profile>``: the record's file stem."""
        return make_run_id(self.notebook, self.dataset, self.profile,
                           str(self.config.get("variant") or ""))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "record") -> RunRecord:
        """Build and validate a record; unknown schema versions are rejected clearly."""
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise RecordError(
                f"{source} has schema_version {version!r}; this nbutils reads version "
                f"{SCHEMA_VERSION}. Re-run the notebook that wrote it to refresh the record "
                "(or update nbutils if the record is newer)."
            )
        names = {f.name for f in fields(cls)}
        missing = sorted(n for n in names if n not in data and n not in ("artifacts", "extra", "created_at"))
        if missing:
            raise RecordError(f"{source} lacks field(s): {', '.join(missing)}")
        unknown = sorted(set(data) - names)
        if unknown:
            raise RecordError(f"{source} has unknown field(s): {', '.join(unknown)}")
        payload = dict(data)
        test = payload["test"]
        test_names = {f.name for f in fields(TestMetrics)}
        if not isinstance(test, dict) or set(test) - test_names:
            raise RecordError(f"{source}: 'test' must hold only {sorted(test_names)}")
        try:
            payload["test"] = TestMetrics(**test)
        except TypeError as exc:
            raise RecordError(f"{source}: 'test' is incomplete ({exc})") from exc
        return cls(**payload).validate()


def record_path(record: RunRecord, outputs_dir: str | os.PathLike[str] = "outputs") -> Path:
    """Where a record lives: ``outputs/metrics/<run_id>.json``."""
    return resolve_path(outputs_dir) / "metrics" / f"{record.run_id}.json"


def write_record(record: RunRecord, outputs_dir: str | os.PathLike[str] = "outputs") -> Path:
    """Validate and write a record atomically; returns its path."""
    record.validate()
    return atomic_write_json(record_path(record, outputs_dir), record.to_dict())


def read_record(path: str | os.PathLike[str]) -> RunRecord:
    """Read and validate one record file."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise RecordError(f"{p} is not valid JSON ({exc}); delete it and re-run its notebook") from exc
    if not isinstance(data, dict):
        raise RecordError(f"{p} must hold a JSON object")
    return RunRecord.from_dict(data, source=str(p))


def find_records(
    outputs_dir: str | os.PathLike[str] = "outputs",
    dataset: str | None = None,
    profile: str | None = None,
) -> tuple[list[RunRecord], list[tuple[Path, str]]]:
    """All readable records (optionally for one dataset/profile) and the unreadable ones.

    Datasets are matched by their slug, the part of the run id (and so of the record's
    file name) they give: ``imagefolder:../x`` and ``imagefolder:/abs/x`` match, and so
    do two folders with the same name, whose runs share file names.

    Returns:
        ``(records, problems)`` where ``problems`` lists ``(path, reason)``.
    """
    folder = resolve_path(outputs_dir) / "metrics"
    wanted = dataset_slug(dataset) if dataset is not None else None
    records, problems = [], []
    for path in sorted(folder.glob("*.json")):
        try:
            rec = read_record(path)
        except RecordError as exc:
            problems.append((path, str(exc)))
            continue
        if wanted is not None and dataset_slug(rec.dataset) != wanted:
            continue
        if profile is not None and rec.profile != profile:
            continue
        records.append(rec)
    return records, problems
