"""The numpy data layer: specs, sources (image folders, CIFAR, shapes), split, stats, cache."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nbutils.config import load_config
from nbutils.data import DatasetError, ImageData, channel_stats, load, load_for, parse_spec
from nbutils.data import sources as sources_mod
from nbutils.data.shapes import SHAPE_CLASSES, render_shape
from nbutils.data.sources import ShapesSource, to_rgb
from nbutils.data.split import stratified_split
from nbutils.hardware import Hardware

CPU = Hardware(cpu_count=2, cuda=False, platform="test")


def _quiet_load(spec: str, data_dir: Path, **kwargs) -> ImageData:
    """Load with progress bars off and the 'empty class' warning silenced."""
    kwargs.setdefault("progress", False)
    kwargs.setdefault("num_workers", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load(spec, data_dir=data_dir, **kwargs)


def _find(data: ImageData, image_id: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(image, original (w, h), split name) of the image with ``image_id``."""
    for name, split in data.splits.items():
        if image_id in split.ids:
            i = split.ids.index(image_id)
            return np.asarray(split.images[i]), np.asarray(split.original_sizes[i]), name
    raise AssertionError(f"{image_id} not loaded")


def _all_ids(data: ImageData) -> list[str]:
    return [i for s in data.splits.values() for i in s.ids]


# ------------------------------------------------------------------------------ specs

@pytest.mark.parametrize(
    ("text", "kind", "arg", "slug"),
    [("cifar10", "cifar10", None, "cifar10"),
     ("CIFAR100", "cifar100", None, "cifar100"),
     ("shapes", "shapes", None, "shapes"),
     ("shapes:12", "shapes", "12", "shapes-12"),
     (" imagefolder:../shared/data/cifar10-subset/ ", "imagefolder", "../shared/data/cifar10-subset/",
      "imagefolder-cifar10-subset"),
     ("imagefolder:/data/my pets", "imagefolder", "/data/my pets", "imagefolder-my-pets")],
)
def test_parse_spec(text: str, kind: str, arg: str | None, slug: str) -> None:
    spec = parse_spec(text)
    assert (spec.kind, spec.arg, spec.slug) == (kind, arg, slug)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [("cifr10", "Did you mean 'cifar10'"),
     ("imagefoldr:x", "Did you mean 'imagefolder'"),
     ("mnist", "Use one of: cifar10"),
     ("", "non-empty string"),
     (None, "non-empty string"),
     ("imagefolder", "imagefolder needs a path"),
     ("cifar10:5", "takes no argument"),
     ("shapes:3", "N \\(images per class\\) >= 4"),
     ("shapes:many", ">= 4")],
)
def test_parse_spec_errors(text: object, pattern: str) -> None:
    with pytest.raises(DatasetError, match=pattern):
        parse_spec(text)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- image folders

