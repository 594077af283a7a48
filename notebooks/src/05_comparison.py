# %% [markdown]
# # 05 · Comparing the course's models, fairly
#
# Notebooks 02, 02b, 03 and 04 trained an AlexNet-style network and a ResNet-9 in
# PyTorch, a CNN in Keras and a pretrained model fine-tuned with Hugging Face on **the
# same images, split the same way**. Each left behind a run record
# (`outputs/metrics/<run>.json`), its test-set probabilities and its saved model. This
# notebook puts them side by side and asks what the numbers can and cannot tell us.
#
# What is compared is **models, not frameworks**. The architectures differ, one model is
# pretrained on ImageNet and the others start from random weights, the pretrained one
# sees 176-pixel inputs where the others see 32, and each trains for its own number of
# epochs with its own recipe. A framework would only be compared if the same network
# and recipe were trained in each, which none of this does. The latency differences
# likewise come mostly from input size and preprocessing (resizing to 176 px costs more
# than the whole small CNN), not from the framework.
#
# What *is* held fixed, so that the comparison of these models is fair:
#
# * **the same data**: the same test images, in the same order, for every model: the
#   records are matched on dataset and profile, and their test labels must agree;
# * **the same measurement**: one evaluation path (probabilities → metrics) and one
#   timing harness, run here, on one device, for all three models;
# * **warm-up, then medians**: the first calls of a model pay for lazy initialisation,
#   graph tracing and memory allocation, and single timings jitter with whatever else
#   the machine does. We discard warm-up calls and report the **median** of many;
# * **honest uncertainty**: a test set of a few hundred images measures accuracy to a
#   few percentage points. Differences smaller than that may be luck, so we test them.
#
# The notebook imports no deep learning framework itself: each saved model is reloaded
# through `nbutils.inference.load_classifier`, which imports only that model's framework,
# one model at a time, each in its own short-lived Python process.

# %% tags=["parameters"]
profile = "auto"       # gpu | lowvram | cpu | smoke | auto (chosen from the hardware)
dataset = None         # None: the profile's dataset; must match the training runs
measure_speed = None   # None: the profile's setting; False skips reloading and timing
latency_repeats = None # None: the profile's value (batch-1 calls timed per model)

# %% [markdown]
# The settings of this notebook live in `configs/models/comparison.yaml` and the
# `models.comparison` section of each profile: how many timed calls, how many warm-up
# calls, the batch size at which throughput is measured (the same for every model), the
# number of confidence bins for calibration and of bootstrap resamples.

# %%
# NBVAL_CHECK_OUTPUT
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

import nbutils
from nbutils import compare
from nbutils.compare import analysis as canalysis
from nbutils.compare import plots as cplots
from nbutils.compare import report as creport
from nbutils.data import load_for
from nbutils.paths import display_path

cfg = nbutils.setup(profile, model="comparison", dataset=dataset, measure_speed=measure_speed,
                    latency_repeats=latency_repeats)
settings = cfg.model

# %% [markdown]
# ## 1 · Which runs are there?
#
# `load_runs` reads every record in `outputs/metrics/` for this dataset and profile,
# with no special case per framework, and loads each run's saved test probabilities.
# It lists the runs that are missing, with the command that produces each, and the
# records it cannot use (an old schema version, a different test set) with the reason.
# The notebook carries on with whatever is there.

# %%
runs = compare.load_runs(cfg.outputs_dir, cfg.dataset, cfg.profile)
print(runs.summary())

# %% [markdown]
# ## 2 · The test set, and how precisely it measures accuracy
#
# We load the same test split the training notebooks used (it is cached, so this is
# quick) and check that its labels are the ones the runs were scored on.

# %%
# NBVAL_CHECK_OUTPUT
data = load_for(cfg, progress=False)
same_images = runs.matches(data.test.labels)
print(f"test images: {len(data.test)}   classes: {', '.join(data.class_names)}")

# %%
print("runs were scored on these test images:", same_images if runs.runs else "no runs yet")

# %% [markdown]
# Accuracy measured on *n* test images is itself an estimate. Its 95% interval (Wilson's,
# which behaves well near 0 and 1) is roughly ±1/√n wide at 50% accuracy: ±4 points for
# 500 images, ±1 point for 10,000. Two models whose accuracies differ by less than that
# may well be equally good. Section 7 tests the differences properly, with **paired**
# tests: both models see the same images, so we can look only at the images on which
# they disagree, which is much sharper than comparing two intervals.

