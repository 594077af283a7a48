# %% [markdown]
# # 02 · AlexNet in PyTorch, trained fast and measured honestly
#
# In 2012 AlexNet (Krizhevsky, Sutskever and Hinton) won ImageNet by a wide margin and
# started the deep-learning era of computer vision. Most of its ideas are still in every
# CNN you will train:
#
# * **ReLU** instead of tanh/sigmoid: no saturation for positive inputs, so gradients do
#   not vanish and training is several times faster;
# * **dropout** (p = 0.5) in the large fully connected layers, against overfitting;
# * **overlapping max pooling** (3×3 windows, stride 2) instead of disjoint 2×2 ones;
# * **data augmentation**: random crops and horizontal flips multiply the training set
#   for free;
# * **large-ish convolutions** early (11×11 and 5×5 in the original), then 3×3;
# * **local response normalisation (LRN)**, a "lateral inhibition" between neighbouring
#   channels. Today **BatchNorm** does that job far better, so we compare the two.
#
# This notebook builds the AlexNet family (the faithful 224-pixel network and a version
# with the same five-convolution/three-FC shape for 32–64 pixel images), prints its
# layers, parameters and FLOPs, trains the small one with a modern recipe (one-cycle
# learning rate, label smoothing, BatchNorm, augmentation on the device, mixed precision
# on a GPU, a checkpoint every epoch) and writes the course's standard outputs: curves,
# confusion matrix, per-class report, example predictions, a run record and the saved
# model, which we reload to prove it predicts exactly the same.

# %% tags=["parameters"]
profile = "auto"        # gpu | lowvram | cpu | smoke | auto (chosen from the hardware)
dataset = None          # None keeps the profile dataset; e.g. imagefolder:PATH
epochs = None           # None keeps the profile value
batch_size = None       # None keeps the profile value
architecture = None     # None keeps the config value (small); alexnet224: the original
norm = None             # None keeps the config value (batchnorm); lrn or none
compare_norms = None    # None keeps the profile value; False skips the LRN vs BatchNorm runs
tracking = None         # None keeps the config ("none"); "mlflow" also logs the run to MLflow
seed = None             # None keeps the profile's seed; another seed is a new run (seed spread)

# %% [markdown]
# Everything else comes from `configs/models/alexnet.yaml` (every hyperparameter, with
# comments) overlaid by the profile's `models.alexnet` section. `nbutils.setup` checks
# the keys, seeds every random generator and prints the resolved settings.

# %%
import nbutils  # first: on a Mac it lets PyTorch fall back to the CPU where mps lacks an op
import numpy as np
import torch
from nbutils import plots, torch_data, torch_models, torch_train
from nbutils.data import load_for
from nbutils.inference import ClassifierInfo, load_classifier
from nbutils.runs import finish_run, record_class_table

cfg = nbutils.setup(profile, model="alexnet", dataset=dataset, epochs=epochs,
                    batch_size=batch_size, architecture=architecture, norm=norm,
                    compare_norms=compare_norms, tracking=tracking, seed=seed)
settings = cfg.model
device = torch_train.resolve_device(cfg.device)
threads = torch_train.set_threads(settings.num_threads)
NOTEBOOK = "02_pytorch_alexnet"
run_id = cfg.run_id(NOTEBOOK)

# %% [markdown]
# ## 1 · The data
#
# The shared data layer gives every framework the same uint8 images, split and channel
# statistics. The training split is small enough to live on the device as one tensor,
# so batches are cut out of it there and augmented there: random crops (after padding
# by 4 pixels) and horizontal flips for a whole batch in one indexing operation, with no
# per-image Python work. Datasets too large for the device go through a `DataLoader`
# with worker processes instead (`loader: dataloader`), with the same augmentation.

# %%
data = load_for(cfg, progress=False)  # the same summary as notebook 01 (checked there)
print(data.summary())

# %%
size = 224 if settings.architecture == "alexnet224" else data.image_size
augment = torch_data.Augment(settings.augment_padding, settings.augment_flip)
loaders = torch_data.make_loaders(
    data, settings.batch_size, device, mode=settings.loader, augment=augment,
    seed=cfg.seed, channels_last=settings.channels_last, size=size,
    num_workers=cfg.data.num_workers)
print(f"loader: {loaders['train'].kind}, {len(loaders['train'])} training batches of "
      f"{settings.batch_size}, on {device}, {threads} CPU threads")

# %% [markdown]
# What augmentation does to the first training images: each one gets its own shift and
# its own coin flip. The model never sees exactly the same picture twice.

