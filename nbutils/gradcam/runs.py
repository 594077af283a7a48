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

from ..frameworks.registry import get_framework, training_notebooks
from ..paths import atomic_write_json, resolve_path
from ..runs import find_runs, is_seed_replicate, produce_command

__all__ = ["TrainedModel", "ModelSet", "find_trained_models", "load_models",
           "cam_record_path", "write_cam_record", "read_cam_record", "format_summary",
           "recent_records_summary", "RECORD_SCHEMA"]

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
        have = {m.notebook[:2] for m in self.models}
        missing = [p for p in training_notebooks() if p not in have]
        return produce_command(self.profile, self.dataset, missing or list(training_notebooks()))

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


def find_trained_models(outputs_dir: str | Path, dataset: str, profile: str) -> ModelSet:
    """The models the training notebooks saved for ``dataset`` under ``profile``.

    The runs come from :func:`nbutils.runs.find_runs`, the look-up notebook 05 uses;
    only runs of the framework registry's training notebooks count.
    """
    found = find_runs(outputs_dir, dataset, profile)
    notebooks = training_notebooks()
    models = ModelSet(dataset=dataset, profile=profile,
                      missing=[f"notebook {m.prefix} ({m.label}) has no record"
                               for m in found.missing],
                      problems=[f"{path.name}: {reason}" for path, reason in found.problems
                                if path.name[:2] in notebooks])
    mine = [r for r in found.records  # seed replicates are the same model, retrained
            if r.notebook[:2] in notebooks and not is_seed_replicate(r)]
    for rec in mine:
        folder = rec.artifacts.get("model")
        model_dir = resolve_path(folder) if folder else None
        if model_dir is None:
            models.problems.append(f"{rec.run_id}: the record names no saved model")
        elif not (model_dir / "classifier.json").is_file():
            models.problems.append(f"{rec.run_id}: no classifier.json in {model_dir}")
        else:
            label = get_framework(rec.framework).label
            same = sum(r.notebook[:2] == rec.notebook[:2] for r in mine)
            models.models.append(TrainedModel(
                label=label if same == 1 else f"{label} ({rec.model})", framework=rec.framework,
                notebook=rec.notebook, run_id=rec.run_id, model=rec.model, model_dir=model_dir,
                test_accuracy=float(rec.test.accuracy)))
    return models


def cam_record_path(outputs_dir: str | Path, dataset: str, profile: str) -> Path:
    """``outputs/gradcam/<dataset slug>__<profile>.json``."""
    from ..data.specs import parse_spec

    return resolve_path(outputs_dir) / "gradcam" / f"{parse_spec(dataset).slug}__{profile}.json"


def write_cam_record(outputs_dir: str | Path, dataset: str, profile: str, models: dict[str, Any],
                     settings: dict[str, Any] | None = None, extra: dict[str, Any] | None = None
                     ) -> Path:
    """Write the Grad-CAM figures of every model atomically; returns the path."""
    payload = {"schema": RECORD_SCHEMA, "dataset": dataset, "profile": profile,
               "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "settings": dict(settings or {}), "models": models, **(extra or {})}
    return atomic_write_json(cam_record_path(outputs_dir, dataset, profile), payload)


def read_cam_record(path: str | Path) -> dict[str, Any]:
    """Read a Grad-CAM record, checking its schema."""
    data = json.loads(Path(path).read_text())
    if data.get("schema") != RECORD_SCHEMA:
        raise ValueError(f"{path} is not a {RECORD_SCHEMA} record (schema {data.get('schema')!r}); "
                         "re-run notebook 06")
    return data


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
            data = read_cam_record(path)
        except (ValueError, OSError) as exc:
            blocks.append(f"Grad-CAM record {path.name}: unreadable ({exc})")
            continue
        blocks.append(f"Grad-CAM ({data.get('settings', {}).get('method', 'gradcam')}) on "
                      f"{data['dataset']} / {data['profile']}: {path}\n"
                      + format_summary(data["models"]))
    return "\n\n".join(blocks)
