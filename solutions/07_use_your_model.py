# %% [markdown]
# # Solutions · 07 Using your model
#
# Run after the training notebooks (02-04) for the same profile and dataset, as a script
# (`python solutions/07_use_your_model.py --profile cpu --dataset imagefolder:PATH`) or
# from a notebook cell with `%run`.

# %%
import tempfile
from pathlib import Path

import numpy as np

import nbutils
from nbutils import exercises
from nbutils.data import load_for
from nbutils.export import export_onnx
from nbutils.predict import Predictor
from nbutils.records import make_run_id
from nbutils.runs import find_runs, is_seed_replicate
from nbutils.samples import write_sample_photos

args = exercises.parse_args()
cfg = nbutils.setup(args.profile, model="use_model", dataset=args.dataset, verbose=False)
record = exercises.SolutionRecord("07_use_your_model", cfg, __file__)
found = [r for r in find_runs(cfg.outputs_dir, cfg.dataset, cfg.profile).records
         if r.artifacts.get("model") and not is_seed_replicate(r)
         and r.run_id == make_run_id(r.notebook, cfg.dataset, cfg.profile)]  # no variants
if not found:
    raise SystemExit("No saved model for this dataset and profile: run notebooks 02-04 first.")
best = max(found, key=lambda r: max(h.get("val_acc", 0.0) for h in r.history))
photos_dir = Path(tempfile.mkdtemp(prefix="photos-"))
photos = write_sample_photos(photos_dir)
print(f"model: {best.run_id}; {len(photos)} photos")

# %% [markdown]
# ## 1 · Crop instead of squash
#
# Only the way a photo becomes a square changes; the non-square photos get other
# probabilities.

# %%
probs = {fit: np.stack([p.probs for p in Predictor(best.artifacts["model"], fit=fit)
                        .predict(photos, top_k=3)]) for fit in ("squash", "crop")}
change = float(np.abs(probs["squash"] - probs["crop"]).max())
print(f"largest change of a probability: {change:.3f}")
record.expect(1, "largest change of a photo's probability, crop vs squash", change, ">", 0.0,
              smoke=True)

# %% [markdown]
# ## 2 · Your own folder, with a file that is not an image

# %%
(photos_dir / "notes.jpg").write_text("not a picture")
rows = Predictor(best.artifacts["model"]).predict(sorted(photos_dir.iterdir()), top_k=3)
for p in rows:
    print(f"{Path(p.source).name:<20} {p.top[0] if p.ok else p.error}")
record.expect(2, "rows (one per file)", len(rows), "==", len(photos) + 1, smoke=True)
record.expect(2, "photos classified despite the broken file", sum(p.ok for p in rows), "==",
              len(photos), smoke=True)

# %% [markdown]
# ## 3 · A stricter threshold
#
# From the test probabilities saved when the model was trained.

# %%
saved = np.load(best.artifacts["test_probs"])
test_probs, labels = saved["probs"], saved["labels"]
table = {}
for t in (0.5, 0.9):
    kept = test_probs.max(1) >= t
    table[t] = (kept.mean(), (test_probs.argmax(1) == labels)[kept].mean() if kept.any() else 0)
    print(f"threshold {t}: answers {table[t][0]:.0%} of the test images, accuracy "
          f"{table[t][1]:.3f} on those")
record.expect(3, "coverage at 0.9 minus at 0.5", table[0.9][0] - table[0.5][0], "<=", 0.0,
              smoke=True)
record.expect(3, "accuracy of the answered images at 0.9 minus at 0.5",
              table[0.9][1] - table[0.5][1], ">", 0.0)

# %% [markdown]
# ## 4 · ONNX and int8 for every model

# %%
data = load_for(cfg, progress=False)
images, labels = np.asarray(data.test.images[:256]), np.asarray(data.test.labels[:256])
for run in found:
    with tempfile.TemporaryDirectory() as tmp:
        report = export_onnx(run.artifacts["model"], Path(tmp) / "onnx", int8=True,
                             images=images, labels=labels, latency=False)
    size = report.size_mib["onnx-int8"] / report.size_mib["onnx"]
    print(f"{run.model:<28} ONNX agreement {report.parity.top1_agreement:.1%}, int8 "
          f"agreement {report.int8_parity.top1_agreement:.1%}, int8 size {size:.2f}x")
    record.expect(4, f"{run.model}: ONNX top-1 agreement", report.parity.top1_agreement, ">=",
                  0.99, smoke=True)
    record.expect(4, f"{run.model}: int8 size / fp32 ONNX size", size, "<", 0.5)

# %%
record.save()
