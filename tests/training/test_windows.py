"""Pretraining windows: crop, rejection, random sequence masking, z-clip, collate, whole batches."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import real_data
from training.windows import (
    WindowConfig,
    build_batch,
    collate,
    draw_num_future_patches,
    random_sequence_mask,
    sample_window,
    zscore_clip_outliers,
)


def test_sample_window_long_series_is_a_contiguous_crop() -> None:
    series = np.arange(3000, dtype=np.float64)
    context, target = sample_window(series, np.random.default_rng(0), 2048, 64)
    assert context.shape == (2048,) and target.shape == (64,)
    assert context.dtype == np.float32 and target.dtype == np.float32
    assert np.all(np.diff(np.concatenate([context, target])) == 1)  # one contiguous slice
    assert (context[0], context[-1], target[0]) == (756.0, 2803.0, 2804.0)  # pinned offset for seed 0
    starts = {int(sample_window(series, np.random.default_rng(s), 2048, 64)[0][0]) for s in range(50)}
    assert len(starts) > 40 and min(starts) >= 0 and max(starts) <= 3000 - 2048 - 64


def test_sample_window_short_series_keeps_all_history_and_pads_the_target() -> None:
    series = np.arange(30, dtype=np.float64)
    for seed in range(20):
        context, target = sample_window(series, np.random.default_rng(seed), 256, 64)
        split = context.size
        assert 1 <= split <= 29
        np.testing.assert_array_equal(context, np.arange(split))
        np.testing.assert_array_equal(target[: 30 - split], np.arange(split, 30))
        assert np.isnan(target[30 - split :]).all() and target.shape == (64,)
    assert sample_window(np.array([1.0]), np.random.default_rng(0), 16, 16) is None  # no room for a target


def test_sample_window_rejects_mostly_missing_windows() -> None:
    rng = np.random.default_rng(0)
    series = np.arange(100, dtype=np.float64)
    sparse = series.copy()
    sparse[np.arange(100) % 5 < 3] = np.nan  # 40% observed
    assert sample_window(sparse, rng, 64, 36) is None
    dense = series.copy()
    dense[np.arange(100) % 5 < 2] = np.nan  # 60% observed
    assert sample_window(dense, rng, 64, 36) is not None
    assert sample_window(sparse, rng, 64, 36, min_observed=0.3) is not None  # the threshold is an argument
    no_target = series.copy()
    no_target[64:] = np.nan
    assert sample_window(no_target, rng, 64, 36) is None  # nothing to learn from


def test_random_sequence_mask_keeps_at_least_l_min_observed_points() -> None:
    values = np.arange(2048, dtype=np.float32)
    gappy = values.copy()
    gappy[1900:2040] = np.nan  # only 8 observed points at the very end of the last 148
    kept_lengths = []
    for seed in range(300):
        rng = np.random.default_rng(seed)
        masked = random_sequence_mask(values, rng, max_context=2048, l_min=48)
        n_nan = int(np.isnan(masked).sum())
        assert np.isnan(masked[:n_nan]).all() and not np.isnan(masked[n_nan:]).any()  # a prefix only
        kept_lengths.append(2048 - n_nan)
        assert np.isfinite(random_sequence_mask(gappy, rng, 2048, 48)).sum() >= 48
    assert min(kept_lengths) >= 48
    assert np.mean(kept_lengths) == pytest.approx((48 + 2048) / 2, rel=0.1)  # uniform in [48, 2048]
    # pinned draw: seed 1 masks 946 points
    assert np.isnan(random_sequence_mask(values, np.random.default_rng(1))).sum() == 946
    short = np.arange(30, dtype=np.float32)  # shorter than l_min: never masked
    assert not np.isnan(random_sequence_mask(short, np.random.default_rng(0))).any()
    np.testing.assert_array_equal(values, np.arange(2048))  # the input is not modified


def test_zscore_clip_sets_outliers_to_nan() -> None:
    context = np.array([1.0, 2.0, 3.0, 4.0, 5.0, np.nan, 1000.0] + [3.0] * 93)
    target = np.array([3.0, 1e6, np.nan, -1e6, 4.0])
    c, t = zscore_clip_outliers(context, target, z=4.0)
    obs = context[np.isfinite(context)]
    mean, std = obs.mean(), obs.std()
    assert np.isnan(c[6]) and np.isnan(c[5])  # 1000 is ~9.9 sigma away
    np.testing.assert_allclose(c[:5], (context[:5] - mean) / std, rtol=1e-6)
    assert np.isnan(t[1]) and np.isnan(t[2]) and np.isnan(t[3])
    np.testing.assert_allclose(t[[0, 4]], (target[[0, 4]] - mean) / std, rtol=1e-6)
    c_all, _ = zscore_clip_outliers(context, target, z=None)
    assert np.isfinite(c_all[6])  # z=None only scales
    empty_c, empty_t = zscore_clip_outliers(np.full(4, np.nan), target)
    assert np.isnan(empty_c).all() and np.isnan(empty_t).all()


def test_zscore_keeps_small_variations_of_large_offsets() -> None:
    context = 1e9 + np.array([0.0, 1.0, 2.0, 3.0])
    c, _ = zscore_clip_outliers(context, np.array([4.0 + 1e9]))
    np.testing.assert_allclose(c, (np.arange(4) - 1.5) / np.std(np.arange(4)), rtol=1e-6)


def test_draw_num_future_patches_is_uniform_over_1_to_16() -> None:
    rng = np.random.default_rng(0)
    draws = [draw_num_future_patches(rng) for _ in range(3200)]
    assert set(draws) == set(range(1, 17))
    assert np.bincount(draws)[1:].min() > 150


def test_collate_pads_left_and_right_to_whole_patches() -> None:
    windows = [
        (np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0])),
        (np.arange(20.0), np.arange(20.0, 37.0)),
    ]
    context, target = collate(windows, patch_size=16)
    assert context.shape == (2, 32) and target.shape == (2, 32)
    assert context.dtype == np.float32 and target.dtype == np.float32
    assert np.isnan(context[0, :29]).all()
    np.testing.assert_array_equal(context[0, 29:], [1, 2, 3])
    np.testing.assert_array_equal(context[1, 12:], np.arange(20))
    assert np.isnan(context[1, :12]).all()
    np.testing.assert_array_equal(target[0, :2], [4, 5])
    assert np.isnan(target[0, 2:]).all()
    np.testing.assert_array_equal(target[1, :17], np.arange(20, 37))
    with pytest.raises(ValueError, match="at least one window"):
        collate([])


def test_build_batch_pinned_for_a_fixed_seed() -> None:
    series = [np.sin(np.arange(n) / 5) * n for n in (30, 500, 3000)]
    context, target = build_batch(series, np.random.default_rng(2), WindowConfig(context_length=256))
    assert context.shape == (3, 256) and target.shape == (3, 224)  # 14 patches drawn
    assert np.isnan(context).sum(axis=1).tolist() == [248, 86, 94]
    np.testing.assert_allclose(np.nanmean(target, axis=1), [-1.3047478, -0.00869677, -0.01993618], rtol=1e-5, atol=1e-6)
    assert build_batch([np.full(100, np.nan)], np.random.default_rng(0)) is None


def test_build_batch_on_real_m4_hourly_series() -> None:
    import pandas as pd

    frame = pd.read_csv(real_data("m4", "Hourly-train.csv"), index_col=0, nrows=32)
    series = [row.dropna().to_numpy(dtype=np.float64) for _, row in frame.iterrows()]
    cfg = WindowConfig(context_length=512)
    context, target = build_batch(series, np.random.default_rng(0), cfg)
    assert context.shape[0] == 32 and context.shape[1] % 16 == 0 and target.shape[1] % 16 == 0
    assert (np.isfinite(context).sum(axis=1) >= cfg.l_min).all()
    finite = np.concatenate([context[np.isfinite(context)], target[np.isfinite(target)]])
    assert np.abs(finite).max() <= cfg.z_clip  # z-scored and clipped
