"""Notebook 05's runs: every record of one dataset and profile with its test probabilities."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..paths import resolve_path
from ..records import RunRecord
from ..runs import (
    MissingRun,
    find_runs,
    is_seed_replicate,
    load_test_probabilities,
    with_rerun_command,
)

__all__ = ["Run", "MissingRun", "RunSet", "load_runs", "is_seed_replicate"]


@dataclass
class Run:
    """One trained model: its record and its saved test-set probabilities."""

    record: RunRecord
    label: str
    probs: np.ndarray
    labels: np.ndarray
    ids: list[str] = field(default_factory=list)
    val_probs: np.ndarray | None = None    # validation probabilities, when the run saved them
    val_labels: np.ndarray | None = None

    @property
    def preds(self) -> np.ndarray:
        """Predicted class per test image."""
        return self.probs.argmax(axis=1)

    @property
    def correct(self) -> np.ndarray:
        """Whether each test image is classified correctly (bool)."""
        return self.preds == self.labels


@dataclass
class RunSet:
    """The runs of one dataset and profile, and what is missing or unreadable."""

    dataset: str
    slug: str
    profile: str
    outputs_dir: Path
    runs: list[Run]
    missing: list[MissingRun] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)
    replicates: list[Run] = field(default_factory=list)  # the same runs with other seeds

    @property
    def labels(self) -> np.ndarray:
        """The test labels shared by all runs (empty when there are none)."""
        return self.runs[0].labels if self.runs else np.zeros(0, dtype=np.int64)

    @property
    def class_names(self) -> list[str]:
        """Class names shared by all runs."""
        return list(self.runs[0].record.class_names) if self.runs else []

    @property
    def n_test(self) -> int:
        """Number of test images the runs were scored on."""
        return int(len(self.labels))

    def matches(self, labels: np.ndarray) -> bool:
        """Whether ``labels`` are the runs' test labels, in the same order."""
        return bool(self.runs) and np.array_equal(np.asarray(labels), self.labels)

    def run(self, label: str) -> Run:
        """The run with this label."""
        for r in self.runs:
            if r.label == label:
                return r
        raise KeyError(f"No run labelled {label!r}; have {[r.label for r in self.runs]}")

    def summary(self) -> str:
        """What was found, what is missing and how to produce it, what could not be read."""
        lines = [f"Runs for dataset '{self.dataset}' (slug {self.slug}), profile '{self.profile}':"]
        if self.runs:
            for r in self.runs:
                lines.append(f"  found   {r.label:<34} {r.record.notebook}  "
                             f"(test images: {len(r.labels)})")
        else:
            lines.append("  found   none")
        for m in self.missing:
            lines.append(f"  MISSING {m.prefix} ({m.framework}): produce it with\n"
                         f"          {m.command}")
        for path, reason in self.problems:
            lines.append(f"  UNREADABLE {path.name}: {reason}")
        if len(self.runs) < 2:
            lines.append("  (fewer than two runs: the comparison below is partial)")
        return "\n".join(lines)


def _label(record: RunRecord, taken: set[str], width: int = 40) -> str:
    """``<model> (<framework>)``, the model name cut to ``width`` characters."""
    model = record.model if len(record.model) <= width else record.model[:width - 1] + "…"
    label = f"{model} ({record.framework})"
    if label in taken:
        label = f"{label} [{record.notebook}]"
    return label


def _probs_path(record: RunRecord, outputs_dir: Path) -> Path:
    """The test-probability file of a record, also when the project folder has moved."""
    stored = record.artifacts.get("test_probs")
    if stored and Path(stored).is_file():
        return Path(stored)
    return outputs_dir / "predictions" / f"{record.run_id}_test_probs.npz"


def load_runs(outputs_dir: str | os.PathLike[str], dataset: str, profile: str) -> RunSet:
    """Read the records and test probabilities of one dataset and profile.

    The records come from :func:`nbutils.runs.find_runs` (matched on the dataset's slug,
    so equivalent spellings of a spec match; the training notebooks of the framework
    registry without a record are listed as missing). A run whose test probabilities
    are missing, or whose test labels differ from the first run's, is reported as a
    problem and left out, since the paired comparisons need the same images in the
    same order.

    Args:
        outputs_dir: the outputs folder (``cfg.outputs_dir``).
        dataset: the dataset spec, e.g. ``"shapes"`` or ``"imagefolder:../data/x"``.
        profile: the profile name the runs were made with.
    """
    out = resolve_path(outputs_dir)
    found = find_runs(out, dataset, profile)
    runs: list[Run] = []
    problems: list[tuple[Path, str]] = []
    taken: set[str] = set()
    replicates: list[Run] = []
    for rec in found.records:
        run = _load_run(rec, out, runs[0] if runs else None, problems)
        if run is None:
            continue
        if is_seed_replicate(rec):  # `-p seed=N` of a run: the seed spread, not a model
            run.label = f"{rec.model} (seed {rec.seed})"
            replicates.append(run)
            continue
        run.label = _label(rec, taken)
        taken.add(run.label)
        runs.append(run)
    problems = [(p, with_rerun_command(why, p, profile, dataset)) for p, why in problems]
    return RunSet(dataset=dataset, slug=found.slug, profile=profile, outputs_dir=out, runs=runs,
                  missing=found.missing, problems=found.problems + problems,
                  replicates=replicates)



def _load_run(rec: RunRecord, out: Path, first: Run | None,
              problems: list[tuple[Path, str]]) -> Run | None:
    """One record's saved test probabilities as a :class:`Run`, or ``None`` with a problem."""
    path = _probs_path(rec, out)
    if not path.is_file():
        problems.append((out / "metrics" / f"{rec.run_id}.json",
                         f"its test probabilities {path} are missing; re-run {rec.notebook}"))
        return None
    try:
        saved = load_test_probabilities(path)
    except (OSError, ValueError, KeyError) as exc:
        problems.append((path, f"cannot read test probabilities ({exc}); re-run {rec.notebook}"))
        return None
    probs = np.asarray(saved["probs"], dtype=np.float64)
    labels = np.asarray(saved["labels"], dtype=np.int64)
    if probs.ndim != 2 or probs.shape != (len(labels), len(rec.class_names)):
        problems.append((path, f"probabilities of shape {probs.shape} do not fit "
                               f"{len(labels)} labels x {len(rec.class_names)} classes"))
        return None
    if first is not None and (not np.array_equal(labels, first.labels)
                              or rec.class_names != first.record.class_names):
        problems.append((path, f"its test set or classes differ from {first.record.notebook}'s "
                               f"({len(labels)} vs {len(first.labels)} images); re-run both "
                               "with the same dataset and profile"))
        return None
    ids = [str(i) for i in saved["ids"]] if "ids" in saved else []
    run = Run(rec, "", probs, labels, ids)
    if "val_probs" in saved and "val_labels" in saved:
        run.val_probs = np.asarray(saved["val_probs"], dtype=np.float64)
        run.val_labels = np.asarray(saved["val_labels"], dtype=np.int64)
    return run
