"""The papermill course runner: discovery, parameters, failures, the summary and exit code."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from nbutils import run
from nbutils.run import discover_notebooks, parse_parameters, run_notebooks


def write_notebook(path: Path, parameters: str, *cells: str) -> Path:
    """A notebook with a ``parameters`` cell and the given code cells."""
    nb = nbformat.v4.new_notebook()
    param_cell = nbformat.v4.new_code_cell(parameters)
    param_cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), param_cell,
                *(nbformat.v4.new_code_cell(c) for c in cells)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


class CellError(Exception):
    """Stands in for papermill's PapermillExecutionError (same attributes)."""

    def __init__(self, cell_index: int, exec_count: int, ename: str, evalue: str) -> None:
        super().__init__(f"{ename}: {evalue}")
        self.cell_index, self.exec_count, self.ename, self.evalue = (
            cell_index, exec_count, ename, evalue)


class FakeExecute:
    """Records calls; raises for notebooks named in ``fail``; may write a run record."""

    def __init__(self, fail: dict[str, Exception] | None = None,
                 records: dict[str, float] | None = None, metrics_dir: Path | None = None):
        self.calls: list[tuple[str, str, dict, dict]] = []
        self.fail = fail or {}
        self.records = records or {}
        self.metrics_dir = metrics_dir

    def __call__(self, input_path: str, output_path: str, parameters: dict, **kwargs) -> None:
        name = Path(input_path).stem
        self.calls.append((name, output_path, dict(parameters), kwargs))
        if name in self.fail:
            raise self.fail[name]
        Path(output_path).write_text("{}")
        if name in self.records:
            self.metrics_dir.mkdir(parents=True, exist_ok=True)
            (self.metrics_dir / f"{name}__shapes__smoke.json").write_text(
                json.dumps({"test": {"accuracy": self.records[name]}}))


@pytest.fixture
def course(tmp_project: Path) -> Path:
    """A project copy with three tiny notebooks (and a non-numbered one) in notebooks/."""
    nbs = tmp_project / "notebooks"
    write_notebook(nbs / "01_eda.ipynb", 'profile = "auto"\ndataset = None  # a spec\n')
    write_notebook(nbs / "02_train.ipynb",
                   'profile = "auto"\nepochs = None\n# lr = 0.1 is a comment\n'
                   'if True:\n    indented = 1\n')
    write_notebook(nbs / "03_compare.ipynb", 'profile = "auto"\n')
    write_notebook(nbs / "scratch.ipynb", 'profile = "auto"\n')
    return tmp_project


def test_parse_parameters_types_values_like_yaml() -> None:
    params = parse_parameters(["epochs=3", "lr=0.001", "name=alexnet", "flag=true",
                               "empty=", "sizes=[32, 64]", " dataset =imagefolder:a=b",
                               "broken=[1,"])
    assert params == {"epochs": 3, "lr": 0.001, "name": "alexnet", "flag": True, "empty": None,
                      "sizes": [32, 64], "dataset": "imagefolder:a=b", "broken": "[1,"}
    assert isinstance(params["epochs"], int) and isinstance(params["lr"], float)
    with pytest.raises(SystemExit, match="-p expects key=value, got 'epochs'"):
        parse_parameters(["epochs"])


def test_discover_notebooks(course: Path) -> None:
    nbs = course / "notebooks"
    (nbs / "1_short.ipynb").write_text("{}")
    names = [p.name for p in discover_notebooks(nbs)]
    assert names == ["01_eda.ipynb", "02_train.ipynb", "03_compare.ipynb"]
    assert [p.stem for p in discover_notebooks(nbs, ["03", " 01", ""])] == ["01_eda", "03_compare"]
    assert [p.stem for p in discover_notebooks(nbs, ["02_tr"])] == ["02_train"]
    with pytest.raises(SystemExit) as err:
        discover_notebooks(nbs, ["01", "09"])
    assert "--only 09: no such notebook" in str(err.value)
    assert "01_eda, 02_train, 03_compare" in str(err.value)
    with pytest.raises(SystemExit, match="have: none"):
        discover_notebooks(nbs / "missing", ["01"])


def test_notebook_parameters_are_read_from_the_tagged_cell(course: Path) -> None:
    names = run._notebook_parameters(course / "notebooks" / "02_train.ipynb")
    assert names == {"profile", "epochs"}


