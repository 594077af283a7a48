"""Classify your own photos with any trained course model (or its ONNX export).

    from nbutils.predict import Predictor
    predictor = Predictor("outputs/models/<run id>")
    for p in predictor.predict(["photo.jpg", "folder/", "https://example.org/cat.png"]):
        print(p.source, p.top[:3] if p.ok else p.error)

or ``python -m nbutils.predict MODEL_DIR IMAGE_OR_FOLDER_OR_URL... [--top-k 5]
[--json OUT.json] [--gradcam OUT.png] [--fit squash|crop]``.

Files of any common format and size are read (EXIF orientation honoured;
grayscale, palette, RGBA, CMYK and 16-bit images converted to RGB); an unreadable
file gets its own error and the others are still classified. Each image is then
prepared as the training images were: fitted to the square the data layer gave the
model (``squash`` by default, as the data layer did; ``crop`` keeps the aspect ratio
by cutting a centred square) and handed to the model, which applies its own resize
and standardisation.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .data.sources import MAX_DECODED_PIXELS, to_rgb
from .frameworks.registry import get_framework
from .images import FIT_POLICIES, fit_image
from .inference import load_classifier, run_record_of, training_size
from .paths import atomic_write_json, resolve_path

__all__ = ["ImageInputError", "Prediction", "Predictor", "read_image", "expand_sources",
           "model_card", "main"]

MAX_DOWNLOAD_BYTES = 50 * 2 ** 20
IMAGE_SUFFIXES = frozenset(ext for ext, fmt in Image.registered_extensions().items()
                           if fmt in Image.OPEN)


class ImageInputError(ValueError):
    """One input could not be read as an image (the message says why and what to do)."""


@dataclass
class Prediction:
    """The model's answer for one input, or why there is none (``error``)."""

    source: str
    top: list[tuple[str, float]] = field(default_factory=list)
    original_size: tuple[int, int] | None = None  # width, height as read
    error: str | None = None
    probs: np.ndarray | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """Whether the input was classified."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (probabilities of the top classes only)."""
        return {"source": self.source, "ok": self.ok, "error": self.error,
                "original_size": list(self.original_size) if self.original_size else None,
                "top": [{"class": name, "probability": round(float(p), 6)}
                        for name, p in self.top]}


def _download(url: str, timeout: float = 15.0) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "nbutils-predict"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            data = response.read(MAX_DOWNLOAD_BYTES + 1)
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ImageInputError(f"could not download it ({reason}); check the address and the "
                              "network connection, or download the file and pass its path"
                              ) from exc
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise ImageInputError(f"the download is larger than {MAX_DOWNLOAD_BYTES >> 20} MiB")
    return data


def read_image(source: str | Path | bytes) -> Image.Image:
    """An RGB Pillow image from a path, an ``http(s)`` URL or encoded bytes.

    Raises:
        ImageInputError: missing file, failed download, or not a readable image.
    """
    if isinstance(source, bytes):
        raw: Any = io.BytesIO(source)
    elif str(source).startswith(("http://", "https://")):
        raw = io.BytesIO(_download(str(source)))
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise ImageInputError("no such file" if not path.exists() else "not a file")
        raw = path
    try:
        with Image.open(raw) as img:
            if img.size[0] * img.size[1] > MAX_DECODED_PIXELS:
                raise ImageInputError(f"{img.size[0]}x{img.size[1]} pixels is more than the "
                                      f"{MAX_DECODED_PIXELS / 1e6:.0f} megapixels read per image")
            img.load()
            return to_rgb(ImageOps.exif_transpose(img))
    except ImageInputError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageInputError(f"not a readable image ({type(exc).__name__}: {exc})") from exc


