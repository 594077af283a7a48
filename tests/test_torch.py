"""Sanity tests of the PyTorch side: data adapter, AlexNet family, training loop, saving.

Everything runs on the CPU in seconds on tiny synthetic data; the real CIFAR-10
subset is used only by one test that skips when it is absent.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nbutils import torch_data as td  # noqa: E402
from nbutils import torch_models as tm  # noqa: E402
from nbutils import torch_train as tt  # noqa: E402
from nbutils.data import load  # noqa: E402
from nbutils.inference import ClassifierInfo, read_classifier_info  # noqa: E402
from nbutils.inference import load_classifier as load_any  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "cifar10-subset"
TINY = dict(widths=[8, 16, 16, 16, 16], fc_width=32, dropout=0.0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One PyTorch thread: these tiny models only lose from threading on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory):
    """6-class synthetic data at 32 px (cached, so the splits are memory-mapped)."""
    data_dir = tmp_path_factory.mktemp("torch_shapes")
    return load("shapes:12", image_size=32, seed=0, data_dir=data_dir, num_workers=1,
                progress=False)


def tiny_model(num_classes: int = 6, **changes) -> torch.nn.Module:
    torch.manual_seed(0)
    return tm.build_model(tm.AlexNetConfig(num_classes=num_classes, **{**TINY, **changes}))


# ------------------------------------------------------------------------------ data


def test_dataset_loads_with_fixed_shapes(shapes) -> None:
    assert shapes.num_classes == 6
    assert shapes.train.images.shape[1:] == (32, 32, 3)
    assert shapes.train.images.dtype == np.uint8
    assert len(shapes.train) > 0 and len(shapes.val) > 0 and len(shapes.test) > 0


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="real CIFAR-10 subset not present")
def test_real_cifar_subset_loads(tmp_path: Path) -> None:
    data = load(f"imagefolder:{REAL_DATA}", image_size=32, seed=42, max_train_per_class=12,
                max_test_per_class=3, data_dir=tmp_path, cache=False, progress=False)
    assert data.num_classes == 10
    loader = td.make_loaders(data, 16, mode="tensor", splits=("test",))["test"]
    x, y = next(iter(loader))
    assert x.shape == (len(y), 3, 32, 32) and y.max() < 10


def test_tensor_and_dataloader_paths_agree(shapes) -> None:
    tensor = td.make_loaders(shapes, 8, mode="tensor", seed=1)
    loader = td.make_loaders(shapes, 8, mode="dataloader", num_workers=1, seed=1)
    assert isinstance(tensor["train"], td.TensorLoader)
    assert isinstance(loader["train"], td.DeviceLoader)
    # the unaugmented, unshuffled test batches are identical and correctly normalised
    for (xa, ya), (xb, yb) in zip(tensor["test"], loader["test"], strict=True):
        assert torch.equal(ya, yb)
        assert torch.allclose(xa, xb)
    expected = shapes.normalize(shapes.test.images[:len(ya)]).transpose(0, 3, 1, 2)
    first_x, first_y = next(iter(tensor["test"]))
    assert torch.allclose(first_x, torch.from_numpy(expected[:len(first_y)]), atol=1e-5)
    assert first_x.is_contiguous(memory_format=torch.channels_last)
    # training batches: full batches only, augmented, labels from the split
    for name in ("train",):
        for path in (tensor, loader):
            batches = list(path[name])
            assert len(batches) == len(shapes.train) // 8 == len(path[name])
            x, y = batches[0]
            assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
            assert set(y.tolist()) <= set(range(6))
    assert td.choose_loader_mode(shapes, "cpu") == "tensor"     # a few KiB fit easily


def test_tensor_loader_is_reproducible_and_resumable(shapes) -> None:
    a = td.make_loaders(shapes, 8, mode="tensor", seed=3, splits=("train",))["train"]
    b = td.make_loaders(shapes, 8, mode="tensor", seed=3, splits=("train",))["train"]
    xa, _ = next(iter(a))
    xb, _ = next(iter(b))
    assert torch.equal(xa, xb)
    state = a.state_dict()
    first = [y for _, y in a]
    a.load_state_dict(state)
    again = [y for _, y in a]
    assert all(torch.equal(p, q) for p, q in zip(first, again, strict=True))
    dl = td.make_loaders(shapes, 8, mode="dataloader", num_workers=0, seed=3,
                         splits=("train",))["train"]
    state = dl.state_dict()
    first = [y for _, y in dl]
    dl.load_state_dict(state)
    assert all(torch.equal(p, q) for p, q in zip(first, [y for _, y in dl], strict=True))


def test_augment_crops_and_flips_per_image() -> None:
    rng = np.random.default_rng(0)
    imgs = torch.from_numpy(rng.integers(1, 255, (64, 8, 8, 3), dtype=np.uint8))
    gen = torch.Generator().manual_seed(0)
    flipped = td.augment_batch(imgs, td.Augment(padding=0, flip=True), gen)
    is_same = [(flipped[i] == imgs[i]).all().item() for i in range(64)]
    is_flip = [(flipped[i] == imgs[i].flip(1)).all().item() for i in range(64)]
    assert all(s or f for s, f in zip(is_same, is_flip, strict=True))
    assert 10 < sum(is_flip) < 54                     # about half, drawn per image
    p = 2
    cropped = td.augment_batch(imgs, td.Augment(padding=p, flip=False), gen)
    padded = torch.nn.functional.pad(imgs, (0, 0, p, p, p, p))
    offsets = set()
    for i in range(64):
        hits = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                if torch.equal(padded[i, dy:dy + 8, dx:dx + 8], cropped[i])]
        assert hits, f"image {i} is not a crop of its padded original"
        offsets.add(hits[0])
    assert len(offsets) > 5                            # many different offsets in one batch
    assert td.augment_batch(imgs, td.Augment(0, False)) is imgs
    with pytest.raises(ValueError, match="B, H, W, C"):
        td.augment_batch(imgs[0], td.Augment())


def test_to_model_input_resizes_and_layouts() -> None:
    imgs = torch.full((2, 8, 8, 3), 255, dtype=torch.uint8)
    mean, std = torch.tensor([0.5] * 3), torch.tensor([0.25] * 3)
    x = td.to_model_input(imgs, mean, std, channels_last=False, size=16)
    assert x.shape == (2, 3, 16, 16) and x.is_contiguous()
    assert torch.allclose(x, torch.full_like(x, 2.0))
    assert not td.fits_on_device(10 ** 15, "cpu")
    with pytest.raises(ValueError, match="loader mode"):
        td.choose_loader_mode(None, "cpu", mode="gpu")


def test_uint8_dataset_reopens_memmap_after_pickling(shapes) -> None:
    import pickle

    ds = td.UInt8Dataset(shapes.train.images, shapes.train.labels)
    assert isinstance(shapes.train.images, np.memmap)
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._images is None                      # not shipped to workers
    img, label = clone[3]
    assert torch.equal(img, torch.from_numpy(np.array(shapes.train.images[3])))
    assert label == int(shapes.train.labels[3])


# ---------------------------------------------------------------------------- models


@pytest.mark.parametrize("norm", tm.NORMS)
@pytest.mark.parametrize("architecture,size", [("small", 32), ("small", 64), ("alexnet224", 224)])
def test_every_variant_instantiates_and_runs_two_samples(architecture, size, norm) -> None:
    classes = 1000 if architecture == "alexnet224" and norm == "none" else 7
    cfg = tm.AlexNetConfig(architecture=architecture, norm=norm, num_classes=classes,
                           image_size=size)
    model = tm.build_model(cfg.to_dict()).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, classes)
    if classes == 1000:                      # exactly torchvision's AlexNet
        summary = tm.summarize(model, (3, 224, 224))
        assert summary.total_params == 61_100_840
        assert 1.3e9 < summary.flops_per_image < 1.5e9       # ~0.71 G multiply-adds
    kinds = {type(m).__name__ for m in model.modules()}
    assert ("BatchNorm2d" in kinds) == (norm == "batchnorm")
    assert ("LocalResponseNorm" in kinds) == (norm == "lrn")
    if norm == "lrn":   # the paper puts LRN after the first two convolutions only
        assert sum(isinstance(m, torch.nn.LocalResponseNorm) for m in model.modules()) == 2


def test_config_checks_and_names() -> None:
    assert tm.AlexNetConfig().name == "alexnet-small-bn"
    assert tm.AlexNetConfig(architecture="alexnet224", norm="none").name == "alexnet224-plain"
    with pytest.raises(ValueError, match="norm"):
        tm.AlexNetConfig(norm="groupnorm")
    with pytest.raises(ValueError, match="five"):
        tm.AlexNetConfig(widths=[8, 8])
    with pytest.raises(ValueError, match="norm='none'"):
        tm.AlexNetConfig(architecture="alexnet224", norm="lrn", pretrained=True)
    with pytest.raises(ValueError, match="only for"):
        tm.AlexNetConfig(pretrained=True, norm="none")
    with pytest.raises(ValueError, match="Unknown"):
        tm.AlexNetConfig.from_dict({"depth": 3})
    settings = {"norm": "lrn", "widths": (4, 4, 4, 4, 4), "epochs": 3}
    cfg = tm.config_from_settings(settings, num_classes=3, image_size=48, dropout=0.1)
    assert (cfg.norm, cfg.widths, cfg.num_classes, cfg.image_size, cfg.dropout) == (
        "lrn", [4, 4, 4, 4, 4], 3, 48, 0.1)


def test_missing_pretrained_weights_give_a_clear_message(monkeypatch) -> None:
    import torchvision.models

    def offline(*_a, **_k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.models, "alexnet", offline)
    cfg = tm.AlexNetConfig(architecture="alexnet224", norm="none", pretrained=True)
    with pytest.raises(tm.PretrainedWeightsError, match="pretrained: false") as err:
        tm.build_model(cfg)
    assert "network is unreachable" in str(err.value) and "checkpoints" in str(err.value)


def test_summary_counts_shapes_params_and_flops() -> None:
    cfg = tm.AlexNetConfig(widths=[8, 16, 16, 16, 16], fc_width=32, num_classes=5)
    model = tm.build_model(cfg)
    s = tm.summarize(model, (3, 32, 32))
    assert s.total_params == sum(p.numel() for p in model.parameters())
    assert sum(r["params"] for r in s.rows) == s.total_params
    conv1 = s.rows[0]
    assert conv1["type"] == "Conv2d" and conv1["output_shape"] == (8, 32, 32)
    assert conv1["flops"] == 2 * 32 * 32 * 8 * 3 * 3 * 3
    assert s.rows[-1]["output_shape"] == (5,)
    assert s.flops_per_image == sum(r["flops"] for r in s.rows)
    text = str(s)
    assert "FLOPs/image" in text and "MaxPool2d" in text
    assert len(s.to_dataframe()) == len(s.rows)


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize("requested,device,bf16,expected", [
    (False, "cuda", True, "off"), (True, "cpu", False, "off"), (True, "cpu", True, "bf16"),
    (False, "cpu", True, "off"), (True, "mps", True, "off"),
    (True, "cuda", True, "bf16"), (True, "cuda", False, "fp16+scaler"),
])
def test_amp_dtype_choice(requested, device, bf16, expected) -> None:
    amp = tt.amp_settings(device, requested, bf16_supported=bf16)
    assert amp.label == expected
    assert amp.use_scaler == (expected == "fp16+scaler")
    if expected == "bf16":
        assert amp.dtype == torch.bfloat16


def test_schedules_warm_up_and_decay() -> None:
    for sched in tt.SCHEDULES:
        f = [tt.lr_factor(s, 100, 10, sched) for s in range(100)]
        assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
        assert all(a <= b + 1e-12 for a, b in zip(f[:9], f[1:10], strict=True))
        if sched == "constant":
            assert f[-1] == 1.0
        else:
            assert f[-1] < 0.05 and all(a >= b for a, b in zip(f[10:-1], f[11:], strict=True))
    with pytest.raises(ValueError, match="optimizer"):
        tt.TrainConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="schedule"):
        tt.TrainConfig(schedule="step")
    cfg = tt.TrainConfig.from_settings({"epochs": 4, "lr": 0.2, "widths": [1]}, seed=7)
    assert (cfg.epochs, cfg.lr, cfg.seed) == (4, 0.2, 7)


@pytest.mark.parametrize("optimizer", tt.OPTIMIZERS)
def test_one_step_lowers_the_loss_on_a_fixed_batch(shapes, optimizer) -> None:
    model = tiny_model()
    x, y = next(iter(td.make_loaders(shapes, 16, mode="tensor", augment=None,
                                     splits=("train",))["train"]))
    cfg = tt.TrainConfig(optimizer=optimizer, lr=0.01 if optimizer == "sgd" else 1e-3,
                         weight_decay=0.0, grad_clip=5.0)
    opt = tt.make_optimizer(model, cfg)
    crit = torch.nn.CrossEntropyLoss()
    step = tt.make_train_step(model, opt, None, torch.amp.GradScaler("cpu", enabled=False), crit,
                              tt.AmpSettings(False), grad_clip=cfg.grad_clip)
    model.train()
    with torch.no_grad():
        before = float(crit(model(x), y))
    step(x, y)
    with torch.no_grad():
        after = float(crit(model(x), y))
    assert after < before


def _fit(shapes, tmp_path, epochs=3, loader=None, **cfg):
    model = tiny_model()
    loaders = td.make_loaders(shapes, 8, mode="tensor", seed=5)
    config = tt.TrainConfig(epochs=epochs, lr=0.05, warmup_epochs=0.5, **cfg)
    result = tt.fit(model, loader or loaders["train"], loaders["val"], config,
                    checkpoint_dir=tmp_path, progress=False)
    return model, result


def _event_tags(folder) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return set(acc.Tags()["scalars"])


def test_fit_writes_tensorboard_scalars_per_epoch(shapes, tmp_path) -> None:
    loaders = td.make_loaders(shapes, 8, mode="tensor", seed=5)
    for _ in range(2):  # a re-run replaces the curves instead of adding a second set
        tt.fit(tiny_model(), loaders["train"], loaders["val"], tt.TrainConfig(epochs=2),
               progress=False, tensorboard_dir=tmp_path / "tb")
    assert _event_tags(tmp_path / "tb") == {"loss/train", "loss/val", "accuracy/train",
                                            "accuracy/val", "learning_rate"}
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 1


def test_fit_records_history_and_learns(shapes, tmp_path) -> None:
    model, result = _fit(shapes, tmp_path, epochs=4, label_smoothing=0.1, num_threads=1)
    assert result.threads == [1]  # fixed for the whole run
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert set(result.history[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc",
                                      "lr", "seconds"}
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.train_seconds > 0 and result.extra["images_per_second"] > 0
    assert result.extra["amp"] == "off" and result.device_peak_mb is None
    assert not (tmp_path / tt.CHECKPOINT_FILE).exists()        # removed after a finished run


class _Interrupting:
    """Wraps a loader and raises KeyboardInterrupt in the middle of a given epoch."""

    def __init__(self, loader, epoch: int, batch: int) -> None:
        self.loader, self.epoch, self.batch, self.calls = loader, epoch, batch, 0

    def __len__(self) -> int:
        return len(self.loader)

    def state_dict(self):
        return self.loader.state_dict()

    def load_state_dict(self, state) -> None:
        self.loader.load_state_dict(state)

    def __iter__(self):
        self.calls += 1
        for i, batch in enumerate(self.loader):
            if self.calls == self.epoch and i == self.batch:
                raise KeyboardInterrupt
            yield batch


def test_resume_after_an_interrupted_epoch_continues_from_the_checkpoint(shapes, tmp_path) -> None:
    ref_model, ref = _fit(shapes, tmp_path / "ref", epochs=3)

    loaders = td.make_loaders(shapes, 8, mode="tensor", seed=5)
    model = tiny_model()
    config = tt.TrainConfig(epochs=3, lr=0.05, warmup_epochs=0.5)
    ckpt = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        tt.fit(model, _Interrupting(loaders["train"], epoch=2, batch=1), loaders["val"], config,
               checkpoint_dir=ckpt, progress=False)
    saved = torch.load(ckpt / tt.CHECKPOINT_FILE, weights_only=True)
    assert len(saved["history"]) == 1

    loaders = td.make_loaders(shapes, 8, mode="tensor", seed=99)   # state comes from the file
    model = tiny_model(widths=[8, 16, 16, 16, 16])
    resumed = tt.fit(model, loaders["train"], loaders["val"], config, checkpoint_dir=ckpt,
                     progress=False)
    assert resumed.extra["resumed_from_epoch"] == 1
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history[0] == saved["history"][0]
    for key in ("train_loss", "val_acc"):      # the same run as without the interruption
        assert resumed.history[-1][key] == pytest.approx(ref.history[-1][key], rel=1e-4)
    for (name, a), b in zip(ref_model.state_dict().items(), model.state_dict().values(),
                            strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name


def test_a_checkpoint_of_other_settings_is_not_resumed(shapes, tmp_path) -> None:
    loaders = td.make_loaders(shapes, 8, mode="tensor", seed=5)
    tt.fit(tiny_model(), loaders["train"], loaders["val"], tt.TrainConfig(epochs=1),
           checkpoint_dir=tmp_path, keep_checkpoint=True, progress=False)
    assert (tmp_path / tt.CHECKPOINT_FILE).is_file()
    with pytest.warns(UserWarning, match="other settings"):
        result = tt.fit(tiny_model(), loaders["train"], loaders["val"],
                        tt.TrainConfig(epochs=2, lr=0.01), checkpoint_dir=tmp_path,
                        progress=False)
    assert result.extra["resumed_from_epoch"] == 0 and len(result.history) == 2
    (tmp_path / tt.CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="unreadable"):
        tt.fit(tiny_model(), loaders["train"], None, tt.TrainConfig(epochs=1),
               checkpoint_dir=tmp_path, progress=False)


def test_early_stopping_restores_the_best_weights(shapes, tmp_path, monkeypatch) -> None:
    scripted = iter([0.5, 0.9, 0.3, 0.2, 0.95, 0.99])     # validation accuracy per epoch
    monkeypatch.setattr(tt, "evaluate", lambda *a, **k: (1.0, next(scripted)))
    model = tiny_model()
    loaders = td.make_loaders(shapes, 8, mode="tensor", seed=5)
    config = tt.TrainConfig(epochs=6, lr=0.05, early_stopping_patience=2)
    result = tt.fit(model, loaders["train"], loaders["val"], config, checkpoint_dir=tmp_path,
                    keep_checkpoint=True, progress=False)
    assert result.extra["stopped_early"] and len(result.history) == 4 and result.best_epoch == 2
    saved = torch.load(tmp_path / tt.CHECKPOINT_FILE, weights_only=True)
    assert saved["stopper"]["best_epoch"] == 2
    weight = "features.0.weight"
    assert torch.equal(model.state_dict()[weight], saved["stopper"]["best_state"][weight])
    assert not torch.equal(model.state_dict()[weight], saved["model"][weight])  # epoch 4's


def test_fit_rejects_an_empty_loader(shapes) -> None:
    loader = td.make_loaders(shapes, 10 ** 6, mode="tensor", splits=("train",))["train"]
    loader.drop_last = True
    with pytest.raises(ValueError, match="no batches"):
        tt.fit(tiny_model(), loader, None, tt.TrainConfig(epochs=1), progress=False)


# ------------------------------------------------------------------------- saving


def test_save_then_load_gives_identical_outputs(shapes, tmp_path) -> None:
    model = tiny_model(norm="batchnorm")
    loaders = td.make_loaders(shapes, 8, mode="tensor", seed=5)
    tt.fit(model, loaders["train"], None, tt.TrainConfig(epochs=1), progress=False)
    cfg = tm.AlexNetConfig(num_classes=6, **TINY)
    info = ClassifierInfo(framework="pytorch", model=cfg.name, class_names=shapes.class_names,
                          image_size=32, mean=shapes.mean.tolist(), std=shapes.std.tolist(),
                          extra={"tta_flip": True})
    folder = tt.save_classifier(tmp_path / "model", model, info)
    assert {p.name for p in folder.iterdir()} == {"model.safetensors", "model_config.json",
                                                  "classifier.json"}
    assert json.loads((folder / "model_config.json").read_text())["widths"] == TINY["widths"]
    assert read_classifier_info(folder).framework == "pytorch"
    want = tt.predict_proba(model, shapes.test.images, shapes.mean, shapes.std, batch_size=5,
                            tta_flip=True)
    clf = load_any(folder)                     # through the framework-neutral contract
    assert isinstance(clf, tt.TorchClassifier) and not clf.model.training
    got = clf.predict_proba(np.asarray(shapes.test.images), batch_size=7)
    assert got.shape == (len(shapes.test), 6)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.allclose(got.sum(1), 1.0, atol=1e-5)
    # images of another size are resized by the classifier itself
    big = np.repeat(np.repeat(np.asarray(shapes.test.images[:2]), 2, axis=1), 2, axis=2)
    assert clf.predict_proba(big).shape == (2, 6)
    assert "TorchClassifier" in repr(clf)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="re-run notebook 02"):
        tt.load_classifier(folder)


def test_a_newly_registered_architecture_saves_and_reloads(tmp_path, monkeypatch) -> None:
    from dataclasses import asdict, dataclass

    @dataclass
    class TinyNetConfig:
        family = "tinynet"
        num_classes: int = 3
        hidden: int = 4

        @property
        def name(self) -> str:
            return f"tinynet-{self.hidden}"

        def to_dict(self) -> dict:
            return asdict(self)

        @classmethod
        def from_dict(cls, values: dict) -> TinyNetConfig:
            return cls(**values)

    def build_tinynet(config: TinyNetConfig) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, config.hidden),
                                   torch.nn.ReLU(), torch.nn.Linear(config.hidden, config.num_classes))

    monkeypatch.setattr(tm, "MODELS", tm.MODELS)  # restored below
    tm.MODELS.register("tinynet", config=TinyNetConfig)(build_tinynet)
    try:
        torch.manual_seed(0)
        model = tm.build_model(TinyNetConfig(hidden=5))
        info = ClassifierInfo("pytorch", model.model_config.name, ["a", "b", "c"], 8,
                              [0.5] * 3, [0.25] * 3)
        folder = tt.save_classifier(tmp_path / "tiny", model, info)
        assert json.loads((folder / "model_config.json").read_text())["family"] == "tinynet"
        images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
        want = tt.predict_proba(model, images, info.mean, info.std, image_size=8)
        clf = load_any(folder)
        assert isinstance(clf.model.model_config, TinyNetConfig) and clf.model.model_config.hidden == 5
        np.testing.assert_allclose(clf.predict_proba(images), want, atol=1e-6)
    finally:
        tm.MODELS._builders.pop("tinynet", None)
    with pytest.raises(ValueError, match="build_model"):
        tt.save_classifier(tmp_path / "plain", torch.nn.Linear(2, 2), info)


def test_predict_proba_checks_its_input() -> None:
    with pytest.raises(ValueError, match="N, H, W, 3"):
        tt.predict_proba(tiny_model(), np.zeros((2, 32, 32), np.uint8), [0.5] * 3, [0.2] * 3)


def test_set_threads(monkeypatch) -> None:
    before = torch.get_num_threads()
    try:
        from nbutils import hardware

        monkeypatch.setattr(hardware, "busy_cores_elsewhere", lambda: 50.0)
        assert tt._fix_threads(0) == 1                 # a crowded machine: one thread
        monkeypatch.setattr(hardware, "busy_cores_elsewhere", lambda: 0.0)
        assert tt._fix_threads(0) == len(os.sched_getaffinity(0))
        monkeypatch.setattr(hardware, "busy_cores_elsewhere", lambda: None)  # not Linux
        monkeypatch.setattr(tt.os, "getloadavg", lambda: (50.0, 50.0, 50.0))
        assert tt._fix_threads(0) == 1
        assert tt._fix_threads(1) == 1
        assert tt._fix_threads(-1) == torch.get_num_threads() == 1
        assert tt.set_threads(1) == 1 and torch.get_num_threads() == 1
        assert 1 <= tt.set_threads(0) <= len(os.sched_getaffinity(0))
        cores = len(os.sched_getaffinity(0))
        assert tt.idle_cores(0.0) == cores
        assert tt.idle_cores(cores + 5.0) == 1
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------- benchmark


@pytest.fixture
def bench_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throw-away project root (configs copied) so the benchmark writes nothing here."""
    import shutil

    root = tmp_path / "project"
    shutil.copytree(REPO_ROOT / "configs", root / "configs")
    (root / "pyproject.toml").write_text('[project]\nname = "copy"\n')
    monkeypatch.setenv("NBUTILS_ROOT", str(root))
    return root