def test_successful_run_passes_only_accepted_parameters(course: Path, tmp_path: Path) -> None:
    fake = FakeExecute(records={"02_train": 0.75}, metrics_dir=course / "outputs" / "metrics")
    out = tmp_path / "executed"
    results = run_notebooks("smoke", dataset="shapes", parameters={"epochs": 2},
                            output_dir=out, execute=fake)
    assert [(r.name, r.status) for r in results] == [
        ("01_eda", "ok"), ("02_train", "ok"), ("03_compare", "ok")]
    params = {name: p for name, _out, p, _kw in fake.calls}
    assert params == {"01_eda": {"profile": "smoke", "dataset": "shapes"},
                      "02_train": {"profile": "smoke", "epochs": 2},
                      "03_compare": {"profile": "smoke"}}
    name, output, _p, kwargs = fake.calls[0]
    assert output == str(out / "01_eda.ipynb") and (out / "01_eda.ipynb").is_file()
    assert kwargs["cwd"] == str(course / "notebooks") and kwargs["kernel_name"] == "python3"
    assert results[1].records == ["02_train__shapes__smoke.json"]
    assert results[0].records == [] and results[0].output == out / "01_eda.ipynb"
    table = run.format_summary(results)
    assert "02_train" in table and "0.750" in table and "02_train__shapes__smoke.json" in table
    assert "accuracy near chance is expected" in run.format_summary(results, "smoke")
    assert "chance" not in table
    odd = run.format_summary([run.NotebookResult("09_x", "ok", 1.0, records=["gone.json"])])
    assert odd.splitlines()[-1].split()[:4] == ["09_x", "ok", "1.0s", "-"]


def test_a_parameter_no_notebook_accepts_is_an_error(course: Path, tmp_path: Path) -> None:
    fake = FakeExecute()
    with pytest.raises(SystemExit, match="-p epoch=.*no selected notebook.*Did you mean 'epochs'"):
        run_notebooks("smoke", parameters={"epoch": 2}, output_dir=tmp_path, execute=fake)
    with pytest.raises(SystemExit, match="'epochs'.*Parameters they accept: dataset, profile"):
        run_notebooks("smoke", only=["01"], parameters={"epochs": 2}, output_dir=tmp_path,
                      execute=fake)
    assert fake.calls == []  # refused before any notebook ran


def test_failure_names_notebook_and_cell_and_skips_the_rest(course: Path, tmp_path) -> None:
    fake = FakeExecute(fail={"02_train": CellError(4, 3, "ValueError", "boom")})
    results = run_notebooks("smoke", output_dir=tmp_path / "o", execute=fake)
    assert [(r.name, r.status) for r in results] == [
        ("01_eda", "ok"), ("02_train", "failed"), ("03_compare", "skipped")]
    assert [c[0] for c in fake.calls] == ["01_eda", "02_train"]
    error = results[1].error
    assert error == "02_train.ipynb failed in cell 4 (execution count 3): ValueError: boom"
    assert results[1].output == tmp_path / "o" / "02_train.ipynb"


def test_keep_going_runs_the_remaining_notebooks(course: Path, tmp_path) -> None:
    fake = FakeExecute(fail={"01_eda": RuntimeError("kernel died")})
    results = run_notebooks("smoke", output_dir=tmp_path / "o", execute=fake, keep_going=True)
    assert [(r.name, r.status) for r in results] == [
        ("01_eda", "failed"), ("02_train", "ok"), ("03_compare", "ok")]
    assert results[0].error == "01_eda.ipynb failed in an unknown cell: RuntimeError: kernel died"


def test_no_notebooks_is_an_error(tmp_project: Path, tmp_path: Path) -> None:
    (tmp_project / "notebooks").mkdir()
    with pytest.raises(SystemExit, match="No notebooks found"):
        run_notebooks("smoke", output_dir=tmp_path / "o", execute=FakeExecute())


def _patch_papermill(monkeypatch, fake: FakeExecute) -> None:
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", fake)