# %%
n = len(data.test)
for acc in (0.5, 0.8, 0.95):
    low, high = compare.wilson_interval(round(acc * n), n)
    print(f"accuracy {acc:.0%} on {n} images: 95% interval [{low:.1%}, {high:.1%}]")

# %% [markdown]
# ## 3 · Speed, measured here with one harness
#
# Training times in the records were measured by each notebook, possibly at different
# moments; inference speed we measure now, for all models in a row, on the same device
# (`cfg.device`) and the same test images:
#
# * **latency**: one image at a time (batch 1), the situation of an interactive app.
#   After a few warm-up calls we time many calls and report the **median** (robust to
#   the occasional slow call) and the 90th percentile (how bad the slow calls get);
# * **throughput**: images per second at one batch size for every model, the situation
#   of offline scoring. Batching amortises per-call overhead, so it is usually far
#   higher than 1 / latency;
# * **size on disk** of the saved model folder.
#
# Each call goes through `predict_proba` on uint8 images, so the times include each
# model's own resizing and normalisation: that is part of what it costs to use. The
# first batch also checks that the reloaded model predicts what the record says.
#
# Each model is measured in a **fresh Python process** (`isolate: true`), one after the
# other: a framework's thread pools and memory cannot slow down the next model, and the
# frameworks cannot clash inside one process (importing PyTorch's compiler stack after
# TensorFlow can crash it). Every model gets the same number of CPU threads when
# `threads` is set (0 leaves each framework its default). Nothing else should run on the
# machine meanwhile: on a busy machine the timings say more about the neighbours than
# about the models.

# %%
if settings.measure_speed and runs.runs:
    speed = compare.measure_runs(
        runs, data.test.images, device=cfg.device, batch_size=settings.batch_size,
        latency_repeats=settings.latency_repeats, warmup_repeats=settings.warmup_repeats,
        throughput_batches=settings.throughput_batches, budget_s=settings.time_budget_s,
        isolate=settings.isolate, threads=settings.threads, check_reload=same_images,
        onnx=settings.onnx_latency)
else:
    speed = {}
print(compare.speed_summary(speed))

# %% [markdown]
# ## 4 · The table
#
# `build_comparison` computes every metric from the saved test probabilities, so the
# three frameworks are scored by the same code:
#
# | column | meaning |
# | --- | --- |
# | accuracy [95% CI] | share of test images whose top-1 class is right, with its Wilson interval |
# | macro P / R / F1 | precision, recall and F1 per class, averaged with equal weight per class |
# | ECE | expected calibration error: how far confidence is from accuracy (0 = calibrated) |
# | params | trainable and frozen parameters of the model |
# | size MiB | the saved model folder on disk |
# | train s | training time recorded by the notebook, for its own number of epochs (`epochs` in `table.csv`) |
# | latency ms (b=1) | median time to classify one image, measured above |
# | ONNX RT ms (b=1) | the same, for the model exported to ONNX and run by ONNX Runtime (notebook 07) |
# | img/s (b=N) | throughput at the common batch size, measured above |
# | peak MiB host/dev | peak memory of the training process (host RSS / GPU) from the record |
#
# The ensemble row (section 6) costs the sum of its members.

# %%
comparison = compare.build_comparison(
    runs, speed, ece_bins=settings.ece_bins, n_boot=settings.bootstrap_samples, seed=cfg.seed,
    n_disagreements=settings.n_disagreements,
    settings={**settings.to_dict(), "device": cfg.device})
display(Markdown(creport.main_table_markdown(comparison.table, settings.batch_size)))

# %% [markdown]
# Accuracy is one number over all classes; the **top-1 error per class** (1 − recall)
# shows where each model fails. Classes that every model gets wrong are usually hard
# (or mislabelled); a class only one model gets wrong points to that model.

# %%
display(Markdown(creport.frame_markdown(comparison.per_class_error, "pct")))

# %% [markdown]
# ## 5 · Figures
#
# **Accuracy against cost.** The best model is not always the most accurate one: a
# model that trains ten times faster, or has a tenth of the parameters, for one point
# less accuracy may be the better choice. Error bars are the 95% intervals; the x axes
# are logarithmic.

# %%
figures = cplots.comparison_figures(comparison, show=["accuracy_vs_train_time",
                                                      "accuracy_vs_params"])

# %% [markdown]
# **Per-class F1** across models, and the **confusion matrices** side by side: which
# classes each model confuses with which.

# %%
figures.update(cplots.comparison_figures(comparison, show=["per_class_f1"]))

