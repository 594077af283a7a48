"""Export any course model to ONNX, check it against the framework, optionally quantise it.

    from nbutils.export import export_onnx
    report = export_onnx("outputs/models/<run id>")      # -> outputs/models/<run id>/onnx
    print(report.summary())

The export folder holds ``model.onnx`` (uint8 pixels in, probabilities out) and a
``classifier.json`` with framework ``onnx``, so :func:`nbutils.inference.load_classifier`
and :mod:`nbutils.predict` open it with ONNX Runtime alone. Every export is checked:
ONNX Runtime's probabilities are compared with the framework's on the run's test
images (or, when those cannot be loaded, on the bundled sample photos and random
images), and an export whose top-1 agreement is below :data:`MIN_AGREEMENT` is not
written. ``int8=True`` adds a dynamically quantised copy (``onnx-int8``) and reports
its size, latency and accuracy change.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..frameworks.registry import get_framework, onnx_exporters
from ..inference import (
    ClassifierInfo,
    load_classifier,
    read_classifier_info,
    run_record_of,
    training_size,
    write_classifier_info,
)
from ..paths import atomic_write_json, display_path, folder_built_beside, resolve_path
from ..runs import load_run_data
from .runtime import ONNX_FILE
from .runtime import load_classifier as load_onnx

__all__ = ["MIN_AGREEMENT", "ExportError", "Parity", "ExportReport", "export_onnx",
           "quantize_int8", "parity_images", "compare_probs"]

MIN_AGREEMENT = 0.995
REPORT_FILE = "export_report.json"


class ExportError(RuntimeError):
    """The export failed its parity check (or the framework cannot be exported)."""


@dataclass
class Parity:
    """How closely one model's probabilities follow another's on the same images."""

    n_images: int
    max_abs_diff: float
    top1_agreement: float
    accuracy: float | None = None  # of the compared model, when labels are known


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and measured."""

    source: str
    framework: str
    folder: str
    images: str
    parity: Parity
    framework_accuracy: float | None = None
    size_mib: dict[str, float] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    int8_folder: str | None = None
    int8_parity: Parity | None = None

    def summary(self) -> str:
        """A few lines a person reads: parity, then size and batch-1 latency per variant."""
        p = self.parity
        lines = [f"exported {Path(self.source).name} ({self.framework}) -> "
                 f"{display_path(self.folder)}",
                 f"parity on {p.n_images} {self.images}: max |diff| {p.max_abs_diff:.2e}, "
                 f"top-1 agreement {p.top1_agreement:.2%}"]
        if self.int8_parity is not None:
            q = self.int8_parity
            lines.append(f"int8 vs {self.framework}: max |diff| {q.max_abs_diff:.3f}, top-1 "
                         f"agreement {q.top1_agreement:.2%}" + _accuracy_change(
                             self.framework_accuracy, q.accuracy))
        for name, size in self.size_mib.items():
            lat = self.latency_ms.get(name)
            lines.append(f"  {name:<10} {size:8.2f} MiB" +
                         (f"   batch-1 latency {lat:7.2f} ms" if lat is not None else ""))
        return "\n".join(lines)