def test_benchmark_prints_both_pipelines(bench_root, capsys) -> None:
    from nbutils.benchmarks import torch_bench

    out_json = bench_root / "bench.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = torch_bench.main(["--profile", "smoke", "--dataset", "shapes:8", "--steps", "2",
                               "--warmup", "1", "--batch-size", "8", "--workers", "0", "--threads", "1",
                               "--json", str(out_json)])
    assert rc == 0
    text = capsys.readouterr().out
    for word in ("course", "textbook", "ratio", "FLOPs/image", "matmul peak"):
        assert word in text
    figures = json.loads(out_json.read_text())
    assert figures["course_train_ips"] > 0 and figures["textbook_train_ips"] > 0
    assert figures["train_ratio"] == pytest.approx(
        figures["course_train_ips"] / figures["textbook_train_ips"])
    assert 0 < figures["course_train_util"] < 1.5


# ------------------------------------------------------------------ several processes


def test_shards_of_a_batch_are_the_single_process_batch_split(shapes_data) -> None:
    from nbutils import torch_data as tdata

    whole = tdata.make_loaders(shapes_data, 8, mode="tensor", seed=3, augment=None)["train"]
    parts = [tdata.make_loaders(shapes_data, 8, mode="tensor", seed=3, augment=None,
                                shard=(rank, 2))["train"] for rank in range(2)]
    assert len(parts[0]) == len(parts[1]) == len(whole)
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *parts, strict=True):
        assert len(y0) == len(y1) == 4
        assert torch.equal(torch.cat([y[0::2], y[1::2]]), torch.cat([y0, y1]))
        assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1)
    with pytest.raises(ValueError, match="multiple of 3"):
        tdata.make_loaders(shapes_data, 8, mode="tensor", shard=(0, 3))
    with pytest.raises(ValueError, match="rank"):
        tdata.make_loaders(shapes_data, 8, mode="tensor", shard=(2, 2))


