"""The project's shape: one reference page per notebook, a short README, short functions."""

from __future__ import annotations

import ast
import re
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_notebook_has_a_reference_page_and_the_readme_links_it() -> None:
    notebooks = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
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


def test_stored_notebooks_match_their_sources() -> None:
    """Every ``notebooks/NN_*.ipynb`` holds exactly the cells of ``notebooks/src/NN_*.py``.

    Editing a source without ``make notebooks`` (or a notebook without its source) fails.
    """
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("build_notebooks",
                                                  REPO / "tools" / "build_notebooks.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    sources = sorted((REPO / "notebooks" / "src").glob("[0-9][0-9]*_*.py"))
    assert [s.stem for s in sources] == sorted(
        p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
    for src in sources:
        want = [(c.cell_type, c.source, c.metadata.get("tags", []))
                for c in build.notebook_cells(src)]
        stored = json.loads((REPO / "notebooks" / f"{src.stem}.ipynb").read_text())["cells"]
        have = [(c["cell_type"], "".join(c["source"]), c.get("metadata", {}).get("tags", []))
                for c in stored]
        assert have == want, f"{src.stem}.ipynb differs from its source: run `make notebooks`"


def test_under_ci_a_skip_for_a_pinned_package_fails(tmp_path: Path) -> None:
    import os
    import shutil
    import subprocess
    import sys

    (tmp_path / "tests").mkdir()
    shutil.copy(REPO / "tests" / "conftest.py", tmp_path / "tests" / "conftest.py")
    (tmp_path / "requirements.txt").write_text("hypothesis==1.0\n")
    (tmp_path / "tests" / "test_x.py").write_text(
        "import pytest\n"
        "def test_pinned():\n    pytest.importorskip('hypothesis.not_a_module')\n"
        "def test_optional():\n    pytest.importorskip('not_pinned_anywhere')\n")
    for ci, want in (("true", "1 failed, 1 skipped"), ("", "2 skipped")):
        env = {**os.environ, "CI": ci}
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "tests"], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
        assert want in proc.stdout, proc.stdout[-800:]


def test_requirements_pick_a_tensorflow_build_per_platform() -> None:
    from packaging.requirements import Requirement

    def selected(system: str) -> set[str]:
        env = {"sys_platform": system, "platform_system": system.capitalize()}
        names = set()
        for line in (REPO / "requirements.txt").read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                req = Requirement(line)
                if req.marker is None or req.marker.evaluate(env):
                    names.add(req.name)
        return names

    assert {"tensorflow-cpu"} <= selected("linux") and "tensorflow" not in selected("linux")
    assert {"tensorflow"} <= selected("darwin") and "tensorflow-cpu" not in selected("darwin")
    assert selected("linux") - {"tensorflow-cpu"} == selected("darwin") - {"tensorflow"}


def _colab_cell(repository: str) -> str:
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_nb", REPO / "tools" / "build_notebooks.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build.COLAB_CELL.replace("{REPOSITORY!r}", repr(repository))


def test_the_colab_cell_does_nothing_outside_colab(monkeypatch, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a[0]))
    monkeypatch.setattr(os, "chdir", lambda path: calls.append(["chdir", path]))
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(_colab_cell("https://example.org/course.git"), {})
    assert calls == []


def test_the_colab_cell_installs_the_course_in_colab(monkeypatch) -> None:
    import os
    import subprocess
    import sys
    import types

    import pytest

    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a[0]))
    monkeypatch.setattr(os, "chdir", lambda path: calls.append(["chdir", path]))
    monkeypatch.setattr(os.path, "isdir", lambda path: False)
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    exec(_colab_cell("https://example.org/course.git"), {})
    assert calls[0] == ["git", "clone", "-q", "--depth", "1", "https://example.org/course.git",
                        "/content/cnn-course"]
    assert calls[1][-3:] == ["-q", "-r", "/content/cnn-course/requirements-colab.txt"]
    assert calls[2][-3:] == ["--no-deps", "-e", "/content/cnn-course"]
    assert calls[3] == ["chdir", "/content/cnn-course/notebooks"]
    assert sys.path[0] == "/content/cnn-course"
    with pytest.raises(SystemExit, match="Upload the course folder"):
        exec(_colab_cell(""), {})
    colab = (REPO / "requirements-colab.txt").read_text()
    assert not any(line.split("=")[0].strip() in ("torch", "torchvision", "tensorflow", "keras")
                   for line in colab.splitlines())


def test_stored_notebook_outputs_name_no_machine_paths() -> None:
    """Warnings and tracebacks in stored outputs must not carry this machine's paths."""
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        text = path.read_text()
        for marker in (str(Path(tempfile.gettempdir()) / "ipykernel"), str(REPO) + "/",
                       str(Path.home()) + "/"):
            assert marker not in text, f"{path.name} stores a local path ({marker})"
