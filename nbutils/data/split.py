"""One fixed, stratified train/val/test split per dataset and seed."""

from __future__ import annotations

import numpy as np

__all__ = ["stratified_split"]


def _take(n: int, fraction: float) -> int:
    if n < 2:
        return 0
    return min(n - 1, max(1, int(round(n * fraction))))


def stratified_split(
    labels: np.ndarray,
    pools: np.ndarray,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    max_train_per_class: int | None = None,
    max_test_per_class: int | None = None,
) -> dict[str, np.ndarray]:
    """Split item indices into train/val/test, stratified by class.

    Items in pool 1 (the dataset's own test split) form the test set; if there are
    none, ``test_fraction`` of each class's items are held out instead. From the
    training pool, ``val_fraction`` of each class becomes the validation set. Caps
    apply per class before the validation share is taken. The result depends only
    on ``labels``, ``pools``, the seed and the settings.

    Returns:
        ``{"train": idx, "val": idx, "test": idx}``, each sorted ascending.
    """
    labels = np.asarray(labels)
    pools = np.asarray(pools)
    rng = np.random.default_rng(seed)
    has_test = bool((pools == 1).any())
    out: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for cls in np.unique(labels):
        cls_train = rng.permutation(np.flatnonzero((labels == cls) & (pools == 0)))
        if has_test:
            cls_test = rng.permutation(np.flatnonzero((labels == cls) & (pools == 1)))
        else:
            n_test = _take(len(cls_train), test_fraction)
            cls_test, cls_train = cls_train[:n_test], cls_train[n_test:]
        if max_test_per_class is not None:
            cls_test = cls_test[:max_test_per_class]
        if max_train_per_class is not None:
            cls_train = cls_train[:max_train_per_class]
        n_val = _take(len(cls_train), val_fraction)
        out["val"].append(cls_train[:n_val])
        out["train"].append(cls_train[n_val:])
        out["test"].append(cls_test)
    return {k: np.sort(np.concatenate(v)).astype(np.int64) if v else np.zeros(0, np.int64)
            for k, v in out.items()}
