"""Notebook 05: compare the course's trained models as a fair benchmark.

Everything here works from what the training notebooks leave behind, with no
special case per framework:

* :func:`load_runs` reads every :class:`~nbutils.records.RunRecord` of one dataset
  and profile (datasets are matched by their slug, so ``shapes`` and ``shapes ``
  are the same), their saved test probabilities, and lists the runs that are
  missing (with the command that produces each) or unreadable (with the reason).
* :func:`measure_runs` reloads each saved model through
  :func:`nbutils.inference.load_classifier`, one at a time, and times it with one
  harness: batch-1 latency (median of many calls after warm-up) and throughput at
  one batch size, on the same device and the same test images for every model.
* :func:`build_comparison` computes the table (accuracy with its 95% interval,
  macro precision/recall/F1, top-1 error per class, ECE, parameters, size on
  disk, training time, latency, throughput, peak memory), the ensemble of all
  models against the best single one, paired significance tests between every
  pair, and the images on which the models disagree.
* :mod:`nbutils.compare_report` writes ``outputs/comparison/``: CSV tables,
  figures and a short ``report.md`` that reads without Jupyter.

The module itself imports no deep learning framework.
"""

from __future__ import annotations

import gc
import importlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from .data.specs import DatasetError, parse_spec
from .metrics import (
    McNemarResult,
    bootstrap_accuracy_diff,
    classification_metrics,
    ensemble_probabilities,
    expected_calibration_error,
    mcnemar_test,
)
from .paths import atomic_write_text, resolve_path
from .records import RunRecord, find_records
from .report import load_test_probabilities

__all__ = [
    "EXPECTED_RUNS",
    "Run",
    "MissingRun",
    "RunSet",
    "SpeedResult",
    "EnsembleResult",
    "Comparison",
    "load_runs",
    "missing_run_command",
    "dir_size_bytes",
    "time_calls",
    "measure_classifier",
    "measure_runs",
    "speed_summary",
    "wilson_interval",
    "build_table",
    "per_class_table",
    "ensemble_vs_best",
    "pairwise_significance",
    "disagreements",
    "build_comparison",
]

# The training notebooks the comparison expects, by number prefix -> framework.
EXPECTED_RUNS: dict[str, str] = {"02": "pytorch", "03": "keras", "04": "huggingface"}

# Table columns that hold costs; for the ensemble they are the sums over its members.
_SUMMED = ("params", "size_mib", "train_s", "latency_ms")


# --------------------------------------------------------------------------- loading


@dataclass
class Run:
    """One trained model: its record and its saved test-set probabilities."""

    record: RunRecord
    label: str
    probs: np.ndarray
    labels: np.ndarray
    ids: list[str] = field(default_factory=list)

    @property
    def preds(self) -> np.ndarray:
        """Predicted class per test image."""
        return self.probs.argmax(axis=1)

    @property
    def correct(self) -> np.ndarray:
        """Whether each test image is classified correctly (bool)."""
        return self.preds == self.labels


@dataclass(frozen=True)
class MissingRun:
    """An expected training run with no record for this dataset and profile."""

    prefix: str
    framework: str
    command: str


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


def missing_run_command(prefix: str, profile: str, dataset: str) -> str:
    """The command that produces one training notebook's run."""
    return f"python -m nbutils.run --profile {profile} --dataset {dataset} --only {prefix}"


def _slug(spec: str) -> str | None:
    try:
        return parse_spec(spec).slug
    except DatasetError:
        return None


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


def _problem_concerns(path: Path, slug: str, profile: str) -> bool:
    """Whether an unreadable record file (``<notebook>__<slug>__<profile>.json``) is ours."""
    parts = path.stem.split("__")
    if len(parts) != 3:
        return True  # cannot tell: report it
    return parts[1] == slug and parts[2] == profile


def _with_command(reason: str, path: Path, profile: str, dataset: str) -> str:
    prefix = path.name.split("_", 1)[0]
    if not prefix.isdigit():
        return reason
    return f"{reason} To re-create it: {missing_run_command(prefix, profile, dataset)}"