def test_flat_folder_skips_bad_files_and_converts_every_mode(image_folder, tmp_path) -> None:
    folder = image_folder(layout="flat")
    with pytest.warns(UserWarning, match="'zebra' has no training images"):
        data = load(folder.spec, image_size=24, data_dir=tmp_path / "d", test_fraction=0.25,
                    progress=False, num_workers=2)

    assert data.class_names == folder.classes  # the empty class is dropped
    assert "zebra" not in data.class_names
    skipped = dict(data.skipped)
    assert "not an image" in skipped[folder.bad["text"]]
    assert folder.bad["corrupt"] in skipped
    assert folder.bad["truncated"] in skipped
    assert "zebra/" in skipped
    expected = sum(folder.counts["train"].values())
    ids = _all_ids(data)
    assert len(ids) == expected == len(set(ids))
    assert not set(folder.bad.values()) & set(ids)
    assert not [i for i in ids + list(skipped) if "/." in f"/{i}"], "hidden files are ignored"

    for split in data.splits.values():
        assert split.images.dtype == np.uint8
        assert split.images.shape[1:] == (24, 24, 3)
        assert split.masks is None
        assert len(split.labels) == len(split.ids) == len(split.images)

    gray, size, _ = _find(data, folder.special["gray"])
    assert tuple(size) == folder.sizes[folder.special["gray"]] == (20, 30)
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 0], gray[..., 2])
    rgba, _, _ = _find(data, folder.special["rgba"])
    assert (rgba[:, :8] == 255).all(), "transparent pixels are composited on white"
    assert (rgba[:, -8:] == (0, 0, 255)).all()
    palette, _, _ = _find(data, folder.special["palette"])
    assert (palette == (255, 0, 0)).all()
    deep, _, _ = _find(data, folder.special["16bit"])
    assert np.array_equal(deep[..., 0], deep[..., 2])
    assert deep.min() < 30 and deep.max() > 225, "16-bit range is rescaled, not clipped"
    jpeg, size, _ = _find(data, folder.special["jpeg"])
    assert jpeg.shape == (24, 24, 3)
    assert tuple(size) == (200, 160), "original size of a JPEG is the size on disk"

    # flat layout: the test split is drawn per class with test_fraction (before decoding,
    # so the first class, with its two undecodable files, is only checked in total)
    counts = data.class_counts()
    for label, name in enumerate(data.class_names):
        n = folder.counts["train"][name]
        assert sum(c[label] for c in counts.values()) == n
        if name != folder.classes[0]:
            assert counts["test"][label] == round(n * 0.25)
    assert "skipped  :" in data.summary()


def test_train_test_layout_uses_the_given_test_split(image_folder, tmp_path) -> None:
    folder = image_folder(layout="split", per_class=6, per_class_test=2)
    with pytest.warns(UserWarning) as caught:
        data = load(folder.spec, image_size=16, data_dir=tmp_path / "d", progress=False)
    messages = " ".join(str(w.message) for w in caught)
    assert "'owl'" in messages and "'zebra'" in messages
    assert data.class_names == folder.classes
    assert all(i.startswith("test/") for i in data.test.ids)
    assert all(i.startswith("train/") for i in data.train.ids + data.val.ids)
    assert len(data.test) == 2 * len(folder.classes)
    assert list(data.test.class_counts(data.num_classes)) == [2] * len(folder.classes)
    assert len(data.train) + len(data.val) == sum(folder.counts["train"].values())


def test_a_val_folder_joins_the_training_pool(tmp_path) -> None:
    for pool, n in (("train", 5), ("valid", 3), ("test", 2)):
        for cname in ("a", "b"):
            for i in range(n):
                path = tmp_path / "ds" / pool / cname / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (10, 10), (i * 20, 0, 0)).save(path)
    data = _quiet_load(f"imagefolder:{tmp_path / 'ds'}", tmp_path / "d", image_size=8, cache=False)
    assert len(data.train) + len(data.val) == 16
    assert any(i.startswith("valid/") for i in data.train.ids + data.val.ids)
    assert len(data.test) == 4


def test_missing_or_empty_folder_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(DatasetError, match="Image folder not found: .*nowhere"):
        load(f"imagefolder:{tmp_path / 'nowhere'}", data_dir=tmp_path / "d")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DatasetError, match="No images found under"):
        _quiet_load(f"imagefolder:{tmp_path / 'empty'}", tmp_path / "d")


def test_no_readable_training_image_is_an_error(tmp_path) -> None:
    for cname in ("a", "b"):
        (tmp_path / "bad" / cname).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "bad" / cname / f"{i}.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="No readable training images"):
        _quiet_load(f"imagefolder:{tmp_path / 'bad'}", tmp_path / "d")


def test_relative_imagefolder_paths_resolve_against_the_project_root(tmp_project, tmp_path):
    for cname in ("a", "b"):
        for i in range(4):
            path = tmp_project / "pics" / cname / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (9, 9), (i * 50, 10, 10)).save(path)
    data = _quiet_load("imagefolder:pics", "data", image_size=8)
    assert data.class_names == ["a", "b"]
    assert data.cache_dir is not None and data.cache_dir.is_relative_to(tmp_project / "data")


