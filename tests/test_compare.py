"""Tests of notebook 05's comparison: loading, metrics, timing harness, table and report.

Covers the ``nbutils.compare`` package (runs, speed, stats, table, plots, report).
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from nbutils import compare
from nbutils.compare import plots as cplots
from nbutils.compare import report as creport
from nbutils.inference import ClassifierInfo, write_classifier_info
from nbutils.metrics import classification_metrics, expected_calibration_error
from nbutils.records import RunRecord, write_record

CLASSES = ["a", "b", "c"]
PROFILE = "smoke"
DATASET = "shapes"


# --------------------------------------------------------------------------- helpers


def fake_probs(images: np.ndarray, k: int = 3, shift: float = 0.0) -> np.ndarray:
    """Deterministic probabilities computed from the brightness of the first pixel."""
    v = np.asarray(images, dtype=np.float64)[:, 0, 0, 0] / 255.0
    centres = (np.arange(k) + 0.5) / k + shift
    logits = -50.0 * (v[:, None] - centres[None, :]) ** 2
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


class FakeClassifier:
    """Stands in for a reloaded course model."""

    def __init__(self, info: ClassifierInfo) -> None:
        self.info = info
        self.model = None
        self.calls: list[int] = []

    def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        assert images.dtype == np.uint8 and images.ndim == 4
        self.calls.append(len(images))
        return fake_probs(images, len(self.info.class_names), self.info.extra.get("shift", 0.0))


@pytest.fixture
def fake_framework(monkeypatch: pytest.MonkeyPatch) -> list[FakeClassifier]:
    """Register framework 'numpy' -> a fake module whose models are FakeClassifier."""
    loaded: list[FakeClassifier] = []
    module = types.ModuleType("fake_numpy_classifier")

    def load_classifier(model_dir: Path, info: ClassifierInfo, device: str = "cpu"):
        if info.extra.get("broken"):
            raise RuntimeError("weights are corrupt")
        clf = FakeClassifier(info)
        loaded.append(clf)
        return clf

    module.load_classifier = load_classifier
    monkeypatch.setitem(sys.modules, "fake_numpy_classifier", module)  # conftest's 'numpy' entry
    return loaded


def make_images(n: int = 30, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)


def save_run(outputs: Path, notebook: str, probs: np.ndarray, labels: np.ndarray, *,
             framework: str = "numpy", model: str | None = None, dataset: str = DATASET,
             profile: str = PROFILE, model_extra: dict | None = None, with_model: bool = True,
             train_seconds: float = 10.0, num_params: int = 1000) -> RunRecord:
    """Write a run the way finish_run does: probabilities, a model folder and the record."""
    record = RunRecord(
        notebook=notebook, framework=framework, model=model or notebook.split("_")[-1],
        dataset=dataset, profile=profile, seed=0, config={}, class_names=list(CLASSES),
        num_params=num_params, train_seconds=train_seconds,
        history=[{"epoch": 1, "train_loss": 1.0}],
        test=classification_metrics(labels, probs, CLASSES),
        peak_memory_mb={"host_rss": 500.0}, library_versions={}, device={"type": "cpu"},
    )
    run_id = record.run_id
    probs_path = outputs / "predictions" / f"{run_id}_test_probs.npz"
    probs_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(probs_path, probs=probs.astype(np.float32), labels=labels,
                        ids=np.asarray([f"img{i}" for i in range(len(labels))]))
    record.artifacts = {"test_probs": str(probs_path)}
    if with_model:
        model_dir = outputs / "models" / run_id
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / "weights.bin").write_bytes(b"\0" * 2048)
        write_classifier_info(model_dir, ClassifierInfo(
            framework=framework, model=record.model, class_names=list(CLASSES), image_size=8,
            mean=[0.5] * 3, std=[0.25] * 3, extra=model_extra or {}))
        record.artifacts["model"] = str(model_dir)
    write_record(record, outputs)
    return record


@pytest.fixture
def three_runs(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """Three fake runs on the same 30 images; returns (outputs, images, labels)."""
    outputs = tmp_path / "outputs"
    images = make_images()
    labels = fake_probs(images).argmax(1)
    labels[:6] = (labels[:6] + 1) % 3  # make the first model wrong on six images
    save_run(outputs, "02_pytorch_alexnet", fake_probs(images), labels, num_params=5000)
    save_run(outputs, "03_keras_cnn", fake_probs(images, shift=0.05), labels, train_seconds=3.0,
             model_extra={"shift": 0.05})
    save_run(outputs, "04_hf_transfer", fake_probs(images, shift=-0.08), labels,
             train_seconds=30.0, model_extra={"shift": -0.08}, num_params=90000)
    return outputs, images, labels


def runset_from(probs_list: list[np.ndarray], labels: np.ndarray) -> compare.RunSet:
    """A RunSet from arrays alone (no files)."""
    runs = []
    names = (CLASSES + ["d", "e", "f"])
    for i, probs in enumerate(probs_list):
        rec = RunRecord(
            notebook=f"0{i + 2}_m{i}", framework="numpy", model=f"m{i}", dataset=DATASET,
            profile=PROFILE, seed=0, config={}, class_names=names[:probs.shape[1]],
            num_params=10, train_seconds=1.0, history=[],
            test=classification_metrics(labels, probs, names[:probs.shape[1]]),
            peak_memory_mb={}, library_versions={}, device={})
        runs.append(compare.Run(rec, f"m{i}", np.asarray(probs, float), np.asarray(labels)))
    return compare.RunSet(DATASET, "shapes", PROFILE, Path("."), runs)


# --------------------------------------------------------------------------- loading


def test_unknown_schema_version_is_rejected_clearly(three_runs):
    outputs, _, _ = three_runs
    path = outputs / "metrics" / "03_keras_cnn__shapes__smoke.json"
    data = json.loads(path.read_text())
    data["schema_version"] = 99
    path.write_text(json.dumps(data))
    rs = compare.load_runs(outputs, DATASET, PROFILE)
    assert [r.record.notebook for r in rs.runs] == ["02_pytorch_alexnet", "04_hf_transfer"]
    assert len(rs.problems) == 1
    bad, reason = rs.problems[0]
    assert bad.name == path.name
    assert "schema_version 99" in reason and "reads version 1" in reason
    assert "--only 03" in reason  # says how to re-create it
    assert rs.missing == []  # unreadable is reported as such, not as missing
    text = rs.summary()
    assert "UNREADABLE 03_keras_cnn__shapes__smoke.json" in text and "schema_version 99" in text


def test_missing_runs_name_the_command(tmp_path):
    outputs = tmp_path / "outputs"
    images = make_images(12)
    labels = fake_probs(images).argmax(1)
    save_run(outputs, "02_pytorch_alexnet", fake_probs(images), labels)
    rs = compare.load_runs(outputs, DATASET, PROFILE)
    assert [(m.prefix, m.framework) for m in rs.missing] == [("03", "keras"),
                                                              ("04", "huggingface")]
    assert rs.missing[0].command == ("python -m nbutils.run --profile smoke --dataset shapes "
                                     "--only 03")
    text = rs.summary()
    assert "MISSING 04 (huggingface)" in text
    assert "python -m nbutils.run --profile smoke --dataset shapes --only 04" in text
    assert "fewer than two runs" in text
    report = creport.render_report(compare.build_comparison(rs))
    assert "`python -m nbutils.run --profile smoke --dataset shapes --only 03`" in report


def test_no_runs_at_all(tmp_path):
    rs = compare.load_runs(tmp_path / "outputs", DATASET, PROFILE)
    assert rs.runs == [] and len(rs.missing) == 3 and rs.n_test == 0
    comp = compare.build_comparison(rs)
    assert comp.ensemble is None and len(comp.table) == 0 and len(comp.pairwise) == 0
    assert cplots.comparison_figures(comp) == {}
    report = creport.write_comparison(comp, tmp_path / "cmp")
    text = report.read_text()
    assert "No runs to compare yet" in text and "--only 02" in text


def test_datasets_match_by_slug_and_profile(tmp_path):
    outputs = tmp_path / "outputs"
    images = make_images(12)
    labels = fake_probs(images).argmax(1)
    save_run(outputs, "02_pytorch_alexnet", fake_probs(images), labels,
             dataset="imagefolder:/somewhere/else/cifar10-subset")
    save_run(outputs, "03_keras_cnn", fake_probs(images), labels, profile="cpu",
             dataset="imagefolder:../shared/data/cifar10-subset")
    save_run(outputs, "04_hf_transfer", fake_probs(images), labels, dataset="shapes")
    rs = compare.load_runs(outputs, "imagefolder:../shared/data/cifar10-subset/", PROFILE)
    assert [r.record.notebook for r in rs.runs] == ["02_pytorch_alexnet"]
    assert rs.slug == "imagefolder-cifar10-subset"


def test_runs_on_another_test_set_or_without_probabilities_are_left_out(tmp_path):
    outputs = tmp_path / "outputs"
    images = make_images(12)
    labels = fake_probs(images).argmax(1)
    save_run(outputs, "02_pytorch_alexnet", fake_probs(images), labels)
    other = make_images(10, seed=1)
    save_run(outputs, "03_keras_cnn", fake_probs(other), fake_probs(other).argmax(1))
    rec = save_run(outputs, "04_hf_transfer", fake_probs(images), labels)
    Path(rec.artifacts["test_probs"]).unlink()
    rs = compare.load_runs(outputs, DATASET, PROFILE)
    assert [r.record.notebook for r in rs.runs] == ["02_pytorch_alexnet"]
    reasons = " ".join(why for _, why in rs.problems)
    assert "test set or classes differ" in reasons and "test probabilities" in reasons
    assert rs.missing == []


def test_moved_project_still_finds_probabilities(tmp_path):
    outputs = tmp_path / "outputs"
    images = make_images(12)
    labels = fake_probs(images).argmax(1)
    rec = save_run(outputs, "02_pytorch_alexnet", fake_probs(images), labels)
    rec.artifacts["test_probs"] = "/no/such/place/probs.npz"
    write_record(rec, outputs)
    rs = compare.load_runs(outputs, DATASET, PROFILE)
    assert len(rs.runs) == 1 and rs.problems == []


# --------------------------------------------------------------------------- metrics


def test_ece_matches_hand_computed_value():
    labels = np.array([0, 1, 0, 1])
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    # confidences .9 .6 .7 .8, right/wrong: R W W R
    # 2 bins: one bin, conf .75, acc .5 -> .25
    assert expected_calibration_error(labels, probs, n_bins=2) == pytest.approx(0.25)
    # 5 bins: (.4,.6]: .6 W -> .6; (.6,.8]: .7 W, .8 R -> 2*|.5-.75|; (.8,1]: .9 R -> .1
    assert expected_calibration_error(labels, probs, n_bins=5) == pytest.approx(1.2 / 4)
    table = compare.build_table(runset_from([probs], labels), ece_bins=5)
    assert table.loc["m0", "ece"] == pytest.approx(0.3)
    assert table.loc["m0", "accuracy"] == pytest.approx(0.5)


def test_mcnemar_and_bootstrap_in_pairwise_table():
    labels = np.zeros(8, dtype=int)
    right_a = np.array([1, 1, 1, 1, 1, 0, 0, 1], bool)
    right_b = np.array([0, 0, 0, 1, 1, 1, 0, 1], bool)
    to_probs = lambda r: np.where(r[:, None], [[0.8, 0.2]], [[0.3, 0.7]])  # noqa: E731
    pw = compare.pairwise_significance(runset_from([to_probs(right_a), to_probs(right_b)], labels),
                                       n_boot=500)
    row = pw.iloc[0]
    assert (row.model_a, row.model_b) == ("m0", "m1")
    assert (row.only_a_right, row.only_b_right) == (3, 1)
    # exact two-sided: 2 * P(X <= 1), X ~ Bin(4, 1/2) = 2 * 5/16
    assert row.p_value == pytest.approx(10 / 16)
    assert not row.significant
    assert row["diff"] == pytest.approx(6 / 8 - 4 / 8)
    assert row.ci_low <= row["diff"] <= row.ci_high


def test_ensemble_matches_hand_computed_mean():
    labels = np.array([1, 1, 0])
    a = np.array([[0.6, 0.4], [0.2, 0.8], [0.55, 0.45]])  # right on 2 of 3
    b = np.array([[0.3, 0.7], [0.7, 0.3], [0.9, 0.1]])  # right on 2 of 3
    rs = runset_from([a, b], labels)
    ens = compare.ensemble_vs_best(rs, n_boot=200)
    np.testing.assert_allclose(ens.probs, [[0.45, 0.55], [0.45, 0.55], [0.725, 0.275]])
    assert ens.accuracy == pytest.approx(1.0)
    assert ens.best_label == "m0" and ens.best_accuracy == pytest.approx(2 / 3)
    assert ens.beats_best and ens.diff == pytest.approx(1 / 3)
    assert (ens.mcnemar.b, ens.mcnemar.c, ens.mcnemar.p_value) == (1, 0, 1.0)
    assert "beats the best single model, m0" in ens.verdict()
    assert "not significant" in ens.verdict()
    assert compare.ensemble_vs_best(runset_from([a], labels)) is None
    table = compare.build_table(rs, ensemble=ens)
    assert table.loc[ens.label, "framework"] == "ensemble"
    assert table.loc[ens.label, "params"] == 20 and table.loc[ens.label, "train_s"] == 2.0


def test_wilson_interval_known_values():
    low, high = compare.wilson_interval(50, 100)
    assert (round(low, 4), round(high, 4)) == (0.4038, 0.5962)
    assert compare.wilson_interval(0, 0) == (0.0, 1.0)
    low, high = compare.wilson_interval(10, 10)
    assert high == 1.0 and 0.69 < low < 0.73


def test_disagreements_counts_and_order():
    labels = np.zeros(6, dtype=int)
    preds = np.array([[0, 1, 0, 1, 0, 1],   # model a
                      [0, 1, 1, 2, 1, 1],   # model b
                      [0, 2, 0, 3, 2, 1]])  # model c
    # image 0: all right; 1: two guesses, none right; 2: two guesses, some right;
    # 3: three guesses, none right; 4: three guesses, one right; 5: all agree, wrong
    rs = runset_from([np.eye(4)[p] for p in preds], labels)
    d = compare.disagreements(rs)
    assert d["all_agree"] == 2 and d["all_agree_right"] == 1 and d["all_agree_wrong"] == 1
    assert d["disagree"] == 4 and d["some_right"] == 2
    assert list(d["indices"]) == [4, 3, 2, 1]  # most split first, then some model right
    assert d["oracle_accuracy"] == pytest.approx(3 / 6)
    assert list(compare.disagreements(rs, limit=1)["indices"]) == [4]
    empty = compare.disagreements(runset_from([], labels[:0]))
    assert empty["n_test"] == 0 and len(empty["indices"]) == 0


def test_per_class_table_error_is_one_minus_recall():
    labels = np.array([0, 0, 1, 1])
    probs = np.eye(2)[[0, 1, 1, 1]]
    rs = runset_from([probs], labels)
    err = compare.per_class_table(rs, "error")
    assert list(err.loc["m0"]) == pytest.approx([0.5, 0.0])
    f1 = compare.per_class_table(rs, "f1")
    assert f1.loc["m0", "a"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="metric must be"):
        compare.per_class_table(rs, "auc")


# --------------------------------------------------------------------------- timing


def test_time_calls_warms_up_then_times():
    calls = []
    times = compare.time_calls(lambda: calls.append(1), repeats=4, warmup=3)
    assert len(calls) == 7 and times.shape == (4,) and (times >= 0).all()
    with pytest.raises(ValueError, match="repeats"):
        compare.time_calls(lambda: None, repeats=0)


def test_time_calls_stops_at_the_budget():
    import time

    times = compare.time_calls(lambda: time.sleep(0.01), repeats=100, budget_s=0.015)
    assert len(times) == 3  # at least min_repeats, then the budget is spent
    times = compare.time_calls(lambda: time.sleep(0.01), repeats=100, budget_s=0.0,
                               min_repeats=1)
    assert len(times) == 1


def test_measure_classifier_uses_batch_one_and_full_batches():
    info = ClassifierInfo("numpy", "m", CLASSES, 8, [0.5] * 3, [0.25] * 3)
    clf = FakeClassifier(info)
    images = make_images(5)
    out = compare.measure_classifier(clf, images, batch_size=8, latency_repeats=6,
                                     warmup_repeats=2, throughput_batches=3,
                                     reference_probs=fake_probs(images))
    # one reference batch, 2 + 6 single images, 3 timed batches; the batch cycles 5 images
    assert clf.calls == [8] + [1] * 8 + [8] * 3
    assert out["reload_agreement"] == 1.0
    assert out["latency_ms"] > 0 and out["latency_p90_ms"] >= out["latency_ms"]
    assert out["throughput_ips"] > 0
    assert (out["latency_repeats"], out["throughput_batches"]) == (6, 3)
    with pytest.raises(ValueError, match="at least one"):
        compare.measure_classifier(clf, images[:0], batch_size=2, latency_repeats=1,
                                   warmup_repeats=0, throughput_batches=1)


def test_measure_runs_reports_broken_models_and_measures_the_rest(tmp_path, fake_framework):
    outputs = tmp_path / "outputs"
    images = make_images(10)
    labels = fake_probs(images).argmax(1)
    save_run(outputs, "02_pytorch_alexnet", fake_probs(images), labels)
    save_run(outputs, "03_keras_cnn", fake_probs(images), labels, model_extra={"broken": True})
    save_run(outputs, "04_hf_transfer", fake_probs(images), labels, with_model=False)
    rs = compare.load_runs(outputs, DATASET, PROFILE)
    speed = compare.measure_runs(rs, images, batch_size=4, latency_repeats=3, warmup_repeats=1,
                                 throughput_batches=2, isolate=False,
                                 progress=False)
    ok, broken, none = (speed[r.label] for r in rs.runs)
    assert ok.error is None and ok.latency_ms > 0 and ok.reload_agreement == 1.0
    assert ok.size_mib == pytest.approx(
        sum(f.stat().st_size for f in (outputs / "models" / rs.runs[0].record.run_id).iterdir())
        / 2 ** 20)
    assert "weights are corrupt" in broken.error and broken.latency_ms is None
    assert "saved no model folder" in none.error
    summary = compare.speed_summary(speed)
    assert "not measured: could not load or run" in summary
    assert "agrees with the record on 100%" in summary
    assert compare.speed_summary({}) == "No models were timed."
    assert len(fake_framework) == 1  # the broken one never returned a model


FAKE_LOADER = """
import os, signal
import numpy as np


