# %% [markdown]
# # 03 · A CNN in Keras, the Keras way
#
# Notebook 02 trained a CNN in PyTorch with an explicit loop. Here we solve **the same
# problem on the same data** (same split, same normalisation statistics) with Keras 3 on
# its TensorFlow backend, and use what Keras already gives instead of writing it by hand:
#
# * a **`tf.data` pipeline** that caches the images and prefetches the next batch;
# * **preprocessing layers inside the model**: rescaling, standardisation and random
#   flip / rotation / translation / zoom / contrast, so the saved `.keras` file takes raw
#   images;
# * `compile()` with **Adam + a warm-up/cosine-decay schedule** and **label smoothing**;
# * `fit()` with **callbacks**: early stopping, best checkpoint, CSV log, TensorBoard and
#   a learning-rate logger;
# * a small **ablation**: what do BatchNorm, dropout and augmentation each add?
#
# The run ends like notebook 02: curves, confusion matrix, per-class report, ten example
# predictions and a run record, so notebook 05 can compare the frameworks. The model is
# saved under `outputs/models/` and reloaded with `safe_mode=True` to prove it predicts the
# same.

# %% tags=["parameters"]
profile = "auto"  # auto | cpu | gpu | lowvram | smoke
dataset = None  # None keeps the profile dataset; e.g. cifar10 or imagefolder:PATH
epochs = None  # None keeps the profile value
batch_size = None  # None keeps the profile value
ablation = None  # run the ablation table; None keeps the profile choice
augment = None  # None keeps the config (flip, rotation, shift, zoom, contrast); False: none
tta_flip = None  # None keeps the config (True: average each image with its mirror image)
tracking = None         # None keeps the config ("none"); "mlflow" also logs the run to MLflow

# %%
import time

import numpy as np
from IPython.display import display

import nbutils
import nbutils.data
from nbutils import keras_data, keras_train, plots
from nbutils.inference import load_classifier
from nbutils.runs import finish_run, record_class_table

cfg = nbutils.setup(profile, model="keras_cnn", dataset=dataset, epochs=epochs,
                    batch_size=batch_size, ablation=ablation, tracking=tracking,
                    augment=augment, tta_flip=tta_flip)
env = keras_train.setup_keras(cfg)
NOTEBOOK = "03_keras_cnn"
RUN_ID = cfg.run_id(NOTEBOOK)
MODEL_DIR = cfg.outputs_dir / "models" / RUN_ID
LOG_DIR = cfg.outputs_dir / "logs" / RUN_ID
print(f"Keras on {env['device']}, precision policy {env['precision']}")

# %% [markdown]
# ## 1. The data: the same arrays as every other notebook
#
# `nbutils.data.load_for(cfg)` returns the shared numpy core: uint8 images, labels, the fixed
# train/val/test split and the training split's per-channel mean and standard deviation.

# %%
data = nbutils.data.load_for(cfg)

# %%
print(data.summary())  # the same summary as notebook 01 (checked there)

# %% [markdown]
# ## 2. A `tf.data` pipeline
#
# `keras_data.make_dataset` slices the in-memory arrays, one-hot encodes the labels,
# **caches** the result, reshuffles every epoch, batches, and **prefetches** so the next
# batch is ready while the current one trains. It yields the raw uint8 images: the model
# rescales and standardises them itself. We check that the pipeline gives back exactly the
# images and labels of the numpy core.

# %%
# NBVAL_CHECK_OUTPUT
bs = cfg.model.batch_size
train_ds = keras_data.make_dataset(data, "train", bs, seed=cfg.seed)
print(train_ds.element_spec)
val_x, val_y = keras_data.dataset_arrays(keras_data.make_dataset(data, "val", bs, one_hot=False))
print("val pipeline == numpy core:",
      np.array_equal(val_x, data.val.images) and np.array_equal(val_y, data.val.labels))

# %% [markdown]
# ## 3. The model, preprocessing included
#
# The reference CNN: blocks of 3×3 convolution + BatchNorm + ReLU with max-pooling between
# them, global average pooling, a dense layer with dropout, and a softmax. An L2 penalty
# on the kernels (added to the loss) keeps the weights small. Under Adam this is not the
# same as decoupled weight decay (AdamW, Loshchilov and Hutter 2019): Adam divides the
# penalty's gradient by its running gradient scale like any other gradient, so weights
# with large gradients are barely decayed. Widths, depth and every regulariser come from
# `configs/models/keras_cnn.yaml` (and the profile).
#
# The first layers are *preprocessing*: `Rescaling(1/255)`, then the random augmentation
# layers (active only in training), then `Normalization` with the training split's mean and
# variance. Because they are layers, they are saved with the model.

# %%
model = keras_train.build_cnn_for(data, cfg.model, seed=cfg.seed)
model.summary()