@pytest.mark.parametrize(
    ("mode", "make", "check"),
    [("L", lambda: Image.new("L", (4, 4), 77), lambda a: (a == 77).all()),
     ("LA", lambda: Image.new("LA", (4, 4), (0, 0)), lambda a: (a == 255).all()),
     ("RGBA", lambda: Image.new("RGBA", (4, 4), (10, 20, 30, 255)),
      lambda a: (a == (10, 20, 30)).all()),
     ("CMYK", lambda: Image.new("CMYK", (4, 4), (0, 0, 0, 0)), lambda a: (a == 255).all()),
     ("1", lambda: Image.new("1", (4, 4), 1), lambda a: (a == 255).all()),
     ("I", lambda: Image.new("I", (4, 4), 5000), lambda a: (a == 0).all()),  # flat -> black
     ("F", lambda: Image.fromarray(np.array([[0.0, 2.0]], np.float32)),
      lambda a: a[0, 0, 0] == 0 and a[0, 1, 0] == 255)],
)
def test_to_rgb(mode, make, check) -> None:
    img = make()
    assert img.mode == mode
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == img.size
    assert check(np.asarray(out))


def test_to_rgb_palette_with_transparency_goes_on_white() -> None:
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    pal.info["transparency"] = 1
    assert (np.asarray(to_rgb(pal)) == 255).all()
    rgb = Image.new("RGB", (2, 2))
    assert to_rgb(rgb) is rgb


# ------------------------------------------------------------------------------ CIFAR

def test_cifar10_from_a_tiny_archive(cifar10_archive) -> None:
    arc = cifar10_archive
    data = _quiet_load("cifar10", arc.data_dir, image_size=32, download=False, cache=False)
    assert data.class_names == arc.label_names and data.num_classes == 10
    assert len(data.train) + len(data.val) == len(arc.train_labels) == 40
    assert len(data.test) == len(arc.test_labels) == 20
    assert all(i.startswith("cifar10:test:") for i in data.test.ids)
    for split in (data.train, data.val):
        for pos in (0, len(split) - 1):
            index = int(split.ids[pos].rsplit(":", 1)[1])
            assert np.array_equal(split.images[pos], arc.train_images[index])
            assert split.labels[pos] == arc.train_labels[index]
    first_test = int(data.test.ids[0].rsplit(":", 1)[1]) - len(arc.train_labels)
    assert np.array_equal(data.test.images[0], arc.test_images[first_test])
    assert (data.test.original_sizes == 32).all()
    small = _quiet_load("cifar10", arc.data_dir, image_size=16, download=False, cache=False)
    assert small.train.images.shape[1:] == (16, 16, 3)


def test_cifar100_from_a_tiny_archive(tmp_path, cifar_writer) -> None:
    arc = cifar_writer(tmp_path / "raw" / "cifar-100-python.tar.gz", kind="cifar100",
                       num_classes=5, per_class_train=3, per_class_test=1)
    data = _quiet_load("cifar100", tmp_path, image_size=32, download=False, cache=False)
    assert data.class_names == arc.label_names
    assert len(data.test) == 5 and len(data.train) + len(data.val) == 15


def test_cifar_without_archive_and_downloads_off_says_where_to_put_it(tmp_path) -> None:
    with pytest.raises(DatasetError) as err:
        load("cifar10", data_dir=tmp_path, download=False)
    msg = str(err.value)
    assert "cifar-10-python.tar.gz" in msg
    assert str(tmp_path / "raw" / "cifar-10-python.tar.gz") in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg
    assert not (tmp_path / "raw" / "cifar-10-python.tar.gz").exists()


def test_failed_download_gives_the_offline_message(tmp_path, monkeypatch) -> None:
    def offline(url: str, target: Path) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(sources_mod, "_download", offline)
    with pytest.raises(DatasetError, match="(?s)network is unreachable.*put it at"):
        load("cifar10", data_dir=tmp_path)


