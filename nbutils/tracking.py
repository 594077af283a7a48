"""Optional experiment tracking: each training run logged to MLflow as well.

With ``tracking: mlflow`` in the config (``-p`` or a profile), :func:`nbutils.runs.finish_run`
calls :func:`log_run`, which records the run's settings as parameters, its per-epoch
history and test metrics as metrics, and its RunRecord and saved model as artifacts. The
store is ``$MLFLOW_TRACKING_URI`` when set (any MLflow server), else a local folder,
``outputs/mlruns``. MLflow is
imported only when tracking is on.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path
from typing import Any

__all__ = ["TRACKERS", "tracking_uri", "flat_params", "log_run", "summary_writer"]

TRACKERS = ("none", "mlflow")


def tracking_uri(outputs_dir: Path) -> str:
    """``$MLFLOW_TRACKING_URI``, else the local store ``outputs/mlruns`` as a ``file:`` URI.

    MLflow keeps its file store in maintenance mode behind ``MLFLOW_ALLOW_FILE_STORE``; the
    course's local store is a plain folder of files on purpose (nothing to install or run),
    so that switch is set for it.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (Path(outputs_dir) / "mlruns").resolve().as_uri()


def flat_params(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as ``{"data.image_size": "32", ...}`` (MLflow parameters are strings)."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = str(value)[:500]
    return out


def log_run(record: Any, record_path: Path, outputs_dir: Path) -> str:
    """Log one finished run to MLflow; returns the MLflow run id.

    Experiment ``<dataset slug>__<profile>``, run name the course's run id.
    """
    import mlflow

    from .data.specs import parse_spec

    mlflow.set_tracking_uri(tracking_uri(outputs_dir))
    mlflow.set_experiment(f"{parse_spec(record.dataset).slug}__{record.profile}")
    with mlflow.start_run(run_name=record.run_id) as run:
        mlflow.log_params(flat_params(record.config))
        mlflow.set_tags({"notebook": record.notebook, "framework": record.framework,
                         "model": record.model})
        for row in record.history:
            step = int(row.get("epoch", 0))
            mlflow.log_metrics({k: float(v) for k, v in row.items()
                                if k != "epoch" and isinstance(v, (int, float))}, step=step)
        test = record.test
        mlflow.log_metrics({"test_accuracy": test.accuracy, "test_macro_f1": test.macro_f1,
                            "test_macro_precision": test.macro_precision,
                            "test_macro_recall": test.macro_recall,
                            "train_seconds": record.train_seconds})
        mlflow.log_artifact(str(record_path), artifact_path="record")
        model = record.artifacts.get("model")
        if model and Path(model).is_dir():
            mlflow.log_artifacts(model, artifact_path="model")
        return run.info.run_id


def summary_writer(log_dir: str | os.PathLike[str]) -> Any:
    """PyTorch's TensorBoard ``SummaryWriter`` for ``log_dir``, without TensorFlow.

    TensorBoard's event writer imports the whole of TensorFlow when it is installed (it
    is, for the Keras lesson), although a pure-Python writer ships with it: that costs a
    PyTorch run about 4 s and 600 MB. Unless TensorFlow is already loaded, TensorBoard's
    "no TensorFlow" switch (a ``tensorboard.compat.notf`` module) is set while the writer
    is made, then cleared, and TensorBoard's lazy TensorFlow handle is made afresh, so
    Keras's TensorBoard callback later in the same process still finds TensorFlow.
    """
    if "tensorflow" in sys.modules:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(log_dir))
    import tensorboard.compat

    sys.modules["tensorboard.compat.notf"] = types.ModuleType("tensorboard.compat.notf")
    try:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(log_dir))
    finally:
        del sys.modules["tensorboard.compat.notf"]
        importlib.reload(tensorboard.compat)
