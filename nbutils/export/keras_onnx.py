"""ONNX graphs of the course's Keras models (Keras's own ``export(format="onnx")``).

The saved model takes uint8 pixels and rescales and standardises them itself. For
export it is rebuilt for inference only: the augmentation block and dropout are left
out (their random ops have no ONNX equivalent and do nothing at inference), and the
``Normalization`` layer becomes the equivalent constant ``Rescaling`` (its statistics
would otherwise become extra graph inputs). The same layer objects are reused, so the
weights are the trained ones.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np

__all__ = ["inference_model", "export_graph"]


def _constant_normalization(layer: Any) -> keras.layers.Layer:
    mean = np.asarray(layer.mean, np.float32).reshape(-1)
    std = np.sqrt(np.asarray(layer.variance, np.float32).reshape(-1))
    return keras.layers.Rescaling(scale=(1.0 / std).tolist(), offset=(-mean / std).tolist(),
                                  name=f"{layer.name}_constant")


def inference_model(model: keras.Model) -> keras.Model:
    """``model`` without augmentation and dropout, with constant standardisation."""
    x = inputs = keras.Input(shape=tuple(model.inputs[0].shape[1:]), dtype=model.inputs[0].dtype,
                             name="image")
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if layer.name == "augmentation" or isinstance(layer, keras.layers.Dropout):
            continue
        x = (_constant_normalization(layer) if isinstance(layer, keras.layers.Normalization)
             else layer)(x)
    return keras.Model(inputs, x, name=f"{model.name}_inference")


def export_graph(classifier: Any, path: Path, source_size: int) -> dict[str, Any]:
    """Write the Keras ``classifier``'s ONNX graph to ``path``.

    Returns:
        ``input_size`` (the side of the graph's uint8 input) and ``resample``
        (Pillow bilinear, as :func:`nbutils.keras_train.predict_proba` resizes).
    """
    model = inference_model(classifier.model)
    size = int(model.inputs[0].shape[1])
    model.predict_on_batch(np.zeros((1, size, size, 3), np.uint8))  # export needs a built call
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        model.export(str(path), format="onnx", verbose=False)
    return {"input_size": size, "resample": "bilinear"}
