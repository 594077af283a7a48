"""Bad input never crashes a run or silently changes its result.

One test (or more) per kind of bad input: odd file names, unknown or impossible
settings, classes that vanish when their images do not decode, a damaged cache,
concurrent runs, file modes, thread counts, duplicate YAML keys, mismatched model
files, huge images and McNemar's test on a large test set.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import nbutils
from nbutils import metrics, paths
from nbutils.config import ConfigError
from nbutils.data import DatasetError, load
from nbutils.data import sources as sources_mod

REPO = Path(__file__).resolve().parents[1]


def _png(path: Path, seed: int, size: tuple[int, int] = (12, 10)) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(path)


def _folder(root: Path, classes: dict[str, int]) -> Path:
    for c, (name, n) in enumerate(classes.items()):
        for i in range(n):
            _png(root / name / f"img{i}.png", seed=100 * c + i)
    return root


# ----------------------------------------------------------------- 1. file names


def test_file_names_that_are_not_utf8_load_and_print(tmp_path: Path, run_cfg_factory) -> None:
    root = _folder(tmp_path / "imgs", {"cat": 6, "dog": 6})
    odd = os.fsdecode(b"caf\xe9-latin1.png")          # not valid UTF-8: a surrogate in Python
    _png(root / "cat" / odd, seed=99)
    data = load(f"imagefolder:{root}", data_dir=tmp_path / "data", progress=False,
                val_fraction=0.2, test_fraction=0.3)
    ids = data.train.ids + data.val.ids + data.test.ids
    assert os.path.join("cat", odd) in ids and len(ids) == 13
    again = load(f"imagefolder:{root}", data_dir=tmp_path / "data", progress=False,
                 val_fraction=0.2, test_fraction=0.3)          # from the cache
    assert again.train.ids + again.val.ids + again.test.ids == ids
    from nbutils.runs import printable_id

    assert printable_id(os.path.join("cat", odd)) == "cat/caf\\xe9-latin1.png"
    printable_id(os.path.join("cat", odd)).encode("utf-8")       # prints and encodes


@pytest.fixture
def run_cfg_factory(cpu_only):
    return lambda **kw: nbutils.setup("smoke", verbose=False, **kw)


def test_examples_csv_and_npz_keep_odd_names(tmp_path: Path, cpu_only) -> None:
    from nbutils.fitting import FitResult
    from nbutils.runs import finish_run, load_test_probabilities

    root = _folder(tmp_path / "imgs", {"a": 8, "b": 8})
    for i in range(3):
        _png(root / "a" / os.fsdecode(b"x\xff%d.png" % i), seed=50 + i)
    cfg = nbutils.setup("smoke", verbose=False, dataset=f"imagefolder:{root}",
                        data_dir=str(tmp_path / "d"), outputs_dir=str(tmp_path / "o"))
    data = nbutils.data.load_for(cfg, progress=False)
    probs = np.full((len(data.test), 2), 0.5)
    record = finish_run(cfg, data, notebook="02_pytorch_alexnet", model="m", probs=probs,
                        fit=FitResult([], 1.0), num_params=1, show=False, n_examples=len(data.test))
    text = Path(record.artifacts["examples_csv"]).read_text(encoding="utf-8")
    assert ("\\xff" in text) == any("\udcff" in i for i in data.test.ids)
    saved = load_test_probabilities(record.artifacts["test_probs"])
    assert list(saved["ids"]) == data.test.ids


# ------------------------------------------------------------ 2. unknown -p keys


def test_runner_refuses_a_parameter_no_notebook_has(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "nbutils.run", "--profile", "smoke", "--only",
                           "02", "-p", "epoch=2"], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode != 0
    assert ("no selected notebook (02_pytorch_alexnet, 02b_pytorch_resnet) has a parameter "
            "'epoch'") in proc.stderr  # --only 02 selects 02 and 02b
    assert "Did you mean 'epochs'" in proc.stderr


# ----------------------------------------------------------- 3. impossible values


@pytest.mark.parametrize("override, message", [
    ({"epochs": 0}, "model.epochs must be at least 1, got 0"),
    ({"epochs": -3}, "model.epochs must be at least 1"),
    ({"batch_size": 0}, "model.batch_size must be at least 1"),
    ({"lr": -0.1}, "model.lr must be greater than 0"),
    ({"dropout": 1.5}, "model.dropout must be in \\[0, 1\\)"),
    ({"label_smoothing": 1.0}, "model.label_smoothing must be in \\[0, 1\\)"),
    ({"val_fraction": 0.0}, "data.val_fraction must be between 0 and 1"),
    ({"image_size": 4}, "data.image_size must be at least 8"),
    ({"max_train_per_class": 0}, "data.max_train_per_class must be at least 1"),
    ({"widths": [8, 0, 8, 8, 8]}, "model.widths must list positive ints"),
])
def test_impossible_values_stop_at_setup(cpu_only, override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        nbutils.setup("smoke", model="alexnet", verbose=False, **override)


def test_every_profile_passes_the_range_checks(fake_hardware) -> None:
    fake_hardware(cuda=True, gpu_memory_gb=40.0)
    for profile in ("gpu", "lowvram", "cpu", "smoke"):
        for model in ("eda", "alexnet", "keras_cnn", "hf_transfer", "comparison", "gradcam"):
            nbutils.setup(profile, model=model, verbose=False)


# ------------------------------------------------- 4. classes decided after decoding


def test_a_class_whose_images_all_fail_to_decode_is_left_out(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", {"a": 6, "b": 6})
    (root / "c").mkdir()
    for i in range(4):
        (root / "c" / f"broken{i}.png").write_bytes(b"not an image at all")
    with pytest.warns(UserWarning, match="Class 'c' has no readable training image"):
        data = load(f"imagefolder:{root}", data_dir=tmp_path / "d", progress=False,
                    test_fraction=0.3)
    assert data.class_names == ["a", "b"] and data.num_classes == 2
    assert set(np.unique(data.train.labels)) == {0, 1}
    assert max(data.test.labels.max(), data.val.labels.max()) <= 1
    assert ("c/", "no readable training image: class left out") in data.skipped
    cached = load(f"imagefolder:{root}", data_dir=tmp_path / "d", progress=False,
                  test_fraction=0.3)
    assert cached.class_names == ["a", "b"]


def test_a_single_class_is_refused(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", {"only": 8})
    with pytest.raises(DatasetError, match="1 class\\(es\\) with readable training images "
                                           "\\(only\\); a classifier needs at least two"):
        load(f"imagefolder:{root}", data_dir=tmp_path / "d", progress=False)


# --------------------------------------------------------------- 5. damaged cache


def _shapes(tmp_path: Path):
    return load("shapes:10", data_dir=tmp_path / "d", progress=False)


@pytest.mark.parametrize("damage", ["truncate", "zero", "permute_labels", "delete"])
def test_a_damaged_cache_is_detected_and_rebuilt(tmp_path: Path, damage: str) -> None:
    first = _shapes(tmp_path)
    want_images = np.array(first.train.images)
    want_labels = np.array(first.train.labels)
    folder = first.cache_dir
    images, labels = folder / "train_images.npy", folder / "train_labels.npy"
    del first
    if damage == "truncate":
        images.write_bytes(images.read_bytes()[:-1000])
    elif damage == "zero":
        arr = np.load(images, mmap_mode="r+")
        arr[:] = 0
        arr.flush()
        del arr
    elif damage == "permute_labels":
        np.save(labels, np.roll(np.load(labels), 1))
    else:
        images.unlink()
    with pytest.warns(UserWarning, match="is damaged .*rebuilding it"):
        again = _shapes(tmp_path)
    np.testing.assert_array_equal(again.train.images, want_images)
    np.testing.assert_array_equal(again.train.labels, want_labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # the rebuilt cache is trusted again
        _shapes(tmp_path)


def test_a_killed_loads_temporary_folder_is_cleaned_up(tmp_path: Path) -> None:
    processed = tmp_path / "d" / "processed"
    processed.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = processed / f".shapes-10-32px-abc.tmp{dead.pid}.x1y2"
    live = processed / f".shapes-10-32px-abc.tmp{os.getpid()}.z3w4"
    for folder in (stale, live):
        folder.mkdir()
        (folder / "train_images.npy").write_bytes(b"half")
    _shapes(tmp_path)
    assert not stale.exists() and live.exists()


# --------------------------------------------------------------- 6. concurrent runs


def test_a_folder_in_the_way_that_is_not_a_finished_build_is_an_error(tmp_path: Path) -> None:
    built, target = tmp_path / ".build.tmp", tmp_path / "build"
    for folder in (built, target):
        folder.mkdir()
        (folder / "part").write_text(folder.name)
    with pytest.raises(OSError):
        paths.publish_folder(built, target, finished=lambda folder: False)
    assert (built / "part").read_text() == ".build.tmp"       # nothing of ours was lost
    assert paths.publish_folder(built, target) is False       # a finished one: ours dropped
    assert not built.exists() and (target / "part").read_text() == "build"


def test_two_loads_finishing_the_same_cache_at_once_both_succeed(tmp_path: Path,
                                                                 monkeypatch) -> None:
    """The other load's cache appears just before ours is swapped in: keep it, drop ours."""
    import shutil
    import types

    def replace(src, dst):
        if Path(src).is_dir() and not Path(dst).exists():  # the other process wins the race
            shutil.copytree(src, dst)
        os.replace(src, dst)

    monkeypatch.setattr(paths, "os", types.SimpleNamespace(**{**vars(os), "replace": replace}))
    data = _shapes(tmp_path)
    monkeypatch.undo()
    assert data.cache_dir is not None and (data.cache_dir / "meta.json").is_file()
    assert not [p for p in data.cache_dir.parent.iterdir() if p.name.startswith(".")]
    np.testing.assert_array_equal(_shapes(tmp_path).train.images, data.train.images)



