"""Shared fixtures for the nbutils tests.

Everything a test writes goes under pytest's ``tmp_path``: the fixtures build image
folders, a tiny CIFAR-10 archive, a throw-away copy of the project (``NBUTILS_ROOT``)
and fake hardware, so no test touches the repository's ``data/`` or ``outputs/``,
the network or a GPU.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

os.environ["MPLBACKEND"] = "Agg"  # before anything imports matplotlib

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------- housekeeping

def _pinned_distributions() -> set[str]:
    """Distribution names pinned in requirements.txt (lower case, ``-`` for ``_``)."""
    names = set()
    for line in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            names.add(line.split("==", 1)[0].strip().lower().replace("_", "-"))
    return names


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Under ``CI=true`` a test skipped because a pinned package is missing fails instead.

    The pinned environment is what CI installs; a skip there would hide a broken install.
    """
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or os.environ.get("CI", "").lower() != "true":
        return
    import re

    reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else ""
    match = re.search(r"could not import '([\w.]+)'", reason)
    module = match.group(1).split(".")[0].lower().replace("_", "-") if match else ""
    aliases = {"pil": "pillow", "sklearn": "scikit-learn", "skimage": "scikit-image",
               "yaml": "pyyaml"}
    if aliases.get(module, module) in _pinned_distributions():
        report.outcome = "failed"
        report.longrepr = f"{reason}: '{module}' is pinned in requirements.txt, so CI must have it"

@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    """Close matplotlib figures a test left open (only if pyplot was imported)."""
    yield
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close("all")


@pytest.fixture(autouse=True)
def _numpy_test_framework(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register ``numpy``, the framework of the tests' hand-made runs and models.

    It has no training notebook, so it adds no expected run; ``test_compare`` points its
    module at a fake classifier.
    """
    from nbutils.frameworks import registry

    monkeypatch.setitem(registry.FRAMEWORKS, "numpy", registry.Framework(
        id="numpy", label="NumPy (tests)", module="fake_numpy_classifier"))


@pytest.fixture
def repo_root() -> Path:
    """The repository's root folder (read it, never write into it)."""
    return REPO_ROOT


# ----------------------------------------------------------------------- fake hardware

@pytest.fixture
def fake_hardware(monkeypatch: pytest.MonkeyPatch) -> Callable[..., object]:
    """``fake_hardware(cuda=False, gpu_memory_gb=None)`` makes config see that machine.

    Patches the hardware detection that ``nbutils.setup`` / ``load_config`` use and
    clears ``NBUTILS_PROFILE``, so ``profile="auto"`` follows the fake hardware.
    Returns the :class:`~nbutils.hardware.Hardware` it installed.
    """
    from nbutils import config
    from nbutils.hardware import Hardware

    def install(cuda: bool = False, gpu_memory_gb: float | None = None,
                gpu_name: str = "Fake GPU") -> Hardware:
        hw = Hardware(cpu_count=2, cuda=cuda, gpu_name=gpu_name if cuda else None,
                      gpu_memory_gb=gpu_memory_gb if cuda else None, platform="test")
        monkeypatch.setattr(config, "detect_hardware", lambda: hw)
        monkeypatch.delenv("NBUTILS_PROFILE", raising=False)
        return hw

    return install


@pytest.fixture
def cpu_only(fake_hardware: Callable[..., object]) -> object:
    """A machine without a CUDA GPU (and ``NBUTILS_PROFILE`` unset)."""
    return fake_hardware(cuda=False)


# --------------------------------------------------------------------- project copies

@pytest.fixture
def tmp_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throw-away project root: a copy of ``configs/`` plus a ``pyproject.toml``.

    ``NBUTILS_ROOT`` points at it for the test, so relative ``data``/``outputs`` paths,
    ``configs/`` edits and ``outputs/metrics`` all land in ``tmp_path``.
    """
    root = tmp_path / "project"
    shutil.copytree(REPO_ROOT / "configs", root / "configs")
    (root / "pyproject.toml").write_text('[project]\nname = "course-copy"\n')
    monkeypatch.setenv("NBUTILS_ROOT", str(root))
    return root


# ------------------------------------------------------------------------ image folders

def _random_image(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A smooth random RGB image (upsampled noise), distinct for every draw."""
    small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR))