def load_runs(
    outputs_dir: str | os.PathLike[str],
    dataset: str,
    profile: str,
    expected: Mapping[str, str] = EXPECTED_RUNS,
) -> RunSet:
    """Read the records and test probabilities of one dataset and profile.

    Records are matched on the dataset's slug (so equivalent spellings of a spec
    match). A run whose test probabilities are missing, or whose test labels differ
    from the first run's, is reported as a problem and left out, since the paired
    comparisons need the same images in the same order.

    Args:
        outputs_dir: the outputs folder (``cfg.outputs_dir``).
        dataset: the dataset spec, e.g. ``"shapes"`` or ``"imagefolder:../data/x"``.
        profile: the profile name the runs were made with.
        expected: notebook number prefix -> framework of the runs that should exist.
    """
    out = resolve_path(outputs_dir)
    slug = parse_spec(dataset).slug
    records, problems = find_records(out, profile=profile)
    problems = [(p, why) for p, why in problems if _problem_concerns(p, slug, profile)]
    mine = sorted((r for r in records if _slug(r.dataset) == slug), key=lambda r: r.notebook)
    runs: list[Run] = []
    taken: set[str] = set()
    for rec in mine:
        path = _probs_path(rec, out)
        if not path.is_file():
            problems.append((out / "metrics" / f"{rec.run_id}.json",
                             f"its test probabilities {path} are missing; re-run {rec.notebook}"))
            continue
        try:
            saved = load_test_probabilities(path)
        except (OSError, ValueError, KeyError) as exc:
            problems.append((path, f"cannot read test probabilities ({exc}); re-run {rec.notebook}"))
            continue
        probs = np.asarray(saved["probs"], dtype=np.float64)
        labels = np.asarray(saved["labels"], dtype=np.int64)
        if probs.ndim != 2 or probs.shape != (len(labels), len(rec.class_names)):
            problems.append((path, f"probabilities of shape {probs.shape} do not fit "
                                   f"{len(labels)} labels x {len(rec.class_names)} classes"))
            continue
        if runs and (not np.array_equal(labels, runs[0].labels)
                     or rec.class_names != runs[0].record.class_names):
            problems.append((path, f"its test set or classes differ from {runs[0].record.notebook}'s "
                                   f"({len(labels)} vs {len(runs[0].labels)} images); re-run both "
                                   "with the same dataset and profile"))
            continue
        label = _label(rec, taken)
        taken.add(label)
        ids = [str(i) for i in saved["ids"]] if "ids" in saved else []
        runs.append(Run(rec, label, probs, labels, ids))
    # a run that exists but cannot be used is reported as a problem, not as missing
    present = {r.notebook.split("_", 1)[0] for r in mine}
    present |= {p.name.split("_", 1)[0] for p, _ in problems}
    missing = [MissingRun(prefix, fw, missing_run_command(prefix, profile, dataset))
               for prefix, fw in expected.items() if prefix not in present]
    problems = [(p, _with_command(why, p, profile, dataset)) for p, why in problems]
    return RunSet(dataset=dataset, slug=slug, profile=profile, outputs_dir=out, runs=runs,
                  missing=missing, problems=problems)


# --------------------------------------------------------------------------- speed


@dataclass
class SpeedResult:
    """What the one harness measured for one saved model (``error`` says why not)."""

    label: str
    device: str
    size_mib: float | None = None
    latency_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_repeats: int = 0
    throughput_ips: float | None = None
    throughput_batches: int = 0
    batch_size: int = 0
    load_seconds: float | None = None
    reload_agreement: float | None = None
    error: str | None = None


def dir_size_bytes(path: str | os.PathLike[str]) -> int:
    """Total size of the files under ``path`` (a file's own size for a file)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 0,
               budget_s: float | None = None, min_repeats: int = 3) -> np.ndarray:
    """Seconds per call of ``fn`` for ``repeats`` calls after ``warmup`` untimed calls.

    Warm-up calls absorb one-off costs (lazy initialisation, graph tracing, kernel
    selection, caches) that would otherwise inflate the first timings. With
    ``budget_s``, timing stops early once the timed calls have taken that long (after
    at least ``min_repeats`` calls), so a slow model cannot stall the notebook; the
    length of the result says how many calls were timed.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(max(0, warmup)):
        fn()
    times: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if budget_s is not None and len(times) >= min_repeats and sum(times) > budget_s:
            break
    return np.asarray(times, dtype=np.float64)