def test_main_exits_1_and_prints_the_table_on_failure(course, monkeypatch, capsys) -> None:
    fake = FakeExecute(fail={"02_train": CellError(5, 2, "KeyError", "'x'")},
                       records={"01_eda": 0.5}, metrics_dir=course / "outputs" / "metrics")
    _patch_papermill(monkeypatch, fake)
    code = run.main(["--profile", "smoke", "--only", "01,02", "-p", "epochs=2",
                     "--dataset", "shapes:8"])
    out = capsys.readouterr().out
    assert code == 1
    assert "notebook" in out and "status" in out and "test acc" in out
    assert "01_eda" in out and "0.500" in out and "failed" in out
    assert "FAILED: 02_train.ipynb failed in cell 5 (execution count 2): KeyError: 'x'" in out
    assert str(course / "outputs" / "notebooks" / "smoke" / "02_train.ipynb") in out
    assert [c[0] for c in fake.calls] == ["01_eda", "02_train"]
    assert fake.calls[1][2] == {"profile": "smoke", "epochs": 2}


def test_main_exits_0_when_everything_passes(course, monkeypatch, capsys) -> None:
    fake = FakeExecute()
    _patch_papermill(monkeypatch, fake)
    monkeypatch.setenv("NBUTILS_PROFILE", "smoke")
    assert run.main(["--keep-going"]) == 0
    out = capsys.readouterr().out
    assert "FAILED" not in out and out.count(" ok ") == 3
    assert {c[2]["profile"] for c in fake.calls} == {"smoke"}


def test_main_rejects_an_unknown_profile(course, capsys) -> None:
    with pytest.raises(SystemExit) as err:
        run.main(["--profile", "turbo"])
    assert err.value.code == 2
    assert "unknown profile 'turbo'" in capsys.readouterr().err


@pytest.mark.slow
def test_real_papermill_run_reports_the_failing_cell(tmp_project: Path, tmp_path: Path) -> None:
    """One real execution: parameters are injected and a failing cell is named."""
    nbs = tmp_project / "notebooks"
    write_notebook(nbs / "01_tiny.ipynb", 'profile = "auto"\nfail = False\n',
                   'assert profile == "smoke"\nif fail:\n    raise ValueError("planted")')
    results = run_notebooks("smoke", parameters={"fail": True}, output_dir=tmp_path / "o")
    assert [r.status for r in results] == ["failed"]
    assert "01_tiny.ipynb failed in cell 3" in results[0].error
    assert "ValueError: planted" in results[0].error
    executed = nbformat.read(tmp_path / "o" / "01_tiny.ipynb", as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "fail = True" in injected[0].source


@pytest.mark.parametrize("notebook", sorted((Path(__file__).parents[1] / "notebooks")
                                            .glob("[0-9][0-9]*_*.ipynb")), ids=lambda p: p.stem)
def test_papermill_reads_every_parameter_of_each_course_notebook(notebook: Path) -> None:
    """``papermill --help-notebook`` lists each parameter with its type and help text.

    A second ``=`` on a line (say, inside the comment) makes papermill skip that parameter
    with a warning, so instructors would not see it.
    """
    import papermill

    nb = nbformat.read(notebook, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assigned = [line.split("=")[0].strip() for line in cell.source.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    inferred = papermill.inspect_notebook(str(notebook))
    assert list(inferred) == assigned
    assert all(p["help"] for p in inferred.values()), "each parameter needs a comment as help"


def test_seeds_repeat_notebook_02_right_after_it(course: Path, tmp_path: Path) -> None:
    nbs = course / "notebooks"
    write_notebook(nbs / "02_train.ipynb", 'profile = "auto"\nseed = None\n')
    write_notebook(nbs / "02b_more.ipynb", 'profile = "auto"\n')
    fake = FakeExecute()
    results = run_notebooks("smoke", output_dir=tmp_path / "o", execute=fake, seeds=[43, 44])
    assert [r.name for r in results] == ["01_eda", "02_train", "02_train__seed-43",
                                         "02_train__seed-44", "02b_more", "03_compare"]
    params = {Path(out).stem: p for _name, out, p, _kw in fake.calls}
    assert params["02_train__seed-43"] == {"profile": "smoke", "seed": 43}
    assert params["02_train"] == {"profile": "smoke"}
    assert "seed" not in params["02b_more"]


def test_the_seeds_option_is_checked(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        run.main(["--profile", "smoke", "--seeds", "4x"])
    assert "--seeds takes whole numbers" in capsys.readouterr().err
