# %% [markdown]
# # 06 · Grad-CAM: what the three models look at, checked rather than just drawn
#
# Notebooks 02, 03 and 04 trained a PyTorch AlexNet, a Keras CNN and a fine-tuned
# Hugging Face model on the same images. Accuracy says *how often* they are right; it
# does not say *why*. A model can score well by looking at the wrong thing: a
# watermark, the background, the colour of the photo. This notebook asks each model
# where, in the image, the evidence for its answer is.
#
# Grad-CAM (Selvaraju et al., 2017) answers with a heat map per image, computed from
# one forward and one backward pass. Heat maps are persuasive: it is easy to draw them
# and see what we expect. So we **check** them:
#
# * **localisation**: on the synthetic `shapes` dataset we know where each object is
#   (its mask), so we can count how often a map's peak is on the object (the
#   *pointing game*) and how much of its energy is there, and compare with chance;
# * **sanity** (Adebayo et al., 2018): an explanation must change when the model's
#   weights are scrambled; if it does not, it explains the image, not the model;
# * **faithfulness** (deletion): removing the pixels the map calls important should
#   hurt the model's confidence faster than removing random pixels.
#
# The models are reloaded from the folders the training notebooks saved, through
# `nbutils.inference.load_classifier`, so this notebook imports each framework only to
# load its own model.

# %% tags=["parameters"]
profile = "auto"     # gpu | lowvram | cpu | smoke | auto (chosen from the hardware)
dataset = None       # None: the profile's dataset; masks (the checks) need "shapes"
method = None        # None: the config's ("gradcam"); "gradcam++" for Grad-CAM++
n_images = None      # None: the profile's value (images in the side-by-side figures)
eval_images = None   # None: the profile's value (0 scores the whole test split)
interactive = True   # False: the explorer draws static figures even in JupyterLab
deletion_baseline = None  # None: the config's ("blur"); "mean" or "black"

# %% [markdown]
# The settings live in `configs/models/gradcam.yaml` (with a comment for each) and the
# `models.gradcam` section of each profile: how many images are drawn and scored, the
# method, the deletion steps and baseline, and an optional target layer per framework.

# %%
# NBVAL_CHECK_OUTPUT
import time

import matplotlib.pyplot as plt
import numpy as np

import nbutils
from nbutils import gradcam as gc
from nbutils.data import load_for
from nbutils.gradcam import evaluate as ge
from nbutils.gradcam import explorer as gx
from nbutils.gradcam import plots as gp
from nbutils.gradcam import runs
from nbutils.runs import example_indices

cfg = nbutils.setup(profile, model="gradcam", dataset=dataset, method=method,
                    n_images=n_images, eval_images=eval_images,
                    deletion_baseline=deletion_baseline)
settings = cfg.model
started = time.perf_counter()

# %% [markdown]
# ## 1 · What a CNN looks at, and how Grad-CAM computes it
#
# A convolutional layer's output is a stack of $K$ feature maps $A^k$ ($h \times w$
# each); every position still corresponds to a patch of the input image. Deep layers
# respond to object parts, and the classifier head turns them into a score $y^c$ per
# class. Grad-CAM asks: *how much does each feature map matter for class $c$, and
# where is it active?*
#
# 1. **Importance of a channel**: average the gradient of the score over the map,
#    $\alpha_k^c = \frac{1}{hw}\sum_{i,j} \partial y^c / \partial A^k_{ij}$.
# 2. **Map**: weight the feature maps by their importance and keep the positive part,
#    $L^c = \mathrm{ReLU}\left(\sum_k \alpha_k^c A^k\right)$: the positions whose features
#    *increase* the class score.
# 3. **Show** it: enlarge $L^c$ from $h \times w$ to the image size and lay it over the image.
#
# We use the score before the softmax (a saturated softmax has almost no gradient), and
# a late layer: its maps are coarse but semantic. Grad-CAM++ (option `method`) replaces
# the plain average in step 1 by a weighted one that favours positions where the
# gradient is positive, which helps when several parts of an image carry evidence.
#
# The code is one call for all three frameworks, `gc.gradcam(model, images)`: hooks on a
# PyTorch module, a `GradientTape` over a Keras sub-model, and for Hugging Face the
# PyTorch hooks (a vision transformer's tokens are reshaped back to the patch grid).
# Each model gets its input the way it expects it: resized to its input size and
# standardised with its own mean and standard deviation, or raw pixels for the Keras
# model, which rescales inside. One batched forward and backward pass per batch.