class _FakeResponse(io.BytesIO):
    def __init__(self, payload: bytes) -> None:
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_download_checks_the_md5(tmp_path, monkeypatch, cifar_writer) -> None:
    payload_path = cifar_writer(tmp_path / "src" / "raw" / "archive.tar.gz", trust=False).path
    payload = payload_path.read_bytes()
    urls = []

    def fake_urlopen(url, timeout=None):
        urls.append(url)
        return _FakeResponse(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    target = tmp_path / "d" / "raw" / "cifar-10-python.tar.gz"
    with pytest.raises(DatasetError, match="corrupt \\(MD5 mismatch\\)"):
        load("cifar10", data_dir=tmp_path / "d", progress=False)
    assert not target.exists(), "a corrupt download is deleted"
    assert urls == [sources_mod.CIFAR_ARCHIVES["cifar10"][1]]

    name, url, _md5 = sources_mod.CIFAR_ARCHIVES["cifar10"]
    monkeypatch.setitem(sources_mod.CIFAR_ARCHIVES, "cifar10",
                        (name, url, hashlib.md5(payload).hexdigest()))
    data = load("cifar10", data_dir=tmp_path / "d", progress=False, cache=False)
    assert target.read_bytes() == payload
    assert not list(target.parent.glob("*.part"))
    assert len(data.test) == 20


def _tar_with(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


_META = pickle.dumps({b"label_names": [b"a", b"b"]})
CORRUPT_ARCHIVES = {
    "random bytes": None,
    "not a pickle": {"x/batches.meta": _META, "x/data_batch_1": b"garbage"},
    "missing key": {"x/batches.meta": _META, "x/data_batch_1": pickle.dumps({b"data": []})},
    "not a dict": {"x/batches.meta": _META, "x/data_batch_1": pickle.dumps([1, 2, 3])},
    "ragged data": {"x/batches.meta": _META, "x/data_batch_1": pickle.dumps(
        {b"data": [[1, 2], [3]], b"labels": [0, 1]})},
}


@pytest.mark.parametrize("case", sorted(CORRUPT_ARCHIVES))
def test_corrupt_cifar_archives_give_a_clear_error(tmp_path, trust_cifar, case: str) -> None:
    archive = tmp_path / "raw" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    members = CORRUPT_ARCHIVES[case]
    if members is None:
        archive.write_bytes(np.random.default_rng(0).integers(0, 256, 500, np.uint8).tobytes())
    else:
        _tar_with(archive, members)
    # first line of defence: a hand-placed archive that is not the published one is refused
    # before anything in it is unpickled
    with pytest.raises(DatasetError, match="is not the published cifar10 archive.*Delete it"):
        load("cifar10", data_dir=tmp_path, download=False)
    # second: even an archive with the expected checksum is parsed defensively
    trust_cifar(archive)
    with pytest.raises(DatasetError, match="is not a readable cifar10 archive.*Delete it"):
        load("cifar10", data_dir=tmp_path, download=False)


def test_a_hand_placed_archive_is_checked_before_it_is_unpickled(tmp_path, monkeypatch) -> None:
    archive = tmp_path / "raw" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    _tar_with(archive, {"x/batches.meta": _META, "x/data_batch_1": pickle.dumps([1])})
    unpickled = []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: unpickled.append(1))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: unpickled.append(1))
    with pytest.raises(DatasetError, match="MD5 [0-9a-f]{32}, expected c58f30108f718f92721af3b9"):
        load("cifar10", data_dir=tmp_path, download=False)
    assert unpickled == []


def test_cifar_archive_without_metadata(tmp_path, trust_cifar) -> None:
    archive = tmp_path / "raw" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    _tar_with(archive, {"x/data_batch_1": pickle.dumps({b"data": [], b"labels": []})})
    trust_cifar(archive)
    with pytest.raises(DatasetError, match="lacks the cifar10 metadata"):
        load("cifar10", data_dir=tmp_path, download=False)


# ----------------------------------------------------------------------------- shapes

