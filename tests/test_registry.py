"""The framework registry is the only list of frameworks; the model registries rebuild models.

A fake framework added to the registry in a test must show up, with no other edit,
wherever the course enumerates frameworks: the runs notebook 05 expects, the
Grad-CAM backends of notebook 06, the benchmarks, reloading a saved model and the
validation of run records.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from nbutils import bench, gradcam
from nbutils.compare import load_runs
from nbutils.fitting import FitResult
from nbutils.frameworks import registry
from nbutils.inference import ClassifierInfo, load_classifier, write_classifier_info
from nbutils.records import RecordError, RunRecord
from nbutils.records import TestMetrics as Metrics
from nbutils.runs import find_runs
from nbutils.settings import Settings


class FakeNative:
    """A 'native model' of the fake framework (its class lives in module ``fakefw.models``)."""


FakeNative.__module__ = "fakefw.models"


@pytest.fixture
def fake_framework(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Register framework ``fakefw`` (notebook 07) with its own modules, all in memory."""
    calls: dict[str, list] = {"bench": [], "load": [], "backend": []}
    trainer = types.ModuleType("fakefw_train")
    trainer.load_classifier = lambda folder, info, device="cpu": calls["load"].append(
        (Path(folder).name, info.model, device)) or "loaded"
    bench_mod = types.ModuleType("fakefw_bench")
    bench_mod.main = lambda argv: calls["bench"].append(list(argv)) or 0
    backend = types.ModuleType("fakefw_cam")
    backend.prepare = lambda model, images, info: calls["backend"].append(len(images)) or images
    for module in (trainer, bench_mod, backend):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(registry.FRAMEWORKS, "fakefw", registry.Framework(
        id="fakefw", label="Fake", module="fakefw_train", notebook="07_fake_training",
        gradcam_backend="fakefw_cam", benchmark="fake", benchmark_module="fakefw_bench",
        native_modules=("fakefw.",)))
    return calls


