# %% [markdown]
# # Solutions · 06 Grad-CAM
#
# Run after the training notebooks (02-04) for the same profile and dataset, as a script
# (`python solutions/06_gradcam.py --profile cpu --dataset imagefolder:PATH`) or from a
# notebook cell with `%run`. Both exercises explain the PyTorch model (the fastest);
# the notebook's parameters do the same for every model.

# %%
import numpy as np

import nbutils
from nbutils import exercises
from nbutils import gradcam as gc
from nbutils.data import load as load_dataset
from nbutils.data import load_for
from nbutils.gradcam import evaluate as ge
from nbutils.gradcam import runs, shortcut_lab

args = exercises.parse_args()
cfg = nbutils.setup(args.profile, model="gradcam", dataset=args.dataset, verbose=False)
record = exercises.SolutionRecord("06_gradcam", cfg, __file__)
settings = cfg.model
data = load_for(cfg, progress=False)
images = np.asarray(data.test.images[:200])
masks = np.asarray(data.test.masks[:200]) if data.has_masks else None
found = runs.find_trained_models(cfg.outputs_dir, cfg.dataset, cfg.profile)
if not found.models:
    raise SystemExit(f"No saved model for this dataset and profile. Train them first:\n"
                     f"    {found.command}")
models = runs.load_models(found)
name, clf = next(iter(models.items()))
print(f"explaining {name} on {len(images)} test images")

# %% [markdown]
# ## 1 · Grad-CAM++
#
# Both methods weight the same feature maps, so their peaks often land in the same
# cell of the explained layer, though far from always. The pointing game needs object
# masks: when the dataset has none (CIFAR-10), we train the shortcut lab's small network
# on clean `shapes` images (section 11's recipe) and score both methods there.

# %%
cams = {m: gc.gradcam(clf, images, method=m, batch_size=settings.batch_size)
        for m in ("gradcam", "gradcam++")}
peaks = {m: c.raw.reshape(len(images), -1).argmax(1) for m, c in cams.items()}
same_peak = float((peaks["gradcam"] == peaks["gradcam++"]).mean())
grid = "x".join(map(str, cams["gradcam"].raw.shape[1:]))
print(f"the two maps peak in the same cell of the {grid} layer grid on {same_peak:.0%} "
      "of the images")
record.expect(1, "share of images where both maps peak in the same layer cell", same_peak, ">",
              0.4)
if masks is None:
    shapes = load_dataset(f"shapes:{settings.shortcut_images}", image_size=32, seed=cfg.seed,
                          data_dir=cfg.data_dir, progress=False)
    lab = shortcut_lab.train_one("shapes", shapes, settings.shortcut_epochs, cfg.seed,
                                 cfg.mixed_precision)
    scored_clf, scored, scored_masks = lab.classifier, shapes.test.images, shapes.test.masks
    print(f"shapes model: validation accuracy {lab.val_acc:.3f}")
else:
    scored_clf, scored, scored_masks = clf, images, masks
game = {m: ge.localisation(gc.gradcam(scored_clf, scored, method=m).maps,
                           scored_masks).pointing_game for m in ("gradcam", "gradcam++")}
print(f"pointing game on {len(scored)} shapes images: Grad-CAM {game['gradcam']:.3f}, "
      f"Grad-CAM++ {game['gradcam++']:.3f}")
record.expect(1, "|pointing game Grad-CAM++ - Grad-CAM|",
              abs(game["gradcam++"] - game["gradcam"]), "<=", 0.05)

# %% [markdown]
# ## 2 · The deletion baseline
#
# Pixels replaced by the mean colour instead of a blurred copy. A flat patch is far from
# anything the network saw in training, so even a random order of deletion hurts fast.

# %%
n_del = min(settings.deletion_images, len(images))
cam = cams["gradcam"]
curves = {b: ge.deletion_curve(clf.predict_proba, images[:n_del], cam.maps[:n_del],
                               cam.class_idx[:n_del], steps=settings.deletion_steps,
                               baseline=b, seed=cfg.seed, smooth_grid=cam.raw.shape[1:])
          for b in ("blur", "mean")}
for b, d in curves.items():
    print(f"{b:>5}: AUC Grad-CAM order {d.auc_saliency:.3f}, random pixels {d.auc_random:.3f}; "
          f"Grad-CAM better on {d.win_rate:.0%} of {n_del} images")
record.expect(2, "random-order deletion AUC, mean baseline minus blur baseline",
              curves["mean"].auc_random - curves["blur"].auc_random, "<", 0.0)

# %%
record.save()
