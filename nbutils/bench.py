"""Benchmarks: ``python -m nbutils.bench {torch,keras,hf} [options]``.

Each framework's benchmark lives in ``nbutils/benchmarks/<name>.py`` with a
``main(argv)`` function, so ``python -m nbutils.bench torch --help`` lists its options.
Benchmarks print figures and ratios measured in one run; they are not tests.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {"torch": "torch_bench", "keras": "keras_bench", "hf": "hf_bench"}


def main(argv: list[str] | None = None) -> int:
    """Dispatch to one framework's benchmark."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in BENCHMARKS:
        print(f"usage: python -m nbutils.bench {{{','.join(BENCHMARKS)}}} [options]")
        return 2
    module = importlib.import_module(f"nbutils.benchmarks.{BENCHMARKS[args[0]]}")
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
