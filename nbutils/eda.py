"""Exploratory data analysis helpers for notebook 01 (NumPy, pandas, matplotlib only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .data.core import SPLITS, ImageData

__all__ = [
    "class_balance",
    "plot_class_balance",
    "plot_channel_histograms",
    "size_table",
    "plot_sizes",
    "difference_hashes",
    "DuplicateReport",
    "find_duplicates",
    "plot_duplicate_pairs",
    "image_browser",
]

_CHUNK = 2048


def class_balance(data: ImageData) -> Any:
    """Images per class and split as a pandas DataFrame (with a total row)."""
    import pandas as pd

    counts = data.class_counts()
    df = pd.DataFrame({split: counts[split] for split in SPLITS}, index=data.class_names)
    df.index.name = "class"
    df.loc["total"] = df.sum()
    return df


def plot_class_balance(data: ImageData) -> Any:
    """Grouped bar chart of images per class for each split."""
    import matplotlib.pyplot as plt

    counts = data.class_counts()
    k = data.num_classes
    x = np.arange(k)
    width = 0.27
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * k + 2), 3.5))
    for i, split in enumerate(SPLITS):
        ax.bar(x + (i - 1) * width, counts[split], width, label=f"{split} ({counts[split].sum()})")
    ax.set_xticks(x, data.class_names, rotation=45, ha="right")
    ax.set_ylabel("images")
    ax.set_title("class balance per split")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_channel_histograms(data: ImageData, split: str = "train", max_images: int = 5000,
                            seed: int = 0) -> Any:
    """Per-channel pixel histograms of a split (a random sample of at most ``max_images``)."""
    import matplotlib.pyplot as plt

    images = data.splits[split].images
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(images), size=min(max_images, len(images)), replace=False))
    sample = np.asarray(images[idx])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for c, (name, color) in enumerate(zip("RGB", ("tab:red", "tab:green", "tab:blue"), strict=True)):
        hist = np.bincount(sample[..., c].ravel(), minlength=256)
        ax.plot(np.arange(256), hist / hist.sum(), color=color,
                label=f"{name}: mean {data.mean[c]:.3f}, std {data.std[c]:.3f}")
    ax.set_xlabel("pixel value")
    ax.set_ylabel("share of pixels")
    ax.set_title(f"pixel histograms ({split}, {len(idx)} images)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def size_table(data: ImageData) -> Any:
    """Original width/height/aspect statistics per split as a DataFrame."""
    import pandas as pd

    rows = {}
    for split, s in data.splits.items():
        sizes = np.asarray(s.original_sizes) if s.original_sizes is not None else np.zeros((0, 2))
        if len(sizes) == 0:
            continue
        w, h = sizes[:, 0].astype(float), sizes[:, 1].astype(float)
        rows[split] = {"images": len(sizes), "width min": w.min(), "width median": np.median(w),
                       "width max": w.max(), "height min": h.min(), "height median": np.median(h),
                       "height max": h.max(), "aspect median": float(np.median(w / h)),
                       "distinct sizes": len({tuple(x) for x in sizes.tolist()})}
    return pd.DataFrame(rows).T


def plot_sizes(data: ImageData) -> Any:
    """Scatter of original widths vs heights and a histogram of aspect ratios."""
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    for split, s in data.splits.items():
        sizes = np.asarray(s.original_sizes)
        if s.original_sizes is None or sizes.size == 0:
            continue
        ax1.scatter(sizes[:, 0], sizes[:, 1], s=6, alpha=0.4, label=split)
        ax2.hist(sizes[:, 0] / np.maximum(sizes[:, 1], 1), bins=40, alpha=0.5, label=split)
    ax1.set_xlabel("width (px)")
    ax1.set_ylabel("height (px)")
    ax1.set_title("original image sizes")
    ax2.set_xlabel("aspect ratio (w / h)")
    ax2.set_title("aspect ratios")
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    return fig


def _gray(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 NHWC -> float32 (N, h, w) grayscale by area resampling (block means)."""
    from PIL import Image

    out = np.empty((len(images), size[1], size[0]), np.float32)
    for i in range(len(images)):
        out[i] = np.asarray(Image.fromarray(np.asarray(images[i])).convert("L").resize(
            size, Image.Resampling.BOX), dtype=np.float32)
    return out