def test_shapes_are_deterministic_with_masks_on_the_object() -> None:
    for index in range(12):
        label = index % len(SHAPE_CLASSES)
        image, mask = render_shape(index, label, 32)
        again, mask_again = render_shape(index, label, 32)
        assert np.array_equal(image, again) and np.array_equal(mask, mask_again)
        assert image.dtype == np.uint8 and image.shape == (32, 32, 3)
        assert mask.dtype == bool and mask.shape == (32, 32)
        assert 0.04 < mask.mean() < 0.45
        inside = image[mask].astype(float).mean(axis=0)
        outside = image[~mask].astype(float).mean(axis=0)
        assert np.abs(inside - outside).sum() > 30, "the object stands out from the background"
        ys, xs = np.nonzero(mask)
        centre = mask[int(round(ys.mean())), int(round(xs.mean()))]
        if SHAPE_CLASSES[label] == "ring":
            assert not centre, "a ring has a hole"
        elif SHAPE_CLASSES[label] in ("circle", "square"):
            assert centre
    assert not np.array_equal(render_shape(0, 0, 32)[0], render_shape(6, 0, 32)[0])


def test_shapes_source_is_class_balanced() -> None:
    src = ShapesSource(per_class=7)
    assert list(np.bincount(src.labels)) == [7] * len(SHAPE_CLASSES)
    assert src.class_names == list(SHAPE_CLASSES) and src.has_masks and not src.has_test
    image, mask, size = src.read(3, 16)
    assert np.array_equal(image, render_shape(3, 3, 16)[0]) and size == (16, 16)


def test_load_shapes_keeps_masks_and_pixels(tmp_path) -> None:
    data = _quiet_load("shapes:8", tmp_path, image_size=16, seed=1)
    assert data.class_names == list(SHAPE_CLASSES) and data.has_masks
    for split in data.splits.values():
        assert split.masks.shape == split.images.shape[:3] and split.masks.dtype == bool
    index = int(data.val.ids[2].split(":")[1])
    image, mask = render_shape(index, int(data.val.labels[2]), 16)
    assert np.array_equal(data.val.images[2], image) and np.array_equal(data.val.masks[2], mask)
    assert list(data.train.class_counts(6) + data.val.class_counts(6) + data.test.class_counts(6)) \
        == [8] * 6


# ------------------------------------------------------------------------------ split

def test_split_is_deterministic_stratified_and_disjoint() -> None:
    labels = np.repeat(np.arange(4), [40, 20, 10, 3])
    pools = np.zeros(len(labels), np.int8)
    a = stratified_split(labels, pools, seed=5, val_fraction=0.1, test_fraction=0.2)
    b = stratified_split(labels, pools, seed=5, val_fraction=0.1, test_fraction=0.2)
    c = stratified_split(labels, pools, seed=6, val_fraction=0.1, test_fraction=0.2)
    for name in ("train", "val", "test"):
        assert np.array_equal(a[name], b[name])
        assert a[name].dtype == np.int64 and np.all(np.diff(a[name]) > 0)
    assert not np.array_equal(a["test"], c["test"])
    assert not set(a["train"]) & set(a["val"]) and not set(a["train"]) & set(a["test"])
    assert not set(a["val"]) & set(a["test"])
    assert sorted(np.concatenate(list(a.values()))) == list(range(len(labels)))
    # by hand: 20% of 40/20/10/3 held out for test (at least one, never the last one), then
    # 10% of what is left for validation (3.2 -> 3, 1.6 -> 2, 0.8 -> 1, 0.2 -> 1)
    assert list(np.bincount(labels[a["test"]])) == [8, 4, 2, 1]
    assert list(np.bincount(labels[a["val"]])) == [3, 2, 1, 1]
    assert list(np.bincount(labels[a["train"]])) == [29, 14, 7, 1]


def test_split_caps_per_class_and_uses_the_own_test_pool() -> None:
    labels = np.tile(np.arange(3), 30)
    pools = np.zeros(len(labels), np.int8)
    pools[-15:] = 1  # 5 test images per class
    out = stratified_split(labels, pools, seed=0, val_fraction=0.2, test_fraction=0.5,
                           max_train_per_class=10, max_test_per_class=3)
    assert set(out["test"]) <= set(np.flatnonzero(pools == 1))
    assert list(np.bincount(labels[out["test"]])) == [3, 3, 3]
    assert list(np.bincount(labels[out["val"]])) == [2, 2, 2]
    assert list(np.bincount(labels[out["train"]])) == [8, 8, 8]
    assert not set(out["train"]) & set(np.flatnonzero(pools == 1))


