"""The synthetic spatio-temporal benchmark has the structure it promises, deterministically."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from adaptation.datasets import SYNTHETIC_PRESETS, SyntheticConfig, make_synthetic_benchmark, resolve_benchmark


@pytest.fixture(scope="module")
def traffic():
    return make_synthetic_benchmark("synthetic-traffic")


def _frame(dataset) -> pd.DataFrame:
    return pd.DataFrame(np.where(dataset.mask(), dataset.values, np.nan))


def _edge_masks(dataset) -> tuple[np.ndarray, np.ndarray]:
    eye = np.eye(dataset.num_nodes, dtype=bool)
    edges = (dataset.adjacency > 0) & ~eye
    return edges, ~edges & ~eye


def test_presets_shape_and_conventions(traffic) -> None:
    assert traffic.values.shape == (8064, 40) and traffic.freq == "5min" and traffic.null_value == "zero"
    assert traffic.timestamps[0] == np.datetime64("2024-01-01T00:00") and traffic.calendar["day_of_week"][0] == 0
    assert traffic.calendar_vocab == {"minute_of_hour": 60, "time_of_day": 288, "day_of_week": 7}
    assert np.allclose(traffic.adjacency, traffic.adjacency.T) and np.all(np.diag(traffic.adjacency) == 1)
    zeros = traffic.values == 0
    assert 0.001 < zeros.mean() < 0.004 and (traffic.values[~zeros] >= 1.0).all()  # real readings never 0
    grid = make_synthetic_benchmark("synthetic-grid")
    assert grid.values.shape == (3360, 20) and grid.freq == "h" and grid.null_value == "nan"
    assert np.isnan(grid.values).any() and str(grid.split) == "7:1:2" and grid.scaler_per_node


def test_daily_autocorrelation_is_high(traffic) -> None:
    frame = _frame(traffic)
    daily = np.array([frame[i].autocorr(288) for i in frame.columns])
    half_day = np.array([frame[i].autocorr(144) for i in frame.columns])
    assert daily.min() > 0.7 and daily.mean() > 0.8
    assert (daily > half_day).all()


def test_neighbours_are_more_correlated_than_non_neighbours(traffic) -> None:
    corr = _frame(traffic).corr().to_numpy()
    edges, others = _edge_masks(traffic)
    assert corr[edges].mean() > corr[others].mean() + 0.2


def test_diffusion_spreads_deviations_along_edges() -> None:
    """Residuals (after each node's mean daily profile) correlate along edges more when signals diffuse."""

    def residual_gap(diffusion: float) -> float:
        base = SYNTHETIC_PRESETS["synthetic-traffic"].model_dump()
        cfg = SyntheticConfig.model_validate({**base, "diffusion": diffusion, "incident_rate": 0.0})
        dataset = make_synthetic_benchmark(config=cfg)
        frame = _frame(dataset)
        residual = frame - frame.groupby(np.arange(len(frame)) % 288).transform("mean")
        corr = residual.corr().to_numpy()
        edges, others = _edge_masks(dataset)
        return float(corr[edges].mean() - corr[others].mean())

    assert residual_gap(0.5) > 2 * residual_gap(0.0)


def test_incidents_drop_the_node_and_then_its_neighbours() -> None:
    base = SYNTHETIC_PRESETS["synthetic-traffic"].model_dump()
    quiet = make_synthetic_benchmark(config=SyntheticConfig.model_validate({**base, "incident_rate": 0.0}))
    busy = make_synthetic_benchmark("synthetic-traffic")
    observed = busy.mask() & quiet.mask()
    ratio = np.where(observed, busy.values / np.where(quiet.values == 0, 1, quiet.values), 1.0)
    assert ratio.max() <= 1.0 + 1e-5  # incidents only ever lower the signal; everything else is identical
    event = busy.metadata["incidents"][0]
    node, start, drop = event["node"], event["start"], event["drop"]
    assert ratio[start, node] <= 1 - drop + 1e-4
    neighbours = [j for j in np.flatnonzero(busy.adjacency[node] > 0) if j != node]
    preset = SYNTHETIC_PRESETS["synthetic-traffic"]
    delay, spread = preset.incident_delay_steps, preset.incident_spread
    for j in neighbours:
        assert ratio[start + delay, j] <= 1 - spread * drop + 1e-4
    assert len(busy.metadata["incidents"]) == 218


def test_deterministic_by_seed_with_pinned_numbers(traffic) -> None:
    again = make_synthetic_benchmark("synthetic-traffic")
    np.testing.assert_array_equal(traffic.values, again.values)
    np.testing.assert_array_equal(traffic.adjacency, again.adjacency)
    np.testing.assert_allclose(traffic.values[100, :3], [421.53543, 353.61035, 390.47852], rtol=1e-5)
    assert float(np.nanmean(traffic.values)) == pytest.approx(239.69365, rel=1e-5)
    assert int((traffic.adjacency > 0).sum()) == 154
    other = make_synthetic_benchmark("synthetic-traffic", seed=1)
    assert not np.allclose(other.values, traffic.values)
    grid = make_synthetic_benchmark("synthetic-grid")
    np.testing.assert_allclose(grid.values[100, :3], [88.34837, 63.76276, 115.45727], rtol=1e-5)


def test_overrides_resolution_and_bad_names() -> None:
    small = make_synthetic_benchmark("synthetic-traffic", num_nodes=8, num_steps=600, freq="15min", seed=4)
    assert small.values.shape == (600, 8) and small.calendar_vocab["time_of_day"] == 96
    resolved = resolve_benchmark("synthetic-grid", split="6:2:2", seed=4)
    np.testing.assert_array_equal(resolved.values, make_synthetic_benchmark("synthetic-grid", seed=4).values)
    assert str(resolved.split) == "6:2:2"
    with pytest.raises(ValueError, match="unknown synthetic benchmark 'synthetic-moon'"):
        resolve_benchmark("synthetic-moon")
    with pytest.raises(ValidationError):
        SyntheticConfig.model_validate({"num_nodes": 4, "wobble": 1})
    with pytest.raises(ValueError, match="sub-daily"):
        make_synthetic_benchmark("synthetic-grid", freq="D")
