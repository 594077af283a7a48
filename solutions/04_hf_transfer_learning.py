# %% [markdown]
# # Solutions · 04 Transfer learning with Hugging Face
#
# Run as a script (`python solutions/04_hf_transfer_learning.py --profile cpu --dataset
# imagefolder:PATH`) or from a notebook cell with `%run`. Exercises 1 to 3 fine-tune
# again with one setting changed (through `nbutils.train`, the notebook's training as a
# function); exercise 4 reloads the notebook's saved model.

# %%
import numpy as np
import torch

import nbutils
from nbutils import exercises
from nbutils.data import load_for
from nbutils.inference import load_classifier

args = exercises.parse_args()
cfg = nbutils.setup(args.profile, model="hf_transfer", dataset=args.dataset, verbose=False)
record = exercises.SolutionRecord("04_hf_transfer_learning", cfg, __file__)
baseline = exercises.train_variant("hf_transfer", args.profile, args.dataset)

# %% [markdown]
# ## 1 · A lower resolution

# %%
small = exercises.train_variant("hf_transfer", args.profile, args.dataset, input_size=96)
speedup = baseline.train_seconds / small.train_seconds
print(f"{cfg.model.input_size} px: {baseline.train_seconds:.0f} s, test accuracy "
      f"{baseline.test.accuracy:.3f}; 96 px: {small.train_seconds:.0f} s, test accuracy "
      f"{small.test.accuracy:.3f} ({speedup:.1f}x faster)")
record.expect(1, f"training time at {cfg.model.input_size} px / at 96 px", speedup, ">", 2.0)
record.expect(1, "test accuracy at 96 px minus at the default", small.test.accuracy -
              baseline.test.accuracy, "<", -0.02)

# %% [markdown]
# ## 2 · Fine-tuning every block

# %%
every = exercises.train_variant("hf_transfer", args.profile, args.dataset, freeze_fraction=0.0)
per_epoch = {name: run.extra["strategies"]["fine_tune"]["train_seconds"] / cfg.model.epochs
             for name, run in (("default", baseline), ("every block", every))}
print(f"fine-tuning with {cfg.model.freeze_fraction:.0%} of the body frozen: "
      f"{per_epoch['default']:.0f} s per epoch, test accuracy {baseline.test.accuracy:.3f}; "
      f"every block: {per_epoch['every block']:.0f} s per epoch, test accuracy "
      f"{every.test.accuracy:.3f}")
record.expect(2, "seconds per fine-tuning epoch, every block / default",
              per_epoch["every block"] / per_epoch["default"], ">", 1.0)
record.expect(2, "|test accuracy, every block - default|",
              abs(every.test.accuracy - baseline.test.accuracy), "<=", 0.02)

# %% [markdown]
# ## 3 · Fifty images per class

# %%
few = exercises.train_variant("hf_transfer", args.profile, args.dataset, max_train_per_class=50)
print(f"50 images per class: test accuracy {few.test.accuracy:.3f} "
      f"(chance {1 / len(few.class_names):.3f})")
record.expect(3, "test accuracy with 50 training images per class", few.test.accuracy, ">",
              0.70)
scratch = exercises.train_variant("alexnet", args.profile, args.dataset, max_train_per_class=50)
print(f"the AlexNet of 02 trained from scratch on the same images: {scratch.test.accuracy:.3f}")
record.expect(3, "test accuracy with 50 per class, pretrained minus from scratch (02)",
              few.test.accuracy - scratch.test.accuracy, ">", 0.2)

# %% [markdown]
# ## 4 · The wrong normalisation
#
# The backbone learned its features on inputs normalised with the checkpoint's mean and
# standard deviation. Feed it images normalised with CIFAR-10's own statistics instead
# (as notebooks 02 and 03 do) and the fine-tuned model sees inputs it was never trained
# on.

# %%
data = load_for(cfg, progress=False)
clf = load_classifier(baseline.artifacts["model"])


def set_normalisation(processor, mean, std):
    """Make ``processor`` normalise with ``mean``/``std``; returns the previous pair."""
    transforms = getattr(processor, "val_transforms", None)   # a timm checkpoint
    if transforms is not None:
        step = next(t for t in transforms.transforms if type(t).__name__ == "Normalize")
        before = (step.mean, step.std)
        step.mean, step.std = torch.as_tensor(mean).float(), torch.as_tensor(std).float()
    else:                                                       # a transformers processor
        before = (processor.image_mean, processor.image_std)
        processor.image_mean, processor.image_std = list(mean), list(std)
    return before


accuracy = {}
own = set_normalisation(clf.processor, data.mean, data.std)
for name, (mean, std) in (("dataset's", (data.mean, data.std)), ("checkpoint's", own)):
    set_normalisation(clf.processor, mean, std)
    probs = clf.predict_proba(data.test.images)
    accuracy[name] = float((probs.argmax(1) == data.test.labels).mean())
    print(f"normalised with the {name} statistics {np.round(np.asarray(mean), 3)} / "
          f"{np.round(np.asarray(std), 3)}: test accuracy {accuracy[name]:.3f}")
record.expect(4, "test accuracy with the dataset's statistics minus the checkpoint's",
              accuracy["dataset's"] - accuracy["checkpoint's"], "<", 0.0)

# %%
record.save()
