"""What a pretrained body already knows: image embeddings, a 2-D map and a k-NN score.

The embedding of an image is the input of the model's classification head (for a CNN,
the globally pooled features of the last block). Notebook 04 maps the frozen
checkpoint's embeddings of the validation images to two dimensions with PCA, coloured
by class, and scores how well the classes separate with a leave-one-out k-nearest-
neighbour vote, a number the map alone cannot give.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["embed_images", "pca_2d", "knn_accuracy", "plot_embedding_map"]


def embed_images(model: Any, processor: Any, images: np.ndarray, batch_size: int = 64
                 ) -> np.ndarray:
    """(N, D) embeddings of uint8 (N, H, W, 3) images: the input of the model's head."""
    from .hf_train import _model_device, head_module, pixel_batches

    captured: list[torch.Tensor] = []

    def keep(_module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        captured.append(inputs[0].detach().float().flatten(1).cpu())

    handle = head_module(model).register_forward_pre_hook(keep)
    model.eval()
    try:
        with torch.inference_mode():
            for pixels in pixel_batches(processor, images, batch_size, _model_device(model)):
                model(pixel_values=pixels)
    finally:
        handle.remove()
    return torch.cat(captured).numpy() if captured else np.zeros((0, 0), np.float32)


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, float]:
    """The first two principal components of ``x`` (N, D) and the share of the variance
    they explain."""
    centred = np.asarray(x, np.float64) - np.mean(x, axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    variance = s ** 2
    share = float(variance[:2].sum() / variance.sum()) if variance.sum() > 0 else 0.0
    return centred @ vt[:2].T, share


def knn_accuracy(x: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out accuracy of a k-nearest-neighbour vote (cosine similarity)."""
    labels = np.asarray(labels)
    if len(labels) <= k:
        raise ValueError(f"need more than k={k} images, got {len(labels)}")
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)                        # leave each image out
    nearest = np.argsort(-sim, axis=1)[:, :k]
    votes = np.zeros((len(labels), int(labels.max()) + 1))
    np.add.at(votes, (np.repeat(np.arange(len(labels)), k), labels[nearest].ravel()), 1)
    return float((votes.argmax(1) == labels).mean())


def plot_embedding_map(coords: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                       title: str = "") -> Any:
    """Scatter the 2-D map, one colour per class, the legend outside the points."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for c, name in enumerate(class_names):
        pts = coords[np.asarray(labels) == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=9, alpha=0.7, color=cmap(c % cmap.N), label=name)
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, markerscale=2)
    fig.tight_layout()
    return fig
