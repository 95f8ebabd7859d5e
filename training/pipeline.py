"""``FactoSTPipeline``: the backbone behind the call shape forecasting users know from Chronos.

``FactoSTPipeline.from_pretrained(url).predict_quantiles(context, prediction_length, quantile_levels)`` returns
``(quantiles [B, H, len(levels)], mean [B, H])`` as torch tensors; ``predict`` returns the median [B, H]. Contexts
are a list of 1-D arrays or tensors of any lengths (or one [B, L] tensor); they go through
:func:`training.forecast.forecast`, so batching, NaN handling and rollout are exactly the forecast API's.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import Tensor

from training.forecast import ContextsLike, forecast
from training.model import FactoSTBackbone

CHRONOS_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def interpolate_levels(quantiles: np.ndarray, have: Sequence[float], want: Sequence[float]) -> np.ndarray:
    """Quantiles [..., len(want)] from [..., len(have)] by linear interpolation in the level; levels outside the
    backbone's range take its outermost quantile (nothing is known beyond it). A level it has gets weight exactly 1
    on that quantile, so it is copied unchanged."""
    have_arr = np.asarray(have, dtype=np.float64)
    want_arr = np.asarray(want, dtype=np.float64)
    if want_arr.ndim != 1 or not ((want_arr > 0) & (want_arr < 1)).all():
        raise ValueError(f"quantile_levels must lie in (0, 1), got {list(want)}")
    pos = np.clip(np.searchsorted(have_arr, want_arr) - 1, 0, len(have_arr) - 2)
    lo, hi = have_arr[pos], have_arr[pos + 1]
    w = np.clip((want_arr - lo) / (hi - lo), 0.0, 1.0)
    return quantiles[..., pos] * (1 - w) + quantiles[..., pos + 1] * w


class FactoSTPipeline:
    """A loaded backbone plus where it runs; on a GPU the forward passes run under bf16 autocast."""

    def __init__(self, model: FactoSTBackbone, device: torch.device | str | None = None, bf16: bool | None = None):
        self.model = model.eval()
        if device is not None:
            self.model.to(device)
        self.device = next(self.model.parameters()).device
        self.bf16 = self.device.type == "cuda" if bf16 is None else bf16

    @classmethod
    def from_pretrained(cls, url: str, device_map: torch.device | str | None = None,
                        storage_options: dict[str, Any] | None = None, bf16: bool | None = None) -> FactoSTPipeline:
        """Load a ``save_pretrained`` folder (path or URL); ``device_map`` defaults to CUDA when there is one."""
        from training.io import from_pretrained

        device = device_map or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(from_pretrained(url, storage_options, map_location=device), bf16=bf16)

    @property
    def quantile_levels(self) -> tuple[float, ...]:
        return tuple(self.model.cfg.quantile_levels)

    def _forecast(self, context: ContextsLike, prediction_length: int, batch_size: int) -> np.ndarray:
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()
        with autocast:
            return forecast(self.model, _as_arrays(context), prediction_length, batch_size=batch_size)

    def predict_quantiles(
        self, context: ContextsLike | Sequence[Tensor], prediction_length: int,
        quantile_levels: Sequence[float] = CHRONOS_LEVELS, batch_size: int = 256,
    ) -> tuple[Tensor, Tensor]:
        """``(quantiles [B, H, len(quantile_levels)], mean [B, H])``; the mean is the median (a quantile model has
        no mean head), as Chronos-Bolt reports it."""
        q = self._forecast(context, prediction_length, batch_size)
        median = q[:, :, self.model.cfg.median_index]
        wanted = interpolate_levels(q, self.quantile_levels, quantile_levels)
        return torch.from_numpy(np.ascontiguousarray(wanted, dtype=np.float32)), torch.from_numpy(median.copy())

    def predict(self, context: ContextsLike | Sequence[Tensor], prediction_length: int,
                batch_size: int = 256) -> Tensor:
        """The median forecast [B, H]."""
        q = self._forecast(context, prediction_length, batch_size)
        return torch.from_numpy(q[:, :, self.model.cfg.median_index].copy())


def _as_arrays(context: ContextsLike | Sequence[Tensor]) -> ContextsLike:
    """A list of tensors becomes a list of arrays; everything else is what ``forecast`` already reads."""
    if isinstance(context, (list, tuple)):
        return [c.detach().cpu().float().numpy() if isinstance(c, Tensor) else np.asarray(c, dtype=np.float32)
                for c in context]
    return context
