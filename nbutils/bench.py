"""Benchmarks: ``python -m nbutils.bench {torch,keras,hf} [options]``.

The benchmarks are the frameworks' entries in :mod:`nbutils.frameworks.registry`;
each one's module has a ``main(argv)`` function, so ``python -m nbutils.bench torch
--help`` lists its options.
Benchmarks print figures and ratios measured in one run; they are not tests.
"""

from __future__ import annotations

import importlib
import sys

from .frameworks.registry import benchmarks


def main(argv: list[str] | None = None) -> int:
    """Dispatch to one framework's benchmark."""
    args = list(sys.argv[1:] if argv is None else argv)
    available = benchmarks()
    if not args or args[0] not in available:
        print(f"usage: python -m nbutils.bench {{{','.join(available)}}} [options]")
        return 2
    module = importlib.import_module(available[args[0]])
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
