"""A Gradio web demo for any trained course model.

``python -m nbutils.demo MODEL_DIR [--port 7860] [--share]`` (or ``make demo
MODEL=...``) opens a page where you upload a photo, take one with the webcam or pick
an example (test images of the model's own dataset and a few bundled photos), and see
the top-5 classes with their probabilities and the Grad-CAM overlay of the top class.
The page names the model, its framework and its test accuracy from the run record.
It listens on this computer only (127.0.0.1) unless ``--host`` says otherwise;
``--share`` asks Gradio for a temporary public link (that needs the internet).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .inference import run_record_of
from .paths import atomic_write, resolve_path
from .predict import Predictor

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the page

__all__ = ["example_images", "build_app", "classify_fn", "launch", "main"]

CAM_DISPLAY = 224  # the overlay is enlarged (nearest neighbour) to this side for viewing


def example_images(predictor: Predictor, folder: str | Path, per_class: int = 1,
                   max_classes: int = 10) -> list[Path]:
    """Example files for the page: test images of the model's dataset, then sample photos.

    The dataset's images are written once as PNG into ``folder``; when the dataset
    cannot be loaded (moved, or never downloaded here), only the bundled photos are used.
    """
    from .runs import load_run_data
    from .samples import write_sample_photos

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    source = predictor.info.extra.get("source_model") or predictor.model_dir
    record = run_record_of(source)
    try:
        test = load_run_data(record).test if record is not None else None
    except Exception:  # noqa: BLE001 - no dataset here: the sample photos still work
        test = None
    if test is not None:
        for cls in range(min(max_classes, len(predictor.info.class_names))):
            for i in np.flatnonzero(test.labels == cls)[:per_class]:
                path = out / f"test_{predictor.info.class_names[cls]}_{i}.png"
                if not path.is_file():
                    with atomic_write(path, "wb") as handle:
                        Image.fromarray(test.images[i]).save(handle, format="PNG")
                files.append(path)
    return files + write_sample_photos(out)


def classify_fn(predictor: Predictor, top_k: int = 5) -> Any:
    """The page's function: an image -> ({class: probability}, Grad-CAM overlay or None)."""

    def classify(image: Image.Image | None) -> tuple[dict[str, float], np.ndarray | None]:
        if image is None:
            return {}, None
        pred = predictor.predict_images([image.convert("RGB")], top_k=top_k)[0]
        cam = None
        if predictor.explains:
            cam = predictor.cam_overlays([image.convert("RGB")])[1][0]
            cam = np.asarray(Image.fromarray(cam).resize((CAM_DISPLAY, CAM_DISPLAY),
                                                         Image.Resampling.NEAREST))
        return dict(pred.top), cam

    return classify


def _header(predictor: Predictor) -> str:
    c = predictor.card
    acc = ("no run record found, so no test accuracy" if c["test_accuracy"] is None else
           f"test accuracy **{c['test_accuracy']:.1%}** on `{c['dataset']}` ({c['profile']} profile)")
    return (f"## What does the model see?\n**{c['model']}** ({c['framework']}), "
            f"{c['classes']} classes: {', '.join(predictor.info.class_names[:12])}"
            f"{' ...' if c['classes'] > 12 else ''}; {acc}.\n\n"
            + predictor.describe().split("\n", 1)[1])


def build_app(predictor: Predictor, examples: list[Path] | None = None) -> Any:
    """The Gradio ``Blocks`` page for ``predictor`` (its API endpoint is ``/classify``)."""
    import gradio as gr

    classify = classify_fn(predictor)
    with gr.Blocks(title=f"{predictor.info.model} demo") as app:
        gr.Markdown(_header(predictor))
        with gr.Row():
            image = gr.Image(type="pil", sources=["upload", "webcam", "clipboard"],
                             label="Your photo")
            with gr.Column():
                label = gr.Label(num_top_classes=5, label="Top 5")
                cam = gr.Image(label="Grad-CAM of the top class", visible=predictor.explains,
                               interactive=False)
        button = gr.Button("Classify", variant="primary")
        button.click(classify, inputs=image, outputs=[label, cam], api_name="classify")
        image.change(classify, inputs=image, outputs=[label, cam], api_name=False)
        if examples:
            gr.Examples(examples=[[str(p)] for p in examples], inputs=image,
                        label="Examples: test images of its dataset, then photos it never saw")
        gr.Markdown("A model trained on 10 classes always answers with one of them: a photo "
                    "of something else still gets a confident-looking top class.")
    return app


def launch(model_dir: str | Path, port: int = 7860, share: bool = False,
           host: str = "127.0.0.1", block: bool = True, device: str = "cpu") -> Any:
    """Build and start the demo; returns the app (``block=False`` leaves it running)."""
    predictor = Predictor(model_dir, device=device)
    examples = example_images(predictor, resolve_path("outputs") / "demo_examples"
                              / predictor.model_dir.name)
    app = build_app(predictor, examples)
    app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
               quiet=not block, allowed_paths=[str(examples[0].parent)] if examples else None)
    return app


def main(argv: list[str] | None = None) -> int:
    """``python -m nbutils.demo MODEL_DIR [--port P] [--share] [--host H]``."""
    parser = argparse.ArgumentParser(prog="python -m nbutils.demo",
                                     description="A web page that classifies your photos with "
                                                 "a trained course model.")
    parser.add_argument("model_dir", help="a model folder (outputs/models/<run id>) or an "
                                          "ONNX export of one")
    parser.add_argument("--port", type=int, default=7860, help="local port (default 7860)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: this computer only)")
    parser.add_argument("--share", action="store_true",
                        help="also ask Gradio for a temporary public link (needs the internet)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    try:
        launch(Path(args.model_dir).expanduser().absolute(), port=args.port, share=args.share, host=args.host,
               device=args.device)
    except (FileNotFoundError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