def _batch(images: np.ndarray, size: int) -> np.ndarray:
    """The first ``size`` images, cycling when there are fewer."""
    return np.ascontiguousarray(np.take(images, np.arange(size) % len(images), axis=0))


def measure_classifier(
    clf: Any,
    images: np.ndarray,
    *,
    batch_size: int,
    latency_repeats: int,
    warmup_repeats: int,
    throughput_batches: int,
    reference_probs: np.ndarray | None = None,
    budget_s: float | None = None,
) -> dict[str, float | None]:
    """Time one loaded classifier: batch-1 latency and throughput at ``batch_size``.

    Every call goes through ``clf.predict_proba`` on uint8 images, so the times
    include each model's own resizing and normalisation and the copy back to
    NumPy (which also waits for a GPU to finish).

    Returns:
        ``latency_ms`` (median) and ``latency_p90_ms`` over ``latency_repeats``
        batch-1 calls on different test images, ``throughput_ips`` (images per
        second from the median time of ``throughput_batches`` full batches), and
        ``reload_agreement``: the share of the batch on which the reloaded model
        predicts the same class as ``reference_probs`` (the run's stored test
        probabilities of the same images), or ``None``. ``latency_repeats`` and
        ``throughput_batches`` in the result are the numbers of calls timed, fewer
        than asked when the timings of one kind exceed ``budget_s`` seconds.
    """
    if len(images) == 0:
        raise ValueError("need at least one test image to time the models")
    images = np.ascontiguousarray(images)
    n = len(images)
    batch = _batch(images, batch_size)
    first = np.asarray(clf.predict_proba(batch, batch_size=batch_size))  # also a warm-up
    agreement = None
    if reference_probs is not None:
        m = min(n, batch_size)
        agreement = float((first[:m].argmax(1) == np.asarray(reference_probs)[:m].argmax(1)).mean())
    counter = iter(range(10 ** 9))

    def one() -> Any:
        i = next(counter) % n
        return clf.predict_proba(images[i:i + 1], batch_size=1)

    lat = time_calls(one, latency_repeats, warmup_repeats, budget_s=budget_s)
    thr = time_calls(lambda: clf.predict_proba(batch, batch_size=batch_size),
                     max(1, throughput_batches), warmup=0, budget_s=budget_s, min_repeats=1)
    return {
        "latency_repeats": len(lat),
        "throughput_batches": len(thr),
        "latency_ms": float(np.median(lat) * 1e3),
        "latency_p90_ms": float(np.quantile(lat, 0.9) * 1e3),
        "throughput_ips": float(batch_size / np.median(thr)),
        "reload_agreement": agreement,
    }