# %%
# NBVAL_CHECK_OUTPUT
print(f"parameters: {model.count_params():,}")
print("layers:", " -> ".join(layer.name for layer in model.layers[1:6]), "-> ...")

# %% [markdown]
# What the augmentation layers do: one training image, eight random draws (flip, small
# rotation, shift and zoom with reflected borders, contrast). At inference time the same
# layers pass images through unchanged.

# %%
augment = keras_train.augmentation_layers(cfg.model, seed=cfg.seed)  # a copy of the model's
if augment is not None:
    one = np.repeat(data.train.images[:1].astype("float32") / 255.0, 8, axis=0)
    views = np.asarray(augment(one, training=True))
    plots.image_grid(np.clip(views, 0, 1), [f"draw {i + 1}" for i in range(8)], ncols=8)
    plots.plt.show()

# %% [markdown]
# ## 4. Compile and fit, with callbacks
#
# `keras_train.fit` compiles with **Adam** whose learning rate warms up linearly for the
# first epoch and then follows a **cosine decay** to zero, and with **categorical
# cross-entropy with label smoothing**: with ε = 0.1 and K = 10 classes the target is
# y(1 − ε) + ε/K, so 0.91 for the true class and 0.01 for each other one instead of 1 / 0,
# which discourages over-confident predictions. Metrics: accuracy, precision and recall.
#
# The callbacks do what a hand-written loop would: **EarlyStopping** stops when validation
# accuracy stops improving, **ModelCheckpoint** keeps the best weights (reloaded at the end),
# **CSVLogger** and **TensorBoard** record every epoch (`make tensorboard` shows them),
# and a small **learning-rate logger** adds the current rate to the logs.
#
# Here is that code, printed from the package that runs it (so what you read is what
# trains): first `compile`, then the callbacks.

# %%
from nbutils.source import show_source

show_source(keras_train.compile_cnn);

# %%
show_source(keras_train.make_callbacks);

# %% [markdown]
# `keras_train.fit` then builds the shuffled `tf.data` pipeline, calls `compile_cnn`,
# runs `model.fit(train_ds, validation_data=val_ds, epochs=..., callbacks=...)` and
# reloads the best weights; around it, it only locks the log folder (two runs cannot
# write into one) and times the run.

# %%
train_config = keras_train.KerasTrainConfig.from_settings(cfg.model)
result = keras_train.fit(model, data, train_config, log_dir=LOG_DIR, seed=cfg.seed,
                         tensorboard_dir=cfg.outputs_dir / "tensorboard" / RUN_ID)
best = result.history[result.best_epoch - 1]
print(f"trained {len(result.history)} epochs in {result.train_seconds:.1f} s "
      f"(CPU time {result.cpu_seconds:.1f} s); best epoch {result.best_epoch}: "
      f"val acc {best['val_acc']:.3f}")

# %% [markdown]
# ## 5. Test-set predictions, saved model, reload with `safe_mode=True`
#
# The model is saved as a single `.keras` file beside `classifier.json` (class names, image
# size, statistics), the contract notebooks 05 and 06 rely on. Reloading goes through
# `nbutils.inference.load_classifier`, which calls `keras.saving.load_model(...,
# safe_mode=True)`: a `.keras` file that would run arbitrary Python (a `Lambda` layer) is
# refused. The reloaded model must predict exactly what the trained one predicts.

# %%
model = keras_train.float32_model(model)  # a model trained in bf16 predicts and is saved in fp32
tta = cfg.model.tta_flip  # average each image with its mirror image (as notebook 02)
probs = keras_train.predict_proba(model, data.test.images, tta_flip=tta)
info = keras_train.classifier_info(data, "keras_cnn", tta_flip=tta, extra={"run_id": RUN_ID})
keras_train.save_classifier(MODEL_DIR, model, info)
reloaded = load_classifier(MODEL_DIR)
probs_again = reloaded.predict_proba(data.test.images)

# %%
# NBVAL_CHECK_OUTPUT
print("saved files:", sorted(p.name for p in MODEL_DIR.iterdir() if p.is_file()
                            and not p.name.startswith(".")))
print("reloaded with safe_mode=True:", type(reloaded.model).__name__)
print("identical predictions:", bool(np.array_equal(probs.argmax(1), probs_again.argmax(1))
                                     and np.allclose(probs, probs_again, atol=1e-6)))

# %% [markdown]
# ## 6. The standard report
#
# The same call as notebook 02 writes the metrics, the run record, the test probabilities,
# ten example predictions (grid and CSV) and the figures.

# %%
record = finish_run(cfg, data, notebook=NOTEBOOK, model="keras_cnn", probs=probs, fit=result,
                    num_params=model.count_params(), model_path=MODEL_DIR, extra=env,
                    val_probs=keras_train.predict_proba(model, data.val.images, tta_flip=tta))
