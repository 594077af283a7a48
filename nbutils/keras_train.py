"""Notebook 03's Keras helpers: the reference CNN, its training recipe, saving and reloading.

Everything here is what Keras already offers, assembled once so the notebook stays
short: preprocessing layers (rescaling, standardisation and augmentation live
*inside* the model, so the saved ``.keras`` file takes raw uint8 images), Adam
with a warm-up + cosine-decay schedule, label-smoothed categorical
cross-entropy, and callbacks (early stopping, best checkpoint, CSV log,
TensorBoard, a learning-rate logger) instead of a hand-written loop.

Importing this module selects the TensorFlow backend (see :mod:`nbutils.keras_data`).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import model_settings as _config_model_settings
from .fitting import FitResult, Stopwatch
from .frameworks.registry import ModelRegistry
from .images import as_image_batch, resize_images
from .inference import ClassifierInfo, check_outputs, write_classifier_info

# keras_data selects the TensorFlow backend before it imports keras and tensorflow
from .keras_data import configure_tensorflow, keras, make_dataset, mix_batches, tf
from .locks import LOCK_FILE, RunLock
from .paths import atomic_write_text, clear_folder
from .settings import Settings

__all__ = [
    "ARCH_KEYS", "ABLATION_VARIANTS", "MODEL_FILE", "MODELS", "KerasClassifier",
    "KerasTrainConfig", "LearningRateLogger", "EpochTimer", "TqdmProgress",
    "setup_keras", "keras_policy", "split_cpu", "distribution_strategy", "DISTRIBUTE", "float32_model", "model_settings", "augmentation_layers", "build_cnn", "build_cnn_for",
    "compile_cnn", "make_callbacks", "fit", "history_to_records", "predict_proba",
    "classifier_info", "save_classifier", "load_classifier", "run_ablation", "ablation_frame",
    "save_ablation", "device_peak_mb", "reset_device_peak",
]

MODEL_FILE = "model.keras"
# settings that shape the network (the rest of configs/models/keras_cnn.yaml is training)
ARCH_KEYS = ("widths", "convs_per_block", "dense_units", "batch_norm", "bn_momentum", "dropout",
             "l2", "augment", "flip", "rotation", "translate", "zoom", "contrast", "interpolation")
# The architectures this framework builds: a saved ``.keras`` file rebuilds itself, so the
# registry names the builder of each family for notebooks and benchmarks.
MODELS = ModelRegistry("keras")
# "baseline / +BatchNorm / +Dropout / final": each row adds one ingredient
ABLATION_VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {"batch_norm": False, "dropout": 0.0, "augment": False},
    "+BatchNorm": {"batch_norm": True, "dropout": 0.0, "augment": False},
    "+Dropout": {"batch_norm": True, "augment": False},
    "final (+augmentation)": {},
}


# --------------------------------------------------------------------------- set-up

def keras_policy(precision: str, on_gpu: bool, asked: str = "bf16") -> str:
    """The Keras dtype policy for a run's resolved ``precision`` (see :func:`setup_keras`).

    On a CPU ``mixed_bfloat16`` only when bf16 was asked for by name: with ``precision:
    auto`` Keras stays in float32 there, because the course's Keras training measured no
    faster in bf16 (126 s against 125 s for 28 epochs; its time goes to the augmentation
    layers and the input pipeline, not the convolutions).
    """
    if precision == "bf16" and (on_gpu or asked == "bf16"):
        return "mixed_bfloat16"
    if precision in ("fp16", "mixed") and on_gpu:
        return "mixed_float16"
    return "float32"


DISTRIBUTE = ("none", "mirrored")


def split_cpu(devices: int) -> None:
    """Make TensorFlow see the CPU as ``devices`` logical devices (for ``MirroredStrategy``
    without GPUs). Must run before TensorFlow starts its runtime."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(devices)])
    except RuntimeError as exc:
        if len(tf.config.list_logical_devices("CPU")) != devices:
            raise RuntimeError(f"mirrored_cpus={devices}: TensorFlow has started already; "
                               "set it before the first TensorFlow operation (restart the "
                               "kernel).") from exc


