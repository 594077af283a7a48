"""Every command the README shows works as written, in the state the set-up leaves.

The commands are read out of README.md itself (code blocks and inline code), so a command
added there without a check here fails :func:`test_every_readme_command_is_checked`.
`make` targets are expanded with ``make -n`` (they only call the commands checked here
and the notebooks nbval runs); the course runner really runs, on the ``smoke`` profile
and a small image folder in place of ``/path/to/folder``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()

# commands the README shows that need what a test cannot have; each says why
NOT_RUN_HERE = {
    "conda env create -f environment.yml && conda activate cnn-course": "needs conda",
    ".venv/bin/pip uninstall -y tensorflow-cpu && .venv/bin/pip install "
    '"tensorflow[and-cuda]==2.21.0"': "replaces TensorFlow with the CUDA build",
    "make test": "is this test suite",
}
# the multi-node torchrun line needs a second machine; its single-machine twin runs below
NOT_RUN_HERE.update({c: "needs a second machine" for c in (
    line.split("  #", 1)[0].strip() for line in README.splitlines())
    if c.startswith("torchrun --nnodes")})


def readme_commands() -> list[str]:
    """Shell commands in README.md: lines of ``bash`` blocks and inline ``make``/``python -m``."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    for inline in re.findall(r"`((?:make |python -m |python solutions/|source |conda |"
                             r"\.venv/bin/pip |torchrun |accelerate )[^`]+)`", README):
        commands.append(inline.strip())
    return list(dict.fromkeys(commands))


def _make_dry_run(command: str) -> str:
    args = shlex.split(command)[1:]
    proc = subprocess.run(["make", "-n", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, f"{command}: {proc.stderr}"
    return proc.stdout


def test_every_readme_command_is_checked() -> None:
    checked = {c for c in readme_commands()
               if c.startswith(("make ", "python -m nbutils.run", "python -m nbutils.bench",
                                "python -m nbutils.predict", "python -m nbutils.export",
                                "python -m nbutils.train", "torchrun ", "accelerate launch ",
                                "source ",
                                "python solutions/"))}  # test_solutions.py runs every solution
    rest = set(readme_commands()) - checked - set(NOT_RUN_HERE)
    assert not rest, f"README commands no test checks: {sorted(rest)}"


@pytest.mark.parametrize("command", [c for c in readme_commands()
                                     if c.startswith("make ") and c not in NOT_RUN_HERE])
def test_make_commands_expand_to_the_documented_runs(command: str) -> None:
    recipe = _make_dry_run(command)
    variables = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', command))
    if "course" in command.split():
        assert "-m nbutils.run" in recipe
        for name, flag in (("PROFILE", "--profile"), ("DATASET", "--dataset"), ("ONLY", "--only")):
            if name in variables:
                assert f"{flag} {variables[name]}" in recipe, (command, recipe)
        for pair in variables.get("PARAMS", "").strip('"').split():
            assert f"-p {pair}" in recipe
    assert recipe.strip(), command


def test_the_benchmark_entry_point_lists_every_framework() -> None:
    assert "python -m nbutils.bench" in readme_commands()
    proc = subprocess.run([sys.executable, "-m", "nbutils.bench"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "{torch,keras,hf}" in proc.stdout


def test_the_activation_the_readme_names_exists() -> None:
    assert "source .venv/bin/activate" in readme_commands()
    assert (Path(sys.prefix) / "bin" / "activate").is_file()   # what `make venv` creates


@pytest.mark.slow
def test_the_course_runner_command_runs_as_written(tmp_path: Path) -> None:
    [command] = [c for c in readme_commands() if c.startswith("python -m nbutils.run")]
    folder = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for name in ("cats", "dogs", "birds"):
        (folder / name).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(
                folder / name / f"{i}.png")
    root = tmp_path / "course"
    for part in ("configs", "notebooks"):
        shutil.copytree(REPO / part, root / part)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    args = shlex.split(command.replace("/path/to/folder", str(folder)))
    args[args.index("--profile") + 1] = "smoke"   # the long run, on the CI profile
    env = {**os.environ, "NBUTILS_ROOT": str(root), "NBUTILS_PROFILE": "smoke"}
    proc = subprocess.run([sys.executable, *args[1:]], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert re.search(r"01_eda\s+ok", proc.stdout) and re.search(r"02_pytorch_alexnet\s+ok",
                                                                proc.stdout)
    record = root / "outputs" / "metrics" / "02_pytorch_alexnet__imagefolder-photos__smoke__epochs-5.json"
    assert record.is_file(), sorted(p.name for p in (root / "outputs" / "metrics").iterdir())


@pytest.mark.parametrize("tool", ["nbutils.predict", "nbutils.export"])
def test_the_use_your_model_commands_run_as_written(tool: str, tmp_path: Path) -> None:
    """The README's predict and export commands, on a small saved model in their folder."""
    pytest.importorskip("onnxruntime")
    import torch

    from nbutils import torch_models as tm
    from nbutils import torch_train as tt
    from nbutils.inference import ClassifierInfo

    [command] = [c for c in readme_commands() if c.startswith(f"python -m {tool} ")]
    args = shlex.split(command)
    model_dir = tmp_path / args[3]
    torch.manual_seed(0)
    config = tm.AlexNetConfig(num_classes=3, widths=[8, 16, 16, 16, 16], fc_width=32)
    tt.save_classifier(model_dir, tm.build_model(config), ClassifierInfo(
        framework="pytorch", model=config.name, class_names=["a", "b", "c"], image_size=32,
        mean=[0.5] * 3, std=[0.25] * 3))
    rng = np.random.default_rng(0)
    for name in ("photo.jpg", "my_photos/one.png", "my_photos/two.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(tmp_path / name)
    proc = subprocess.run([sys.executable, *args[1:]], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    if tool == "nbutils.predict":
        assert proc.stdout.count("  1. ") == 3 and (tmp_path / "cam.png").is_file()
    else:
        assert "top-1 agreement 100.00%" in proc.stdout
        assert (model_dir / "onnx" / "model.onnx").is_file()
        assert (model_dir / "onnx-int8" / "model.onnx").is_file()


TRAIN_COMMANDS = [c for c in readme_commands() if "-m nbutils.train" in c and c not in NOT_RUN_HERE]


def test_the_readme_shows_a_training_script_for_each_launcher() -> None:
    starts = {c.split()[0] for c in TRAIN_COMMANDS}
    assert {"python", "torchrun", "accelerate"} <= starts, TRAIN_COMMANDS


@pytest.mark.slow
@pytest.mark.parametrize("command", TRAIN_COMMANDS)
def test_the_training_script_commands_run_as_written(command: str, tmp_project: Path) -> None:
    """Each README training command, on the smoke profile (two CPU devices for Keras's
    MirroredStrategy, which the README runs over GPUs)."""
    args = shlex.split(command.replace("--profile gpu", "--profile smoke")
                       .replace("--profile cpu", "--profile smoke"))
    if "distribute=mirrored" in command:
        args += ["-p", "mirrored_cpus=2"]
    launcher = {"python": [sys.executable], "torchrun": [str(Path(sys.executable).parent / "torchrun")],
                "accelerate": [str(Path(sys.executable).parent / "accelerate")]}[args[0]]
    env = {**os.environ, "NBUTILS_ROOT": str(tmp_project), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*launcher, *args[1:]], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    # a rank's own error comes before the launcher's report: keep enough of stderr to see it
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-8000:]
    assert proc.stdout.count("test accuracy") == 1
    assert len(list((tmp_project / "outputs" / "metrics").glob("*.json"))) == 1
