"""Tests of the Hugging Face path of notebook 04: offline checkpoint, data adapter, training."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on the network in tests

from nbutils import hf_offline  # noqa: E402  (sets USE_TF=0 first)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("timm")
pytest.importorskip("datasets")

from nbutils import hf_data, hf_train  # noqa: E402
from nbutils.data.core import ImageData, Split  # noqa: E402
from nbutils.inference import load_classifier as load_any_classifier  # noqa: E402

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _synthetic(n_per_class: int = 24, size: int = 32, seed: int = 0) -> ImageData:
    """Two easy classes: reddish vs bluish noise images."""
    rng = np.random.default_rng(seed)

    def split(name: str, n: int) -> Split:
        labels = np.repeat([0, 1], n)
        images = rng.integers(0, 90, (2 * n, size, size, 3)).astype(np.uint8)
        images[labels == 0, :, :, 0] += 150
        images[labels == 1, :, :, 2] += 150
        return Split(name, images, labels.astype(np.int64), [f"{name}/{i}" for i in range(2 * n)])

    train, val, test = split("train", n_per_class), split("val", 4), split("test", 4)
    mean = train.images.reshape(-1, 3).mean(0) / 255
    std = train.images.reshape(-1, 3).std(0) / 255
    return ImageData("synthetic", "synthetic", ["red", "blue"], size, seed, train, val, test,
                     mean.astype(np.float32), std.astype(np.float32))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pretrained")


@pytest.fixture(scope="module")
def lite0_dir(cache_dir: Path) -> Path:
    try:
        hf_offline.package_weights_path()
    except hf_offline.CheckpointError as exc:
        pytest.skip(str(exc))
    return hf_offline.build_efficientnet_lite0(cache_dir)


@pytest.fixture(scope="module")
def tiny_dir(cache_dir: Path) -> Path:
    return hf_offline.build_tiny_random("tiny-random", cache_dir)


@pytest.fixture(scope="module")
def tuned(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny random model fine-tuned for a few steps on synthetic data, then saved."""
    data = _synthetic()
    torch.manual_seed(0)
    model, processor = hf_train.load_pretrained(str(tiny_dir), data.class_names, 32)
    dsets = hf_data.prepare_datasets(data, processor, seed=0)
    config = hf_train.TransferConfig(strategy="fine_tune", epochs=4, batch_size=8,
                                     learning_rate=3e-3, warmup_ratio=0.0, threads=1)
    board = tmp_path_factory.mktemp("tensorboard")
    result = hf_train.fit(model, dsets, config, device="cpu", progress=False, tensorboard_dir=board)
    out = tmp_path_factory.mktemp("saved") / "model"
    info = hf_train.classifier_info(model, processor, 32, "tiny-random")
    hf_train.save_classifier(out, model, info, processor=processor)
    return {"data": data, "model": model, "processor": processor, "result": result, "dir": out,
            "board": board}


# ------------------------------------------------------------------ offline build


def test_converter_round_trip_keeps_every_weight(lite0_dir: Path) -> None:
    from transformers import AutoModelForImageClassification

    source = torch.load(hf_offline.package_weights_path(), map_location="cpu", weights_only=True)
    model = AutoModelForImageClassification.from_pretrained(lite0_dir)
    loaded = model.timm_model.state_dict()
    assert type(model).__name__ == "TimmWrapperForImageClassification"
    assert len(loaded) == len(source) == 296
    for (src_name, src), (dst_name, dst) in zip(source.items(), loaded.items(), strict=True):
        assert torch.equal(src.to(dst.dtype), dst), f"{src_name} -> {dst_name} changed"
    assert model.config.id2label[281].startswith("tabby")
    config = json.loads((lite0_dir / "config.json").read_text())
    assert config["architecture"] == "tf_efficientnet_lite0"
    assert config["pretrained_cfg"]["mean"] == [0.5, 0.5, 0.5]


def test_build_is_cached_and_atomic(lite0_dir: Path, cache_dir: Path) -> None:
    stamp = (lite0_dir / "model.safetensors").stat().st_mtime_ns
    assert hf_offline.build_efficientnet_lite0(cache_dir) == lite0_dir
    assert (lite0_dir / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in lite0_dir.parent.iterdir() if p.name.startswith(".")]


def test_converted_model_still_knows_imagenet_cats(lite0_dir: Path) -> None:
    from skimage import data as skdata
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(lite0_dir).eval()
    processor = AutoImageProcessor.from_pretrained(lite0_dir)
    pixels = processor(images=hf_data.to_pil(skdata.chelsea()[None]), return_tensors="pt")
    with torch.inference_mode():
        top = int(model(**pixels).logits.argmax(-1))
    assert top in CAT_CLASSES, f"predicted {model.config.id2label[top]!r}"


