"""Accuracy against training time: one model trained for several epoch counts.

    python -m nbutils.benchmarks.time_curve resnet --epochs 5 9 13 21 25 \\
        --profile cpu --dataset imagefolder:PATH

Each point is a full run of the notebook's training (``nbutils.train``) with ``epochs``
overridden, so the schedule (warm-up, then decay to zero) always completes. Runs go to
``outputs/experiments/<model>-curve/``; a point whose record is already there is read,
not trained again. The notebook's own run for the profile and dataset, when there is one,
is added as a point. Prints a table (training seconds, validation and test accuracy) and
saves ``accuracy_vs_time.png`` beside the runs. Test accuracy is reported, never used to
choose anything.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["curve_points", "format_table", "plot_curve", "main"]


def _point(record: Any, label: str) -> dict[str, Any]:
    threads = record.extra.get("threads") or []
    return {"label": label, "epochs": len(record.history), "seconds": record.train_seconds,
            "best_val_acc": max(h.get("val_acc", 0.0) for h in record.history),
            "test_acc": record.test.accuracy,
            "threads": ",".join(map(str, threads)) if isinstance(threads, list) else str(threads)}


def curve_points(model: str, epochs: list[int], profile: str, dataset: str | None,
                 train_missing: bool = True) -> tuple[list[dict[str, Any]], Path]:
    """The curve's points (sorted by training seconds) and the folder of its runs."""
    import nbutils

    from ..runs import notebook_record
    from ..train import get_recipe

    recipe = get_recipe(model)
    base = nbutils.setup(profile, model=model, dataset=dataset, verbose=False)
    folder = base.outputs_dir / "experiments" / f"{model}-curve"
    points = []
    own = notebook_record(base, recipe.notebook)
    if own is not None:
        points.append(_point(own, "notebook run"))
    for n in epochs:
        cfg = nbutils.setup(profile, model=model, dataset=dataset, verbose=False, epochs=n,
                            outputs_dir=str(folder))
        record = notebook_record(cfg, recipe.notebook)
        if record is None and train_missing:
            print(f"training {model} for {n} epochs ...", flush=True)
            record = recipe.train(cfg)
        if record is None:
            continue
        points.append(_point(record, f"{n} epochs"))
    return sorted(points, key=lambda p: p["seconds"]), folder


def format_table(points: list[dict[str, Any]]) -> str:
    """The points as a fixed-width table (threads: a point trained with fewer CPU threads
    than the others, because other work was running, is not comparable in time)."""
    lines = [f"{'run':<14} {'epochs':>6} {'train s':>8} {'best val':>9} {'test':>7} {'threads':>8}"]
    lines += [f"{p['label']:<14} {p['epochs']:>6} {p['seconds']:>8.1f} "
              f"{p['best_val_acc']:>9.3f} {p['test_acc']:>7.3f} {p['threads'] or '-':>8}"
              for p in points]
    return "\n".join(lines)


def plot_curve(points: list[dict[str, Any]], title: str = "", budget_s: float | None = None
               ) -> Any:
    """Validation and test accuracy against training seconds."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    seconds = [p["seconds"] for p in points]
    ax.plot(seconds, [p["best_val_acc"] for p in points], "o-", label="best validation")
    ax.plot(seconds, [p["test_acc"] for p in points], "s--", label="test")
    for p in points:
        ax.annotate(p["label"], (p["seconds"], p["test_acc"]), textcoords="offset points",
                    xytext=(4, -12), fontsize=7)
    if budget_s:
        ax.axvline(budget_s, color="grey", ls=":", label=f"{budget_s:.0f} s")
    ax.set_xlabel("training seconds")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    """Command line: train what is missing, print the table, save the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a recipe of nbutils.train, e.g. resnet")
    parser.add_argument("--epochs", type=int, nargs="+", required=True)
    parser.add_argument("--profile", default="auto")
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--budget", type=float, default=None, help="seconds to mark on the plot")
    parser.add_argument("--no-train", action="store_true", help="only read existing runs")
    args = parser.parse_args(argv)
    points, folder = curve_points(args.model, args.epochs, args.profile, args.dataset,
                                  train_missing=not args.no_train)
    if not points:
        print("no runs to show; drop --no-train to train them")
        return 1
    print(format_table(points))
    from ..plots import save_figure

    fig = plot_curve(points, f"{args.model}: accuracy against training time", args.budget)
    print(f"figure: {save_figure(fig, folder / 'accuracy_vs_time.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