# %%
# NBVAL_CHECK_OUTPUT
data = load_for(cfg, progress=False)
n_eval = settings.eval_images or len(data.test)
images = np.asarray(data.test.images[:n_eval])
labels = np.asarray(data.test.labels[:n_eval])
masks = np.asarray(data.test.masks[:n_eval]) if data.has_masks else None
print(f"test images scored: {len(images)}  ({images.shape[1]}x{images.shape[2]} px)")
print(f"classes: {', '.join(data.class_names)}")
print(f"object masks: {'yes' if masks is not None else 'no (the localisation checks are skipped)'}")

# %% [markdown]
# ## 2 · The trained models
#
# We look for the run records of notebooks 02, 03 and 04 for this dataset and profile;
# each names the folder of its saved model. A missing model is listed with the command
# that trains it; the notebook carries on with the others.

# %%
found = runs.find_trained_models(cfg.outputs_dir, cfg.dataset, cfg.profile)
print(found.summary())
if not found.models:
    raise RuntimeError("No saved model of notebooks 02-04 for this dataset and profile. "
                       f"Train them first:\n    {found.command}")

# %%
models = runs.load_models(found)
layers = {m.label: settings.target_layers.get(m.framework) for m in found.models}
for m in found.models:
    clf = models[m.label]
    layer = layers[m.label] or gc.default_target_layer(clf, images[:1])
    layers[m.label] = layer
    print(f"{m.label:<13} {type(clf.model).__name__:<34} input {clf.info.image_size}px   "
          f"target layer: {layer}")

# %% [markdown]
# **Grad-CAM written out.** For a PyTorch model the whole method is two hooks: a forward
# hook on the target layer keeps its output $A$ and attaches a gradient hook to it, which
# keeps $\partial y^c / \partial A$ when the score of the predicted class is
# back-propagated. The rest is the two formulas above.

# %%
import torch


def gradcam_by_hand(model: torch.nn.Module, x: torch.Tensor, layer: torch.nn.Module):
    """Grad-CAM maps (N, h, w) of each image's predicted class at ``layer``."""
    saved = {}

    def keep(module, inputs, output):                 # hook 1: the layer's output A
        saved["A"] = output
        output.register_hook(lambda grad: saved.__setitem__("dA", grad))  # hook 2: dy/dA

    handle = layer.register_forward_hook(keep)
    try:
        scores = model(x)                              # logits, before the softmax
        model.zero_grad()
        scores.gather(1, scores.argmax(1, keepdim=True)).sum().backward()
    finally:
        handle.remove()
    alpha = saved["dA"].mean(dim=(2, 3), keepdim=True)     # importance of each channel
    return torch.relu((alpha * saved["A"]).sum(dim=1)).detach()  # weighted sum, positive part


# %% [markdown]
# The same maps as the course's `gc.gradcam` computes for the PyTorch model (without its
# mirror-image averaging), checked on every run of the tests:

# %%
# NBVAL_CHECK_OUTPUT
from nbutils.gradcam import torch_backend as tb

torch_runs = [m for m in found.models if m.framework == "pytorch"]
if torch_runs:
    name = torch_runs[0].label
    net = models[name].model.eval()
    x = tb.prepare(net, images[:8], models[name].info)
    ours = gradcam_by_hand(net, x, tb.get_module(net, layers[name])).float().cpu().numpy()
    package = gc.gradcam(models[name], images[:8], layers[name], tta=False).raw
    scale = max(float(np.abs(package).max()), 1e-12)
    print("the hand-written Grad-CAM equals nbutils.gradcam's maps:",
          bool(np.allclose(ours, package, rtol=1e-4, atol=1e-5 * scale)))

# %% [markdown]
# ## 3 · The same test images, explained by the three models
#
# One call per model computes the maps of every scored image (each explains the class
# that model predicts). Grad-CAM prepares each model's input itself, and when a
# classifier predicts with test-time augmentation (the PyTorch one averages each image
# with its mirror image) it explains that average: both passes, the class their mean
# probabilities predict, the two maps averaged. The share of images on which its
# prediction matches the model's own `predict_proba` checks that it explains what the
# model actually predicts. The figure shows a few images of different classes: each row is
# an image, each column a model, titled with its prediction (green when right, red when
# wrong). The white outline is the object and the cross the map's maximum.

