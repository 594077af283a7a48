# %% [markdown]
# # Solutions · 02 AlexNet in PyTorch
#
# Run as a script (`python solutions/02_pytorch_alexnet.py --profile cpu --dataset
# imagefolder:PATH`) or from a notebook cell with `%run`. Exercises 1 and 3 train the
# lesson's network again with one setting changed (through `nbutils.train`, the
# notebook's training as a function) and compare with the notebook's own run.

# %%
import numpy as np
import torch
import torch.nn.functional as F

import nbutils
from nbutils import exercises, torch_data, torch_models, torch_train
from nbutils.data import load_for

args = exercises.parse_args()
record = exercises.SolutionRecord(
    "02_pytorch_alexnet",
    nbutils.setup(args.profile, model="alexnet", dataset=args.dataset, verbose=False), __file__)
baseline = exercises.train_variant("alexnet", args.profile, args.dataset)


def gap(run) -> float:
    """Training minus validation accuracy at the last epoch."""
    return run.history[-1]["train_acc"] - run.history[-1]["val_acc"]


# %% [markdown]
# ## 1 · No normalisation
#
# Without BatchNorm the same high learning rate is much harder on the network.

# %%
plain = exercises.train_variant("alexnet", args.profile, args.dataset, norm="none")
print(f"test accuracy: batchnorm {baseline.test.accuracy:.3f}, none {plain.test.accuracy:.3f}")
record.expect(1, "test accuracy without normalisation < with BatchNorm", plain.test.accuracy,
              "<", baseline.test.accuracy)

# %% [markdown]
# ## 2 · Three epochs by hand
#
# The notebook's loop, run for three epochs on a fresh network, at a constant
# learning rate (no schedule), so the accuracy can jitter from one epoch to the next.

# %%
cfg = nbutils.setup(args.profile, model="alexnet", dataset=args.dataset, verbose=False)
settings, device = cfg.model, torch_train.resolve_device(cfg.device)
data = load_for(cfg, progress=False)
loaders = torch_data.make_loaders(
    data, settings.batch_size, device, augment=torch_data.Augment(
        settings.augment_padding, settings.augment_flip), seed=cfg.seed,
    channels_last=settings.channels_last, num_workers=cfg.data.num_workers)
torch.manual_seed(cfg.seed)
net = torch_models.build_model(
    torch_models.config_from_settings(settings, data.num_classes, data.image_size)).to(device)
optimizer = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9)
accuracies = []
for epoch in range(3):
    net.train()
    for x, y in loaders["train"]:
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    accuracies.append(torch_train.evaluate(net, loaders["val"])[1])
    print(f"epoch {epoch + 1}: validation accuracy {accuracies[-1]:.3f}")
record.note(hand_val_acc=accuracies)
record.expect(2, "validation accuracy after 3 epochs minus after 1", accuracies[-1] - accuracies[0],
              ">", 0.05)
print(f"largest fall from one epoch to the next: {max(0.0, -float(np.diff(accuracies).min())):.3f} "
      "(at a constant learning rate the accuracy jitters)")

# %% [markdown]
# ## 3 · No augmentation
#
# Without crops and flips the network sees the same 4,500 images every epoch and
# starts to memorise them: training accuracy runs ahead of validation accuracy. Over
# this short schedule that does not yet cost test accuracy.

# %%
bare = exercises.train_variant("alexnet", args.profile, args.dataset, augment_padding=0,
                               augment_flip=False)
print(f"train - val accuracy at the end: with augmentation {gap(baseline):.3f}, "
      f"without {gap(bare):.3f}; test accuracy {baseline.test.accuracy:.3f} vs "
      f"{bare.test.accuracy:.3f}")
record.expect(3, "train-val gap without augmentation > with it", gap(bare), ">", gap(baseline))
record.expect(3, "|test accuracy without augmentation - with it|",
              abs(bare.test.accuracy - baseline.test.accuracy), "<", 0.03)

# %%
record.save()
