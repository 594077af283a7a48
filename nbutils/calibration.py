"""Temperature scaling: make a model's confidence match its accuracy (Guo et al., 2017).

A network trained with cross-entropy is often over-confident: among the test images it
gives 0.95, fewer than 95 % are right. Temperature scaling divides the logits by one
number T, fitted on the *validation* split by minimising the negative log-likelihood;
T > 1 softens over-confident predictions, T < 1 sharpens under-confident ones. It
never changes which class is predicted, so accuracy is untouched.

The course saves probabilities, not logits; ``log p`` differs from the logits by a
constant per image, which the softmax removes, so scaling ``log p`` is the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["negative_log_likelihood", "apply_temperature", "fit_temperature", "Calibration",
           "calibrate"]

_EPS = 1e-12


def negative_log_likelihood(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean -log p(true class) over the images."""
    labels = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(p, _EPS, 1.0)).mean()) if len(labels) else 0.0


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T) for every row of ``probs``."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.log(np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0)) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(labels: np.ndarray, probs: np.ndarray,
                    bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The T in ``bounds`` that minimises the NLL of ``apply_temperature(probs, T)``.

    The NLL is convex in 1/T, so a bounded scalar search over log T finds the optimum.
    """
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise ValueError("fitting a temperature needs at least one validation image")
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(labels, apply_temperature(probs, np.exp(log_t))),
        bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded",
        options={"xatol": 1e-4})
    return float(np.exp(result.x))


@dataclass
class Calibration:
    """A fitted temperature and what it does on validation and test images."""

    temperature: float
    val_nll_before: float
    val_nll_after: float
    test_nll_before: float
    test_nll_after: float
    test_ece_before: float
    test_ece_after: float


def calibrate(val_labels: np.ndarray, val_probs: np.ndarray, test_labels: np.ndarray,
              test_probs: np.ndarray, ece_bins: int = 15) -> Calibration:
    """Fit T on the validation split; report NLL and ECE before and after on both splits."""
    from .metrics import expected_calibration_error

    t = fit_temperature(val_labels, val_probs)
    scaled_val, scaled_test = apply_temperature(val_probs, t), apply_temperature(test_probs, t)
    return Calibration(
        temperature=t,
        val_nll_before=negative_log_likelihood(val_labels, val_probs),
        val_nll_after=negative_log_likelihood(val_labels, scaled_val),
        test_nll_before=negative_log_likelihood(test_labels, test_probs),
        test_nll_after=negative_log_likelihood(test_labels, scaled_test),
        test_ece_before=expected_calibration_error(test_labels, test_probs, ece_bins),
        test_ece_after=expected_calibration_error(test_labels, scaled_test, ece_bins))
