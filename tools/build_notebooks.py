"""Build notebooks/NN_name.ipynb from the percent-format sources in notebooks/src/.

Usage: python tools/build_notebooks.py [NN ...]      (all notebooks when none given)

A source file is plain Python split into cells by ``# %%`` lines:

    # %% [markdown]
    # # A title
    # Some text.
    # %% tags=["parameters"]
    profile = "auto"
    # %%
    print(profile)

Outputs are not kept: run ``make notebooks`` to build and execute them under the
``smoke`` profile, which stores the outputs that nbval checks.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "notebooks" / "src"
HEADER = re.compile(r"^# %%(?P<rest>.*)$")


def parse_cells(text: str) -> list[nbformat.NotebookNode]:
    """Split percent-format text into notebook cells."""
    cells: list[nbformat.NotebookNode] = []
    kind, tags, lines = None, [], []

    def flush() -> None:
        if kind is None:
            return
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(re.sub(r"^# ?", "", ln) for ln in body.splitlines())
            cell = nbformat.v4.new_markdown_cell(body)
        else:
            cell = nbformat.v4.new_code_cell(body)
        if tags:
            cell.metadata["tags"] = tags
        cells.append(cell)

    for line in text.splitlines():
        match = HEADER.match(line)
        if match:
            flush()
            rest = match.group("rest")
            kind = "markdown" if "[markdown]" in rest else "code"
            tag_match = re.search(r"tags=(\[.*?\])", rest)
            tags = json.loads(tag_match.group(1)) if tag_match else []
            lines = []
        elif kind is not None:
            lines.append(line)
    flush()
    return cells


def build(source: Path) -> Path:
    """Write the .ipynb for one source file and return its path."""
    nb = nbformat.v4.new_notebook()
    nb.cells = parse_cells(source.read_text())
    # the kernel `make lab` registers, so a notebook opens on the course's environment
    nb.metadata["kernelspec"] = {"name": "cnn-course", "display_name": "Python (CNN course)",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{source.stem[:2]}-{i:03d}"
    target = ROOT / "notebooks" / f"{source.stem}.ipynb"
    nbformat.write(nb, target)
    return target


def sources(selected: list[str]) -> list[Path]:
    """Source files, all or those whose names start with the given prefixes."""
    files = sorted(SRC.glob("[0-9][0-9]_*.py"))
    if selected:
        files = [f for f in files if any(f.stem.startswith(s) for s in selected)]
    return files


if __name__ == "__main__":
    for src in sources(sys.argv[1:]):
        print("built", build(src).relative_to(ROOT))
