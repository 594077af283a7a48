"""EDA helpers: class balance, size tables, duplicate and leakage detection, figures."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from nbutils import eda
from nbutils.data import ImageData, Split


def _smooth_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Distinct smooth random images (upsampled 4x4 noise): stable perceptual hashes."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(s).resize((size, size), Image.Resampling.BICUBIC))
                     for s in small])


def _data(train: np.ndarray, val: np.ndarray, test: np.ndarray, k: int = 3) -> ImageData:
    def split(name: str, images: np.ndarray) -> Split:
        n = len(images)
        sizes = np.tile([[images.shape[2], images.shape[1]]], (n, 1)).astype(np.int32)
        sizes[::2] = (40, 30)  # pretend some originals were larger
        return Split(name, images, np.arange(n, dtype=np.int64) % k,
                     [f"{name}/{i}.png" for i in range(n)], None, sizes)

    mean = (train / 255.0).mean(axis=(0, 1, 2)).astype(np.float32)
    std = (train / 255.0).std(axis=(0, 1, 2)).astype(np.float32)
    return ImageData("test", "test", [f"c{i}" for i in range(k)], train.shape[1], 0,
                     split("train", train), split("val", val), split("test", test), mean, std)


@pytest.fixture
def planted() -> ImageData:
    """30 distinct images; test #2 is an exact copy of train #7, val #1 a noisy copy of train #3."""
    images = _smooth_images(30)
    train, val, test = images[:20].copy(), images[20:25].copy(), images[25:].copy()
    test[2] = train[7]
    noise = np.random.default_rng(1).integers(-3, 4, train[3].shape)
    val[1] = np.clip(train[3].astype(int) + noise, 0, 255).astype(np.uint8)
    return _data(train, val, test)


def test_find_duplicates_finds_the_planted_pairs_only(planted: ImageData) -> None:
    report = eda.find_duplicates(planted, max_distance=4, progress=False)
    pairs = report.pairs
    assert len(pairs) == 2, pairs
    exact = pairs[pairs["kind"] == "exact"].iloc[0]
    assert (exact["splits"], exact["index_a"], exact["index_b"]) == ("train-test", 7, 2)
    assert (exact["id_a"], exact["id_b"]) == ("train/7.png", "test/2.png")
    assert exact["hash_distance"] == 0 and exact["pixel_diff"] == 0
    near = pairs[pairs["kind"] == "near"].iloc[0]
    assert (near["splits"], near["index_a"], near["index_b"]) == ("train-val", 3, 1)
    assert 0 < near["pixel_diff"] <= 12
    assert report.leaked_test_images() == 1
    counts = report.counts()
    assert sorted(zip(counts["splits"], counts["kind"], counts["pairs"], strict=True)) == [
        ("train-test", "exact", 1), ("train-val", "near", 1)]
    text = report.summary()
    assert "2 duplicate pairs" in text and "(leakage): 1" in text and "train-test" in text
    fig = eda.plot_duplicate_pairs(planted, report, n=4)
    assert isinstance(fig, Figure) and len(fig.axes) == 4


def test_no_false_pairs_among_distinct_images() -> None:
    images = _smooth_images(60, seed=3)
    data = _data(images[:40], images[40:50], images[50:])
    report = eda.find_duplicates(data, progress=False)
    assert report.pairs.empty
    assert report.leaked_test_images() == 0
    assert report.counts().empty
    assert report.summary().startswith("No exact or near duplicates")
    assert eda.plot_duplicate_pairs(data, report) is None


def test_duplicates_within_a_split(planted: ImageData) -> None:
    train = np.asarray(planted.train.images).copy()
    train[11] = train[10]
    data = _data(train, np.asarray(planted.val.images), np.asarray(planted.test.images))
    pairs = eda.find_duplicates(data, progress=False).pairs
    within = pairs[pairs["splits"] == "train-train"]
    assert list(zip(within["index_a"], within["index_b"], strict=True)) == [(10, 11)]


def test_flat_images_with_colliding_hashes_are_not_duplicates() -> None:
    flat = np.stack([np.full((16, 16, 3), v, np.uint8) for v in (0, 60, 120, 180, 240)])
    hashes = eda.difference_hashes(flat)
    assert len(set(hashes.tolist())) == 1, "flat images share one hash"
    data = _data(flat[:3], flat[3:4], flat[4:])
    assert eda.find_duplicates(data, progress=False).pairs.empty


def test_difference_hash_bits() -> None:
    ramp = np.tile(np.linspace(0, 255, 36, dtype=np.uint8)[None, :, None], (32, 1, 3))
    up, down = eda.difference_hashes(np.stack([ramp, ramp[:, ::-1]]))
    assert up == np.uint64(2 ** 64 - 1) and down == 0
    imgs = _smooth_images(2)
    h = eda.difference_hashes(np.concatenate([imgs, imgs]))
    assert h.dtype == np.uint64 and h[0] == h[2] and h[1] == h[3] and h[0] != h[1]


def test_class_balance_totals(shapes_data) -> None:
    df = eda.class_balance(shapes_data)
    assert list(df.columns) == ["train", "val", "test"]
    assert list(df.index) == [*shapes_data.class_names, "total"]
    for split in ("train", "val", "test"):
        assert df.loc["total", split] == len(shapes_data.splits[split])
        labels = np.asarray(shapes_data.splits[split].labels)
        assert list(df[split][:-1]) == [int((labels == c).sum()) for c in range(6)]


def test_size_table(planted: ImageData) -> None:
    table = eda.size_table(planted)
    assert list(table.index) == ["train", "val", "test"]
    assert table.loc["train", "images"] == 20
    assert table.loc["train", "width max"] == 40 and table.loc["train", "height min"] == 30
    assert table.loc["train", "distinct sizes"] == 2
    planted.val.original_sizes = None  # a hand-built Split may not know its sizes
    assert "val" not in eda.size_table(planted).index
    fig = eda.plot_sizes(planted)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["train", "test"]


def test_figures(shapes_data, planted) -> None:
    for fig in (eda.plot_class_balance(shapes_data),
                eda.plot_channel_histograms(shapes_data, max_images=5),
                eda.plot_sizes(planted)):
        assert isinstance(fig, Figure)
    hist = eda.plot_channel_histograms(shapes_data, split="test")
    assert f"{len(shapes_data.test)} images" in hist.axes[0].get_title()
    assert len(hist.axes[0].lines) == 3


def test_image_browser_builds_widgets(shapes_data, capsys) -> None:
    pytest.importorskip("ipywidgets")
    box = eda.image_browser(shapes_data, per_page=4)
    controls = box.children[0].children
    split_w, class_w, page_w = controls
    assert split_w.value == "train" and class_w.value == 0
    n = int((shapes_data.train.labels == 0).sum())
    assert page_w.max == (n - 1) // 4
    class_w.value = 2
    split_w.value = "test"
    assert page_w.max == (int((shapes_data.test.labels == 2).sum()) - 1) // 4


def test_image_browser_with_a_class_missing_from_a_split(capsys) -> None:
    pytest.importorskip("ipywidgets")
    images = _smooth_images(12, size=16)
    data = _data(images[:6], images[6:8], images[8:])  # val holds classes 0 and 1 only
    box = eda.image_browser(data)
    split_w, class_w, page_w = box.children[0].children
    split_w.value = "val"
    assert "no images" not in capsys.readouterr().out
    class_w.value = 2
    assert page_w.max == 0
    assert "no images" in capsys.readouterr().out  # outside a kernel, Output prints through
