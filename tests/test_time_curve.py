"""``python -m nbutils.benchmarks.time_curve``: accuracy against training time."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbutils.benchmarks import time_curve


class FakeRecipe:
    """Writes a record whose training time grows with the epochs, instead of training."""

    notebook = "02b_pytorch_resnet"

    def __init__(self, record_factory) -> None:
        self.make, self.trained = record_factory, []

    def train(self, cfg):
        from nbutils.records import write_record

        n = cfg.model.epochs
        self.trained.append(n)
        record = self.make(notebook=self.notebook, train_seconds=10.0 * n,
                           config={**cfg.values, "variant": cfg.variant},
                           history=[{"epoch": e + 1, "val_acc": 0.1 * (e + 1)} for e in range(n)])
        write_record(record, cfg.outputs_dir)
        return record


def test_curve_trains_what_is_missing_then_reads_it(tmp_project: Path, record_factory,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys) -> None:
    import nbutils.train

    fake = FakeRecipe(record_factory)
    monkeypatch.setattr(nbutils.train, "get_recipe", lambda name: fake)
    points, folder = time_curve.curve_points("resnet", [3, 1], "smoke", None)
    assert fake.trained == [3, 1]
    assert [p["epochs"] for p in points] == [1, 3]               # sorted by seconds
    assert points[1]["seconds"] == 30.0 and points[1]["best_val_acc"] == pytest.approx(0.3)
    assert folder == tmp_project / "outputs" / "experiments" / "resnet-curve"

    assert time_curve.main(["resnet", "--epochs", "1", "3", "--profile", "smoke",
                            "--no-train", "--budget", "25"]) == 0
    assert fake.trained == [3, 1], "existing points are read, not trained again"
    out = capsys.readouterr().out
    assert "3 epochs" in out and "train s" in out and (folder / "accuracy_vs_time.png").exists()
    assert time_curve.main(["resnet", "--epochs", "7", "--profile", "smoke", "--no-train"]) == 1


def test_the_notebook_run_is_a_point(tmp_project: Path, record_factory,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import nbutils
    import nbutils.train
    from nbutils.records import write_record

    cfg = nbutils.setup("smoke", model="resnet", verbose=False)
    write_record(record_factory(notebook="02b_pytorch_resnet"), cfg.outputs_dir)
    monkeypatch.setattr(nbutils.train, "get_recipe", lambda name: FakeRecipe(record_factory))
    points, _ = time_curve.curve_points("resnet", [], "smoke", None)
    assert [p["label"] for p in points] == ["notebook run"]
    fig = time_curve.plot_curve(points, "t", budget_s=300)
    assert len(fig.axes[0].lines) == 3                          # validation, test, budget
