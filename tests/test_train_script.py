"""``python -m nbutils.train``: the notebooks' training as a script, on one or more processes.

Each test runs the script (or torchrun / accelerate launch) in a subprocess on the
smoke data, in a throw-away project folder, and reads the record it wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nbutils.train import RECIPES, get_recipe
from nbutils.train.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TIMEOUT = 600


def _run(args: list[str], root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NBUTILS_ROOT": str(root), "OMP_NUM_THREADS": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("NBUTILS_PROFILE", None)
    done = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-8000:]
    return done


def _train(root: Path, model: str, *params: str, launcher: list[str] | None = None
           ) -> subprocess.CompletedProcess:
    command = [*(launcher or [sys.executable]), "-m", "nbutils.train", model, "--profile", "smoke"]
    for p in params:
        command += ["-p", p]
    return _run(command, root)


def _outputs(root: Path, run_id: str) -> tuple[dict, np.ndarray]:
    record = json.loads((root / "outputs" / "metrics" / f"{run_id}.json").read_text())
    probs = np.load(root / "outputs" / "predictions" / f"{run_id}_test_probs.npz")["probs"]
    return record, probs


def test_every_recipe_names_a_notebook_and_a_model_config() -> None:
    notebooks = {p.stem for p in (REPO_ROOT / "notebooks" / "src").glob("*.py")}
    for name, recipe in RECIPES.items():
        assert recipe.notebook in notebooks, recipe
        assert (REPO_ROOT / "configs" / "models" / f"{name}.yaml").is_file()
    with pytest.raises(KeyError, match="Did you mean 'alexnet'"):
        get_recipe("alexnt")


def test_bad_arguments_are_clear_errors(tmp_project: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["alexnt"])
    assert "Did you mean 'alexnet'" in capsys.readouterr().err
    assert main(["alexnet", "--profile", "smoke", "-p", "epochz=3"]) == 2
    assert "Unknown override 'epochz'" in capsys.readouterr().err
    assert main(["alexnet", "--profile", "smoke", "-p", "precision=fp16"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert main(["alexnet", "--profile", "smoke", "-p", "epochs"]) == 2


def test_script_and_notebook_02_train_the_same_model(tmp_project: Path) -> None:
    """The drift check: notebook 02 and the script, same settings, same predictions."""
    import papermill

    run_id = "02_pytorch_alexnet__shapes__smoke"   # compare_norms is not a variant
    env_root = os.environ.get("NBUTILS_ROOT")
    assert env_root == str(tmp_project)
    papermill.execute_notebook(
        str(REPO_ROOT / "notebooks" / "02_pytorch_alexnet.ipynb"), str(tmp_project / "02.ipynb"),
        parameters={"profile": "smoke", "compare_norms": False}, kernel_name="python3",
        cwd=str(REPO_ROOT / "notebooks"), progress_bar=False)
    notebook_record, notebook_probs = _outputs(tmp_project, run_id)
    shutil.rmtree(tmp_project / "outputs" / "metrics")
    done = _train(tmp_project, "alexnet")
    script_record, script_probs = _outputs(tmp_project, run_id)
    assert "test accuracy" in done.stdout and run_id in done.stdout
    assert script_record["extra"]["trained_by"] == "nbutils.train"
    assert script_record["model"] == notebook_record["model"]
    assert script_record["extra"]["model_config"] == notebook_record["extra"]["model_config"]
    assert [h["train_loss"] for h in script_record["history"]] == pytest.approx(
        [h["train_loss"] for h in notebook_record["history"]], abs=1e-6)
    np.testing.assert_allclose(script_probs, notebook_probs, atol=1e-5)
    for folder in ("models", "figures", "predictions"):
        assert any(p.name.startswith(run_id) for p in (tmp_project / "outputs" / folder).iterdir())


# Without BatchNorm, dropout and augmentation, two processes that each take half of every
# batch and average their gradients compute the same steps as one process.
EXACT = ("norm=none", "dropout=0.0", "augment_padding=0", "augment_flip=false", "epochs=2")


def test_torchrun_two_gloo_processes_train_one_model(tmp_project: Path) -> None:
    _train(tmp_project, "alexnet", *EXACT)
    (written,) = (tmp_project / "outputs" / "metrics").glob("02_pytorch_alexnet__*.json")
    run_id = written.stem
    single_record, single_probs = _outputs(tmp_project, run_id)
    shutil.rmtree(tmp_project / "outputs" / "metrics")
    done = _train(tmp_project, "alexnet", *EXACT, launcher=[
        str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"])
    record, probs = _outputs(tmp_project, run_id)
    assert done.stdout.count("test accuracy") == 1          # rank 0 alone reports ...
    assert len(list((tmp_project / "outputs" / "metrics").glob("*.json"))) == 1  # ... and writes
    job = record["extra"]["distributed"]
    assert job["world_size"] == 2 and job["backend"] == "gloo"
    assert job["weights_identical"] and len(set(job["weight_digests"])) == 1
    assert 0.0 <= record["test"]["accuracy"] <= 1.0 and np.isfinite(probs).all()
    assert record["history"][-1]["train_loss"] < record["history"][0]["train_loss"] + 0.05
    assert [h["train_loss"] for h in record["history"]] == pytest.approx(
        [h["train_loss"] for h in single_record["history"]], abs=1e-4)
    np.testing.assert_allclose(probs, single_probs, atol=1e-3)


def test_keras_mirrored_strategy_on_two_cpu_devices(tmp_project: Path) -> None:
    _train(tmp_project, "keras_cnn", "distribute=mirrored", "mirrored_cpus=2")
    record, probs = _outputs(tmp_project,
                             "03_keras_cnn__shapes__smoke__distribute-mirrored_mirrored_cpus-2")
    assert record["extra"]["replicas"] == 2
    assert probs.ndim == 2 and probs.shape[1] == 6
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    from nbutils.inference import load_classifier

    reloaded = load_classifier(tmp_project / "outputs" / "models" /
                               "03_keras_cnn__shapes__smoke__distribute-mirrored_mirrored_cpus-2")
    assert reloaded.predict_proba(np.zeros((3, 32, 32, 3), np.uint8)).shape == (3, 6)


def test_accelerate_launch_runs_the_trainer_on_two_processes(tmp_project: Path) -> None:
    done = _train(tmp_project, "hf_transfer", launcher=[
        str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"])
    record, probs = _outputs(tmp_project, "04_hf_transfer_learning__shapes__smoke")
    assert done.stdout.count("test accuracy") == 1
    assert record["extra"]["distributed"] == {"world_size": 2, "trainer_processes": 2}
    assert np.isfinite(probs).all() and 0.0 <= record["test"]["accuracy"] <= 1.0


def test_notebook_launcher_trains_on_two_processes(tmp_project: Path) -> None:
    code = ("from nbutils.train import train_in_processes\n"
            "record = train_in_processes('alexnet', 2, profile='smoke', epochs=1)\n"
            "job = record.extra['distributed']\n"
            "assert job['world_size'] == 2 and job['weights_identical'], job\n"
            "print('ok', record.test.accuracy)\n")
    assert "ok " in _run([sys.executable, "-c", code], tmp_project).stdout



_LEAVE_TOGETHER = """
import json, sys, time
import torch.distributed as dist
from nbutils import distributed
distributed.init_from_env("cpu")
rank = dist.get_rank()
if rank == 0:
    time.sleep(1.5)  # rank 0 is still writing its model and record
called = time.time()
distributed.shutdown()
with open(f"{sys.argv[1]}/rank{rank}.json", "w") as out:
    json.dump({"called": called, "left": time.time()}, out)
"""


def test_processes_leave_the_group_together(tmp_path: Path) -> None:
    """A process that finishes first waits in ``shutdown`` until rank 0 is done too."""
    script = tmp_path / "leave.py"
    script.write_text(_LEAVE_TOGETHER)
    done = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path)], cwd=REPO_ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank1["called"] < rank0["called"] - 1.0      # rank 1 was done long before
    assert rank1["left"] >= rank0["called"]            # and left only once rank 0 was done
