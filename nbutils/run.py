"""Run the course's notebooks in order with papermill.

    python -m nbutils.run --profile cpu [--dataset SPEC] [--only 01,03] [-p epochs=3 ...]

Executed notebooks go to ``outputs/notebooks/<profile>/``. A summary table is printed
at the end; when a notebook fails, the runner names the notebook and the cell,
and exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .paths import project_root

__all__ = ["NotebookResult", "discover_notebooks", "parse_parameters", "check_parameters",
           "run_notebooks", "main"]


@dataclass
class NotebookResult:
    """How one notebook ended."""

    name: str
    status: str  # "ok" | "failed" | "skipped"
    seconds: float = 0.0
    output: Path | None = None
    error: str = ""
    records: list[str] = field(default_factory=list)


# the training notebook that --seeds repeats (the fastest one, on every profile)
SEED_NOTEBOOK = "02"
# a seed replicate trains the model again and skips the notebook's side experiments
SEED_REPLICATE_SKIPS = {"compare_norms": False, "hand_epochs": 0}


def discover_notebooks(folder: Path, only: list[str] | None = None) -> list[Path]:
    """Numbered notebooks ``NN_*.ipynb`` (and ``NNb_*.ipynb``) in order, optionally only those with given prefixes."""
    found = sorted(p for p in folder.glob("[0-9][0-9]*_*.ipynb"))
    if only:
        wanted = [o.strip() for o in only if o.strip()]
        unknown = [w for w in wanted if not any(p.name.startswith(w) for p in found)]
        if unknown:
            names = ", ".join(p.stem for p in found) or "none"
            raise SystemExit(f"--only {','.join(unknown)}: no such notebook (have: {names})")
        found = [p for p in found if any(p.name.startswith(w) for w in wanted)]
    return found


def parse_parameters(pairs: list[str]) -> dict[str, Any]:
    """``["epochs=3", "dataset=shapes"]`` -> ``{"epochs": 3, "dataset": "shapes"}`` (YAML-typed)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"-p expects key=value, got '{pair}'")
        key, raw = pair.split("=", 1)
        try:
            params[key.strip()] = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            params[key.strip()] = raw
    return params


def _notebook_parameters(path: Path) -> set[str]:
    """Names assigned in the cell tagged ``parameters``."""
    nb = json.loads(path.read_text())
    names: set[str] = set()
    for cell in nb.get("cells", []):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = "".join(cell.get("source", ""))
            for line in src.splitlines():
                head = line.split("#", 1)[0]
                if "=" in head and not head.startswith((" ", "\t")):
                    names.add(head.split("=", 1)[0].strip())
    return names


def check_parameters(parameters: dict[str, Any], paths: list[Path]) -> None:
    """A ``-p`` key that no selected notebook accepts is an error with a did-you-mean.

    Dropping it silently would run the profile's value while the user believes the
    run used theirs.
    """
    import difflib

    accepted = set().union(*(_notebook_parameters(p) for p in paths)) if paths else set()
    for key in parameters:
        if key in accepted:
            continue
        close = difflib.get_close_matches(key, sorted(accepted), n=1, cutoff=0.5)
        hint = f"Did you mean '{close[0]}'? " if close else ""
        names = ", ".join(p.stem for p in paths)
        raise SystemExit(f"-p {key}=...: no selected notebook ({names}) has a parameter "
                         f"'{key}'. {hint}Parameters they accept: {', '.join(sorted(accepted))}")


def _failure_message(exc: BaseException, path: Path) -> str:
    cell = getattr(exc, "cell_index", None)
    count = getattr(exc, "exec_count", None)
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    where = f"cell {cell}" if cell is not None else "an unknown cell"
    if count is not None:
        where += f" (execution count {count})"
    return f"{path.name} failed in {where}: {ename}: {evalue}".strip()


def run_notebooks(
    profile: str,
    dataset: str | None = None,
    only: list[str] | None = None,
    parameters: dict[str, Any] | None = None,
    notebooks_dir: Path | None = None,
    output_dir: Path | None = None,
    kernel: str = "python3",
    keep_going: bool = False,
    execute: Any = None,
    seeds: list[int] | None = None,
) -> list[NotebookResult]:
    """Execute notebooks in order; returns one :class:`NotebookResult` per notebook run.

    With ``seeds``, the seed-spread notebook (:data:`SEED_NOTEBOOK`, the fastest training
    notebook) runs again right after itself with each of these seeds; notebook 05 shows
    how much its test accuracy moves. ``execute`` defaults to
    ``papermill.execute_notebook`` (tests pass a stand-in).
    """
    from tqdm.auto import tqdm

    root = project_root()
    notebooks_dir = notebooks_dir or root / "notebooks"
    output_dir = output_dir or root / "outputs" / "notebooks" / profile
    output_dir.mkdir(parents=True, exist_ok=True)
    if execute is None:
        import papermill

        execute = papermill.execute_notebook
    paths = discover_notebooks(notebooks_dir, only)
    if not paths:
        raise SystemExit(f"No notebooks found in {notebooks_dir}")
    check_parameters(parameters or {}, paths)
    jobs = [(path, None) for path in paths]
    for path in paths:
        if path.stem.split("_", 1)[0] == SEED_NOTEBOOK and seeds:
            at = jobs.index((path, None)) + 1
            jobs[at:at] = [(path, int(s)) for s in seeds]
    results: list[NotebookResult] = []
    bar = tqdm(jobs, desc=f"course [{profile}]", unit="notebook")
    for path, seed in bar:
        name = path.stem if seed is None else f"{path.stem}__seed-{seed}"
        bar.set_postfix_str(name)
        if not keep_going and any(r.status == "failed" for r in results):
            results.append(NotebookResult(name, "skipped"))
            continue
        params = {"profile": profile, **({"dataset": dataset} if dataset is not None else {}),
                  **(parameters or {}), **({"seed": seed} if seed is not None else {}),
                  **(SEED_REPLICATE_SKIPS if seed is not None else {})}
        accepted = _notebook_parameters(path)
        result = _run_one(execute, path, output_dir / f"{name}.ipynb", kernel, notebooks_dir,
                          {k: v for k, v in params.items() if k in accepted},
                          root / "outputs" / "metrics")
        result.name = name
        results.append(result)
    return results