print(f"test accuracy {record.test.accuracy:.3f}, macro F1 {record.test.macro_f1:.3f}")

# %%
record_class_table(record)

# %% [markdown]
# ## 7. Ablation: what does each ingredient add?
#
# Short runs (the same epochs, seed and schedule for each) that add one ingredient at a
# time: a **baseline** without BatchNorm, dropout or augmentation, then **+BatchNorm**,
# **+Dropout**, and the **final** recipe with augmentation. We compare them on the
# *validation* split; the test split is kept for the final model above. The training
# accuracy is measured while training, with dropout and augmentation on; a large gap between
# it and the validation accuracy is overfitting.
#
# Read the table with its budget in mind: after a few epochs, regularisers (dropout,
# augmentation) often look *worse*, because they make the training task harder. They pay off
# over a full run, when the unregularised model has started to memorise the training set.

# %%
if cfg.model.ablation:
    start = time.perf_counter()
    rows = keras_train.run_ablation(data, cfg.model, epochs=cfg.model.ablation_epochs,
                                    seed=cfg.seed)
    table = keras_train.ablation_frame(rows)
    keras_train.save_ablation(table, cfg.outputs_dir / "metrics" / f"{RUN_ID}_ablation.csv")
    print(f"ablation: {len(rows)} runs of {cfg.model.ablation_epochs} epochs in "
          f"{time.perf_counter() - start:.0f} s")
    display(table)
    plots.plot_runs({r["variant"]: r["history"] for r in rows}, metrics=("train_acc", "val_acc"),
                    chance=1 / data.num_classes, title="ablation: one ingredient at a time")
    plots.plt.show()

# %% [markdown]
# ## 8. Why `tf.data`? A quick measurement
#
# The same model trained for one epoch from the `tf.data` pipeline and from plain numpy
# arrays (`model.fit(x, y)`), then predicting the training images both ways. The full
# benchmark is `python -m nbutils.bench keras`. Compare the CPU milliseconds per image as
# well as the images per second: wall-clock time also counts whatever else the machine is
# doing. Here the whole split is small, already decoded and in memory, and the model does
# its own preprocessing, so there is little for the pipeline to overlap; `tf.data` earns its
# keep when decoding, resizing or augmentation run in the input pipeline, or when the data
# do not fit in memory.

# %%
from nbutils.benchmarks.keras_bench import compare_pipelines, format_result

if cfg.model.pipeline_epochs > 0:
    pipeline = compare_pipelines(data, cfg.model, epochs=cfg.model.pipeline_epochs, repeats=1,
                                 seed=cfg.seed)
    print(format_result(pipeline))
else:
    print("skipped under this profile (pipeline_epochs = 0)")

# %%
print(f"{NOTEBOOK} on {data.spec} ({cfg.profile}): test accuracy {record.test.accuracy:.1%}, "
      f"training {result.train_seconds:.0f} s")
if cfg.model.pipeline_epochs > 0:
    print(f"tf.data vs numpy: training {pipeline['ratio_train']:.2f}x, "
          f"inference {pipeline['ratio_inference']:.2f}x")

# %% [markdown]
# ## Takeaways
#
# * In Keras the model carries its own preprocessing and augmentation as layers, so the
#   saved file predicts from raw pixels.
# * `compile()` fixes optimiser, loss and metrics; `fit()` with callbacks does what a
#   hand-written loop would (early stopping, best-weights checkpoint, logs).
# * An L2 penalty under Adam is not weight decay; label smoothing gives targets of
#   0.91 / 0.01 for ten classes.
# * Regularisers look worse in short runs and pay off in long ones: judge them on the
#   validation split at the budget you will train with.
#
# ## Exercises
#
# Solutions: `solutions/03_keras_cnn.py` prints what it measured and whether each
# expected outcome held ([how the solutions work](../docs/solutions.md)).
#
# 1. **Augmentation.** Set `augment = False`. *Expect* (`cpu` profile, real CIFAR-10):
#    training accuracy far above validation accuracy by the last epoch (measured: 0.36
#    apart, against 0.07 with augmentation) and a lower test accuracy (67.9 % against
#    71.6 %).
# 2. **Test-time augmentation.** Set `tta_flip = False`. *Expect*: test accuracy within
#    about one point of the default (measured: the same 71.6 %), with half the inference
#    work.
# 3. **Safe loading.** Save a small model holding a `keras.layers.Lambda(lambda x: x * 2)`
#    layer and reload it with `keras.saving.load_model(path, safe_mode=True)`.
#    *Expect*: a `ValueError` naming `safe_mode`: a `.keras` file that would run code is
#    refused, the right default for files you download.
