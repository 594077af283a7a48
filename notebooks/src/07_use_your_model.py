# %% [markdown]
# # 07 · Use your model: your own photos, an exported model and a web demo
#
# Notebooks 02 to 06 trained three models and measured them on a held-out test set. A
# model is made to be *used*: on a photo from your phone, inside another program, on a
# web page. This notebook takes the best of the trained models and
#
# 1. classifies photos it has never seen, of any size and shape, including objects that
#    are none of its classes, and shows why such answers need a confidence threshold;
# 2. exports it to **ONNX**, a framework-neutral file that ONNX Runtime runs without
#    PyTorch, TensorFlow or Transformers, checks that the export predicts what the
#    original predicts, and compares size and speed with an 8-bit (int8) copy;
# 3. shows the **web demo** (Gradio) that does all of this in a browser.
#
# Everything here is also a command: `python -m nbutils.predict`, `python -m
# nbutils.export` and `python -m nbutils.demo` (see `docs/notebooks/07_use_your_model.md`).

# %% tags=["parameters"]
profile = "auto"      # gpu | lowvram | cpu | smoke | auto (chosen from the hardware)
dataset = None        # None: the profile's dataset
model_dir = None      # None: the saved model of 02-04 with the best validation accuracy
photos = None         # None: the bundled photos; or a folder or image file of your own
fit = None            # None: the config's ("squash"); "crop" keeps the aspect ratio
threshold = None      # None: the config's (0.5): below it the answer is "not sure"
int8 = None           # None: the config's (True): also export a quantised copy
launch_demo = False   # True: start the web demo here (JupyterLab only, never in batch runs)

# %%
# NBVAL_CHECK_OUTPUT
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import nbutils
from nbutils.data import load_for
from nbutils.export import export_onnx
from nbutils.images import fit_image
from nbutils.paths import display_path
from nbutils.predict import Predictor, read_image
from nbutils.runs import find_runs, is_seed_replicate
from nbutils.samples import SAMPLE_PHOTOS, write_sample_photos

cfg = nbutils.setup(profile, model="use_model", dataset=dataset, fit=fit,
                    threshold=threshold, int8=int8)
settings = cfg.model

# %% [markdown]
# ## 1 · Which model: the best one on the validation split
#
# The run records of notebooks 02-04 name each saved model. We pick by **validation**
# accuracy, not test accuracy: choosing on the test set would make its figure an
# optimistic estimate. (Pass `model_dir` to use another model.)

# %%
found = find_runs(cfg.outputs_dir, cfg.dataset, cfg.profile)
rows = [{"notebook": r.notebook, "model": r.model, "framework": r.framework,
         "val_acc": max(h.get("val_acc", float("nan")) for h in r.history),
         "test_acc": r.test.accuracy, "folder": r.artifacts.get("model")}
        for r in found.records if r.artifacts.get("model") and not is_seed_replicate(r)]
if not rows and model_dir is None:
    raise RuntimeError(f"No saved model for this dataset and profile. Train one first:\n"
                       f"    {found.command}")
table = pd.DataFrame(rows).sort_values("val_acc", ascending=False) if rows else pd.DataFrame()
if len(table):
    print(table.drop(columns="folder").to_string(index=False, float_format="{:.3f}".format))
chosen = model_dir or table.iloc[0]["folder"]
predictor = Predictor(chosen, device="cpu", fit=settings.fit)
print(f"\nchosen: {predictor.model_dir.name}")
print(predictor.describe())

# %% [markdown]
# ## 2 · From a photo to the model's input
#
# The model was trained on small squares: the data layer resized every training image
# to `data.image_size` pixels a side, whatever its shape (CIFAR-10's images are 32 x 32
# already). A new photo must arrive the same way, or the model sees something unlike
# anything it was trained on. Two ways to make a wide photo square:
#
# * **squash** resizes the whole photo; shapes get thinner or wider. It is what training
#   did, so it is the default.
# * **crop** cuts the largest centred square; nothing is distorted, but the sides are lost.
#
# After that, each model applies its own preprocessing, exactly as when it was trained
# (notebook 04's model, for instance, enlarges the square to its input size and
# standardises it with its checkpoint's statistics).

