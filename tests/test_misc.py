"""Paths, hardware detection, profile choice, seeding, saved-model info, bench dispatcher."""

from __future__ import annotations

import json
import os
import random
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import nbutils
from nbutils import bench, config, hardware, inference, paths
from nbutils.config import choose_profile
from nbutils.hardware import Hardware
from nbutils.seeding import seed_everything

REPO_ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ paths

def test_project_root_from_env_cwd_and_package(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NBUTILS_ROOT", str(tmp_path))
    assert paths.project_root() == tmp_path.resolve()
    assert paths.configs_dir() == tmp_path.resolve() / "configs"
    monkeypatch.delenv("NBUTILS_ROOT")
    monkeypatch.chdir(REPO_ROOT / "notebooks")
    assert paths.project_root() == REPO_ROOT
    monkeypatch.chdir(tmp_path)  # outside the project: found from the package's location
    assert paths.project_root() == REPO_ROOT


def test_project_root_not_found_says_what_to_do(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("NBUTILS_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(paths, "_looks_like_root", lambda path: False)
    with pytest.raises(FileNotFoundError, match="NBUTILS_ROOT"):
        paths.project_root()


def test_resolve_path(tmp_project: Path, tmp_path: Path) -> None:
    assert paths.resolve_path("outputs/x") == tmp_project.resolve() / "outputs" / "x"
    assert paths.resolve_path(tmp_path / "abs") == tmp_path / "abs"
    assert paths.resolve_path("~/x") == Path.home() / "x"


def test_atomic_write_replaces_on_success_and_keeps_the_old_file_on_error(tmp_path) -> None:
    target = tmp_path / "sub" / "file.txt"
    assert paths.atomic_write_text(target, "old") == target
    assert target.read_text() == "old"
    with pytest.raises(RuntimeError, match="interrupted"):
        with paths.atomic_write(target, "w") as handle:
            handle.write("half of the new conte")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"], "temporary file removed"
    with paths.atomic_write(target) as handle:
        handle.write(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]


# --------------------------------------------------------------------------- hardware

def _fake_nvidia_smi(tmp_path: Path, monkeypatch, body: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_detects_a_gpu_through_nvidia_smi(tmp_path, monkeypatch) -> None:
    _fake_nvidia_smi(tmp_path, monkeypatch,
                     'echo "NVIDIA GeForce RTX 3060, 12288"\necho "NVIDIA T4, 15360"')
    hw = hardware.detect_hardware()
    assert hw.cuda and hw.gpu_name == "NVIDIA GeForce RTX 3060" and hw.gpu_memory_gb == 12.0
    assert hw.cpu_count >= 1 and "Python" in hw.platform
    assert hw.describe().endswith("NVIDIA GeForce RTX 3060 (12.0 GB)")
    assert hw.to_dict()["gpu_memory_gb"] == 12.0
    assert choose_profile(hw) == "gpu"


def test_cuda_visible_devices_hides_the_gpu(tmp_path, monkeypatch) -> None:
    _fake_nvidia_smi(tmp_path, monkeypatch, 'echo "NVIDIA T4, 15360"')
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not hardware.detect_hardware().cuda


@pytest.mark.parametrize(
    "body",
    ["exit 9",                                   # driver problem
     "true",                                     # no output
     'echo "NVIDIA T4, [N/A]"',                  # memory not a number
     'echo "No devices were found"'],            # no comma at all
)
def test_odd_nvidia_smi_output_means_no_gpu(tmp_path, monkeypatch, body) -> None:
    _fake_nvidia_smi(tmp_path, monkeypatch, body)
    hw = hardware.detect_hardware()
    assert not hw.cuda and hw.gpu_name is None
    assert hw.describe().endswith("no CUDA GPU")


def test_no_nvidia_smi_means_no_gpu(tmp_path, monkeypatch) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert hardware.detect_hardware().cuda is False


def test_library_versions_and_memory() -> None:
    versions = hardware.library_versions()
    assert versions["numpy"] == np.__version__
    assert versions["python"] == sys.version.split()[0]
    assert "nbutils" in versions
    assert hardware.peak_rss_mb() > 10


# ------------------------------------------------------------------------ profile choice

@pytest.mark.parametrize(
    ("cuda", "memory", "profile"),
    [(True, 24.0, "gpu"), (True, 8.0, "gpu"), (True, 7.9, "lowvram"), (True, 4.0, "lowvram"),
     (True, None, "lowvram"), (False, None, "cpu")],
)
def test_choose_profile_from_hardware(monkeypatch, cuda, memory, profile) -> None:
    monkeypatch.delenv("NBUTILS_PROFILE", raising=False)
    hw = Hardware(cpu_count=4, cuda=cuda, gpu_name="g" if cuda else None, gpu_memory_gb=memory)
    assert choose_profile(hw) == profile
    monkeypatch.setenv("NBUTILS_PROFILE", "auto")  # 'auto' in the env also means: look
    assert choose_profile(hw) == profile


def test_nbutils_profile_env_wins(monkeypatch) -> None:
    monkeypatch.setenv("NBUTILS_PROFILE", " smoke ")
    assert choose_profile(Hardware(cpu_count=4, cuda=True, gpu_memory_gb=80.0)) == "smoke"


def test_choose_profile_detects_hardware_when_not_given(fake_hardware) -> None:
    fake_hardware(cuda=True, gpu_memory_gb=6.0)
    # choose_profile looks the hardware up itself through the same detection
    assert config.choose_profile() == "lowvram"


# --------------------------------------------------------------------------- seeding

def test_seed_everything_reproduces_python_and_numpy() -> None:
    seed_everything(11)
    first = (random.random(), np.random.rand(4).tolist())
    seed_everything(11)
    assert (random.random(), np.random.rand(4).tolist()) == first
    assert os.environ["PYTHONHASHSEED"] == "11"
    seed_everything(12)
    assert np.random.rand(4).tolist() != first[1]


def _recorder(calls: list, name: str):
    return lambda *args, **kwargs: calls.append((name, args, kwargs))


def test_seed_everything_seeds_imported_frameworks_only(monkeypatch) -> None:
    calls: list = []
    torch = types.SimpleNamespace(
        manual_seed=_recorder(calls, "torch.manual_seed"),
        use_deterministic_algorithms=_recorder(calls, "torch.deterministic"),
        cuda=types.SimpleNamespace(is_available=lambda: True,
                                   manual_seed_all=_recorder(calls, "torch.cuda.seed")),
        backends=types.SimpleNamespace(cudnn=types.SimpleNamespace(benchmark=True)),
    )
    keras = types.SimpleNamespace(utils=types.SimpleNamespace(
        set_random_seed=_recorder(calls, "keras.seed")))
    tf = types.SimpleNamespace(
        random=types.SimpleNamespace(set_seed=_recorder(calls, "tf.seed")),
        config=types.SimpleNamespace(experimental=types.SimpleNamespace(
            enable_op_determinism=_recorder(calls, "tf.determinism"))))
    for name in ("torch", "keras", "tensorflow"):
        monkeypatch.delitem(sys.modules, name, raising=False)

    seed_everything(5)
    assert calls == [], "frameworks that are not imported are left alone"

    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "tensorflow", tf)
    seed_everything(5)
    assert [c[0] for c in calls] == ["torch.manual_seed", "torch.cuda.seed", "tf.seed"]
    assert calls[0][1] == (5,)

    calls.clear()
    monkeypatch.setitem(sys.modules, "keras", keras)
    seed_everything(6, deterministic=True)
    assert [c[0] for c in calls] == ["torch.manual_seed", "torch.cuda.seed",
                                     "torch.deterministic", "keras.seed", "tf.determinism"]
    assert torch.backends.cudnn.benchmark is False
    assert calls[3][1] == (6,)


# ------------------------------------------------------------------------- inference

def test_classifier_info_round_trip(tmp_path: Path) -> None:
    info = inference.ClassifierInfo("pytorch", "alexnet", ["a", "b"], 32, [0.5] * 3, [0.25] * 3,
                                    {"note": 1})
    path = inference.write_classifier_info(tmp_path / "m", info)
    assert path == tmp_path / "m" / "classifier.json"
    assert inference.read_classifier_info(tmp_path / "m") == info


def test_read_classifier_info_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="No classifier.json in .*Re-run the training"):
        inference.read_classifier_info(tmp_path)
    (tmp_path / "classifier.json").write_text("{broken")
    with pytest.raises(ValueError, match="classifier.json"):
        inference.read_classifier_info(tmp_path)
    (tmp_path / "classifier.json").write_text(json.dumps({"framework": "pytorch"}))
    with pytest.raises(ValueError, match="classifier.json"):
        inference.read_classifier_info(tmp_path)


def test_load_classifier_dispatches_to_the_framework_module(tmp_path, monkeypatch) -> None:
    info = inference.ClassifierInfo("keras", "cnn", ["a"], 32, [0.0] * 3, [1.0] * 3)
    inference.write_classifier_info(tmp_path, info)
    seen = {}

    def load_classifier(model_dir, info, device="cpu"):
        seen.update(model_dir=model_dir, info=info, device=device)
        return "loaded"

    fake = types.ModuleType("nbutils.keras_train")
    fake.load_classifier = load_classifier
    monkeypatch.setitem(sys.modules, "nbutils.keras_train", fake)
    assert inference.load_classifier(tmp_path, device="cuda") == "loaded"
    assert seen == {"model_dir": tmp_path, "info": info, "device": "cuda"}

    inference.write_classifier_info(tmp_path, inference.ClassifierInfo(
        "jax", "x", ["a"], 32, [0.0] * 3, [1.0] * 3))
    with pytest.raises(ValueError, match="Unknown framework 'jax'"):
        inference.load_classifier(tmp_path)


# ----------------------------------------------------------------------------- bench

def test_bench_without_a_known_benchmark_prints_usage(capsys) -> None:
    assert bench.main([]) == 2
    assert "usage: python -m nbutils.bench {torch,keras,hf}" in capsys.readouterr().out
    assert bench.main(["jax"]) == 2


def test_bench_dispatches_with_the_remaining_arguments(monkeypatch) -> None:
    received = []
    fake = types.ModuleType("nbutils.benchmarks.hf_bench")
    fake.main = lambda argv: received.append(argv) or None
    monkeypatch.setitem(sys.modules, "nbutils.benchmarks.hf_bench", fake)
    assert bench.main(["hf", "--batch", "8"]) == 0
    assert received == [["--batch", "8"]]
    fake.main = lambda argv: 3
    assert bench.main(["hf"]) == 3


def test_package_exports() -> None:
    import tomllib

    root = Path(__file__).resolve().parents[1]
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    assert nbutils.__version__ == pyproject["project"]["version"]
    assert nbutils.setup.__module__ == "nbutils.setup" and nbutils.load_config is config.load_config
    assert nbutils.ConfigError is config.ConfigError


def test_display_path_is_relative_inside_the_project(tmp_project: Path, tmp_path: Path) -> None:
    from nbutils.paths import display_path

    assert display_path(tmp_project / "outputs" / "comparison") == "outputs/comparison"
    assert display_path("outputs/metrics") == "outputs/metrics"   # relative to the root
    outside = tmp_path.parent / "elsewhere"
    assert display_path(outside) == str(outside)


def test_show_source_prints_the_code_that_runs(capsys) -> None:
    from nbutils import source
    from nbutils.torch_train import lr_factor

    code = source.show_source(lr_factor)
    assert code.startswith("def lr_factor(") and "warmup_steps" in code
    assert capsys.readouterr().out.strip() == code.strip()
    assert source.source_of(lr_factor, source.source_of).count("def ") >= 2
    with pytest.raises(ValueError, match="at least one"):
        source.source_of()
