# %% [markdown]
# # 02b · From AlexNet to ResNet: skip connections and the craft of training
#
# Notebook 02 trained an AlexNet: five convolutions and three fully connected layers.
# Deeper networks should do better, yet in 2015 He et al. found that simply stacking
# more layers made *training* accuracy worse, not only test accuracy: the deeper plain
# network was harder to optimise. Their fix, the **residual connection**, lets each block
# learn a correction `F(x)` that is *added* to its input, `y = x + F(x)`. The identity
# path carries the signal (and, backwards, the gradient) around every block, so depth
# stops hurting. Almost every CNN since, and the transformer, is built this way.
#
# This notebook writes the residual block out, shows what the skip connection buys on a
# deeper network, then trains a ResNet-9 with the craft that makes short training runs
# work: a learning-rate range test to pick the rate, a warm-up + linear-decay schedule, label
# smoothing, augmentation on the device (MixUp, CutMix and TrivialAugment compared at the
# same cost) and, on CPUs that compute bfloat16 natively, bf16 autocast. Its record sits
# beside notebook 02's, so notebooks 05 to 07 compare, explain and use it too.

# %% tags=["parameters"]
profile = "auto"         # gpu | lowvram | cpu | smoke | auto (chosen from the hardware)
dataset = None           # None keeps the profile dataset; e.g. imagefolder:PATH
epochs = None            # None keeps the profile value
batch_size = None        # None keeps the profile value
lr = None                # None keeps the config value; "find" trains with the range test's choice
mixup_alpha = None       # None keeps the config value (0: off)
cutmix_alpha = None      # None keeps the config value (0: off)
trivial_augment = None   # None keeps the config value (False)
compare_depth = None     # None keeps the config value; False skips plain vs residual
deep_blocks = None       # None keeps the config value ([2, 2, 2]): blocks of the deeper pair
compare_augment = None   # None keeps the config value; False skips the augmentation table
tracking = None          # None keeps the config ("none"); "mlflow" also logs the run

# %% [markdown]
# Every other setting is in `configs/models/resnet.yaml` (with a comment each),
# overlaid by the profile's `models.resnet` section.

# %%
# NBVAL_CHECK_OUTPUT
import nbutils  # first: on a Mac it lets PyTorch fall back to the CPU where mps lacks an op
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from nbutils import plots, torch_data, torch_models, torch_resnet, torch_train
from nbutils.data import load_for
from nbutils.inference import ClassifierInfo, load_classifier
from nbutils.lr_finder import lr_find
from nbutils.runs import finish_run, record_class_table
from torch import nn

cfg = nbutils.setup(profile, model="resnet", dataset=dataset, epochs=epochs,
                    batch_size=batch_size, lr=None if lr == "find" else lr,
                    mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha,
                    trivial_augment=trivial_augment, compare_depth=compare_depth,
                    deep_blocks=deep_blocks,
                    compare_augment=compare_augment, tracking=tracking)
settings = cfg.model
device = torch_train.resolve_device(cfg.device)
threads = torch_train.set_threads(settings.num_threads)
mixed = cfg.mixed_precision  # bf16 on CPUs that compute it natively (precision: auto)
print(f"autocast: {torch_train.amp_settings(device, mixed).label}")
NOTEBOOK = "02b_pytorch_resnet"
run_id = cfg.run_id(NOTEBOOK)

# %% [markdown]
# ## 1 · The residual block
#
# Two 3×3 convolutions, each followed by BatchNorm and ReLU, as in notebook 02; the only
# new line is the addition. With `residual=False` the same block is "plain", which lets
# us compare like with like below. The course's package holds the same class
# (`nbutils.torch_resnet.ResidualBlock`, which the saved models are built from); the
# cell after it checks that both compute the same thing.

