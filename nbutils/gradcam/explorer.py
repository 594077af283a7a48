"""An interactive Grad-CAM explorer: pick an image, a model, a layer and a class.

In JupyterLab (with ipywidgets) :func:`explorer` returns live controls. When the
notebook runs in batch (papermill, ``nbconvert --execute``, nbval, the course
runner) or ipywidgets is missing, it draws the same panels as static figures
for a few images instead, so an executed notebook still shows something useful.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from .plots import overlay

__all__ = ["explorer", "widgets_available", "batch_execution", "explain_panel"]

STATIC_ENV = "NBUTILS_STATIC"
_BATCH_MARKERS = ("papermill", "nbconvert", "nbclient", "nbval", "pytest", "nbutils.run",
                  "nbutils-run")


def _cmdline(pid: int) -> tuple[str, int | None]:
    """(command line, parent pid) of a process, from /proc (Linux) or psutil."""
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            status = (proc / "status").read_text()
            ppid = next((int(line.split()[1]) for line in status.splitlines()
                         if line.startswith("PPid:")), None)
            return cmd, ppid
        except (OSError, ValueError):
            return "", None
    try:  # macOS, Windows
        import psutil

        p = psutil.Process(pid)
        return " ".join(p.cmdline()), p.ppid()
    except Exception:  # noqa: BLE001 - no way to tell: assume interactive
        return "", None


def batch_execution(max_depth: int = 4) -> bool:
    """Whether this kernel was started by a batch executor rather than a notebook UI.

    ``NBUTILS_STATIC=1`` forces static figures, ``NBUTILS_STATIC=0`` forces widgets;
    otherwise this process and its parents are checked for papermill, nbconvert,
    nbclient, pytest/nbval and the course runner.
    """
    env = os.environ.get(STATIC_ENV, "").strip().lower()
    if env in ("1", "true", "yes"):
        return True
    if env in ("0", "false", "no"):
        return False
    pid: int | None = os.getpid()
    for _ in range(max_depth + 1):
        if not pid or pid <= 1:
            break
        cmd, pid = _cmdline(pid)
        if any(marker in cmd for marker in _BATCH_MARKERS):
            return True
    return False


def widgets_available() -> bool:
    """ipywidgets can be imported and we run inside a Jupyter kernel."""
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def explain_panel(models: Mapping[str, Any], image: np.ndarray, label: int,
                  class_names: Sequence[str], mask: np.ndarray | None = None,
                  layers: Mapping[str, str | None] | None = None,
                  target_class: int | None = None, method: str = "gradcam") -> plt.Figure:
    """One image explained by every model: the image, then one overlay per model."""
    from . import gradcam

    names = list(models)
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(2.4 * (len(names) + 1), 2.7),
                             squeeze=False)
    axes = axes[0]
    axes[0].imshow(image)
    axes[0].set_title(f"true: {class_names[label]}", fontsize=9)
    for ax, name in zip(axes[1:], names, strict=True):
        layer = (layers or {}).get(name)
        res = gradcam(models[name], image[None], layer, target_class, method=method)
        pred = int(res.predictions[0])
        cls = int(res.class_idx[0])
        ax.imshow(overlay(image, res.maps[0]))
        if mask is not None and mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=0.8)
        ax.set_title(f"{name}\npred {class_names[pred]} ({res.probs[0, pred]:.0%})\n"
                     f"map for '{class_names[cls]}' @ {res.layer}", fontsize=7,
                     color="green" if pred == label else "red")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def _static(models: Mapping[str, Any], images: np.ndarray, labels: np.ndarray,
            class_names: Sequence[str], masks: np.ndarray | None, method: str,
            n_static: int, layers: Mapping[str, str | None] | None) -> None:
    from IPython.display import display

    print("Static view (batch run or no ipywidgets): open the notebook in JupyterLab for the "
          "interactive explorer.")
    for i in range(min(n_static, len(images))):
        fig = explain_panel(models, images[i], int(labels[i]), class_names,
                            None if masks is None else masks[i], layers=layers,
                            method=method)
        display(fig)
        plt.close(fig)


def explorer(models: Mapping[str, Any], images: np.ndarray, labels: np.ndarray,
             class_names: Sequence[str], masks: np.ndarray | None = None,
             layer_choices: Mapping[str, Sequence[str]] | None = None,
             layers: Mapping[str, str | None] | None = None,
             method: str = "gradcam", interactive: bool = True, n_static: int = 2) -> Any:
    """Pick an image, a model, a layer, a class and a method; see the map.

    Args:
        models: label -> reloaded classifier (or native model with prepared images).
        images, labels, masks: the images to browse (uint8 NHWC), their classes and masks.
        class_names: names of the classes.
        layer_choices: label -> layer names offered (default: each model's candidates).
        layers: label -> the layer shown first (default: each model's default layer).
        method: the initial method.
        interactive: ``False`` always draws static figures.
        n_static: images drawn in the static fallback.

    Returns:
        The ipywidgets container, or ``None`` when static figures were drawn.
    """
    if not (interactive and widgets_available() and not batch_execution()):
        _static(models, images, labels, class_names, masks, method, n_static, layers)
        return None

    import ipywidgets as widgets
    from IPython.display import display

    from . import candidate_layers, default_target_layer, gradcam

    names = list(models)
    choices: dict[str, list[str]] = {}
    first: dict[str, str] = {}
    for name in names:
        first[name] = (layers or {}).get(name) or default_target_layer(models[name], images[:1])
        if layer_choices and name in layer_choices:
            choices[name] = list(layer_choices[name])
        else:
            choices[name] = [c.name for c in candidate_layers(models[name], images[:1])]
        if first[name] not in choices[name]:
            choices[name].append(first[name])
    image_w = widgets.IntSlider(0, 0, len(images) - 1, description="image")
    model_w = widgets.Dropdown(options=names, description="model")
    layer_w = widgets.Dropdown(options=choices[names[0]], value=first[names[0]],
                               description="layer")
    classes = [("predicted", -1)] + [(c, i) for i, c in enumerate(class_names)]
    class_w = widgets.Dropdown(options=classes, value=-1, description="class")
    method_w = widgets.ToggleButtons(options=["gradcam", "gradcam++"], value=method,
                                     description="method")
    out = widgets.Output()

    def on_model(change: Any) -> None:
        layer_w.options = choices[change["new"]]
        layer_w.value = first[change["new"]]

    def draw(_change: Any = None) -> None:
        i = image_w.value
        name = model_w.value
        target = None if class_w.value < 0 else class_w.value
        res = gradcam(models[name], images[i:i + 1], layer_w.value, target, method=method_w.value)
        pred = int(res.predictions[0])
        with out:
            out.clear_output(wait=True)
            fig, axes = plt.subplots(1, 2, figsize=(6, 3.2))
            axes[0].imshow(images[i])
            axes[0].set_title(f"#{i} true: {class_names[labels[i]]}", fontsize=9)
            axes[1].imshow(overlay(images[i], res.maps[0]))
            if masks is not None and masks[i].any():
                axes[1].contour(masks[i].astype(float), levels=[0.5], colors="white",
                                linewidths=0.8)
            axes[1].set_title(f"pred {class_names[pred]} ({res.probs[0, pred]:.0%}); map for "
                              f"'{class_names[int(res.class_idx[0])]}'", fontsize=8,
                              color="green" if pred == labels[i] else "red")
            for ax in axes:
                ax.set_xticks([])
                ax.set_yticks([])
            fig.tight_layout()
            plt.show()

    model_w.observe(on_model, names="value")
    for w in (image_w, model_w, layer_w, class_w, method_w):
        w.observe(draw, names="value")
    ui = widgets.VBox([widgets.HBox([image_w, model_w]), widgets.HBox([layer_w, class_w]),
                       method_w, out])
    display(ui)
    draw()
    return ui
