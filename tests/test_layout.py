"""The project's shape: one reference page per notebook, a short README, short functions."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_notebook_has_a_reference_page_and_the_readme_links_it() -> None:
    notebooks = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    pages = sorted(p.stem for p in (REPO / "docs" / "notebooks").glob("*.md"))
    assert notebooks and pages == notebooks
    readme = (REPO / "README.md").read_text()
    for name in notebooks:
        assert f"(docs/notebooks/{name}.md)" in readme, name
    for page in pages:
        headings = re.findall(r"^## (.+)$", (REPO / "docs" / "notebooks" / f"{page}.md")
                              .read_text(), re.M)
        for wanted in ("What it teaches", "Run it", "Outputs", "Measured"):
            assert wanted in headings, (page, wanted)


def test_readme_is_a_short_path_whose_links_resolve() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for target in re.findall(r"\]\(([^)#:]+)\)", text):
        assert (REPO / target).exists(), target


def test_at_most_three_functions_in_nbutils_are_longer_than_sixty_lines() -> None:
    long = []
    for path in (REPO / "nbutils").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > 60:
                    long.append(f"{path.relative_to(REPO)}:{node.name}")
    assert len(long) <= 3, long
