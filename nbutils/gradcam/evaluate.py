"""Checks that tell a faithful explanation from a pretty picture.

- Localisation (needs object masks, as in the ``shapes`` dataset): the pointing
  game (is the map's maximum on the object?) and the share of the map's energy
  inside the object. A map that knows nothing scores the object's area on both,
  so the mean mask area is the chance rate.
- Model randomisation (Adebayo et al., 2018): re-initialise the weights and
  compare the maps by rank correlation. An explanation that barely changes is
  describing the image (edges, colour), not the model.
- Deletion (Petsiuk et al., 2018): remove the most salient pixels first and watch
  the class probability fall; a faithful map makes it fall faster than a random
  order of the same pixels (lower area under the curve), and faster than random
  blobs as coarse as the map.

Everything here works on numpy arrays; only :func:`randomization_check` calls a model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Localisation", "RandomizationResult", "DeletionResult", "ModelReport", "mask_area",
           "empty_maps",
           "pointing_hits", "energy_inside", "localisation", "rank_correlation",
           "randomization_check", "deletion_curve", "evaluate_model"]


def _check_pair(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(maps, dtype=np.float32)
    k = np.asarray(masks, dtype=bool)
    if m.ndim != 3 or m.shape != k.shape:
        raise ValueError(f"maps and masks must both be (N, H, W); got {m.shape} and {k.shape}. "
                         "Compute the maps at the masks' size (gradcam(..., output_size=(H, W))).")
    return m, k


def mask_area(masks: np.ndarray) -> np.ndarray:
    """(N,) share of each image covered by its object."""
    k = np.asarray(masks, dtype=bool)
    return k.reshape(len(k), -1).mean(axis=1)


def empty_maps(maps: np.ndarray) -> np.ndarray:
    """(N,) bool: maps that are constant (usually all zero: no positive evidence anywhere)."""
    from .core import is_constant

    return is_constant(maps)


def pointing_hits(maps: np.ndarray, masks: np.ndarray, tolerance: int = 0) -> np.ndarray:
    """(N,) bool: whether each map's maximum lies on the object (or within ``tolerance`` px).

    A constant map points nowhere and counts as a miss.
    """
    m, k = _check_pair(maps, masks)
    if tolerance > 0:
        from scipy.ndimage import binary_dilation

        structure = np.zeros((1, 2 * tolerance + 1, 2 * tolerance + 1), bool)
        structure[0] = True
        k = binary_dilation(k, structure=structure)
    flat = m.reshape(len(m), -1).argmax(axis=1)
    return k.reshape(len(k), -1)[np.arange(len(k)), flat] & ~empty_maps(m)


def energy_inside(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(N,) share of each map's total energy (sum of values) that falls on the object.

    An all-zero map has no energy; it counts as spread evenly (the mask's area).
    """
    m, k = _check_pair(maps, masks)
    total = m.reshape(len(m), -1).sum(axis=1)
    inside = (m * k).reshape(len(m), -1).sum(axis=1)
    return np.where(total > 0, inside / np.maximum(total, 1e-12), mask_area(k))


@dataclass
class Localisation:
    """Pointing game and energy-inside-mask over a set of images, with the chance rate."""

    pointing_game: float
    energy: float
    chance: float
    n: int
    n_empty: int = 0
    hits: np.ndarray = field(default=None, repr=False)
    energies: np.ndarray = field(default=None, repr=False)

    def to_dict(self) -> dict[str, float]:
        """Plain numbers for a JSON record."""
        return {"pointing_game": round(self.pointing_game, 4), "energy": round(self.energy, 4),
                "chance": round(self.chance, 4), "n_images": self.n, "n_empty_maps": self.n_empty}


