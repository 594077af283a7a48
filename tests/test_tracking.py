"""Optional MLflow tracking, tested against a local file store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nbutils
from nbutils.config import ConfigError
from nbutils.fitting import FitResult
from nbutils.runs import finish_run
from nbutils.tracking import flat_params, tracking_uri


def _finish(tmp_path: Path, **overrides) -> tuple:
    cfg = nbutils.setup("smoke", model="alexnet", verbose=False, dataset="shapes:6",
                        data_dir=str(tmp_path / "d"), outputs_dir=str(tmp_path / "o"),
                        **overrides)
    data = nbutils.data.load_for(cfg, progress=False)
    probs = np.eye(data.num_classes)[data.test.labels] * 0.9 + 0.1 / data.num_classes
    model_dir = tmp_path / "o" / "models" / "m"
    model_dir.mkdir(parents=True)
    (model_dir / "weights.bin").write_bytes(b"1234")
    history = [{"epoch": 1, "train_loss": 1.5, "val_acc": 0.4, "lr": 0.1},
               {"epoch": 2, "train_loss": 1.1, "val_acc": 0.6, "lr": 0.05}]
    record = finish_run(cfg, data, notebook="02_pytorch_alexnet", model="m", probs=probs,
                        fit=FitResult(history, 3.0), num_params=1, model_path=model_dir,
                        show=False)
    return cfg, record


def test_runs_are_logged_to_a_local_mlflow_store(tmp_path: Path, cpu_only, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg, record = _finish(tmp_path, tracking="mlflow")
    assert cfg.run_id("02_pytorch_alexnet").endswith("__smoke")   # tracking is no variant
    client = MlflowClient(tracking_uri(tmp_path / "o"))
    run = client.get_run(record.extra["mlflow_run_id"])
    assert run.info.run_name == record.run_id
    assert run.data.params["model.epochs"] == str(cfg.model.epochs)
    assert run.data.params["data.image_size"] == "32"
    assert run.data.tags["framework"] == "pytorch"
    assert run.data.metrics["test_accuracy"] == pytest.approx(1.0)
    losses = client.get_metric_history(run.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in losses] == [(1, 1.5), (2, 1.1)]
    paths = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert paths == {"record", "model"}
    assert [a.path for a in client.list_artifacts(run.info.run_id, "model")] == \
        ["model/weights.bin"]
    assert (tmp_path / "o" / "mlruns").is_dir()


def test_tracking_is_off_by_default_and_checked(tmp_path: Path, cpu_only) -> None:
    _cfg, record = _finish(tmp_path)
    assert "mlflow_run_id" not in record.extra and not (tmp_path / "o" / "mlruns").exists()
    with pytest.raises(ConfigError, match="tracking must be none or mlflow"):
        nbutils.setup("smoke", verbose=False, tracking="wandb")


def test_the_store_follows_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(tmp_path) == "http://127.0.0.1:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking_uri(tmp_path) == (tmp_path / "mlruns").resolve().as_uri()
    assert flat_params({"a": 1, "b": {"c": [1, 2]}}) == {"a": "1", "b.c": "[1, 2]"}




_WRITE_EVENTS = """
import sys
from pathlib import Path
from nbutils.tracking import summary_writer
root = Path(sys.argv[1])
writer = summary_writer(root / "torch")
writer.add_scalar("loss/train", 0.5, 1)
writer.close()
print("tensorflow" in sys.modules, "tensorboard.compat.notf" in sys.modules)
import numpy as np
from nbutils.keras_data import keras  # TensorFlow, loaded the course's way
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
model.compile("sgd", "mse")
model.fit(np.zeros((8, 4)), np.zeros((8, 2)), epochs=1, verbose=0,
          callbacks=[keras.callbacks.TensorBoard(str(root / "keras"))])
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
events = EventAccumulator(str(root / "torch"))
events.Reload()
print([s.value for s in events.Scalars("loss/train")], len(list(root.rglob("events.out*"))))
"""


def test_tensorboard_events_are_written_without_loading_tensorflow(tmp_path: Path) -> None:
    """PyTorch's writer leaves TensorFlow out, and Keras's TensorBoard callback still works
    later in the same process. In a fresh process: this one must not load TensorFlow
    before PyTorch's compiler (that crashes it, see ``keras_data``)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _WRITE_EVENTS, str(tmp_path)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    first, last = done.stdout.strip().split("\n")[-2:]
    assert first == "False False"  # TensorFlow is installed, stayed out, switch cleared
    assert last == "[0.5] 2"       # the torch events read back; Keras wrote its own too
