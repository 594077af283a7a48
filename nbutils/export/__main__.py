"""``python -m nbutils.export MODEL_DIR --format onnx [--int8]``: export and check a model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import ExportError, export_onnx


def main(argv: list[str] | None = None) -> int:
    """Export one saved model; print its parity, size and latency; 1 on failure."""
    parser = argparse.ArgumentParser(
        prog="python -m nbutils.export",
        description="Export a trained course model (outputs/models/<run id>) to ONNX and check "
                    "that ONNX Runtime predicts what the framework predicts.")
    parser.add_argument("model_dir", help="the model folder a training notebook saved")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    parser.add_argument("--out", help="export folder (default MODEL_DIR/onnx)")
    parser.add_argument("--int8", action="store_true",
                        help="also write a dynamically quantised copy (OUT-int8) and report "
                             "its size, latency and accuracy change")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency timings")
    args = parser.parse_args(argv)
    here = [None if p is None else Path(p).expanduser().absolute()  # relative to the shell
            for p in (args.model_dir, args.out)]
    try:
        report = export_onnx(here[0], here[1], int8=args.int8,
                             latency=not args.no_latency)
    except (ExportError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