# %%
first = torch.from_numpy(np.array(data.train.images[:8])).to(device)
gen = torch.Generator(device=device).manual_seed(0)
views = [first] + [torch_data.augment_batch(first, augment, gen) for _ in range(2)]
fig = plots.image_grid(torch.cat(views).cpu().numpy(), ncols=8,
                       suptitle="row 1: original · rows 2-3: random crop + flip")

# %% [markdown]
# ## 2 · The network
#
# First the original, exactly as torchvision builds it (plus the two LRN layers of the
# paper, which torchvision leaves out). We build it on PyTorch's `meta` device: shapes,
# parameter counts and FLOPs without allocating its 61 million weights. Note where the
# parameters are (the fully connected layers) and where the computation is (the
# convolutions).

# %%
# NBVAL_CHECK_OUTPUT
with torch.device("meta"):
    original = torch_models.build_model(torch_models.AlexNetConfig(
        architecture="alexnet224", norm="lrn", num_classes=1000, image_size=224))
print(torch_models.summarize(original, (3, 224, 224)))

# %% [markdown]
# The small-image version keeps the layout (conv → pool → conv → pool → conv → conv →
# conv → pool → FC → FC → FC, overlapping 3×3/2 pooling, dropout before the hidden FC
# layers) but with stride-1 convolutions and widths suited to 32-pixel images: a 32×32
# input is pooled to 16, 8 and 4 pixels. `norm` switches between BatchNorm after every
# convolution, the paper's LRN after the first two, or nothing.

# %%
# NBVAL_CHECK_OUTPUT
model_config = torch_models.config_from_settings(settings, data.num_classes, size)
torch.manual_seed(cfg.seed)
model = torch_models.build_model(model_config)
summary = torch_models.summarize(model, (3, size, size))
print(model_config.name)
print(summary)

# %% [markdown]
# ## 3 · LRN versus BatchNorm, side by side
#
# Same network, same data, same optimiser and schedule, only the normalisation differs.
# LRN rescales each activation by the energy of its neighbouring channels; BatchNorm
# standardises each channel over the batch and learns a scale and shift. BatchNorm keeps
# every layer's inputs well scaled, which lets the high learning rate of our schedule
# work: the LRN network learns more slowly (and LRN is also slower to compute). A short
# run on part of the training set is enough to see it.

# %%
comparison = {}
if settings.compare_norms:
    n_cmp = settings.compare_max_train or len(data.train)
    pick = np.sort(np.random.default_rng(0).permutation(len(data.train))[:n_cmp])
    cmp_train = torch_data.TensorLoader(
        data.train.images[pick], data.train.labels[pick], data.mean, data.std,
        settings.batch_size, device, shuffle=True, augment=augment, drop_last=True,
        seed=cfg.seed, channels_last=settings.channels_last, size=size)
    for variant in ("lrn", "batchnorm"):
        torch.manual_seed(cfg.seed)
        net = torch_models.build_model(torch_models.config_from_settings(
            settings, data.num_classes, size, norm=variant))
        run = torch_train.fit(
            net, cmp_train, loaders["val"],
            torch_train.TrainConfig.from_settings(settings, epochs=settings.compare_epochs,
                                                  mixed_precision=cfg.mixed_precision,
                                                  compile=False),
            device, desc=variant)
        comparison[variant] = {"val_acc": [h["val_acc"] for h in run.history],
                               "train_loss": [h["train_loss"] for h in run.history],
                               "seconds": run.train_seconds}
    for variant, r in comparison.items():
        print(f"{variant:>9}: val accuracy by epoch {[round(a, 3) for a in r['val_acc']]}, "
              f"{r['seconds']:.1f} s")

# %%
if comparison:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for variant, r in comparison.items():
        ep = range(1, len(r["val_acc"]) + 1)
        axes[0].plot(ep, r["train_loss"], marker="o", label=variant)
        axes[1].plot(ep, r["val_acc"], marker="o", label=variant)
    axes[0].set(title="training loss", xlabel="epoch")
    axes[1].set(title="validation accuracy", xlabel="epoch")
    axes[1].legend()
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## 4 · Training
#
# `torch_train.fit` is the course's one training loop (notebook 06 reuses it). Per step:
# forward and loss under autocast (bf16 on GPUs that support it, fp16 with a gradient
# scaler otherwise, fp32 on the CPU), backward, optional gradient clipping, SGD with
# Nesterov momentum (or AdamW), and a per-step learning rate: linear warmup then a
# one-cycle decay. Label smoothing keeps the network from becoming over-confident on a
# small training set. After each epoch it evaluates on the validation split, can stop
# early, and writes a checkpoint atomically: if the kernel dies, re-running this cell
# resumes from the last finished epoch.