def _accuracy_change(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return ""
    return f"; test accuracy {before:.2%} -> {after:.2%} ({(after - before) * 100:+.2f} points)"


def compare_probs(reference: np.ndarray, probs: np.ndarray,
                  labels: np.ndarray | None = None) -> Parity:
    """Max absolute difference and top-1 agreement of ``probs`` against ``reference``."""
    ref, got = np.asarray(reference, np.float64), np.asarray(probs, np.float64)
    if ref.shape != got.shape:
        raise ExportError(f"the exported model gives {got.shape} probabilities, the original "
                          f"{ref.shape}")
    acc = float((got.argmax(1) == labels).mean()) if labels is not None and len(labels) else None
    return Parity(n_images=len(ref), max_abs_diff=float(np.abs(ref - got).max(initial=0.0)),
                  top1_agreement=float((ref.argmax(1) == got.argmax(1)).mean()) if len(ref) else 1.0,
                  accuracy=acc)


def parity_images(model_dir: str | Path, size: int, n_random: int = 60
                  ) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Images to check an export on: ``(uint8 images at size, labels or None, description)``.

    The run's test images when its record and dataset are at hand; otherwise the
    bundled sample photos and ``n_random`` random images (no labels).
    """
    from ..images import fit_image
    from ..samples import sample_photos

    record = run_record_of(model_dir)
    if record is not None:
        try:
            test = load_run_data(record).test
            if len(test) and test.images.shape[1] == size:
                return test.images, test.labels, f"test images of {record.dataset}"
        except Exception:  # noqa: BLE001 - dataset gone or unreadable: fall back below
            pass
    photos = [fit_image(img, size) for img in sample_photos().values()]
    noise = np.random.default_rng(0).integers(0, 256, (n_random, size, size, 3), dtype=np.uint8)
    return np.concatenate([np.stack(photos), noise]), None, "sample photos and random images"


def _export_info(info: ClassifierInfo, graph: dict[str, Any], source: int,
                 folder: Path) -> ClassifierInfo:
    return ClassifierInfo(
        framework="onnx", model=info.model, class_names=list(info.class_names),
        image_size=int(graph["input_size"]), mean=list(info.mean), std=list(info.std),
        source_size=int(source),
        extra={"exported_from": info.framework, "source_model": str(folder),
               "onnx_file": ONNX_FILE, "input": "uint8 NHWC pixels; standardised inside the graph",
               "input_size": int(graph["input_size"]), "resample": graph["resample"],
               "tta_flip": bool(info.extra.get("tta_flip", False)), "quantized": False})


def _write_export(clf: Any, folder: Path, target: Path, images: np.ndarray,
                  reference: np.ndarray, labels: np.ndarray | None) -> Parity:
    """Export ``clf`` into a temporary folder, check it, then move it to ``target``."""
    info = clf.info
    exporter = onnx_exporters().get(info.framework)
    if exporter is None:
        raise ExportError(f"{get_framework(info.framework).label} models cannot be exported to "
                          f"ONNX (exporters: {', '.join(onnx_exporters())})")
    source = training_size(info, folder)
    with folder_built_beside(target) as tmp:
        graph = importlib.import_module(exporter).export_graph(clf, tmp / ONNX_FILE, source)
        onnx_info = _export_info(info, graph, source, folder)
        write_classifier_info(tmp, onnx_info)
        parity = compare_probs(reference, load_onnx(tmp).predict_proba(images), labels)
        if parity.top1_agreement < MIN_AGREEMENT:
            raise ExportError(
                f"the ONNX model agrees with {info.framework} on only {parity.top1_agreement:.2%} "
                f"of {parity.n_images} images (max |diff| {parity.max_abs_diff:.3g}); "
                f"nothing was written. Please report it with the model folder {folder}.")
        onnx_info.extra["parity"] = asdict(parity)
        write_classifier_info(tmp, onnx_info)
    return parity


def quantize_int8(onnx_dir: str | Path, out: str | Path) -> Path:
    """A dynamically quantised copy of an export folder (int8 weights, uint8 activations).

    ONNX Runtime's dynamic quantisation stores the weights of convolutions and matrix
    products as 8-bit integers and quantises activations on the fly; the CPU kernels of
    its integer convolution take unsigned 8-bit weights, hence ``QUInt8``.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, target = resolve_path(onnx_dir), resolve_path(out)
    info = read_classifier_info(src)
    with folder_built_beside(target) as tmp:
        prepared = tmp / "prepared.onnx"
        logging.disable(logging.WARNING)  # it warns that the uint8 image input stays as it is
        try:
            quant_pre_process(str(src / ONNX_FILE), str(prepared), skip_symbolic_shape=True)
            quantize_dynamic(str(prepared), str(tmp / ONNX_FILE), weight_type=QuantType.QUInt8)
        finally:
            logging.disable(logging.NOTSET)
        prepared.unlink()
        info.extra.update(quantized="dynamic int8 (onnxruntime.quantization)",
                          quantized_from=str(src))
        info.extra.pop("parity", None)
        write_classifier_info(tmp, info)
    return target


def _size_mib(folder: Path) -> float:
    from ..compare.speed import dir_size_bytes

    return dir_size_bytes(folder) / 2 ** 20


def _latency_ms(clf: Any, images: np.ndarray, repeats: int = 30) -> float:
    """Median batch-1 latency of ``clf.predict_proba`` over the first images, in ms."""
    from ..compare.speed import time_calls

    counter = iter(range(10 ** 9))

    def one() -> Any:
        i = next(counter) % len(images)
        return clf.predict_proba(images[i:i + 1], batch_size=1)

    return float(np.median(time_calls(one, repeats, warmup=5, budget_s=20.0)) * 1e3)


def export_onnx(model_dir: str | Path, out: str | Path | None = None, *, int8: bool = False,
                images: np.ndarray | None = None, labels: np.ndarray | None = None,
                latency: bool = True, classifier: Any = None,
                reference: np.ndarray | None = None,
                images_from: str = "given images") -> ExportReport:
    """Export a saved course model to ONNX (``<model_dir>/onnx`` by default) and check it.

    Args:
        model_dir: a model folder written by notebook 02, 03 or 04.
        out: the export folder; ``int8`` writes ``<out>-int8`` beside it.
        int8: also write a dynamically quantised copy and report what it changes.
        images, labels: uint8 images (and their classes) to check parity on; by
            default the run's test images (see :func:`parity_images`).
        latency: time batch-1 predictions of the framework and ONNX models.
        classifier: the model already loaded from ``model_dir`` (saves loading it again).
        reference: the framework model's probabilities on ``images``, when already
            computed (saves predicting them again); requires ``images``.
        images_from: what ``images`` are, for the report (e.g. "test images of cifar10").

    Raises:
        ExportError: the ONNX model disagrees with the framework on more than
            ``1 - MIN_AGREEMENT`` of the images (nothing is written then).
    """
    folder = resolve_path(model_dir)
    clf = classifier if classifier is not None else load_classifier(folder)
    if clf.info.framework == "onnx":
        raise ExportError(f"{folder} is already an ONNX export; pass the model folder it came "
                          f"from ({clf.info.extra.get('source_model', 'see its classifier.json')})")
    target = resolve_path(out) if out is not None else folder / "onnx"
    what = images_from
    if images is None:
        if reference is not None:
            raise ValueError("reference probabilities need the images they were computed on")
        images, labels, what = parity_images(folder, training_size(clf.info, folder))
    if reference is None:
        reference = clf.predict_proba(images)
    elif np.shape(reference) != (len(images), len(clf.info.class_names)):
        raise ValueError(f"reference has shape {np.shape(reference)}; expected "
                         f"({len(images)}, {len(clf.info.class_names)})")
    parity = _write_export(clf, folder, target, images, reference, labels)
    report = ExportReport(source=str(folder), framework=clf.info.framework, folder=str(target),
                          images=what, parity=parity,
                          framework_accuracy=compare_probs(reference, reference, labels).accuracy)
    variants = {clf.info.framework: clf, "onnx": load_onnx(target)}
    if int8:
        int8_dir = quantize_int8(target, target.with_name(f"{target.name}-int8"))
        variants["onnx-int8"] = load_onnx(int8_dir)
        report.int8_folder = str(int8_dir)
        report.int8_parity = compare_probs(reference, variants["onnx-int8"].predict_proba(images),
                                           labels)
    report.size_mib = {clf.info.framework: _size_mib(folder), "onnx": _size_mib(target)}
    if int8:
        report.size_mib["onnx-int8"] = _size_mib(Path(report.int8_folder))
    if latency:
        report.latency_ms = {name: _latency_ms(c, images) for name, c in variants.items()}
    atomic_write_json(target / REPORT_FILE, asdict(report))
    return report
