"""The exercise solutions in ``solutions/``: they run, and their expected outcomes hold.

Two kinds of evidence:

* every solution runs under the ``smoke`` profile in a throw-away project (after the
  training recipes have written the smoke models that 05-07 need; all in one process,
  ``solutions_driver.py``); the outcomes marked ``smoke`` (those that hold on any data)
  must hold there;
* ``solutions/records/`` keeps the record each solution wrote on the real CIFAR-10
  subset under the ``cpu`` profile. This test evaluates every comparison in them from
  the numbers (not from a stored verdict) and refuses a record written by another
  version of its script.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nbutils import exercises

REPO_ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((REPO_ROOT / "solutions").glob("[0-9]*.py"))
RECORDS = REPO_ROOT / "solutions" / "records"
NOTEBOOK_SOURCES = REPO_ROOT / "notebooks" / "src"
TIMEOUT = 600


def _env(root: Path) -> dict[str, str]:
    env = {**os.environ, "NBUTILS_ROOT": str(root), "TQDM_DISABLE": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg"}
    env.pop("NBUTILS_PROFILE", None)
    return env


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Every solution run under smoke in a project copy, by ``solutions_driver.py`` (one
    process: it trains the smoke models of 02-04 that 05-07 read, then runs each script).
    Returns the project root and the folder with each script's output and status."""
    root = tmp_path_factory.mktemp("course") / "project"
    shutil.copytree(REPO_ROOT / "configs", root / "configs")
    (root / "pyproject.toml").write_text('[project]\nname = "course-copy"\n')
    logs = tmp_path_factory.mktemp("solution-logs")
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("solutions_driver.py")),
                           str(logs), *map(str, SOLUTIONS)], cwd=root, env=_env(root),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return root, logs


def _exercise_numbers(lesson: str) -> set[int]:
    """The numbers of the exercises listed at the end of the lesson's notebook."""
    text = (NOTEBOOK_SOURCES / f"{lesson}.py").read_text()
    section = text[text.index("# ## Exercises"):]
    return {int(n) for n in re.findall(r"^# (\d)\. ", section, flags=re.MULTILINE)}


def test_every_lesson_has_a_solution() -> None:
    lessons = {p.stem for p in NOTEBOOK_SOURCES.glob("[0-9]*.py")}
    assert lessons == {p.stem for p in SOLUTIONS}
    for lesson in lessons:
        text = (NOTEBOOK_SOURCES / f"{lesson}.py").read_text()
        assert f"`solutions/{lesson}.py`" in text, f"{lesson} does not point to its solution"


@pytest.mark.parametrize("script", SOLUTIONS, ids=lambda p: p.stem)
def test_solution_runs_under_smoke(script: Path, smoke_runs: tuple[Path, Path]) -> None:
    root, logs = smoke_runs
    status = json.loads((logs / "status.json").read_text())[script.stem]
    output = (logs / f"{script.stem}.log").read_text()
    assert status == "ok", output[-2000:] + status
    path = root / "outputs" / "solutions" / f"{script.stem}__shapes__smoke.json"
    record = json.loads(path.read_text())
    assert record["script_sha256"] == exercises.script_digest(script)
    checks = [exercises.Check(**c) for c in record["checks"]]
    assert checks, "the solution checked nothing"
    for check in checks:
        if check.smoke:
            assert check.holds(), f"exercise {check.exercise}: {check.claim} " \
                                  f"({check.value} {check.op} {check.than})"
    assert "expected outcomes hold" in output


@pytest.mark.parametrize("script", SOLUTIONS, ids=lambda p: p.stem)
def test_real_data_outcomes_hold(script: Path) -> None:
    path = RECORDS / f"{script.stem}.json"
    assert path.is_file(), f"no real-data record for {script.name}: run it with --profile cpu " \
                           f"--dataset imagefolder:<the CIFAR-10 subset> and copy its record here"
    record = json.loads(path.read_text())
    assert (record["profile"], record["lesson"]) == ("cpu", script.stem)
    assert record["script_sha256"] == exercises.script_digest(script), \
        f"{path.name} was written by another version of {script.name}: run it again"
    checks = [exercises.Check(**c) for c in record["checks"]]
    assert {c.exercise for c in checks} == _exercise_numbers(script.stem), \
        "every exercise of the lesson has a checked outcome, and only those"
    failed = [f"exercise {c.exercise}: {c.claim} ({c.value:.4g} {c.op} {c.than:.4g})"
              for c in checks if not c.holds()]
    assert not failed, "expected outcomes that do not hold:\n" + "\n".join(failed)


def test_check_evaluates_its_comparison() -> None:
    assert exercises.Check(1, "x", 0.5, "<", 0.7).holds()
    assert not exercises.Check(1, "x", 0.7, "<", 0.5).holds()
    assert exercises.Check(1, "x", 2.0, "==", 2.0).holds()
    with pytest.raises(ValueError, match="op must be"):
        exercises.SolutionRecord("01_eda", None, __file__).expect(1, "x", 1.0, "!=", 2.0)


def test_parse_args_ignores_jupyter_arguments() -> None:
    args = exercises.parse_args(["--profile", "cpu", "-f", "kernel-1.json"])
    assert (args.profile, args.dataset) == ("cpu", None)


def test_record_is_written_and_baseline_found(tmp_project: Path, record_factory,
                                              monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import nbutils
    from nbutils.records import write_record
    from nbutils.runs import notebook_record

    cfg = nbutils.setup("smoke", model="alexnet", verbose=False)
    assert notebook_record(cfg, "02_pytorch_alexnet") is None
    write_record(record_factory(), cfg.outputs_dir)
    found = notebook_record(cfg, "02_pytorch_alexnet")
    assert found is not None and found.test.accuracy == 0.5
    # train_variant without params returns the notebook's run instead of training again
    assert exercises.train_variant("alexnet", "smoke", None).run_id == found.run_id

    script = tmp_project / "02_pytorch_alexnet.py"
    script.write_text("# a solution\n")
    record = exercises.SolutionRecord("02_pytorch_alexnet", cfg, script)
    assert record.expect(1, "lower", 0.4, "<", 0.5) and not record.expect(3, "gap", 0.1, ">", 0.2)
    record.note(extra=[1, 2])
    path = record.save()
    assert path == tmp_project / "outputs" / "solutions" / "02_pytorch_alexnet__shapes__smoke.json"
    saved = json.loads(path.read_text())
    assert saved["script_sha256"] == exercises.script_digest(script)
    assert [c["exercise"] for c in saved["checks"]] == [1, 3] and saved["measured"]["extra"] == [1, 2]
    out = capsys.readouterr().out
    assert "[holds] exercise 1" in out and "[NOT MET] exercise 3" in out and "1 of 2" in out


def test_digest_follows_code_not_prose(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text("# %% [markdown]\n# Old words.\n\n# %%\nx = 1\n")
    b.write_text("# %% [markdown]\n# New, longer words.\n#\n# More.\n\n# %%\nx = 1   \n")
    c.write_text("# %% [markdown]\n# Old words.\n\n# %%\nx = 2\n")
    assert exercises.script_digest(a) == exercises.script_digest(b)
    assert exercises.script_digest(a) != exercises.script_digest(c)