# %%
cams, cam_seconds = {}, {}
for name, clf in models.items():
    t = time.perf_counter()
    cams[name] = gc.gradcam(clf, images, layers[name], method=settings.method,
                            batch_size=settings.batch_size)
    cam_seconds[name] = time.perf_counter() - t
    agree = (clf.predict_proba(images).argmax(axis=1) == cams[name].predictions).mean()
    print(f"{name:<13} {len(images)} maps in {cam_seconds[name]:.2f} s "
          f"({1000 * cam_seconds[name] / len(images):.1f} ms per image), "
          f"layer grid {cams[name].raw.shape[1]}x{cams[name].raw.shape[2]}, "
          f"same prediction as predict_proba on {agree:.0%}")

# %%
shown = example_indices(labels, settings.n_images, seed=cfg.seed)
fig = gp.plot_cam_grid(images[shown], {n: c.maps[shown] for n, c in cams.items()}, labels[shown],
                       {n: c.predictions[shown] for n, c in cams.items()}, data.class_names,
                       probs={n: c.probs[shown] for n, c in cams.items()},
                       masks=None if masks is None else masks[shown],
                       title=f"{settings.method}: the same test images, three models")
plt.show()

# %% [markdown]
# Look at the resolution first: each map is only as fine as its layer's grid (printed
# above), so a 2×2 or 4×4 grid can only say "this quarter of the image". Then compare
# the models: do they agree on where the evidence is? A model that is right for the
# wrong reasons shows up here as a confident prediction with a map on the background.

# %% [markdown]
# ## 4 · Correct and misclassified images
#
# For a few images each model gets right and a few it gets wrong, we draw two maps: the
# evidence for the class it predicted, and the evidence for another class: the true
# class when it is wrong, its second guess when it is right. A mistake with a map on
# the object often means a confusable shape (a square seen as a cross); a map on the
# background means the model never found the object.

# %%
k = settings.examples_per_kind
for name, clf in models.items():
    cam = cams[name]
    right = np.flatnonzero(cam.predictions == labels)[:k]
    wrong = np.flatnonzero(cam.predictions != labels)[:k]
    idx = np.concatenate([right, wrong])
    if len(idx) == 0:
        continue
    runner_up = np.argsort(cam.probs[idx], axis=1)[:, -2]
    other = np.where(cam.predictions[idx] == labels[idx], runner_up, labels[idx])
    other_maps = gc.gradcam(clf, images[idx], layers[name], target_class=other,
                            method=settings.method).maps
    fig = gp.plot_correct_vs_wrong(images[idx], cam.maps[idx], other_maps, labels[idx],
                                   cam.predictions[idx], other, data.class_names,
                                   masks=None if masks is None else masks[idx],
                                   title=f"{name}: {len(right)} right, {len(wrong)} wrong")
    plt.show()

# %% [markdown]
# ## 5 · The effect of the target layer
#
# Grad-CAM can explain any convolutional layer. Early layers have fine grids but respond
# to edges and colours, which exist everywhere; late layers have coarse grids but
# respond to what decides the class. We draw each model's maps at a few depths (its
# candidate layers, shallow to deep, the default last) and score how often each layer's
# peak is on the object (on the first `layer_images` test images).

# %%
layer_scores: dict[str, dict[str, float]] = {}
few = shown[:2]
for name, clf in models.items():
    candidates = [c.name for c in gc.candidate_layers(clf, images[:1])]
    if layers[name] not in candidates:
        candidates.append(layers[name])
    pick = np.unique(np.linspace(0, len(candidates) - 1, settings.layers_compared).round()
                     .astype(int))
    chosen = [candidates[i] for i in pick]
    by_layer, layer_scores[name] = {}, {}
    scored = np.union1d(few, np.arange(min(settings.layer_images, len(images))))
    for layer in chosen:
        res = gc.gradcam(clf, images[scored], layer, method=settings.method,
                         batch_size=settings.batch_size)
        by_layer[f"{layer}\n{res.raw.shape[1]}x{res.raw.shape[2]}"] = \
            res.maps[np.searchsorted(scored, few)]
        if masks is not None:
            layer_scores[name][layer] = ge.localisation(res.maps, masks[scored]).pointing_game
    fig = gp.plot_layer_effect(images[few], by_layer, None if masks is None else masks[few],
                               title=f"{name}: shallow → deep")
    plt.show()