def expand_sources(items: list[str]) -> list[str]:
    """Inputs with every folder replaced by its image files (sorted, not recursive)."""
    out: list[str] = []
    for item in items:
        path = Path(item).expanduser()
        if not item.startswith(("http://", "https://")) and path.is_dir():
            out.extend(str(p) for p in sorted(path.iterdir())
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(item)
    return out


def model_card(model_dir: str | Path, info: Any) -> dict[str, Any]:
    """What to tell a person about a model: name, framework, classes, test accuracy."""
    source = info.extra.get("source_model") if info.framework == "onnx" else None
    record = run_record_of(source or model_dir)
    fw = get_framework(info.framework).label
    if info.framework == "onnx":
        fw = f"{get_framework(info.extra.get('exported_from', 'onnx')).label} model, " \
             f"run by ONNX Runtime" + (" (int8)" if info.extra.get("quantized") else "")
    return {"model": info.model, "framework": fw, "classes": len(info.class_names),
            "test_accuracy": None if record is None else float(record.test.accuracy),
            "dataset": None if record is None else record.dataset,
            "profile": None if record is None else record.profile}


class Predictor:
    """A loaded model that classifies photos the way it was trained.

    Args:
        model_dir: a model folder from notebook 02, 03 or 04, or an ONNX export of one.
        device: ``cpu`` or ``cuda`` (ONNX exports run on the CPU).
        fit: ``squash`` (default: what the data layer did to the training images) or
            ``crop`` (centre square; keeps the aspect ratio).
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", fit: str = "squash") -> None:
        if fit not in FIT_POLICIES:
            raise ValueError(f"fit must be one of {FIT_POLICIES}, got {fit!r}")
        self.model_dir = resolve_path(model_dir)
        self.classifier = load_classifier(self.model_dir, device=device)
        self.info = self.classifier.info
        self.fit = fit
        self.size = training_size(self.info, self.model_dir)
        self.card = model_card(self.model_dir, self.info)

    def describe(self) -> str:
        """One paragraph: the model, and how an image of any shape reaches it."""
        c = self.card
        acc = ("" if c["test_accuracy"] is None
               else f"; test accuracy {c['test_accuracy']:.1%} on {c['dataset']} ({c['profile']})")
        how = ("squashed to a square (the aspect ratio changes, as it did for the training "
               "images)" if self.fit == "squash" else
               "centre-cropped to a square (the borders of the longer side are cut off)")
        then = ("" if int(self.info.image_size) == self.size else
                f", then resized to {self.info.image_size}x{self.info.image_size} px by the model's "
                "own preprocessing")
        return (f"Model: {c['model']} ({c['framework']}), {c['classes']} classes{acc}.\n"
                f"Each image is {how} of {self.size}x{self.size} px{then}.")

    def prepare(self, images: list[Image.Image | np.ndarray]) -> np.ndarray:
        """uint8 (N, S, S, 3): each image fitted to the training square."""
        if not images:
            return np.zeros((0, self.size, self.size, 3), np.uint8)
        return np.stack([fit_image(img, self.size, self.fit) for img in images])

    def predict_images(self, images: list[Image.Image | np.ndarray], top_k: int = 5,
                       names: list[str] | None = None) -> list[Prediction]:
        """Predictions for images already in memory (RGB Pillow images or uint8 arrays)."""
        probs = self.classifier.predict_proba(self.prepare(images)) if images else []
        names = names or [f"image {i}" for i in range(len(images))]
        k = max(1, min(int(top_k), len(self.info.class_names)))
        out = []
        for name, img, p in zip(names, images, probs, strict=True):
            order = np.argsort(-p)[:k]
            size = img.size if isinstance(img, Image.Image) else (img.shape[1], img.shape[0])
            out.append(Prediction(name, [(self.info.class_names[i], float(p[i])) for i in order],
                                  original_size=tuple(size), probs=np.asarray(p)))
        return out

    def predict(self, sources: list[str], top_k: int = 5) -> list[Prediction]:
        """Read, prepare and classify files, folders and URLs; one result per input file."""
        results: dict[str, Prediction] = {}
        loaded: list[tuple[str, Image.Image]] = []
        for src in expand_sources([str(s) for s in sources]):
            try:
                loaded.append((src, read_image(src)))
            except ImageInputError as exc:
                results[src] = Prediction(src, error=str(exc))
        for pred in self.predict_images([img for _, img in loaded], top_k,
                                        names=[src for src, _ in loaded]):
            results[pred.source] = pred
        return [results[s] for s in expand_sources([str(s) for s in sources]) if s in results]

    @property
    def explains(self) -> bool:
        """Whether Grad-CAM is available (it needs the framework's model, not an export)."""
        return self.info.framework != "onnx"

    def cam_overlays(self, images: list[Image.Image | np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``(fitted images, Grad-CAM overlays)`` for the predicted class, both uint8."""
        if not self.explains:
            raise ValueError("Grad-CAM needs the framework's model (gradients); pass the model "
                             f"folder this export came from: {self.info.extra.get('source_model')}")
        from .gradcam import gradcam
        from .gradcam.plots import overlay

        fitted = self.prepare(images)
        maps = gradcam(self.classifier, fitted).maps
        return fitted, (overlay(fitted, maps) * 255).round().astype(np.uint8)

    def gradcam_figure(self, predictions: list[Prediction], images: list[Image.Image],
                       path: str | Path) -> Path:
        """Save a figure of each image beside its Grad-CAM overlay for the top class."""
        import matplotlib.pyplot as plt

        from .plots import save_figure

        fitted, shown = self.cam_overlays(images)
        fig, axes = plt.subplots(len(images), 2, figsize=(5, 2.6 * len(images)), squeeze=False)
        for row, pred, img, cam in zip(axes, predictions, fitted, shown, strict=True):
            name, prob = pred.top[0]
            row[0].imshow(img)
            row[0].set_title(Path(pred.source).name[:28], fontsize=9)
            row[1].imshow(cam)
            row[1].set_title(f"Grad-CAM: {name} ({prob:.0%})", fontsize=9)
            for ax in row:
                ax.axis("off")
        fig.tight_layout()
        target = save_figure(fig, resolve_path(path))
        plt.close(fig)
        return target


def _print_predictions(predictions: list[Prediction]) -> None:
    for pred in predictions:
        if not pred.ok:
            print(f"\n{pred.source}: could not classify it: {pred.error}")
            continue
        w, h = pred.original_size or (0, 0)
        print(f"\n{pred.source} ({w}x{h})")
        for rank, (name, prob) in enumerate(pred.top, 1):
            print(f"  {rank}. {name:<16} {prob:6.1%}  {'#' * round(prob * 30)}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nbutils.predict",
        description="Classify image files, folders of images or URLs with a trained course "
                    "model (outputs/models/<run id>) or its ONNX export.")
    parser.add_argument("model_dir", help="a model folder, or an ONNX export folder")
    parser.add_argument("inputs", nargs="+", help="image files, folders or http(s) URLs")
    parser.add_argument("--top-k", type=int, default=5, help="classes to show per image")
    parser.add_argument("--fit", choices=FIT_POLICIES, default="squash",
                        help="how a non-square photo becomes the model's square: squash "
                             "(default, as the training images were) or crop (centre square)")
    parser.add_argument("--json", metavar="OUT.json",
                        help="also write the predictions as JSON ('-' prints them instead)")
    parser.add_argument("--gradcam", metavar="OUT.png",
                        help="also save each image beside its Grad-CAM overlay")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; 0 when every input was classified, 2 when some were not."""
    args = _parser().parse_args(argv)
    for name in ("model_dir", "json", "gradcam"):  # paths typed on a command line: from here
        value = getattr(args, name)
        if value and value != "-":
            setattr(args, name, str(Path(value).expanduser().absolute()))
    if args.top_k < 1:
        print("error: --top-k must be at least 1", file=sys.stderr)
        return 1
    try:
        predictor = Predictor(args.model_dir, device=args.device, fit=args.fit)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    predictions = predictor.predict(args.inputs, top_k=args.top_k)
    if args.json == "-":
        print(json.dumps({"model": predictor.card, "fit": args.fit,
                          "predictions": [p.to_dict() for p in predictions]}, indent=2))
    else:
        print(predictor.describe())
        _print_predictions(predictions)
    if args.json and args.json != "-":
        atomic_write_json(resolve_path(args.json), {
            "model": predictor.card, "fit": args.fit,
            "predictions": [p.to_dict() for p in predictions]})
    good = [p for p in predictions if p.ok]
    if args.gradcam and good:
        try:
            out = predictor.gradcam_figure(good, [read_image(p.source) for p in good], args.gradcam)
            print(f"\nGrad-CAM overlays: {out}", file=sys.stderr if args.json == "-" else sys.stdout)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0 if len(good) == len(predictions) and predictions else 2


if __name__ == "__main__":
    sys.exit(main())