def measure_runs(
    runset: RunSet,
    images: np.ndarray,
    *,
    device: str = "cpu",
    batch_size: int = 64,
    latency_repeats: int = 50,
    warmup_repeats: int = 5,
    throughput_batches: int = 5,
    budget_s: float | None = None,
    isolate: bool = True,
    threads: int = 0,
    loader: Callable[..., Any] | str | None = None,
    check_reload: bool = True,
    timeout_s: float = 900.0,
    progress: bool = True,
) -> dict[str, SpeedResult]:
    """Reload and time every run's saved model, one at a time, with the same harness.

    Each model is loaded through ``loader`` (default
    :func:`nbutils.inference.load_classifier`, which imports only that model's
    framework) and measured by :func:`measure_classifier` on the same ``images``.
    With ``isolate`` (the default) every model is measured in a fresh Python
    process: frameworks then cannot disturb one another's timings (thread pools,
    memory, GPU state left behind) or crash one another (importing PyTorch's
    compiler stack after TensorFlow can segfault), and a model that crashes is
    reported instead of stopping the notebook. ``loader`` is then ``None`` or a
    ``"module:function"`` string; in-process (``isolate=False``) it may be any callable.
    ``threads`` > 0 gives every isolated model the same number of CPU threads
    (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``TF_NUM_INTRAOP_THREADS``); 0 keeps
    each framework's default.

    A model that cannot be found, loaded or run gets a :class:`SpeedResult` whose
    ``error`` says why; the others are still measured. With ``check_reload`` (pass
    it only when ``images`` are the runs' test images, in order), the reloaded
    model's predictions on the first batch are compared with the run's saved ones.
    ``budget_s`` caps the seconds spent on each model's latency and throughput
    timings (see :func:`time_calls`); ``timeout_s`` the whole of an isolated run.
    """
    from tqdm.auto import tqdm

    if isolate and callable(loader):
        raise TypeError("with isolate=True, pass loader as a 'module:function' string")
    settings = {"batch_size": batch_size, "latency_repeats": latency_repeats,
                "warmup_repeats": warmup_repeats, "throughput_batches": throughput_batches,
                "budget_s": budget_s}
    images = np.ascontiguousarray(images)
    results: dict[str, SpeedResult] = {}
    bar = tqdm(runset.runs, desc="timing models", disable=not progress)
    for run in bar:
        bar.set_postfix_str(run.label)
        res = SpeedResult(label=run.label, device=device, batch_size=batch_size)
        results[run.label] = res
        model_dir = run.record.artifacts.get("model")
        if not model_dir:
            res.error = f"{run.record.notebook} saved no model folder (no 'model' artifact)"
            continue
        folder = resolve_path(model_dir)
        if not folder.exists():
            res.error = f"model folder {folder} is missing; re-run {run.record.notebook}"
            continue
        res.size_mib = dir_size_bytes(folder) / 2 ** 20
        reference = run.probs if check_reload and len(images) == len(run.probs) else None
        try:
            if isolate:
                figures = _measure_isolated(folder, images, reference, settings, device,
                                            loader, timeout_s, threads)
            else:
                figures = _measure_here(folder, images, reference, settings, device, loader)
        except Exception as exc:  # noqa: BLE001 - one broken model must not stop the others
            res.error = f"could not load or run {folder.name}: {type(exc).__name__}: {exc}"
            continue
        res.load_seconds = figures["load_seconds"]
        res.latency_ms = figures["latency_ms"]
        res.latency_p90_ms = figures["latency_p90_ms"]
        res.throughput_ips = figures["throughput_ips"]
        res.reload_agreement = figures["reload_agreement"]
        res.latency_repeats = int(figures["latency_repeats"])
        res.throughput_batches = int(figures["throughput_batches"])
    return results


# environment variables that set the CPU threads of PyTorch, NumPy's BLAS and TensorFlow
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                     "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


class MeasureError(RuntimeError):
    """The process measuring one model failed; the message has its last words."""


def _resolve_loader(loader: Callable[..., Any] | str | None) -> Callable[..., Any]:
    if loader is None:
        from .inference import load_classifier

        return load_classifier
    if callable(loader):
        return loader
    module, _, name = loader.partition(":")
    if not module or not name:
        raise ValueError(f"loader must look like 'module:function', got {loader!r}")
    return getattr(importlib.import_module(module), name)


def _measure_here(folder: Path, images: np.ndarray, reference: np.ndarray | None,
                  settings: dict[str, Any], device: str,
                  loader: Callable[..., Any] | str | None) -> dict[str, Any]:
    """Load one model in this process, measure it, release it."""
    load = _resolve_loader(loader)
    start = time.perf_counter()
    clf = load(folder, device=device)
    load_seconds = time.perf_counter() - start
    try:
        figures = measure_classifier(clf, images, reference_probs=reference, **settings)
    finally:
        del clf
        gc.collect()
    return {**figures, "load_seconds": load_seconds}