def test_dataloader_shards_cover_the_split_once(shapes_data) -> None:
    from nbutils import torch_data as tdata

    seen = []
    for rank in range(2):
        loader = tdata.make_loaders(shapes_data, 8, mode="dataloader", seed=3, augment=None,
                                    num_workers=0, shard=(rank, 2))["train"]
        batches = list(loader)
        assert all(len(y) == 4 for _, y in batches) and len(batches) == len(loader)
        seen.append(torch.cat([y for _, y in batches]))
        again = torch.cat([y for _, y in loader])  # the next epoch reshuffles
        assert not torch.equal(seen[-1], again) or len(again) < 4
    assert sum(len(s) for s in seen) == (len(shapes_data.train) // 8) * 8


def test_distributed_helpers_are_no_ops_in_one_process() -> None:
    from nbutils import distributed

    assert distributed.init_from_env("cpu") == distributed.DistInfo()
    info = distributed.current()
    assert info.is_main and not info.active and distributed.is_main()
    assert distributed.all_reduce_sum([1.0, 2.5]) == [1.0, 2.5]
    assert distributed.gather_objects("x") == ["x"]
    assert distributed.threads_per_process(8, 3) == 2 and distributed.threads_per_process(1, 4) == 1
    model = torch.nn.Linear(3, 2)
    digest = distributed.weights_digest(model)
    distributed.broadcast_buffers(model)
    distributed.barrier()
    assert digest == distributed.weights_digest(model)
    with torch.no_grad():
        model.bias[0] += 1
    assert digest != distributed.weights_digest(model)
    distributed.shutdown()
