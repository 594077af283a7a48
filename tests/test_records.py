"""Run records: versioned JSON, validated on write and read, found by dataset/profile."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nbutils.records import (
    SCHEMA_VERSION,
    RecordError,
    RunRecord,
    find_records,
    read_record,
    record_path,
    write_record,
)
from nbutils.records import TestMetrics as _TestMetrics  # aliased: not a pytest test class


def test_round_trip_is_lossless(record_factory, tmp_path: Path) -> None:
    record = record_factory(extra={"note": "x", "scores": [0.1, 0.2]})
    path = write_record(record, tmp_path)
    assert path == tmp_path / "metrics" / "02_pytorch_alexnet__shapes__smoke.json"
    assert path == record_path(record, tmp_path)
    again = read_record(path)
    assert again == record
    assert isinstance(again.test, _TestMetrics)
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temporary files left"


def test_numpy_values_and_paths_are_written_as_json(record_factory, tmp_path: Path) -> None:
    record = record_factory(
        history=[{"epoch": 1, "train_loss": np.float32(0.5), "val_acc": np.float64(0.25)}],
        extra={"probs": np.array([0.25, 0.75]), "where": tmp_path / "m", "n": np.int64(3)},
    )
    again = read_record(write_record(record, tmp_path))
    assert again.history == [{"epoch": 1, "train_loss": 0.5, "val_acc": 0.25}]
    assert again.extra == {"probs": [0.25, 0.75], "where": str(tmp_path / "m"), "n": 3}
    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_record(record_factory(extra={"bad": object()}), tmp_path / "other")


def test_rewriting_replaces_the_file(record_factory, tmp_path: Path) -> None:
    path = write_record(record_factory(train_seconds=1.0), tmp_path)
    write_record(record_factory(train_seconds=9.0), tmp_path)
    assert read_record(path).train_seconds == 9.0
    assert len(list(path.parent.iterdir())) == 1


def test_run_id(record_factory) -> None:
    assert record_factory(dataset="shapes:12").run_id == "02_pytorch_alexnet__shapes-12__smoke"
    folder = record_factory(dataset="imagefolder:../shared/data/cifar10-subset", profile="cpu")
    assert folder.run_id == "02_pytorch_alexnet__imagefolder-cifar10-subset__cpu"
    odd = record_factory(dataset="my data!")  # not a valid spec: still gets a file-safe name
    assert odd.run_id == "02_pytorch_alexnet__my-data-__smoke"


@pytest.mark.parametrize(
    ("change", "pattern"),
    [({"framework": "jax"}, "framework must be one of"),
     ({"notebook": ""}, "'notebook' must be a non-empty string"),
     ({"dataset": 3}, "'dataset' must be a non-empty string"),
     ({"num_params": -1}, "'num_params' must be a non-negative int"),
     ({"num_params": 1.5}, "'num_params'"),
     ({"train_seconds": -2.0}, "'train_seconds' must be >= 0"),
     ({"train_seconds": float("nan")}, "'train_seconds'"),
     ({"history": {"epoch": 1}}, "'history' must be a list"),
     ({"history": [1, 2]}, "'history' must be a list"),
     ({"class_names": ["a", "b"]}, "must be 2x2 for 2 classes")],
)
def test_validation_names_the_bad_field(record_factory, tmp_path, change, pattern) -> None:
    record = record_factory(**change)
    with pytest.raises(RecordError, match=pattern):
        write_record(record, tmp_path)
    assert not (tmp_path / "metrics").exists() or not list((tmp_path / "metrics").iterdir())


@pytest.mark.parametrize(
    ("field", "value", "pattern"),
    [("accuracy", 1.2, "'test.accuracy' must be a number in \\[0, 1\\]"),
     ("macro_f1", -0.1, "'test.macro_f1'"),
     ("macro_recall", "high", "'test.macro_recall'"),
     ("confusion_matrix", [[1, 2, 3], [4, 5, 6]], "'test.confusion_matrix' must be 3x3"),
     ("confusion_matrix", [[1, 2], [3, 4], [5, 6]], "'test.confusion_matrix' must be 3x3")],
)
def test_test_metrics_are_validated(record_factory, field, value, pattern) -> None:
    record = record_factory()
    setattr(record.test, field, value)
    with pytest.raises(RecordError, match=pattern):
        record.validate()


def _dict(record_factory) -> dict:
    return json.loads(json.dumps(record_factory().to_dict()))


def test_from_dict_rejects_other_schema_versions(record_factory) -> None:
    data = _dict(record_factory)
    data["schema_version"] = 2
    with pytest.raises(RecordError) as err:
        RunRecord.from_dict(data, source="old.json")
    msg = str(err.value)
    assert "old.json has schema_version 2" in msg and f"reads version {SCHEMA_VERSION}" in msg
    assert "Re-run the notebook" in msg
    del data["schema_version"]
    with pytest.raises(RecordError, match="schema_version None"):
        RunRecord.from_dict(data)


def test_from_dict_names_missing_and_unknown_fields(record_factory) -> None:
    data = _dict(record_factory)
    del data["seed"], data["num_params"]
    with pytest.raises(RecordError, match="lacks field\\(s\\): num_params, seed"):
        RunRecord.from_dict(data)
    data = _dict(record_factory)
    data["colour"] = "blue"
    with pytest.raises(RecordError, match="unknown field\\(s\\): colour"):
        RunRecord.from_dict(data)
    data = _dict(record_factory)
    for optional in ("artifacts", "extra", "created_at"):
        del data[optional]
    assert RunRecord.from_dict(data).extra == {}


def test_from_dict_checks_the_test_section(record_factory) -> None:
    data = _dict(record_factory)
    data["test"]["top5"] = 0.9
    with pytest.raises(RecordError, match="'test' must hold only"):
        RunRecord.from_dict(data)
    data = _dict(record_factory)
    del data["test"]["accuracy"]
    with pytest.raises(RecordError, match="'test' is incomplete"):
        RunRecord.from_dict(data)
    data = _dict(record_factory)
    data["test"] = [0.5]
    with pytest.raises(RecordError, match="'test' must hold only"):
        RunRecord.from_dict(data)
    data = _dict(record_factory)
    data["test"]["accuracy"] = 2.0
    with pytest.raises(RecordError, match="'test.accuracy'"):
        RunRecord.from_dict(data)


def test_read_record_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RecordError, match="bad.json is not valid JSON"):
        read_record(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(RecordError, match="must hold a JSON object"):
        read_record(bad)


def test_find_records_filters_and_lists_problems(record_factory, tmp_path: Path) -> None:
    assert find_records(tmp_path) == ([], [])  # no metrics folder yet
    write_record(record_factory(), tmp_path)
    write_record(record_factory(notebook="03_keras_cnn", framework="keras"), tmp_path)
    write_record(record_factory(profile="cpu"), tmp_path)
    write_record(record_factory(dataset="cifar10", profile="cpu"), tmp_path)
    metrics = tmp_path / "metrics"
    (metrics / "broken.json").write_text("{")
    old = json.loads((metrics / "02_pytorch_alexnet__shapes__smoke.json").read_text())
    old["schema_version"] = 0
    (metrics / "zz_old.json").write_text(json.dumps(old))
    (metrics / "notes.txt").write_text("ignored")

    records, problems = find_records(tmp_path)
    assert len(records) == 4
    assert [p.name for p, _ in problems] == ["broken.json", "zz_old.json"]
    assert "not valid JSON" in problems[0][1] and "schema_version 0" in problems[1][1]

    smoke, _ = find_records(tmp_path, profile="smoke")
    assert sorted(r.notebook for r in smoke) == ["02_pytorch_alexnet", "03_keras_cnn"]
    shapes_cpu, _ = find_records(tmp_path, dataset="shapes", profile="cpu")
    assert [(r.dataset, r.profile) for r in shapes_cpu] == [("shapes", "cpu")]
    cifar, _ = find_records(tmp_path, dataset="cifar10")
    assert [r.run_id for r in cifar] == ["02_pytorch_alexnet__cifar10__cpu"]
    assert find_records(tmp_path, dataset="cifar100")[0] == []


def test_find_records_matches_specs_by_the_data_they_name(record_factory, tmp_project) -> None:
    (tmp_project / "pics").mkdir()
    write_record(record_factory(dataset="imagefolder:pics"), "outputs")  # relative to the root
    write_record(record_factory(notebook="03_x", dataset="CIFAR10"), "outputs")
    write_record(record_factory(notebook="04_x", dataset="my data!"), "outputs")
    assert (tmp_project / "outputs" / "metrics").is_dir()

    def found(spec: str) -> list[str]:
        return [r.dataset for r in find_records("outputs", dataset=spec)[0]]

    assert found(f"imagefolder:{tmp_project / 'pics'}") == ["imagefolder:pics"]
    assert found("imagefolder:./pics/") == ["imagefolder:pics"]
    assert found("imagefolder:other") == []
    # the slug names the record files, so folders of the same name are the same dataset
    assert found("imagefolder:/elsewhere/pics") == ["imagefolder:pics"]
    assert found("cifar10") == ["CIFAR10"]
    assert found("my data!") == ["my data!"]
