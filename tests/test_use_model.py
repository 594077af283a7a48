"""Using a trained model: nbutils.predict, nbutils.export (ONNX) and nbutils.demo."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nbutils import export as ex
from nbutils import predict as pr
from nbutils.images import fit_image
from nbutils.inference import ClassifierInfo, load_classifier, training_size

torch = pytest.importorskip("torch")


# ------------------------------------------------------------------ saved models


@pytest.fixture(scope="module")
def torch_dir(shapes_data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nbutils import torch_models as tm
    from nbutils import torch_train as tt

    torch.manual_seed(0)
    config = tm.AlexNetConfig(num_classes=shapes_data.num_classes, widths=[8, 16, 16, 16, 16],
                              fc_width=32, dropout=0.0)
    info = ClassifierInfo(framework="pytorch", model=config.name,
                          class_names=list(shapes_data.class_names), image_size=32,
                          mean=shapes_data.mean.tolist(), std=shapes_data.std.tolist(),
                          extra={"tta_flip": True}, source_size=shapes_data.image_size)
    out = tmp_path_factory.mktemp("torch") / "02_model"
    return tt.save_classifier(out, tm.build_model(config), info)


@pytest.fixture(scope="module")
def keras_dir(shapes_data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    kt = pytest.importorskip("nbutils.keras_train")
    model = kt.build_cnn_for(shapes_data, None, seed=0, widths=[8, 16], dense_units=16)
    out = tmp_path_factory.mktemp("keras") / "03_model"
    return kt.save_classifier(out, model, kt.classifier_info(shapes_data, tta_flip=True))


@pytest.fixture(scope="module")
def hf_dir(shapes_data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nbutils import hf_offline, hf_train

    tiny = hf_offline.build_tiny_random("tiny-random", tmp_path_factory.mktemp("pretrained"))
    torch.manual_seed(0)
    model, processor = hf_train.load_pretrained(str(tiny), shapes_data.class_names, 24)
    info = hf_train.classifier_info(model, processor, 24, "tiny-random",
                                    source_size=shapes_data.image_size)
    out = tmp_path_factory.mktemp("hf") / "04_model"
    return hf_train.save_classifier(out, model, info, processor=processor)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder of awkward inputs: odd names, modes, sizes, a broken file, a text file."""
    folder = tmp_path / "my photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "wide photo ü.jpg")
    Image.fromarray(rgb[:, :, 0]).save(folder / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full((40, 70), 128, np.uint8)])).save(folder / "rgba.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 200).save(folder / "deep16.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    return folder


# ----------------------------------------------------------------------- reading


def test_read_image_converts_every_mode_and_honours_exif(photos: Path, tmp_path: Path) -> None:
    for name in ("wide photo ü.jpg", "gray.png", "rgba.png", "cmyk.jpg", "deep16.png"):
        img = pr.read_image(photos / name)
        assert img.mode == "RGB" and img.size == (70, 40), name
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.new("RGB", (60, 20), "red").save(path, exif=exif)
    assert pr.read_image(path).size == (20, 60)


@pytest.mark.parametrize("name, message", [("broken.jpg", "not a readable image"),
                                           ("missing.png", "no such file")])
def test_read_image_errors_say_why(photos: Path, name: str, message: str) -> None:
    with pytest.raises(pr.ImageInputError, match=message):
        pr.read_image(photos / name)


def test_read_image_refuses_huge_images(photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pr, "MAX_DECODED_PIXELS", 1000)
    with pytest.raises(pr.ImageInputError, match="megapixels"):
        pr.read_image(photos / "gray.png")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def _serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: _QuietHandler(*a, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_urls_are_downloaded_and_failures_are_explained(photos: Path) -> None:
    server, url = _serve(photos)
    try:
        assert pr.read_image(f"{url}/gray.png").size == (70, 40)
        with pytest.raises(pr.ImageInputError, match="could not download"):
            pr.read_image(f"{url}/absent.png")
    finally:
        server.shutdown()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(pr.ImageInputError, match="network connection"):
        pr.read_image(f"http://127.0.0.1:{port}/x.png")


def test_folders_expand_to_their_images_only(photos: Path) -> None:
    files = [Path(f).name for f in pr.expand_sources([str(photos), "https://x.org/a.png"])]
    assert "notes.txt" not in files and files[-1] == "a.png"
    assert set(files[:-1]) == {"broken.jpg", "cmyk.jpg", "deep16.png", "gray.png", "rgba.png",
                               "wide photo ü.jpg"}


def test_fit_squashes_or_crops_the_centre() -> None:
    wide = np.zeros((10, 30, 3), np.uint8)
    wide[:, 10:20] = 255  # a white centre third
    squashed, cropped = fit_image(wide, 6, "squash"), fit_image(wide, 6, "crop")
    assert squashed.shape == cropped.shape == (6, 6, 3)
    assert cropped.min() == 255  # the centre square is all white
    assert squashed[:, 0].max() == 0 and squashed[:, 2:4].min() > 200  # the whole width kept
    with pytest.raises(ValueError, match="fit policy"):
        fit_image(wide, 6, "stretch")


# ------------------------------------------------------------------ predicting


def test_predictor_classifies_a_folder_and_reports_bad_files(torch_dir: Path, photos: Path
                                                             ) -> None:
    predictor = pr.Predictor(torch_dir)
    results = predictor.predict([str(photos), str(photos / "missing.png")], top_k=3)
    by_name = {Path(p.source).name: p for p in results}
    assert not by_name["broken.jpg"].ok and "not a readable image" in by_name["broken.jpg"].error
    assert not by_name["missing.png"].ok
    good = [p for p in results if p.ok]
    assert len(good) == 5
    for p in good:
        assert len(p.top) == 3 and p.top[0][1] >= p.top[1][1] >= p.top[2][1]
        assert p.top[0][0] in predictor.info.class_names
    # the same image as an array gives the same answer as its file
    array = np.asarray(pr.read_image(photos / "gray.png"))
    alone = predictor.predict_images([array], top_k=3)[0].top
    assert [n for n, _ in alone] == [n for n, _ in by_name["gray.png"].top]
    assert [p for _, p in alone] == pytest.approx([p for _, p in by_name["gray.png"].top], abs=1e-5)
    assert "squashed" in predictor.describe() and "16x16" in predictor.describe()


def test_predictions_follow_the_classifier_on_fitted_images(torch_dir: Path, photos: Path
                                                            ) -> None:
    predictor = pr.Predictor(torch_dir, fit="crop")
    img = pr.read_image(photos / "wide photo ü.jpg")
    expected = predictor.classifier.predict_proba(fit_image(img, 16, "crop")[None])[0]
    got = predictor.predict_images([img], top_k=1)[0]
    assert got.top[0] == (predictor.info.class_names[int(expected.argmax())],
                          pytest.approx(float(expected.max())))


def test_cli_prints_writes_json_and_gradcam(torch_dir: Path, photos: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    out_json, out_png = tmp_path / "p.json", tmp_path / "cam.png"
    rc = pr.main([str(torch_dir), str(photos), "--top-k", "2", "--json", str(out_json),
                  "--gradcam", str(out_png)])
    assert rc == 2  # one input could not be read; the others were classified
    text = capsys.readouterr().out
    assert "broken.jpg: could not classify it" in text and "squashed" in text
    payload = json.loads(out_json.read_text())
    assert payload["fit"] == "squash" and len(payload["predictions"]) == 6
    assert sum(p["ok"] for p in payload["predictions"]) == 5
    assert all(len(p["top"]) == 2 for p in payload["predictions"] if p["ok"])
    assert out_png.stat().st_size > 0
    assert pr.main([str(torch_dir), str(photos / "gray.png"), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"][0]["ok"]
    assert pr.main([str(tmp_path / "no model"), str(photos)]) == 1
    assert "classifier.json" in capsys.readouterr().err


def test_training_size_comes_from_the_info_then_the_record(torch_dir: Path, tmp_path: Path,
                                                           record_factory) -> None:
    info = load_classifier(torch_dir).info
    assert training_size(info) == 16
    info.source_size = None
    assert training_size(info) == 32  # no record: the model's input size
    from nbutils.records import write_record

    outputs = tmp_path / "outputs"
    path = write_record(record_factory(config={"data": {"image_size": 24}}), outputs)
    model_dir = outputs / "models" / path.stem
    shutil.copytree(torch_dir, model_dir)
    assert training_size(info, model_dir) == 24


# ------------------------------------------------------------------------ export


@pytest.mark.parametrize("which", ["torch_dir", "keras_dir", "hf_dir"])
def test_export_agrees_with_the_framework(which: str, shapes_data, request, tmp_path: Path
                                          ) -> None:
    pytest.importorskip("onnxruntime")
    model_dir = request.getfixturevalue(which)
    test = shapes_data.test
    report = ex.export_onnx(model_dir, tmp_path / "onnx", images=test.images, labels=test.labels,
                            latency=False)
    assert report.parity.top1_agreement >= ex.MIN_AGREEMENT
    assert report.parity.max_abs_diff < 1e-4
    assert report.parity.n_images == len(test)
    exported = load_classifier(tmp_path / "onnx")
    assert exported.info.framework == "onnx"
    assert exported.info.extra["exported_from"] == load_classifier(model_dir).info.framework
    # photos of another shape reach both models the same way (fitted, then each one's resize)
    photos = list(np.random.default_rng(1).integers(0, 256, (5, 30, 45, 3), dtype=np.uint8))
    for got, want in zip(pr.Predictor(tmp_path / "onnx").predict_images(photos),
                         pr.Predictor(model_dir).predict_images(photos), strict=True):
        np.testing.assert_allclose(got.probs, want.probs, atol=1e-4)
    saved = json.loads((tmp_path / "onnx" / ex.REPORT_FILE).read_text())
    assert saved["parity"]["top1_agreement"] == report.parity.top1_agreement


def test_int8_copy_is_smaller_and_reported(torch_dir: Path, shapes_data, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    test = shapes_data.test
    report = ex.export_onnx(torch_dir, tmp_path / "onnx", int8=True, images=test.images,
                            labels=test.labels)
    assert Path(report.int8_folder) == tmp_path / "onnx-int8"
    assert report.size_mib["onnx-int8"] < 0.5 * report.size_mib["onnx"]
    assert set(report.latency_ms) == {"pytorch", "onnx", "onnx-int8"}
    assert all(v > 0 for v in report.latency_ms.values())
    q = report.int8_parity
    assert q.n_images == len(test) and 0.0 <= q.top1_agreement <= 1.0 and q.accuracy is not None
    assert load_classifier(report.int8_folder).info.extra["quantized"].startswith("dynamic int8")
    assert "int8" in report.summary() and "points" in report.summary()


def test_an_export_that_disagrees_is_not_written(torch_dir: Path, shapes_data, tmp_path: Path
                                                 ) -> None:
    pytest.importorskip("onnxruntime")
    clf = load_classifier(torch_dir)
    images = shapes_data.test.images
    wrong = np.roll(clf.predict_proba(images), 1, axis=1)  # a reference the export cannot match
    with pytest.raises(ex.ExportError, match="nothing was written"):
        ex._write_export(clf, torch_dir, tmp_path / "onnx", images, wrong, None)
    assert not (tmp_path / "onnx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".onnx")]  # no leftovers


def test_export_errors_and_cli(torch_dir: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    from nbutils.export.__main__ import main

    assert main([str(torch_dir), "--out", str(tmp_path / "e"), "--no-latency"]) == 0
    out = capsys.readouterr().out
    assert "top-1 agreement 100.00%" in out and "sample photos and random images" in out
    with pytest.raises(ex.ExportError, match="already an ONNX export"):
        ex.export_onnx(tmp_path / "e")
    assert main([str(tmp_path / "nothing")]) == 1
    (tmp_path / "e" / "model.onnx").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="ONNX Runtime can open"):
        load_classifier(tmp_path / "e")


def test_onnx_prediction_needs_no_deep_learning_framework(torch_dir: Path, photos: Path,
                                                          tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    ex.export_onnx(torch_dir, tmp_path / "onnx", latency=False)
    code = (
        "import sys; from nbutils.predict import Predictor\n"
        f"p = Predictor({str(tmp_path / 'onnx')!r})\n"
        f"r = p.predict([{str(photos / 'gray.png')!r}])\n"
        "assert r[0].ok, r[0].error\n"
        "loaded = [m for m in ('torch', 'tensorflow', 'keras', 'transformers') if m in sys.modules]\n"
        "print(r[0].top[0][0], loaded)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    top, loaded = proc.stdout.strip().split(" ", 1)
    assert loaded == "[]"
    assert top == pr.Predictor(torch_dir).predict([str(photos / "gray.png")])[0].top[0][0]


# -------------------------------------------------------------------------- demo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo_url(torch_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("gradio")
    from nbutils import demo

    predictor = pr.Predictor(torch_dir)
    examples = demo.example_images(predictor, tmp_path_factory.mktemp("examples"))
    app = demo.build_app(predictor, examples)
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", predictor, examples
    app.close()


def test_demo_answers_through_gradio_client(demo_url, photos: Path) -> None:
    from gradio_client import Client, handle_file

    url, predictor, examples = demo_url
    assert [p.name for p in examples] == [
        "chelsea_the_cat.jpg", "rocket.jpg", "astronaut.jpg", "coffee.jpg"]  # no run record
    label, cam = Client(url, verbose=False).predict(handle_file(str(photos / "gray.png")),
                                                    api_name="/classify")
    expected = predictor.predict([str(photos / "gray.png")])[0]
    assert label["label"] == expected.top[0][0]
    assert len(label["confidences"]) == 5
    assert label["confidences"][0]["confidence"] == pytest.approx(expected.top[0][1], abs=1e-5)
    assert Image.open(cam).size == (224, 224)


def test_demo_page_renders_in_headless_chromium(demo_url) -> None:
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome",
                                              "chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no Chromium or Chrome installed")
    url, predictor, _ = demo_url
    proc = subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu",
                           "--virtual-time-budget=15000", "--dump-dom", url],
                          capture_output=True, text=True, timeout=120)
    assert predictor.info.model in proc.stdout and "Top 5" in proc.stdout


def test_comparison_times_the_onnx_export_too(torch_dir: Path, shapes_data) -> None:
    pytest.importorskip("onnxruntime")
    from nbutils.compare.speed import _measure_here, speed_summary

    settings = {"batch_size": 8, "latency_repeats": 5, "warmup_repeats": 1,
                "throughput_batches": 1, "budget_s": 5.0, "onnx": True}
    figures = _measure_here(torch_dir, shapes_data.test.images, None, settings, "cpu", None)
    assert figures["onnx_latency_ms"] > 0 and figures.get("onnx_error") is None

    class Unexportable:  # a classifier of a framework without an ONNX exporter
        info = ClassifierInfo("numpy", "m", ["a", "b"], 16, [0.5] * 3, [0.2] * 3)

        def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
            return np.full((len(images), 2), 0.5, np.float32)

    figures = _measure_here(torch_dir, shapes_data.test.images, None, settings, "cpu",
                            lambda folder, device: Unexportable())
    assert figures.get("onnx_latency_ms") is None and "cannot be exported" in figures["onnx_error"]
    from nbutils.compare.speed import SpeedResult

    text = speed_summary({"m": SpeedResult("m", "cpu", 1.0, 2.0, 2.5, 5, 100.0, 1, 8, 0.1,
                                           onnx_latency_ms=0.5)})
    assert "ONNX Runtime" in text


def test_demo_examples_come_from_the_run_dataset_and_main_starts_it(
        torch_dir: Path, tmp_path: Path, record_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gradio")
    from nbutils import demo
    from nbutils.records import write_record

    outputs = tmp_path / "outputs"
    record = record_factory(dataset="shapes:16", config={
        "data": {"image_size": 16, "max_train_per_class": 10, "max_test_per_class": 4},
        "paths": {"data_dir": str(tmp_path / "data")}})
    model_dir = outputs / "models" / write_record(record, outputs).stem
    shutil.copytree(torch_dir, model_dir)
    predictor = pr.Predictor(model_dir)
    examples = demo.example_images(predictor, tmp_path / "examples")
    tests = [p for p in examples if p.name.startswith("test_")]
    assert len(tests) == 6 and len(examples) == 10  # one per class, then the 4 photos
    assert Image.open(tests[0]).size == (16, 16)
    assert "test accuracy **50.0%** on `shapes:16`" in demo._header(predictor)

    started = {}
    monkeypatch.setattr("gradio.Blocks.launch", lambda self, **kw: started.update(kw))
    monkeypatch.chdir(tmp_path)
    assert demo.main([str(model_dir.relative_to(tmp_path)), "--port", "7999"]) == 0
    assert started["server_name"] == "127.0.0.1" and started["server_port"] == 7999
    assert started["share"] is False and started["prevent_thread_lock"] is False
    assert demo.main([str(tmp_path / "no model")]) == 1


def test_a_model_folder_size_leaves_out_its_exports(tmp_path: Path) -> None:
    from nbutils.compare.speed import dir_size_bytes

    (tmp_path / "m" / "onnx").mkdir(parents=True)
    (tmp_path / "m" / "classifier.json").write_text("{}")
    (tmp_path / "m" / "weights.bin").write_bytes(b"\0" * 1000)
    (tmp_path / "m" / "onnx" / "classifier.json").write_text("{}")
    (tmp_path / "m" / "onnx" / "model.onnx").write_bytes(b"\0" * 5000)
    assert dir_size_bytes(tmp_path / "m") == 1002
    assert dir_size_bytes(tmp_path / "m" / "onnx") == 5002


def test_saving_a_new_model_removes_the_old_exports(torch_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from nbutils import torch_train as tt

    folder = tmp_path / "m"
    shutil.copytree(torch_dir, folder)
    ex.export_onnx(folder, latency=False, int8=True)
    assert (folder / "onnx").is_dir() and (folder / "onnx-int8").is_dir()
    clf = load_classifier(folder)
    tt.save_classifier(folder, clf.model, clf.info)       # retrained, saved in place
    assert sorted(p.name for p in folder.iterdir()) == [
        "classifier.json", "model.safetensors", "model_config.json"]


def test_export_reuses_given_reference_probabilities(torch_dir: Path, shapes_data,
                                                     tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    clf = load_classifier(torch_dir)
    images, labels = shapes_data.test.images, shapes_data.test.labels
    probs = clf.predict_proba(images)
    report = ex.export_onnx(torch_dir, tmp_path / "onnx", images=images, labels=labels,
                            reference=probs, classifier=clf, latency=False,
                            images_from="test images of shapes")
    assert report.images == "test images of shapes" and report.parity.top1_agreement >= 0.995
    assert report.framework_accuracy == pytest.approx(float((probs.argmax(1) == labels).mean()))
    # a reference that is not the model's own is caught by the parity check
    with pytest.raises(ex.ExportError, match="nothing was written"):
        ex.export_onnx(torch_dir, tmp_path / "bad", images=images, reference=np.roll(probs, 1, 1),
                       classifier=clf, latency=False)
    with pytest.raises(ValueError, match="need the images"):
        ex.export_onnx(torch_dir, tmp_path / "x", reference=probs, latency=False)
    with pytest.raises(ValueError, match="expected"):
        ex.export_onnx(torch_dir, tmp_path / "y", images=images, reference=probs[:3],
                       latency=False)