class Clf:
    def predict_proba(self, images, batch_size=64):
        v = images[:, 0, 0, 0].astype(float) / 255.0
        centres = (np.arange(3) + 0.5) / 3
        logits = -50.0 * (v[:, None] - centres[None, :]) ** 2
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


def load(model_dir, device="cpu"):
    if "crash" in str(model_dir):
        os.kill(os.getpid(), signal.SIGSEGV)
    if "broken" in str(model_dir):
        raise RuntimeError(f"weights are corrupt (threads={os.environ.get('OMP_NUM_THREADS')})")
    return Clf()
"""


def test_isolated_measurement_survives_crashes(tmp_path, monkeypatch):
    (tmp_path / "fake_loader_mod.py").write_text(FAKE_LOADER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    outputs = tmp_path / "outputs"
    images = make_images(10)
    labels = fake_probs(images).argmax(1)
    runs = [save_run(outputs, nb, fake_probs(images), labels)
            for nb in ("02_ok", "03_crash", "04_broken")]
    rs = compare.load_runs(outputs, DATASET, PROFILE)
    assert [r.record.notebook for r in rs.runs] == [r.notebook for r in runs]
    speed = compare.measure_runs(rs, images, batch_size=4, latency_repeats=3, warmup_repeats=1,
                                 throughput_batches=2, loader="fake_loader_mod:load",
                                 threads=1, progress=False)
    ok, crash, broken = (speed[r.label] for r in rs.runs)
    assert ok.error is None and ok.latency_repeats == 3 and ok.reload_agreement == 1.0
    assert ok.load_seconds is not None and ok.throughput_ips > 0
    assert "crashed with signal 11 (SIGSEGV)" in crash.error
    assert "exited with status 1: RuntimeError: weights are corrupt" in broken.error
    assert "(threads=1)" in broken.error  # every model got the same thread count
    with pytest.raises(TypeError, match="module:function"):
        compare.measure_runs(rs, images, loader=lambda *a, **k: None)
    bad = compare.measure_runs(rs, images, loader="no-colon", isolate=False, progress=False)
    assert all("module:function" in s.error for s in bad.values())


# --------------------------------------------------------------------------- table & report


def test_table_report_and_figures_on_fake_records(three_runs, fake_framework, tmp_path):
    outputs, images, labels = three_runs
    rs = compare.load_runs(outputs, DATASET, PROFILE)
    assert len(rs.runs) == 3 and rs.missing == [] and rs.problems == []
    speed = compare.measure_runs(rs, images, batch_size=8, latency_repeats=3, warmup_repeats=1,
                                 throughput_batches=2, isolate=False,
                                 progress=False)
    assert all(s.reload_agreement == 1.0 for s in speed.values())
    comp = compare.build_comparison(rs, speed, ece_bins=10, n_boot=200, n_disagreements=8,
                                    settings={"batch_size": 8, "device": "cpu", "threads": 2})
    table = comp.table
    assert len(table) == 4 and comp.ensemble is not None
    first = rs.runs[0]
    assert table.loc[first.label, "accuracy"] == pytest.approx(first.correct.mean())
    assert table.loc[first.label, "accuracy"] == pytest.approx(24 / 30)
    assert table.loc[first.label, "params"] == 5000
    conf, right = first.probs.max(1), first.probs.argmax(1) == labels
    bins = np.clip(np.ceil(conf * 10).astype(int) - 1, 0, 9)   # (0, .1], (.1, .2], ...
    ece = sum((bins == b).mean() * abs(right[bins == b].mean() - conf[bins == b].mean())
              for b in range(10) if (bins == b).any())
    assert table.loc[first.label, "ece"] == pytest.approx(ece)
    assert {f"err_{c}" for c in CLASSES} <= set(table.columns)
    assert (table["latency_ms"] > 0).all() and (table["throughput_ips"] > 0).all()
    ens_row = table.loc[comp.ensemble.label]
    assert ens_row["latency_ms"] == pytest.approx(table["latency_ms"].iloc[:3].sum())
    assert len(comp.pairwise) == 6  # 3 models + ensemble, all pairs

    figures = cplots.comparison_figures(comp, images)
    assert set(figures) == {"accuracy_vs_train_time", "accuracy_vs_params", "per_class_f1",
                            "confusion_matrices", "reliability", "disagreements"}
    target = tmp_path / "comparison"
    target.mkdir()
    (target / "stale.png").write_bytes(b"old")
    report = creport.write_comparison(comp, target, figures)
    plt.close("all")
    assert not (target / "stale.png").exists()
    names = {p.name for p in target.iterdir()}
    assert {"table.csv", "per_class_f1.csv", "per_class_error.csv", "significance.csv",
            "disagreements.csv", "report.md", "reliability.png", "disagreements.png"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".comparison")]
    text = report.read_text()
    for run in rs.runs:
        assert f"| {run.label} |" in text
    assert "accuracy [95% CI]" in text and "img/s (b=8)" in text
    assert "80.0% [" in text  # the first model's accuracy, 24 of 30
    assert "on `cpu` with 2 CPU threads per model" in text
    assert "Timing details:" in text and "(2 batches)" in text
    assert "## Ensemble" in text and "McNemar p" in text and "![reliability](reliability.png)" in text
    csv = (target / "table.csv").read_text().splitlines()
    assert csv[0].startswith("model,framework,notebook,accuracy") and len(csv) == 5
    dis = (target / "disagreements.csv").read_text().splitlines()
    assert dis[0].startswith("test_index,image_id,true,")
    assert len(dis) - 1 == len(comp.disagreement["indices"])


def test_plots_handle_missing_values():
    labels = np.array([0, 1, 1])
    rs = runset_from([np.eye(2)[[0, 1, 0]]], labels)
    table = compare.build_table(rs)  # no speed: latency column empty
    fig = cplots.plot_accuracy_vs(table, "latency_ms", "latency (ms)")
    assert "no 'latency_ms' values" in fig.axes[0].texts[0].get_text()
    assert cplots.plot_disagreements(np.zeros((3, 4, 4, 3), np.uint8), rs,
                                     compare.disagreements(rs)) is None
    plt.close("all")


def test_markdown_table_and_formatting():
    text = creport.markdown_table([["x", 1.5, "a|b"]], ["model", "v", "w"])
    assert text.splitlines()[1] == "| :--- | ---: | ---: |"
    assert creport._fmt(None) == "–" and creport._fmt(float("nan")) == "–"
    assert creport._fmt(0.1234) == "0.123" and creport._fmt(12345.6) == "12,346"
    assert creport._fmt(3, "int") == "3" and creport._fmt(0.5, "pct") == "50.0%"
    assert creport._fmt("a|b") == "a\\|b" and creport._fmt(True) == "yes"


def test_smoke_runs_write_their_report_beside_the_real_one() -> None:
    """``make test`` runs notebook 05 under smoke; it must not replace a real report."""
    from nbutils.config import available_profiles, load_config

    dirs = {p: load_config(p, model="comparison").model.report_dir
            for p in available_profiles()}
    assert dirs["cpu"] == dirs["gpu"] == "comparison"
    assert dirs["smoke"] != "comparison"
    assert "/" not in dirs["smoke"] and "\\" not in dirs["smoke"]  # a sibling, not inside