def test_convert_rejects_mismatched_layouts() -> None:
    source = {"a": torch.zeros(3), "b": torch.zeros(2, 2)}
    with pytest.raises(hf_offline.CheckpointError, match="layouts differ"):
        hf_offline.convert_package_state_dict(source, {"x": torch.zeros(3), "y": torch.zeros(3)})
    with pytest.raises(hf_offline.CheckpointError, match="tensors"):
        hf_offline.convert_package_state_dict(source, {"x": torch.zeros(3)})


# ------------------------------------------------------------------ resolution


def test_resolve_checkpoint_offline_paths(lite0_dir: Path, tiny_dir: Path, cache_dir: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    auto = hf_offline.resolve_checkpoint("auto-efficientnet-lite0", cache_dir)
    assert (auto.kind, auto.source, auto.pretrained) == ("offline-build", str(lite0_dir), True)
    assert "cannot be reached" in capsys.readouterr().out
    tiny = hf_offline.resolve_checkpoint("tiny-random", cache_dir, verbose=False)
    assert (tiny.kind, tiny.source, tiny.pretrained) == ("tiny-random", str(tiny_dir), False)
    local = hf_offline.resolve_checkpoint(str(tiny_dir), verbose=False)
    assert local.kind == "local" and local.source == str(tiny_dir)
    with pytest.raises(hf_offline.CheckpointError, match="not in the local cache"):
        hf_offline.resolve_checkpoint("nobody/no-such-model-xyz", verbose=False)
    with pytest.raises(hf_offline.CheckpointError, match="does not exist"):
        hf_offline.resolve_checkpoint("./no/such/folder", verbose=False)
    with pytest.raises(hf_offline.CheckpointError, match="config.json"):
        hf_offline.resolve_checkpoint(str(cache_dir.parent), verbose=False)


def test_hub_reachable_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    assert hf_offline.hub_reachable() is False  # HF_HUB_OFFLINE=1: no probe at all
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert hf_offline.hub_reachable(timeout=1.0, refresh=True) is True
    server.close()
    assert hf_offline.hub_reachable(timeout=1.0, refresh=True) is False


# ------------------------------------------------------------------ data adapter


@pytest.mark.parametrize("name", ["tiny-random", "tiny-random-vit"])
def test_processor_and_adapter_shapes(name: str, cache_dir: Path) -> None:
    data = _synthetic(n_per_class=4)
    folder = hf_offline.build_tiny_random(name, cache_dir)
    model, processor = hf_train.load_pretrained(str(folder), data.class_names, 48)
    size = 48 if name == "tiny-random" else 32  # a ViT keeps its fixed input size
    dsets = hf_data.prepare_datasets(data, processor)
    assert set(dsets) == {"train", "val", "test"}
    assert dsets["train"].num_rows == 8 and dsets["test"].num_rows == 8
    assert dsets["train"].features["label"].names == ["red", "blue"]
    item = dsets["val"][0]
    assert set(item) == {"pixel_values", "labels"}
    assert tuple(item["pixel_values"].shape) == (3, size, size)
    batch = hf_data.collate([dsets["train"][i] for i in range(5)])
    assert tuple(batch["pixel_values"].shape) == (5, 3, size, size)
    assert batch["pixel_values"].dtype == torch.float32
    assert batch["labels"].tolist() == [0, 0, 0, 0, 1]
    assert model.config.id2label == {0: "red", 1: "blue"}


def test_flip_augmentation_only_on_train() -> None:
    from PIL import Image

    class Identity:
        def __call__(self, images: list, return_tensors: str) -> dict:
            return {"pixel_values": torch.stack([torch.from_numpy(np.asarray(i).copy())
                                                 for i in images])}

    img = np.zeros((4, 4, 3), np.uint8)
    img[:, 0] = 255  # left column white
    batch = {"image": [Image.fromarray(img)] * 40, "label": [0] * 40}
    train = hf_data.make_transform(Identity(), train=True, shift=False,
                                   seed=1)(batch)["pixel_values"]
    flipped = sum(int(t[0, -1, 0]) == 255 for t in train)
    assert 5 < flipped < 35
    evals = hf_data.make_transform(Identity(), train=False)(batch)["pixel_values"]
    assert all(int(t[0, 0, 0]) == 255 for t in evals)


def test_random_shift_moves_content_within_the_frame() -> None:
    import random

    img = np.zeros((32, 32, 3), np.uint8)
    img[10:20, 10:20] = 200
    rng = random.Random(0)
    shifted = [hf_data.random_shift(img, rng) for _ in range(20)]
    assert all(s.shape == img.shape and s.dtype == np.uint8 for s in shifted)
    assert any(not np.array_equal(s, img) for s in shifted)
    for s in shifted:  # a 10x10 square moved by at most 4 pixels, never cut
        ys, xs = np.nonzero(s[..., 0])
        assert ys.max() - ys.min() == 9 and xs.max() - xs.min() == 9
        assert abs(int(ys.min()) - 10) <= 4 and abs(int(xs.min()) - 10) <= 4


# ------------------------------------------------------------------ training


def test_tiny_model_fine_tunes_and_loss_falls(tuned: dict) -> None:
    history = tuned["result"].history
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert {"train_acc", "val_loss", "val_acc", "lr", "seconds"} <= set(history[-1])
    assert all(h["phase"] == "fine_tune" for h in history)
    result = tuned["result"]
    assert result.train_seconds > 0 and result.cpu_seconds > 0 and result.threads == [1]
    assert result.best_epoch == 1 + max(range(4), key=lambda i: history[i]["val_acc"])
    assert result.extra["strategy"] == "fine_tune"
    table = hf_train.strategy_table([(result, 0.5)])
    assert table["fine_tune"]["epochs"] == 4 and table["fine_tune"]["test_acc"] == 0.5
    assert table["fine_tune"]["val_acc"] == round(history[-1]["val_acc"], 4)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tuned["board"]))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"eval/accuracy", "train/learning_rate"} <= tags, tags
    assert len(events.Scalars("eval/accuracy")) == 4  # one per epoch


