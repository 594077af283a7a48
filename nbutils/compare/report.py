"""Notebook 05's written output: Markdown tables and ``outputs/comparison/``.

:func:`write_comparison` writes the CSV tables, the figures and ``report.md`` of a
:class:`~nbutils.compare.Comparison` into one folder, atomically, so the result of
the benchmark can be read without Jupyter.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..paths import atomic_write, atomic_write_text, make_temp_dir, resolve_path
from .speed import speed_summary
from .table import Comparison

__all__ = [
    "markdown_table",
    "main_table_markdown",
    "frame_markdown",
    "significance_markdown",
    "render_report",
    "write_comparison",
]


def _fmt(value: Any, kind: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if kind == "pct":
        return f"{value:.1%}"
    if kind == "int":
        return f"{int(value):,}"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.3f}" if abs(v) < 1 else f"{v:.1f}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[Sequence[Any]], header: Sequence[str],
                   align: str | None = None) -> str:
    """A GitHub-flavoured Markdown table; ``align`` is one of ``l``/``r`` per column."""
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


MAIN_COLUMNS: list[tuple[str, str, str]] = [
    # (header, column, format)
    ("accuracy [95% CI]", "accuracy", "acc"),
    ("top-5", "top5_accuracy", "pct"),
    ("macro P", "macro_precision", ""),
    ("macro R", "macro_recall", ""),
    ("macro F1", "macro_f1", ""),
    ("ECE", "ece", ""),
    ("params", "params", "int"),
    ("size MiB", "size_mib", ""),
    ("train s", "train_s", ""),
    ("latency ms (b=1)", "latency_ms", ""),
    ("ONNX RT ms (b=1)", "onnx_latency_ms", ""),
    ("img/s (b={batch})", "throughput_ips", ""),
    ("peak MiB host/dev", "peak", "peak"),
]


def main_table_markdown(table: Any, batch_size: int | str = "?") -> str:
    """The headline table (one row per model) as Markdown."""
    if not len(table):
        return "*No runs to compare yet.*"
    columns = [c for c in MAIN_COLUMNS  # top-5 only where it means something (> 5 classes)
               if c[1] != "top5_accuracy" or table.get("top5_accuracy") is not None
               and table["top5_accuracy"].notna().any()]
    header = ["model"] + [h.format(batch=batch_size) for h, _, _ in columns]
    rows = []
    for label, row in table.iterrows():
        cells = [label]
        for _, col, kind in columns:
            if kind == "acc":
                cells.append(f"{row['accuracy']:.1%} [{row['acc_ci_low']:.1%}, "
                             f"{row['acc_ci_high']:.1%}]")
            elif kind == "peak":
                cells.append(f"{_fmt(row['train_peak_host_mib'])} / "
                             f"{_fmt(row['train_peak_device_mib'])}")
            else:
                cells.append(_fmt(row[col], kind))
        rows.append(cells)
    return markdown_table(rows, header)


def frame_markdown(df: Any, kind: str = "") -> str:
    """A models x columns DataFrame as Markdown (``kind="pct"`` for percentages)."""
    if not len(df):
        return "*No runs to compare yet.*"
    rows = [[str(idx)] + [_fmt(v, kind) for v in row] for idx, row in zip(df.index, df.values,
                                                                           strict=True)]
    return markdown_table(rows, ["model"] + [str(c) for c in df.columns])


def significance_markdown(pairwise: Any) -> str:
    """The table of :func:`pairwise_significance` as Markdown."""
    rows = []
    for _, r in pairwise.iterrows():
        rows.append([f"{r.model_a} − {r.model_b}", f"{r['diff']:+.1%}",
                     f"[{r.ci_low:+.1%}, {r.ci_high:+.1%}]",
                     f"{int(r.only_a_right)} / {int(r.only_b_right)}", f"{r.p_value:.3g}",
                     "yes" if r.significant else "no"])
    return markdown_table(rows, ["pair (a − b)", "accuracy diff", "95% bootstrap CI",
                                 "only a / only b right", "McNemar p", "p < 0.05"])


def _threads_note(threads: Any) -> str:
    if not threads:
        return ""
    return f" with {threads} CPU thread{'s' if threads != 1 else ''} per model"


def _method_note(st: Mapping[str, Any]) -> str:
    """How the table's figures were obtained, from the comparison's settings."""
    batch = st.get("batch_size", "?")
    return (
        f"Accuracy, macro precision/recall/F1 and ECE ({st.get('ece_bins', '?')} bins) are "
        "computed from each run's saved test probabilities. Latency (median of up to "
        f"{st.get('latency_repeats', '?')} batch-1 calls after {st.get('warmup_repeats', '?')} "
        f"warm-up calls) and throughput (median of up to {st.get('throughput_batches', '?')} "
        f"batches of {batch}; each kind stops early after {st.get('time_budget_s', '?')} s) "
        f"were measured here with one harness on `{st.get('device', '?')}`"
        f"{_threads_note(st.get('threads'))}, on the same test images, "
        "from uint8 input to probabilities. Training time and peak memory come from the runs' "
        "records (peak host RSS of the training process / peak GPU memory). For the ensemble, "
        "parameters, size, training time and latency are sums over its members.")


def render_report(comparison: Comparison, figures: Sequence[str] = ()) -> str:
    """The Markdown report: setting, table, per-class errors, ensemble, tests, figures."""
    rs = comparison.runset
    st = comparison.settings
    batch = st.get("batch_size", "?")
    lines = [
        "# Framework comparison",
        "",
        f"Dataset `{rs.dataset}` · profile `{rs.profile}` · {rs.n_test} test images · "
        f"{len(rs.runs)} model(s). Generated by notebook 05 "
        f"({time.strftime('%Y-%m-%d %H:%M')}).",
        "",
    ]
    if rs.missing or rs.problems:
        lines += ["## Missing or unreadable runs", ""]
        lines += [f"- missing **{m.prefix}** ({m.framework}): `{m.command}`" for m in rs.missing]
        lines += [f"- unreadable `{p.name}`: {why}" for p, why in rs.problems]
        lines.append("")
    if not rs.runs:
        lines += ["No runs to compare yet: produce them with the commands above.", ""]
        return "\n".join(lines)
    lines += ["## Results", "", main_table_markdown(comparison.table, batch), "",
              _method_note(st), ""]
    if comparison.speed:
        lines += ["Timing details:", ""]
        lines += [f"- {line}" for line in speed_summary(comparison.speed, width=0).splitlines()]
        lines.append("")
    lines += ["## Top-1 error per class", "", frame_markdown(comparison.per_class_error, "pct"),
              ""]
    if comparison.ensemble is not None:
        lines += ["## Ensemble", "", comparison.ensemble.verdict(), ""]
    if len(comparison.pairwise):
        lines += [
            "## Are the differences real?", "",
            significance_markdown(comparison.pairwise), "",
            f"Paired tests on the same {rs.n_test} images: McNemar's exact test uses only the "
            "images where exactly one model is right; the bootstrap interval resamples the test "
            f"images ({st.get('bootstrap_samples', '?')} resamples). An interval that contains 0 "
            "means the test set cannot tell the two apart.", "",
        ]
    d = comparison.disagreement
    if len(rs.runs) >= 2 and d["n_test"]:
        lines += [
            "## Where the models disagree", "",
            f"All models agree on {d['all_agree']} of {d['n_test']} images "
            f"({d['all_agree_right']} right, {d['all_agree_wrong']} wrong); they disagree on "
            f"{d['disagree']}, and on {d['some_right']} of those at least one model is right. "
            f"An oracle that picked the right model per image would reach "
            f"{d['oracle_accuracy']:.1%}.", "",
        ]
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{Path(f).stem}]({Path(f).name})" for f in figures]
        lines.append("")
    return "\n".join(lines)


def write_comparison(
    comparison: Comparison,
    out_dir: str | os.PathLike[str],
    figures: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``table.csv``, ``per_class_f1.csv``, ``per_class_error.csv``,
    ``significance.csv``, ``disagreements.csv``, the figures (``<name>.png``) and
    ``report.md`` into ``out_dir``; returns the report's path.

    The folder is built beside ``out_dir`` and swapped into place at the end, so an
    interrupted run leaves the previous comparison whole and no stale files survive.
    """
    from ..plots import save_figure

    target = resolve_path(out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(target)
    try:
        _write_csv(tmp / "table.csv", comparison.table)
        _write_csv(tmp / "per_class_f1.csv", comparison.per_class_f1)
        _write_csv(tmp / "per_class_error.csv", comparison.per_class_error)
        _write_csv(tmp / "significance.csv", comparison.pairwise, index=False)
        _write_disagreements(tmp / "disagreements.csv", comparison)
        names = []
        for name, fig in (figures or {}).items():
            if fig is not None:
                names.append(save_figure(fig, tmp / f"{name}.png").name)
        atomic_write_text(tmp / "report.md", render_report(comparison, names))
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old / target.name)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target / "report.md"


def _write_csv(path: Path, df: Any, index: bool = True) -> None:
    with atomic_write(path, "w") as handle:
        df.to_csv(handle, index=index, float_format="%.6g")


def _write_disagreements(path: Path, comparison: Comparison) -> None:
    import pandas as pd

    rs, d = comparison.runset, comparison.disagreement
    rows = []
    for i in d["indices"]:
        row = {"test_index": int(i), "image_id": rs.runs[0].ids[i] if rs.runs[0].ids else "",
               "true": rs.class_names[rs.labels[i]]}
        for k, run in enumerate(rs.runs):
            row[run.label] = rs.class_names[d["preds"][k, i]]
        rows.append(row)
    _write_csv(path, pd.DataFrame(rows, columns=["test_index", "image_id", "true",
                                                 *[r.label for r in rs.runs]]), index=False)