# %%
train_config = torch_train.TrainConfig.from_settings(
    settings, mixed_precision=cfg.mixed_precision, seed=cfg.seed)
checkpoints = cfg.outputs_dir / "checkpoints" / run_id
result = torch_train.fit(model, loaders["train"], loaders["val"], train_config, device,
                         checkpoint_dir=checkpoints if settings.checkpoint else None,
                         tensorboard_dir=cfg.outputs_dir / "tensorboard" / run_id)
last = result.history[-1]
print(f"{len(result.history)} epochs in {result.train_seconds:.1f} s "
      f"({result.extra['images_per_second']:,.0f} training images/s, "
      f"amp {result.extra['amp']}); "
      f"final val accuracy {last['val_acc']:.3f}")

# %% [markdown]
# ## 5 · Test-set evaluation and the saved model
#
# We predict the test set once (averaging each image with its mirror image when
# `tta_flip` is on, a cheap test-time augmentation), save the model (weights as
# safetensors, the model config as JSON and `classifier.json`, the contract notebooks
# 05 and 06 use to reload any course model), and let `finish_run` compute the metrics
# and write the curves, the confusion matrix, 10 example predictions (grid and CSV) and
# the run record.

# %%
probs, val_probs = (torch_train.predict_proba(
    model, split.images, data.mean, data.std, batch_size=2 * settings.batch_size, device=device,
    image_size=size, tta_flip=settings.tta_flip, mixed_precision=cfg.mixed_precision)
    for split in (data.test, data.val))
model_dir = cfg.outputs_dir / "models" / run_id
info = ClassifierInfo(framework="pytorch", model=model_config.name,
                      class_names=list(data.class_names), image_size=size,
                      mean=[float(v) for v in data.mean], std=[float(v) for v in data.std],
                      extra={"tta_flip": bool(settings.tta_flip)}, source_size=data.image_size)
torch_train.save_classifier(model_dir, model, info)
record = finish_run(
    cfg, data, notebook=NOTEBOOK, model=model_config.name, probs=probs, fit=result,
    num_params=summary.total_params, model_path=model_dir, val_probs=val_probs,
    extra={"flops_per_image": summary.flops_per_image, "loader": loaders["train"].kind,
           "tta_flip": bool(settings.tta_flip), "model_config": model_config.to_dict(),
           "norm_comparison": comparison})
print(f"test accuracy {record.test.accuracy:.4f}   macro F1 {record.test.macro_f1:.4f}   "
      f"training {record.train_seconds:.0f} s   run {record.run_id}")

# %% [markdown]
# Per-class precision, recall and F1: which classes does the network confuse? (Compare
# with the confusion matrix above: cats and dogs are the classic pair on CIFAR-10.)

# %%
record_class_table(record)

# %% [markdown]
# ## 6 · Reload check
#
# A saved model is only useful if it predicts exactly what the trained one did. We
# reload it through the framework-neutral `nbutils.inference.load_classifier` (which
# reads `classifier.json`, rebuilds the network from `model_config.json` and loads the
# safetensors weights) and compare its test-set probabilities with the ones above.

# %%
# NBVAL_CHECK_OUTPUT
reloaded = load_classifier(model_dir, device=str(device))
again = reloaded.predict_proba(np.asarray(data.test.images), batch_size=256)
max_diff = float(np.abs(again - probs).max())
same = bool((again.argmax(1) == probs.argmax(1)).all())
assert same and max_diff < 1e-4, f"reloaded model differs (max |diff| = {max_diff})"
print(f"reloaded {type(reloaded.model).__name__} from classifier.json: "
      f"identical predicted classes = {same}, probabilities agree to 1e-4 = {max_diff < 1e-4}")

# %% [markdown]
# ## Exercises
#
# 1. **Normalisation.** Set `norm = "lrn"` (and then `"none"`) in the parameters cell
#    and re-run. How do accuracy and training time change? Then try `lrn` with a
#    lower learning rate (`nbutils.setup(..., lr=0.02)`): is the gap about the
#    normalisation or about the learning rate it tolerates?
# 2. **What does augmentation buy?** Train once with `augment_padding=0,
#    augment_flip=False` and compare the train/validation curves with the run above.
#    Where does the gap between training and validation accuracy open up?
# 3. **The original network.** With a GPU, train `architecture = "alexnet224"` (images
#    are resized to 224 px on the device). Compare its FLOPs per image with the small
#    network's in the summaries above, and its accuracy. With internet access, set
#    `pretrained=True, norm="none"` to start from ImageNet weights: how many epochs
#    does it need now?