def localisation(maps: np.ndarray, masks: np.ndarray, tolerance: int = 0) -> Localisation:
    """Pointing-game accuracy and mean energy inside the masks; chance = mean mask area."""
    hits = pointing_hits(maps, masks, tolerance)
    energies = energy_inside(maps, masks)
    return Localisation(pointing_game=float(hits.mean()), energy=float(energies.mean()),
                        chance=float(mask_area(masks).mean()), n=len(hits),
                        n_empty=int(empty_maps(maps).sum()), hits=hits, energies=energies)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) Spearman rank correlation between paired maps; NaN where a map is constant."""
    from scipy.stats import rankdata

    x = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    y = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if x.shape != y.shape:
        raise ValueError(f"paired maps must have the same shape; got {x.shape} and {y.shape}")
    rx = rankdata(x, axis=1)
    ry = rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    denom = np.sqrt((rx ** 2).sum(axis=1) * (ry ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (rx * ry).sum(axis=1) / denom, np.nan)


@dataclass
class RandomizationResult:
    """Maps of the trained and the re-initialised model, and their rank correlation."""

    rho: np.ndarray
    maps_trained: np.ndarray = field(repr=False)
    maps_random: np.ndarray = field(repr=False)
    layer: str = ""

    @property
    def mean(self) -> float:
        """Mean rank correlation over the images whose maps are not constant."""
        return float(np.nanmean(self.rho)) if np.isfinite(self.rho).any() else float("nan")

    @property
    def mean_abs(self) -> float:
        """Mean absolute rank correlation (a sign flip is still a similar map)."""
        return float(np.nanmean(np.abs(self.rho))) if np.isfinite(self.rho).any() else float("nan")

    @property
    def n_constant(self) -> int:
        """Images where one of the two maps is constant (often: all zero after the ReLU)."""
        return int((~np.isfinite(self.rho)).sum())

    def to_dict(self) -> dict[str, float]:
        """Plain numbers for a JSON record."""
        def r(v: float) -> float | None:
            return round(v, 4) if np.isfinite(v) else None
        return {"rank_correlation_mean": r(self.mean),
                "rank_correlation_abs_mean": r(self.mean_abs),
                "rank_correlation_median": r(float(np.nanmedian(self.rho)))
                if np.isfinite(self.rho).any() else None,
                "n_constant_maps": self.n_constant, "n_images": len(self.rho)}


def randomization_check(model: Any, images: np.ndarray, *, info: Any = None,
                        target_layer: str | None = None, method: str = "gradcam", seed: int = 0,
                        batch_size: int = 32, trained: Any = None) -> RandomizationResult:
    """Grad-CAM of the trained model vs the same architecture with re-initialised weights.

    Both explain the class the trained model predicts, at the same layer.
    ``trained`` may pass an existing :class:`~nbutils.gradcam.core.CAMResult` for
    these images to save one pass.
    """
    from . import gradcam, randomized_copy, unwrap

    native, info = unwrap(model, info)
    before = trained or gradcam(native, images, target_layer, method=method, info=info,
                                batch_size=batch_size)
    random_model = randomized_copy(native, seed)
    after = gradcam(random_model, images, before.layer, target_class=before.class_idx,
                    method=method, info=info, batch_size=batch_size)
    return RandomizationResult(rho=rank_correlation(before.maps, after.maps),
                               maps_trained=before.maps, maps_random=after.maps,
                               layer=before.layer)


@dataclass
class DeletionResult:
    """Mean probability of the explained class as pixels are removed, in three orders.

    ``saliency`` follows the map, ``random`` a random order of pixels and, when
    asked for, ``random_smooth`` a random map as coarse as the explained layer (the
    same blob-shaped deletions as the map, in random places).
    """

    fractions: np.ndarray
    saliency: np.ndarray
    random: np.ndarray
    per_image_saliency: np.ndarray = field(repr=False)
    per_image_random: np.ndarray = field(repr=False)
    random_smooth: np.ndarray | None = None
    per_image_random_smooth: np.ndarray | None = field(default=None, repr=False)

    def _auc(self, y: np.ndarray) -> np.ndarray | float:
        """Trapezoid area under ``y`` over the deleted fractions (last axis)."""
        return np.sum((y[..., 1:] + y[..., :-1]) * np.diff(self.fractions), axis=-1) / 2.0

    @property
    def auc_saliency(self) -> float:
        """Area under the saliency-order curve (lower: the map found what matters)."""
        return float(self._auc(self.saliency))

    @property
    def auc_random(self) -> float:
        """Area under the random-order curve."""
        return float(self._auc(self.random))

    @property
    def auc_random_smooth(self) -> float | None:
        """Area under the random-smooth-map curve, if computed."""
        return None if self.random_smooth is None else float(self._auc(self.random_smooth))

    @property
    def win_rate(self) -> float:
        """Share of images whose saliency-order AUC is below their random-order AUC."""
        return float((self._auc(self.per_image_saliency)
                      < self._auc(self.per_image_random)).mean())

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers for a JSON record."""
        def r(v: Any) -> Any:
            return None if v is None else round(float(v), 4)
        out = {"auc_saliency": r(self.auc_saliency), "auc_random": r(self.auc_random),
               "auc_random_smooth": r(self.auc_random_smooth),
               "win_rate": r(self.win_rate),
               "fractions": [r(v) for v in self.fractions],
               "curve_saliency": [r(v) for v in self.saliency],
               "curve_random": [r(v) for v in self.random],
               "n_images": int(len(self.per_image_saliency))}
        if self.random_smooth is not None:
            out["curve_random_smooth"] = [r(v) for v in self.random_smooth]
        return out


