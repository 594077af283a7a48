"""Profiles, model settings and overrides resolve into one validated RunConfig."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import nbutils
from nbutils.config import ConfigError, RunConfig, Section, available_profiles, load_config
from nbutils.hardware import Hardware

REPO_ROOT = Path(__file__).resolve().parents[1]

GPU = Hardware(cpu_count=8, cuda=True, gpu_name="Fake GPU", gpu_memory_gb=24.0, platform="test")
CPU = Hardware(cpu_count=2, cuda=False, platform="test")

PROFILES = sorted(p.stem for p in (REPO_ROOT / "configs" / "profiles").glob("*.yaml"))
MODELS = sorted(p.stem for p in (REPO_ROOT / "configs" / "models").glob("*.yaml"))


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def test_the_course_has_the_four_profiles() -> None:
    assert {"gpu", "lowvram", "cpu", "smoke"} <= set(PROFILES)
    assert available_profiles() == PROFILES
    assert MODELS, "configs/models/ holds no model settings"


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("model", MODELS)
def test_every_profile_resolves_for_every_model(profile: str, model: str) -> None:
    cfg = load_config(profile, model=model, hardware=GPU)
    model_file = _yaml(REPO_ROOT / "configs" / "models" / f"{model}.yaml")
    prof_file = _yaml(REPO_ROOT / "configs" / "profiles" / f"{profile}.yaml")
    section = (prof_file.get("models") or {}).get(model) or {}
    assert cfg.profile == profile
    assert cfg.model_name == model
    assert set(cfg.model) == set(model_file)
    for key, default in model_file.items():
        expected = section.get(key, default)
        assert cfg.model[key] == expected, f"{profile}/{model}: {key}"
    assert cfg.device == "cuda"
    assert cfg.dataset == prof_file.get("dataset", cfg.dataset)
    for key, value in (prof_file.get("data") or {}).items():
        assert cfg.data[key] == value


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_resolves_without_a_model(profile: str) -> None:
    cfg = load_config(profile, hardware=GPU)
    assert cfg.model_name is None
    assert "model" not in cfg.values
    with pytest.raises(AttributeError, match="model="):
        _ = cfg.model


def test_cpu_profile_runs_on_a_machine_without_gpu() -> None:
    cfg = load_config("cpu", model="alexnet", hardware=CPU)
    assert cfg.device == "cpu"


def _write_profile(root: Path, name: str, text: str) -> Path:
    path = root / "configs" / "profiles" / f"{name}.yaml"
    path.write_text(text)
    return path


def test_unknown_top_level_key_in_a_profile_names_key_file_and_suggestion(
        tmp_project: Path) -> None:
    path = _write_profile(tmp_project, "typo", "seeed: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config("typo", hardware=CPU)
    msg = str(err.value)
    assert "'seeed'" in msg
    assert str(path) in msg
    assert "Did you mean 'seed'?" in msg


def test_unknown_nested_key_in_a_profile_is_named_with_its_section(tmp_project: Path) -> None:
    path = _write_profile(tmp_project, "typo", "data:\n  image_sise: 64\n")
    with pytest.raises(ConfigError) as err:
        load_config("typo", hardware=CPU)
    msg = str(err.value)
    assert "'data.image_sise'" in msg and str(path) in msg and "'image_size'" in msg


def test_unknown_model_setting_in_a_profile_names_model_file_and_suggestion(
        tmp_project: Path) -> None:
    path = _write_profile(tmp_project, "typo", "models:\n  alexnet:\n    epoch: 3\n")
    for model in ("alexnet", None):  # checked with and without model=
        with pytest.raises(ConfigError) as err:
            load_config("typo", model=model, hardware=CPU)
        msg = str(err.value)
        assert "'epoch'" in msg and str(path) in msg and "models.alexnet" in msg
        assert "Did you mean 'epochs'?" in msg


def test_unknown_model_name_in_a_profile(tmp_project: Path) -> None:
    _write_profile(tmp_project, "typo", "models:\n  alexnett:\n    epochs: 3\n")
    with pytest.raises(ConfigError, match="Unknown model 'alexnett'.*Did you mean 'alexnet'"):
        load_config("typo", hardware=CPU)


def test_models_section_must_be_a_mapping(tmp_project: Path) -> None:
    _write_profile(tmp_project, "bad", "models: [alexnet]\n")
    with pytest.raises(ConfigError, match="'models' in .*bad.yaml must map"):
        load_config("bad", hardware=CPU)


@pytest.mark.parametrize(
    ("text", "key", "type_name"),
    [("seed: abc\n", "'seed'", "int"),
     ("seed: true\n", "'seed'", "int"),
     ("mixed_precision: 1\n", "'mixed_precision'", "bool"),
     ("data:\n  val_fraction: lots\n", "'data.val_fraction'", "float"),
     ("dataset: 10\n", "'dataset'", "str")],
)
def test_wrong_type_in_a_profile_names_key_and_type(
        tmp_project: Path, text: str, key: str, type_name: str) -> None:
    path = _write_profile(tmp_project, "bad", text)
    with pytest.raises(ConfigError) as err:
        load_config("bad", hardware=CPU)
    msg = str(err.value)
    assert key in msg and f"must be {type_name}" in msg and str(path) in msg


def test_a_section_given_as_a_scalar_is_an_error(tmp_project: Path) -> None:
    _write_profile(tmp_project, "bad", "data: 5\n")
    with pytest.raises(ConfigError, match="'data' in .* must be a mapping"):
        load_config("bad", hardware=CPU)


def test_ints_widen_to_floats(tmp_project: Path) -> None:
    _write_profile(tmp_project, "widen", "data:\n  val_fraction: 0\n")
    with pytest.raises(ConfigError, match="val_fraction must be between 0 and 1"):
        load_config("widen", hardware=CPU)  # accepted as a float, then range-checked
    _write_profile(tmp_project, "widen", "description: x\n")
    cfg = load_config("widen", hardware=CPU, val_fraction=0.25)
    assert cfg.data.val_fraction == 0.25


def test_invalid_yaml_and_non_mapping_files(tmp_project: Path) -> None:
    _write_profile(tmp_project, "broken", "seed: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config("broken", hardware=CPU)
    _write_profile(tmp_project, "alist", "- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config("alist", hardware=CPU)


def test_missing_defaults_file(tmp_project: Path) -> None:
    (tmp_project / "configs" / "defaults.yaml").unlink()
    with pytest.raises(ConfigError, match="Config file not found"):
        load_config("smoke", hardware=CPU)


def test_unknown_profile_and_model_suggest_the_closest() -> None:
    with pytest.raises(ConfigError, match="Unknown profile 'smok'. Did you mean 'smoke'"):
        load_config("smok", hardware=CPU)
    with pytest.raises(ConfigError, match="Unknown model 'alexnt'. Did you mean 'alexnet'"):
        load_config("smoke", model="alexnt", hardware=CPU)


def test_unknown_override_suggests_the_closest_key(cpu_only: Hardware) -> None:
    with pytest.raises(ConfigError) as err:
        nbutils.setup("smoke", model="alexnet", verbose=False, epoch=3)
    assert "Unknown override 'epoch'" in str(err.value)
    assert "Did you mean 'epochs'?" in str(err.value)
    with pytest.raises(ConfigError, match="Did you mean 'image_size'"):
        nbutils.setup("smoke", verbose=False, image_sizes=64)
    with pytest.raises(ConfigError, match="Valid keys: "):
        nbutils.setup("smoke", verbose=False, qqqqqqq=1)


def test_flat_overrides_route_to_top_level_data_paths_and_model(
        cpu_only: Hardware, tmp_path: Path) -> None:
    cfg = nbutils.setup("smoke", model="alexnet", verbose=False, seed=7, dataset="shapes:8",
                        image_size=48, outputs_dir=str(tmp_path), epochs=3, compile=True)
    assert cfg.seed == 7
    assert cfg.dataset == "shapes:8"
    assert cfg.data.image_size == 48
    assert cfg.outputs_dir == tmp_path
    assert cfg.model.epochs == 3 and cfg.model.compile is True


def test_dotted_overrides(cpu_only: Hardware) -> None:
    cfg = nbutils.setup("smoke", model="alexnet", verbose=False,
                        **{"data.image_size": 40, "model.batch_size": 8, "paths.data_dir": "d2"})
    assert cfg.data.image_size == 40
    assert cfg.model.batch_size == 8
    assert cfg.paths.data_dir == "d2"
    with pytest.raises(ConfigError, match="'data.image_sise'"):
        nbutils.setup("smoke", verbose=False, **{"data.image_sise": 40})
    with pytest.raises(ConfigError, match="'model.epoch'.*Did you mean 'epochs'"):
        nbutils.setup("smoke", model="alexnet", verbose=False, **{"model.epoch": 2})


def test_none_overrides_keep_the_profile_values(cpu_only: Hardware) -> None:
    smoke = _yaml(REPO_ROOT / "configs" / "profiles" / "smoke.yaml")
    cfg = nbutils.setup("smoke", model="alexnet", verbose=False, dataset=None, epochs=None,
                        image_size=None, not_even_a_key=None)
    assert cfg.dataset == smoke["dataset"]
    assert cfg.model.epochs == smoke["models"]["alexnet"]["epochs"]
    assert cfg.data.image_size == smoke["data"]["image_size"]


def test_override_of_wrong_type_names_the_key(cpu_only: Hardware) -> None:
    with pytest.raises(ConfigError, match="'data.image_size' in setup\\(\\) overrides must be int"):
        nbutils.setup("smoke", verbose=False, image_size="big")
    with pytest.raises(ConfigError, match="'model.epochs' in setup\\(\\) overrides must be int"):
        nbutils.setup("smoke", model="alexnet", verbose=False, epochs=2.5)


def test_cuda_without_a_gpu_is_a_clear_error(cpu_only: Hardware) -> None:
    with pytest.raises(ConfigError) as err:
        nbutils.setup("smoke", verbose=False, device="cuda")
    assert "no CUDA GPU" in str(err.value) and "profile='cpu'" in str(err.value)


def test_device_choice(fake_hardware) -> None:
    fake_hardware(cuda=True, gpu_memory_gb=16.0)
    assert nbutils.setup("smoke", verbose=False).values["device"] == "cuda"
    assert nbutils.setup("smoke", verbose=False, device="cpu").values["device"] == "cpu"
    assert nbutils.setup("smoke", verbose=False, device="cuda").values["device"] == "cuda"
    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or mps"):
        nbutils.setup("smoke", verbose=False, device="tpu")


def test_range_checks(cpu_only: Hardware) -> None:
    with pytest.raises(ConfigError, match="data.val_fraction must be between 0 and 1"):
        nbutils.setup("smoke", verbose=False, val_fraction=1.5)
    with pytest.raises(ConfigError, match="data.test_fraction"):
        nbutils.setup("smoke", verbose=False, test_fraction=0.0)
    with pytest.raises(ConfigError, match="image_size must be at least 8"):
        nbutils.setup("smoke", verbose=False, image_size=4)


def test_auto_profile_follows_env_then_hardware(fake_hardware, monkeypatch) -> None:
    fake_hardware(cuda=False)
    assert nbutils.setup("auto", verbose=False).profile == "cpu"
    assert nbutils.setup(None, verbose=False).profile == "cpu"
    fake_hardware(cuda=True, gpu_memory_gb=4.0)
    assert nbutils.setup(verbose=False).profile == "lowvram"
    monkeypatch.setenv("NBUTILS_PROFILE", "smoke")
    assert nbutils.setup(verbose=False).profile == "smoke"


def test_summary_mentions_profile_dataset_and_model(cpu_only: Hardware, capsys) -> None:
    cfg = nbutils.setup("smoke", model="alexnet", dataset="shapes:8", epochs=2)
    printed = capsys.readouterr().out
    assert printed.strip() == cfg.summary()
    assert "profile      : smoke" in printed
    assert "dataset      : shapes:8" in printed
    assert "device       : cpu" in printed
    assert "alexnet" in printed and "epochs=2" in printed
    quiet = nbutils.setup("smoke", dataset="shapes:8", verbose=False)
    assert capsys.readouterr().out == ""
    assert "alexnet" not in quiet.summary()


def test_setup_seeds_numpy(cpu_only: Hardware) -> None:
    import numpy as np

    nbutils.setup("smoke", verbose=False, seed=123)
    first = np.random.rand(3)
    nbutils.setup("smoke", verbose=False, seed=123)
    assert np.array_equal(first, np.random.rand(3))


def test_run_config_access(cpu_only: Hardware) -> None:
    cfg = nbutils.setup("smoke", model="alexnet", verbose=False)
    assert isinstance(cfg, RunConfig)
    assert cfg.seed == cfg.seed
    assert isinstance(cfg.data, Section)
    assert cfg.data["image_size"] == cfg.data.image_size
    assert set(cfg.data) == set(cfg.data) and len(cfg.data) == len(cfg.data)
    assert "image_size" in repr(cfg.data)
    assert isinstance(cfg.paths, Section) and cfg.paths.outputs_dir == "outputs"
    with pytest.raises(AttributeError, match="Did you mean 'image_size'"):
        _ = cfg.data.image_sise
    with pytest.raises(AttributeError, match="read-only"):
        cfg.data.image_size = 3
    with pytest.raises(AttributeError):
        _ = cfg.__nothing__
    copy = cfg.data.to_dict()
    copy["image_size"] = -1
    assert cfg.data.image_size != -1
    assert cfg.outputs_dir.is_absolute() and cfg.outputs_dir.name == "outputs"
    assert cfg.data_dir.is_absolute() and cfg.data_dir.name == "data"
    d = cfg.to_dict()
    assert d["profile"] == "smoke" and d["model_name"] == "alexnet"
    assert d["model"] == dict(cfg.model)
    d["data"]["image_size"] = -1
    assert cfg.data.image_size != -1
    assert len(cfg.sources) == 3 and cfg.sources[-1].endswith("alexnet.yaml")


def test_nested_section_access_on_a_mapping_value() -> None:
    section = Section({"outer": {"inner": 1}}, "x")
    assert section.outer.inner == 1
    with pytest.raises(AttributeError, match="x.outer has no key 'inne'"):
        _ = section.outer.inne


def test_nullable_cap_must_be_an_int_or_null(cpu_only):
    with pytest.raises(ConfigError, match=r"max_test_per_class.*int"):
        load_config("cpu", hardware=cpu_only, max_test_per_class="lots")
    cfg = load_config("cpu", hardware=cpu_only, max_test_per_class=7)
    assert cfg.data.max_test_per_class == 7


def test_an_override_that_names_two_settings_is_an_error(tmp_project, cpu_only) -> None:
    (tmp_project / "configs" / "models" / "clash.yaml").write_text("image_size: 96\nwidth: 2\n")
    with pytest.raises(ConfigError, match="'image_size' is ambiguous.*'data.image_size' or "
                                          "'model.image_size'"):
        nbutils.setup("smoke", model="clash", verbose=False, image_size=64)
    cfg = nbutils.setup("smoke", model="clash", verbose=False,
                        **{"data.image_size": 48, "model.image_size": 64})
    assert cfg.data.image_size == 48 and cfg.model.image_size == 64
    assert nbutils.setup("smoke", model="clash", verbose=False, width=3).model.width == 3
    with pytest.raises(ConfigError, match="no model was chosen"):
        nbutils.setup("smoke", verbose=False, **{"model.width": 3})


def test_run_id_is_made_in_one_place(cpu_only) -> None:
    from nbutils.records import make_run_id

    cfg = nbutils.setup("smoke", verbose=False, dataset="imagefolder:/x/My Photos")
    assert cfg.run_id("02_pytorch_alexnet") == make_run_id("02_pytorch_alexnet",
                                                           "imagefolder:/x/My Photos", "smoke")
    assert cfg.run_id("02_pytorch_alexnet").startswith("02_pytorch_alexnet__")


def test_model_settings_read_the_yaml_through_the_config_checks() -> None:
    from nbutils.config import model_settings

    settings = model_settings("keras_cnn", {"epochs": 3})
    assert settings["epochs"] == 3 and settings["widths"] == [32, 64, 128]
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        model_settings("keras_cnn", {"epoch": 3})
    with pytest.raises(ConfigError, match="must be int"):
        model_settings("keras_cnn", {"epochs": "many"})
    with pytest.raises(ConfigError, match="Unknown model 'keras'"):
        model_settings("keras")


def test_sections_behave_as_mappings_for_missing_keys(cpu_only) -> None:
    cfg = nbutils.setup("smoke", model="gradcam", verbose=False)
    assert cfg.model.target_layers.get("a framework without a setting") is None
    with pytest.raises(KeyError, match="Did you mean 'image_size'"):
        cfg.data["image_sise"]


def test_apple_silicon_is_found_without_a_framework_and_picks_mps(monkeypatch) -> None:
    import platform

    from nbutils import hardware
    from nbutils.config import choose_profile

    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    monkeypatch.setattr(hardware, "_query_nvidia_smi", lambda: None)
    monkeypatch.delenv("NBUTILS_PROFILE", raising=False)
    mac = hardware.detect_hardware()
    assert mac.mps and not mac.cuda and "Apple silicon" in mac.describe()
    assert choose_profile(mac) == "cpu"
    cfg = nbutils.load_config("auto", hardware=mac)
    assert cfg.profile == "cpu" and cfg.device == "mps"
    assert nbutils.load_config("cpu", hardware=mac, device="cpu").device == "cpu"
    with pytest.raises(ConfigError, match="device 'mps' is the GPU of Apple-silicon Macs"):
        nbutils.load_config("cpu", hardware=CPU, device="mps")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")  # an Intel Mac: no mps
    assert not hardware.detect_hardware().mps


def test_mps_without_support_falls_back_to_the_cpu(capsys) -> None:
    import torch

    from nbutils.torch_train import resolve_device

    if torch.backends.mps.is_available():  # pragma: no cover - only on a Mac
        pytest.skip("this machine has mps")
    assert resolve_device("mps") == torch.device("cpu")
    assert "cannot use the Apple GPU (mps); training on the CPU" in capsys.readouterr().out
    assert resolve_device("cpu") == torch.device("cpu")


# ------------------------------------------------------------------------ precision

BF16_CPU = Hardware(cpu_count=2, cuda=False, platform="test", cpu_bf16=True)


@pytest.mark.parametrize(("hw", "profile", "asked", "expected"), [
    (BF16_CPU, "cpu", None, "bf16"),      # auto: native bf16 on this CPU
    (CPU, "cpu", None, "fp32"),           # auto: emulated bf16 would be slower
    (BF16_CPU, "cpu", "fp32", "fp32"),
    (BF16_CPU, "smoke", None, "fp32"),    # CI: the same numbers on every machine
    (GPU, "gpu", None, "mixed"),          # mixed_precision on: each framework picks bf16/fp16
    (GPU, "gpu", "fp16", "fp16"),
    (GPU, "cpu", None, "fp32"),           # mixed_precision off in the cpu profile, on a GPU
])
def test_precision_resolves_against_the_hardware(hw, profile, asked, expected) -> None:
    cfg = load_config(profile, model="alexnet", hardware=hw, precision=asked)
    assert cfg.precision == expected
    assert cfg.mixed_precision is (expected != "fp32")
    assert f"precision: {expected}" in cfg.summary()


@pytest.mark.parametrize(("hw", "asked", "message"), [
    (CPU, "bf16", "does not compute bf16 natively"),
    (BF16_CPU, "fp16", "needs a CUDA GPU"),
    (CPU, "bf61", "precision must be one of auto, fp32, bf16, fp16"),
])
def test_impossible_precision_is_a_clear_error(hw, asked, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("cpu", model="alexnet", hardware=hw, precision=asked)


def test_precision_on_apple_gpu_is_fp32_or_an_error() -> None:
    mac = Hardware(cpu_count=8, cuda=False, platform="test", mps=True, cpu_bf16=True)
    assert load_config("cpu", hardware=mac, device="mps").precision == "fp32"
    with pytest.raises(ConfigError, match="mps"):
        load_config("cpu", hardware=mac, device="mps", precision="bf16")


def test_a_precision_override_is_its_own_run() -> None:
    base = load_config("cpu", model="alexnet", hardware=BF16_CPU)
    fp32 = load_config("cpu", model="alexnet", hardware=BF16_CPU, precision="fp32")
    assert base.run_id("02_pytorch_alexnet") != fp32.run_id("02_pytorch_alexnet")
