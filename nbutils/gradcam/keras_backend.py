"""Grad-CAM for Keras models: a ``GradientTape`` over a sub-model with two outputs.

The sub-model maps the model's inputs to the target layer's output and to the
class scores before the softmax. Grad-CAM differentiates the score y_c, not the
probability: a saturated softmax has almost no gradient, so when the model ends
in a softmax (``Dense(..., activation="softmax")`` or a ``Softmax``/``Activation``
layer) the scores are recomputed from that layer's input.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from ..images import as_image_batch, resize_images
from ..keras_data import keras, tf  # imports TensorFlow safely beside PyTorch
from .torch_backend import LayerInfo

__all__ = ["prepare", "prepare_inputs", "expects_raw_pixels", "default_layer", "candidate_layers",
           "forward_backward", "predict_logits", "randomized_copy"]

_SUBMODELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PREPROCESSING = ("rescaling", "normalization")
_NOT_A_MAP = ("pool", "rescaling", "normalization", "random", "resizing", "inputlayer",
              "centercrop")


def _layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def expects_raw_pixels(model: keras.Model, info: Any = None) -> bool:
    """Whether the model scales its own inputs (a ``Rescaling``/``Normalization`` layer first).

    ``info.extra["input_range"]`` (``"raw"`` or ``"normalized"``) decides when present.
    """
    extra = getattr(info, "extra", None) or {}
    if "input_range" in extra:
        return str(extra["input_range"]).lower() in ("raw", "0-255", "pixels")
    if model.inputs and model.inputs[0].dtype == "uint8":
        return True
    return any(type(layer).__name__.lower() in _PREPROCESSING for layer in _layers(model)[:4])


def _input_size(model: keras.Model | None, info: Any) -> int | None:
    if model is not None and model.inputs and model.inputs[0].shape[1] is not None:
        return int(model.inputs[0].shape[1])
    return int(info.image_size) if info is not None else None


def prepare_inputs(images: Any, info: Any = None, model: keras.Model | None = None
                   ) -> np.ndarray:
    """uint8 NHWC images -> the NHWC batch the model expects.

    Resized to the model's input size (PIL bilinear, only when it differs); left
    as raw pixels when the model rescales and standardises inside (see
    :func:`expects_raw_pixels`; uint8 when its input layer is uint8), else scaled
    to [0, 1] and standardised with ``info.mean`` / ``info.std``. Float arrays pass
    through unchanged.
    """
    arr = as_image_batch(images)
    if arr.dtype != np.uint8:
        return np.asarray(arr, dtype=np.float32)
    size = _input_size(model, info)
    if size is not None:
        arr = resize_images(arr, size)
    if model is not None and expects_raw_pixels(model, info):
        return arr if model.inputs[0].dtype == "uint8" else arr.astype(np.float32)
    x = arr.astype(np.float32) / 255.0
    if info is not None:
        x = (x - np.asarray(info.mean, np.float32)) / np.asarray(info.std, np.float32)
    return x.astype(np.float32)


def prepare(model: keras.Model, images: Any, info: Any = None) -> np.ndarray:
    """:func:`prepare_inputs` for this model."""
    return prepare_inputs(images, info, model)


def _is_softmax(fn: Any) -> bool:
    return getattr(fn, "__name__", "") == "softmax" or fn is keras.activations.softmax


def _score_head(model: keras.Model) -> tuple[Any, Any]:
    """(tensor to take from the graph, function turning it into pre-softmax scores)."""
    last = model.layers[-1]
    name = type(last).__name__
    if name == "Softmax" or (name == "Activation" and _is_softmax(last.activation)):
        return last.input, lambda t: t
    if name == "Dense" and _is_softmax(last.activation):
        def linear(t: tf.Tensor) -> tf.Tensor:
            out = tf.matmul(t, last.kernel)
            return out + last.bias if last.use_bias else out
        return last.input, linear
    return model.outputs[0], lambda t: t


def _submodel(model: keras.Model, layer: str) -> tuple[keras.Model, Any]:
    cache = _SUBMODELS.setdefault(model, {})
    if layer not in cache:
        try:
            target = model.get_layer(layer)
        except ValueError as exc:
            names = [lay.name for lay in _layers(model)]
            raise KeyError(f"No layer named {layer!r} in {model.name}; layers: {names}") from exc
        tensor, head = _score_head(model)
        sub = keras.Model(model.inputs, [target.output, tensor], name=f"{model.name}_gradcam")
        cache[layer] = (sub, head)
    return cache[layer]


def _has_conv(layer: keras.layers.Layer) -> bool:
    """A convolution, or a nested model that contains one."""
    if isinstance(layer, keras.Model):
        return any("conv" in type(sub).__name__.lower() for sub in layer._flatten_layers())
    return "conv" in type(layer).__name__.lower()


def _maps(model: keras.Model) -> list[tuple[str, str, tuple[int, ...]]]:
    """Layers with an (N, h, w, C) output after the first convolution, preprocessing left out."""
    out, seen_conv = [], False
    for layer in _layers(model):
        kind = type(layer).__name__
        seen_conv = seen_conv or _has_conv(layer)
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):  # layers called several times, or not built
            continue
        if seen_conv and len(shape) == 4 and not any(s in kind.lower() for s in _NOT_A_MAP):
            out.append((layer.name, kind, shape))
    return out


def default_layer(model: keras.Model, x: Any = None) -> str:
    """The last layer with a spatial (h * w > 1) feature map, pooling left out."""
    maps = _maps(model)
    if not maps:
        raise ValueError(f"{model.name} has no convolutional feature map; "
                         "pass target_layer=<layer name>")
    wide = [m for m in maps if (m[2][1] or 0) * (m[2][2] or 0) > 1]
    return (wide or maps)[-1][0]


def candidate_layers(model: keras.Model, x: Any = None) -> list[LayerInfo]:
    """Usable target layers, shallow to deep: the last feature map before each convolution."""
    maps = [m for m in _maps(model) if (m[2][1] or 0) * (m[2][2] or 0) > 1]
    out = []
    for i, (name, kind, shape) in enumerate(maps):
        if i + 1 == len(maps) or "conv" in maps[i + 1][1].lower():
            out.append(LayerInfo(name, kind, (shape[3], shape[1], shape[2])))
    return out


def forward_backward(model: keras.Model, x: np.ndarray, layer: str, classes: np.ndarray | None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Activations and gradients as (N, C, h, w), logits (N, K) and the explained classes."""
    sub, head = _submodel(model, layer)
    x = tf.convert_to_tensor(np.asarray(x))
    with tf.GradientTape() as tape:
        if x.dtype.is_floating:  # records the graph even when no weight is trainable
            tape.watch(x)
        act, pre = sub(x, training=False)
        logits = head(pre)
        target = (tf.argmax(logits, axis=1, output_type=tf.int64) if classes is None
                  else tf.convert_to_tensor(np.asarray(classes, np.int64)))
        score = tf.reduce_sum(tf.gather(logits, target, axis=1, batch_dims=1))
    grad = tape.gradient(score, act)
    if act.shape.rank != 4:
        raise ValueError(f"Layer {layer!r} outputs shape {tuple(act.shape)}, not (N, h, w, C)")
    to_nchw = (0, 3, 1, 2)
    return (np.transpose(act.numpy(), to_nchw), np.transpose(grad.numpy(), to_nchw),
            logits.numpy().astype(np.float32), target.numpy().astype(np.int64))