def _baseline(images: np.ndarray, kind: str) -> np.ndarray:
    x = np.asarray(images, dtype=np.float32)
    if kind == "mean":
        return np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape)
    if kind == "blur":
        from scipy.ndimage import uniform_filter

        size = max(3, (x.shape[1] // 4) | 1)
        return uniform_filter(x, size=(1, size, size, 1), mode="reflect")
    if kind == "black":
        return np.zeros_like(x)
    raise ValueError(f"Unknown deletion baseline {kind!r}; use 'blur', 'mean' or 'black'")


def deletion_curve(
    predict_proba: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    maps: np.ndarray,
    classes: np.ndarray,
    steps: int = 10,
    baseline: str = "blur",
    seed: int = 0,
    smooth_grid: tuple[int, int] | None = None,
) -> DeletionResult:
    """Probability of ``classes`` as the top-k% most salient pixels are replaced.

    Args:
        predict_proba: uint8 (M, H, W, 3) -> (M, K) probabilities (a classifier's method).
        images: uint8 (N, H, W, 3).
        maps: (N, H, W) saliency on the images' grid.
        classes: (N,) the class whose probability is tracked (the explained class).
        steps: the curve has ``steps + 1`` points, from 0% to 100% deleted.
        baseline: what a deleted pixel becomes: ``blur`` (the pixel of a heavily
            blurred copy: information goes, no new edges appear), ``mean`` (the
            image's mean colour) or ``black``.
        seed: for the random orders and for breaking ties between equal map values.
        smooth_grid: (h, w) of the explained layer; adds the control ``random_smooth``,
            random maps on that grid enlarged like the Grad-CAM maps. Scattered
            single pixels (the plain random order) look like noise to a CNN; blobs
            in random places separate "where" from "what shape".

    Returns:
        A :class:`DeletionResult`; all the modified images go through
        ``predict_proba`` in one call.
    """
    from .core import resize_bilinear

    imgs = np.asarray(images)
    m = np.asarray(maps, dtype=np.float32)
    n, h, w = m.shape
    if imgs.shape[:3] != (n, h, w):
        raise ValueError(f"images {imgs.shape} and maps {m.shape} must share N, H and W")
    rng = np.random.default_rng(seed)
    p = h * w

    def order_of(saliency: np.ndarray) -> np.ndarray:  # most salient first, ties at random
        return np.lexsort((rng.random((n, p)), -saliency.reshape(n, p)), axis=1)

    orders = [order_of(m), np.argsort(rng.random((n, p)), axis=1)]
    if smooth_grid is not None:
        coarse = rng.random((n, int(smooth_grid[0]), int(smooth_grid[1]))).astype(np.float32)
        orders.append(order_of(resize_bilinear(coarse, (h, w))))
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = np.round(fractions * p).astype(np.int64)
    base = _baseline(imgs, baseline)
    img_f = imgs.astype(np.float32)

    def composites(order: np.ndarray) -> np.ndarray:
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(p)[None, :].repeat(n, axis=0), axis=1)
        deleted = rank[None, :, :] < counts[:, None, None]              # (S+1, N, P)
        deleted = deleted.reshape(len(counts), n, h, w, 1)
        mixed = np.where(deleted, base[None], img_f[None])
        return np.clip(np.round(mixed), 0, 255).astype(np.uint8)

    batch = np.concatenate([composites(o) for o in orders])  # (orders x (S+1), N, H, W, 3)
    probs = np.asarray(predict_proba(batch.reshape(-1, h, w, imgs.shape[3])))
    probs = probs.reshape(len(orders), len(counts), n, -1)
    cls = np.asarray(classes, dtype=np.int64)
    tracked = np.take_along_axis(probs, cls[None, None, :, None], axis=3)[..., 0]
    per = [t.T for t in tracked]  # each (N, S+1)
    smooth = per[2] if smooth_grid is not None else None
    return DeletionResult(fractions=fractions, saliency=per[0].mean(axis=0),
                          random=per[1].mean(axis=0), per_image_saliency=per[0],
                          per_image_random=per[1],
                          random_smooth=None if smooth is None else smooth.mean(axis=0),
                          per_image_random_smooth=smooth)


@dataclass
class ModelReport:
    """Every check of one model on one set of test images."""

    label: str
    framework: str
    layer: str
    method: str
    accuracy: float
    cam: Any = field(repr=False)
    localisation: Localisation
    localisation_correct: Localisation | None
    randomization: RandomizationResult
    deletion: DeletionResult
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The figures for the Grad-CAM record."""
        return {"framework": self.framework, "layer": self.layer, "method": self.method,
                "accuracy_on_scored_images": round(self.accuracy, 4),
                "localisation": self.localisation.to_dict(),
                "localisation_correct_only": (self.localisation_correct.to_dict()
                                              if self.localisation_correct else None),
                "randomization": self.randomization.to_dict(),
                "deletion": self.deletion.to_dict(),
                "seconds": {k: round(v, 2) for k, v in self.seconds.items()}}


def evaluate_model(
    model: Any, images: np.ndarray, labels: np.ndarray, masks: np.ndarray, *,
    label: str = "", target_layer: str | None = None, method: str = "gradcam",
    n_randomization: int = 48, n_deletion: int = 64, deletion_steps: int = 10,
    deletion_baseline: str = "blur", tolerance: int = 0, seed: int = 0, batch_size: int = 32,
) -> ModelReport:
    """Grad-CAM of a reloaded classifier on ``images``, then localisation, randomisation, deletion.

    The maps explain each image's predicted class; localisation is scored on all
    images and on the correctly classified ones; the randomisation check uses the
    first ``n_randomization`` images and the deletion curves the first ``n_deletion``.
    """
    import time as _time

    from . import gradcam, unwrap

    if not hasattr(model, "predict_proba"):
        raise TypeError("evaluate_model needs a reloaded classifier (with predict_proba) for "
                        "the deletion curves; use nbutils.inference.load_classifier")
    images = np.asarray(images)
    labels = np.asarray(labels)
    native, _info = unwrap(model)
    seconds: dict[str, float] = {}
    t = _time.perf_counter()
    cam = gradcam(model, images, target_layer, method=method, batch_size=batch_size)
    seconds["gradcam"] = _time.perf_counter() - t
    seconds["gradcam_per_image_ms"] = 1000 * seconds["gradcam"] / len(images)
    loc = localisation(cam.maps, masks, tolerance)
    correct = cam.predictions == labels
    loc_ok = localisation(cam.maps[correct], masks[correct], tolerance) if correct.any() else None

    t = _time.perf_counter()
    k = min(n_randomization, len(images))
    sub = CAMSlice(cam, k)
    rnd = randomization_check(model, images[:k], target_layer=cam.layer, method=method,
                              seed=seed, batch_size=batch_size, trained=sub)
    seconds["randomization"] = _time.perf_counter() - t

    t = _time.perf_counter()
    k = min(n_deletion, len(images))
    dele = deletion_curve(model.predict_proba, images[:k], cam.maps[:k], cam.class_idx[:k],
                          steps=deletion_steps, baseline=deletion_baseline, seed=seed,
                          smooth_grid=cam.raw.shape[1:])
    seconds["deletion"] = _time.perf_counter() - t
    return ModelReport(label=label or type(native).__name__, framework=cam.framework,
                       layer=cam.layer, method=method, accuracy=float(correct.mean()), cam=cam,
                       localisation=loc, localisation_correct=loc_ok, randomization=rnd,
                       deletion=dele, seconds=seconds)


def CAMSlice(cam: Any, k: int) -> Any:  # noqa: N802 - reads like a constructor
    """The first ``k`` images of a :class:`~nbutils.gradcam.core.CAMResult`."""
    from dataclasses import replace

    return replace(cam, maps=cam.maps[:k], raw=cam.raw[:k], class_idx=cam.class_idx[:k],
                   probs=cam.probs[:k])