def test_a_new_framework_entry_reaches_every_list(fake_framework, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    # notebook 05: its training notebook is an expected run, with the command that makes it
    runs = load_runs(tmp_path / "outputs", "shapes", "smoke")
    assert [(m.prefix, m.framework) for m in runs.missing][-1] == ("07", "fakefw")
    assert "--only 07" in runs.missing[-1].command
    assert find_runs(tmp_path, "shapes", "smoke").command.endswith("--only 02,03,04,07")
    # notebook 06: its models get its Grad-CAM backend
    assert registry.gradcam_backends()["fakefw"] == "fakefw_cam"
    images = np.zeros((3, 8, 8, 3), np.uint8)
    assert gradcam.framework_of(FakeNative()) == "fakefw"
    assert gradcam.prepare_inputs(FakeNative(), images) is images
    assert fake_framework["backend"] == [3]
    # the benchmarks: listed, and dispatched to its module
    assert bench.main([]) == 2
    assert "fake" in capsys.readouterr().out
    assert bench.main(["fake", "--steps", "3"]) == 0
    assert fake_framework["bench"] == [["--steps", "3"]]
    # reloading: classifier.json names the framework, the registry finds its module
    write_classifier_info(tmp_path / "m", ClassifierInfo("fakefw", "net", ["a", "b"], 8,
                                                         [0.5] * 3, [0.2] * 3))
    assert load_classifier(tmp_path / "m", device="cuda") == "loaded"
    assert fake_framework["load"] == [("m", "net", "cuda")]
    # run records accept it, and still refuse a framework nobody registered
    record = RunRecord(notebook="07_fake_training", framework="fakefw", model="net",
                       dataset="shapes", profile="smoke", seed=0, config={},
                       class_names=["a", "b"], num_params=1, train_seconds=1.0, history=[],
                       test=Metrics(0.5, 0.5, 0.5, 0.5, [[1, 1], [1, 1]]),
                       peak_memory_mb={}, library_versions={}, device={})
    assert record.validate() is record
    record.framework = "jax"
    with pytest.raises(RecordError, match="framework must be one of"):
        record.validate()


def test_registry_lookups_and_errors() -> None:
    assert registry.framework_ids()[:3] == ("pytorch", "keras", "huggingface")
    assert registry.framework_of_notebook("03").id == "keras"
    assert registry.framework_of_notebook("04_hf_transfer_learning").label == "Hugging Face"
    assert registry.benchmarks()["hf"] == "nbutils.benchmarks.hf_bench"
    with pytest.raises(registry.UnknownFrameworkError, match="Did you mean 'keras'"):
        registry.get_framework("kerass")
    with pytest.raises(registry.UnknownFrameworkError, match="training notebook"):
        registry.framework_of_notebook("05_comparison")
    with pytest.raises(TypeError, match="Grad-CAM supports"):
        gradcam.framework_of(object())


def test_unknown_framework_in_classifier_json_is_a_clear_error(tmp_path: Path) -> None:
    write_classifier_info(tmp_path, ClassifierInfo("jax", "m", ["a"], 8, [0.5] * 3, [0.2] * 3))
    with pytest.raises(ValueError, match="Unknown framework 'jax'"):
        load_classifier(tmp_path)


def test_model_registry_builds_and_names_families() -> None:
    reg = registry.ModelRegistry("demo")

    class Cfg:
        def __init__(self, width: int) -> None:
            self.width = width

    @reg.register("box", config=Cfg)
    def build_box(config: Cfg) -> tuple[str, int]:
        return ("box", config.width)

    assert "box" in reg and reg.names() == ["box"] and list(reg) == ["box"]
    assert reg.build("box", {"width": 3}) == ("box", 3)
    assert reg.build("box", Cfg(5)) == ("box", 5)
    with pytest.raises(registry.UnknownFrameworkError, match="demo model family 'bx'.*'box'"):
        reg.build("bx", {})


def test_fit_result_combines_phases_and_fills_the_record() -> None:
    probe = FitResult([{"epoch": 1, "val_acc": 0.6}], 10.0, cpu_seconds=20.0, best_epoch=1,
                      host_peak_mb=100.0, threads=[2], load_average=[0.5, 0.7],
                      extra={"strategy": "linear_probe"})
    tune = FitResult([{"epoch": 2, "val_acc": 0.8}, {"epoch": 3, "val_acc": 0.7}], 30.0,
                     cpu_seconds=50.0, best_epoch=2, host_peak_mb=300.0, device_peak_mb=9.0,
                     threads=[2], load_average=[0.9, 1.1], extra={"strategy": "fine_tune"})
    both = FitResult.combine(probe, tune)
    assert [h["epoch"] for h in both.history] == [1, 2, 3] and both.epochs == 3
    assert both.train_seconds == 40.0 and both.cpu_seconds == 70.0
    assert both.best_epoch == 2 and both.best_val_acc == 0.8 and both.final_val_acc == 0.7
    assert both.host_peak_mb == 300.0 and both.device_peak_mb == 9.0
    assert both.load_average == [0.5, 1.1] and both.threads == [2, 2]
    assert both.record_extra() == {
        "best_epoch": 2, "train_cpu_seconds": 70.0, "threads": [2, 2],
        "load_average": [0.5, 1.1],
        "phases": [{"strategy": "linear_probe"}, {"strategy": "fine_tune"}]}
    empty = FitResult([], 0.0)
    assert np.isnan(empty.final_val_acc) and np.isnan(empty.best_val_acc)
    assert "0 epoch(s)" in empty.summary()


def test_settings_pick_their_fields_and_refuse_unknown_changes() -> None:
    from dataclasses import dataclass

    @dataclass
    class Demo(Settings):
        epochs: int = 1
        lr: float = 0.1

    demo = Demo.from_settings({"epochs": 3, "widths": [1, 2]}, lr=0.5)
    assert demo == Demo(3, 0.5) and demo.to_dict() == {"epochs": 3, "lr": 0.5}
    with pytest.raises(TypeError, match="no setting.*lrr"):
        Demo.from_settings({}, lrr=1.0)
    # the config's range table applies to every settings class
    with pytest.raises(ValueError, match="Demo: epochs must be at least 1, got 0"):
        Demo(epochs=0)
    with pytest.raises(ValueError, match="Demo: lr must be greater than 0"):
        Demo(lr=0.0)
