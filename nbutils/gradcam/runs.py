"""Find the models notebooks 02-04 saved, and write the Grad-CAM record.

The training notebooks leave a run record in ``outputs/metrics/`` whose
``artifacts["model"]`` folder holds the saved model and its ``classifier.json``.
:func:`find_trained_models` lists those for one dataset and profile, and says
which are missing and the command that produces them. The figures of notebook
06 go to ``outputs/gradcam/<dataset slug>__<profile>.json`` (not a run record:
nothing was trained here), written atomically.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..paths import atomic_write_text, resolve_path

__all__ = ["TRAINING_NOTEBOOKS", "TrainedModel", "ModelSet", "find_trained_models", "load_models",
           "produce_command", "record_path", "write_record", "read_record", "format_summary",
           "recent_records_summary", "RECORD_SCHEMA"]

# notebook prefix -> (framework, display label)
TRAINING_NOTEBOOKS = {"02": ("pytorch", "PyTorch"), "03": ("keras", "Keras"),
                      "04": ("huggingface", "Hugging Face")}
RECORD_SCHEMA = "gradcam/1"


@dataclass
class TrainedModel:
    """One saved model of a training run."""

    label: str
    framework: str
    notebook: str
    run_id: str
    model: str
    model_dir: Path
    test_accuracy: float

    def load(self, device: str = "cpu") -> Any:
        """Reload it with :func:`nbutils.inference.load_classifier`."""
        from ..inference import load_classifier

        return load_classifier(self.model_dir, device=device)


@dataclass
class ModelSet:
    """The saved models found for a dataset and profile, and what is missing."""

    dataset: str
    profile: str
    models: list[TrainedModel] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def command(self) -> str:
        """The command that trains the missing models."""
        missing = [p for p in TRAINING_NOTEBOOKS if p not in {m.notebook[:2] for m in self.models}]
        return produce_command(self.profile, self.dataset, missing or list(TRAINING_NOTEBOOKS))

    def summary(self) -> str:
        """Found, missing (with the command that produces them), unusable."""
        lines = [f"saved models for dataset '{self.dataset}', profile '{self.profile}':"]
        for m in self.models:
            lines.append(f"  {m.label:<13} {m.model:<28} test acc {m.test_accuracy:.3f}  "
                         f"({m.run_id})")
        if not self.models:
            lines.append("  none")
        for miss in self.missing:
            lines.append(f"  missing: {miss}")
        for prob in self.problems:
            lines.append(f"  cannot use: {prob}")
        if self.missing or self.problems:
            lines.append(f"  to produce them: {self.command}")
        return "\n".join(lines)


def _preload_torch_extras() -> None:
    """Import torch's lazily loaded compiler stack (and triton) now, before TensorFlow.

    Importing triton after TensorFlow crashes the process (a segmentation fault in
    the shared libraries both bundle); Hugging Face loading pulls triton in through
    ``torch._dynamo``. Importing it first is harmless.
    """
    try:
        import torch._dynamo  # noqa: F401
    except Exception:  # noqa: BLE001 - torch missing or broken: nothing to protect
        pass


def load_models(found: ModelSet, device: str = "cpu") -> dict[str, Any]:
    """Reload every model of ``found``: ``{label: classifier}`` in the order found.

    The PyTorch-based models are loaded before the Keras one, and torch's lazy
    imports are done before TensorFlow starts (see :func:`_preload_torch_extras`).
    """
    frameworks = {m.framework for m in found.models}
    if "keras" in frameworks and frameworks - {"keras"}:
        _preload_torch_extras()
    order = sorted(found.models, key=lambda m: m.framework == "keras")
    loaded = {m.label: m.load(device) for m in order}
    return {m.label: loaded[m.label] for m in found.models}


def produce_command(profile: str, dataset: str, prefixes: list[str]) -> str:
    """``python -m nbutils.run --profile P --dataset D --only 02,03,04``."""
    return (f"python -m nbutils.run --profile {profile} --dataset {dataset} "
            f"--only {','.join(prefixes)}")


def find_trained_models(outputs_dir: str | Path, dataset: str, profile: str) -> ModelSet:
    """The models notebooks 02, 03 and 04 saved for ``dataset`` under ``profile``."""
    from ..records import find_records

    records, unreadable = find_records(outputs_dir, dataset=dataset, profile=profile)
    found = ModelSet(dataset=dataset, profile=profile)
    for path, reason in unreadable:
        if path.name[:2] in TRAINING_NOTEBOOKS:
            found.problems.append(f"{path.name}: {reason}")
    by_prefix: dict[str, list[Any]] = {}
    for rec in records:
        if rec.notebook[:2] in TRAINING_NOTEBOOKS:
            by_prefix.setdefault(rec.notebook[:2], []).append(rec)
    for prefix, (_framework, label) in TRAINING_NOTEBOOKS.items():
        recs = sorted(by_prefix.get(prefix, []), key=lambda r: r.run_id)
        if not recs:
            found.missing.append(f"notebook {prefix} ({label}) has no record")
            continue
        for rec in recs:
            folder = rec.artifacts.get("model")
            if not folder:
                found.problems.append(f"{rec.run_id}: the record names no saved model")
                continue
            model_dir = resolve_path(folder)
            if not (model_dir / "classifier.json").is_file():
                found.problems.append(f"{rec.run_id}: no classifier.json in {model_dir}")
                continue
            name = label if len(recs) == 1 else f"{label} ({rec.model})"
            found.models.append(TrainedModel(label=name, framework=rec.framework,
                                             notebook=rec.notebook, run_id=rec.run_id,
                                             model=rec.model, model_dir=model_dir,
                                             test_accuracy=float(rec.test.accuracy)))
    return found


def record_path(outputs_dir: str | Path, dataset: str, profile: str) -> Path:
    """``outputs/gradcam/<dataset slug>__<profile>.json``."""
    from ..data.specs import parse_spec

    return resolve_path(outputs_dir) / "gradcam" / f"{parse_spec(dataset).slug}__{profile}.json"


def write_record(outputs_dir: str | Path, dataset: str, profile: str, models: dict[str, Any],
                 settings: dict[str, Any] | None = None, extra: dict[str, Any] | None = None
                 ) -> Path:
    """Write the Grad-CAM figures of every model atomically; returns the path."""
    payload = {"schema": RECORD_SCHEMA, "dataset": dataset, "profile": profile,
               "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "settings": dict(settings or {}), "models": models, **(extra or {})}
    path = record_path(outputs_dir, dataset, profile)
    atomic_write_text(path, json.dumps(payload, indent=2, default=_json_default) + "\n")
    return path


def read_record(path: str | Path) -> dict[str, Any]:
    """Read a Grad-CAM record, checking its schema."""
    data = json.loads(Path(path).read_text())
    if data.get("schema") != RECORD_SCHEMA:
        raise ValueError(f"{path} is not a {RECORD_SCHEMA} record (schema {data.get('schema')!r}); "
                         "re-run notebook 06")
    return data


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def format_summary(models: dict[str, dict[str, Any]]) -> str:
    """A plain-text table of a Grad-CAM record's ``models`` section."""
    def num(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [f"{'model':<13} {'acc':>6} {'pointing':>9} {'energy':>7} {'chance':>7} "
             f"{'rand. rho':>9} {'del. AUC':>9} {'random':>7} {'blobs':>7}  layer", "-" * 104]
    for name, m in models.items():
        loc = m.get("localisation") or {}
        rnd = m.get("randomization") or {}
        dele = m.get("deletion") or {}
        lines.append(f"{name:<13} {num(m.get('accuracy_on_scored_images')):>6} "
                     f"{num(loc.get('pointing_game')):>9} {num(loc.get('energy')):>7} "
                     f"{num(loc.get('chance')):>7} {num(rnd.get('rank_correlation_mean')):>9} "
                     f"{num(dele.get('auc_saliency')):>9} {num(dele.get('auc_random')):>7} "
                     f"{num(dele.get('auc_random_smooth')):>7}  "
                     f"{m.get('layer', '')}")
    return "\n".join(lines)


def recent_records_summary(outputs_dir: str | Path, since: float = 0.0) -> str:
    """Pointing game (and the other checks) per model of the Grad-CAM records written since
    ``since`` (a ``time.time()``), for the course runner's closing summary; ``""`` if none."""
    folder = resolve_path(outputs_dir) / "gradcam"
    blocks = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.stat().st_mtime < since:
            continue
        try:
            data = read_record(path)
        except (ValueError, OSError) as exc:
            blocks.append(f"Grad-CAM record {path.name}: unreadable ({exc})")
            continue
        blocks.append(f"Grad-CAM ({data.get('settings', {}).get('method', 'gradcam')}) on "
                      f"{data['dataset']} / {data['profile']}: {path}\n"
                      + format_summary(data["models"]))
    return "\n\n".join(blocks)