def distribution_strategy(settings: Mapping[str, Any]) -> tf.distribute.Strategy:
    """The strategy ``settings["distribute"]`` names: ``none`` is TensorFlow's default
    (one device); ``mirrored`` a ``MirroredStrategy`` over every GPU, or over the CPU's
    logical devices when :func:`split_cpu` made more than one. Build *and* compile the
    model inside ``strategy.scope()``; ``batch_size`` stays the global batch, split over
    the replicas."""
    choice = settings.get("distribute", "none")
    if choice not in DISTRIBUTE:
        raise ValueError(f"distribute must be one of {DISTRIBUTE}, got {choice!r}")
    if choice == "none":
        return tf.distribute.get_strategy()
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(gpus or (cpus if len(cpus) > 1 else None))


def setup_keras(cfg: Any) -> dict[str, Any]:
    """Apply a run's device and precision choices to TensorFlow/Keras.

    ``device: cpu`` hides any GPU from TensorFlow; on ``cuda`` GPU memory growth is
    on (TensorFlow takes memory as needed, not the whole card) and, when the
    run's ``precision`` is ``bf16`` the ``mixed_bfloat16`` policy is set (on a CPU only
    when asked for by name, see :func:`keras_policy`), and for ``fp16``/``mixed`` on a
    GPU ``mixed_float16`` (Keras scales the loss); the output layer stays float32.
    Seeds Keras from the run.

    Returns:
        ``{"device", "precision", "memory_growth", "gpus"}`` for the run record.
    """
    values = cfg.values if hasattr(cfg, "values") else dict(cfg)
    device = values.get("device", "cpu")
    if int((values.get("model") or {}).get("mirrored_cpus", 0)) > 1:
        split_cpu(int(values["model"]["mirrored_cpus"]))
    state = configure_tensorflow(memory_growth=True, hide_gpus=device == "cpu")
    gpus = tf.config.list_logical_devices("GPU")
    if device == "cuda" and not gpus:
        raise RuntimeError("The run asks for device 'cuda' but TensorFlow sees no GPU. Install "
                           "a CUDA build of TensorFlow, or use profile='cpu'.")
    precision = keras_policy(values.get("precision", "fp32"), bool(gpus),
                             values.get("precision_asked", "auto"))
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(int(values.get("seed", 42)))
    return {"device": "gpu" if gpus else "cpu", "precision": precision,
            "memory_growth": state["memory_growth"], "gpus": state["gpus"]}


def model_settings(model_cfg: Mapping[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """The CNN's settings: ``configs/models/keras_cnn.yaml``, then ``model_cfg``, then ``overrides``.

    Read through :func:`nbutils.config.model_settings`, the path every notebook's settings
    take, so unknown keys and wrong types are the same ``ConfigError`` as in
    :func:`nbutils.setup`.
    """
    settings = _config_model_settings("keras_cnn", dict(model_cfg or {}), overrides)
    settings["widths"] = [int(w) for w in settings["widths"]]
    if not settings["widths"] or min(settings["widths"]) < 1:
        raise ValueError(f"widths must be a non-empty list of positive ints, got "
                         f"{settings['widths']}")
    if settings["convs_per_block"] < 1:
        raise ValueError("convs_per_block must be at least 1")
    if settings["interpolation"] not in ("nearest", "bilinear"):
        raise ValueError(f"interpolation must be 'nearest' or 'bilinear', got "
                         f"{settings['interpolation']!r}")
    if not 0.0 <= settings["dropout"] < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {settings['dropout']}")
    return settings


# --------------------------------------------------------------------------- the model

def augmentation_layers(model_cfg: Mapping[str, Any] | None = None, seed: int = 42,
                        **overrides: Any) -> keras.Sequential | None:
    """A fresh copy of the model's augmentation block (``None`` when ``augment`` is off).

    Handy for looking at augmented images without advancing the random state of
    the model's own layers.
    """
    return _augmentation(model_settings(model_cfg, **overrides), seed)


def _augmentation(settings: Mapping[str, Any], seed: int) -> keras.Sequential | None:
    """Random flip / rotation / translation / zoom / contrast layers (training only)."""
    if not settings["augment"]:
        return None
    layers: list[keras.layers.Layer] = []
    f32 = {"dtype": "float32"}  # image operations in float32 even under a mixed policy
    # each geometric layer resamples the image; "nearest" keeps 32 px images sharp, where
    # three bilinear resamplings in a row blur the training images but not the test images
    interp = settings["interpolation"]
    if settings["flip"]:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed, **f32))
    if settings["rotation"] > 0:
        layers.append(keras.layers.RandomRotation(settings["rotation"], fill_mode="reflect",
                                                  interpolation=interp, seed=seed + 1, **f32))
    if settings["translate"] > 0:
        layers.append(keras.layers.RandomTranslation(settings["translate"], settings["translate"],
                                                     fill_mode="reflect", interpolation=interp,
                                                     seed=seed + 4, **f32))
    if settings["zoom"] > 0:
        layers.append(keras.layers.RandomZoom(settings["zoom"], fill_mode="reflect",
                                              interpolation=interp, seed=seed + 2, **f32))
    if settings["contrast"] > 0:
        layers.append(keras.layers.RandomContrast(settings["contrast"], value_range=(0.0, 1.0),
                                                  seed=seed + 3, **f32))
    if settings.get("rand_augment"):  # two random operations per image (Cubuk et al., 2020)
        layers.append(keras.layers.RandAugment(value_range=(0.0, 1.0), num_ops=2,
                                               factor=settings.get("rand_augment_factor", 0.5),
                                               seed=seed + 5, **f32))
    return keras.Sequential(layers, name="augmentation") if layers else None


