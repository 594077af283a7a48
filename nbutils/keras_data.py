"""The Keras adapter of the data layer: ``tf.data`` pipelines built from :class:`ImageData`.

The pipelines feed the *same* uint8 images, labels and split that the numpy core
holds; the reference model rescales and standardises them itself (with the
training split's ``data.mean`` / ``data.std``), so a saved ``.keras`` file takes
raw images. ``normalize=True`` gives the float pipeline instead, numerically the
same as :meth:`ImageData.normalize` (and as the PyTorch adapter).

Importing this module selects the TensorFlow backend of Keras, quietens
TensorFlow's start-up logging and turns on GPU memory growth, so notebooks do not
repeat that boilerplate.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile
from typing import Any

import numpy as np

__all__ = ["mix_batches", "configure_tensorflow", "make_dataset", "dataset_arrays", "numpy_arrays", "keras",
           "tf"]


def _prepare_environment() -> None:
    """Pick the TensorFlow backend and quiet C++ logging *before* TensorFlow is imported."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _load_triton_before_tensorflow()
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != "tensorflow":
            raise RuntimeError(
                f"Keras was already imported with the {keras.backend.backend()!r} backend; the "
                "course's Keras helpers need TensorFlow. Restart the kernel and import "
                "nbutils.keras_train (or nbutils.keras_data) before keras, or set "
                "KERAS_BACKEND=tensorflow."
            )


def _load_triton_before_tensorflow() -> None:
    """Import Triton now if it is installed and TensorFlow is not loaded yet.

    PyTorch's Linux wheels install Triton and import it lazily (``torchvision`` does,
    through ``torch._dynamo``). Importing Triton's native library *after* TensorFlow
    crashes the process with a segmentation fault; importing it first is safe. This
    keeps one kernel able to use both frameworks (notebook 06, the test suite) in either
    order. It costs about 0.2 s and does not import PyTorch.
    """
    if "tensorflow" in sys.modules or "triton" in sys.modules:
        return
    if importlib.util.find_spec("triton") is None:
        return
    try:
        import triton  # noqa: F401
    except Exception:  # a broken Triton must not stop Keras; PyTorch then skips it too
        pass


_prepare_environment()

# TensorFlow's C++ start-up lines ("oneDNN custom operations are on", absl's notice) go to
# the process's stderr before any log level applies, and a notebook shows them as red
# blocks; the informational ones are held back, anything else is passed on.
_QUIET_PREFIXES = ("I0000 ", "WARNING: All log messages before absl::InitializeLog()")


@contextlib.contextmanager
def _informational_stderr_held_back() -> Any:
    """Run the block with file descriptor 2 captured; re-emit its non-informational lines."""
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (some embedded interpreters): nothing to hold back
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode("utf-8", "replace").splitlines()
            rest = [ln for ln in lines if ln.strip() and not ln.startswith(_QUIET_PREFIXES)]
            if rest:
                print("\n".join(rest), file=sys.stderr)


with _informational_stderr_held_back():
    import keras  # noqa: E402
    import tensorflow as tf  # noqa: E402

_CONFIGURED: dict[str, Any] = {}


def configure_tensorflow(memory_growth: bool = True, hide_gpus: bool = False) -> dict[str, Any]:
    """Quiet TensorFlow's Python logger and set GPU memory growth (once per process).

    Memory growth makes TensorFlow take GPU memory as it needs it instead of the
    whole card, which the ``lowvram`` profile relies on. ``hide_gpus`` makes
    TensorFlow run on the CPU even when a GPU is visible. Both must happen before
    the first operation touches the GPU; afterwards the call is a no-op that
    reports what is in force.

    Returns:
        ``{"gpus": [...names...], "memory_growth": bool, "hidden": bool}``.
    """
    tf.get_logger().setLevel("ERROR")
    if _CONFIGURED:
        return dict(_CONFIGURED)
    gpus = tf.config.list_physical_devices("GPU")
    growth = False
    try:
        if hide_gpus and gpus:
            tf.config.set_visible_devices([], "GPU")
        elif memory_growth:
            for gpu in gpus:
                tf.config.experimental.set_memory_growth(gpu, True)
            growth = bool(gpus)
    except RuntimeError:  # the GPU was initialised already: settings cannot change now
        pass
    _CONFIGURED.update({"gpus": [g.name for g in gpus], "memory_growth": growth,
                        "hidden": bool(hide_gpus and gpus)})
    return dict(_CONFIGURED)


configure_tensorflow()


def _split(data: Any, split: str) -> Any:
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    return getattr(data, split)