def test_saved_model_loads_in_pipeline_and_contract(tuned: dict) -> None:
    from transformers import pipeline

    folder, data = tuned["dir"], tuned["data"]
    assert {"config.json", "model.safetensors", "classifier.json"} <= {
        p.name for p in folder.iterdir()}
    classify = pipeline("image-classification", model=str(folder))
    answer = classify(hf_data.to_pil(data.test.images[:1])[0])
    assert {a["label"] for a in answer} == {"red", "blue"}
    reloaded = load_any_classifier(folder)
    assert reloaded.info.framework == "huggingface"
    assert reloaded.info.class_names == ["red", "blue"]
    probs = reloaded.predict_proba(data.test.images, batch_size=3)
    assert probs.shape == (8, 2)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    direct = hf_train.predict_proba(tuned["model"], tuned["processor"], data.test.images)
    np.testing.assert_allclose(probs, direct, atol=1e-5)
    top = max(answer, key=lambda a: a["score"])
    assert top["label"] == data.class_names[int(probs[0].argmax())]


def test_set_trainable_strategies_and_frozen_batchnorm(tiny_dir: Path) -> None:
    model, _ = hf_train.load_pretrained(str(tiny_dir), ["a", "b", "c"], 32)
    head = set(hf_train.head_parameter_names(model))
    assert head == {"timm_model.classifier.weight", "timm_model.classifier.bias"}
    probe = hf_train.set_trainable(model, "linear_probe")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == head
    assert probe["trainable_params"] == sum(p.numel() for n, p in model.named_parameters()
                                            if n in head)
    bn = model.timm_model.bn1
    before = bn.running_mean.clone()
    model.train()
    model(pixel_values=torch.randn(4, 3, 32, 32))
    assert torch.equal(bn.running_mean, before), "frozen BatchNorm statistics moved"
    units = [u for u, _ in hf_train.backbone_units(model)]
    assert units[:2] == ["timm_model.conv_stem", "timm_model.bn1"]
    part = hf_train.set_trainable(model, "fine_tune", freeze_fraction=0.5)
    assert part["frozen_units"] == units[: round(0.5 * len(units))]
    assert not model.timm_model.conv_stem.weight.requires_grad
    assert model.timm_model.conv_head.weight.requires_grad
    model(pixel_values=torch.randn(4, 3, 32, 32))
    assert torch.equal(bn.running_mean, before)
    full = hf_train.set_trainable(model, "fine_tune")
    assert full["trainable_params"] == full["total_params"] and not full["frozen_units"]
    model(pixel_values=torch.randn(4, 3, 32, 32))
    assert not torch.equal(bn.running_mean, before), "trainable BatchNorm should update"
    with pytest.raises(ValueError, match="strategy"):
        hf_train.set_trainable(model, "everything")
    with pytest.raises(ValueError, match="freeze_fraction"):
        hf_train.set_trainable(model, "fine_tune", 1.5)


