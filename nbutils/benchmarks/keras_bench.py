"""Keras input pipelines compared: ``tf.data`` (cache + prefetch) vs ``model.fit`` on numpy.

``python -m nbutils.bench keras [--profile cpu] [--dataset SPEC] [--epochs 2] [--repeats 3]``

Both sides train the same reference CNN (same settings, same seed, preprocessing
inside the model) on the same training split, and predict the same images. The
measurements are interleaved (tf.data, numpy, tf.data, ...) so a change in machine
load hits both alike; a short warm-up (tracing the graphs) is left out.
Prints images/s for training and inference, the tf.data / numpy ratios, the CPU
time per image and the load average, all measured in this run.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from ..fitting import Stopwatch, load_average

__all__ = ["compare_pipelines", "main"]


def _time_rounds(calls: dict[str, Callable[[], Any]], rounds: int, bar: Any
                 ) -> dict[str, list[float]]:
    """``rounds`` interleaved calls of each function: ``{name: [wall s, CPU s]}`` summed."""
    totals = {name: [0.0, 0.0] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            with Stopwatch() as clock:
                fn()
            totals[name][0] += clock.seconds
            totals[name][1] += clock.cpu_seconds
            bar.update(1)
    return totals


def compare_pipelines(data: Any, model_cfg: Any = None, *, epochs: int = 2, repeats: int = 3,
                      batch_size: int | None = None, seed: int = 42,
                      progress: bool = True) -> dict[str, Any]:
    """Measure training and inference images/s for ``tf.data`` and for plain numpy arrays.

    Args:
        data: the loaded dataset (its train split is used throughout).
        model_cfg: ``cfg.model`` of ``keras_cnn`` (architecture and batch size).
        epochs: timed training epochs per input pipeline (after a short warm-up).
        repeats: timed passes of ``model.predict`` over the training images.
        batch_size: overrides the config's batch size.
        seed: weights and shuffle seed.
        progress: show a tqdm bar.

    Returns:
        ``{"train": {...}, "inference": {...}, "ratio_train", "ratio_inference", ...}``
        with images/s and CPU milliseconds per image for each pipeline.
    """
    from tqdm.auto import tqdm

    from .. import keras_data, keras_train

    s = keras_train.model_settings(model_cfg)
    bs = int(batch_size or s["batch_size"])
    n = len(data.train)
    train_ds = keras_data.make_dataset(data, "train", bs, shuffle=True, seed=seed)
    infer_ds = keras_data.make_dataset(data, "train", bs, shuffle=False, one_hot=False)
    x, y = keras_data.numpy_arrays(data, "train", one_hot=True)
    models = {}
    for name in ("tf.data", "numpy"):
        model = keras_train.build_cnn_for(data, s, seed=seed)
        keras_train.compile_cnn(model, int(np.ceil(n / bs)), epochs + 1, s["learning_rate"],
                                s["warmup_epochs"], s["label_smoothing"], s["jit_compile"])
        models[name] = model
    fit = {"tf.data": lambda: models["tf.data"].fit(train_ds, epochs=1, verbose=0,
                                                 shuffle=False),
           "numpy": lambda: models["numpy"].fit(x, y, batch_size=bs, shuffle=True, epochs=1,
                                                verbose=0)}
    predict = {"tf.data": lambda: models["tf.data"].predict(infer_ds, verbose=0),
               "numpy": lambda: models["numpy"].predict(x, batch_size=bs, verbose=0)}
    bar = tqdm(total=2 + 2 * (epochs + repeats), desc="keras pipelines", disable=not progress)
    _warm_up(models, x, y, bs, keras_data.tf)
    bar.update(2)
    totals = {"train": _time_rounds(fit, epochs, bar),
              "inference": _time_rounds(predict, repeats, bar)}
    bar.close()
    result: dict[str, Any] = {"images": n, "batch_size": bs, "epochs": epochs, "repeats": repeats,
                              "load_average": load_average()}
    for kind, count in (("train", epochs * n), ("inference", repeats * n)):
        result[kind] = {name: {"images_per_s": round(count / wall, 1),
                               "cpu_ms_per_image": round(1000 * cpu / count, 3),
                               "seconds": round(wall, 2)}
                        for name, (wall, cpu) in totals[kind].items()}
        fast, slow = result[kind]["tf.data"], result[kind]["numpy"]
        result[f"ratio_{kind}"] = round(fast["images_per_s"] / slow["images_per_s"], 3)
    return result


def _warm_up(models: dict[str, Any], x: np.ndarray, y: np.ndarray, bs: int, tf: Any) -> None:
    """Trace the train and predict functions for a full and the last, partial batch."""
    m = bs + len(x) % bs
    warm_ds = tf.data.Dataset.from_tensor_slices((x[:m], y[:m])).batch(bs)
    models["tf.data"].fit(warm_ds, epochs=1, verbose=0, shuffle=False)
    models["numpy"].fit(x[:m], y[:m], batch_size=bs, epochs=1, verbose=0)
    for model in models.values():
        model.predict(x[:m], batch_size=bs, verbose=0)


def format_result(result: dict[str, Any]) -> str:
    """A small text table of :func:`compare_pipelines`' result."""
    lines = [f"{'':<10}{'pipeline':<10}{'images/s':>10}{'cpu ms/img':>12}{'seconds':>9}"]
    for kind in ("train", "inference"):
        for name, row in result[kind].items():
            lines.append(f"{kind:<10}{name:<10}{row['images_per_s']:>10.1f}"
                         f"{row['cpu_ms_per_image']:>12.3f}{row['seconds']:>9.2f}")
    lines.append(f"ratio tf.data / numpy: training {result['ratio_train']:.2f}x, "
                 f"inference {result['ratio_inference']:.2f}x")
    lines.append(f"({result['images']} training images, batch {result['batch_size']}, "
                 f"{result['epochs']} timed epochs, {result['repeats']} inference passes, "
                 f"1-min load average {result['load_average']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m nbutils.bench keras", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", help="config profile (default: cpu)")
    parser.add_argument("--dataset", default=None, help="dataset spec (default: the profile's)")
    parser.add_argument("--epochs", type=int, default=2, help="timed training epochs")
    parser.add_argument("--repeats", type=int, default=3, help="timed inference passes")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the result to this file")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from .. import keras_train
    from ..config import load_config
    from ..data import load_for
    from ..hardware import library_versions
    from ..paths import atomic_write_text

    cfg = load_config(args.profile, model="keras_cnn", dataset=args.dataset)
    env = keras_train.setup_keras(cfg)
    data = load_for(cfg, progress=not args.no_progress)
    print(f"dataset {data.spec}: train={len(data.train)} images of "
          f"{data.image_size}x{data.image_size}; device {env['device']}, "
          f"precision {env['precision']}; load average {load_average()} "
          f"on {os.cpu_count()} CPUs")
    result = compare_pipelines(data, cfg.model, epochs=args.epochs, repeats=args.repeats,
                               batch_size=args.batch_size, seed=cfg.seed,
                               progress=not args.no_progress)
    result.update({"dataset": data.spec, "profile": cfg.profile, "device": env["device"],
                   "versions": {k: v for k, v in library_versions().items()
                                if k in ("tensorflow", "tensorflow-cpu", "keras", "python")}})
    print(format_result(result))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0
