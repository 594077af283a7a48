"""What the solutions in ``solutions/`` share: arguments, baselines and checked outcomes.

Each solution is a percent-script (``python solutions/02_pytorch_alexnet.py --profile cpu
--dataset imagefolder:PATH``, or ``%run`` it from a notebook cell). It does what its
lesson's exercises ask, states each expected outcome as a number compared with a
number (:meth:`SolutionRecord.expect`), prints whether it held and writes every check
to ``outputs/solutions/<lesson>__<dataset>__<profile>.json``. The tests read those
records and evaluate the comparisons themselves, so a record cannot claim an outcome
its numbers do not show.

Runs a solution trains go to ``outputs/solutions/runs`` (their own records, models and
checkpoints), so they never appear in notebook 05's comparison. The baseline an
exercise compares with is the run the lesson's notebook wrote, when there is one for
the same profile and dataset; otherwise the solution trains it.
"""

from __future__ import annotations

import argparse
import hashlib
import operator
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .paths import atomic_write_json

__all__ = ["Check", "SolutionRecord", "parse_args", "OPERATORS", "script_digest",
           "train_variant"]

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``--profile`` and ``--dataset`` of a solution script (defaults: auto, the profile's).

    Unknown arguments (Jupyter's own, when the script is opened as a notebook) are ignored.
    """
    parser = argparse.ArgumentParser(description="Run a lesson's exercise solutions.")
    parser.add_argument("--profile", default="auto", help="gpu | lowvram | cpu | smoke | auto")
    parser.add_argument("--dataset", default=None, help="e.g. imagefolder:PATH (default: the "
                        "profile's)")
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return args


def script_digest(path: str | Path) -> str:
    """SHA-256 of a solution script's code (comment and blank lines left out): a record
    says which version of the code wrote it, and rewording the prose keeps it valid."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    code = "\n".join(line.rstrip() for line in lines
                     if line.strip() and not line.lstrip().startswith("#"))
    return hashlib.sha256(code.encode()).hexdigest()


@dataclass
class Check:
    """One expected outcome: ``value op than`` (e.g. test accuracy without BatchNorm <
    test accuracy with it). ``smoke`` marks outcomes that hold on any data, so the tests
    check them under the ``smoke`` profile too."""

    exercise: int
    claim: str
    value: float
    op: str
    than: float
    smoke: bool = False

    def holds(self) -> bool:
        """Whether the comparison is true."""
        return bool(OPERATORS[self.op](self.value, self.than))


class SolutionRecord:
    """The checks one solution script makes, written as JSON when it ends."""

    def __init__(self, lesson: str, cfg: Any, script: str | Path) -> None:
        self.lesson, self.cfg, self.script = lesson, cfg, Path(script)
        self.checks: list[Check] = []
        self.measured: dict[str, Any] = {}

    def note(self, **values: Any) -> None:
        """Keep measured values that are not checks (they go into the record as they are)."""
        self.measured.update(values)

    def expect(self, exercise: int, claim: str, value: float, op: str, than: float, *,
               smoke: bool = False) -> bool:
        """Record and print one expected outcome; returns whether it held."""
        if op not in OPERATORS:
            raise ValueError(f"op must be one of {', '.join(OPERATORS)}, not {op!r}")
        check = Check(exercise, claim, float(value), op, float(than), smoke)
        self.checks.append(check)
        mark = "holds" if check.holds() else "NOT MET"
        print(f"[{mark}] exercise {exercise}: {claim}: {value:.4g} {op} {than:.4g}")
        return check.holds()

    @property
    def path(self) -> Path:
        """``outputs/solutions/<lesson>__<dataset slug>__<profile>.json``."""
        return self.cfg.outputs_dir / "solutions" / f"{self.cfg.run_id(self.lesson)}.json"

    def save(self) -> Path:
        """Write the record atomically and print a one-line summary."""
        held = sum(c.holds() for c in self.checks)
        payload = {"lesson": self.lesson, "profile": self.cfg.profile,
                   "dataset": self.cfg.dataset, "script": self.script.name,
                   "script_sha256": script_digest(self.script),  # of its code lines
                   "checks": [asdict(c) for c in self.checks], "measured": self.measured}
        path = atomic_write_json(self.path, payload)
        print(f"{held} of {len(self.checks)} expected outcomes hold; record: {path}")
        if self.cfg.profile == "smoke":
            print("(smoke: tiny runs at chance level; only outcomes that hold on any data "
                  "are meaningful)")
        return path


def train_variant(model: str, profile: str, dataset: str | None, **params: Any) -> Any:
    """Train ``model`` with ``params`` through its recipe (``nbutils.train``) into
    ``outputs/solutions/runs``, and return the run record. No params: the lesson's
    baseline run, taken from the notebook's own record when it exists."""
    import nbutils

    from .runs import notebook_record
    from .train import get_recipe

    recipe = get_recipe(model)
    base = nbutils.setup(profile, model=model, dataset=dataset, verbose=False)
    if not params:
        found = notebook_record(base, recipe.notebook)
        if found is not None:
            print(f"baseline: the notebook's run {found.run_id}")
            return found
    cfg = nbutils.setup(profile, model=model, dataset=dataset, verbose=False,
                        outputs_dir=str(base.outputs_dir / "solutions" / "runs"), **params)
    print(f"training {model} with {params or 'the lesson settings'} ...")
    return recipe.train(cfg)
