"""Metrics on hand-computed examples, the shared plots, and finish_run's files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

import nbutils
from nbutils import metrics, plots
from nbutils import runs as report
from nbutils.data import load_for
from nbutils.fitting import FitResult
from nbutils.records import read_record

LABELS = np.array([0, 0, 1, 1, 2, 2])
PREDS = np.array([0, 1, 1, 1, 2, 0])


def _onehot_probs(preds: np.ndarray, k: int, conf: float = 0.8) -> np.ndarray:
    probs = np.full((len(preds), k), (1 - conf) / (k - 1))
    probs[np.arange(len(preds)), preds] = conf
    return probs


def test_confusion_matrix_by_hand() -> None:
    cm = metrics.confusion_matrix(LABELS, PREDS, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert metrics.confusion_matrix([3], [0], 4)[3, 0] == 1


def test_classification_metrics_by_hand() -> None:
    m = metrics.classification_metrics(LABELS, _onehot_probs(PREDS, 3), ["a", "b", "c"])
    # precision: a 1/2, b 2/3, c 1/1; recall: a 1/2, b 2/2, c 1/2
    # f1: a 0.5, b 0.8, c 2/3
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.macro_precision == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert m.macro_recall == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert m.macro_f1 == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m.confusion_matrix == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m.per_class["b"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert m.n_test == 6


def test_macro_averages_skip_classes_absent_from_the_test_set() -> None:
    m = metrics.classification_metrics(LABELS, _onehot_probs(PREDS, 4), ["a", "b", "c", "d"])
    assert m.macro_recall == pytest.approx(2 / 3)  # as with 3 classes: 'd' has no support
    assert m.per_class["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    scores = metrics.per_class_scores(np.array([[0, 2], [0, 3]]))
    assert scores["precision"].tolist() == [0.0, 0.6] and scores["f1"][0] == 0.0


def test_classification_metrics_shape_checks() -> None:
    with pytest.raises(ValueError, match="probs must be \\(N, K\\)"):
        metrics.classification_metrics(LABELS, np.ones((5, 3)), ["a", "b", "c"])
    with pytest.raises(ValueError, match="3 columns for 2 classes"):
        metrics.classification_metrics(LABELS, np.ones((6, 3)), ["a", "b"])
    empty = metrics.classification_metrics(np.zeros(0, int), np.zeros((0, 2)), ["a", "b"])
    assert empty.accuracy == 0.0 and empty.macro_f1 == 0.0


def test_ece_by_hand() -> None:
    labels = np.array([0, 1, 0, 1])
    # confidences 0.85 (right), 0.85 (wrong), 0.65 (right), 0.65 (wrong)
    probs = np.array([[0.85, 0.15], [0.85, 0.15], [0.65, 0.35], [0.65, 0.35]])
    # two bins, each accuracy 0.5: (2 * |0.5 - 0.85| + 2 * |0.5 - 0.65|) / 4 = 0.25
    assert metrics.expected_calibration_error(labels, probs, n_bins=10) == pytest.approx(0.25)
    bins = metrics.reliability_bins(labels, probs, n_bins=10)
    assert bins["count"].tolist() == [0, 0, 0, 0, 0, 0, 2, 0, 2, 0]
    assert bins["confidence"][8] == pytest.approx(0.85) and bins["accuracy"][6] == 0.5
    perfect = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert metrics.expected_calibration_error(np.array([0, 1]), perfect) == 0.0
    assert metrics.expected_calibration_error(np.zeros(0, int), np.zeros((0, 2))) == 0.0


def test_mcnemar_exact_p_value_by_hand() -> None:
    a = np.array([1] * 5 + [0] * 1 + [1] * 10 + [0] * 4, bool)
    b = np.array([0] * 5 + [1] * 1 + [1] * 10 + [0] * 4, bool)
    res = metrics.mcnemar_test(a, b)
    # b=5, c=1: p = 2 * (C(6,0) + C(6,1)) / 2^6 = 14 / 64
    assert (res.b, res.c) == (5, 1)
    assert res.p_value == pytest.approx(14 / 64) and not res.significant
    lopsided = metrics.mcnemar_test(np.ones(8, bool), np.zeros(8, bool))
    assert lopsided.p_value == pytest.approx(2 / 256) and lopsided.significant
    assert metrics.mcnemar_test(a, a).p_value == 1.0
    assert metrics.mcnemar_test([1, 0], [0, 1]).p_value == 1.0
    with pytest.raises(ValueError, match="same images"):
        metrics.mcnemar_test(a, b[:-1])


def test_bootstrap_accuracy_diff() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(200) < 0.8
    b = rng.random(200) < 0.6
    diff, low, high = metrics.bootstrap_accuracy_diff(a, b, n_boot=500, seed=1)
    assert diff == pytest.approx(a.mean() - b.mean())
    assert low < diff < high and high - low < 0.3
    assert metrics.bootstrap_accuracy_diff(a, b, n_boot=500, seed=1) == (diff, low, high)
    assert metrics.bootstrap_accuracy_diff(a, a, n_boot=100) == (0.0, 0.0, 0.0)


def test_ensemble_probabilities() -> None:
    p1 = np.array([[0.9, 0.1], [0.2, 0.8]])
    p2 = np.array([[0.5, 0.5], [0.6, 0.4]])
    np.testing.assert_allclose(metrics.ensemble_probabilities([p1, p2]), [[0.7, 0.3], [0.4, 0.6]])
    with pytest.raises(ValueError, match="at least one"):
        metrics.ensemble_probabilities([])
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.ensemble_probabilities([p1, p2[:1]])
    # weighted: 3:1 towards the first model; the weights need not sum to one
    np.testing.assert_allclose(metrics.ensemble_probabilities([p1, p2], weights=[3, 1]),
                               [[0.8, 0.2], [0.3, 0.7]])
    np.testing.assert_allclose(metrics.ensemble_probabilities([p1, p2], weights=[0, 2]), p2)
    for bad in ([1.0], [-1.0, 2.0], [0.0, 0.0]):
        with pytest.raises(ValueError, match="non-negative"):
            metrics.ensemble_probabilities([p1, p2], weights=bad)


# ------------------------------------------------------------------------------- plots

def test_plots_return_figures(tmp_path: Path, shapes_data) -> None:
    floats = np.random.default_rng(0).normal(0.5, 1, (5, 8, 8, 3))  # out of range: clipped
    grid = plots.image_grid(floats, titles=list("abcde"), ncols=3, suptitle="s",
                            title_colors=["red"] * 5)
    assert isinstance(grid, Figure) and len(grid.axes) == 6
    assert grid.axes[0].get_title() == "a" and grid.axes[5].get_title() == ""
    history = [{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5},
               {"epoch": 2, "train_loss": 0.5, "train_acc": 0.7, "val_loss": 0.6, "val_acc": 0.6}]
    curves = plots.plot_history(history, title="t")
    assert [len(ax.lines) for ax in curves.axes] == [2, 2]
    cm = plots.plot_confusion_matrix([[3, 1], [0, 4]], ["x", "y"])
    assert "row-normalised" in cm.axes[0].get_title()
    raw = plots.plot_confusion_matrix(np.array([[3, 1], [0, 4]]), ["x", "y"], normalize=False)
    assert raw.axes[0].get_title() == "confusion matrix"
    texts = [t.get_text() for t in raw.axes[0].texts]
    assert sorted(texts) == ["1", "3", "4"]
    preds = plots.plot_predictions(shapes_data.test.images[:3], np.array([0, 1, 2]),
                                   np.eye(6)[[0, 1, 3]], shapes_data.class_names)
    colors = [ax.title.get_color() for ax in preds.axes[:3]]
    assert colors == ["green", "green", "red"]
    bins = metrics.reliability_bins(np.array([0, 1]), np.array([[0.9, 0.1], [0.3, 0.7]]))
    assert isinstance(plots.plot_reliability(bins), Figure)
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2)
    assert plots.plot_confusion_matrix([[1, 0], [0, 1]], ["x", "y"], ax=ax1) is fig
    assert plots.plot_reliability(bins, title="r", ax=ax2) is fig
    assert ax2.get_title() == "r"
    samples = plots.plot_samples_per_class(shapes_data, per_class=3)
    assert len(samples.axes) == 6 * 3

    path = plots.save_figure(cm, tmp_path / "figs" / "cm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["cm.png"]


# ------------------------------------------------------------------------------ report

def test_example_indices_cover_every_class() -> None:
    labels = np.repeat(np.arange(6), 5)
    idx = report.example_indices(labels, 10, seed=3)
    assert len(idx) == 10 and len(set(idx.tolist())) == 10
    assert np.all(np.diff(idx) > 0)
    assert set(labels[idx]) == set(range(6))
    assert np.array_equal(idx, report.example_indices(labels, 10, seed=3))
    assert len(report.example_indices(labels[:4], 10)) == 4


@pytest.fixture
def run_cfg(cpu_only, tmp_path: Path):
    """A smoke config on ``shapes:20`` whose data and outputs live in ``tmp_path``."""
    return nbutils.setup("smoke", model="alexnet", dataset="shapes:20", verbose=False,
                         data_dir=str(tmp_path / "data"), outputs_dir=str(tmp_path / "out"),
                         max_train_per_class=5, max_test_per_class=3, image_size=16)


def test_finish_run_writes_every_output(run_cfg, tmp_path: Path) -> None:
    data = load_for(run_cfg, progress=False)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(data.num_classes), size=len(data.test))
    history = [{"epoch": 1, "train_loss": 1.5, "train_acc": 0.3, "val_loss": 1.4, "val_acc": 0.35,
                "lr": 0.01, "seconds": 1.0},
               {"epoch": 2, "train_loss": 1.2, "train_acc": 0.5, "val_loss": 1.3, "val_acc": 0.4,
                "lr": 0.01, "seconds": 1.0}]
    fit = FitResult(history=history, train_seconds=2.0, cpu_seconds=3.04, best_epoch=2,
                    device_peak_mb=12.34, threads=[2, 1], load_average=[0.5, 0.75],
                    extra={"amp": "off"})
    record = report.finish_run(run_cfg, data, notebook="02_pytorch_alexnet", model="alexnet",
                               probs=probs, fit=fit, num_params=1000,
                               model_path=tmp_path / "out" / "models" / "m",
                               extra={"note": 1}, show=False)
    run_id = run_cfg.run_id("02_pytorch_alexnet")  # the overrides make a variant of smoke
    assert run_id.startswith("02_pytorch_alexnet__shapes-20__smoke__image_size-16_max_test")
    assert record.run_id == run_id and len(run_id) < 90
    out = tmp_path / "out"
    metrics_file = out / "metrics" / f"{run_id}.json"
    assert read_record(metrics_file) == record
    preds, labels = probs.argmax(1), np.asarray(data.test.labels)
    assert record.test.accuracy == pytest.approx((preds == labels).mean())
    confusion = np.zeros((data.num_classes,) * 2, int)
    for true, pred in zip(labels, preds, strict=True):
        confusion[true, pred] += 1
    assert record.test.confusion_matrix == confusion.tolist()
    assert record.config["profile"] == "smoke"
    assert record.config["model"] == run_cfg.model
    assert record.peak_memory_mb["device"] == 12.3 and record.peak_memory_mb["host_rss"] > 0
    assert record.framework == "pytorch"  # from the framework registry, by notebook
    assert record.train_seconds == 2.0 and record.history == history
    assert record.device["type"] == "cpu"
    assert record.extra == {"note": 1, "amp": "off", "best_epoch": 2, "train_cpu_seconds": 3.0,
                            "threads": [2, 1], "load_average": [0.5, 0.75]}
    assert "numpy" in record.library_versions

    saved = report.load_test_probabilities(out / "predictions" / f"{run_id}_test_probs.npz")
    np.testing.assert_allclose(saved["probs"], probs, rtol=1e-6)
    assert saved["labels"].tolist() == data.test.labels.tolist()
    assert saved["ids"].tolist() == data.test.ids

    with open(out / "predictions" / f"{run_id}_examples.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 10
    for row in rows:
        i = int(row["test_index"])
        assert row["image_id"] == data.test.ids[i]
        assert row["true"] == data.class_names[data.test.labels[i]]
        assert row["predicted"] == data.class_names[int(probs[i].argmax())]
        assert row["correct"] == str(row["true"] == row["predicted"])

    for name in ("curves", "confusion", "examples"):
        path = out / "figures" / f"{run_id}_{name}.png"
        assert path.read_bytes()[:4] == b"\x89PNG"
        assert record.artifacts[f"figure_{name}"] == str(path)
    assert record.artifacts["model"] == str(out / "models" / "m")
    assert not list(out.rglob(".*")), "no temporary files left behind"

    table = report.record_class_table(record)
    assert list(table.index) == data.class_names
    assert table["support"].sum() == len(data.test)


def test_finish_run_without_history_shows_figures(run_cfg, tmp_path: Path) -> None:
    data = load_for(run_cfg, progress=False)
    probs = np.eye(data.num_classes)[data.test.labels]  # a perfect model
    record = report.finish_run(run_cfg, data, notebook="03_keras_cnn", model="cnn", probs=probs,
                               fit=FitResult(history=[], train_seconds=0.0), num_params=0,
                               show=True)
    assert record.framework == "keras"
    assert record.test.accuracy == 1.0 and record.test.macro_f1 == 1.0
    assert "figure_curves" not in record.artifacts and "model" not in record.artifacts
    assert "device" not in record.peak_memory_mb
    figures = sorted(p.name for p in (tmp_path / "out" / "figures").iterdir())
    run_id = run_cfg.run_id("03_keras_cnn")
    assert figures == [f"{run_id}_confusion.png", f"{run_id}_examples.png"]


def test_other_runs_summary_lists_the_other_notebooks(run_cfg) -> None:
    data = load_for(run_cfg, progress=False)
    probs = np.full((len(data.test), data.num_classes), 1.0 / data.num_classes)
    probs[np.arange(len(data.test)), data.test.labels] += 0.5      # every answer right
    probs /= probs.sum(axis=1, keepdims=True)
    assert report.other_runs_summary(run_cfg, exclude_notebook="04_hf_transfer_learning") == []
    for notebook, seconds in (("02_pytorch_alexnet", 12.0), ("03_keras_cnn", 34.0)):
        report.finish_run(run_cfg, data, notebook=notebook, framework="numpy",
                          model=f"m{seconds:.0f}", probs=probs,
                          fit=FitResult(history=[], train_seconds=seconds), num_params=1,
                          show=False)
    lines = report.other_runs_summary(run_cfg, exclude_notebook="03_keras_cnn")
    assert lines == ["02_pytorch_alexnet: test accuracy 100.0% after 12 s of training (m12)"]