# %%
figures.update(cplots.comparison_figures(comparison, show=["confusion_matrices"]))

# %% [markdown]
# **Reliability diagrams.** Test images are grouped by the model's confidence in its top
# class; in each group we compare the mean confidence with the share that is right. A
# calibrated model's bars follow the diagonal. A bar *below* the diagonal means
# over-confidence (in that group the model is right less often than its confidence
# says); a bar *above* it means under-confidence (right more often than it claims, as
# averaging several models, the ensemble below, and label smoothing tend to make a
# model). The number on each bar is how many test images fall in that group: bars over
# a handful of images are noise. ECE is
# the gap averaged over the groups, weighted by their size. Calibration matters whenever
# the probability itself is used (thresholds, abstaining, ranking), not only the class.

# %%
figures.update(cplots.comparison_figures(comparison, show=["reliability"]))

# %% [markdown]
# ## 6 · An ensemble of the three
#
# Averaging the probabilities of models that make *different* mistakes often beats each
# of them. Is that true here? The best single model is picked on the test set itself,
# which flatters it a little; the comparison is paired, on the same images.

# %%
if comparison.ensemble is not None:
    print(comparison.ensemble.verdict())
else:
    print("An ensemble needs at least two runs; see the missing runs above.")

# %% [markdown]
# ## 7 · Are the differences real?
#
# For every pair of models (and the ensemble), on the same test images:
#
# * **McNemar's test** counts the images only model *a* gets right and those only model
#   *b* gets right. If both models were equally accurate, these discordant images would
#   split about evenly; the p-value is the chance of a split at least as lopsided. Images
#   both get right (or both wrong) say nothing about which is better and are ignored.
# * **The paired bootstrap** resamples the test images with replacement many times and
#   recomputes the accuracy difference; the middle 95% of those differences is the
#   interval. If it contains 0, this test set cannot tell the models apart.
#
# With several pairs, one p < 0.05 among many can appear by chance; treat borderline
# results with care, and prefer a bigger test set to more tests.

# %%
display(Markdown(creport.significance_markdown(comparison.pairwise)
                 if len(comparison.pairwise) else "Nothing to test: fewer than two runs."))

# %% [markdown]
# **What these tests do not cover.** McNemar's test and the bootstrap resample the *test
# images*: they say whether this test set can tell two trained models apart. They say
# nothing about training again: another seed (initial weights, batch order,
# augmentation) gives another model with another accuracy. The course runner repeats
# the fastest training notebook with other seeds (`--seeds 43,44`); the spread of its
# accuracy is the yardstick for differences between models trained once.

# %%
spread = canalysis.seed_spread(runs)
display(Markdown(canalysis.seed_spread_markdown(spread)))
for label, s in spread.items():
    print(f"{label}: retraining with another seed moved test accuracy by up to "
          f"{s['range'] * 100:.1f} points (sd {s['sd'] * 100:.1f})")

# %% [markdown]
# Whatever the models scored, these must hold (nbval checks the printed answers):

# %%
# NBVAL_CHECK_OUTPUT
t = comparison.table
print("every p-value in [0, 1]:", bool(comparison.pairwise["p_value"].between(0, 1).all()))
print("each accuracy inside its 95% interval:",
      bool(((t["acc_ci_low"] <= t["accuracy"]) & (t["accuracy"] <= t["acc_ci_high"])).all()))
print("the ensemble's probabilities sum to 1:", comparison.ensemble is None
      or bool(abs(comparison.ensemble.probs.sum(axis=1) - 1).max() < 1e-6))

# %% [markdown]
# ## 8 · Where the models disagree
#
# The images on which the models give different answers show their different habits,
# and, when at least one is right, what an ensemble could gain. Each title lists every
# model's guess (`+` right, `-` wrong), green when the majority is right.

# %%
d = comparison.disagreement
if len(runs.runs) >= 2:
    print(f"all agree on {d['all_agree']} of {d['n_test']} images ({d['all_agree_right']} right, "
          f"{d['all_agree_wrong']} wrong); they disagree on {d['disagree']}, and on "
          f"{d['some_right']} of those at least one is right "
          f"(picking the right model per image would give {d['oracle_accuracy']:.1%})")
if same_images:
    figures.update(cplots.comparison_figures(comparison, data.test.images,
                                             show=["disagreements"]))