@MODELS.register("keras_cnn")
def build_cnn(
    num_classes: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    seed: int = 42,
    name: str = "keras_cnn",
    **settings: Any,
) -> keras.Model:
    """The reference CNN, with its preprocessing inside.

    ``uint8 image → Rescaling(1/255) → [augmentation] → Normalization(mean, std²) →
    blocks of (Conv 3×3 [+ BN] + ReLU) × convs_per_block, MaxPool between blocks →
    GlobalAveragePooling → Dense + ReLU [+ Dropout] → Dense(num_classes, softmax)``,
    with L2 weight decay on the conv and dense kernels.

    Args:
        num_classes: output classes.
        image_size: input height and width.
        mean, std: per-channel statistics of the training split in [0, 1] units.
        seed: seeds the weights and the augmentation layers.
        name: the model's name.
        **settings: any of :data:`ARCH_KEYS` (see ``configs/models/keras_cnn.yaml``).
    """
    s = model_settings(None, **settings)
    keras.utils.set_random_seed(seed)
    reg = keras.regularizers.L2(s["l2"]) if s["l2"] > 0 else None
    variance = [float(v) ** 2 for v in std]
    inputs = keras.Input(shape=(image_size, image_size, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale", dtype="float32")(inputs)
    augment = _augmentation(s, seed)
    if augment is not None:
        x = augment(x)
    x = keras.layers.Normalization(mean=[float(m) for m in mean], variance=variance,
                                   name="normalize")(x)
    for b, width in enumerate(s["widths"]):
        for c in range(s["convs_per_block"]):
            tag = f"block{b + 1}_{c + 1}"
            x = keras.layers.Conv2D(width, 3, padding="same", use_bias=not s["batch_norm"],
                                    kernel_regularizer=reg, name=f"{tag}_conv")(x)
            if s["batch_norm"]:
                x = keras.layers.BatchNormalization(momentum=s["bn_momentum"],
                                                    name=f"{tag}_bn")(x)
            x = keras.layers.ReLU(name=f"{tag}_relu")(x)
        if b < len(s["widths"]) - 1:
            x = keras.layers.MaxPooling2D(name=f"block{b + 1}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(s["dense_units"], activation="relu", kernel_regularizer=reg,
                           name="dense")(x)
    if s["dropout"] > 0:
        x = keras.layers.Dropout(s["dropout"], seed=seed, name="dropout")(x)
    x = keras.layers.Dense(num_classes, kernel_regularizer=reg, name="logits")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name=name)


def build_cnn_for(data: Any, model_cfg: Mapping[str, Any] | None = None, seed: int = 42,
                  **overrides: Any) -> keras.Model:
    """:func:`build_cnn` for a loaded :class:`~nbutils.data.ImageData` and ``cfg.model``."""
    s = model_settings(model_cfg, **overrides)
    arch = {k: s[k] for k in ARCH_KEYS}
    return build_cnn(data.num_classes, data.image_size, data.mean, data.std, seed=seed, **arch)


def compile_cnn(model: keras.Model, steps_per_epoch: int, epochs: int, learning_rate: float = 3e-3,
                warmup_epochs: float = 1.0, label_smoothing: float = 0.1,
                jit_compile: bool = False) -> keras.Model:
    """Adam with linear warm-up then cosine decay to zero; label-smoothed cross-entropy.

    Metrics: accuracy, and Keras's precision/recall, which treat every (image, class)
    pair with probability above 0.5 as a positive (micro-averaged); the notebook's
    per-class report gives the macro view.
    """
    total = max(1, steps_per_epoch * epochs)
    warmup = min(int(round(warmup_epochs * steps_per_epoch)), total // 4)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=learning_rate / 10 if warmup else learning_rate,
        decay_steps=max(1, total - warmup), alpha=0.0,
        warmup_target=learning_rate if warmup else None, warmup_steps=warmup)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy", keras.metrics.Precision(name="precision"),
                 keras.metrics.Recall(name="recall")],
        jit_compile=jit_compile,
    )
    return model


