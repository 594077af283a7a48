"""Top-5 accuracy, top losses, confused pairs and temperature scaling (notebook 05)."""

from __future__ import annotations

import numpy as np
import pytest

from nbutils.calibration import (
    apply_temperature,
    calibrate,
    fit_temperature,
    negative_log_likelihood,
)
from nbutils.error_analysis import confused_pairs, top_losses
from nbutils.metrics import classification_metrics, top_k_accuracy


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _overconfident(n: int = 400, k: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed example: 60 % right, but logits sharp enough to claim ~99 %."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    preds = np.where(rng.random(n) < 0.6, labels, (labels + 1) % k)
    logits = rng.normal(0, 0.5, (n, k))
    logits[np.arange(n), preds] += 6.0
    return labels, _softmax(logits)


def test_top_k_accuracy_counts_the_true_class_among_the_k_best() -> None:
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    labels = np.array([1, 2, 2])
    assert top_k_accuracy(labels, probs, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(labels, probs, 2) == pytest.approx(2 / 3)
    assert top_k_accuracy(labels, probs, 3) == 1.0
    assert top_k_accuracy(labels, probs, 9) == 1.0  # k larger than the classes


def test_records_carry_top5_only_with_more_than_five_classes() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 200)
    probs = _softmax(rng.normal(size=(200, 10)))
    m = classification_metrics(labels, probs, [str(i) for i in range(10)])
    assert m.top5_accuracy == pytest.approx(top_k_accuracy(labels, probs, 5))
    assert m.accuracy <= m.top5_accuracy
    small = classification_metrics(labels % 3, probs[:, :3], ["a", "b", "c"])
    assert small.top5_accuracy is None


def test_temperature_scaling_lowers_the_validation_nll_and_keeps_the_classes() -> None:
    labels, probs = _overconfident()
    before = negative_log_likelihood(labels, probs)
    t = fit_temperature(labels, probs)
    after = negative_log_likelihood(labels, apply_temperature(probs, t))
    assert t > 1.5                    # over-confident: it softens
    assert after < 0.7 * before       # 60 % right at ~99 % confidence costs a lot of NLL
    np.testing.assert_array_equal(apply_temperature(probs, t).argmax(1), probs.argmax(1))
    # the fitted T is the minimum: nearby temperatures do worse
    for other in (t * 0.8, t * 1.25):
        assert negative_log_likelihood(labels, apply_temperature(probs, other)) > after
    np.testing.assert_allclose(apply_temperature(probs, 1.0), probs, atol=1e-9)
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(probs, 0.0)


def test_under_confident_models_get_a_temperature_below_one() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 300)
    logits = rng.normal(0, 0.1, (300, 4))
    logits[np.arange(300), labels] += 0.8   # always right, but only ~45 % sure
    t = fit_temperature(labels, _softmax(logits))
    assert t < 1.0


def test_calibrate_fits_on_validation_and_reports_test() -> None:
    val_labels, val_probs = _overconfident(seed=0)
    test_labels, test_probs = _overconfident(seed=1)
    c = calibrate(val_labels, val_probs, test_labels, test_probs, ece_bins=10)
    assert c.val_nll_after < c.val_nll_before
    assert c.test_nll_after < c.test_nll_before
    assert c.test_ece_after < c.test_ece_before
    with pytest.raises(ValueError, match="at least one"):
        fit_temperature(np.zeros(0, int), np.zeros((0, 3)))


def test_top_losses_are_the_most_confident_mistakes() -> None:
    labels = np.array([0, 1, 2, 0])
    probs = np.array([[0.9, 0.05, 0.05],    # right
                      [0.7, 0.2, 0.1],      # wrong, p_true 0.2
                      [0.05, 0.9, 0.05],    # wrong, p_true 0.05: the top loss
                      [0.4, 0.35, 0.25]])   # right
    losses = top_losses(labels, probs, n=5)
    assert [x.index for x in losses] == [2, 1]
    assert losses[0].pred == 1 and losses[0].p_pred == pytest.approx(0.9)
    assert losses[0].loss == pytest.approx(-np.log(0.05))
    assert [x.index for x in top_losses(labels, probs, n=2, wrong_only=False)] == [2, 1]


