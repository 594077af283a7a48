"""Notebook 05's speed measurements: one harness times every saved model alike."""

from __future__ import annotations

import gc
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..paths import atomic_write_text, resolve_path
from .runs import RunSet

__all__ = ["SpeedResult", "MeasureError", "dir_size_bytes", "time_calls", "measure_classifier",
           "measure_runs", "speed_summary"]


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
    onnx_latency_ms: float | None = None  # the same model exported, run by ONNX Runtime
    onnx_error: str | None = None
    error: str | None = None


def dir_size_bytes(path: str | os.PathLike[str]) -> int:
    """Total size of the files of the model saved in ``path`` (a file's own size for a file).

    Folders inside it that hold a model of their own (a ``classifier.json``: the ONNX
    exports ``onnx/`` and ``onnx-int8/``) are not counted.
    """
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    nested = {d for d in p.rglob("classifier.json") if d.parent != p}
    skip = tuple(d.parent for d in nested)
    return sum(f.stat().st_size for f in p.rglob("*")
               if f.is_file() and not any(s == f.parent or s in f.parents for s in skip))


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
    onnx: bool = False,
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
    With ``onnx``, each model is also exported to ONNX (a temporary folder, checked by
    :func:`nbutils.export.export_onnx`) and its batch-1 latency under ONNX Runtime is
    measured the same way (``onnx_latency_ms``; ``onnx_error`` says why not).
    """
    from tqdm.auto import tqdm

    if isolate and callable(loader):
        raise TypeError("with isolate=True, pass loader as a 'module:function' string")
    settings = {"batch_size": batch_size, "latency_repeats": latency_repeats,
                "warmup_repeats": warmup_repeats, "throughput_batches": throughput_batches,
                "budget_s": budget_s, "onnx": onnx}
    images = np.ascontiguousarray(images)
    results: dict[str, SpeedResult] = {}
    bar = tqdm(runset.runs, desc="timing models", disable=not progress)
    for run in bar:
        bar.set_postfix_str(run.label)
        reference = run.probs if check_reload and len(images) == len(run.probs) else None
        measure = (partial(_measure_isolated, loader=loader, timeout_s=timeout_s, threads=threads)
                   if isolate else partial(_measure_here, loader=loader))
        results[run.label] = _measure_run(run, images, reference, settings, device, measure)
    return results


def _measure_run(run: Any, images: np.ndarray, reference: np.ndarray | None,
                 settings: dict[str, Any], device: str,
                 measure: Callable[..., dict[str, Any]]) -> SpeedResult:
    """One run's :class:`SpeedResult`: its folder found, sized and timed, or why not."""
    res = SpeedResult(label=run.label, device=device, batch_size=settings["batch_size"])
    model_dir = run.record.artifacts.get("model")
    if not model_dir:
        res.error = f"{run.record.notebook} saved no model folder (no 'model' artifact)"
        return res
    folder = resolve_path(model_dir)
    if not folder.exists():
        res.error = f"model folder {folder} is missing; re-run {run.record.notebook}"
        return res
    res.size_mib = dir_size_bytes(folder) / 2 ** 20
    try:
        figures = measure(folder, images, reference, settings, device)
    except Exception as exc:  # noqa: BLE001 - one broken model must not stop the others
        res.error = f"could not load or run {folder.name}: {type(exc).__name__}: {exc}"
        return res
    for name in ("load_seconds", "latency_ms", "latency_p90_ms", "throughput_ips",
                 "reload_agreement", "onnx_latency_ms", "onnx_error"):
        setattr(res, name, figures.get(name))
    res.latency_repeats = int(figures["latency_repeats"])
    res.throughput_batches = int(figures["throughput_batches"])
    return res


# environment variables that set the CPU threads of PyTorch, NumPy's BLAS and TensorFlow
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                     "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


class MeasureError(RuntimeError):
    """The process measuring one model failed; the message has its last words."""


def _resolve_loader(loader: Callable[..., Any] | str | None) -> Callable[..., Any]:
    if loader is None:
        from ..inference import load_classifier

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
    settings = dict(settings)
    onnx = settings.pop("onnx", False)
    start = time.perf_counter()
    clf = load(folder, device=device)
    load_seconds = time.perf_counter() - start
    try:
        figures = measure_classifier(clf, images, reference_probs=reference, **settings)
        if onnx:
            figures.update(_onnx_latency(clf, folder, images, settings))
    finally:
        del clf
        gc.collect()
    return {**figures, "load_seconds": load_seconds}


def _onnx_latency(clf: Any, folder: Path, images: np.ndarray,
                  settings: dict[str, Any]) -> dict[str, Any]:
    """Export ``clf`` to a temporary ONNX folder and time its batch-1 predictions."""
    try:
        from ..export import export_onnx
        from ..export.runtime import load_classifier as load_onnx

        with tempfile.TemporaryDirectory(prefix="nbutils-onnx-") as tmp:
            export_onnx(folder, Path(tmp) / "onnx", images=images[:64], latency=False,
                        classifier=clf)
            exported = load_onnx(Path(tmp) / "onnx")
            counter = iter(range(10 ** 9))

            def one() -> Any:
                i = next(counter) % len(images)
                return exported.predict_proba(images[i:i + 1], batch_size=1)

            times = time_calls(one, settings["latency_repeats"], settings["warmup_repeats"],
                               budget_s=settings.get("budget_s"))
        return {"onnx_latency_ms": float(np.median(times) * 1e3)}
    except Exception as exc:  # noqa: BLE001 - the framework's timings still count
        return {"onnx_error": f"{type(exc).__name__}: {exc}"}


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
            proc = subprocess.run([sys.executable, "-m", "nbutils.compare.speed", str(work / "job.json")],
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
        if sp.onnx_latency_ms is not None:
            lines.append(f"{'':<{width}} exported to ONNX: batch 1: {sp.onnx_latency_ms:.2f} ms "
                         "median under ONNX Runtime")
        elif sp.onnx_error:
            lines.append(f"{'':<{width}} ONNX export not timed: {sp.onnx_error}")
    return "\n".join(lines)




if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