# --------------------------------------------------------------------------- callbacks

class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimizer's current learning rate to the epoch logs as ``lr``.

    Put it before CSVLogger/TensorBoard in the callback list so they record it.
    """

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            lr = self.model.optimizer.learning_rate
            logs["lr"] = float(keras.ops.convert_to_numpy(lr))


class EpochTimer(keras.callbacks.Callback):
    """Adds the wall-clock seconds of each epoch (training + validation) as ``seconds``."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["seconds"] = time.perf_counter() - self._start


class TqdmProgress(keras.callbacks.Callback):
    """One tqdm bar over the epochs, with the latest metrics as its postfix."""

    def __init__(self, epochs: int, desc: str = "train", keys: Sequence[str] = (
            "loss", "accuracy", "val_loss", "val_accuracy")) -> None:
        super().__init__()
        self.epochs, self.desc, self.keys = epochs, desc, tuple(keys)
        self._bar: Any = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=self.epochs, desc=self.desc, unit="epoch")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self._bar.set_postfix({k.replace("accuracy", "acc"): f"{logs[k]:.3f}"
                               for k in self.keys if k in logs})
        self._bar.update(1)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._bar is not None:
            self._bar.close()


def _tensorboard_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def make_callbacks(log_dir: str | Path | None, epochs: int, patience: int = 8,
                   monitor: str = "val_accuracy", progress: bool = True,
                   desc: str = "train", tensorboard_dir: str | Path | None = None
                   ) -> list[keras.callbacks.Callback]:
    """The training callbacks, in the order that lets later ones see ``lr`` and ``seconds``.

    With ``log_dir``: ``best.weights.h5`` (ModelCheckpoint, best ``monitor`` only),
    ``history.csv`` (CSVLogger) and ``tensorboard/`` (``tensorboard --logdir ...``).
    Without it (the ablation), only the timer, the learning-rate logger, early
    stopping and the progress bar.
    """
    mode = "min" if "loss" in monitor else "max"
    callbacks: list[keras.callbacks.Callback] = [
        EpochTimer(), LearningRateLogger(),
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience,
                                      restore_best_weights=False),
    ]
    if log_dir is not None:
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        callbacks += [
            keras.callbacks.ModelCheckpoint(str(log_dir / "best.weights.h5"), monitor=monitor,
                                            mode=mode, save_best_only=True,
                                            save_weights_only=True),
            keras.callbacks.CSVLogger(str(log_dir / "history.csv")),
        ]
        if _tensorboard_available():
            board = clear_folder(tensorboard_dir or log_dir / "tensorboard")
            callbacks.append(keras.callbacks.TensorBoard(str(board), write_graph=False,
                                                         profile_batch=0))
        else:
            warnings.warn("TensorBoard is not installed (pip install tensorboard): training "
                          "without the TensorBoard log.", stacklevel=2)
    if progress:
        callbacks.append(TqdmProgress(epochs, desc=desc))
    return callbacks


# --------------------------------------------------------------------------- training

@dataclass
class KerasTrainConfig(Settings):
    """How :func:`fit` compiles and trains (the training half of ``keras_cnn.yaml``)."""

    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 3e-3
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    early_stopping_patience: int = 8
    monitor: str = "val_accuracy"
    jit_compile: bool = False