def _measure_isolated(folder: Path, images: np.ndarray, reference: np.ndarray | None,
                      settings: dict[str, Any], device: str, loader: str | None,
                      timeout_s: float, threads: int = 0) -> dict[str, Any]:
    """Measure one model in a fresh ``python -m nbutils.compare JOB.json`` process."""
    with tempfile.TemporaryDirectory(prefix="nbutils-measure-") as tmp:
        work = Path(tmp)
        np.save(work / "images.npy", images)
        if reference is not None:
            np.save(work / "reference.npy", reference)
        job = {"model_dir": str(folder), "device": device, "settings": settings,
               "loader": loader, "images": str(work / "images.npy"),
               "reference": str(work / "reference.npy") if reference is not None else None,
               "result": str(work / "result.json")}
        (work / "job.json").write_text(json.dumps(job))
        env = dict(os.environ)
        if threads > 0:
            env.update({name: str(threads) for name in _THREAD_VARIABLES})
        try:
            proc = subprocess.run([sys.executable, "-m", "nbutils.compare", str(work / "job.json")],
                                  capture_output=True, text=True, timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired as exc:
            raise MeasureError(f"measuring took longer than {timeout_s:.0f} s") from exc
        if proc.returncode != 0:
            raise MeasureError(_failure(proc.returncode, proc.stderr))
        return json.loads((work / "result.json").read_text())


def _failure(returncode: int, stderr: str) -> str:
    """Why a measuring process failed: its exit status and the last line it printed."""
    if returncode < 0:
        try:
            how = f"crashed with signal {-returncode} ({signal.Signals(-returncode).name})"
        except ValueError:
            how = f"crashed with signal {-returncode}"
    else:
        how = f"exited with status {returncode}"
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return f"the measuring process {how}" + (f": {lines[-1]}" if lines else "")


def _worker(job_path: str) -> int:
    """Entry point of the measuring process: read the job, measure, write the result."""
    job = json.loads(Path(job_path).read_text())
    images = np.load(job["images"])
    reference = np.load(job["reference"]) if job["reference"] else None
    figures = _measure_here(Path(job["model_dir"]), images, reference, job["settings"],
                            job["device"], job["loader"])
    atomic_write_text(job["result"], json.dumps(figures))
    return 0


def speed_summary(speed: Mapping[str, SpeedResult], width: int = 34) -> str:
    """One line per model (label padded to ``width``): size, load time, latency,
    throughput and the reload check, or why it was not measured."""
    if not speed:
        return "No models were timed."
    lines = []
    for label, sp in speed.items():
        label = f"{label:<{width}}" if width else f"{label}:"
        if sp.error:
            lines.append(f"{label} not measured: {sp.error}")
            continue
        check = ("" if sp.reload_agreement is None
                 else f", reloaded model agrees with the record on {sp.reload_agreement:.0%}")
        lines.append(f"{label} {sp.size_mib:.2f} MiB on disk, loaded in "
                     f"{sp.load_seconds:.1f} s; batch 1: {sp.latency_ms:.2f} ms median "
                     f"(p90 {sp.latency_p90_ms:.2f} ms, {sp.latency_repeats} calls); "
                     f"batch {sp.batch_size}: {sp.throughput_ips:,.0f} images/s "
                     f"({sp.throughput_batches} batches){check}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- metrics


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% for ``z=1.96``); (0, 1) when n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


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
    }
    for name, scores in m.per_class.items():
        row[f"err_{name}"] = 1.0 - scores["recall"] if scores["support"] else float("nan")
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
    train_s, latency_ms, latency_p90_ms, throughput_ips, train_peak_host_mib,
    train_peak_device_mib`` and ``err_<class>`` (top-1 error per class = 1 -
    recall). Metrics come from the saved test probabilities; latency, throughput
    and size from ``speed``. For the ensemble, parameters, size, training time and
    latency are the sums over its members (it runs them all), throughput the
    inverse of the summed per-image times.
    """
    import pandas as pd

    speed = speed or {}
    rows = []
    for run in runset.runs:
        rec = run.record
        row = _metric_row(run.label, run.labels, run.probs, runset.class_names, ece_bins)
        sp = speed.get(run.label)
        row.update({
            "framework": rec.framework, "notebook": rec.notebook, "params": rec.num_params,
            "size_mib": sp.size_mib if sp else None, "epochs": len(rec.history),
            "train_s": rec.train_seconds,
            "latency_ms": sp.latency_ms if sp else None,
            "latency_p90_ms": sp.latency_p90_ms if sp else None,
            "throughput_ips": sp.throughput_ips if sp else None,
            "train_peak_host_mib": rec.peak_memory_mb.get("host_rss"),
            "train_peak_device_mib": rec.peak_memory_mb.get("device"),
        })
        rows.append(row)
    if ensemble is not None:
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
        rows.append(row)
    columns = ["model", "framework", "notebook", "accuracy", "acc_ci_low", "acc_ci_high",
               "macro_precision", "macro_recall", "macro_f1", "ece", "params", "size_mib",
               "epochs", "train_s", "latency_ms", "latency_p90_ms", "throughput_ips",
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


# --------------------------------------------------------------------------- the whole


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


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