@dataclass
class ImageFolder:
    """What :func:`image_folder` wrote: the root and the files a loader must handle."""

    root: Path
    classes: list[str]                       # classes that should be loaded
    empty_classes: list[str]                 # class folders without training images
    counts: dict[str, dict[str, int]]        # pool ("train"/"test") -> class -> readable images
    special: dict[str, str] = field(default_factory=dict)  # kind -> id (path relative to root)
    bad: dict[str, str] = field(default_factory=dict)      # kind -> id of a file to be skipped
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> original (w, h)

    @property
    def spec(self) -> str:
        """The dataset spec that loads this folder."""
        return f"imagefolder:{self.root}"


@pytest.fixture
def image_folder(tmp_path: Path) -> Callable[..., ImageFolder]:
    """Factory for Kaggle-style image folders in ``tmp_path``.

    ``image_folder(layout="flat"|"split", classes=("cat", "dog", "fox"), per_class=8,
    per_class_test=3, special=True, name="images", seed=0)`` writes RGB PNGs of
    varying sizes per class. With ``special=True`` the first class also receives a
    grayscale PNG, an RGBA PNG (left half transparent), a palette PNG (pure red),
    a 16-bit grayscale PNG (a full-range ramp), a large JPEG, a corrupt ``.png``
    (random bytes), a truncated PNG, a ``notes.txt`` and a hidden ``.DS_Store`` (plus a
    hidden ``.thumbnails/`` folder at the root); and an empty class folder
    ``zebra`` is added. In the ``split`` layout images go to ``train/<class>`` and
    ``test/<class>`` and an extra class ``owl`` exists only under ``test/``.
    """

    def make(layout: str = "flat", classes: tuple[str, ...] = ("cat", "dog", "fox"),
             per_class: int = 8, per_class_test: int = 3, special: bool = True,
             name: str = "images", seed: int = 0) -> ImageFolder:
        rng = np.random.default_rng(seed)
        root = tmp_path / name
        root.mkdir(parents=True)
        pools = {"train": root / "train", "test": root / "test"} if layout == "split" else {
            "train": root}
        counts: dict[str, dict[str, int]] = {pool: {} for pool in pools}
        info = ImageFolder(root=root, classes=sorted(classes), empty_classes=[], counts=counts)

        def save(path: Path, img: Image.Image, **kwargs: object) -> str:
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path, **kwargs)
            rel = str(path.relative_to(root))
            info.sizes[rel] = img.size
            return rel

        for pool, base in pools.items():
            n = per_class if pool == "train" else per_class_test
            for cname in classes:
                for i in range(n):
                    w, h = int(rng.integers(20, 48)), int(rng.integers(20, 48))
                    save(base / cname / f"{cname}_{i:03d}.png",
                         Image.fromarray(_random_image(rng, w, h)))
                counts[pool][cname] = n

        if special:
            cdir = pools["train"] / classes[0]
            gray = Image.fromarray(rng.integers(0, 256, (30, 20), dtype=np.uint8), mode="L")
            info.special["gray"] = save(cdir / "gray.png", gray)
            rgba = np.zeros((24, 40, 4), np.uint8)
            rgba[..., :3] = (0, 0, 255)
            rgba[:, 20:, 3] = 255  # right half opaque blue, left half fully transparent
            info.special["rgba"] = save(cdir / "rgba.png", Image.fromarray(rgba, mode="RGBA"))
            pal = Image.new("P", (16, 16), 0)
            pal.putpalette([255, 0, 0] + [0, 0, 0] * 255)
            info.special["palette"] = save(cdir / "palette.png", pal)
            ramp = np.linspace(0, 65535, 28 * 28).reshape(28, 28).astype(np.uint16)
            info.special["16bit"] = save(cdir / "deep16.png", Image.fromarray(ramp))
            info.special["jpeg"] = save(cdir / "large.jpg",
                                        Image.fromarray(_random_image(rng, 200, 160)), quality=90)
            counts["train"][classes[0]] += 5
            (cdir / "broken.png").write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
            info.bad["corrupt"] = str((cdir / "broken.png").relative_to(root))
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
            (cdir / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
            info.bad["truncated"] = str((cdir / "truncated.png").relative_to(root))
            (cdir / ".DS_Store").write_bytes(b"\0\0")  # hidden files and folders are ignored
            (root / ".thumbnails").mkdir()
            save(root / ".thumbnails" / "x.png", Image.new("RGB", (8, 8)))
            (cdir / "notes.txt").write_text("not an image\n")
            info.bad["text"] = str((cdir / "notes.txt").relative_to(root))
            (pools["train"] / "zebra").mkdir()
            info.empty_classes.append("zebra")
            if layout == "split":
                save(pools["test"] / "owl" / "owl_000.png",
                     Image.fromarray(_random_image(rng, 32, 32)))
                info.empty_classes.append("owl")
        return info

    return make


# --------------------------------------------------------------------------- CIFAR

@dataclass
class CifarArchive:
    """A tiny CIFAR archive written by :func:`cifar10_archive`."""

    data_dir: Path          # pass as ``data_dir``; the archive is ``data_dir/raw/<name>``
    path: Path
    label_names: list[str]
    train_images: np.ndarray  # (N, 32, 32, 3) uint8 in archive order (all training batches)
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def _add_pickle(tar: tarfile.TarFile, name: str, obj: object) -> None:
    payload = pickle.dumps(obj, protocol=2)
    member = tarfile.TarInfo(name)
    member.size = len(payload)
    tar.addfile(member, io.BytesIO(payload))


def write_cifar_archive(path: Path, kind: str = "cifar10", per_class_train: int = 4,
                        per_class_test: int = 2, num_classes: int = 10, n_batches: int = 2,
                        seed: int = 0) -> CifarArchive:
    """Write a CIFAR-format ``.tar.gz`` (pickled batches of flat CHW rows) at ``path``."""
    rng = np.random.default_rng(seed)
    names = [f"class{i}" for i in range(num_classes)]
    train_labels = np.tile(np.arange(num_classes), per_class_train)
    test_labels = np.tile(np.arange(num_classes), per_class_test)
    train = rng.integers(0, 256, (len(train_labels), 3, 32, 32), dtype=np.uint8)
    test = rng.integers(0, 256, (len(test_labels), 3, 32, 32), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        if kind == "cifar10":
            folder = "cifar-10-batches-py"
            _add_pickle(tar, f"{folder}/batches.meta",
                        {b"label_names": [n.encode() for n in names], b"num_vis": 3072})
            for b, part in enumerate(np.array_split(np.arange(len(train_labels)), n_batches)):
                _add_pickle(tar, f"{folder}/data_batch_{b + 1}",
                            {b"data": train[part].reshape(len(part), -1),
                             b"labels": train_labels[part].tolist()})
            _add_pickle(tar, f"{folder}/test_batch",
                        {b"data": test.reshape(len(test), -1), b"labels": test_labels.tolist()})
        else:
            folder = "cifar-100-python"
            _add_pickle(tar, f"{folder}/meta",
                        {b"fine_label_names": [n.encode() for n in names]})
            _add_pickle(tar, f"{folder}/train", {b"data": train.reshape(len(train), -1),
                                                 b"fine_labels": train_labels.tolist()})
            _add_pickle(tar, f"{folder}/test", {b"data": test.reshape(len(test), -1),
                                                b"fine_labels": test_labels.tolist()})
    return CifarArchive(
        data_dir=path.parent.parent, path=path, label_names=names,
        train_images=train.transpose(0, 2, 3, 1), train_labels=train_labels,
        test_images=test.transpose(0, 2, 3, 1), test_labels=test_labels,
    )


def trust_archive(monkeypatch: pytest.MonkeyPatch, path: Path, kind: str = "cifar10") -> None:
    """Make ``path`` the archive whose MD5 the loader accepts for ``kind`` (for this test).

    The loader refuses any CIFAR archive but the published one before unpickling it.
    """
    import hashlib

    from nbutils.data import sources

    name, url, _md5 = sources.CIFAR_ARCHIVES[kind]
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    monkeypatch.setitem(sources.CIFAR_ARCHIVES, kind, (name, url, md5))


@pytest.fixture
def trust_cifar(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``trust_cifar(path, kind="cifar10")``: :func:`trust_archive` for this test."""
    return lambda path, kind="cifar10": trust_archive(monkeypatch, path, kind)


@pytest.fixture
def cifar10_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CifarArchive:
    """A tiny CIFAR-10 archive at ``tmp_path/raw/cifar-10-python.tar.gz``, trusted.

    10 classes, 4 training images per class in two ``data_batch_*`` files and 2 test
    images per class in ``test_batch``; load it with ``data_dir=tmp_path``.
    """
    archive = write_cifar_archive(tmp_path / "raw" / "cifar-10-python.tar.gz")
    trust_archive(monkeypatch, archive.path)
    return archive


@pytest.fixture
def cifar_writer(monkeypatch: pytest.MonkeyPatch) -> Callable[..., CifarArchive]:
    """:func:`write_cifar_archive` for other shapes of archive; ``trust=False`` leaves the
    written archive untrusted (its MD5 is not the published one)."""
    def write(path: Path, kind: str = "cifar10", trust: bool = True, **kwargs: object
              ) -> CifarArchive:
        archive = write_cifar_archive(path, kind=kind, **kwargs)
        if trust:
            trust_archive(monkeypatch, archive.path, kind)
        return archive

    return write


# ------------------------------------------------------------------- synthetic data

@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory: pytest.TempPathFactory):
    """A small ``shapes`` ImageData (16 px, 6 classes; per class 9 train, 1 val, 2 test).

    Session-wide and read-only (memory-mapped); do not modify its arrays.
    """
    from nbutils.data import load

    data_dir = tmp_path_factory.mktemp("shapes_data")
    return load("shapes:16", image_size=16, seed=0, max_train_per_class=10,
                max_test_per_class=4, data_dir=data_dir, num_workers=1, progress=False)


def make_record(**changes: object):
    """A valid :class:`~nbutils.records.RunRecord` for 3 classes; keyword args replace fields."""
    from nbutils.records import RunRecord, TestMetrics

    test = TestMetrics(accuracy=0.5, macro_precision=0.5, macro_recall=0.5, macro_f1=0.5,
                       confusion_matrix=[[2, 1, 0], [1, 1, 0], [0, 1, 0]],
                       per_class={"a": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 3}},
                       n_test=6)
    fields_ = dict(
        notebook="02_pytorch_alexnet", framework="pytorch", model="alexnet", dataset="shapes",
        profile="smoke", seed=42, config={"seed": 42, "data": {"image_size": 32}},
        class_names=["a", "b", "c"], num_params=1234, train_seconds=1.5,
        history=[{"epoch": 1, "train_loss": 1.0, "val_acc": 0.4}], test=test,
        peak_memory_mb={"host_rss": 100.0}, library_versions={"numpy": np.__version__},
        device={"type": "cpu", "name": "test"}, created_at="2024-01-01T00:00:00+0000",
    )
    fields_.update(changes)
    return RunRecord(**fields_)


@pytest.fixture
def record_factory() -> Callable[..., object]:
    """``record_factory(**changes)`` -> a valid RunRecord (3 classes) with fields replaced."""
    return make_record
