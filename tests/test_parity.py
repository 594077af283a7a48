"""The course's own implementations agree with reference libraries on random inputs."""

from __future__ import annotations

import numpy as np
import pytest

from nbutils import metrics
from nbutils.gradcam import core


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_match_scikit_learn(seed: int) -> None:
    from sklearn import metrics as skm

    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 8))
    n = int(rng.integers(5, 200))
    labels = rng.integers(0, k, n)
    probs = rng.dirichlet(np.ones(k), n)
    preds = probs.argmax(1)
    ours = metrics.classification_metrics(labels, probs, [f"c{i}" for i in range(k)])
    present = np.unique(labels)  # macro averages run over the classes in the test set
    assert ours.accuracy == pytest.approx(skm.accuracy_score(labels, preds))
    for name, fn in (("macro_precision", skm.precision_score), ("macro_recall", skm.recall_score),
                     ("macro_f1", skm.f1_score)):
        want = fn(labels, preds, labels=present, average="macro", zero_division=0)
        assert getattr(ours, name) == pytest.approx(want), name
    assert ours.confusion_matrix == skm.confusion_matrix(labels, preds, labels=range(k)).tolist()


def test_expected_calibration_error_matches_its_definition() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 500)
    probs = rng.dirichlet(np.ones(4) * 0.5, 500)
    conf, right = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0, 1, 11)
    want = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            want += inside.mean() * abs(right[inside].mean() - conf[inside].mean())
    assert metrics.expected_calibration_error(labels, probs, n_bins=10) == pytest.approx(want)


@pytest.mark.parametrize("size", [(7, 9), (32, 32), (3, 5), (1, 1)])
def test_bilinear_resize_matches_torch(size: tuple[int, int]) -> None:
    import torch
    import torch.nn.functional as F  # noqa: N812

    maps = np.random.default_rng(0).random((3, 4, 6)).astype(np.float32)
    ours = core.resize_bilinear(maps, size)
    want = F.interpolate(torch.from_numpy(maps)[:, None], size=size, mode="bilinear",
                         align_corners=False, antialias=False)[:, 0].numpy()
    np.testing.assert_allclose(ours, want, atol=1e-5)


def test_gradcam_plus_plus_on_a_worked_example() -> None:
    # two channels on a 2x2 grid; alpha = g^2 / (2 g^2 + sum(A) g^3), w = sum(alpha * relu(g))
    a = np.array([[[[1, 0], [0, 1]], [[0, 3], [0, 0]]]], np.float32)
    g = np.array([[[[1, 2], [0, 0]], [[-1, 1], [0, 0]]]], np.float32)
    # channel 0 (sum 2): 1/(2+2)*1 + 4/(8+16)*2 = 1/4 + 1/3; channel 1 (sum 3): 1/(2+3)*1
    weights = core.cam_weights(a, g, "gradcam++")
    np.testing.assert_allclose(weights, [[1 / 4 + 1 / 3, 1 / 5]], rtol=1e-6)
    cam = core.compute_cam(a, g, "gradcam++")
    np.testing.assert_allclose(cam[0], [[7 / 12, 3 / 5], [0, 7 / 12]], rtol=1e-6)
    # plain Grad-CAM on the same numbers: w = mean(g) = (3/4, 0)
    np.testing.assert_allclose(core.compute_cam(a, g)[0], [[0.75, 0], [0, 0.75]], rtol=1e-6)
