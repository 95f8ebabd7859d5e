"""Pretraining losses averaged over the observed targets only: quantile (pinball, paper Eq. 6) and, for the
Table X ablation, L1 of the median (the paper's point objective, Sec. III-B)."""

from __future__ import annotations

import torch
from torch import Tensor


def pinball_loss(quantiles: Tensor, target: Tensor, levels: Tensor) -> Tensor:
    """Mean of ``max(q * (y - y_q), (q - 1) * (y - y_q))`` over observed (target, quantile) pairs.

    ``quantiles`` [B, H, Q], ``target`` [B, H] with NaN (or inf) for missing points, ``levels`` [Q].
    Missing targets are replaced before the subtraction, not after, so no NaN ever reaches the graph: an
    all-missing batch gives 0 with a (zero) gradient instead of NaN, which would poison the optimizer state.
    """
    if quantiles.dim() != 3 or target.shape != quantiles.shape[:2]:
        raise ValueError(
            f"quantiles must be [B, H, Q] and target [B, H]; got {tuple(quantiles.shape)} and {tuple(target.shape)}"
        )
    if levels.dim() != 1 or levels.shape[0] != quantiles.shape[2]:
        raise ValueError(f"levels must be [Q={quantiles.shape[2]}], got {tuple(levels.shape)}")
    observed = torch.isfinite(target)
    y = torch.where(observed, target, torch.zeros((), dtype=target.dtype, device=target.device))
    diff = y.unsqueeze(-1).to(quantiles.dtype) - quantiles
    lv = levels.to(device=quantiles.device, dtype=quantiles.dtype)
    loss = torch.maximum(lv * diff, (lv - 1.0) * diff)
    weight = observed.unsqueeze(-1).to(quantiles.dtype)
    n_pairs = observed.sum() * quantiles.shape[2]
    return (loss * weight).sum() / n_pairs.clamp_min(1).to(quantiles.dtype)


def median_l1_loss(median: Tensor, target: Tensor) -> Tensor:
    """Mean ``|y - y_0.5|`` over observed targets; ``median`` and ``target`` [B, H], NaN (or inf) = missing.

    Missing targets are replaced before the subtraction (as in :func:`pinball_loss`), so an all-missing batch
    gives 0 with a zero gradient.
    """
    if median.shape != target.shape or median.dim() != 2:
        raise ValueError(f"median and target must both be [B, H]; got {tuple(median.shape)} and {tuple(target.shape)}")
    observed = torch.isfinite(target)
    y = torch.where(observed, target, torch.zeros((), dtype=target.dtype, device=target.device)).to(median.dtype)
    weight = observed.to(median.dtype)
    return ((y - median).abs() * weight).sum() / observed.sum().clamp_min(1).to(median.dtype)