for name, scores in layer_scores.items():
    print(f"{name:<13} pointing game by layer: "
          + ", ".join(f"{layer} {v:.2f}" for layer, v in scores.items()))

# %% [markdown]
# ## 6 · Check 1: does the map point at the object?
#
# **Pointing game**: the share of images whose map maximum falls inside the object's
# mask. **Energy inside the mask**: the share of the map's total mass on the object. A
# map that knows nothing (uniform, or a random peak) scores the object's area on both,
# so the **chance rate is the mean mask area**. We score every test image, and the
# correctly classified ones on their own.

# %%
loc, loc_right = {}, {}
if masks is not None:
    for name, cam in cams.items():
        loc[name] = ge.localisation(cam.maps, masks, settings.pointing_tolerance)
        ok = cam.predictions == labels
        loc_right[name] = ge.localisation(cam.maps[ok], masks[ok], settings.pointing_tolerance) \
            if ok.any() else None
    for name in cams:
        s, r = loc[name], loc_right[name]
        right_text = f"{r.pointing_game:.3f} on the {r.n} right" if r else "no image right"
        print(f"{name:<13} pointing game {s.pointing_game:.3f} ({right_text}), "
              f"energy inside {s.energy:.3f}, chance {s.chance:.3f}, empty maps {s.n_empty}")
    fig = gp.plot_localisation({n: v.to_dict() for n, v in loc.items()},
                               title=f"localisation on {len(images)} test images")
    plt.show()
else:
    print("no masks for this dataset: localisation is scored on 'shapes' only")

# %% [markdown]
# A pointing game well above the mask area means the map's peak is on the object far
# more often than luck would put it there. The energy is a stricter measure: a coarse
# map spreads over the object's surroundings, so even a good map rarely puts most of
# its mass inside a small object.

# %% [markdown]
# ## 7 · Check 2: scramble the weights, does the map change?
#
# Adebayo et al. (2018) found that some saliency methods produce almost the same map
# for a trained network and for the same network with random weights: they behave like
# edge detectors. We re-initialise every weight of each model (same architecture, same
# target layer, same class) and compute the **Spearman rank correlation** between the
# two maps of each image. Near 1: the map ignores what the model learned (bad). Near 0:
# the map depends on the learned weights (what we want).

# %%
randomized = {}
n_rand = min(settings.randomization_images, len(images))
for name, clf in models.items():
    randomized[name] = ge.randomization_check(
        clf, images[:n_rand], target_layer=layers[name], method=settings.method,
        seed=cfg.seed, trained=ge.CAMSlice(cams[name], n_rand))
    r = randomized[name]
    print(f"{name:<13} rank correlation trained vs re-initialised: mean {r.mean:.3f}, "
          f"mean |rho| {r.mean_abs:.3f} over {len(r.rho) - r.n_constant} images "
          f"({r.n_constant} with a constant map)")
fig = gp.plot_randomization(images[:n_rand], randomized, n=settings.examples_per_kind)
plt.show()

# %% [markdown]
# A caveat: a model with random weights often produces an *empty* map. The map is empty
# when the weighted sum $\sum_k \alpha_k A^k$ is at most zero at every position, so that
# the ReLU removes everything; all-negative channel weights are one way to get there
# (sufficient, not necessary: positive weights on channels that are zero where negative
# ones are active do it too). A constant map has no ranking, so those images are counted
# separately rather than scored as 0.

# %% [markdown]
# ## 8 · Check 3: deleting the important pixels first
#
# If the map is faithful to the model, removing the pixels it ranks highest should make
# the model lose confidence fast. We replace the top 0%, 10%, …, 100% of pixels (by map
# value) with the same pixels of a heavily blurred copy (the information goes, no new
# edges appear) and track the probability of the explained class. Two controls remove
# the same number of pixels in a random order: scattered single pixels, and random
# blobs as coarse as the explained layer (a random map on the layer's grid, enlarged
# like the Grad-CAM map). **Lower area under the curve is better**; the *win rate* is
# the share of images where Grad-CAM's order beats the random pixels.

