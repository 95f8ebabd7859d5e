"""User forecasting API: quantile forecasts on the original scale for contexts of any length and any horizon.

Contexts longer than ``max_context`` keep their last ``max_context`` points (the model was trained on at most
that many); ragged contexts are left-padded with NaN, which the backbone masks out exactly (masked keys and
relative rotary positions make a series' forecast independent of its batch mates). Horizons beyond
``max_horizon`` roll forward: the median forecast is appended to the context and the model is run again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from training.model import FactoSTBackbone

ContextsLike = Sequence[np.ndarray] | np.ndarray | Tensor


def _as_series_list(contexts: ContextsLike) -> list[np.ndarray]:
    """One float32 1-D array per series; a 1-D input is one series, a 2-D input is [B, L]."""
    if isinstance(contexts, Tensor):
        contexts = contexts.detach().cpu().float().numpy()
    if isinstance(contexts, np.ndarray) and contexts.dtype != object:
        if contexts.ndim == 1:
            contexts = contexts[None, :]
        if contexts.ndim != 2:
            raise ValueError(f"contexts array must be 1-D or 2-D [batch, length], got shape {contexts.shape}")
        return [np.asarray(row, dtype=np.float32) for row in contexts]
    series = []
    for i, item in enumerate(contexts):
        arr = np.asarray(item, dtype=np.float32)
        if arr.ndim != 1:
            raise ValueError(f"context {i}: must be 1-D, got shape {arr.shape}")
        series.append(arr)
    return series


def _left_pad(series: list[np.ndarray], max_context: int) -> np.ndarray:
    kept = [s[-max_context:] for s in series]
    width = max(len(s) for s in kept)
    out = np.full((len(kept), width), np.nan, dtype=np.float32)
    for i, s in enumerate(kept):
        out[i, width - len(s) :] = s
    return out


def _forecast_batch(model: FactoSTBackbone, context: Tensor, horizon: int) -> Tensor:
    cfg = model.cfg
    pieces: list[Tensor] = []
    remaining = horizon
    while remaining > 0:
        steps = min(remaining, cfg.max_horizon)
        out = model(context, math.ceil(steps / cfg.patch_size))
        q = out.quantiles[:, :steps].float() * out.scale[:, :, None] + out.loc[:, :, None]
        # Quantile heads can cross; sorting along the level axis gives valid quantiles (a no-op when they do
        # not cross) and a consistent median to roll forward with.
        q = q.sort(dim=-1).values
        pieces.append(q)
        remaining -= steps
        if remaining > 0:
            context = torch.cat([context, q[:, :, cfg.median_index]], dim=1)[:, -cfg.max_context :]
    return torch.cat(pieces, dim=1)


def forecast(
    model: FactoSTBackbone,
    contexts: ContextsLike,
    horizon: int,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Quantile forecasts [B, horizon, Q] (levels ``model.cfg.quantile_levels``) on the original scale.

    ``contexts``: a list of 1-D arrays of any lengths (NaN = missing), a [B, L] array/tensor, or one 1-D series.
    ``device``: where to run; when given the model is moved there (``nn.Module.to`` is in place), else the
    model's own device is used. The model runs in eval mode under ``torch.inference_mode``; its previous mode is
    restored afterwards.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    series = _as_series_list(contexts)
    for i, s in enumerate(series):
        if s.size == 0:
            raise ValueError(f"context {i}: empty series, nothing to forecast from")
    if device is not None:
        model.to(device)
    run_device = next(model.parameters()).device
    n_q = model.cfg.num_quantiles
    if not series:
        return np.zeros((0, horizon, n_q), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(series), batch_size):
                chunk = _left_pad(series[start : start + batch_size], model.cfg.max_context)
                context = torch.from_numpy(chunk).to(run_device)
                outputs.append(_forecast_batch(model, context, horizon).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(outputs, axis=0).astype(np.float32, copy=False)


def forecast_median(
    model: FactoSTBackbone,
    contexts: ContextsLike,
    horizon: int,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Point forecasts [B, horizon]: the 0.5 quantile of ``forecast``."""
    return forecast(model, contexts, horizon, batch_size=batch_size, device=device)[:, :, model.cfg.median_index]