# %% [markdown]
# ## 9 · Error analysis: what each model gets most wrong
#
# Two views of the mistakes, from the saved test probabilities. The **most confused
# pairs** are the largest off-diagonal cells of each confusion matrix (true class →
# predicted class). The **top losses** are the test images with the highest loss
# −log p(true class) among the misclassified ones: the model's most confident
# mistakes. They are where mislabelled images, ambiguous photos and the model's blind
# spots show up first. With more than five classes the table above also gives
# **top-5 accuracy** (the true class among the five most probable).

# %%
display(Markdown(canalysis.confused_pairs_markdown(runs, n=4)))
if same_images and runs.runs:
    figures["top_losses"] = canalysis.plot_top_losses(runs, data.test.images, n=6)
    plt.show()

# %% [markdown]
# ## 10 · Calibration: temperature scaling
#
# A model is **calibrated** when, among the images it gives 0.8, 80 % are right. In the
# reliability diagrams above, bars *below* the diagonal mean over-confidence (the model
# claims more than it achieves), bars *above* it under-confidence. Temperature scaling
# (Guo et al., 2017) divides the logits by one number T, fitted on the **validation**
# split by minimising the negative log-likelihood (NLL): T > 1 softens an over-confident
# model, T < 1 sharpens an under-confident one. The predicted class never changes, so
# accuracy does not either. The table gives T and, before → after, the NLL on the
# validation split (where T was fitted, so it can only go down) and on the test split,
# and the test ECE; the figure redraws the test reliability diagrams after scaling.

# %%
calibrations = canalysis.calibrate_runs(runs, ece_bins=settings.ece_bins)
display(Markdown(canalysis.calibration_markdown(calibrations)))
if any(c is not None for c in calibrations.values()):
    figures["temperature_scaling"] = canalysis.plot_calibration(runs, calibrations,
                                                                settings.ece_bins)
    plt.show()
if cfg.profile == "smoke":
    print("smoke profile: models at chance; the numbers show the mechanics, not the models")

# %% [markdown]
# ## 11 · Write the comparison to `outputs/comparison/`
#
# (`outputs/comparison-smoke/` under the smoke profile: the setting `report_dir`.)
# The table (`table.csv`, with every column and the per-class errors), the per-class
# tables, the significance tests, the disagreements, the figures and a short
# `report.md` that reads without Jupyter. The folder is written beside the old one and
# swapped in at the end, so an interrupted run never leaves half a report.

# %%
report = creport.write_comparison(comparison, cfg.outputs_dir / cfg.model.report_dir, figures)
print(f"wrote {display_path(report.parent)}:",
      ", ".join(sorted(p.name for p in report.parent.iterdir())))

# %% [markdown]
# ## Takeaways
#
# * These are comparisons of *models* (architecture, pretraining, input size, epochs
#   all differ), not of frameworks.
# * A few hundred test images measure accuracy to a few points; McNemar's test and the
#   bootstrap say whether a difference is larger than the test set's noise.
# * Those tests ignore training noise: the seed spread of one model is the yardstick
#   for differences between models trained once.
# * Temperature scaling, fitted on the validation split, fixes most miscalibration
#   without changing a single prediction.
#
# ## Exercises
#
# Solutions: `solutions/05_comparison.py` prints what it measured and whether each
# expected outcome held ([how the solutions work](../docs/solutions.md)).
#
# 1. **Warm-up.** Load the fastest model (`nbutils.inference.load_classifier`) and time
#    its batch-1 call 50 times (`nbutils.compare.speed.time_calls(fn, 50, warmup=5)`),
#    then 200 more times. *Expect*: a higher median for the first 50 calls (measured on
#    `cpu` for the AlexNet: 2.18 ms against 1.99 ms; 4.95 against 3.60 ms in a run
#    that followed a training job): a freshly loaded model still pays one-off costs,
#    which is why 05 warms every model up before timing it, and times each in a fresh
#    process the same way.
# 2. **How big must the test set be?** With `compare.wilson_interval`, find how many
#    test images the difference between your two closest models would need to leave the
#    interval. *Expect*: far more than this test set has; on `cpu` the closest pair is
#    1.5 points apart (AlexNet 70.0 %, Keras 71.6 %) and needs about 13,000 images.
# 3. **Weighted ensembles.** Weight each model by its *validation* accuracy
#    (`nbutils.metrics.ensemble_probabilities(..., weights=...)`). *Expect*: a test
#    accuracy within about a point of the equal-weight ensemble (measured: 88.2 %
#    against 87.2 %); choosing the weights on the test set would make the number
#    meaningless.