# %%
def conv_bn(cin: int, cout: int) -> nn.Sequential:
    """3x3 convolution, BatchNorm, ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """y = x + F(x), with F two conv-BN-ReLU layers (or y = F(x) when plain)."""

    def __init__(self, channels: int, residual: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


# %%
# NBVAL_CHECK_OUTPUT
ours, package = ResidualBlock(16).eval(), torch_resnet.ResidualBlock(16).eval()
ours.load_state_dict(package.state_dict())
x = torch.randn(2, 16, 8, 8)
print("this block computes what nbutils.torch_resnet.ResidualBlock computes:",
      torch.equal(ours(x), package(x)))

# %% [markdown]
# ## 2 · ResNet-9
#
# The network that trains CIFAR-10 fastest (Page, 2018): a stem convolution, three
# stages that each widen the channels and halve the resolution (32 → 16 → 8 → 4 px),
# residual blocks after the first and the last stage, a global max pool and one linear
# layer. Nine weight layers; the widths come from the config.

# %%
# NBVAL_CHECK_OUTPUT
data = load_for(cfg, progress=False)
size = data.image_size
model_config = torch_resnet.config_from_settings(settings, data.num_classes, size)
torch.manual_seed(cfg.seed)
model = torch_models.build_model(model_config)
summary = torch_models.summarize(model, (3, size, size))
print(model_config.name)
print(summary)

# %%
augment = torch_data.Augment(settings.augment_padding, settings.augment_flip,
                             trivial=settings.trivial_augment)
loaders = torch_data.make_loaders(data, settings.batch_size, device, mode="auto", augment=augment,
                                  seed=cfg.seed, channels_last=settings.channels_last, size=size,
                                  num_workers=cfg.data.num_workers)
n_side = settings.compare_max_train or len(data.train)
pick = np.sort(np.random.default_rng(0).permutation(len(data.train))[:n_side])


def side_run(config: torch_resnet.ResNetConfig, aug: torch_data.Augment, **train) -> dict:
    """Train ``config`` briefly on the side-experiment subset; its curves and seconds."""
    loader = torch_data.TensorLoader(
        data.train.images[pick], data.train.labels[pick], data.mean, data.std,
        settings.batch_size, device, shuffle=True, augment=aug, drop_last=True, seed=cfg.seed,
        channels_last=settings.channels_last, size=size)
    torch.manual_seed(cfg.seed)
    net = torch_models.build_model(config)
    run = torch_train.fit(net, loader, loaders["val"], torch_train.TrainConfig.from_settings(
        settings, epochs=settings.compare_epochs, mixed_precision=mixed, **train), device,
        desc=config.name)
    return {"history": run.history, "val_acc": [h["val_acc"] for h in run.history],
            "train_loss": [h["train_loss"] for h in run.history], "seconds": run.train_seconds}


# %% [markdown]
# ## 3 · What the skip connection buys
#
# A deeper pair, identical but for the skips (`deep_widths` in the config, and
# `deep_blocks`: two residual blocks per stage, 16 weight layers), trained with the same
# budget on the same images. The plain network has exactly the same parameters and
# cost; any difference is the skip connections'.

# %%
depth = {}
if settings.compare_depth:
    for residual in (False, True):
        deep = torch_resnet.config_from_settings(
            settings, data.num_classes, size, widths=list(settings.deep_widths),
            blocks=list(settings.deep_blocks), residual=residual)
        depth[deep.name] = side_run(deep, augment)
    for name, r in depth.items():
        print(f"{name:>12}: val accuracy by epoch {[round(a, 3) for a in r['val_acc']]}, "
              f"final training loss {r['train_loss'][-1]:.3f}, {r['seconds']:.0f} s")
if depth:
    plots.plot_runs({name: r["history"] for name, r in depth.items()},
                    chance=1 / data.num_classes)
    plt.show()

# %% [markdown]
# Read the training loss, not only the validation accuracy: the plain network's
# problem is optimisation. Under `smoke` the runs are far too short to show anything.
#
# ## 4 · Picking the learning rate: a range test
#
# Train for a few dozen steps while the learning rate grows exponentially, and watch the
# loss (Smith, 2017; fastai's `lr_find`). Too small, nothing happens; too large, the
# loss explodes. A good rate sits on the steep part of the descent. The weights are put
# back afterwards. With `lr = "find"` in the parameters the notebook trains with the
# suggestion; otherwise with the config's rate, which was chosen on the validation split.

# %%
finder = None
if settings.lr_find:
    amp = torch_train.amp_settings(device, mixed)
    finder = lr_find(model.to(device), loaders["train"], start_lr=1e-4, end_lr=10.0,
                     num_steps=settings.lr_find_steps, momentum=settings.momentum,
                     weight_decay=settings.weight_decay,
                     autocast_dtype=amp.dtype if amp.enabled else None)
    finder.plot()
    plt.show()
    print(f"range test: steepest descent at {finder.steepest:.3g}, minimum / 10 at "
          f"{finder.min_over_10:.3g}; suggestion {finder.suggestion:.3g}")
train_lr = finder.suggestion if (lr == "find" and finder is not None) else settings.lr
print(f"training with lr = {train_lr:.3g}" + (" (the range test's)" if lr == "find" else
                                              " (the config's)"))

# %% [markdown]
# ## 5 · Augmentation at the same cost
#
# Four short runs of the ResNet, same images, same epochs, same schedule: plain crop and
# flip, then adding **MixUp** (blend two images and their labels), **CutMix** (paste a
# patch of another image; the label is mixed by area) or **TrivialAugment** (one random
# colour or geometric operation per image). All three work on whole batches on the
# device (`nbutils.torch_augment`). Strong augmentation usually pays off only with
# longer training, so a short run can favour the baseline: the table says what it says.

# %%
augment_table = []
if settings.compare_augment:
    variants = {"baseline": (augment, {}),
                "+ MixUp (α=0.2)": (augment, {"mixup_alpha": 0.2}),
                "+ CutMix (α=1)": (augment, {"cutmix_alpha": 1.0}),
                "+ TrivialAugment": (torch_data.Augment(settings.augment_padding,
                                                        settings.augment_flip, trivial=True), {})}
    for name, (aug, extra) in variants.items():
        r = side_run(model_config, aug, **{"mixup_alpha": 0.0, "cutmix_alpha": 0.0, **extra})
        augment_table.append({"variant": name, "val acc (last epoch)": r["val_acc"][-1],
                              "best val acc": max(r["val_acc"]), "seconds": r["seconds"]})
    print(pd.DataFrame(augment_table).to_string(index=False, float_format="{:.3f}".format))

# %% [markdown]
# ## 6 · Training the ResNet
#
# The same `torch_train.fit` as notebook 02, with the settings above: SGD with Nesterov
# momentum, warm-up then linear decay, label smoothing, crop and flip on the device, and
# bf16 autocast where the CPU (or GPU) computes it natively: the weights stay in fp32,
# the convolutions run in bf16, about twice as fast on such CPUs.

# %%
train_config = torch_train.TrainConfig.from_settings(settings, lr=train_lr,
                                                     mixed_precision=mixed, seed=cfg.seed)
checkpoints = cfg.outputs_dir / "checkpoints" / run_id
result = torch_train.fit(model, loaders["train"], loaders["val"], train_config, device,
                         checkpoint_dir=checkpoints if settings.checkpoint else None,
                         tensorboard_dir=cfg.outputs_dir / "tensorboard" / run_id)
last = result.history[-1]
print(f"{len(result.history)} epochs in {result.train_seconds:.1f} s "
      f"({result.extra['images_per_second']:,.0f} training images/s, amp {result.extra['amp']}); "
      f"final val accuracy {last['val_acc']:.3f}")

# %% [markdown]
# ## 7 · Test set, saved model, run record
#
# As in notebook 02: test (and validation) probabilities with the mirror-image
# average, the model saved as safetensors with its config (the registry rebuilds any
# family: `model_config.json` names `resnet`), and `finish_run` for the standard outputs.

# %%
probs, val_probs = (torch_train.predict_proba(
    model, split.images, data.mean, data.std, batch_size=2 * settings.batch_size, device=device,
    image_size=size, tta_flip=settings.tta_flip)  # in fp32, as the saved model will predict
    for split in (data.test, data.val))
model_dir = cfg.outputs_dir / "models" / run_id
info = ClassifierInfo(framework="pytorch", model=model_config.name,
                      class_names=list(data.class_names), image_size=size,
                      mean=[float(v) for v in data.mean], std=[float(v) for v in data.std],
                      extra={"tta_flip": bool(settings.tta_flip)}, source_size=data.image_size)
torch_train.save_classifier(model_dir, model, info)
record = finish_run(
    cfg, data, notebook=NOTEBOOK, framework="pytorch", model=model_config.name, probs=probs,
    fit=result, num_params=summary.total_params, model_path=model_dir, val_probs=val_probs,
    extra={"flops_per_image": summary.flops_per_image, "model_config": model_config.to_dict(),
           "lr": train_lr, "lr_find": None if finder is None else {
               "steepest": finder.steepest, "min_over_10": finder.min_over_10},
           "depth_comparison": depth, "augment_comparison": augment_table})
print(f"test accuracy {record.test.accuracy:.4f}   macro F1 {record.test.macro_f1:.4f}   "
      f"training {record.train_seconds:.0f} s   run {record.run_id}")
if cfg.profile == "smoke":
    print("smoke profile: tiny data and one epoch, accuracy near chance by design")

# %%
record_class_table(record)

# %%
# NBVAL_CHECK_OUTPUT
reloaded = load_classifier(model_dir, device=str(device))
again = reloaded.predict_proba(np.asarray(data.test.images), batch_size=256)
same = bool((again.argmax(1) == probs.argmax(1)).all())
print(f"reloaded {type(reloaded.model).__name__}: identical predicted classes = {same}")

# %% [markdown]
# ## Takeaways
#
# * A residual block adds its input to its output; the identity path lets deep networks
#   train, and costs nothing (the plain twin has the same parameters and FLOPs).
# * A learning-rate range test finds the useful range in a minute; a warm-up + linear-decay schedule
#   then uses rates near its top.
# * Augmentation and regularisation have to be judged at equal cost and on the
#   validation split; short runs favour weak augmentation.
# * On a CPU with native bf16, autocast halves the training time at the same accuracy.
#
# ## Exercises
#
# Solutions: `solutions/02b_pytorch_resnet.py` prints what it measured and whether each
# expected outcome held ([how the solutions work](../docs/solutions.md)).
#
# 1. **Deeper plain networks.** Set `deep_blocks = [4, 4, 4]` (28 weight layers) and
#    re-run section 3. *Expect*: the plain network's final training loss further above
#    the residual one's than with the default depth: the gap grows with depth (measured
#    on `cpu`: 0.12 with four blocks per stage, 0.09 with two).
# 2. **The range test's choice.** Set `lr = "find"`. *Expect*: training uses the
#    suggestion printed in section 4, and the test accuracy lands within a few points of
#    the run at the config's rate, here below it (measured on `cpu`: suggestion 0.112
#    against the config's 0.2, test accuracy 75.6 % against 79.9 %). The range test
#    gives a safe starting point in seconds; the config's rate was tuned on the
#    validation split over many runs.
# 3. **What CutMix does to a batch.** Mix a batch of training images with
#    `nbutils.torch_augment.BatchMix(cutmix_alpha=1.0)` and compare it with the
#    original. *Expect*: the pasted box covers exactly the share 1 − λ of every image,
#    and every row of `torch_augment.soft_targets(y, y2, λ, K)` sums to one.
