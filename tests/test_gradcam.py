"""Tests for nbutils.gradcam: maths, the three backends, the checks, plots and records.

The backends are tested on tiny models built so that only the top-right quadrant of
the image can drive the class score: the map must peak there (a transposed or
flipped map would peak elsewhere). A small CNN trained for a few seconds on the
``shapes`` dataset must point at the objects far more often than chance.
"""

from __future__ import annotations

import json
import os
import types
from pathlib import Path

import numpy as np
import pytest

try:  # importing triton (via torch._dynamo) after TensorFlow crashes: import it first
    import torch._dynamo  # noqa: F401
except Exception:  # noqa: BLE001
    pass

import torch  # noqa: E402
from torch import nn  # noqa: E402

from nbutils import gradcam as gc  # noqa: E402
from nbutils.gradcam import core, runs  # noqa: E402
from nbutils.gradcam import evaluate as ge  # noqa: E402
from nbutils.gradcam import explorer as gx  # noqa: E402
from nbutils.gradcam import plots as gp  # noqa: E402
from nbutils.gradcam import torch_backend as tb  # noqa: E402

SIZE = 16
HALF = SIZE // 2


def quadrant_mask(size: int = SIZE) -> np.ndarray:
    """True on the top-right quadrant."""
    m = np.zeros((size, size), bool)
    m[: size // 2, size // 2:] = True
    return m


def peaks_in_top_right(maps: np.ndarray) -> np.ndarray:
    """(N,) whether each map's maximum is in the top-right quadrant."""
    n, h, w = maps.shape
    flat = maps.reshape(n, -1).argmax(axis=1)
    rows, cols = np.unravel_index(flat, (h, w))
    return (rows < h // 2) & (cols >= w // 2)


def random_images(n: int = 6, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


class Info:
    """A stand-in for ClassifierInfo."""

    def __init__(self, size: int = SIZE, mean: float = 0.5, std: float = 0.25) -> None:
        self.image_size = size
        self.mean = [mean] * 3
        self.std = [std] * 3
        self.extra: dict = {}


# --------------------------------------------------------------------- torch models

class Gate(nn.Module):
    """Zeroes everything outside the top-right quadrant."""

    def __init__(self, size: int = SIZE) -> None:
        super().__init__()
        self.register_buffer("mask", torch.from_numpy(quadrant_mask(size)).float()[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask


def quadrant_cnn(classes: int = 2) -> nn.Module:
    """conv, ReLU(inplace), conv, ReLU, gate; global pooling; linear, class 0 weights positive."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), Gate()),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))
    with torch.no_grad():
        model[3].weight[0].abs_()
    return model.eval()


# ------------------------------------------------------------------------- core maths

def test_compute_cam_matches_the_formula() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((2, 3, 4, 5)).astype(np.float32)
    g = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    expected = np.maximum(np.einsum("nc,nchw->nhw", g.mean(axis=(2, 3)), a), 0)
    np.testing.assert_allclose(core.compute_cam(a, g), expected, rtol=1e-5)
    pp = core.compute_cam(a, g, "gradcam++")
    assert pp.shape == (2, 4, 5) and (pp >= 0).all()
    # Grad-CAM++ ignores negative gradients: all-negative gradients give an empty map
    assert core.compute_cam(a, -np.abs(g), "gradcam++").max() == 0
    with pytest.raises(ValueError, match="Unknown Grad-CAM method"):
        core.compute_cam(a, g, "cam")
    with pytest.raises(ValueError, match="N, C, h, w"):
        core.compute_cam(a[0], g[0])


def test_normalize_and_resize() -> None:
    maps = np.stack([np.arange(16, dtype=np.float32).reshape(4, 4), np.full((4, 4), 3.0)])
    out = core.normalize_maps(maps)
    assert out[0].min() == 0 and out[0].max() == pytest.approx(1.0)
    assert (out[1] == 0).all()  # constant map -> zeros
    cell = np.zeros((1, 2, 2), np.float32)
    cell[0, 0, 1] = 1.0  # top-right layer cell
    big = core.resize_bilinear(cell, (8, 8))
    assert big.shape == (1, 8, 8)
    assert peaks_in_top_right(big).all()
    assert big[0, :4, 4:].mean() > big[0, 4:, :4].mean()
    rgb = core.resize_bilinear(np.ones((2, 3, 3, 3)), (6, 6))
    np.testing.assert_allclose(rgb, 1.0)
    same = core.resize_bilinear(cell, (2, 2))
    np.testing.assert_array_equal(same, cell)


def test_resolve_targets() -> None:
    assert core.resolve_targets(None, 3) is None
    np.testing.assert_array_equal(core.resolve_targets(2, 3), [2, 2, 2])
    np.testing.assert_array_equal(core.resolve_targets([0, 1, 2], 3), [0, 1, 2])
    with pytest.raises(ValueError, match="one class per image"):
        core.resolve_targets([0, 1], 3)


# ---------------------------------------------------------------------- torch backend

@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_torch_quadrant_model_peaks_in_the_quadrant(method: str) -> None:
    model = quadrant_cnn()
    images = random_images(8)
    res = gc.gradcam(model, images, target_class=0, method=method, info=Info())
    assert res.framework == "pytorch"
    assert res.layer == "0"  # the gated block: the last convolutional feature map
    assert res.maps.shape == (8, SIZE, SIZE) and res.raw.shape == (8, SIZE, SIZE)
    assert res.maps.dtype == np.float32
    assert res.maps.min() >= 0 and res.maps.max() <= 1
    np.testing.assert_allclose(res.maps.max(axis=(1, 2)), 1.0, rtol=1e-6)
    assert peaks_in_top_right(res.maps).all()
    assert res.maps[:, HALF:, :HALF].max() == 0  # nothing outside drives the logit
    np.testing.assert_array_equal(res.class_idx, 0)
    np.testing.assert_allclose(res.probs.sum(axis=1), 1.0, rtol=1e-5)
    assert len(res) == 8


def test_torch_prepared_tensor_and_predicted_class() -> None:
    model = quadrant_cnn()
    x = torch.rand(5, 3, SIZE, SIZE)
    res = gc.gradcam(model, x, "0.4", batch_size=2)  # three batches
    with torch.no_grad():
        expected = model(x).argmax(1).numpy()
    np.testing.assert_array_equal(res.class_idx, expected)
    np.testing.assert_array_equal(res.predictions, expected)
    assert res.maps.shape == (5, SIZE, SIZE)
    big = gc.gradcam(model, x, output_size=(32, 32))
    assert big.maps.shape == (5, 32, 32)


def test_tta_flip_explains_the_averaged_prediction() -> None:
    model = quadrant_cnn(3)
    info = Info()
    info.extra = {"tta_flip": True}
    images = random_images(5)
    res = gc.gradcam(model, images, info=info, batch_size=2)
    assert res.extra["tta_flip"]
    x = tb.prepare_inputs(images, info)
    xf = tb.prepare_inputs(np.ascontiguousarray(images[:, :, ::-1]), info)
    with torch.no_grad():
        expected = 0.5 * (model(x).softmax(1) + model(xf).softmax(1)).numpy()
    np.testing.assert_allclose(res.probs, expected, rtol=1e-5)
    np.testing.assert_array_equal(res.class_idx, expected.argmax(1))
    mirrored = gc.gradcam(model, np.ascontiguousarray(images[:, :, ::-1]), info=info,
                          target_class=res.class_idx)
    np.testing.assert_allclose(mirrored.maps, res.maps[:, :, ::-1], atol=1e-5)
    plain = gc.gradcam(model, images, info=info, tta=False, target_class=0)
    assert not plain.extra["tta_flip"] and peaks_in_top_right(plain.maps).all()


def test_torch_hooks_see_the_layer_output_before_inplace_ops() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).train()
    x = torch.randn(2, 3, 8, 8)
    act, grad, _logits, cls = tb.forward_backward(model, x, "0", None)
    assert model.training  # the mode is restored
    assert all(p.grad is None for p in model.parameters())  # no side effect on .grad
    assert act.min() < 0  # the in-place ReLU did not change the captured output
    model.eval()
    conv = model[0](x)
    conv.retain_grad()
    out = model[4](model[3](model[2](torch.relu(conv))))
    out.gather(1, torch.as_tensor(cls)[:, None]).sum().backward()
    np.testing.assert_allclose(grad, conv.grad.numpy(), atol=1e-6)
    np.testing.assert_allclose(act, conv.detach().numpy(), atol=1e-6)


def test_torch_layers_by_name_and_errors() -> None:
    model = quadrant_cnn()
    images = random_images(2)
    names = [c.name for c in gc.candidate_layers(model, images, Info())]
    assert names == ["0.1", "0"]
    assert gc.default_target_layer(model, images, Info()) == "0"
    with pytest.raises(KeyError, match="Did you mean"):
        gc.gradcam(model, images, "0.9", info=Info())
    with pytest.raises(ValueError, match="feature map"):
        gc.gradcam(model, images, "3", info=Info())  # the linear layer
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 2))
    with pytest.raises(ValueError, match="no convolutional feature map"):
        gc.gradcam(mlp, images, info=Info())
    with pytest.raises(ValueError, match="Unknown Grad-CAM method"):
        gc.gradcam(model, images, method="lime")
    with pytest.raises(ValueError, match="at least one image"):
        gc.gradcam(model, images[:0])
    with pytest.raises(TypeError, match="supports torch"):
        gc.gradcam(object(), images)


def test_default_layer_skips_pooling_and_channels_last() -> None:
    class ChannelsLastBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 5, 3, padding=1)
            self.norm = nn.LayerNorm(5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.norm(self.conv(x).permute(0, 2, 3, 1))  # (N, h, w, C) inside
            return y.permute(0, 3, 1, 2)

    model = nn.Sequential(ChannelsLastBlock(), nn.AdaptiveAvgPool2d(3), nn.Flatten(),
                          nn.Linear(45, 2))
    x = torch.rand(1, 3, 8, 8)
    assert tb.default_layer(model, x) == "0"
    assert "0.norm" not in [c.name for c in tb.candidate_layers(model, x)]
    # an AlexNet-style body ending in max pooling: its last activation, not the pooled body
    alex = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 2))
    x = torch.rand(1, 3, 16, 16)
    assert tb.default_layer(alex, x) == "0.4"
    assert [c.name for c in tb.candidate_layers(alex, x)] == ["0.1", "0.4"]


def test_prepare_inputs_standardises_and_resizes() -> None:
    info = Info(size=8, mean=0.5, std=0.5)
    img = np.full((1, 4, 4, 3), 255, np.uint8)
    x = tb.prepare_inputs(img, info)
    assert x.shape == (1, 3, 8, 8)
    torch.testing.assert_close(x, torch.ones_like(x))
    nhwc = np.zeros((2, 4, 4, 3), np.float32)
    assert tb.prepare_inputs(nhwc).shape == (2, 3, 4, 4)
    assert tb.prepare_inputs(img[0]).shape == (1, 3, 4, 4)
    with pytest.raises(ValueError, match="N, H, W, 3"):
        tb.prepare_inputs(np.zeros((2, 2), np.uint8))


def test_classifier_wrapper_is_unwrapped() -> None:
    model = quadrant_cnn()
    clf = types.SimpleNamespace(model=model, info=Info(), predict_proba=lambda x: None)
    native, info = gc.unwrap(clf)
    assert native is model and info is clf.info
    res = gc.gradcam(clf, random_images(3), target_class=0)
    assert peaks_in_top_right(res.maps).all()
    assert gc.framework_of(model) == "pytorch"


def test_randomized_copy_reinitialises_every_weight() -> None:
    model = quadrant_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.random.get_rng_state()
    copy = gc.randomized_copy(model, seed=3)
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])  # the original is untouched
    changed = [k for k, v in copy.state_dict().items()
               if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert {"0.0.weight", "0.2.weight", "3.weight", "3.bias"} <= set(changed)
    again = gc.randomized_copy(model, seed=3)
    for key, value in copy.state_dict().items():
        assert torch.equal(value, again.state_dict()[key])  # seeded


# ---------------------------------------------------------------------- keras backend

@pytest.fixture(scope="module")
def keras_models():
    keras = pytest.importorskip("nbutils.keras_data").keras  # TensorFlow set up the course's way
    layers = keras.layers

    class KGate(layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.mask = quadrant_mask().astype(np.float32)[None, :, :, None]

        def call(self, x):
            return x * self.mask

    keras.utils.set_random_seed(0)

    def build(softmax: bool, uint8: bool):
        inp = keras.Input((SIZE, SIZE, 3), dtype="uint8" if uint8 else "float32")
        h = layers.Rescaling(1 / 255.0, name="rescale")(inp) if uint8 else inp
        h = layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(h)
        h = layers.Conv2D(8, 3, padding="same", name="c2")(h)
        h = layers.ReLU(name="relu2")(h)
        h = KGate(name="gate")(h)
        h = layers.GlobalAveragePooling2D(name="gap")(h)
        h = layers.Dense(2, kernel_initializer="ones", name="logits")(h)
        out = layers.Activation("softmax", name="probs")(h) if softmax else h
        return keras.Model(inp, out)

    logits_model = build(False, False)
    soft = build(True, False)
    soft.set_weights(logits_model.get_weights())
    dense_soft_inp = keras.Input((SIZE, SIZE, 3))
    h = layers.Conv2D(8, 3, padding="same", activation="relu")(dense_soft_inp)
    h = KGate()(h)
    h = layers.GlobalAveragePooling2D()(h)
    dense_soft = keras.Model(dense_soft_inp, layers.Dense(2, activation="softmax")(h))
    return {"logits": logits_model, "softmax": soft, "raw": build(True, True),
            "dense_softmax": dense_soft}


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_keras_quadrant_model_peaks_in_the_quadrant(keras_models, method: str) -> None:
    x = (random_images(6).astype(np.float32) / 255.0)
    res = gc.gradcam(keras_models["softmax"], x, target_class=0, method=method)
    from nbutils.gradcam import keras_backend as kb

    np.testing.assert_allclose(kb.predict_logits(keras_models["logits"], x),
                               keras_models["logits"](x).numpy(), rtol=1e-5, atol=1e-6)
    assert res.framework == "keras" and res.layer == "gate"
    assert res.maps.shape == (6, SIZE, SIZE) and 0 <= res.maps.min() <= res.maps.max() <= 1
    assert peaks_in_top_right(res.maps).all()
    assert res.maps[:, HALF:, :HALF].max() == 0
    np.testing.assert_allclose(res.probs.sum(axis=1), 1.0, rtol=1e-5)


def test_keras_explains_the_score_before_the_softmax(keras_models) -> None:
    x = random_images(4).astype(np.float32) / 255.0
    a = gc.gradcam(keras_models["softmax"], x, "relu2", target_class=1)
    b = gc.gradcam(keras_models["logits"], x, "relu2", target_class=1)
    np.testing.assert_allclose(a.raw, b.raw, rtol=1e-4, atol=1e-6)
    c = gc.gradcam(keras_models["dense_softmax"], x)
    nonempty = c.maps.max(axis=(1, 2)) > 0
    assert nonempty.sum() >= 3  # an all-empty result must fail, not pass vacuously
    assert peaks_in_top_right(c.maps[nonempty]).all()


def test_keras_raw_pixel_model_and_layers(keras_models) -> None:
    from nbutils.gradcam import keras_backend as kb

    model = keras_models["raw"]
    images = random_images(4)
    assert kb.expects_raw_pixels(model)
    prepared = kb.prepare_inputs(images, Info(), model)
    assert prepared.dtype == np.uint8 and prepared.shape == images.shape
    small = kb.prepare_inputs(random_images(2, size=8), Info(), model)
    assert small.shape == (2, SIZE, SIZE, 3)
    res = gc.gradcam(model, images, target_class=0, info=Info())
    assert peaks_in_top_right(res.maps).all()
    names = [c.name for c in gc.candidate_layers(model)]
    assert names[-1] == "gate" and "rescale" not in names
    normalised = kb.prepare_inputs(images, Info(), keras_models["logits"])
    np.testing.assert_allclose(normalised, (images / 255.0 - 0.5) / 0.25, atol=1e-5)
    with pytest.raises(KeyError, match="No layer named"):
        gc.gradcam(model, images, "nope")
    with pytest.raises(ValueError, match="not \\(N, h, w, C\\)"):
        gc.gradcam(model, images, "gap")


def test_keras_randomized_copy(keras_models) -> None:
    model = keras_models["softmax"]
    copy = gc.randomized_copy(model, seed=1)
    k0 = model.get_layer("c1").kernel.numpy()
    k1 = copy.get_layer("c1").kernel.numpy()
    assert k0.shape == k1.shape and not np.allclose(k0, k1)
    np.testing.assert_array_equal(copy.get_layer("logits").kernel.numpy(), 1.0)  # "ones" init
    again = gc.randomized_copy(model, seed=1)
    np.testing.assert_array_equal(again.get_layer("c1").kernel.numpy(), k1)


# ------------------------------------------------------------------ hugging face backend

@pytest.fixture(scope="module")
def hf_quadrant_model():
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_outputs import ImageClassifierOutput

    class TinyConfig(transformers.PretrainedConfig):
        model_type = "tiny-quadrant"

    class TinyQuadrantCNN(transformers.PreTrainedModel):
        config_class = TinyConfig
        main_input_name = "pixel_values"

        def __init__(self, config: TinyConfig) -> None:
            super().__init__(config)
            self.body = quadrant_cnn()[0]
            self.head = nn.Linear(8, 2)
            with torch.no_grad():
                self.head.weight[0].abs_()

        def forward(self, pixel_values: torch.Tensor) -> ImageClassifierOutput:
            feats = self.body(pixel_values).mean(dim=(2, 3))
            return ImageClassifierOutput(logits=self.head(feats))

    return TinyQuadrantCNN(TinyConfig()).eval()


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_hf_quadrant_model_peaks_in_the_quadrant(hf_quadrant_model, method: str) -> None:
    res = gc.gradcam(hf_quadrant_model, random_images(6), target_class=0, method=method,
                     info=Info())
    tta_info = Info()
    tta_info.extra = {"tta_flip": True}
    tta = gc.gradcam(hf_quadrant_model, random_images(6), info=tta_info)
    assert tta.extra["tta_flip"] and tta.maps.shape == (6, SIZE, SIZE)
    assert res.framework == "huggingface" and res.layer == "body"
    assert res.maps.shape == (6, SIZE, SIZE) and 0 <= res.maps.min() <= res.maps.max() <= 1
    assert peaks_in_top_right(res.maps).all()
    assert res.maps[:, HALF:, :HALF].max() == 0


def _tiny_vit(size: int = SIZE, patch: int = 4):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=size, patch_size=patch, hidden_size=16, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=32, num_labels=3)
    return ViTForImageClassification(cfg).eval()


def test_hf_vit_tokens_are_reshaped_to_the_patch_grid() -> None:
    pytest.importorskip("transformers")
    from nbutils.gradcam import hf_backend as hb

    tokens = torch.arange(1 + 6).float().view(1, 7, 1).repeat(1, 1, 2)  # CLS + 2x3 patches
    grid = hb.tokens_to_grid(tokens, (2, 3))
    assert grid.shape == (1, 2, 2, 3)
    np.testing.assert_array_equal(grid[0, 0].numpy(), [[1, 2, 3], [4, 5, 6]])  # row-major
    with pytest.raises(ValueError, match="cannot hold"):
        hb.tokens_to_grid(tokens, (3, 3))

    vit = _tiny_vit()
    assert hb.is_token_model(vit) and hb.patch_size(vit) == (4, 4)
    # Blank (zero) patches, zero position embeddings and zero norm biases make the
    # first block's input zero outside the top-right quadrant: only its patches can
    # light up a map of that layer, so a transposed or shifted grid would show.
    with torch.no_grad():
        vit.vit.embeddings.position_embeddings.zero_()
        vit.vit.embeddings.patch_embeddings.projection.bias.zero_()
        for m in vit.modules():
            if isinstance(m, nn.LayerNorm):
                m.bias.zero_()
    x = torch.zeros(4, 3, SIZE, SIZE)
    x[:, :, :HALF, HALF:] = torch.rand(4, 3, HALF, HALF) + 0.5
    norms = [c.name for c in gc.candidate_layers(vit, x)]
    assert len(norms) == 5 and norms[-1].endswith("layernorm")
    first = norms[0]
    assert first.endswith("0.layernorm_before")
    raws = [gc.gradcam(vit, x, first, target_class=c).raw for c in range(3)]
    for raw in raws:
        assert raw.shape == (4, 4, 4)
        outside = raw.copy()
        outside[:, :2, 2:] = 0
        assert outside.max() == 0
    assert max(raw[:, :2, 2:].max() for raw in raws) > 0
    # the default: the last block's attention-input norm, whose patch tokens get a gradient
    res = gc.gradcam(vit, x, target_class=0)
    assert res.layer == norms[2] and res.layer.endswith("1.layernorm_before")
    assert res.maps.shape == (4, SIZE, SIZE)
    _act, grad, _logits, _cls = hb.forward_backward(vit, x, res.layer, None)
    assert np.abs(grad).sum() > 0
    # the last block's output is never used at the patch positions: no gradient there
    for late in norms[3:]:
        _act, grad, _logits, _cls = hb.forward_backward(vit, x, late, None)
        assert np.abs(grad).sum() == 0


def test_hf_timm_wrapper_cnn_and_vit() -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("timm")
    images = random_images(3, size=32)
    info = Info(size=32)
    cnn = transformers.TimmWrapperForImageClassification(
        transformers.TimmWrapperConfig(architecture="test_resnet", num_labels=3)).eval()
    res = gc.gradcam(cnn, images, info=info)
    assert res.layer.startswith("timm_model.") and res.maps.shape == (3, 32, 32)
    assert res.raw.shape[1] * res.raw.shape[2] > 1
    vit = transformers.TimmWrapperForImageClassification(
        transformers.TimmWrapperConfig(architecture="test_vit", num_labels=3,
                                       model_args={"img_size": 32})).eval()
    res = gc.gradcam(vit, images, info=info, method="gradcam++")
    assert res.layer.endswith("norm1") and res.maps.shape == (3, 32, 32)
    assert 0 <= res.maps.min() <= res.maps.max() <= 1


def test_hf_randomized_copy_and_interpolation(hf_quadrant_model) -> None:
    from nbutils.gradcam import hf_backend as hb

    copy = gc.randomized_copy(hf_quadrant_model, seed=0)
    assert not torch.equal(copy.head.weight, hf_quadrant_model.head.weight)
    assert hb.interpolation_of(hf_quadrant_model) == "bilinear"
    hf_quadrant_model.config.pretrained_cfg = {"interpolation": "bicubic"}
    try:
        assert hb.interpolation_of(hf_quadrant_model) == "bicubic"
        x = hb.prepare(hf_quadrant_model, random_images(1, size=8), Info())
        assert x.shape == (1, 3, SIZE, SIZE)
    finally:
        del hf_quadrant_model.config.pretrained_cfg


# ------------------------------------------------------------------ checks on hand-made maps

def test_pointing_game_and_energy_on_hand_made_arrays() -> None:
    masks = np.zeros((3, 4, 4), bool)
    masks[:, :2, :2] = True  # the object is the top-left 2x2 block: area 1/4
    maps = np.zeros((3, 4, 4), np.float32)
    maps[0, 0, 0] = 1.0      # peak on the object, all energy inside
    maps[1, 3, 3] = 1.0      # peak off the object
    maps[1, 1, 1] = 0.5      # a third of the energy inside
    # maps[2] is empty: a miss, and its energy counts as spread evenly
    hits = ge.pointing_hits(maps, masks)
    np.testing.assert_array_equal(hits, [True, False, False])
    np.testing.assert_allclose(ge.energy_inside(maps, masks), [1.0, 1 / 3, 0.25])
    np.testing.assert_array_equal(ge.empty_maps(maps), [False, False, True])
    loc = ge.localisation(maps, masks)
    assert loc.pointing_game == pytest.approx(1 / 3)
    assert loc.energy == pytest.approx((1 + 1 / 3 + 0.25) / 3)
    assert loc.chance == pytest.approx(0.25) and loc.n == 3 and loc.n_empty == 1
    assert loc.to_dict()["n_images"] == 3
    # one pixel of tolerance turns a near miss into a hit
    near = np.zeros((1, 4, 4), np.float32)
    near[0, 2, 2] = 1.0
    assert not ge.pointing_hits(near, masks[:1])[0]
    assert ge.pointing_hits(near, masks[:1], tolerance=1)[0]
    with pytest.raises(ValueError, match="must both be"):
        ge.pointing_hits(maps, masks[:, :2])


def test_rank_correlation() -> None:
    a = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    np.testing.assert_allclose(ge.rank_correlation(a, a * 3 + 1), [1.0])
    np.testing.assert_allclose(ge.rank_correlation(a, -a), [-1.0])
    assert np.isnan(ge.rank_correlation(a, np.zeros_like(a)))[0]
    rng = np.random.default_rng(0)
    x, y = rng.random((2, 50, 8, 8))
    assert abs(ge.rank_correlation(x, y).mean()) < 0.05
    with pytest.raises(ValueError, match="same shape"):
        ge.rank_correlation(a, np.zeros((1, 3, 3)))


def test_randomization_result_summary() -> None:
    res = ge.RandomizationResult(rho=np.array([0.2, -0.4, np.nan]), maps_trained=np.zeros(1),
                                 maps_random=np.zeros(1))
    assert res.mean == pytest.approx(-0.1) and res.mean_abs == pytest.approx(0.3)
    assert res.n_constant == 1
    d = res.to_dict()
    assert d["rank_correlation_mean"] == pytest.approx(-0.1) and d["n_images"] == 3
    empty = ge.RandomizationResult(rho=np.array([np.nan]), maps_trained=np.zeros(1),
                                   maps_random=np.zeros(1))
    assert np.isnan(empty.mean) and empty.to_dict()["rank_correlation_mean"] is None


def test_deletion_curve_rewards_the_map_that_finds_the_evidence() -> None:
    n, size = 6, 8
    rng = np.random.default_rng(0)
    images = rng.integers(0, 100, (n, size, size, 3), dtype=np.uint8)
    images[:, :2, :2] = 255  # the evidence: a white 2x2 corner

    def predict(batch: np.ndarray) -> np.ndarray:
        white = (batch[:, :2, :2] == 255).all(axis=-1).mean(axis=(1, 2))
        return np.stack([white, 1 - white], axis=1)

    good = np.zeros((n, size, size), np.float32)
    good[:, :2, :2] = 1.0
    res = ge.deletion_curve(predict, images, good, np.zeros(n, int), steps=4, baseline="mean")
    np.testing.assert_allclose(res.fractions, [0, 0.25, 0.5, 0.75, 1.0])
    assert res.saliency[0] == pytest.approx(1.0) and res.saliency[1] == pytest.approx(0.0)
    assert res.random[1] > 0.3  # a random quarter rarely removes all four key pixels
    # saliency curve: 1, 0, 0, 0, 0 -> AUC = 0.125 (trapezoid)
    assert res.auc_saliency == pytest.approx(0.125)
    assert res.auc_random > res.auc_saliency and res.win_rate == 1.0
    assert res.to_dict()["n_images"] == n and res.auc_random_smooth is None
    smooth = ge.deletion_curve(predict, images, good, np.zeros(n, int), steps=4,
                               baseline="mean", smooth_grid=(2, 2))
    np.testing.assert_allclose(smooth.saliency, res.saliency)
    assert smooth.random_smooth.shape == (5,) and smooth.per_image_random_smooth.shape == (n, 5)
    assert smooth.auc_random_smooth > smooth.auc_saliency
    assert len(smooth.to_dict()["curve_random_smooth"]) == 5
    bad = 1.0 - good
    worse = ge.deletion_curve(predict, images, bad, np.zeros(n, int), steps=4, baseline="black")
    assert worse.auc_saliency > res.auc_random
    blur = ge.deletion_curve(predict, images, good, np.zeros(n, int), steps=2, baseline="blur")
    assert blur.saliency[0] == 1.0 and blur.saliency[-1] < 1.0
    with pytest.raises(ValueError, match="baseline"):
        ge.deletion_curve(predict, images, good, np.zeros(n, int), baseline="noise")
    with pytest.raises(ValueError, match="share N, H and W"):
        ge.deletion_curve(predict, images[:2], good, np.zeros(n, int))


# ------------------------------------------------------------- a CNN trained on shapes

@pytest.fixture(scope="module")
def shapes_cnn(tmp_path_factory: pytest.TempPathFactory):
    """A small CNN trained for a few seconds on ``shapes``, with plain torch code."""
    from nbutils.data import load

    data = load("shapes", image_size=32, max_train_per_class=60, max_test_per_class=15,
                data_dir=tmp_path_factory.mktemp("data"), cache=False, progress=False)
    mean = torch.tensor(data.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.std).view(1, 3, 1, 1)

    def prep(u8: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(np.array(u8)).permute(0, 3, 1, 2).float() / 255 - mean) / std

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is faster and reproducible
    torch.manual_seed(0)
    model = nn.Sequential(*block(3, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2),
                          *block(32, 64), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
                          nn.Linear(64, data.num_classes))
    x, y = prep(data.train.images), torch.from_numpy(data.train.labels)
    epochs, batch = 8, 32
    opt = torch.optim.AdamW(model.parameters(), 0.01, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.01,
                                                total_steps=epochs * -(-len(x) // batch))
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    torch.set_num_threads(threads)
    model.eval()
    info = types.SimpleNamespace(image_size=32, mean=data.mean.tolist(),
                                 std=data.std.tolist(), extra={})

    def predict_proba(images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        with torch.no_grad():
            return model(prep(images)).softmax(1).numpy()

    clf = types.SimpleNamespace(model=model, info=info, predict_proba=predict_proba)
    return clf, data


def test_trained_cnn_points_at_the_objects_far_above_chance(shapes_cnn) -> None:
    clf, data = shapes_cnn
    images, masks = np.asarray(data.test.images), np.asarray(data.test.masks)
    res = gc.gradcam(clf, images)
    loc = ge.localisation(res.maps, masks)
    assert loc.chance == pytest.approx(masks.mean(), rel=1e-6)
    print(loc.to_dict())
    assert loc.pointing_game >= 2 * loc.chance, loc.to_dict()
    assert loc.energy >= loc.chance + 0.05, loc.to_dict()


def test_randomization_check_on_the_trained_cnn(shapes_cnn) -> None:
    clf, data = shapes_cnn
    images = np.asarray(data.test.images[:30])
    res = ge.randomization_check(clf, images, seed=0)
    assert res.maps_trained.shape == res.maps_random.shape == (30, 32, 32)
    assert res.n_constant < 30
    assert res.mean < 0.5, res.to_dict()  # the maps depend on the learned weights
    same = ge.rank_correlation(res.maps_trained, res.maps_trained)
    np.testing.assert_allclose(same[np.isfinite(same)], 1.0)


def test_evaluate_model_and_record(shapes_cnn, tmp_path: Path) -> None:
    clf, data = shapes_cnn
    images = np.asarray(data.test.images[:24])
    report = ge.evaluate_model(clf, images, data.test.labels[:24], np.asarray(data.test.masks[:24]),
                               label="cnn", n_randomization=8, n_deletion=8, deletion_steps=4)
    d = report.to_dict()
    assert d["layer"] == report.layer and d["deletion"]["n_images"] == 8
    assert d["randomization"]["n_images"] == 8 and d["localisation"]["n_images"] == 24
    assert 0 <= d["accuracy_on_scored_images"] <= 1
    with pytest.raises(TypeError, match="predict_proba"):
        ge.evaluate_model(clf.model, images, data.test.labels[:24], data.test.masks[:24])
    path = runs.write_cam_record(tmp_path, "shapes", "smoke", {"cnn": d},
                             settings={"method": "gradcam"})
    assert path == tmp_path / "gradcam" / "shapes__smoke.json"
    back = runs.read_cam_record(path)
    assert back["models"]["cnn"]["localisation"] == d["localisation"]
    table = runs.format_summary(back["models"])
    assert "cnn" in table and f"{d['localisation']['pointing_game']:.3f}" in table
    assert not list((tmp_path / "gradcam").glob(".*tmp"))  # written atomically
    summary = runs.recent_records_summary(tmp_path)
    assert "shapes / smoke" in summary and "cnn" in summary
    assert runs.recent_records_summary(tmp_path, since=path.stat().st_mtime + 10) == ""
    assert runs.recent_records_summary(tmp_path / "nothing") == ""
    (tmp_path / "gradcam" / "broken.json").write_text("{}")
    assert "unreadable" in runs.recent_records_summary(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ValueError, match="not a gradcam/1 record"):
        runs.read_cam_record(tmp_path / "bad.json")


# ------------------------------------------------------------------ finding saved models

def _write_run(outputs: Path, notebook: str, framework: str, with_model: bool = True) -> None:
    from nbutils.inference import ClassifierInfo, write_classifier_info
    from nbutils.records import RunRecord, TestMetrics, write_record

    model_dir = outputs / "models" / f"{notebook}__shapes__smoke"
    artifacts = {}
    if with_model:
        write_classifier_info(model_dir, ClassifierInfo(framework, "m", ["a", "b"], 32,
                                                        [0.5] * 3, [0.2] * 3))
        artifacts["model"] = str(model_dir)
    rec = RunRecord(notebook=notebook, framework=framework, model="m", dataset="shapes",
                    profile="smoke", seed=0, config={}, class_names=["a", "b"], num_params=1,
                    train_seconds=1.0, history=[], peak_memory_mb={}, library_versions={},
                    device={}, test=TestMetrics(0.5, 0.5, 0.5, 0.5, [[1, 1], [1, 1]]),
                    artifacts=artifacts)
    write_record(rec, outputs)


def test_find_trained_models_lists_found_and_missing(tmp_path: Path) -> None:
    _write_run(tmp_path, "02_pytorch_alexnet", "pytorch")
    _write_run(tmp_path, "04_hf_transfer_learning", "huggingface", with_model=False)
    _write_run(tmp_path, "05_other", "numpy")
    found = runs.find_trained_models(tmp_path, "shapes", "smoke")
    assert [m.label for m in found.models] == ["PyTorch"]
    assert found.models[0].model_dir == tmp_path / "models" / "02_pytorch_alexnet__shapes__smoke"
    assert len(found.missing) == 1 and "03" in found.missing[0]
    assert any("names no saved model" in p for p in found.problems)
    assert found.command == "python -m nbutils.run --profile smoke --dataset shapes --only 03,04"
    text = found.summary()
    assert "missing" in text and found.command in text
    none = runs.find_trained_models(tmp_path / "empty", "shapes", "smoke")
    assert none.models == [] and "none" in none.summary()
    assert none.command.endswith("--only 02,03,04")
    loaded = runs.load_models(runs.ModelSet("shapes", "smoke"))
    assert loaded == {}


# ----------------------------------------------------------------------------- plots

def test_overlay_and_figures() -> None:
    images = random_images(3)
    maps = np.random.default_rng(0).random((3, SIZE, SIZE)).astype(np.float32)
    over = gp.overlay(images, maps)
    assert over.shape == (3, SIZE, SIZE, 3) and 0 <= over.min() <= over.max() <= 1
    with pytest.raises(ValueError, match="must match"):
        gp.overlay(images, maps[:, :4, :4])
    masks = np.stack([quadrant_mask()] * 3)
    names = ["A", "B"]
    fig = gp.plot_cam_grid(images, {n: maps for n in names}, [0, 1, 0],
                           {n: np.array([0, 0, 0]) for n in names}, ["x", "y"],
                           probs={n: np.full((3, 2), 0.5) for n in names}, masks=masks,
                           title="t")
    assert len(fig.axes) == 3 * 3
    fig = gp.plot_layer_effect(images[:2], {"l1": maps[:2], "l2": maps[:2]}, masks[:2], "t")
    assert len(fig.axes) == 4
    fig = gp.plot_correct_vs_wrong(images, maps, maps, [0, 1, 0], [0, 0, 0], [1, 1, 1],
                                   ["x", "y"], masks, "t")
    assert len(fig.axes) == 9
    fig = gp.plot_localisation({"A": {"pointing_game": 0.6, "energy": 0.3, "chance": 0.15}}, "t")
    assert len(fig.axes) == 2
    rnd = ge.RandomizationResult(rho=np.array([0.1, 0.2, np.nan]), maps_trained=maps,
                                 maps_random=maps)
    fig = gp.plot_randomization(images, {"A": rnd, "B": rnd}, n=2)
    assert len(fig.axes) == 2 * 5
    dele = ge.DeletionResult(np.linspace(0, 1, 3), np.array([1, 0.5, 0]),
                             np.array([1, 0.8, 0]), np.zeros((1, 3)), np.zeros((1, 3)),
                             np.array([1, 0.9, 0]), np.zeros((1, 3)))
    fig = gp.plot_deletion({"A": dele}, "t")
    assert len(fig.axes) == 1


# ---------------------------------------------------------------------------- explorer

def test_explorer_static_and_batch_detection(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv(gx.STATIC_ENV, "1")
    assert gx.batch_execution()
    monkeypatch.setenv(gx.STATIC_ENV, "0")
    assert not gx.batch_execution()
    monkeypatch.delenv(gx.STATIC_ENV)
    assert gx.batch_execution()  # this process is pytest
    cmd, ppid = gx._cmdline(os.getpid())
    assert "python" in cmd and ppid == os.getppid()
    assert not gx.widgets_available()  # no Jupyter kernel here
    model = quadrant_cnn()
    images = random_images(3)
    labels = np.array([0, 1, 0])
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda fig: shown.append(fig))
    out = gx.explorer({"m": model}, images, labels, ["a", "b"],
                      masks=np.stack([quadrant_mask()] * 3), n_static=2)
    assert out is None and len(shown) == 2
    assert "Static view" in capsys.readouterr().out


def test_explorer_widgets(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ipywidgets")
    monkeypatch.setattr(gx, "widgets_available", lambda: True)
    monkeypatch.setattr(gx, "batch_execution", lambda: False)
    monkeypatch.setattr("IPython.display.display", lambda *a, **k: None)
    monkeypatch.setattr("matplotlib.pyplot.show", lambda *a, **k: None)
    drawn = []
    real = gc.gradcam

    def spy(model, images, layer, target, method="gradcam"):
        drawn.append((model, int(images[0, 0, 0, 0]), layer, target, method))
        return real(model, images, layer, target, method=method)

    monkeypatch.setattr(gc, "gradcam", spy)
    models = {"m1": quadrant_cnn(), "m2": quadrant_cnn(3)}
    ui = gx.explorer(models, random_images(3), np.array([0, 1, 0]), ["a", "b", "c"],
                     masks=np.stack([quadrant_mask()] * 3))
    image_w, model_w = ui.children[0].children
    layer_w, class_w = ui.children[1].children
    assert list(layer_w.options) == ["0.1", "0"] and layer_w.value == "0"
    images = random_images(3)
    assert drawn and drawn[-1][0] is models["m1"]  # the first panel is drawn at once
    model_w.value = "m2"
    assert drawn[-1][0] is models["m2"] and drawn[-1][2] == "0"
    class_w.value = 1
    assert drawn[-1][3] == 1
    image_w.value = 2
    assert drawn[-1][1] == int(images[2, 0, 0, 0])
    ui.children[2].value = "gradcam++"
    assert drawn[-1][4] == "gradcam++" and drawn[-1][0] is models["m2"]
    assert layer_w.value == "0"


def test_the_shortcut_lab_trains_scores_and_locates(tmp_path: Path) -> None:
    from nbutils.data import load
    from nbutils.data.shortcut import marker_mask, stamp_marker, with_shortcut
    from nbutils.gradcam import shortcut_lab

    shapes = load("shapes:6", image_size=32, seed=0, data_dir=tmp_path, progress=False)
    pair = shortcut_lab.train_pair(shapes, with_shortcut(shapes), epochs=1, seed=0)
    assert [m.name for m in pair] == ["clean", "marked"]
    marked_test = stamp_marker(shapes.test.images, shapes.test.labels)
    for m in pair:
        shortcut_lab.score(m, shapes.test, marked_test, shapes.test.masks,
                           marker_mask(32, len(shapes.test)))
        assert set(m.scores) == {"clean test acc", "marked test acc", "maps on object",
                                 "maps on marker"}
        assert all(0.0 <= v <= 1.0 for v in m.scores.values()) and 0.0 <= m.val_acc <= 1.0
        assert m.maps.shape == (len(shapes.test), 32, 32)