# %%
photo_dir = cfg.outputs_dir / "photos" if photos is None else None
files = ([str(p) for p in write_sample_photos(photo_dir)] if photos is None else [str(photos)])
sample = read_image(files[0])
fig, axes = plt.subplots(1, 3, figsize=(9, 3))
axes[0].imshow(sample)
axes[0].set_title(f"the photo, {sample.size[0]}x{sample.size[1]}")
for ax, how in zip(axes[1:], ("squash", "crop"), strict=True):
    ax.imshow(fit_image(sample, predictor.size, how))
    ax.set_title(f"{how}: {predictor.size}x{predictor.size}")
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3 · Classify photos it has never seen
#
# The bundled photos (from scikit-image) are a cat, which is a CIFAR-10 class, and a
# rocket, an astronaut and a cup of coffee, which are not (under `smoke` the model knows
# only synthetic shapes, so none of them is). Each photo gets its top classes with
# their probabilities.

# %%
predictions = predictor.predict(files, top_k=settings.top_k)
for p in predictions:
    name = p.source.rsplit("/", 1)[-1]
    _, what, cls_name = SAMPLE_PHOTOS.get(name, ("", "your photo", None))
    where = ("" if name not in SAMPLE_PHOTOS else "one of its classes"
             if cls_name in predictor.info.class_names else "none of its classes")
    print(f"{name:<22} {what}{f' ({where})' if where else ''}" if p.ok
          else f"{name}: {p.error}")
    for cls, prob in p.top:
        print(f"    {cls:<14} {prob:6.1%}")

# %%
good = [p for p in predictions if p.ok]
fig, axes = plt.subplots(2, len(good), figsize=(3 * len(good), 5.2), squeeze=False)
for col, p in enumerate(good):
    axes[0, col].imshow(read_image(p.source))
    axes[0, col].set_title(p.source.rsplit("/", 1)[-1][:24], fontsize=9)
    axes[0, col].axis("off")
    names, probs = zip(*p.top, strict=True)
    axes[1, col].barh(names[::-1], probs[::-1], color="tab:blue")
    axes[1, col].set_xlim(0, 1)
    axes[1, col].axvline(settings.threshold, color="grey", ls="--", lw=1)
    axes[1, col].set_xlabel("probability")
plt.tight_layout()
plt.show()

# %% [markdown]
# A classifier trained on ten classes has no way to say "none of these": its softmax
# always sums to one over its classes, so the astronaut *must* get a class. What it
# can give is how sure it is. The next section asks whether that is a usable signal.
#
# ## 4 · Out-of-distribution inputs and a confidence threshold
#
# An input unlike the training data is *out of distribution*. The simplest guard
# (Hendrycks & Gimpel, 2017) answers only when the top probability reaches a
# threshold, and says "not sure" otherwise. On the test set, which *is* in
# distribution, a threshold trades **coverage** (the share of images answered) for
# **accuracy on the answered ones**. The table shows that trade-off, measured; the
# dashed line in the figure above is the threshold of the config.

# %%
data = load_for(cfg, progress=False)
test_probs = predictor.classifier.predict_proba(data.test.images)
confidence, correct = test_probs.max(1), test_probs.argmax(1) == data.test.labels
rows = []
for t in (0.0, 0.3, settings.threshold, 0.7, 0.9):
    kept = confidence >= t
    rows.append({"threshold": t, "coverage": kept.mean(),
                 "accuracy of answered": correct[kept].mean() if kept.any() else float("nan")})
print(pd.DataFrame(rows).drop_duplicates("threshold").to_string(
    index=False, float_format="{:.3f}".format))
photo_conf = {p.source.rsplit("/", 1)[-1]: p.top[0][1] for p in good}
print("\ntop probability on the photos: "
      + ", ".join(f"{k} {v:.2f}" for k, v in photo_conf.items()))
print(f"test images: median top probability {np.median(confidence):.2f} "
      f"(correct {np.median(confidence[correct]) if correct.any() else float('nan'):.2f}, "
      f"wrong {np.median(confidence[~correct]) if (~correct).any() else float('nan'):.2f})")
if cfg.profile == "smoke":
    print("smoke profile: the model is at chance, so these numbers show the mechanics only")

# %% [markdown]
# Read the numbers rather than the story: raising the threshold should raise the
# accuracy of the answered images while fewer are answered. Whether the photos that are
# none of its classes fall *below* the threshold varies: a confident wrong answer on an
# unfamiliar object is common (deep networks are often over-confident far from their
# data), which is why the maximum probability is only a baseline for detecting such
# inputs.
#
# ## 5 · Export to ONNX and check the export
#
# `export_onnx` writes the model as an ONNX graph that takes uint8 pixels and returns
# probabilities; the standardisation is inside the graph and the resize policy is
# written beside it, so `nbutils.predict` needs only ONNX Runtime, NumPy and Pillow
# to use it. The export is **checked**: ONNX Runtime's probabilities are compared with
# the framework's on the test images, and an export that agrees on fewer than 99.5 %
# of them is refused. The int8 copy stores weights as 8-bit integers
# (`onnxruntime.quantization.quantize_dynamic`): smaller, but its accuracy must be
# measured, not assumed.

