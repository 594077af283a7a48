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


# The course's public git repository, from pyproject.toml ([tool.nbutils] repository): the
# Colab badge and the Colab set-up cell point at it. Empty: no badge, and on Colab the cell
# says how to get the course there.
COLAB_CELL = """\
# Google Colab only: fetch the course and install what Colab lacks (does nothing elsewhere).
import os, subprocess, sys  # noqa: E401
COURSE, HOME = {REPOSITORY!r}, "/content/cnn-course"
if "google.colab" in sys.modules and not os.path.isdir(HOME):
    if not COURSE:
        raise SystemExit(f"Upload the course folder to {HOME} (this copy names no repository).")
    subprocess.run(["git", "clone", "-q", "--depth", "1", COURSE, HOME], check=True)
    for args in (["-r", f"{HOME}/requirements-colab.txt"], ["--no-deps", "-e", HOME]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], check=True)
if "google.colab" in sys.modules:
    sys.path.insert(0, HOME)
    os.chdir(f"{HOME}/notebooks")  # `auto` then picks gpu or lowvram from Colab's GPU"""


def repository() -> str:
    """The repository address in pyproject.toml, or ``""``."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return str(config.get("tool", {}).get("nbutils", {}).get("repository", "")).strip()


def notebook_cells(source: Path) -> list[nbformat.NotebookNode]:
    """The cells of one notebook: its source's, with the Colab badge and set-up cell first."""
    cells = parse_cells(source.read_text())
    repo = repository()
    setup = nbformat.v4.new_code_cell(COLAB_CELL.replace("{REPOSITORY!r}", repr(repo)))
    setup.metadata["tags"] = ["colab-setup"]
    extra = [setup]
    if repo:
        url = repo.removeprefix("https://github.com/").removesuffix(".git")
        badge = (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
                 f"(https://colab.research.google.com/github/{url}/blob/main/notebooks/"
                 f"{source.stem}.ipynb)")
        extra.insert(0, nbformat.v4.new_markdown_cell(badge))
    return cells[:1] + extra + cells[1:]   # after the title


def build(source: Path) -> Path:
    """Write the .ipynb for one source file and return its path."""
    nb = nbformat.v4.new_notebook()
    nb.cells = notebook_cells(source)
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
    files = sorted(SRC.glob("[0-9][0-9]*_*.py"))
    if selected:
        files = [f for f in files if any(f.stem.startswith(s) for s in selected)]
    return files


if __name__ == "__main__":
    for src in sources(sys.argv[1:]):
        print("built", build(src).relative_to(ROOT))
