# %% [markdown]
# # Solutions · 01 Exploring the data
#
# Run as a script (`python solutions/01_eda.py --profile cpu --dataset imagefolder:PATH`)
# or from a notebook cell with `%run`. Each exercise prints what it measured and
# whether the lesson's expected outcome held; the record goes to `outputs/solutions/`.

# %%
import numpy as np

import nbutils
from nbutils import eda, exercises
from nbutils.data import channel_stats, load_for

args = exercises.parse_args()
cfg = nbutils.setup(args.profile, model="eda", dataset=args.dataset, verbose=False)
record = exercises.SolutionRecord("01_eda", cfg, __file__)
data = load_for(cfg, progress=False)
print(data.summary())

# %% [markdown]
# ## 1 · Near duplicates at distance 0, the default and 10
#
# A pair found at a small distance is also found at any larger one, so the list can
# only grow; the new pairs at 10 are where different photographs start to be listed.

# %%
pairs = {d: eda.find_duplicates(data, max_distance=d, progress=False).pairs
         for d in (0, cfg.model.near_duplicate_distance, 10)}
for d, df in pairs.items():
    kinds = df["kind"].value_counts().to_dict() if len(df) else {}
    print(f"max_distance {d:>2}: {len(df):>4} pairs {kinds}")
record.note(pairs_by_distance={str(d): len(df) for d, df in pairs.items()})
record.expect(1, "pairs at distance 10 >= pairs at distance 0", len(pairs[10]), ">=",
              len(pairs[0]), smoke=True)
record.expect(1, "pairs at distance 10 > pairs at distance 0 (the list grows)",
              len(pairs[10]), ">", len(pairs[0]))

# %% [markdown]
# ## 2 · 64-pixel images
#
# Four times the pixels, so four times the cache; resizing barely moves the average
# colour.

# %%
big_cfg = nbutils.setup(args.profile, model="eda", dataset=args.dataset, image_size=64,
                        verbose=False)
big = load_for(big_cfg, progress=False)
ratio = big.train.images.nbytes / data.train.images.nbytes
shift = float(np.abs(np.asarray(big.mean) - np.asarray(data.mean)).max())
print(f"{data.image_size} px: {data.train.images.nbytes / 2**20:.1f} MiB, "
      f"{big.image_size} px: {big.train.images.nbytes / 2**20:.1f} MiB ({ratio:.2f}x); "
      f"largest change of a channel mean {shift:.4f}")
record.expect(2, "same number of training images", len(big.train), "==", len(data.train),
              smoke=True)
record.expect(2, "cache size ratio 64 px / 32 px", ratio, ">=", 3.99, smoke=True)
record.expect(2, "largest change of a channel mean", shift, "<", 0.01)

# %% [markdown]
# ## 3 · Statistics of the test split

# %%
test_mean, _ = channel_stats(data.test.images)
gap = float(np.abs(test_mean - np.asarray(data.mean)).max())
print(f"training mean {np.round(data.mean, 4)}, test mean {np.round(test_mean, 4)}: "
      f"largest gap {gap:.4f}")
record.expect(3, "largest gap between test and training channel means", gap, "<", 0.02)

# %%
record.save()
