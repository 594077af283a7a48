# %% [markdown]
# # Solutions · 05 Comparing the models
#
# Run after the training notebooks (02-04) for the same profile and dataset, as a script
# (`python solutions/05_comparison.py --profile cpu --dataset imagefolder:PATH`) or
# from a notebook cell with `%run`.

# %%
import numpy as np

import nbutils
from nbutils import compare, exercises, metrics
from nbutils.compare.speed import time_calls
from nbutils.data import load_for
from nbutils.inference import load_classifier

args = exercises.parse_args()
cfg = nbutils.setup(args.profile, model="comparison", dataset=args.dataset, verbose=False)
record = exercises.SolutionRecord("05_comparison", cfg, __file__)
runs = compare.load_runs(cfg.outputs_dir, cfg.dataset, cfg.profile)
if len(runs.runs) < 2:
    raise SystemExit(f"Need at least two trained models for {cfg.dataset} / {cfg.profile}; "
                     f"run the course first (make course PROFILE={cfg.profile}).")
print(runs.summary())

# %% [markdown]
# ## 1 · Timing noise and warm-up
#
# Time the fastest model's batch-1 call 50 times right after loading it (after only 5
# untimed calls), then 200 more times. The first calls of a freshly loaded model still
# pay one-off costs (memory allocation, caches, the CPU's clock settling).

# %%
data = load_for(cfg, progress=False)
fastest = min(runs.runs, key=lambda r: r.record.extra.get("flops_per_image", np.inf))
clf = load_classifier(fastest.record.artifacts["model"])
one = data.test.images[:1]
times = {n: time_calls(lambda: clf.predict_proba(one, batch_size=1), n, warmup=5)
         for n in (50, 200)}
for n, t in times.items():
    print(f"{fastest.label}, {n} calls: median {np.median(t) * 1e3:.2f} ms, "
          f"slowest {t.max() * 1e3:.2f} ms")
record.note(median_ms={n: float(np.median(t) * 1e3) for n, t in times.items()},
            slowest_ms={n: float(t.max() * 1e3) for n, t in times.items()})
record.expect(1, "median of the first 50 calls / median of the next 200",
              float(np.median(times[50]) / np.median(times[200])), ">", 1.0)

# %% [markdown]
# ## 2 · How big must the test set be?
#
# The two closest models; the smallest test set at which their 95 % Wilson intervals
# no longer overlap (same accuracies, more images).

# %%
accs = sorted((r.record.test.accuracy, r.label) for r in runs.runs)
pairs = zip(accs[:-1], accs[1:], strict=True)
(a_low, low), (a_high, high) = min(pairs, key=lambda p: p[1][0] - p[0][0])


def separated(n: int) -> bool:
    """Whether the intervals of the two accuracies on n images are disjoint."""
    return compare.wilson_interval(round(a_low * n), n)[1] < \
        compare.wilson_interval(round(a_high * n), n)[0]


needed = next((n for n in np.unique(np.geomspace(10, 10 ** 7, 4000).astype(int))
               if separated(n)), 10 ** 7)
print(f"closest pair: {low} {a_low:.3f} and {high} {a_high:.3f} (difference "
      f"{a_high - a_low:.3f}); their intervals separate from {needed:,} test images "
      f"(this test set has {len(data.test):,})")
record.note(closest_pair=[low, high], difference=a_high - a_low, images_needed=int(needed))
if a_high - a_low > 0:
    record.expect(2, "test images needed / test images available", needed / len(data.test),
                  ">", 1.0)

# %% [markdown]
# ## 3 · Weighted ensembles
#
# Weight each model by its **validation** accuracy. Compare with the equal-weight mean.

# %%
usable = [r for r in runs.runs if r.val_probs is not None]
weights = [float((r.val_probs.argmax(1) == r.val_labels).mean()) for r in usable]
labels = usable[0].labels
equal = metrics.ensemble_probabilities([r.probs for r in usable])
weighted = metrics.ensemble_probabilities([r.probs for r in usable], weights=weights)
acc = {name: float((p.argmax(1) == labels).mean())
       for name, p in (("equal", equal), ("weighted", weighted))}
print("validation accuracies (the weights):",
      {r.label: round(w, 3) for r, w in zip(usable, weights, strict=True)})
print(f"test accuracy: equal weights {acc['equal']:.3f}, weighted {acc['weighted']:.3f}")
record.expect(3, "|weighted - equal-weight ensemble test accuracy|",
              abs(acc["weighted"] - acc["equal"]), "<=", 0.01)

# %%
record.save()