def test_split_of_a_single_image_class() -> None:
    out = stratified_split(np.array([0, 1, 1, 1]), np.zeros(4, np.int8), 0, 0.5, 0.5)
    assert 0 in out["train"] and 0 not in out["val"] and 0 not in out["test"]


def test_load_split_depends_on_the_seed(tmp_path) -> None:
    a = _quiet_load("shapes:10", tmp_path, image_size=8, seed=1, cache=False)
    b = _quiet_load("shapes:10", tmp_path, image_size=8, seed=1, cache=False)
    c = _quiet_load("shapes:10", tmp_path, image_size=8, seed=2, cache=False)
    assert a.train.ids == b.train.ids and a.test.ids == b.test.ids
    assert a.train.ids != c.train.ids
    assert not (tmp_path / "processed").exists(), "cache=False writes nothing"


# ------------------------------------------------------------------------------ stats

def test_stats_match_numpy_on_the_training_split(tmp_path) -> None:
    data = _quiet_load("shapes:10", tmp_path, image_size=16, seed=0)
    pixels = np.asarray(data.train.images, dtype=np.float64) / 255.0
    np.testing.assert_allclose(data.mean, pixels.mean(axis=(0, 1, 2)), atol=1e-6)
    np.testing.assert_allclose(data.std, pixels.std(axis=(0, 1, 2)), atol=1e-5)
    assert data.mean.dtype == np.float32 and data.mean.shape == (3,)
    everything = np.concatenate([np.asarray(s.images) for s in data.splits.values()])
    assert not np.allclose(data.mean, (everything / 255.0).mean(axis=(0, 1, 2)), atol=1e-7)

    x = data.normalize(data.train.images)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(x.std(axis=(0, 1, 2)), 1, atol=1e-3)
    np.testing.assert_allclose(data.denormalize(x), pixels, atol=1e-5)


def test_channel_stats_in_chunks_and_on_empty_input() -> None:
    images = np.random.default_rng(0).integers(0, 256, (7, 5, 5, 3), dtype=np.uint8)
    mean, std = channel_stats(images, chunk=3)
    np.testing.assert_allclose(mean, (images / 255.0).mean(axis=(0, 1, 2)), atol=1e-6)
    np.testing.assert_allclose(std, (images / 255.0).std(axis=(0, 1, 2)), atol=1e-6)
    with pytest.raises(DatasetError, match="empty training split"):
        channel_stats(images[:0])


# ------------------------------------------------------------------------------ cache

def test_cache_is_reused_memory_mapped_and_keyed(tmp_path, monkeypatch) -> None:
    first = _quiet_load("shapes:8", tmp_path, image_size=16)
    assert first.cache_dir is not None and first.cache_dir.is_dir()
    assert first.cache_dir.parent == tmp_path / "processed"
    assert (first.cache_dir / "meta.json").is_file()
    assert not [p for p in first.cache_dir.parent.iterdir() if p.name.startswith(".")]

    def no_decoding(self, index, size):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(ShapesSource, "read", no_decoding)
    second = _quiet_load("shapes:8", tmp_path, image_size=16)
    assert second.cache_dir == first.cache_dir
    for name in ("train", "val", "test"):
        a, b = first.splits[name], second.splits[name]
        assert isinstance(b.images, np.memmap) and not b.images.flags.writeable
        assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
        assert np.array_equal(a.labels, b.labels) and a.ids == b.ids
    np.testing.assert_array_equal(first.mean, second.mean)
    monkeypatch.undo()

    other = [_quiet_load("shapes:8", tmp_path, image_size=12).cache_dir,
             _quiet_load("shapes:8", tmp_path, image_size=16, seed=3).cache_dir,
             _quiet_load("shapes:8", tmp_path, image_size=16, max_train_per_class=4).cache_dir,
             _quiet_load("shapes:9", tmp_path, image_size=16).cache_dir]
    assert len({first.cache_dir, *other}) == 5


