"""FactoSTPipeline: the Chronos call shape over training.forecast.forecast, with interpolated quantile levels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.forecast import forecast
from training.io import from_pretrained
from training.pipeline import FactoSTPipeline, interpolate_levels


def _contexts() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    out = [np.sin(np.arange(n) / 4.0) * 30 + 100 + rng.normal(0, 1, n) for n in (17, 64, 300, 5)]
    out[2][[5, 50, 51]] = np.nan
    return [c.astype(np.float32) for c in out]


def test_quantiles_equal_the_forecast_api(checkpoint: str) -> None:
    pipe = FactoSTPipeline.from_pretrained(checkpoint, device_map="cpu")
    contexts = _contexts()
    expected = forecast(from_pretrained(checkpoint), contexts, 40, batch_size=3)
    levels = pipe.quantile_levels
    q, mean = pipe.predict_quantiles([torch.from_numpy(c) for c in contexts], 40, quantile_levels=levels,
                                     batch_size=3)
    assert q.shape == (4, 40, len(levels)) and mean.shape == (4, 40)
    np.testing.assert_array_equal(q.numpy(), expected)
    np.testing.assert_array_equal(mean.numpy(), expected[:, :, levels.index(0.5)])
    np.testing.assert_array_equal(pipe.predict(contexts, 40, batch_size=3).numpy(), expected[:, :, levels.index(0.5)])
    # Chronos' default levels 0.1..0.9 are all among the backbone's: copied unchanged
    default, _ = pipe.predict_quantiles(contexts, 40, batch_size=3)
    np.testing.assert_array_equal(default.numpy(), expected[:, :, 1:10])
    # another batching pads differently: masked padding changes only float rounding
    np.testing.assert_allclose(pipe.predict(contexts, 40).numpy(), expected[:, :, levels.index(0.5)], rtol=1e-5)


def test_other_levels_are_interpolated_linearly_and_clamped() -> None:
    have = (0.1, 0.5, 0.9)
    q = np.array([[[0.0, 10.0, 30.0]]])
    got = interpolate_levels(q, have, [0.05, 0.1, 0.3, 0.7, 0.9, 0.95])
    np.testing.assert_allclose(got[0, 0], [0.0, 0.0, 5.0, 20.0, 30.0, 30.0])
    with pytest.raises(ValueError, match=r"quantile_levels must lie in \(0, 1\), got \[1\.5\]"):
        interpolate_levels(q, have, [1.5])


def test_bf16_autocast_stays_close_to_float32(checkpoint: str) -> None:
    """The GPU default (bf16 autocast), run here on the CPU: float32 outputs within bf16 rounding of float32."""
    contexts = _contexts()
    full = FactoSTPipeline.from_pretrained(checkpoint, device_map="cpu")
    half = FactoSTPipeline.from_pretrained(checkpoint, device_map="cpu", bf16=True)
    assert not full.bf16 and half.bf16
    got, expected = half.predict(contexts, 24), full.predict(contexts, 24)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=2e-2)
    assert not np.array_equal(got.numpy(), expected.numpy())  # the autocast really ran
