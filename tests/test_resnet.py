"""The ResNet family of the PyTorch model registry, and bf16 on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from nbutils import torch_models as tm  # noqa: E402
from nbutils import torch_train as tt  # noqa: E402
from nbutils.hardware import cpu_has_bf16  # noqa: E402
from nbutils.inference import ClassifierInfo, load_classifier  # noqa: E402
from nbutils.torch_resnet import ResidualBlock, ResNetConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_resnet9_layout_and_names() -> None:
    model = tm.build_model(ResNetConfig())
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(convs) + len(linears) == 9 and model.model_config.name == "resnet9-w64"
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert ResNetConfig(widths=[32, 64, 128, 256], residual=False).name == "plain9-w32"
    assert ResNetConfig(blocks=[1, 1, 1, 1]).name == "resnet13-w64"


def test_plain_and_residual_networks_have_the_same_weights_and_cost() -> None:
    res = tm.build_model(ResNetConfig(widths=[8, 16, 32], blocks=[1, 1, 1]))
    plain = tm.build_model(ResNetConfig(widths=[8, 16, 32], blocks=[1, 1, 1], residual=False))
    assert tm.count_parameters(res) == tm.count_parameters(plain)
    plain.load_state_dict(res.state_dict())      # same layers, same names
    x = torch.randn(2, 3, 16, 16)
    assert not torch.allclose(res.eval()(x), plain.eval()(x))   # only the skips differ


def test_the_residual_block_adds_its_input() -> None:
    block = ResidualBlock(4).eval()
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(block(x), x + block.body(x))
    block.residual = False
    torch.testing.assert_close(block(x), block.body(x))


def test_bad_configs_are_refused() -> None:
    for bad, match in [({"widths": [8, 16], "blocks": [1]}, "same length"),
                       ({"blocks": [0, -1, 0, 1]}, "non-negative"),
                       ({"image_size": 4}, "at least 8 px"),
                       ({"dropout": 1.0}, "dropout")]:
        with pytest.raises(ValueError, match=match):
            ResNetConfig(**bad)
    with pytest.raises(ValueError, match="Unknown ResNetConfig"):
        ResNetConfig.from_dict({"depth": 20})


def test_a_saved_resnet_reloads_through_the_registry(tmp_path) -> None:
    torch.manual_seed(0)
    config = ResNetConfig(num_classes=3, widths=[8, 16, 16], blocks=[0, 1, 1])
    model = tm.build_model(config).eval()
    info = ClassifierInfo(framework="pytorch", model=config.name, class_names=["a", "b", "c"],
                          image_size=16, mean=[0.5] * 3, std=[0.25] * 3)
    tt.save_classifier(tmp_path / "m", model, info)
    clf = load_classifier(tmp_path / "m")
    x = torch.randint(0, 256, (4, 16, 16, 3), dtype=torch.uint8).numpy()
    torch.testing.assert_close(torch.from_numpy(clf.predict_proba(x)),
                               torch.from_numpy(tt.predict_proba(model, x, [0.5] * 3, [0.25] * 3)))
    assert type(clf.model).__name__ == "SmallResNet"


def test_cpu_bf16_is_read_from_the_cpu_flags() -> None:
    assert cpu_has_bf16("flags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n")
    assert cpu_has_bf16("flags : fpu amx_bf16\n")
    assert not cpu_has_bf16("flags : fpu sse avx2 avx512f\n")
    assert not cpu_has_bf16("")


def test_bf16_autocast_trains_on_the_cpu(shapes_data) -> None:
    from nbutils import torch_data as td

    torch.manual_seed(0)
    model = tm.build_model(ResNetConfig(num_classes=6, widths=[8, 16, 16], blocks=[0, 1, 0],
                                        image_size=16))
    loaders = td.make_loaders(shapes_data, 16, mode="tensor", seed=1)
    config = tt.TrainConfig(epochs=1, lr=0.05, mixed_precision=True, num_threads=1)
    amp = tt.amp_settings("cpu", True, bf16_supported=True)
    assert amp.label == "bf16"
    result = tt.fit(model, loaders["train"], loaders["val"], config, progress=False)
    assert result.history and all(p.dtype == torch.float32 for p in model.parameters())


def test_the_resnet_run_sits_beside_the_alexnet_run(tmp_path, record_factory) -> None:
    from nbutils.gradcam.runs import find_trained_models
    from nbutils.records import write_record
    from nbutils.run import discover_notebooks
    from nbutils.runs import find_runs, is_seed_replicate

    outputs = tmp_path / "outputs"
    for notebook, model in (("02_pytorch_alexnet", "alexnet-small-bn"),
                            ("02b_pytorch_resnet", "resnet9-w48")):
        rec = record_factory(notebook=notebook, model=model)
        folder = outputs / "models" / rec.run_id
        folder.mkdir(parents=True)
        (folder / "classifier.json").write_text("{}")
        rec.artifacts = {"model": str(folder)}
        write_record(rec, outputs)
    found = find_runs(outputs, "shapes", "smoke")
    assert [r.notebook for r in found.records] == ["02_pytorch_alexnet", "02b_pytorch_resnet"]
    assert not any(is_seed_replicate(r) for r in found.records)
    assert "02" not in [m.prefix for m in found.missing]
    seed = record_factory(notebook="02_pytorch_alexnet", model="alexnet-small-bn",
                          config={"variant": "seed-43"})
    seed.artifacts = {"model": str(folder)}
    write_record(seed, outputs)   # a seed replicate: the same model again, not a third one
    labels = [m.label for m in find_trained_models(outputs, "shapes", "smoke").models]
    assert labels == ["PyTorch (alexnet-small-bn)", "PyTorch (resnet9-w48)"]
    names = [p.stem for p in discover_notebooks(REPO / "notebooks")]
    assert names.index("02b_pytorch_resnet") == names.index("02_pytorch_alexnet") + 1
    assert [p.stem for p in discover_notebooks(REPO / "notebooks", ["02b"])] == [
        "02b_pytorch_resnet"]


def test_a_resnet_on_cifar100_records_top5(tmp_path, cifar_writer, cpu_only) -> None:
    import nbutils
    from nbutils import torch_data as td
    from nbutils.data import load_for
    from nbutils.runs import finish_run
    from nbutils.torch_resnet import config_from_settings

    cifar_writer(tmp_path / "d" / "raw" / "cifar-100-python.tar.gz", kind="cifar100",
                 num_classes=100, per_class_train=3, per_class_test=1)
    cfg = nbutils.setup("smoke", model="resnet", verbose=False, dataset="cifar100",
                        data_dir=str(tmp_path / "d"), outputs_dir=str(tmp_path / "o"))
    data = load_for(cfg, progress=False)
    assert data.num_classes == 100
    torch.manual_seed(0)
    model = tm.build_model(config_from_settings(cfg.model, data.num_classes, data.image_size))
    loaders = td.make_loaders(data, 32, mode="tensor", seed=0)
    result = tt.fit(model, loaders["train"], loaders["val"],
                    tt.TrainConfig.from_settings(cfg.model, epochs=1), progress=False)
    probs = tt.predict_proba(model, data.test.images, data.mean, data.std)
    record = finish_run(cfg, data, notebook="02b_pytorch_resnet", framework="pytorch",
                        model=model.model_config.name, probs=probs, fit=result, num_params=1,
                        show=False)
    assert record.test.top5_accuracy is not None
    assert record.test.accuracy <= record.test.top5_accuracy <= 1.0


def test_busy_cores_leave_out_this_process(monkeypatch) -> None:
    import os
    import time

    from nbutils import hardware

    ticks = os.sysconf("SC_CLK_TCK")
    cores = os.cpu_count() or 1
    samples = [(0, 0), (int(1.5 * ticks), 2 * cores * ticks)]  # 1.5 core-s busy in 2 s
    times = [os.times_result((10.0, 1.0, 0, 0, 0)), os.times_result((10.4, 1.1, 0, 0, 0))]
    monkeypatch.setattr(hardware, "_cpu_jiffies", lambda: samples.pop(0))
    monkeypatch.setattr(hardware.os, "times", lambda: times.pop(0) if times else times_end)
    times_end = times[-1]
    monkeypatch.setattr(time, "sleep", lambda s: None)
    busy = hardware.busy_cores_elsewhere(interval=2.0)
    assert busy == pytest.approx((1.5 - 0.5) / 2.0)   # 0.5 core-s were this process's own
    assert tt.idle_cores(load_average=0.4) == min(cores, round(cores - 0.4))
    monkeypatch.setattr(hardware, "_cpu_jiffies", lambda: None)
    assert hardware.busy_cores_elsewhere() is None