def history_to_records(history: Any) -> list[dict[str, float]]:
    """Keras ``History`` (or its ``.history`` dict) → the course's per-epoch dicts.

    Keys: ``epoch, train_loss, train_acc, val_loss, val_acc, lr, seconds`` plus
    ``train_precision, train_recall, val_precision, val_recall`` when logged.
    """
    logs = history.history if hasattr(history, "history") else dict(history)
    names = {"loss": "train_loss", "accuracy": "train_acc", "precision": "train_precision",
             "recall": "train_recall", "val_loss": "val_loss", "val_accuracy": "val_acc",
             "val_precision": "val_precision", "val_recall": "val_recall", "lr": "lr",
             "learning_rate": "lr", "seconds": "seconds"}
    n = max((len(v) for v in logs.values()), default=0)
    records = []
    for i in range(n):
        row: dict[str, float] = {"epoch": i + 1}
        for key, values in logs.items():
            if key in names and i < len(values):
                row[names[key]] = float(values[i])
        records.append(row)
    return records


def fit(
    model: keras.Model,
    data: Any,
    config: KerasTrainConfig,
    *,
    log_dir: str | Path | None = None,
    seed: int = 42,
    restore_best: bool = True,
    progress: bool = True,
    desc: str = "train",
    tensorboard_dir: str | Path | None = None,
) -> FitResult:
    """Compile and fit ``model`` on the train split with the ``val`` split for validation.

    Args:
        model: an uncompiled (or to-be-recompiled) model, e.g. from :func:`build_cnn_for`.
        data: the loaded dataset.
        config: epochs, batch size, learning rate, ... (``KerasTrainConfig.from_settings``).
        log_dir: where the checkpoint, CSV log and TensorBoard events go (``None``: none).
        seed: the shuffle seed.
        restore_best: reload the best-``monitor`` checkpoint after training.
        progress: show a tqdm bar over the epochs.
        desc: the progress bar's label.
        tensorboard_dir: where the TensorBoard callback writes (default
            ``log_dir/tensorboard``).

    Returns:
        A :class:`~nbutils.fitting.FitResult`; ``extra["restored_best"]`` says whether
        the best checkpoint was reloaded. The model is trained in place.
    """
    # full batches only: no extra graph for a last, smaller batch and no BatchNorm statistics
    # from a handful of images; the dropped images change every epoch (reshuffled)
    drop = len(data.train) >= config.batch_size
    train_ds = mix_batches(make_dataset(data, "train", config.batch_size, shuffle=True,
                                        seed=seed, drop_remainder=drop),
                           config.mixup_alpha, config.cutmix_alpha, seed)
    val_ds = make_dataset(data, "val", config.batch_size, shuffle=False)
    steps = len(data.train) // config.batch_size if drop else 1
    compile_cnn(model, steps, config.epochs, config.learning_rate, config.warmup_epochs,
                config.label_smoothing, config.jit_compile)
    with RunLock(log_dir) if log_dir is not None else contextlib.nullcontext():
        if log_dir is not None:  # a re-run starts a fresh log (the lock this run holds stays)
            clear_folder(log_dir, keep=(LOCK_FILE,))
        callbacks = make_callbacks(log_dir, config.epochs, config.early_stopping_patience,
                                   config.monitor, progress=progress, desc=desc,
                                   tensorboard_dir=tensorboard_dir)
        reset_device_peak()
        with Stopwatch() as clock:
            keras_history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs,
                                      callbacks=callbacks, verbose=0,
                                      shuffle=False)  # the pipeline reshuffles every epoch
        history = history_to_records(keras_history)
        best_file = Path(log_dir) / "best.weights.h5" if log_dir is not None else None
        restored = bool(restore_best and best_file is not None and best_file.is_file())
        if restored:
            model.load_weights(str(best_file))
    return FitResult(history=history, train_seconds=clock.seconds, cpu_seconds=clock.cpu_seconds,
                     best_epoch=_best_epoch(history, config.monitor),
                     device_peak_mb=device_peak_mb(), load_average=clock.load,
                     extra={"restored_best": restored})


def _best_epoch(history: list[dict[str, float]], monitor: str) -> int:
    """The 1-based epoch with the best ``monitor`` value (the last one if none was logged)."""
    key = {"val_accuracy": "val_acc", "val_loss": "val_loss"}.get(monitor, monitor)
    values = [h.get(key, math.nan) for h in history]
    if not history or np.all(np.isnan(values)):
        return len(history)
    return int((np.nanargmin if "loss" in key else np.nanargmax)(values)) + 1


# --------------------------------------------------------------------------- inference