# %%
deletion = {}
n_del = min(settings.deletion_images, len(images))
for name, clf in models.items():
    cam = cams[name]
    deletion[name] = ge.deletion_curve(clf.predict_proba, images[:n_del], cam.maps[:n_del],
                                       cam.class_idx[:n_del], steps=settings.deletion_steps,
                                       baseline=settings.deletion_baseline,
                                       seed=cfg.seed, smooth_grid=cam.raw.shape[1:])
    d = deletion[name]
    print(f"{name:<13} deletion AUC: Grad-CAM order {d.auc_saliency:.3f}, random pixels "
          f"{d.auc_random:.3f}, random blobs {d.auc_random_smooth:.3f}; Grad-CAM better than "
          f"random pixels on {d.win_rate:.0%} of {n_del} images")
fig = gp.plot_deletion(deletion, title="deletion curves (lower is more faithful)")
plt.show()

# %% [markdown]
# The baseline matters. Replacing pixels with a flat colour (`deletion_baseline: mean`)
# draws new edges into a small image, and scattered flat pixels look like noise to a CNN:
# with that baseline a random order can hurt a model more than Grad-CAM's order, for
# reasons that have nothing to do with where the evidence is. Try it (exercise 3).
#
# The blurred baseline has limits too. Blurring removes edges and texture but keeps
# low-frequency colour and shape, so a model that uses colour still sees part of the
# evidence; and the *pattern* of deleted pixels can itself carry the class (deleting the
# object's outline draws its shape), which ROAD (Rong et al., 2022) measures and
# corrects. So the deletion curve can show that Grad-CAM's ranking matters to the model
# more than a random one; it cannot show that the map is *the* explanation, nor compare
# methods whose maps have different shapes.

# %% [markdown]
# ## 9 · The Grad-CAM record
#
# The figures of the three checks go to `outputs/gradcam/<dataset>__<profile>.json`
# (written atomically), next to the run records of the training notebooks.

# %%
summary = {}
for m in found.models:
    name = m.label
    summary[name] = {
        "run_id": m.run_id, "framework": m.framework, "model": m.model, "layer": layers[name],
        "method": settings.method, "test_accuracy_recorded": round(m.test_accuracy, 4),
        "accuracy_on_scored_images": round(float((cams[name].predictions == labels).mean()), 4),
        "localisation": loc[name].to_dict() if name in loc else None,
        "localisation_correct_only": loc_right[name].to_dict() if loc_right.get(name) else None,
        "pointing_game_by_layer": {k: round(v, 4) for k, v in layer_scores.get(name, {}).items()},
        "randomization": randomized[name].to_dict(),
        "deletion": deletion[name].to_dict(),
        "seconds": {"gradcam": round(cam_seconds[name], 3),
                    "per_image_ms": round(1000 * cam_seconds[name] / len(images), 2)},
    }
path = runs.write_cam_record(cfg.outputs_dir, cfg.dataset, cfg.profile, summary,
                         settings=settings.to_dict(),
                         extra={"n_scored": len(images), "missing": found.missing})
print(runs.format_summary(summary))
print(f"\nwritten: outputs/gradcam/{path.name}")

# %% [markdown]
# Whatever the models learned, these must hold (nbval checks the printed answers):

# %%
# NBVAL_CHECK_OUTPUT
print("one map per scored image, every value in [0, 1]:",
      all(c.maps.shape[0] == len(images) and 0 <= c.maps.min() and c.maps.max() <= 1
          for c in cams.values()))
scores = [s.pointing_game for s in loc.values()] + [s.chance for s in loc.values()]
print("pointing game and chance rates in [0, 1]:", all(0 <= v <= 1 for v in scores))
print("randomisation rank correlations in [-1, 1]:",
      all((np.abs(r.rho[np.isfinite(r.rho)]) <= 1 + 1e-9).all() for r in randomized.values()))

# %% [markdown]
# ## 10 · Explore
#
# Pick an image, a model, a layer and a class (or "predicted"), and the method. In
# JupyterLab this is interactive; when the notebook runs in batch (papermill, nbval,
# `python -m nbutils.run`) it draws a few static panels instead.

# %%
gx.explorer(models, images, labels, data.class_names, masks=masks, layers=layers,
            method=settings.method, interactive=interactive)