def test_cache_key_follows_the_folder_content(image_folder, tmp_path) -> None:
    folder = image_folder(special=False, per_class=4)
    first = _quiet_load(folder.spec, tmp_path / "d", image_size=8)
    again = _quiet_load(folder.spec, tmp_path / "d", image_size=8)
    assert again.cache_dir == first.cache_dir
    Image.new("RGB", (12, 12), (1, 2, 3)).save(folder.root / "cat" / "new.png")
    changed = _quiet_load(folder.spec, tmp_path / "d", image_size=8)
    assert changed.cache_dir != first.cache_dir
    assert "cat/new.png" in _all_ids(changed)


def test_cache_keeps_the_skipped_list(image_folder, tmp_path) -> None:
    folder = image_folder()
    first = _quiet_load(folder.spec, tmp_path / "d", image_size=8)
    second = _quiet_load(folder.spec, tmp_path / "d", image_size=8)
    assert first.skipped == second.skipped and len(second.skipped) == 4
    assert all(isinstance(s, tuple) for s in second.skipped)


def test_load_for_uses_the_config(tmp_path) -> None:
    cfg = load_config("smoke", hardware=CPU, dataset="shapes:10", data_dir=str(tmp_path),
                      max_train_per_class=6, max_test_per_class=2, image_size=24, seed=3)
    data = load_for(cfg, progress=False)
    assert data.spec == "shapes:10" and data.image_size == 24 and data.seed == 3
    assert data.train.images.shape[1:] == (24, 24, 3)
    assert list(data.test.class_counts(6)) == [2] * 6
    assert list(data.train.class_counts(6) + data.val.class_counts(6)) == [6] * 6
    assert data.cache_dir.is_relative_to(tmp_path)
    small = load_for(cfg, image_size=12, progress=False)
    assert small.image_size == 12 and small.train.ids == data.train.ids


def test_image_data_helpers(shapes_data) -> None:
    data = shapes_data
    counts = data.class_counts()
    assert set(counts) == {"train", "val", "test"}
    assert counts["test"].sum() == len(data.test) == 6 * round(16 * 0.15)
    text = data.summary()
    assert "shapes:16" in text and "6 classes" in text and f"train={len(data.train)}" in text
    assert "skipped" not in text


# ------------------------------------------------------------------ the shortcut lab's data


def test_the_marker_names_the_class_in_the_chosen_splits_only(tmp_path: Path) -> None:
    from nbutils.data import load
    from nbutils.data.shortcut import MARKER_PALETTE, marker_mask, stamp_marker, with_shortcut

    data = load("shapes:8", image_size=32, seed=0, data_dir=tmp_path, progress=False)
    marked = with_shortcut(data)
    for name in ("train", "val"):
        split = marked.splits[name]
        corner = split.images[:, :4, :4, :]
        assert (corner == MARKER_PALETTE[split.labels][:, None, None, :]).all()
        assert np.array_equal(split.images[:, 4:, :, :], data.splits[name].images[:, 4:, :, :])
    assert np.array_equal(marked.test.images, data.test.images)     # the test split stays clean
    assert marked.spec.endswith("+shortcut") and data.train.images[0, 0, 0].tolist() != []
    half = stamp_marker(data.train.images, data.train.labels, share=0.5, seed=1)
    stamped = (half[:, :4, :4] == MARKER_PALETTE[data.train.labels][:, None, None]).all((1, 2, 3))
    assert 0 < stamped.sum() < len(stamped)
    mask = marker_mask(32, 2)
    assert mask.shape == (2, 32, 32) and mask.sum() == 2 * 16 and mask[0, 0, 0]
    with pytest.raises(ValueError, match="share"):
        stamp_marker(data.train.images, data.train.labels, share=1.5)
    with pytest.raises(ValueError, match="unknown splits"):
        with_shortcut(data, splits=("training",))