def test_checkpointing_and_accumulation_still_train(tiny_dir: Path) -> None:
    data = _synthetic(n_per_class=8)
    model, processor = hf_train.load_pretrained(str(tiny_dir), data.class_names, 32)
    dsets = hf_data.prepare_datasets(data, processor)
    before = hf_train.snapshot_weights(model)
    config = hf_train.TransferConfig(strategy="fine_tune", epochs=1, batch_size=4,
                                     learning_rate=1e-3, gradient_accumulation_steps=2,
                                     gradient_checkpointing=True, freeze_fraction=0.3)
    result = hf_train.fit(model, dsets, config, device="cpu", progress=False)
    after = model.state_dict()
    frozen = set(result.extra["trainable"]["frozen_units"])
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert "timm_model.conv_head.weight" in changed and "timm_model.classifier.weight" in changed
    assert not any(n.startswith(u + ".") for n in changed for u in frozen)
    hf_train.restore_weights(model, before)
    assert all(torch.equal(before[n], v) for n, v in model.state_dict().items())


def test_history_from_log_builds_course_epochs() -> None:
    log = [
        {"loss": 2.0, "learning_rate": 1e-3, "epoch": 0.5, "step": 2},
        {"epoch": 1.0, "step": 4, "train_epoch_loss": 1.5, "train_epoch_acc": 0.4,
         "learning_rate_end": 9e-4, "epoch_seconds": 3.0},
        {"eval_loss": 1.2, "eval_accuracy": 0.5, "epoch": 1.0, "step": 4},
        {"epoch": 2.0, "step": 8, "train_epoch_loss": 1.0, "train_epoch_acc": 0.6,
         "learning_rate_end": 0.0, "epoch_seconds": 2.5},
        {"eval_loss": 0.95, "eval_nll": 0.9, "eval_accuracy": 0.7, "epoch": 2.0, "step": 8},
        {"train_runtime": 6.0, "epoch": 2.0, "step": 8},
    ]
    hist = hf_train.history_from_log(log, phase="linear_probe", epoch_offset=3)
    assert hist == [
        {"epoch": 4, "train_loss": 1.5, "train_acc": 0.4, "val_loss": 1.2, "val_acc": 0.5,
         "lr": 9e-4, "seconds": 3.0, "phase": "linear_probe"},
        {"epoch": 5, "train_loss": 1.0, "train_acc": 0.6, "val_loss": 0.9, "val_acc": 0.7,
         "lr": 0.0, "seconds": 2.5, "phase": "linear_probe"},
    ]


def test_precision_flags() -> None:
    assert hf_train.precision_flags("auto", "cpu") == {"fp16": False, "bf16": False}
    assert hf_train.precision_flags("fp16", "cpu") == {"fp16": False, "bf16": False}
    assert hf_train.precision_flags("bf16", "cpu") == {"fp16": False, "bf16": True}
    assert hf_train.precision_flags("fp32", "cuda") == {"fp16": False, "bf16": False}
    with pytest.raises(ValueError, match="precision"):
        hf_train.precision_flags("int8", "cpu")


def test_predict_proba_rejects_bad_shapes(tuned: dict) -> None:
    with pytest.raises(ValueError, match="N, H, W, 3"):
        hf_train.predict_proba(tuned["model"], tuned["processor"], np.zeros((2, 8, 8), np.uint8))


