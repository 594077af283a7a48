# %% [markdown]
# # Solutions · 03 A CNN in Keras
#
# Run as a script (`python solutions/03_keras_cnn.py --profile cpu --dataset
# imagefolder:PATH`) or from a notebook cell with `%run`. Exercise 1 trains the
# lesson's model again without augmentation (through `nbutils.train`, the notebook's
# training as a function); exercise 2 reloads the notebook's saved model.

# %%
import tempfile
from pathlib import Path

import keras
import numpy as np

import nbutils
from nbutils import exercises, keras_train
from nbutils.data import load_for

args = exercises.parse_args()
cfg = nbutils.setup(args.profile, model="keras_cnn", dataset=args.dataset, verbose=False)
record = exercises.SolutionRecord("03_keras_cnn", cfg, __file__)
baseline = exercises.train_variant("keras_cnn", args.profile, args.dataset)


def gap(run) -> float:
    """Training minus validation accuracy at the last epoch."""
    return run.history[-1]["train_acc"] - run.history[-1]["val_acc"]


# %% [markdown]
# ## 1 · No augmentation

# %%
bare = exercises.train_variant("keras_cnn", args.profile, args.dataset, augment=False)
print(f"train - val accuracy at the end: with augmentation {gap(baseline):.3f}, without "
      f"{gap(bare):.3f}; test accuracy {baseline.test.accuracy:.3f} vs {bare.test.accuracy:.3f}")
record.expect(1, "train-val gap without augmentation > with it", gap(bare), ">", gap(baseline))
record.expect(1, "test accuracy without augmentation < with it", bare.test.accuracy, "<",
              baseline.test.accuracy)

# %% [markdown]
# ## 2 · Test-time augmentation off
#
# The saved model predicts the test set once with and once without averaging each image
# with its mirror image.

# %%
data = load_for(cfg, progress=False)
clf = keras_train.load_classifier(baseline.artifacts["model"])
accuracy = {tta: float((keras_train.predict_proba(clf.model, data.test.images, tta_flip=tta)
                        .argmax(1) == data.test.labels).mean()) for tta in (True, False)}
print(f"test accuracy with flip TTA {accuracy[True]:.3f}, without {accuracy[False]:.3f}")
record.expect(2, "|test accuracy with TTA - without|", abs(accuracy[True] - accuracy[False]),
              "<=", 0.015)

# %% [markdown]
# ## 3 · Safe loading refuses code
#
# A `Lambda` layer stores Python code in the `.keras` file; `safe_mode=True` (the
# default, and what `nbutils` uses) refuses to run it.

# %%
risky = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2)])
refused = 0.0
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "risky.keras"
    risky.save(path)
    try:
        keras.saving.load_model(path, safe_mode=True)
    except ValueError as err:
        refused = float("safe_mode" in str(err))
        print("refused:", str(err).splitlines()[0][:120])
record.expect(3, "the load is refused with an error naming safe_mode", refused, "==", 1.0,
              smoke=True)
print(f"the model itself runs: {np.asarray(risky(np.arange(4.0)[None]))[0]} (only loading it "
      "from a file is refused)")

# %%
record.save()
