# %% [markdown]
# # Solutions · 02b From AlexNet to ResNet
#
# Run as a script (`python solutions/02b_pytorch_resnet.py --profile cpu --dataset
# imagefolder:PATH`) or from a notebook cell with `%run`. Exercise 1's runs are short
# like the lesson's side experiments (`compare_epochs` epochs on `compare_max_train`
# training images); exercise 2 trains the full ResNet again (through `nbutils.train`,
# the notebook's training as a function).

# %%
import numpy as np
import torch

import nbutils
from nbutils import exercises, torch_augment, torch_data, torch_models, torch_resnet, torch_train
from nbutils.data import load_for
from nbutils.lr_finder import lr_find

args = exercises.parse_args()
cfg = nbutils.setup(args.profile, model="resnet", dataset=args.dataset, verbose=False)
record = exercises.SolutionRecord("02b_pytorch_resnet", cfg, __file__)
settings, device = cfg.model, torch_train.resolve_device(cfg.device)
data = load_for(cfg, progress=False)
size = data.image_size
augment = torch_data.Augment(settings.augment_padding, settings.augment_flip)
loaders = torch_data.make_loaders(data, settings.batch_size, device, augment=augment,
                                  seed=cfg.seed, channels_last=settings.channels_last,
                                  num_workers=cfg.data.num_workers)
n_side = settings.compare_max_train or len(data.train)
pick = np.sort(np.random.default_rng(0).permutation(len(data.train))[:n_side])
side_train = torch_data.TensorLoader(
    data.train.images[pick], data.train.labels[pick], data.mean, data.std, settings.batch_size,
    device, shuffle=True, augment=augment, drop_last=True, seed=cfg.seed,
    channels_last=settings.channels_last)


def side_run(config, **train):
    """The lesson's side experiment: a short run on the subset; returns fit's result."""
    torch.manual_seed(cfg.seed)
    return torch_train.fit(torch_models.build_model(config), side_train, loaders["val"],
                           torch_train.TrainConfig.from_settings(
                               settings, epochs=settings.compare_epochs,
                               mixed_precision=cfg.mixed_precision, **train),
                           device, desc=config.name)


# %% [markdown]
# ## 1 · Deeper plain networks
#
# The plain-vs-residual pair with two and with four blocks per stage. The gap in final
# training loss (plain minus residual) measures how much harder the plain network is to
# optimise.

# %%
loss_gap = {}
for blocks in (list(settings.deep_blocks), [4, 4, 4]):
    final = {}
    for residual in (False, True):
        config = torch_resnet.config_from_settings(
            settings, data.num_classes, size, widths=list(settings.deep_widths),
            blocks=blocks, residual=residual)
        final[residual] = side_run(config).history[-1]["train_loss"]
    loss_gap[str(blocks)] = final[False] - final[True]
    print(f"blocks {blocks}: final training loss plain {final[False]:.3f}, "
          f"residual {final[True]:.3f}")
record.note(train_loss_gap=loss_gap)
two, four = loss_gap.values()
record.expect(1, "plain minus residual training loss, 4 blocks per stage, > with 2", four,
              ">", two)

# %% [markdown]
# ## 2 · The range test's choice
#
# The notebook's range test on the fresh network, then the full training run at its
# suggestion (what `lr = "find"` does), against the notebook's run at the config's rate.

# %%
model_config = torch_resnet.config_from_settings(settings, data.num_classes, size)
torch.manual_seed(cfg.seed)
amp = torch_train.amp_settings(device, cfg.mixed_precision)
finder = lr_find(torch_models.build_model(model_config).to(device), loaders["train"],
                 start_lr=1e-4, end_lr=10.0, num_steps=settings.lr_find_steps,
                 momentum=settings.momentum, weight_decay=settings.weight_decay,
                 autocast_dtype=amp.dtype if amp.enabled else None)
print(f"range test: suggestion {finder.suggestion:.3g} (config: {settings.lr})")
baseline = exercises.train_variant("resnet", args.profile, args.dataset)
found = exercises.train_variant("resnet", args.profile, args.dataset,
                                lr=float(f"{finder.suggestion:.3g}"))
print(f"test accuracy: config's rate {baseline.test.accuracy:.3f}, the suggestion's "
      f"{found.test.accuracy:.3f}")
record.note(suggestion=finder.suggestion, config_lr=settings.lr)
record.expect(2, "test accuracy: config's rate minus the suggestion's",
              baseline.test.accuracy - found.test.accuracy, "<", 0.05)

# %% [markdown]
# ## 3 · What CutMix does to a batch
#
# Paste a box of each image's partner into it; the label weight λ must be the share of
# pixels the image keeps, and every mixed target must still sum to one.

# %%
x = torch.from_numpy(np.array(data.train.images[:64])).permute(0, 3, 1, 2).float()
y = torch.from_numpy(np.array(data.train.labels[:64])).long()
gen = torch.Generator().manual_seed(0)
worst_area, worst_sum = 0.0, 0.0
for _ in range(20):
    mixed, y1, y2, lam = torch_augment.BatchMix(cutmix_alpha=1.0)(x, y, gen)
    box = (mixed != x).any(dim=(0, 1))                  # the pasted box, over the batch
    worst_area = max(worst_area, abs((1 - lam) - float(box.float().mean())))
    targets = torch_augment.soft_targets(y1, y2, lam, data.num_classes)
    worst_sum = max(worst_sum, float((targets.sum(1) - 1).abs().max()))
print(f"largest |(1 - λ) - pasted share| over 20 batches: {worst_area:.4f}; "
      f"largest |row sum - 1|: {worst_sum:.2e}")
record.expect(3, "largest |(1 - lambda) - pasted share of the image|", worst_area, "<", 0.02,
              smoke=True)
record.expect(3, "largest |mixed target row sum - 1|", worst_sum, "<", 1e-6, smoke=True)

# %%
record.save()
