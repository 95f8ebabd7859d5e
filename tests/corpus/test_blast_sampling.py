"""BLAST long-tail merging, balanced draws, sample cutting and grid mixup (no UMAP involved)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from corpus.blast.config import BlastConfig
from corpus.blast.projection import grid_cells
from corpus.blast.sampling import (
    CATCH_ALL_CELL,
    CellIndex,
    balanced_draws,
    cut_sample,
    entropy_bits,
    longtail_merge,
    mixup,
    normalized_span,
    observed_span,
    plan_samples,
    window_starts,
)


def test_longtail_merge_follows_the_reference_rule() -> None:
    # 10,000 series over a 4 x 4 grid: shares 0.5, 0.4, 0.0994, 0.0004, 0.0002 (cells 3, 5, 7, 9, 11)
    cells = np.repeat([3, 5, 7, 9, 11], [5000, 4000, 994, 4, 2])
    tail = longtail_merge(cells, 4, 0.001)
    # ascending shares: 11 empty cells, 0.0002, 0.0004 (sum 0.0006), 0.0994 (sum > 0.001): minimal = 0.0994
    assert tail.minimal_prob == pytest.approx(0.0994)
    assert tail.cropped_cells == 2 and tail.catch_all_members == 6
    assert set(np.unique(tail.cells)) == {CATCH_ALL_CELL, 3, 5, 7}
    assert (tail.cells[cells == 9] == CATCH_ALL_CELL).all() and (tail.cells[cells == 7] == 7).all()
    # threshold 0: nothing is cropped
    assert longtail_merge(cells, 4, 0.0).cropped_cells == 0


def test_balanced_draws_are_uniform_over_cells_then_members() -> None:
    cells = np.repeat([0, 1, 2, 3], [9000, 900, 90, 10]).astype(np.int32)
    index = CellIndex.build(cells)
    draws = balanced_draws(index, 40_000, np.random.default_rng(1))
    per_cell = np.bincount(cells[draws], minlength=4)
    assert per_cell.sum() == 40_000
    np.testing.assert_allclose(per_cell / 40_000, 0.25, atol=0.01)  # the input shares were 0.9 ... 0.001
    # within the smallest cell every member is drawn about equally often
    small = np.bincount(draws[cells[draws] == 3] - 9990, minlength=10)
    assert small.min() > 0.6 * small.mean() and small.max() < 1.4 * small.mean()
    again = balanced_draws(index, 40_000, np.random.default_rng(1))
    np.testing.assert_array_equal(draws, again)


def test_anneal_moves_from_uniform_to_empirical() -> None:
    cells = np.repeat([0, 1], [9000, 1000]).astype(np.int32)
    index = CellIndex.build(cells)
    n = 20_000
    early = balanced_draws(index, n, np.random.default_rng(2), np.zeros(n))
    late = balanced_draws(index, n, np.random.default_rng(2), np.ones(n))
    assert abs(np.mean(cells[early] == 0) - 0.5) < 0.02
    assert abs(np.mean(cells[late] == 0) - 0.9) < 0.02


def test_spans_windows_and_padding() -> None:
    x = np.array([np.nan, 0.0, 1.0, np.nan, 3.0, 4.0, np.nan, np.nan], dtype=np.float32)
    assert observed_span(x) == (1, 6)
    assert observed_span(x, reproduce_offbyone=True) == (1, 5)
    span = normalized_span(x)
    finite = np.array([0.0, 1.0, 3.0, 4.0])
    expected = (np.array([0.0, 1.0, np.nan, 3.0, 4.0]) - finite.mean()) / finite.std()
    np.testing.assert_allclose(span, expected)
    assert len(normalized_span(x, reproduce_offbyone=True)) == 4
    padded = cut_sample(span, 0, 8)
    assert padded.dtype == np.float32 and np.isnan(padded[5:]).all()
    np.testing.assert_allclose(padded[:5], expected.astype(np.float32))
    long = np.arange(100.0)
    np.testing.assert_array_equal(cut_sample(long, 37, 10), np.arange(37.0, 47.0, dtype=np.float32))
    starts = window_starts(np.array([5, 100, 10, 11]), 10, np.random.default_rng(0))
    assert starts[0] == 0 and starts[2] == 0 and 0 <= starts[1] <= 90 and starts[3] in (0, 1)


def test_mixup_zscores_weights_and_keeps_padding_missing() -> None:
    a = np.r_[np.arange(6.0), np.nan, np.nan].astype(np.float32)
    b = np.r_[np.ones(3) * 5, np.nan, np.nan, np.nan, np.nan, np.nan].astype(np.float32)
    out = mixup(np.stack([a, b]), np.array([0.25, 0.75]))
    za = np.r_[np.arange(6.0), 0, 0]
    za = (za - za.mean()) / za.std()
    zb = np.r_[np.ones(3) * 5, np.zeros(5)]
    zb = (zb - zb.mean()) / zb.std()
    expected = 0.25 * za + 0.75 * zb
    expected[6:] = np.nan  # missing in both sources
    np.testing.assert_allclose(out, expected.astype(np.float32), rtol=1e-6)


def test_plan_samples_counts_and_weights() -> None:
    index = CellIndex.build(np.repeat([0, 5, 9], [50, 30, 20]).astype(np.int32))
    plan = plan_samples(index, 1000, 0.3, 3, 1.5, False, np.random.default_rng(3), np.random.default_rng(4))
    assert plan.is_mixup.sum() == 300
    assert (plan.k[~plan.is_mixup] == 1).all() and set(np.unique(plan.k[plan.is_mixup])) == {1, 2, 3}
    assert plan.n_slots == plan.k.sum() == len(plan.slot_series)
    sums = np.add.reduceat(plan.slot_weight, plan.offsets[:-1])
    np.testing.assert_allclose(sums, 1.0)
    assert (plan.slot_weight[plan.offsets[:-1][~plan.is_mixup]] == 1.0).all()


def test_grid_cells_and_entropy() -> None:
    coords = np.array([[0.0, 0.0], [1.0, 1.0], [0.5, 0.25], [1.3, -0.2]])
    assert grid_cells(coords, 100).tolist() == [0, 99 * 100 + 99, 49 * 100 + 24, 99 * 100 + 0]
    assert entropy_bits(np.array([5, 5, 5, 5, 0])) == pytest.approx(2.0)
    assert entropy_bits(np.array([7])) == 0.0


def test_config_is_strict() -> None:
    with pytest.raises(ValidationError):
        BlastConfig(unknown=1)
    with pytest.raises(ValidationError, match="shard_rows"):
        BlastConfig(shard_rows=1_000_000, sample_length=4096)
    cfg = BlastConfig(workers=4)
    assert "workers" not in cfg.fingerprint() and cfg.fingerprint() == BlastConfig(workers=1).fingerprint()
