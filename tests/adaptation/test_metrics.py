"""Metrics on hand-computed cases: masked zeros and NaN, pinball, CRPS of a known distribution, coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from adaptation.metrics import (
    crps_from_quantiles,
    evaluate,
    interval_coverage,
    masked_mae,
    masked_mape,
    masked_rmse,
    pinball_loss,
    weighted_quantile_loss,
)

PRED = np.array([1.0, 2.0, 3.0, 4.0])
TARGET = np.array([0.0, 2.0, np.nan, 5.0])


def test_zero_null_ignores_zeros_and_nan() -> None:
    # observed: 2 -> 2 (error 0) and 5 -> 4 (error 1)
    assert masked_mae(PRED, TARGET, "zero") == pytest.approx(0.5)
    assert masked_rmse(PRED, TARGET, "zero") == pytest.approx(math.sqrt(0.5))
    assert masked_mape(PRED, TARGET, "zero") == pytest.approx(10.0)  # percent: |4 - 5| / 5 / 2


def test_nan_null_keeps_zero_targets_but_mape_skips_them() -> None:
    # observed: 0 -> 1 (1), 2 -> 2 (0), 5 -> 4 (1)
    assert masked_mae(PRED, TARGET, "nan") == pytest.approx(2 / 3)
    assert masked_rmse(PRED, TARGET, "nan") == pytest.approx(math.sqrt(2 / 3))
    assert masked_mape(PRED, TARGET, "nan") == pytest.approx(10.0)  # the 0 target has no percentage error


def test_matches_basicts_mask_weighting() -> None:
    rng = np.random.default_rng(3)
    target = rng.uniform(1, 10, size=(8, 12, 5))
    target[rng.uniform(size=target.shape) < 0.3] = 0.0
    pred = target + rng.normal(size=target.shape)
    mask = (target != 0).astype(float)
    mask /= mask.mean()  # BasicTS: loss = mean(|p - y| * mask / mean(mask))
    basicts = float(np.mean(np.abs(pred - target) * mask))
    assert masked_mae(pred, target, "zero") == pytest.approx(basicts, rel=1e-12)
    # BasicTS masked_mape is the same weighting of |p - y| / |y|, a fraction; ours is that in percent
    basicts_mape = float(np.mean(np.nan_to_num(np.abs(pred - target) / np.abs(target)) * mask))
    assert masked_mape(pred, target, "zero") == pytest.approx(100 * basicts_mape, rel=1e-12)


def test_bad_predictions_and_empty_targets() -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        masked_mae(np.array([np.nan, 1.0]), np.array([1.0, 1.0]))
    # a NaN prediction where the target is missing does not matter
    assert masked_mae(np.array([np.nan, 1.0]), np.array([0.0, 2.0]), "zero") == pytest.approx(1.0)
    assert math.isnan(masked_mae(np.ones(3), np.zeros(3), "zero"))
    with pytest.raises(ValueError, match="shape"):
        masked_rmse(np.ones(3), np.ones(4))


def test_pinball_by_hand() -> None:
    losses = pinball_loss(np.array([[0.0, 2.0]]), np.array([1.0]), [0.1, 0.9])
    # tau 0.1, y - q = 1 -> 0.1; tau 0.9, y - q = -1 -> 0.1
    np.testing.assert_allclose(losses, [[0.1, 0.1]])
    losses = pinball_loss(np.array([[2.0, 0.0]]), np.array([1.0]), [0.1, 0.9])
    np.testing.assert_allclose(losses, [[0.9, 0.9]])
    with pytest.raises(ValueError, match="increasing"):
        pinball_loss(np.zeros((1, 2)), np.zeros(1), [0.9, 0.1])


def test_crps_of_point_forecast_is_mae() -> None:
    levels = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]  # symmetric: mean level 0.5
    point = np.array([1.0, 3.0, 5.0])
    target = np.array([2.0, 1.0, 5.5])
    quantiles = np.repeat(point[:, None], len(levels), axis=1)
    assert crps_from_quantiles(quantiles, target, levels) == pytest.approx(np.abs(point - target).mean())


def test_crps_of_gaussian_matches_closed_form() -> None:
    levels = (np.arange(1000) + 0.5) / 1000
    y = np.array([-1.5, 0.0, 0.7, 2.0])
    quantiles = np.broadcast_to(norm.ppf(levels), (len(y), len(levels)))
    closed = y * (2 * norm.cdf(y) - 1) + 2 * norm.pdf(y) - 1 / math.sqrt(math.pi)  # CRPS(N(0,1), y)
    for i in range(len(y)):
        assert crps_from_quantiles(quantiles[i : i + 1], y[i : i + 1], levels) == pytest.approx(closed[i], abs=2e-3)


def test_crps_and_coverage_on_samples_of_the_forecast_distribution() -> None:
    y = np.random.default_rng(0).standard_normal(20_000)
    levels = np.round(np.arange(1, 100) / 100, 2)
    quantiles = np.broadcast_to(norm.ppf(levels), (len(y), len(levels)))
    # E[CRPS(F, y)] for y ~ F = N(0, 1) is 1 / sqrt(pi)
    assert crps_from_quantiles(quantiles, y, levels) == pytest.approx(1 / math.sqrt(math.pi), abs=0.015)
    lo, hi = norm.ppf(0.1), norm.ppf(0.9)
    assert interval_coverage(np.full_like(y, lo), np.full_like(y, hi), y) == pytest.approx(0.8, abs=0.01)


def test_weighted_quantile_loss_by_hand() -> None:
    # median only: pinball 0.5 * |error| -> 0.5 + 0.5; wql = 2 * 1 / (2 + 4)
    value = weighted_quantile_loss(np.array([[1.0], [5.0]]), np.array([2.0, 4.0]), [0.5])
    assert value == pytest.approx(1 / 3)


def test_evaluate_full_report() -> None:
    rng = np.random.default_rng(1)
    samples, horizon, nodes = 50, 4, 6
    levels = [0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99]
    target = rng.normal(10, 1, size=(samples, horizon, nodes))
    target[0, 0, :] = 0.0  # missing readings (traffic convention)
    quantiles = 10 + norm.ppf(levels)[None, None, None, :] * np.ones((samples, horizon, nodes, 1))
    report = evaluate(quantiles, target, levels, null_value="zero")
    point = quantiles[..., 5]
    keep = target != 0
    assert report["observed"] == keep.sum() == samples * horizon * nodes - nodes
    assert report["mae"] == pytest.approx(np.abs(point - target)[keep].mean())
    assert report["rmse"] == pytest.approx(np.sqrt(np.square(point - target)[keep].mean()))
    assert report["mape"] == pytest.approx(100 * np.abs((point - target)[keep] / target[keep]).mean())  # percent
    assert 0.7 < report["coverage_80"] < 0.9 and 0.95 < report["coverage_98"] <= 1.0
    assert report["crps"] < report["mae"]  # a calibrated spread beats its own median
    assert len(report["per_horizon"]["mae"]) == horizon
    h0 = np.abs(point[:, 0] - target[:, 0])[keep[:, 0]].mean()
    assert report["per_horizon"]["mae"][0] == pytest.approx(h0)
    with pytest.raises(ValueError, match="0.5 quantile"):
        evaluate(quantiles[..., :2], target, levels[:2])
    with pytest.raises(ValueError, match=r"\[S, H, N, Q\]"):
        evaluate(quantiles[0], target[0], levels)