def difference_hashes(images: np.ndarray) -> np.ndarray:
    """64-bit difference hashes (dHash: 9x8 grayscale, left < right per row) as uint64."""
    gray = _gray(images, (9, 8))
    bits = (gray[:, :, 1:] > gray[:, :, :-1]).reshape(len(images), 64)
    weights = (np.uint64(1) << np.arange(64, dtype=np.uint64))
    return (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


@dataclass
class DuplicateReport:
    """Exact and near duplicate pairs found within and across splits."""

    pairs: Any  # pandas DataFrame
    max_distance: int

    def counts(self) -> Any:
        """Pairs per (split pair, kind)."""
        if self.pairs.empty:
            import pandas as pd

            return pd.DataFrame(columns=["splits", "kind", "pairs"])
        return (self.pairs.groupby(["splits", "kind"]).size().rename("pairs").reset_index())

    def leaked_test_images(self) -> int:
        """Test images that have an exact or near copy in train or val."""
        df = self.pairs
        if df.empty:
            return 0
        cross = df[df["splits"].isin(["train-test", "val-test"])]
        return int(cross["index_b"].nunique())

    def summary(self) -> str:
        """Plain-text summary of what was found."""
        if self.pairs.empty:
            return f"No exact or near duplicates (dHash distance <= {self.max_distance})."
        lines = [f"{len(self.pairs)} duplicate pairs (dHash distance <= {self.max_distance}, "
                 "confirmed by pixel difference):"]
        for row in self.counts().itertuples(index=False):
            lines.append(f"  {row.splits:<11} {row.kind:<6} {row.pairs}")
        lines.append(f"test images with a copy in train/val (leakage): {self.leaked_test_images()}")
        return "\n".join(lines)


def find_duplicates(data: ImageData, max_distance: int = 4, max_pixel_diff: float = 12.0,
                    progress: bool = True) -> DuplicateReport:
    """Find exact and near duplicate images within and across train/val/test.

    Near duplicates are pairs whose 64-bit dHashes differ in at most ``max_distance``
    bits and whose 16x16 grayscale thumbnails differ by at most ``max_pixel_diff``
    (mean absolute difference, 0-255) - the second test removes flat images whose
    hashes collide by accident. Exact duplicates have identical pixels.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    order = [(split, i) for split in SPLITS for i in range(len(data.splits[split]))]
    all_images = [data.splits[split].images for split in SPLITS]
    hashes = np.concatenate([difference_hashes(imgs) for imgs in all_images])
    thumbs = np.concatenate([_gray(imgs, (16, 16)) for imgs in all_images])
    split_of = np.asarray([SPLITS.index(s) for s, _ in order])
    rows = []
    n = len(hashes)
    starts = range(0, n, _CHUNK)
    for start in tqdm(starts, desc="compare hashes", disable=not progress, leave=False):
        block = hashes[start:start + _CHUNK]
        dist = np.bitwise_count(block[:, None] ^ hashes[None, :])
        ii, jj = np.nonzero(dist <= max_distance)
        ii = ii + start
        keep = jj > ii
        for a, b in zip(ii[keep], jj[keep], strict=True):
            diff = float(np.abs(thumbs[a] - thumbs[b]).mean())
            if diff > max_pixel_diff:
                continue
            sa, ia = order[a]
            sb, ib = order[b]
            exact = np.array_equal(data.splits[sa].images[ia], data.splits[sb].images[ib])
            first, second = (a, b) if split_of[a] <= split_of[b] else (b, a)
            s1, i1 = order[first]
            s2, i2 = order[second]
            rows.append({"splits": f"{s1}-{s2}", "kind": "exact" if exact else "near",
                         "split_a": s1, "index_a": i1, "id_a": data.splits[s1].ids[i1],
                         "split_b": s2, "index_b": i2, "id_b": data.splits[s2].ids[i2],
                         "hash_distance": int(dist[a - start, b]), "pixel_diff": round(diff, 2)})
    columns = ["splits", "kind", "split_a", "index_a", "id_a", "split_b", "index_b", "id_b",
               "hash_distance", "pixel_diff"]
    df = pd.DataFrame(rows, columns=columns)
    return DuplicateReport(df.sort_values(["splits", "pixel_diff"]).reset_index(drop=True),
                           max_distance)


def plot_duplicate_pairs(data: ImageData, report: DuplicateReport, n: int = 8) -> Any:
    """Show up to ``n`` duplicate pairs side by side (cross-split pairs first)."""
    import matplotlib.pyplot as plt

    df = report.pairs
    if df.empty:
        return None
    df = df.assign(cross=df["split_a"] != df["split_b"]).sort_values(
        ["cross", "pixel_diff"], ascending=[False, True]).head(n)
    fig, axes = plt.subplots(2, len(df), figsize=(1.7 * len(df), 3.8), squeeze=False)
    for j, row in enumerate(df.itertuples(index=False)):
        for i, (split, idx) in enumerate(((row.split_a, row.index_a), (row.split_b, row.index_b))):
            ax = axes[i, j]
            ax.imshow(data.splits[split].images[idx])
            ax.set_title(f"{split} #{idx}\n{data.class_names[data.splits[split].labels[idx]]}",
                         fontsize=7)
            ax.axis("off")
    fig.suptitle("duplicate pairs (top and bottom rows), cross-split first")
    fig.tight_layout()
    return fig


def image_browser(data: ImageData, per_page: int = 24) -> Any:
    """An ipywidgets browser: pick a split and a class, page through its images."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    split_w = widgets.Dropdown(options=list(SPLITS), value="train", description="split")
    class_w = widgets.Dropdown(options=[(name, i) for i, name in enumerate(data.class_names)],
                               value=0, description="class")
    page_w = widgets.IntSlider(value=0, min=0, max=0, description="page")
    out = widgets.Output()

    def indices() -> np.ndarray:
        s = data.splits[split_w.value]
        return np.flatnonzero(s.labels == class_w.value)

    def render(*_: Any) -> None:
        idx = indices()
        page_w.max = max(0, (len(idx) - 1) // per_page)
        chosen = idx[page_w.value * per_page:(page_w.value + 1) * per_page]
        with out:
            out.clear_output(wait=True)
            if len(chosen) == 0:
                print("no images")
                return
            s = data.splits[split_w.value]
            from .plots import image_grid

            image_grid(s.images[chosen], [f"#{i}" for i in chosen], ncols=8, cell=1.2)
            plt.show()

    for w in (split_w, class_w, page_w):
        w.observe(render, names="value")
    render()
    box = widgets.VBox([widgets.HBox([split_w, class_w, page_w]), out])
    display(box)
    return box