def _as_images(images: np.ndarray) -> np.ndarray:
    arr = as_image_batch(images)
    if arr.shape[-1] != 3:
        raise ValueError(f"Expected uint8 images shaped (N, H, W, 3), got {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"Expected uint8 images (0..255), got {arr.dtype}; the model "
                         "rescales and normalises them itself.")
    return arr


def predict_proba(model: keras.Model, images: np.ndarray, batch_size: int = 64,
                  tta_flip: bool = False) -> np.ndarray:
    """(N, K) float32 probabilities for uint8 (N, H, W, 3) images of any size.

    Images are resized to the model's input size; rescaling and normalisation
    happen inside the model; augmentation and dropout are off (inference mode).
    ``tta_flip`` averages the probabilities of each image and its mirror image
    (test-time augmentation, as the PyTorch notebook does).
    """
    arr = _as_images(images)
    size = int(model.inputs[0].shape[1])
    arr = resize_images(arr, size) if len(arr) else arr
    if len(arr) == 0:
        return np.zeros((0, int(model.outputs[0].shape[-1])), np.float32)
    probs = _predict_batches(model, arr, batch_size)
    if tta_flip:
        mirrored = np.ascontiguousarray(arr[:, :, ::-1])
        probs = (probs + _predict_batches(model, mirrored, batch_size)) / 2
    return probs


def _predict_batches(model: keras.Model, arr: np.ndarray, batch_size: int) -> np.ndarray:
    """``predict_on_batch`` over consecutive chunks of ``batch_size`` images.

    ``model.predict`` builds a ``tf.data`` pipeline and a progress loop on every call,
    which costs tens of milliseconds: most of the time for one image or one batch.
    ``predict_on_batch`` runs the same compiled inference function directly.
    """
    batch_size = max(1, int(batch_size))
    chunks = [np.asarray(model.predict_on_batch(arr[i:i + batch_size]), dtype=np.float32)
              for i in range(0, len(arr), batch_size)]
    return np.concatenate(chunks)