print(f"notebook time: {time.perf_counter() - started:.1f} s")

# %% [markdown]
# ## 11 · Lab: a shortcut the model takes, and Grad-CAM catches it
#
# A model learns whatever separates the classes most easily, and a dataset can offer
# something easier than the object: a watermark on one class's photos, a ruler beside
# every malignant lesion, a hospital's tag on the X-rays of the sick. Here we plant one.
# Every training and validation image of the synthetic shapes gets a small square in its
# top-left corner whose colour names its class; the test images stay clean. Two small
# AlexNets, same recipe (no augmentation, so the square stays where it is), one trained
# on clean images and one on marked images, are then scored on the clean test images and
# on the same test images with the marker, and Grad-CAM shows where each looks.

# %%
from nbutils.data import load as load_dataset
from nbutils.data.shortcut import marker_mask, stamp_marker, with_shortcut
from nbutils.gradcam import shortcut_lab

lab = []
if settings.shortcut_lab:
    shapes = load_dataset(f"shapes:{settings.shortcut_images}", image_size=32, seed=cfg.seed,
                          data_dir=cfg.data_dir, progress=False)
    lab = shortcut_lab.train_pair(shapes, with_shortcut(shapes), settings.shortcut_epochs,
                                  seed=cfg.seed, mixed_precision=cfg.mixed_precision)
    marked_test = stamp_marker(shapes.test.images, shapes.test.labels)
    for m in lab:
        shortcut_lab.score(m, shapes.test, marked_test, shapes.test.masks,
                           marker_mask(32, len(shapes.test)))
    print(f"{'model':<8} {'val acc (as trained)':>21} " + " ".join(
        f"{k:>15}" for k in lab[0].scores))
    for m in lab:
        print(f"{m.name:<8} {m.val_acc:>21.3f} " + " ".join(
            f"{v:>15.3f}" for v in m.scores.values()))
    pick = example_indices(shapes.test.labels, 4, seed=cfg.seed)
    gp.plot_cam_grid(marked_test[pick], {m.name: m.maps[pick] for m in lab},
                     shapes.test.labels[pick],
                     {m.name: m.classifier.predict_proba(marked_test[pick]).argmax(1)
                      for m in lab}, shapes.class_names,
                     masks=shapes.test.masks[pick], title="marked test images")
    plt.show()

# %% [markdown]
# Read the table row by row. The marked model's validation accuracy (marked images, what
# its developer sees) is excellent; on clean test images it falls, because what it
# learned was the corner's colour; on the marked test images its Grad-CAM maximum sits on
# the marker far more often than on the shape. The clean model, shown the same marked
# images, still looks at the shapes. Under `smoke` the runs are too short to show this;
# on the `cpu` profile the numbers are in the
# [reference page](../docs/notebooks/06_gradcam.md).

# %% [markdown]
# ## Takeaways
#
# * Grad-CAM is two hooks and two formulas: channel weights from averaged gradients, a
#   weighted sum of the feature maps, its positive part.
# * A map is only as fine as its layer's grid.
# * Check maps rather than trust them: does the map point at the object, does it change
#   when the weights are scrambled, does deleting its top pixels hurt the model?
# * Every faithfulness number depends on its baseline; report the baseline with it.
#
# ## Exercises
#
# Solutions: `solutions/06_gradcam.py` prints what it measured and whether each
# expected outcome held ([how the solutions work](../docs/solutions.md)).
#
# 1. **Grad-CAM++.** Set `method = "gradcam++"`. *Expect*: maps whose peak falls in the
#    same cell of the explained layer as Grad-CAM's on about half the images (measured
#    on `cpu`, the AlexNet on CIFAR-10: 52 % of 200), and on `shapes` data, where the
#    pointing game is defined, pointing-game scores within a few points of Grad-CAM's
#    (0.62 against 0.59).
# 2. **The deletion baseline.** Set `deletion_baseline = "mean"`. *Expect*: the random
#    orders' curves fall much faster than with the blur (flat patches are far from
#    anything the network saw in training), so Grad-CAM's advantage shrinks or reverses
#    (measured: random-pixel AUC 0.33 against 0.47 with the blur; Grad-CAM better than
#    random on 31 % of the images instead of 73 %): a faithfulness number is
#    meaningless without its baseline.
