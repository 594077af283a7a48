"""Notebook 05: compare the course's trained models as a fair benchmark.

Everything here works from what the training notebooks leave behind, with no
special case per framework, and imports no deep learning framework:

* :mod:`.runs` -- :func:`load_runs` reads every run record of one dataset and profile
  (found by :func:`nbutils.runs.find_runs`, the look-up notebook 06 uses too) and its
  saved test probabilities, and lists the runs that are missing or unreadable;
* :mod:`.speed` -- :func:`measure_runs` reloads each saved model through
  :func:`nbutils.inference.load_classifier`, one at a time and each in its own process,
  and times it with one harness (batch-1 latency, throughput);
* :mod:`.stats` -- Wilson intervals, the ensemble against the best model, paired
  significance tests and the images the models disagree on;
* :mod:`.table` -- the comparison table and :func:`build_comparison`, which puts it all
  together;
* :mod:`.plots` and :mod:`.report` -- the figures, and ``outputs/comparison/`` with
  CSV tables and a ``report.md`` that reads without Jupyter.
"""

from .runs import MissingRun, Run, RunSet, load_runs
from .speed import (
    MeasureError,
    SpeedResult,
    dir_size_bytes,
    measure_classifier,
    measure_runs,
    speed_summary,
    time_calls,
)
from .stats import (
    EnsembleResult,
    disagreements,
    ensemble_vs_best,
    pairwise_significance,
    wilson_interval,
)
from .table import Comparison, build_comparison, build_table, per_class_table

__all__ = [
    "Run", "MissingRun", "RunSet", "load_runs",
    "SpeedResult", "MeasureError", "dir_size_bytes", "time_calls", "measure_classifier",
    "measure_runs", "speed_summary",
    "wilson_interval", "EnsembleResult", "ensemble_vs_best", "pairwise_significance",
    "disagreements",
    "Comparison", "build_table", "per_class_table", "build_comparison",
]
