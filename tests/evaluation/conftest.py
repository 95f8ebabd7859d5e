"""Fixtures of the zero-shot evaluation tests: a small long-format csv (the backbone: tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

HORIZON, SEASON = 12, 4


def periodic_tail(n: int, rng: np.random.Generator) -> np.ndarray:
    """Noise, then an exact period of SEASON over the last 3 periods and the test window: the seasonal-naive
    forecast is exact while the in-sample scale is not zero."""
    values = rng.normal(10.0, 1.0, n)
    cycle = np.array([1.0, 5.0, 2.0, 8.0])
    tail = HORIZON + 3 * SEASON
    values[-tail:] = np.tile(cycle, tail // SEASON)
    return values


@pytest.fixture(scope="module")
def long_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Hourly series in long format: two noisy ones (one with gaps), an exactly periodic tail, one too short for
    H + S, one all missing."""
    rng = np.random.default_rng(7)
    series = {
        "noisy": 50 + np.cumsum(rng.normal(0, 1, 120)),
        "gappy": 20 + np.sin(np.arange(100) / 2.0) * 5 + rng.normal(0, 0.3, 100),
        "periodic": periodic_tail(80, rng),
        "short": rng.normal(0, 1, HORIZON + SEASON - 1),
        "empty": np.full(30, np.nan),
    }
    series["gappy"][[10, 11, 40, 70]] = np.nan
    frames = [pd.DataFrame({"id": k, "timestamp": pd.date_range("2024-01-01", periods=len(v), freq="h"), "value": v})
              for k, v in series.items()]
    path = tmp_path_factory.mktemp("data") / "hourly.csv"
    pd.concat(frames).to_csv(path, index=False)
    return path
