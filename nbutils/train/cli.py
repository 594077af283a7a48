"""Command line of ``python -m nbutils.train``: train one course model outside Jupyter.

    python -m nbutils.train {alexnet,resnet,keras_cnn,hf_transfer} [--profile P]
        [--dataset SPEC] [--seed N] [-p key=value ...]

``-p`` takes any setting of the model's YAML or the profile (``-p epochs=10
-p precision=fp32``), checked as ``nbutils.setup`` checks a notebook's. The record,
model, figures and predictions go where the notebook puts them; a summary line is
printed at the end. Under ``torchrun``/``accelerate launch`` only rank 0 prints it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import RECIPES, get_recipe

if TYPE_CHECKING:
    from ..records import RunRecord

__all__ = ["main", "summary_line"]


def summary_line(record: RunRecord, seconds: float, outputs_dir: Path) -> str:
    """``alexnet_small: test accuracy 0.693, training 99.1 s, total 120.4 s -> record``."""
    from ..paths import display_path
    from ..records import record_path

    return (f"{record.model}: test accuracy {record.test.accuracy:.3f}, training "
            f"{record.train_seconds:.1f} s, total {seconds:.1f} s -> "
            f"{display_path(record_path(record, outputs_dir))}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nbutils.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help=f"one of {', '.join(RECIPES)}")
    parser.add_argument("--profile", default="auto",
                        help="gpu | lowvram | cpu | smoke | auto (default: auto)")
    parser.add_argument("--dataset", default=None, help="dataset spec, e.g. imagefolder:PATH")
    parser.add_argument("--seed", type=int, default=None, help="another seed is another run")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of the model or profile (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; 0 when the model trained and its record was written."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        recipe = get_recipe(args.model)
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    import nbutils

    from ..config import ConfigError
    from ..run import parse_parameters

    main_process = int(os.environ.get("RANK", "0")) == 0
    try:
        params = parse_parameters(args.param)
        cfg = nbutils.setup(args.profile, model=recipe.model, dataset=args.dataset,
                            seed=args.seed, verbose=main_process, **params)
    except (ConfigError, ValueError, SystemExit) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    record = recipe.train(cfg)
    if record is not None:
        print(summary_line(record, time.perf_counter() - start, cfg.outputs_dir))
    from .. import distributed

    distributed.shutdown()
    return 0