@dataclass
class KerasClassifier:
    """A reloaded Keras model that classifies raw uint8 images (the saved-model contract)."""

    info: ClassifierInfo
    model: keras.Model
    device: str = "cpu"

    def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, K) class probabilities for uint8 (N, H, W, 3) images."""
        with tf.device("/GPU:0" if self.device == "cuda" else "/CPU:0"):
            return predict_proba(self.model, images, batch_size,
                                 tta_flip=bool(self.info.extra.get("tta_flip", False)))


def classifier_info(data: Any, model_name: str = "keras_cnn", tta_flip: bool = False,
                    extra: Mapping[str, Any] | None = None) -> ClassifierInfo:
    """The ``classifier.json`` contents for a Keras model trained on ``data``.

    ``tta_flip`` is recorded so that the reloaded classifier predicts the same way.
    """
    return ClassifierInfo(
        framework="keras", model=model_name, class_names=list(data.class_names),
        image_size=int(data.image_size), mean=[float(v) for v in data.mean],
        std=[float(v) for v in data.std],
        extra={"file": MODEL_FILE, "input": "uint8 NHWC; rescaling and normalisation inside",
               "tta_flip": bool(tta_flip),
               "keras": keras.__version__, "tensorflow": tf.__version__, **dict(extra or {})},
        source_size=int(data.image_size),
    )


def _float32_policies(obj: Any) -> Any:
    if isinstance(obj, dict):
        if obj.get("class_name") == "DTypePolicy":
            return {**obj, "config": {**obj["config"], "name": "float32"}}
        return {k: _float32_policies(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_float32_policies(v) for v in obj]
    return obj


def float32_model(model: keras.Model, copy: bool = False) -> keras.Model:
    """``model`` itself when every layer computes in float32, otherwise a float32 copy with
    the same weights (a model trained under ``mixed_bfloat16`` is saved this way, so it
    runs at full precision wherever it is loaded, exported or explained). ``copy``
    always copies: a model built under a ``MirroredStrategy`` becomes an ordinary
    one-device model to predict with and save."""
    if not copy and all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model
    copy = model.__class__.from_config(_float32_policies(model.get_config()))
    copy.set_weights(model.get_weights())
    return copy


def save_classifier(model_dir: str | Path, model: keras.Model, info: ClassifierInfo) -> Path:
    """Save ``model`` as ``<model_dir>/model.keras`` (atomically) with ``classifier.json``;
    a mixed-precision model is saved as its float32 copy (:func:`float32_model`).

    Returns:
        The model folder (pass it to ``finish_run(model_path=...)``).
    """
    folder = Path(model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / MODEL_FILE
    tmp = folder / f".{MODEL_FILE}.{os.getpid()}.tmp.keras"
    try:
        float32_model(model).save(str(tmp))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    write_classifier_info(folder, info)
    return folder


def load_classifier(model_dir: str | Path, info: ClassifierInfo | None = None,
                    device: str = "cpu") -> KerasClassifier:
    """Reload a saved ``.keras`` model with ``safe_mode=True`` (no arbitrary code runs).

    Args:
        model_dir: the folder holding ``model.keras`` and ``classifier.json``.
        info: its :class:`~nbutils.inference.ClassifierInfo`.
        device: ``cpu`` or ``cuda``.
    """
    from .inference import read_classifier_info

    folder = Path(model_dir)
    info = info or read_classifier_info(folder)
    path = folder / str(info.extra.get("file", MODEL_FILE))
    if not path.is_file():
        raise FileNotFoundError(f"No {path.name} in {folder}: re-run notebook 03 to train and "
                                "save the Keras model.")
    dev = "cuda" if str(device).startswith(("cuda", "gpu")) else "cpu"
    if dev == "cuda" and not tf.config.list_logical_devices("GPU"):
        raise RuntimeError("device='cuda' was asked for but TensorFlow sees no GPU; use "
                           "device='cpu'.")
    with tf.device("/GPU:0" if dev == "cuda" else "/CPU:0"):
        model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
    check_outputs(info, int(model.outputs[0].shape[-1]), folder)
    return KerasClassifier(info=info, model=model, device=dev)


# --------------------------------------------------------------------------- ablation

def run_ablation(
    data: Any,
    model_cfg: Mapping[str, Any] | None = None,
    *,
    epochs: int | None = None,
    seed: int = 42,
    variants: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train one short run per variant and tabulate what each ingredient adds.

    Each variant overrides the config's settings (``ABLATION_VARIANTS`` by default:
    baseline without BatchNorm, dropout or augmentation, then adding each in turn).
    Every variant gets the same epochs, seed and schedule; compare them on the
    validation split (the test split stays for the final model).

    Returns:
        One dict per variant: settings, parameters, final train accuracy (measured
        during training, with dropout/augmentation on), best and final validation
        accuracy, seconds, and the per-epoch ``history`` (for the curves).
    """
    base = model_settings(model_cfg)
    if epochs is not None:
        base["epochs"] = int(epochs)
    rows = []
    for name, change in (variants or ABLATION_VARIANTS).items():
        s = {**base, **dict(change)}
        model = build_cnn_for(data, s, seed=seed)
        result = fit(model, data, KerasTrainConfig.from_settings(s), log_dir=None, seed=seed,
                     restore_best=False, progress=progress, desc=name)
        last = result.history[-1]
        rows.append({
            "variant": name, "batch_norm": bool(s["batch_norm"]), "dropout": float(s["dropout"]),
            "augment": bool(s["augment"]), "params": int(model.count_params()),
            "epochs": len(result.history), "train_acc": round(last.get("train_acc", math.nan), 4),
            "val_acc": round(last.get("val_acc", math.nan), 4),
            "best_val_acc": round(max(h.get("val_acc", math.nan) for h in result.history), 4),
            "seconds": round(result.train_seconds, 1),
            "history": result.history,
        })
        keras.backend.clear_session()
    return rows


def ablation_frame(rows: Sequence[Mapping[str, Any]]) -> Any:
    """The ablation rows as a pandas DataFrame indexed by variant."""
    import pandas as pd

    return pd.DataFrame([{k: v for k, v in r.items() if k != "history"}
                         for r in rows]).set_index("variant")


def save_ablation(table: Any, path: str | Path) -> Path:
    """Write the ablation DataFrame as CSV, atomically."""
    return atomic_write_text(path, table.to_csv())


# --------------------------------------------------------------------------- memory

def device_peak_mb() -> float | None:
    """Peak GPU memory TensorFlow allocated on ``GPU:0`` (MiB), or ``None`` without a GPU."""
    if not tf.config.list_logical_devices("GPU"):
        return None
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2 ** 20


def reset_device_peak() -> None:
    """Reset the GPU peak-memory counter (no-op without a GPU)."""
    if tf.config.list_logical_devices("GPU"):
        tf.config.experimental.reset_memory_stats("GPU:0")