def predict_logits(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Class scores before the softmax (N, K) of a prepared batch."""
    cache = _SUBMODELS.setdefault(model, {})
    if "__scores__" not in cache:
        tensor, head = _score_head(model)
        cache["__scores__"] = (keras.Model(model.inputs, tensor), head)
    sub, head = cache["__scores__"]
    return np.asarray(head(sub(tf.convert_to_tensor(np.asarray(x)), training=False)),
                      dtype=np.float32)


def _reinitialise(variable: Any, layer: keras.layers.Layer, seed: int) -> bool:
    short = variable.name.split("/")[-1].split(":")[0]
    spec = getattr(layer, f"{short}_initializer", None)
    if spec is None:
        return False
    init = keras.initializers.get(spec)
    config = init.get_config()
    if "seed" in config:
        config["seed"] = seed
    init = type(init).from_config(config)
    variable.assign(init(tuple(variable.shape), dtype=variable.dtype))
    return True


def randomized_copy(model: keras.Model, seed: int = 0) -> keras.Model:
    """A copy with every learned weight re-initialised from its layer's initializer.

    Weights without an initializer (an adapted ``Normalization`` layer's mean and
    variance) keep their values: they describe the data, not what was learned.
    """
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    counter = 0
    for layer in clone._flatten_layers(include_self=False):
        for variable in layer._trainable_variables + layer._non_trainable_variables:
            counter += 1
            _reinitialise(variable, layer, seed * 10007 + counter)
    return clone