# %%
report = export_onnx(predictor.model_dir, int8=settings.int8, classifier=predictor.classifier,
                     images=data.test.images, labels=data.test.labels, reference=test_probs,
                     images_from=f"test images of {cfg.dataset}")  # predicted in section 4
print(report.summary())

# %%
variants = pd.DataFrame({"size (MiB)": report.size_mib, "batch-1 latency (ms)": report.latency_ms})
variants["test top-1 agreement with the framework"] = pd.Series(
    {"onnx": report.parity.top1_agreement,
     **({"onnx-int8": report.int8_parity.top1_agreement} if report.int8_parity else {})})
print(f"{'variant':<12}" + "".join(f"{c:>24}" for c in variants.columns[:2]))
for name, row in variants.iterrows():
    print(f"{name:<12}{row['size (MiB)']:>24.2f}{row['batch-1 latency (ms)']:>24.2f}")
print(f"\nONNX vs {report.framework}: top-1 agreement {report.parity.top1_agreement:.2%} on "
      f"{report.parity.n_images} {report.images}, max |difference| {report.parity.max_abs_diff:.1e}")

# %% [markdown]
# The latencies are one image at a time on this machine's CPU, median of repeated calls;
# they include each variant's own resizing. Dynamic int8 quantisation is not free: it
# can lose accuracy (depthwise convolutions like those of EfficientNet suffer most) and
# on a CPU without fast integer kernels it can even be slower. Static quantisation with
# calibration images, not shown here, usually keeps more accuracy.
#
# ## 6 · A web demo
#
# `python -m nbutils.demo MODEL_DIR` (or `make demo MODEL=...`) starts a page on
# http://127.0.0.1:7860 where you upload a photo or use the webcam and see the top-5
# classes and the Grad-CAM overlay (notebook 06). It listens on this computer only;
# `--share` asks Gradio for a temporary public link. The cell below builds the page;
# with `launch_demo = True` in JupyterLab it also starts it (stop it with the square
# button). Batch runs never start it.

# %%
from nbutils import demo  # noqa: E402
from nbutils.gradcam.explorer import batch_execution  # noqa: E402

print(f"python -m nbutils.demo {display_path(predictor.model_dir)}")
app = demo.build_app(predictor, demo.example_images(
    predictor, cfg.outputs_dir / "demo_examples" / predictor.model_dir.name))
if launch_demo and not batch_execution():
    app.launch(server_name="127.0.0.1")

# %% [markdown]
# ## Takeaways
#
# * A photo reaches a model the way the training images did: fitted to the training
#   square (squash, as the data layer did), then the model's own preprocessing.
# * A classifier always answers with one of its classes; its top probability is a weak
#   but measurable signal, and a threshold trades coverage for accuracy.
# * An export is only as good as its check: compare its predictions with the
#   framework's on real images before shipping it.
# * Quantisation makes a model smaller; whether it is faster or as accurate must be
#   measured per model.
#
# ## Exercises
#
# Solutions: `solutions/07_use_your_model.py` prints what it measured and whether each
# expected outcome held ([how the solutions work](../docs/solutions.md)).
#
# 1. Set `fit = "crop"` and re-run section 3. *Expect*: the probabilities of the
#    photos change (the sides are cut off; measured on `cpu`: by up to 0.28), the
#    ranking of the cat photo's classes may change; nothing else in the notebook does.
# 2. Put a few photos of your own in a folder and set `photos` to it. *Expect*: a row
#    per photo; an unreadable file gets its own message and the others are still
#    classified.
# 3. Set `threshold = 0.9`. *Expect*: in the coverage table, the row for 0.9 answers
#    fewer test images, with higher accuracy on those (measured on `cpu` for the
#    EfficientNet: 80 % answered at 97.4 %, against 98 % at 92.5 % for 0.5).
# 4. Run `python -m nbutils.export MODEL_DIR --int8` on the other models. *Expect*: ONNX
#    agreement of 100 % for every model and an int8 copy about a quarter of the size,
#    but an int8 agreement that differs per model (measured: 98-99 % for the three
#    small CNNs, 76 % for EfficientNet-Lite0): measure a quantised model before you
#    ship it.
