"""MixUp, CutMix and TrivialAugment on whole batches (nbutils.torch_augment)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nbutils import torch_augment as ta  # noqa: E402
from nbutils import torch_data as td  # noqa: E402


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_trivial_augment_keeps_dtype_and_shape_and_differs_per_image() -> None:
    same = torch.randint(0, 256, (1, 16, 16, 3), dtype=torch.uint8).repeat(64, 1, 1, 1)
    out = ta.trivial_augment(same, _gen())
    assert out.dtype == torch.uint8 and out.shape == same.shape
    distinct = {bytes(img.numpy().tobytes()) for img in out}
    assert len(distinct) > 40                     # one image, many different versions
    assert (out == same).all(dim=(1, 2, 3)).sum() >= 1   # 'identity' keeps some unchanged
    again = ta.trivial_augment(same, _gen())
    assert torch.equal(out, again)                # seeded: reproducible
    with pytest.raises(ValueError, match="uint8"):
        ta.trivial_augment(same.float(), _gen())


def test_trivial_augment_operations_do_what_they_say() -> None:
    ramp = torch.arange(256, dtype=torch.uint8).view(1, 16, 16, 1).repeat(1, 1, 1, 3)
    op = lambda name: torch.tensor([ta._OPS.index(name)])  # noqa: E731
    s, plus = torch.tensor([0.5]), torch.tensor([1.0])
    x = ramp.permute(0, 3, 1, 2)
    solar = ta._tone(x, op("solarize"), s)
    assert torch.equal(solar[x < 128], x[x < 128]) and (solar[x >= 128] == 255 - x[x >= 128]).all()
    poster = ta._tone(x, op("posterize"), torch.tensor([4.0]))
    assert set(poster.unique().tolist()) <= set(range(0, 256, 16))
    bright = ta._colour(x.float(), op("brightness"), s, plus)
    assert torch.allclose(bright, (x.float() * 1.5).clamp(0, 255))
    moved = ta._affine(x.float(), op("translate_x"), torch.tensor([0.25]), plus)
    assert moved[0, 0, :, -4:].abs().max() == 0   # a quarter of the width moved out: empty
    torch.testing.assert_close(moved[0, 0, :, :12], x[0, 0, :, 4:].float())
    ident = ta._affine(x.float(), op("contrast"), s, plus)
    assert torch.allclose(ident, x.float(), atol=1e-3)   # not a geometric op: unchanged


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixed_targets_sum_to_one_and_follow_lambda(kind: str) -> None:
    mix = ta.BatchMix(mixup_alpha=0.4 if kind == "mixup" else 0.0,
                      cutmix_alpha=1.0 if kind == "cutmix" else 0.0)
    x = torch.randn(8, 3, 12, 12)
    y = torch.arange(8) % 4
    mixed, y_a, y_b, lam = mix(x, y, _gen(3))
    assert mixed.shape == x.shape and 0.0 <= lam <= 1.0 and torch.equal(y_a, y)
    targets = ta.soft_targets(y_a, y_b, lam, 4)
    torch.testing.assert_close(targets.sum(1), torch.ones(8))
    if kind == "cutmix":  # λ is the share of each image that is still its own
        kept = (mixed == x).all(dim=1).float().mean(dim=(1, 2))
        changed = y_b != y_a
        assert torch.allclose(kept[changed], torch.full_like(kept[changed], lam), atol=1e-6)


def test_cutmix_box_area_matches_lambda_inside_the_image() -> None:
    for lam in (0.1, 0.5, 0.9):
        areas = []
        for seed in range(200):
            top, left, bottom, right = ta.cutmix_box(lam, 32, 32, _gen(seed))
            assert 0 <= top <= bottom <= 32 and 0 <= left <= right <= 32
            areas.append((bottom - top) * (right - left) / 1024)
        # centred boxes have area 1 - λ; clipping at the border only makes them smaller
        assert max(areas) == pytest.approx(1 - lam, abs=0.05)
        assert np.mean(areas) <= 1 - lam + 0.02


def test_beta_draws_have_the_beta_mean_and_variance() -> None:
    g = _gen(0)
    for alpha in (0.2, 1.0, 2.0):
        draws = np.array([ta.BatchMix._beta(alpha, g, torch.device("cpu")) for _ in range(4000)])
        assert draws.mean() == pytest.approx(0.5, abs=0.03)
        assert draws.var() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.15)


def test_mixed_loss_is_the_lambda_weighted_cross_entropy() -> None:
    crit = torch.nn.CrossEntropyLoss()
    out, y, y2 = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1]), torch.tensor([1, 1, 0, 2, 0])
    soft = ta.soft_targets(y, y2, 0.3, 3)
    torch.testing.assert_close(ta.mixed_loss(crit, out, y, y2, 0.3), crit(out, soft))
    torch.testing.assert_close(ta.mixed_loss(crit, out, y, y2, 1.0), crit(out, y))


def test_the_loop_trains_with_every_switch(shapes_data) -> None:
    from nbutils import torch_models as tm
    from nbutils import torch_train as tt

    losses = {}
    for name, aug, cfg in [
        ("trivial", td.Augment(trivial=True), {}),
        ("mixup", td.Augment(), {"mixup_alpha": 0.2}),
        ("cutmix", td.Augment(), {"cutmix_alpha": 1.0}),
    ]:
        torch.manual_seed(0)
        model = tm.build_model(tm.AlexNetConfig(num_classes=6, widths=[8, 16, 16, 16, 16],
                                                fc_width=32, dropout=0.0))
        loaders = td.make_loaders(shapes_data, 16, mode="tensor", seed=1, augment=aug)
        result = tt.fit(model, loaders["train"], loaders["val"],
                        tt.TrainConfig(epochs=2, lr=0.02, num_threads=1, **cfg), progress=False)
        losses[name] = [h["train_loss"] for h in result.history]
        assert all(np.isfinite(losses[name]))
    assert losses["mixup"] != losses["cutmix"]
    with pytest.raises(Exception, match="mixup_alpha"):
        tt.TrainConfig(mixup_alpha=-1)


# --------------------------------------------------------------------- LR finder


def test_lr_find_restores_the_model_and_suggests_a_rate_before_divergence(shapes_data) -> None:
    from nbutils import torch_models as tm
    from nbutils.lr_finder import lr_find

    torch.manual_seed(0)
    model = tm.build_model(tm.AlexNetConfig(num_classes=6, widths=[8, 16, 16, 16, 16],
                                            fc_width=32, dropout=0.0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loaders = td.make_loaders(shapes_data, 16, mode="tensor", seed=1)
    untouched = td.make_loaders(shapes_data, 16, mode="tensor", seed=1)["train"]
    result = lr_find(model, loaders["train"], start_lr=1e-4, end_lr=50.0, num_steps=80,
                     autocast_dtype=torch.bfloat16)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the training after the test draws the batches it would have drawn without it
    (x_after, y_after), (x_fresh, y_fresh) = next(iter(loaders["train"])), next(iter(untouched))
    assert torch.equal(x_after, x_fresh) and torch.equal(y_after, y_fresh)
    assert result.diverged                         # 50 is far too large: it stopped early
    assert len(result.lrs) < 80 and np.all(np.diff(result.lrs) > 0)
    assert 1e-4 <= result.suggestion < result.lrs[int(np.argmin(result.losses))]
    assert result.losses[0] > result.losses.min()  # the loss did fall on the way
    result.plot()
    with pytest.raises(ValueError, match="start_lr"):
        lr_find(model, loaders["train"], start_lr=1.0, end_lr=0.1)


def test_lr_suggestions_on_a_known_curve() -> None:
    from nbutils.lr_finder import _suggest

    lrs = np.logspace(-5, 0, 50)
    x = np.log10(lrs)
    losses = 2.0 - 1.5 / (1 + np.exp(-4 * (x + 3))) + np.where(x > -1, 5 * (x + 1) ** 2, 0)
    r = _suggest(lrs, losses, diverged=False)
    assert r.steepest == pytest.approx(1e-3, rel=0.3)   # the sigmoid falls fastest at 10^-3
    assert r.min_over_10 < lrs[np.argmin(losses)]
