# %% [markdown]
# # 01 · Know your data before you train on it
#
# Every model in this course learns from the same images, split the same way. The
# networks trained from scratch (02, 02b, 03) are also normalised the same way, with the
# training split's per-channel statistics computed here; the pretrained network of 04
# keeps the statistics it was pretrained with (ImageNet's), because its first layer's
# weights were learned on inputs scaled that way. This notebook looks at the images
# before any network does:
#
# 1. **What is there?** classes, split sizes, class balance;
# 2. **What does it look like?** a sample of every class, pixel statistics, image sizes;
# 3. **What could fool us?** duplicates *within* a split inflate the training signal,
#    duplicates *across* train and test leak answers into the exam and make accuracy
#    look better than it is (a real problem in Kaggle datasets, and even in CIFAR);
# 4. **Browse** the images class by class.
#
# Nothing here is specific to one framework: the data layer in `nbutils.data` is plain
# NumPy, and the PyTorch, Keras and Hugging Face notebooks all consume what it returns.

# %% tags=["parameters"]
profile = "auto"     # gpu | lowvram | cpu | smoke | auto (chosen from the hardware)
dataset = None       # None: the profile's dataset; e.g. "cifar10", "imagefolder:PATH", "shapes"
image_size = None    # None: the profile's image size
near_duplicate_distance = None  # None: the config's (max differing hash bits of a near pair)

# %% [markdown]
# `nbutils.setup` merges the hardware profile (`configs/profiles/<profile>.yaml`), this
# notebook's settings (`configs/models/eda.yaml`) and the parameters above into one
# validated configuration, seeds every random generator and prints a summary.

# %%
# NBVAL_CHECK_OUTPUT
import nbutils
from nbutils import eda, plots
from nbutils.data import load_for

cfg = nbutils.setup(profile, model="eda", dataset=dataset, image_size=image_size,
                    near_duplicate_distance=near_duplicate_distance)

# %% [markdown]
# ## 1 · Load, split, normalise
#
# `load_for(cfg)` decodes every image once, resizes it to the profile's size and caches
# the uint8 arrays under `data/processed/` (memory-mapped, so a second load takes well
# under a second). The split is **stratified** (every class keeps its share in each
# split) and **fixed** by the seed; the per-channel mean and standard deviation come from
# the training split only, so nothing about the test images leaks into training (the
# networks trained from scratch use them; notebook 04's pretrained one uses its own).

# %%
data = load_for(cfg)

# %%
# NBVAL_CHECK_OUTPUT
print(data.summary())

# %% [markdown]
# Files that could not be read (corrupt, not an image, an empty class folder) are skipped
# and listed rather than stopping the run:

# %%
print(f"{len(data.skipped)} skipped" + "".join(f"\n  {p}: {why}" for p, why in data.skipped[:20]))

# %% [markdown]
# ## 2 · Class balance
#
# An imbalanced dataset makes plain accuracy misleading (a model that always answers the
# majority class scores well). Here we want roughly equal bars in every split.

# %%
# NBVAL_CHECK_OUTPUT
balance = eda.class_balance(data)
print(balance.to_string())

# %%
eda.plot_class_balance(data);

# %% [markdown]
# ## 3 · What the classes look like
#
# Look before you model: are the labels right, are the objects centred, how much does the
# background vary? Eight random training images per class:

# %%
plots.plot_samples_per_class(data, "train", per_class=cfg.model.samples_per_class,
                             seed=cfg.seed);

# %% [markdown]
# ## 4 · Pixel statistics
#
# Networks train best on inputs centred near zero with unit spread, so every notebook
# standardises each channel with the training split's mean and std printed below. The
# histograms show *why* this is needed: raw pixel values are far from centred.

# %%
# NBVAL_CHECK_OUTPUT
print("mean (R, G, B):", [round(float(v), 3) for v in data.mean])
print("std  (R, G, B):", [round(float(v), 3) for v in data.std])

# %%
eda.plot_channel_histograms(data, "train");

# %% [markdown]
# ## 5 · Image sizes and aspect ratios
#
# CIFAR images are all 32 × 32, but a Kaggle-style folder can hold anything. Every image
# is resized to `image_size` × `image_size`; a wide spread of aspect ratios here means
# that squashing distorts shapes, and a crop-based resize might serve better.

# %%
print(eda.size_table(data).round(2).to_string())
eda.plot_sizes(data);

# %% [markdown]
# ## 6 · Exact and near duplicates
#
# We compute a 64-bit *difference hash* for every image (a 9 × 8 grayscale thumbnail; each
# bit says whether a pixel is brighter than its right neighbour). Copies, re-encodings and
# slightly shifted versions of an image have hashes that differ in only a few bits. Pairs
# within `near_duplicate_distance` bits are confirmed on a 16 × 16 thumbnail, so flat
# images whose hashes collide by accident are not reported.
#
# Pairs **across train and test** are leakage: the model is tested on images it has
# (nearly) seen.

# %%
dups = eda.find_duplicates(data, max_distance=cfg.model.near_duplicate_distance)
print(dups.summary())
dups.pairs.head(10)

# %%
fig = eda.plot_duplicate_pairs(data, dups, n=cfg.model.max_duplicate_examples)
print("no duplicate pairs to show" if fig is None else "")

# %% [markdown]
# ## 7 · Browse the images
#
# Pick a split and a class and page through the images (in JupyterLab; in a batch run
# the widget is inert).

# %%
eda.image_browser(data);

# %% [markdown]
# ## Takeaways
#
# * Look before you train: class balance, a sample of every class, pixel statistics and
#   image sizes take seconds and catch most data problems.
# * The split is stratified and fixed by the seed; the normalisation statistics come from
#   the training split only.
# * Duplicates across train and test leak answers into the exam; find them before
#   trusting a test accuracy.
#
# ## Exercises
#
# Solutions: `solutions/01_eda.py` prints what it measured and whether each
# expected outcome held ([how the solutions work](../docs/solutions.md)).
#
# 1. **Near duplicates.** Set `near_duplicate_distance = 0`, then `10`. *Expect*: the
#    list can only grow with the distance (a pair within 4 bits is also within 10). On
#    the CIFAR-10 subset: no pair at 0 (no exact copies) and the same 3 near pairs at 4
#    and at 10; look at them to judge whether they are the same photograph.
# 2. **Another image size.** Set `image_size = 64`. *Expect*: the same classes and split
#    sizes, a 4x larger cache, and per-channel means within 0.01 of the 32-pixel ones
#    (resizing barely moves the average colour).
# 3. **Test statistics.** Compute the mean over the test split too
#    (`nbutils.data.channel_stats(data.test.images)`). *Expect*: within about 0.01 of the
#    training split's on CIFAR-10 (measured: 0.011 at most); using them to normalise
#    would still be a (small) leak of test information into training.