def _run_one(execute: Any, path: Path, out: Path, kernel: str, cwd: Path,
             params: dict[str, Any], metrics_dir: Path) -> NotebookResult:
    """Execute one notebook; its result, with the run records it wrote."""
    from tqdm.auto import tqdm

    start = time.time()
    try:
        execute(str(path), str(out), parameters=params, kernel_name=kernel, cwd=str(cwd),
                progress_bar=True, request_save_on_cell_execute=True,
                # the kernel's own start-up warnings (transport) are not the learner's
                extra_arguments=["--IPKernelApp.log_level=ERROR"])
    except Exception as exc:  # noqa: BLE001 - reported, not swallowed
        message = _failure_message(exc, path)
        first = message.splitlines()[0] if message else path.name
        tqdm.write(f"FAILED  {first}  (the whole message is below the summary)")
        return NotebookResult(path.stem, "failed", time.time() - start, out, message)
    new = sorted(p.name for p in metrics_dir.glob(f"{path.stem}__*.json")
                 if p.stat().st_mtime >= start)
    return NotebookResult(path.stem, "ok", time.time() - start, out, records=new)


def _accuracy(record_name: str) -> str:
    try:
        data = json.loads((project_root() / "outputs" / "metrics" / record_name).read_text())
        return f"{data['test']['accuracy']:.3f}"
    except (OSError, KeyError, ValueError):
        return "-"


def format_summary(results: list[NotebookResult], profile: str | None = None) -> str:
    """A plain-text table: notebook, status, time, test accuracy of the record written.

    Under the ``smoke`` profile a last line says that chance-level accuracy is expected.
    """
    lines = [f"{'notebook':<28} {'status':<8} {'time':>8}  {'test acc':>8}  record",
             "-" * 80]
    for r in results:
        rec = r.records[0] if r.records else ""
        acc = _accuracy(rec) if rec else "-"
        lines.append(f"{r.name:<28} {r.status:<8} {r.seconds:>7.1f}s  {acc:>8}  {rec}")
    if profile == "smoke":
        from .config import SMOKE_NOTE

        lines.append(f"({SMOKE_NOTE})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m nbutils.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="auto",
                        help="gpu | lowvram | cpu | smoke | auto (default: auto)")
    parser.add_argument("--dataset", default=None, help="dataset spec, e.g. imagefolder:PATH")
    parser.add_argument("--only", default=None, help="comma-separated prefixes, e.g. 01,03")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                        help="extra notebook parameter (repeatable)")
    parser.add_argument("--keep-going", action="store_true",
                        help="run the remaining notebooks after a failure")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name")
    parser.add_argument("--seeds", default=None, metavar="S1,S2",
                        help=f"also run notebook {SEED_NOTEBOOK} with these seeds (05 shows the "
                             "spread of its accuracy), e.g. 43,44")
    args = parser.parse_args(argv)

    profile = args.profile
    if profile == "auto":
        from .config import choose_profile

        profile = choose_profile()
    from .config import available_profiles

    if profile not in available_profiles():
        parser.error(f"unknown profile '{profile}' (have: {', '.join(available_profiles())})")
    only = args.only.split(",") if args.only else None
    started = time.time()
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()] if args.seeds else None
    except ValueError:
        parser.error(f"--seeds takes whole numbers separated by commas, got '{args.seeds}'")
    results = run_notebooks(profile, args.dataset, only, parse_parameters(args.param),
                            kernel=args.kernel, keep_going=args.keep_going, seeds=seeds)
    print()
    print(format_summary(results, profile))
    from .gradcam.runs import recent_records_summary

    gradcam = recent_records_summary(project_root() / "outputs", since=started)
    if gradcam:
        print(f"\n{gradcam}")
    failures = [r for r in results if r.status == "failed"]
    for r in failures:
        print(f"\nFAILED: {r.error}\n  see {r.output}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
