"""Tests of the Keras side: tf.data adapter, reference CNN, training recipe, saving, benchmark.

Everything runs on the CPU in seconds on tiny synthetic data; the real CIFAR-10
subset is used only by one test that skips when it is absent.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("keras") is None:
    pytest.skip("TensorFlow/Keras is not installed", allow_module_level=True)
# TensorFlow is first imported through nbutils.keras_data, which prepares the process for it

from nbutils import keras_data as kd  # noqa: E402
from nbutils import keras_train as kt  # noqa: E402
from nbutils.config import available_profiles, load_config  # noqa: E402
from nbutils.data import load  # noqa: E402
from nbutils.inference import load_classifier as load_any  # noqa: E402
from nbutils.inference import read_classifier_info  # noqa: E402

keras = kd.keras
tf = kd.tf

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "cifar10-subset"
TINY = dict(widths=[8, 16], dense_units=16)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory):
    """6-class synthetic data at 32 px, cached so the splits are memory-mapped like real runs."""
    data_dir = tmp_path_factory.mktemp("keras_shapes")
    return load("shapes:12", image_size=32, seed=0, data_dir=data_dir, num_workers=1,
                progress=False)


def tiny_model(data, **changes) -> keras.Model:
    return kt.build_cnn_for(data, None, seed=0, **{**TINY, **changes})


# ------------------------------------------------------------------------------ data


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_pipeline_yields_exactly_the_numpy_core(shapes, split: str) -> None:
    part = getattr(shapes, split)
    x, y = kd.dataset_arrays(kd.make_dataset(shapes, split, 5, shuffle=False, one_hot=False))
    assert x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(x, part.images)
    np.testing.assert_array_equal(y, part.labels)


def test_pipeline_normalizes_like_the_numpy_core(shapes) -> None:
    x, y = kd.dataset_arrays(kd.make_dataset(shapes, "val", 4, normalize=True, shuffle=False))
    assert x.dtype == np.float32 and y.shape == (len(shapes.val), shapes.num_classes)
    np.testing.assert_allclose(x, shapes.normalize(shapes.val.images), atol=1e-5)
    np.testing.assert_array_equal(y.argmax(axis=1), shapes.val.labels)
    np.testing.assert_array_equal(y.sum(axis=1), 1.0)


def test_train_pipeline_reshuffles_the_same_images(shapes) -> None:
    ds = kd.make_dataset(shapes, "train", 7, one_hot=False, seed=3)
    x1, y1 = kd.dataset_arrays(ds)
    x2, _ = kd.dataset_arrays(ds)
    assert not np.array_equal(x1, x2)  # a new order every epoch
    core = {img.tobytes(): int(label) for img, label in zip(shapes.train.images,
                                                            shapes.train.labels, strict=True)}
    seen = {img.tobytes(): int(label) for img, label in zip(x1, y1, strict=True)}
    assert seen == core and len(x1) == len(shapes.train)


def test_pipeline_rejects_bad_arguments(shapes) -> None:
    with pytest.raises(ValueError, match="split"):
        kd.make_dataset(shapes, "holdout", 4)
    with pytest.raises(ValueError, match="batch_size"):
        kd.make_dataset(shapes, "train", 0)
    x, y = kd.numpy_arrays(shapes, "val", one_hot=False)
    np.testing.assert_array_equal(y, shapes.val.labels)
    assert x.flags.writeable and x.dtype == np.uint8


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="real CIFAR-10 subset not present")
def test_pipeline_equals_core_on_real_subset(tmp_path: Path) -> None:
    data = load(f"imagefolder:{REAL_DATA}", image_size=32, seed=42, max_train_per_class=6,
                max_test_per_class=3, data_dir=tmp_path, cache=False, progress=False)
    x, y = kd.dataset_arrays(kd.make_dataset(data, "test", 8, one_hot=False))
    np.testing.assert_array_equal(x, data.test.images)
    np.testing.assert_array_equal(y, data.test.labels)


# ----------------------------------------------------------------------------- model


@pytest.mark.parametrize("profile", available_profiles())
def test_model_builds_for_each_profile(shapes, profile: str, cpu_only) -> None:
    cfg = load_config(profile, model="keras_cnn", dataset="shapes")
    model = kt.build_cnn_for(shapes, cfg.model, seed=0)
    s = kt.model_settings(cfg.model)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [w for w in s["widths"]
                                          for _ in range(s["convs_per_block"])]
    assert model.output_shape == (None, shapes.num_classes)
    assert model.inputs[0].dtype == "uint8"
    names = {layer.name for layer in model.layers}
    assert {"rescale", "normalize", "gap", "probs"} <= names
    assert ("augmentation" in names) == s["augment"]


def test_augmentation_copy_matches_the_models_block(shapes) -> None:
    copy = kt.augmentation_layers({"rotation": 0.0}, seed=1)
    assert [type(layer).__name__ for layer in copy.layers] == [
        "RandomFlip", "RandomTranslation", "RandomZoom", "RandomContrast"]
    assert kt.augmentation_layers({"augment": False}) is None
    x = np.asarray(shapes.train.images[:4], np.float32) / 255.0
    np.testing.assert_array_equal(np.asarray(copy(x, training=False)), x)  # identity at inference
    assert not np.allclose(np.asarray(copy(x, training=True)), x)


def test_ablation_variants_change_the_architecture(shapes) -> None:
    base = tiny_model(shapes, batch_norm=False, dropout=0.0, augment=False)
    full = tiny_model(shapes)
    kinds = {type(layer).__name__ for layer in base.layers}
    assert "BatchNormalization" not in kinds and "Dropout" not in kinds
    kinds_full = {type(layer).__name__ for layer in full.layers}
    assert {"BatchNormalization", "Dropout", "Sequential"} <= kinds_full
    aug = full.get_layer("augmentation")
    assert [type(layer).__name__ for layer in aug.layers] == [
        "RandomFlip", "RandomRotation", "RandomTranslation", "RandomZoom", "RandomContrast"]
    assert base.count_params() < full.count_params()  # BN adds scale/offset


def test_settings_validation() -> None:
    s = kt.model_settings({"epochs": 3}, widths=[4, 8])
    assert s["epochs"] == 3 and s["widths"] == [4, 8] and s["batch_norm"] is True
    with pytest.raises(ValueError, match="Unknown config key 'widht'.*Did you mean 'widths'"):
        kt.model_settings(None, widht=[4])
    with pytest.raises(ValueError, match="widths"):
        kt.model_settings(None, widths=[])
    with pytest.raises(ValueError, match="dropout"):
        kt.model_settings(None, dropout=1.0)
    with pytest.raises(ValueError, match="interpolation"):
        kt.model_settings(None, interpolation="cubic")
    with pytest.raises(ValueError, match="convs_per_block"):
        kt.model_settings(None, convs_per_block=0)


def test_forward_on_two_samples(shapes) -> None:
    model = tiny_model(shapes)
    x = np.asarray(shapes.test.images[:2])
    probs = kt.predict_proba(model, x)
    assert probs.shape == (2, shapes.num_classes) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(kt.predict_proba(model, x), probs, rtol=1e-6)  # inference mode
    mirrored = kt.predict_proba(model, np.ascontiguousarray(x[:, :, ::-1]))
    np.testing.assert_allclose(kt.predict_proba(model, x, tta_flip=True), (probs + mirrored) / 2,
                               rtol=1e-5)
    train_out = np.asarray(model(x, training=True))  # augmentation + dropout now active
    assert not np.allclose(train_out, probs)
    big = np.stack([np.kron(img, np.ones((2, 2, 1), np.uint8)) for img in x])  # 64 px
    assert kt.predict_proba(model, big).shape == (2, shapes.num_classes)
    assert kt.predict_proba(model, x[0]).shape == (1, shapes.num_classes)
    assert kt.predict_proba(model, x[:0]).shape == (0, shapes.num_classes)
    seven = np.asarray(shapes.test.images[:7])  # chunks of 3, 3 and 1 equal one batch of 7
    np.testing.assert_allclose(kt.predict_proba(model, seven, batch_size=3),
                               kt.predict_proba(model, seven, batch_size=64), rtol=1e-5,
                               atol=1e-7)
    with pytest.raises(ValueError, match="uint8"):
        kt.predict_proba(model, x.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        kt.predict_proba(model, x[..., :1])


def test_preprocessing_inside_matches_numpy_normalize(shapes) -> None:
    model = tiny_model(shapes, augment=False)
    pre = keras.Model(model.input, model.get_layer("normalize").output)
    x = np.asarray(shapes.val.images)
    np.testing.assert_allclose(np.asarray(pre(x)), shapes.normalize(x), atol=1e-5)


def test_one_train_on_batch_lowers_the_loss(shapes) -> None:
    # no augmentation and no dropout: the training-mode forward pass is deterministic
    model = tiny_model(shapes, augment=False, dropout=0.0)
    kt.compile_cnn(model, steps_per_epoch=1, epochs=1, learning_rate=1e-2, warmup_epochs=0)
    x, y = kd.numpy_arrays(shapes, "train")
    x, y = x[:32], y[:32]
    loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)
    before = float(loss_fn(y, model(x, training=True)))
    model.train_on_batch(x, y)
    after = float(loss_fn(y, model(x, training=True)))
    assert after < before


def test_compile_schedule_warms_up_then_decays() -> None:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
    kt.compile_cnn(model, steps_per_epoch=10, epochs=4, learning_rate=1e-2, warmup_epochs=1)
    schedule = model.optimizer._learning_rate
    lrs = [float(schedule(step)) for step in (0, 10, 25, 40)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[1] == pytest.approx(1e-2)
    assert lrs[1] > lrs[2] > lrs[3] and lrs[3] == pytest.approx(0.0, abs=1e-6)
    names = [m.name for m in model.metrics]
    assert "compile_metrics" in names or "accuracy" in names


# -------------------------------------------------------------------------- training


def test_train_logs_history_checkpoint_and_csv(shapes, tmp_path: Path) -> None:
    model = tiny_model(shapes)
    log_dir = tmp_path / "logs"
    config = kt.KerasTrainConfig.from_settings(kt.model_settings(), epochs=2, batch_size=16)
    result = kt.fit(model, shapes, config, log_dir=log_dir, seed=0, progress=False)
    assert len(result.history) == 2 and result.extra["restored_best"]
    first = result.history[0]
    for key in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds",
                "val_precision", "val_recall"):
        assert key in first, key
    assert first["lr"] > 0 and first["seconds"] > 0
    assert 1 <= result.best_epoch <= 2 and result.train_seconds > 0 and result.cpu_seconds > 0
    assert (log_dir / "best.weights.h5").is_file()
    csv = (log_dir / "history.csv").read_text().splitlines()
    assert len(csv) == 3 and "lr" in csv[0].split(",")
    assert any((log_dir / "tensorboard").rglob("events.out.tfevents*"))
    board = tmp_path / "board"
    kt.fit(tiny_model(shapes), shapes, config, log_dir=tmp_path / "logs2", seed=0,
           progress=False, tensorboard_dir=board)
    assert any(board.rglob("events.out.tfevents*"))
    assert not (tmp_path / "logs2" / "tensorboard").exists()


def test_history_to_records_renames_keys() -> None:
    logs = {"loss": [1.0, 0.5], "accuracy": [0.2, 0.4], "val_loss": [1.1, 0.9],
            "val_accuracy": [0.1, 0.3], "learning_rate": [1e-3, 5e-4], "seconds": [2.0, 1.5],
            "ignored": [0, 0]}
    rows = kt.history_to_records(logs)
    assert rows == [
        {"epoch": 1, "train_loss": 1.0, "train_acc": 0.2, "val_loss": 1.1, "val_acc": 0.1,
         "lr": 1e-3, "seconds": 2.0},
        {"epoch": 2, "train_loss": 0.5, "train_acc": 0.4, "val_loss": 0.9, "val_acc": 0.3,
         "lr": 5e-4, "seconds": 1.5},
    ]
    assert kt.history_to_records({}) == []


def test_ablation_table(shapes, tmp_path: Path) -> None:
    variants = {"baseline": kt.ABLATION_VARIANTS["baseline"]}
    rows = kt.run_ablation(shapes, {**TINY, "batch_size": 32}, epochs=1, seed=0,
                           variants=variants, progress=False)
    assert [r["variant"] for r in rows] == ["baseline"]
    row = rows[0]
    assert row["batch_norm"] is False and row["augment"] is False and row["dropout"] == 0.0
    assert 0.0 <= row["val_acc"] <= 1.0 and row["epochs"] == 1 and row["seconds"] > 0
    assert row["params"] == tiny_model(shapes, batch_norm=False).count_params()
    table = kt.ablation_frame(rows)
    path = kt.save_ablation(table, tmp_path / "ablation.csv")
    assert path.read_text().startswith("variant,")


# ---------------------------------------------------------------------------- saving


def test_save_reload_round_trip(shapes, tmp_path: Path) -> None:
    model = tiny_model(shapes)
    info = kt.classifier_info(shapes, tta_flip=True, extra={"run_id": "x"})
    folder = kt.save_classifier(tmp_path / "run", model, info)
    assert sorted(p.name for p in folder.iterdir()) == ["classifier.json", "model.keras"]
    info = read_classifier_info(folder)
    assert info.framework == "keras" and info.class_names == shapes.class_names
    assert info.image_size == 32 and info.extra["run_id"] == "x"
    np.testing.assert_allclose(info.mean, shapes.mean, rtol=1e-6)
    clf = load_any(folder)  # the shared entry point: classifier.json -> keras_train
    assert isinstance(clf, kt.KerasClassifier) and isinstance(clf.model, keras.Model)
    x = np.asarray(shapes.test.images)
    assert info.extra["tta_flip"] is True  # the reloaded classifier predicts the same way
    expected = kt.predict_proba(model, x, tta_flip=True)
    np.testing.assert_array_equal(clf.predict_proba(x), expected)
    np.testing.assert_allclose(clf.predict_proba(x, batch_size=4), expected,
                               rtol=1e-5)  # other batch sizes sum in another order
    # the reloaded model still carries its preprocessing (augmentation included)
    assert clf.model.get_layer("augmentation") is not None
    json.loads((folder / "classifier.json").read_text())


def test_load_classifier_errors(shapes, tmp_path: Path) -> None:
    folder = kt.save_classifier(tmp_path / "run", tiny_model(shapes), kt.classifier_info(shapes))
    info = read_classifier_info(folder)
    if not tf.config.list_logical_devices("GPU"):
        with pytest.raises(RuntimeError, match="no GPU"):
            kt.load_classifier(folder, info, device="cuda")
    (folder / "model.keras").unlink()
    with pytest.raises(FileNotFoundError, match="notebook 03"):
        kt.load_classifier(folder, info)


def test_course_loading_refuses_lambda_layers(shapes, tmp_path: Path) -> None:
    inputs = keras.Input((32, 32, 3))
    scaled = keras.layers.Lambda(lambda t: t * 2)(keras.layers.GlobalAveragePooling2D()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(shapes.num_classes)(scaled))
    folder = kt.save_classifier(tmp_path / "lambda", model, kt.classifier_info(shapes))
    with pytest.raises(ValueError, match="safe_mode"):
        load_any(folder)  # nbutils' loader: classifier.json -> keras_train, safe_mode=True


# ------------------------------------------------------------------------ environment


def test_setup_keras_on_cpu(cpu_only) -> None:
    cfg = load_config("smoke", model="keras_cnn")
    env = kt.setup_keras(cfg)
    assert env["device"] == "cpu" and env["precision"] == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"
    assert keras.backend.backend() == "tensorflow"
    assert kt.device_peak_mb() is None
    kt.reset_device_peak()  # a no-op without a GPU


@pytest.mark.parametrize(("precision", "on_gpu", "asked", "policy"), [
    ("bf16", False, "bf16", "mixed_bfloat16"), ("bf16", False, "auto", "float32"),
    ("bf16", True, "auto", "mixed_bfloat16"), ("fp32", False, "fp32", "float32"),
    ("mixed", False, "auto", "float32"), ("mixed", True, "auto", "mixed_float16"),
    ("fp16", True, "fp16", "mixed_float16")])
def test_keras_policy_follows_the_run_precision(precision, on_gpu, asked, policy) -> None:
    assert kt.keras_policy(precision, on_gpu, asked) == policy


def test_a_bf16_model_is_saved_as_float32(shapes, tmp_path: Path) -> None:
    settings = kt.model_settings(widths=[8], dense_units=16)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = kt.build_cnn_for(shapes, settings, seed=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert {layer.dtype_policy.name for layer in model.layers} >= {"mixed_bfloat16"}
    folder = kt.save_classifier(tmp_path / "bf16", model, kt.classifier_info(shapes))
    reloaded = load_any(folder)
    assert {layer.dtype_policy.name for layer in reloaded.model.layers} == {"float32"}
    images = shapes.test.images[:8]
    np.testing.assert_allclose(reloaded.predict_proba(images), kt.predict_proba(model, images),
                               atol=0.02)
    assert kt.float32_model(reloaded.model) is reloaded.model


def test_keras_side_never_imports_torch() -> None:
    code = ("import sys, nbutils, nbutils.keras_train, nbutils.benchmarks.keras_bench, "
            "nbutils.runs, nbutils.inference; nbutils.setup('smoke', verbose=False); "
            "bad = {'torch', 'transformers', 'timm'} & set(sys.modules); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, cwd=REPO_ROOT)
    source = (REPO_ROOT / "notebooks" / "src" / "03_keras_cnn.py").read_text()
    assert "import torch" not in source and "from torch" not in source


def test_benchmark_command_line(tmp_project: Path, tmp_path: Path, capsys) -> None:
    from nbutils.benchmarks import keras_bench

    out = tmp_path / "bench.json"
    code = keras_bench.main(["--profile", "smoke", "--dataset", "shapes:6", "--epochs", "1",
                             "--repeats", "1", "--batch-size", "16", "--json", str(out),
                             "--no-progress"])
    assert code == 0
    assert "ratio tf.data / numpy" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["dataset"] == "shapes:6" and saved["epochs"] == 1 and saved["batch_size"] == 16
    for kind in ("train", "inference"):
        assert set(saved[kind]) == {"tf.data", "numpy"}
        assert all(row["images_per_s"] > 0 for row in saved[kind].values())
        fast, slow = saved[kind]["tf.data"], saved[kind]["numpy"]
        assert saved[f"ratio_{kind}"] == pytest.approx(
            fast["images_per_s"] / slow["images_per_s"], rel=0.01)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None
                    or importlib.util.find_spec("torchvision") is None,
                    reason="Triton or torchvision is not installed")
def test_torchvision_after_keras_in_one_process() -> None:
    """Triton, which PyTorch imports lazily, crashes when loaded after TensorFlow."""
    code = ("import nbutils.keras_data, torch, torchvision\n"
            "with torch.no_grad():\n"
            "    print(torchvision.models.alexnet()(torch.zeros(1, 3, 224, 224)).shape)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "torch.Size([1, 1000])" in done.stdout


def test_mixup_and_cutmix_batches_keep_uint8_images_and_mix_the_labels(shapes) -> None:
    ds = kd.make_dataset(shapes, "train", 8, shuffle=False, one_hot=True)
    for alpha_mix, alpha_cut in ((0.4, 0.0), (0.0, 1.0), (0.4, 1.0)):
        mixed = kd.mix_batches(ds, alpha_mix, alpha_cut, seed=1)
        images, labels = next(iter(mixed))
        original, onehot = next(iter(ds))
        assert images.dtype == original.dtype == tf.uint8 and images.shape == original.shape
        np.testing.assert_allclose(labels.numpy().sum(1), 1.0, atol=1e-5)
        assert (labels.numpy().max(1) < 1.0).any()          # some labels really are mixed
        assert not np.array_equal(images.numpy(), original.numpy())
    assert kd.mix_batches(ds) is ds                         # off: the dataset itself


def test_rand_augment_joins_the_augmentation_block(shapes) -> None:
    block = kt.augmentation_layers(None, seed=0, rand_augment=True)
    assert any(type(layer).__name__ == "RandAugment" for layer in block.layers)
    model = kt.build_cnn_for(shapes, None, seed=0, **{**TINY, "rand_augment": True})
    x = np.asarray(shapes.train.images[:4])
    assert np.isfinite(model(x, training=True).numpy()).all()
    kt.fit(model, shapes, kt.KerasTrainConfig(epochs=1, batch_size=16, mixup_alpha=0.2),
           progress=False)
