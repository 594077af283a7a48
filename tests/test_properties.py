"""Property-based tests: invariants that must hold for any input hypothesis can find."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from nbutils.data.sources import to_rgb
from nbutils.data.specs import DatasetError, parse_spec
from nbutils.data.split import stratified_split
from nbutils.records import RunRecord
from nbutils.records import TestMetrics as Metrics

counts = st.lists(st.integers(1, 40), min_size=2, max_size=6)
fractions = st.floats(0.05, 0.6)


@settings(max_examples=60, deadline=None)
@given(counts, fractions, fractions, st.integers(0, 2 ** 31 - 1))
def test_split_is_disjoint_complete_stratified_and_fixed_by_the_seed(
        per_class: list[int], val: float, test: float, seed: int) -> None:
    labels = np.repeat(np.arange(len(per_class)), per_class)
    pools = np.zeros(len(labels), np.int8)
    a = stratified_split(labels, pools, seed, val, test)
    assert all(np.array_equal(a[k], v)
               for k, v in stratified_split(labels, pools, seed, val, test).items())
    parts = [set(a[k].tolist()) for k in ("train", "val", "test")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set().union(*parts) == set(range(len(labels)))
    for cls, n in enumerate(per_class):
        in_train = int((labels[a["train"]] == cls).sum())
        assert in_train >= 1                          # every class can be learned
        n_test = int((labels[a["test"]] == cls).sum())
        assert abs(n_test - n * test) <= max(1.0, 0.5 + (n == 1))  # its share, rounded


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=30))
def test_parse_spec_accepts_or_refuses_clearly(text: str) -> None:
    try:
        spec = parse_spec(text)
    except DatasetError as exc:
        assert str(exc)
        return
    assert spec.kind in ("cifar10", "cifar100", "imagefolder", "shapes")
    assert parse_spec(spec.text) == spec                    # parsing is stable
    assert spec.slug and all(c.isalnum() or c in "-_." for c in spec.slug)


modes = st.sampled_from(["1", "L", "P", "RGB", "RGBA", "LA", "I", "I;16", "F", "CMYK"])


@settings(max_examples=60, deadline=None)
@given(modes, st.integers(1, 9), st.integers(1, 9), st.integers(0, 2 ** 32 - 1))
def test_any_image_mode_becomes_rgb_of_the_same_size(mode: str, w: int, h: int,
                                                     seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    img = base.convert(mode) if mode not in ("I;16",) else base.convert("I").convert(mode)
    rgb = to_rgb(img)
    assert rgb.mode == "RGB" and rgb.size == (w, h)
    assert np.asarray(rgb).dtype == np.uint8


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 5), st.lists(st.floats(0, 10, allow_nan=False), max_size=4),
       st.text(min_size=1, max_size=12), st.floats(0, 1e4, allow_nan=False))
def test_record_round_trips_through_json(k: int, losses: list[float], model: str,
                                         seconds: float) -> None:
    import json

    cm = np.eye(k, dtype=int).tolist()
    record = RunRecord(
        notebook="02_pytorch_alexnet", framework="pytorch", model=model, dataset="shapes",
        profile="smoke", seed=1, config={"a": [1, 2]}, class_names=[f"c{i}" for i in range(k)],
        num_params=3, train_seconds=seconds,
        history=[{"epoch": i + 1, "train_loss": v} for i, v in enumerate(losses)],
        test=Metrics(1.0, 1.0, 1.0, 1.0, cm), peak_memory_mb={"host_rss": 1.0},
        library_versions={}, device={})
    back = RunRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert back == record