def test_confused_pairs_are_the_largest_off_diagonal_cells() -> None:
    cm = np.array([[5, 3, 0], [1, 6, 4], [0, 0, 9]])
    assert confused_pairs(cm, ["a", "b", "c"], n=2) == [("b", "c", 4), ("a", "b", 3)]
    assert confused_pairs(np.eye(3, dtype=int), ["a", "b", "c"]) == []


def test_runs_save_validation_probabilities_and_05_calibrates_them(tmp_path, cpu_only,
                                                                  shapes_data) -> None:
    import nbutils
    from nbutils import compare
    from nbutils.compare import analysis as canalysis
    from nbutils.fitting import FitResult
    from nbutils.runs import finish_run, load_test_probabilities

    cfg = nbutils.setup("smoke", verbose=False, dataset="shapes:16", data_dir=str(tmp_path / "d"),
                        outputs_dir=str(tmp_path / "o"))
    data = shapes_data
    rng = np.random.default_rng(0)

    def sharp(labels: np.ndarray) -> np.ndarray:  # over-confident: right 60 % of the time
        wrong = rng.random(len(labels)) > 0.6
        logits = rng.normal(0, 0.3, (len(labels), data.num_classes))
        logits[np.arange(len(labels)), np.where(wrong, (labels + 1) % 6, labels)] += 7.0
        return _softmax(logits)

    with pytest.raises(ValueError, match="val_probs has shape"):
        finish_run(cfg, data, notebook="02_pytorch_alexnet", model="m",
                   probs=sharp(data.test.labels), fit=FitResult([], 1.0), num_params=1,
                   show=False, val_probs=np.zeros((3, 6)))
    for notebook in ("02_pytorch_alexnet", "03_keras_cnn"):
        record = finish_run(cfg, data, notebook=notebook, model=notebook[3:],
                            probs=sharp(data.test.labels), fit=FitResult([], 1.0), num_params=1,
                            show=False, val_probs=sharp(data.val.labels))
    cfg43 = nbutils.setup("smoke", verbose=False, dataset="shapes:16", seed=43,
                          data_dir=str(tmp_path / "d"), outputs_dir=str(tmp_path / "o"))
    assert cfg43.variant == "seed-43"
    finish_run(cfg43, data, notebook="02_pytorch_alexnet", model="02_pytorch_alexnet"[3:],
               probs=sharp(data.test.labels), fit=FitResult([], 1.0), num_params=1, show=False)
    saved = load_test_probabilities(record.artifacts["test_probs"])
    np.testing.assert_array_equal(saved["val_labels"], data.val.labels)
    runs = compare.load_runs(cfg.outputs_dir, data.spec, "smoke")
    assert [r.val_probs.shape for r in runs.runs] == [(len(data.val), 6)] * 2
    assert [r.record.seed for r in runs.replicates] == [43]   # not a third model
    spread = canalysis.seed_spread(runs)
    [(label, s)] = spread.items()
    assert label.startswith("pytorch_alexnet") and s["seeds"] == [42, 43]
    assert s["range"] == pytest.approx(abs(s["accuracies"][0] - s["accuracies"][1]))
    assert "points" in canalysis.seed_spread_markdown(spread)
    assert "--seeds" in canalysis.seed_spread_markdown({})
    fitted = canalysis.calibrate_runs(runs, ece_bins=5)
    assert all(c.val_nll_after < c.val_nll_before and c.temperature > 1 for c in fitted.values())
    text = canalysis.calibration_markdown({**fitted, "old run": None})
    assert "→" in text and "re-run its training notebook" in text
    assert "→" in canalysis.confused_pairs_markdown(runs, n=2)
    canalysis.plot_top_losses(runs, data.test.images, n=3)
    canalysis.plot_calibration(runs, fitted, 5)
    table = compare.build_comparison(runs, {}, n_boot=50).table
    assert table["top5_accuracy"].between(0, 1).all()   # 6 classes: top-5 is defined
    from nbutils.compare import report as creport

    assert "top-5" in creport.main_table_markdown(table)