def _per_image(data: Any, normalize: bool, one_hot: bool) -> Any:
    """The ``map`` function of :func:`make_dataset`: standardise and/or one-hot encode."""
    num_classes = int(data.num_classes)
    mean = tf.constant(np.asarray(data.mean, np.float32))
    std = tf.constant(np.asarray(data.std, np.float32))

    def prepare(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if normalize:
            image = (tf.cast(image, tf.float32) / 255.0 - mean) / std
        if one_hot:
            label = tf.one_hot(label, num_classes, dtype=tf.float32)
        return image, label

    return prepare


def mix_batches(ds: tf.data.Dataset, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                seed: int = 42) -> tf.data.Dataset:
    """MixUp and/or CutMix on the batches of a training dataset (Keras's own layers).

    The batches must carry one-hot labels (``make_dataset(..., one_hot=True)``): the
    labels are mixed with the images. With both on, each batch gets one of the two at
    random. Images stay uint8 (the mixed pixels are rounded), as the model expects.
    """
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return ds
    mixup = keras.layers.MixUp(alpha=mixup_alpha, seed=seed) if mixup_alpha > 0 else None
    cutmix = keras.layers.CutMix(factor=cutmix_alpha, seed=seed + 1) if cutmix_alpha > 0 else None

    def one(layer: keras.layers.Layer, images: tf.Tensor, labels: tf.Tensor):
        out = layer({"images": tf.cast(images, tf.float32), "labels": labels})
        mixed = tf.cast(tf.round(tf.clip_by_value(out["images"], 0.0, 255.0)), images.dtype)
        return mixed, tf.cast(out["labels"], labels.dtype)

    def mix(images: tf.Tensor, labels: tf.Tensor):
        if mixup is None or cutmix is None:
            return one(mixup or cutmix, images, labels)
        return tf.cond(tf.random.uniform([], seed=seed) < 0.5,
                       lambda: one(mixup, images, labels), lambda: one(cutmix, images, labels))

    return ds.map(mix, num_parallel_calls=tf.data.AUTOTUNE)


def make_dataset(
    data: Any,
    split: str,
    batch_size: int,
    *,
    shuffle: bool | None = None,
    one_hot: bool = True,
    normalize: bool = False,
    cache: bool = True,
    prefetch: bool = True,
    seed: int = 42,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """A batched ``tf.data.Dataset`` of one split of an :class:`~nbutils.data.ImageData`.

    The order of the stages follows the ``tf.data`` performance guide: slice the
    in-memory arrays, ``map`` the per-image work, ``cache`` the result, shuffle
    (a fresh order every epoch), ``batch``, and ``prefetch`` so the next batch is
    ready while the model trains on this one.

    Args:
        data: the loaded dataset (``nbutils.data.load_for(cfg)``).
        split: ``train``, ``val`` or ``test``.
        batch_size: images per batch.
        shuffle: reshuffle every epoch; default ``True`` for ``train`` only.
        one_hot: labels as float32 one-hot rows (for categorical cross-entropy with
            label smoothing); otherwise int64 class indices.
        normalize: yield float32 images standardised like ``data.normalize``
            instead of the raw uint8 images (the course's models normalise inside).
        cache: keep the mapped elements in memory after the first epoch.
        prefetch: overlap input preparation with training (``tf.data.AUTOTUNE``).
        seed: shuffle seed (reproducible epoch orders).
        drop_remainder: drop the last, smaller batch.

    Returns:
        A dataset of ``(images, labels)`` batches.
    """
    part = _split(data, split)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if len(part) == 0:
        raise ValueError(f"The {split} split is empty: nothing to build a pipeline from.")
    shuffle = (split == "train") if shuffle is None else shuffle
    images = np.ascontiguousarray(part.images)
    labels = np.asarray(part.labels, dtype=np.int64)
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if normalize or one_hot:
        ds = ds.map(_per_image(data, normalize, one_hot), num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(len(part), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds


def dataset_arrays(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Collect a batched ``(images, labels)`` dataset back into two numpy arrays."""
    images, labels = [], []
    for x, y in ds.as_numpy_iterator():
        images.append(x)
        labels.append(y)
    if not images:
        raise ValueError("The dataset yielded no batches.")
    return np.concatenate(images), np.concatenate(labels)


def numpy_arrays(data: Any, split: str, one_hot: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The naive input: the split as in-memory numpy arrays for ``model.fit(x, y)``."""
    part = _split(data, split)
    labels = np.asarray(part.labels, dtype=np.int64)
    if one_hot:
        labels = np.eye(int(data.num_classes), dtype=np.float32)[labels]
    return np.array(part.images, dtype=np.uint8), labels
