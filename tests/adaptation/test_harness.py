"""The STA harness: windows, seasonal naive, chunked metrics, a few-shot run end to end with its outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from adaptation.config import AdaptConfig
from adaptation.datasets import SpatioTemporalDataset, make_synthetic_benchmark
from adaptation.harness import (
    MetricAccumulator,
    SeasonalNaive,
    run_adaptation,
    seasonal_naive_point,
    seasonal_period,
)
from adaptation.metrics import evaluate
from adaptation.windows import SeriesArrays, evaluation_starts, make_windows, training_starts

LEVELS = (0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99)


def test_seasonal_naive_hand_computed() -> None:
    # T = 8 steps, 2 nodes, season 3; node 1 has a missing value at step 2.
    data = np.array([[0, 10], [1, 11], [2, np.nan], [3, 13], [4, 14], [5, 15], [6, 16], [7, 17]], dtype=float)
    pred = seasonal_naive_point(data, np.array([1]), input_len=3, output_len=4, season=3)
    # window input = steps 1..3, targets = steps 4..7; h=0..2 read steps 1,2,3; h=3 reads 7-6 = step 1
    assert pred[0, :, 0].tolist() == [1, 2, 3, 1]
    # node 1: step 2 is missing -> falls back to the last observed input value (step 3: 13)
    assert pred[0, :, 1].tolist() == [11, 13, 13, 11]
    # season 1 is the naive forecast: the last input value for every step
    assert seasonal_naive_point(data, np.array([0]), 2, 3, 1)[0, :, 0].tolist() == [1, 1, 1]
    assert seasonal_period("5min") == 288 and seasonal_period("h") == 24 and seasonal_period("D") == 1


def test_seasonal_naive_quantiles_bracket_the_point() -> None:
    ds = make_synthetic_benchmark("synthetic-grid", num_nodes=3, num_steps=24 * 7 * 6)
    arrays = SeriesArrays.from_dataset(ds)
    train = make_windows(arrays, slice(0, 600), 24, 12, "train")
    naive = SeasonalNaive(24, LEVELS)
    naive.calibrate(train)
    assert naive.offsets is not None and naive.offsets.shape == (12, 11)
    assert np.all(naive.offsets[:, 5] == 0) and np.all(np.diff(naive.offsets, axis=1) >= 0)
    q = naive(train, np.arange(4))
    torch.testing.assert_close(
        torch.from_numpy(q[..., 5]), torch.from_numpy(naive.point(train, np.arange(4)))
    )


def test_metric_accumulator_equals_evaluate_on_the_whole() -> None:
    rng = np.random.default_rng(0)
    q = np.sort(rng.normal(size=(10, 4, 3, 11)), axis=-1) * 5 + 20
    y = rng.normal(size=(10, 4, 3)) * 5 + 20
    y[rng.random(y.shape) < 0.2] = 0.0  # traffic-style nulls
    mask = rng.random(y.shape) > 0.1
    whole = evaluate(q, y, LEVELS, "zero", mask)
    acc = MetricAccumulator(LEVELS, "zero")
    for lo, hi in ((0, 3), (3, 4), (4, 10)):
        acc.add(q[lo:hi], y[lo:hi], mask[lo:hi])
    got = acc.result()
    for key in ("mae", "rmse", "mape", "crps", "wql", "coverage_80", "coverage_98", "observed"):
        assert got[key] == pytest.approx(whole[key], rel=1e-12), key
    for key in ("mae", "rmse", "mape"):
        assert got["per_horizon"][key] == pytest.approx(whole["per_horizon"][key], rel=1e-12)


def test_windows_follow_the_split_conventions() -> None:
    assert training_starts(slice(10, 40), 12, 12).tolist() == list(range(10, 17))
    assert evaluation_starts(slice(40, 60), 12, 12).tolist() == list(range(28, 37))
    values = np.arange(60 * 2, dtype=np.float32).reshape(60, 2) + 1
    values[5, 1] = 0.0  # a traffic null
    ds = SpatioTemporalDataset(
        name="tiny",
        values=values,
        timestamps=None,
        freq="5min",
        adjacency=None,
        node_ids=["a", "b"],
        null_value="zero",
        split="6:2:2",
    )
    arrays = SeriesArrays.from_dataset(ds)
    mean, std = arrays.scaler.mean[0], arrays.scaler.std[0]
    windows = make_windows(arrays, ds.splits()["test"], 4, 3, "test")
    batch = windows.batch([0])
    start = int(windows.starts[0])
    assert start + 4 == ds.splits()["test"].start
    np.testing.assert_allclose(batch.x[0].numpy(), (values[start : start + 4] - mean) / std, rtol=1e-5)
    assert batch.calendar.shape == (1, 7, 3)
    assert batch.calendar[0, :, 1].tolist() == list(range(start, start + 7))  # time_of_day from the index
    early = make_windows(arrays, slice(0, 20), 4, 3, "train").batch([2])
    assert math.isnan(float(early.x[0, 3, 1]))  # the 0 reading at step 5 reaches the model as NaN
    with pytest.raises(ValueError, match="too short"):
        make_windows(arrays, slice(0, 5), 4, 3, "train", name="tiny")


def test_few_shot_improves_on_zero_shot_and_writes_outputs(checkpoint: str, tmp_path: Path) -> None:
    ds = make_synthetic_benchmark("synthetic-grid", num_nodes=4)  # hourly: the few-shot slice spans ~10 days
    cfg = AdaptConfig(
        modes=("zero", "few"),
        baselines=("seasonal_naive",),
        horizons=((24, 12),),
        batch_size=16,
        max_steps=9,
        eval_every_steps=3,
        patience=10,
        lr=3e-3,
        backbone_lr=3e-4,
        max_val_windows=32,
        eval_stride=8,
        predictions_max_windows=1000,  # keep every test window, so the saved file reproduces the metrics
    )
    result = run_adaptation(checkpoint, ds, cfg, str(tmp_path))
    rows = {(r["method"], r["mode"]): r for r in result["rows"]}
    assert set(rows) == {("factost", "zero"), ("factost", "few"), ("seasonal_naive", "-")}
    zero, few = rows[("factost", "zero")], rows[("factost", "few")]
    assert few["val_loss"] < 0.8 * zero["val_loss"], (few["val_loss"], zero["val_loss"])
    assert few["mae"] < zero["mae"]
    assert zero["trainable_params"] == 0 and few["trainable_params"] == few["total_params"] > 2_510_192
    for name in ("zero-24to12", "few-24to12", "seasonal_naive-24to12"):
        folder = tmp_path / "synthetic-grid" / name
        doc = json.loads((folder / "metrics.json").read_text())
        for key in ("mae", "rmse", "mape", "crps", "coverage_80", "coverage_98"):
            assert math.isfinite(doc["metrics"][key]), (name, key)
            assert math.isfinite(doc["metrics_normalized"][key]), (name, key)
        assert doc["metrics"]["observed"] > 0 and doc["inference_time_s"] >= 0
        assert 0.0 <= doc["metrics"]["coverage_98"] <= 1.0
        preds = np.load(folder / "predictions.npz")
        n_test = doc["test_windows"]
        assert preds["quantiles"].shape == (n_test, 12, 4, 11) and preds["target"].shape == (n_test, 12, 4)
        again = evaluate(preds["quantiles"], preds["target"], LEVELS, "nan", preds["observed"])
        assert again["mae"] == pytest.approx(doc["metrics"]["mae"], rel=1e-5)
        assert again["crps"] == pytest.approx(doc["metrics"]["crps"], rel=1e-5)
        assert (folder / "forecast.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "synthetic-grid" / "results.md").read_text()
    assert "seasonal_naive" in table and (tmp_path / "synthetic-grid" / "results.csv").exists()
    # normalised metrics are on the per-node train z-score (the LTSF convention)
    preds = np.load(tmp_path / "synthetic-grid" / "few-24to12" / "predictions.npz")
    std = np.asarray(SeriesArrays.from_dataset(ds).scaler.std)
    err = np.abs(preds["quantiles"][..., 5] - preds["target"]) / std
    assert few["norm_mae"] == pytest.approx(err[preds["observed"]].mean(), rel=1e-4)