def test_benchmark_prints_figures(tmp_project: Path, capsys: pytest.CaptureFixture) -> None:
    from nbutils.benchmarks import hf_bench

    assert hf_bench.main(["--profile", "smoke", "--steps", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    for word in ("inference", "train linear_probe", "train fine_tune", "predict_proba", "ratios",
                 "load average", "GPU memory not measured"):
        assert word in out
    assert (tmp_project / "data" / "pretrained").is_dir()  # built in the throw-away project


@pytest.mark.slow
def test_hf_modules_never_import_tensorflow() -> None:
    code = ("import sys; import nbutils.hf_train, nbutils.hf_data, nbutils.benchmarks.hf_bench; "
            "import datasets; print(datasets.config.TF_AVAILABLE, 'tensorflow' in sys.modules)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("USE_TF", None)
    env.pop("TRANSFORMERS_NO_TF", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False False"


def test_the_trainer_uses_the_cpu_only_when_told(tmp_path: Path) -> None:
    config = hf_train.TransferConfig(epochs=1)
    assert hf_train.training_arguments(config, "cpu", str(tmp_path)).use_cpu
    assert not hf_train.training_arguments(config, "mps", str(tmp_path)).use_cpu
    assert hf_train.precision_flags("fp16", "mps") == {"fp16": False, "bf16": False}


def test_only_a_checkpoint_with_named_classes_has_guesses_to_show(lite0_dir: Path,
                                                                  tiny_dir: Path,
                                                                  tmp_path: Path) -> None:
    from transformers import AutoConfig

    assert hf_train.has_class_names(str(lite0_dir))          # 1,000 ImageNet classes
    headless = tmp_path / "headless"
    config = AutoConfig.from_pretrained(str(tiny_dir))
    config.id2label = {0: "LABEL_0", 1: "LABEL_1"}            # what an in21k ViT ships
    config.save_pretrained(headless)
    assert not hf_train.has_class_names(str(headless))


# ------------------------------------------------------------------ frozen embeddings (04)

def test_embeddings_are_the_head_input(tiny_dir: Path) -> None:
    from nbutils import embeddings

    data = _synthetic()
    model, processor = hf_train.load_pretrained(str(tiny_dir), data.class_names, 32)
    images = np.asarray(data.val.images)
    emb = embeddings.embed_images(model, processor, images, batch_size=3)
    head = hf_train.head_module(model)
    assert emb.shape[0] == len(images) and emb.shape[1] == head.in_features
    # the head applied to the embeddings gives the model's own logits
    logits = head(torch.from_numpy(emb)).detach().numpy()
    probs = hf_train.predict_proba(model, processor, images)
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(logits), 1).numpy(), probs,
                               atol=1e-5)
    assert not head._forward_pre_hooks, "the hook is removed afterwards"


def test_pca_and_knn_on_known_geometry() -> None:
    from nbutils import embeddings

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 30)
    centres = np.array([[10, 0, 0, 0], [0, 10, 0, 0], [0, 0, 10, 0]], float)
    x = centres[labels] + rng.normal(0, 0.5, (90, 4))
    coords, share = embeddings.pca_2d(x)
    assert coords.shape == (90, 2) and 0.9 < share <= 1.0
    assert embeddings.knn_accuracy(x, labels, k=5) == 1.0
    shuffled = rng.permutation(labels)                   # labels unrelated to the points
    assert embeddings.knn_accuracy(x, shuffled, k=5) < 0.6
    with pytest.raises(ValueError, match="more than k"):
        embeddings.knn_accuracy(x[:3], labels[:3], k=5)
    fig = embeddings.plot_embedding_map(coords, labels, ["a", "b", "c"], title="t")
    assert len(fig.axes[0].collections) == 3


def test_a_build_another_process_published_first_is_kept(tmp_path: Path, monkeypatch) -> None:
    """Two processes (ranks of one job) convert the same weights: the second swap is dropped."""
    import shutil
    import types

    def replace(src, dst):
        if Path(src).is_dir() and not Path(dst).exists():  # the other process wins the race
            shutil.copytree(src, dst)
        os.replace(src, dst)

    from nbutils import paths

    monkeypatch.setattr(paths, "os", types.SimpleNamespace(**{**vars(os), "replace": replace}))
    built = hf_offline.build_tiny_random("tiny-random", tmp_path)
    monkeypatch.undo()
    assert hf_offline._build_complete(built)
    assert not [p for p in built.parent.iterdir() if p.name.startswith(".")]


def test_after_mixed_precision_training_the_model_predicts_as_it_reloads(tiny_dir: Path,
                                                                        tmp_path: Path) -> None:
    """bf16 training wraps ``forward`` in autocast; ``fit`` takes it off again, so the test
    probabilities a run records are the ones its saved model gives when reloaded."""
    data = _synthetic(n_per_class=8)
    torch.manual_seed(0)
    model, processor = hf_train.load_pretrained(str(tiny_dir), data.class_names, 32)
    dsets = hf_data.prepare_datasets(data, processor, seed=0)
    config = hf_train.TransferConfig(strategy="fine_tune", epochs=1, batch_size=8,
                                     learning_rate=3e-3, warmup_ratio=0.0, threads=1,
                                     precision="bf16")
    hf_train.fit(model, dsets, config, device="cpu", progress=False)
    assert "_original_forward" not in vars(model)
    in_memory = hf_train.predict_proba(model, processor, data.test.images)
    info = hf_train.classifier_info(model, processor, 32, "tiny-random")
    hf_train.save_classifier(tmp_path / "m", model, info, processor=processor)
    reloaded = load_any_classifier(tmp_path / "m").predict_proba(data.test.images)
    np.testing.assert_allclose(in_memory, reloaded, atol=1e-6)
