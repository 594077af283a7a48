"""One way to reload any trained model of the course and get probabilities from it.

Every training notebook saves its model in a folder under ``outputs/models/<run_id>/``
together with ``classifier.json`` (framework, class names, image size, mean/std).
:func:`load_classifier` reads that file and imports only the framework it names,
so notebooks 05 and 06 treat the three frameworks alike.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .frameworks.registry import UnknownFrameworkError, get_framework
from .paths import atomic_write_text, resolve_path

__all__ = ["ClassifierInfo", "Classifier", "write_classifier_info", "read_classifier_info",
           "check_outputs", "load_classifier", "training_size", "run_record_of"]

INFO_FILE = "classifier.json"


@dataclass
class ClassifierInfo:
    """What a saved model needs besides its weights to classify raw uint8 images."""

    framework: str
    model: str
    class_names: list[str]
    image_size: int
    mean: list[float]
    std: list[float]
    extra: dict[str, Any] = field(default_factory=dict)
    source_size: int | None = None  # side of the training images before the model's resize


class Classifier(Protocol):
    """A reloaded model: ``predict_proba`` takes uint8 NHWC images of any size."""

    info: ClassifierInfo
    model: Any

    def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, K) class probabilities for uint8 (N, H, W, 3) images."""
        ...


def write_classifier_info(model_dir: str | Path, info: ClassifierInfo) -> Path:
    """Write ``classifier.json`` atomically into ``model_dir``.

    A model saved into a folder makes the exports of the previous model in it (``onnx/``,
    ``onnx-int8/``: sub-folders with a ``classifier.json`` of their own) stale: they are
    removed, so nothing can serve an old model under the new one's name.
    """
    import shutil

    folder = Path(model_dir)
    for sub in (folder.iterdir() if folder.is_dir() else []):
        if sub.is_dir() and (sub / INFO_FILE).is_file():
            shutil.rmtree(sub, ignore_errors=True)
    path = folder / INFO_FILE
    atomic_write_text(path, json.dumps(asdict(info), indent=2) + "\n")
    return path


def read_classifier_info(model_dir: str | Path) -> ClassifierInfo:
    """Read ``classifier.json`` from a saved model folder."""
    path = resolve_path(model_dir) / INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"No {INFO_FILE} in {path.parent}: this is not a saved course model. "
            "Re-run the training notebook (02, 03 or 04) that writes it."
        )
    try:
        return ClassifierInfo(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:  # not JSON, or not the ClassifierInfo fields
        raise ValueError(
            f"{path} is not a valid {INFO_FILE} ({exc}). Re-run the training notebook that "
            "wrote it."
        ) from exc


def check_outputs(info: ClassifierInfo, n_outputs: int, folder: str | Path) -> None:
    """Refuse a model whose output count is not the number of class names in its info.

    Otherwise it would predict, and every class name it printed could be wrong.
    """
    if int(n_outputs) != len(info.class_names):
        raise ValueError(
            f"{Path(folder) / INFO_FILE} names {len(info.class_names)} classes but the model "
            f"in {folder} has {n_outputs} outputs: the files do not belong together. Re-run "
            "the notebook that trained it to save them again.")


def load_classifier(model_dir: str | Path, device: str = "cpu") -> Classifier:
    """Reload a saved course model, importing only its own framework.

    The framework named in ``classifier.json`` is looked up in
    :mod:`nbutils.frameworks.registry`; its module's ``load_classifier(model_dir, info,
    device)`` rebuilds the model.
    """
    folder = resolve_path(model_dir)
    info = read_classifier_info(folder)
    try:
        framework = get_framework(info.framework)
    except UnknownFrameworkError as exc:
        raise ValueError(f"{folder / INFO_FILE}: {exc}") from exc
    return framework.load_module().load_classifier(folder, info, device=device)


def run_record_of(model_dir: str | Path) -> Any:
    """The run record of a model saved under ``outputs/models/<run id>/``, or ``None``.

    The record is ``outputs/metrics/<run id>.json`` beside the ``models`` folder; a
    model folder copied elsewhere has none.
    """
    from .records import RecordError, read_record

    folder = resolve_path(model_dir)
    path = folder.parent.parent / "metrics" / f"{folder.name}.json"
    if not path.is_file():
        return None
    try:
        return read_record(path)
    except (RecordError, OSError, ValueError):
        return None


def training_size(info: ClassifierInfo, model_dir: str | Path | None = None) -> int:
    """The side the training images had when the data layer handed them to the model.

    Every dataset is squashed to ``data.image_size`` squares before training; a model
    with a larger input (notebook 04's 176 px) resized those squares itself. A new
    image is prepared the same way: first fitted to this size, then given to the
    model. Read from ``classifier.json`` (``source_size``), else from the run record's
    config, else the model's input size.
    """
    if info.source_size:
        return int(info.source_size)
    if info.extra.get("source_size"):
        return int(info.extra["source_size"])
    record = run_record_of(model_dir) if model_dir is not None else None
    size = ((record.config.get("data") or {}).get("image_size") if record is not None else None)
    return int(size) if size else int(info.image_size)