@contextlib.contextmanager
def _another_run_holds(folder: Path) -> Iterator[int]:
    """A second process holds ``folder``'s run lock while the block runs; yields its pid."""
    code = ("import sys, time; from nbutils.locks import RunLock\n"
            "with RunLock(sys.argv[1]):\n    print('held', flush=True); time.sleep(30)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_second_run_cannot_take_a_live_run_folder(tmp_path: Path) -> None:
    from nbutils.locks import RunLock, RunLockedError

    with _another_run_holds(tmp_path) as pid:
        with pytest.raises(RunLockedError, match=f"in use by pid {pid} on .* since"):
            with RunLock(tmp_path):
                pass
    with RunLock(tmp_path):  # a killed holder leaves no stale lock
        pass


def test_training_refuses_a_checkpoint_folder_another_run_holds(tmp_path: Path,
                                                               shapes_data) -> None:
    from nbutils import torch_data, torch_models, torch_train

    model = torch_models.build_model(torch_models.AlexNetConfig(
        num_classes=shapes_data.num_classes, widths=[4, 8, 8, 8, 8], fc_width=16))
    loaders = torch_data.make_loaders(shapes_data, 16, mode="tensor", seed=0)
    with _another_run_holds(tmp_path) as pid:
        with pytest.raises(RuntimeError, match=f"in use by pid {pid}"):
            torch_train.fit(model, loaders["train"], loaders["val"],
                            torch_train.TrainConfig(epochs=1), checkpoint_dir=tmp_path,
                            progress=False)


def test_overrides_give_a_run_its_own_id(cpu_only) -> None:
    base = nbutils.setup("smoke", model="alexnet", verbose=False)
    short = nbutils.setup("smoke", model="alexnet", verbose=False, epochs=2)
    moved = nbutils.setup("smoke", model="alexnet", verbose=False, outputs_dir="elsewhere")
    nb = "02_pytorch_alexnet"
    assert base.run_id(nb) == "02_pytorch_alexnet__shapes__smoke" == moved.run_id(nb)
    assert short.run_id(nb) == "02_pytorch_alexnet__shapes__smoke__epochs-2"
    assert short.to_dict()["variant"] == "epochs-2"


# --------------------------------------------------------------------- 7. umask


def test_outputs_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        paths.atomic_write_text(tmp_path / "a.json", "{}")
        folder = paths.make_temp_dir(tmp_path / "cache")
        data = load("shapes:6", data_dir=tmp_path / "d", progress=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert stat.S_IMODE(data.cache_dir.stat().st_mode) == 0o755
    assert stat.S_IMODE((data.cache_dir / "meta.json").stat().st_mode) == 0o644


# ------------------------------------------------------------ 8. threads per run


def test_threads_are_chosen_once_per_run(monkeypatch, shapes_data) -> None:
    import torch

    from nbutils import hardware, torch_data, torch_models, torch_train

    # the machine is idle when the run starts, then other work takes every core
    loads = iter([0.0])
    monkeypatch.setattr(hardware, "busy_cores_elsewhere", lambda: next(loads, 50.0))
    before = torch.get_num_threads()
    try:
        model = torch_models.build_model(torch_models.AlexNetConfig(
            num_classes=shapes_data.num_classes, widths=[4, 8, 8, 8, 8], fc_width=16))
        loaders = torch_data.make_loaders(shapes_data, 16, mode="tensor", seed=0)
        result = torch_train.fit(model, loaders["train"], loaders["val"],
                                 torch_train.TrainConfig(epochs=3, num_threads=0), progress=False)
        assert result.threads == [min(2, len(os.sched_getaffinity(0)))]
        assert torch.get_num_threads() == result.threads[0]   # the load rose; threads did not
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------- 9. smaller


def test_a_key_twice_in_a_yaml_file_is_an_error(tmp_project, cpu_only) -> None:
    smoke = tmp_project / "configs" / "profiles" / "smoke.yaml"
    smoke.write_text(smoke.read_text() + "\ndata:\n  image_size: 48\n")
    with pytest.raises(ConfigError, match="key 'data' appears twice"):
        nbutils.setup("smoke", verbose=False)


def test_class_names_must_match_the_models_outputs(tmp_path: Path) -> None:
    import torch

    from nbutils import torch_models, torch_train
    from nbutils.inference import ClassifierInfo, load_classifier, write_classifier_info

    model = torch_models.build_model(torch_models.AlexNetConfig(
        num_classes=6, widths=[4, 8, 8, 8, 8], fc_width=16))
    info = ClassifierInfo("pytorch", "m", list("abcdef"), 32, [0.5] * 3, [0.2] * 3)
    folder = torch_train.save_classifier(tmp_path / "m", model, info)
    write_classifier_info(folder, ClassifierInfo("pytorch", "m", list("abc"), 32, [0.5] * 3,
                                                 [0.2] * 3))
    with pytest.raises(ValueError, match="names 3 classes but the model .* has 6 outputs"):
        load_classifier(folder)
    write_classifier_info(folder, info)
    (folder / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="model.safetensors is not a readable safetensors file"):
        load_classifier(folder)
    assert torch.get_num_threads() >= 1


def test_huge_images_are_skipped_not_decoded(tmp_path: Path, monkeypatch) -> None:
    root = _folder(tmp_path / "imgs", {"a": 5, "b": 5})
    _png(root / "a" / "huge.png", seed=7, size=(300, 200))
    monkeypatch.setattr(sources_mod, "MAX_DECODED_PIXELS", 50_000)
    data = load(f"imagefolder:{root}", data_dir=tmp_path / "d", progress=False, cache=False)
    reasons = dict(data.skipped)
    assert "300x200 pixels is more than the 0 megapixels" in reasons[os.path.join("a", "huge.png")]
    assert len(data.train) + len(data.val) + len(data.test) == 10


# ---------------------------------------------------------------- 10. McNemar


@pytest.mark.parametrize("b, c", [(1200, 1000), (5000, 5200), (3, 2500), (0, 4000)])
def test_mcnemar_holds_for_any_number_of_disagreements(b: int, c: int) -> None:
    from scipy.stats import binomtest

    a = np.r_[np.ones(b, bool), np.zeros(c, bool), np.ones(50, bool)]
    other = np.r_[np.zeros(b, bool), np.ones(c, bool), np.ones(50, bool)]
    result = metrics.mcnemar_test(a, other)
    want = binomtest(min(b, c), b + c, 0.5).pvalue
    assert (result.b, result.c) == (b, c)
    assert result.p_value == pytest.approx(want, rel=1e-9, abs=1e-300)
    assert 0.0 <= result.p_value <= 1.0


def test_records_read_back_with_the_variant_in_their_file_name(tmp_path: Path, cpu_only) -> None:
    from nbutils.fitting import FitResult
    from nbutils.records import find_records
    from nbutils.runs import finish_run

    cfg = nbutils.setup("smoke", verbose=False, model="alexnet", epochs=2, dataset="shapes:6",
                        data_dir=str(tmp_path / "d"), outputs_dir=str(tmp_path / "o"))
    data = nbutils.data.load_for(cfg, progress=False)
    probs = np.full((len(data.test), data.num_classes), 1 / data.num_classes)
    record = finish_run(cfg, data, notebook="02_pytorch_alexnet", model="m", probs=probs,
                        fit=FitResult([], 1.0), num_params=1, show=False)
    path = tmp_path / "o" / "metrics" / f"{cfg.run_id('02_pytorch_alexnet')}.json"
    assert path.name.endswith("__epochs-2.json") and path.is_file()
    assert json.loads(path.read_text())["config"]["variant"] == "epochs-2"
    assert [r.run_id for r in find_records(tmp_path / "o")[0]] == [record.run_id]
