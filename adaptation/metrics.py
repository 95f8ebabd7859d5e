"""Forecast metrics on the original scale, as the spatio-temporal field computes them.

Point metrics follow BasicTS/DCRNN ``masked_mae`` / ``masked_rmse`` / ``masked_mape``: a target is
*observed* unless it is null under the dataset's convention ("zero": ``|y| <= 5e-5``, the missing readings
of traffic flow/speed; "nan": NaN), and each metric is the mean over observed points only (BasicTS's
``mask / mean(mask)`` weighting is exactly that). MAPE also skips targets with ``|y| <= 5e-5`` and is
in PERCENT, as the traffic papers report it (BasicTS's ``masked_mape`` times 100: ``mape`` 12.5 is 12.5%).

Probabilistic metrics use the model's quantiles ``q_tau`` at levels ``tau``:

- pinball ``rho_tau(y, q) = max(tau * (y - q), (tau - 1) * (y - q))``;
- ``crps ~= 2 * mean_tau mean_points rho_tau(y, q_tau)``, the quantile approximation of
  ``CRPS = 2 * integral_0^1 rho_tau(y, F^-1(tau)) dtau`` (exact as the levels fill (0, 1) evenly);
- ``wql = mean_tau 2 * sum_points rho_tau / sum_points |y|`` (GluonTS weighted quantile loss);
- coverage of the central 80% (q0.1..q0.9) and 98% (q0.01..q0.99) intervals: share of observed targets
  inside ``[q_low, q_high]``.

The point forecast is the 0.5 quantile.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

NullValue = Literal["zero", "nan"]
NULL_ATOL = 5e-5  # BasicTS: a target within this of 0 is "zero" (null for traffic, skipped by MAPE)
PERCENT = 100.0  # MAPE is reported in percent
MEDIAN_LEVEL = 0.5
INTERVALS: dict[str, tuple[float, float]] = {"coverage_80": (0.1, 0.9), "coverage_98": (0.01, 0.99)}
LEVEL_ATOL = 1e-9


def observed(target: np.ndarray, null_value: NullValue, mask: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of targets that count: finite, non-null under ``null_value``, and in ``mask`` if given."""
    if null_value not in ("zero", "nan"):
        raise ValueError(f"null_value must be 'zero' or 'nan', got {null_value!r}")
    target = np.asarray(target, dtype=np.float64)
    keep = np.isfinite(target)
    if null_value == "zero":
        keep &= np.abs(target) > NULL_ATOL
    if mask is not None:
        keep &= np.broadcast_to(np.asarray(mask, dtype=bool), target.shape)
    return keep


def _errors(pred: np.ndarray, target: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from target shape {target.shape}")
    if not np.isfinite(pred[keep]).all():
        raise ValueError("prediction is NaN or infinite at observed targets")
    return pred[keep], target[keep]


def masked_mae(pred: np.ndarray, target: np.ndarray, null_value: NullValue = "nan",
               mask: np.ndarray | None = None) -> float:
    """Mean absolute error over observed targets (NaN when none is observed)."""
    p, y = _errors(pred, target, observed(target, null_value, mask))
    return float(np.abs(p - y).mean()) if y.size else float("nan")


def masked_rmse(pred: np.ndarray, target: np.ndarray, null_value: NullValue = "nan",
                mask: np.ndarray | None = None) -> float:
    """Root mean squared error over observed targets."""
    p, y = _errors(pred, target, observed(target, null_value, mask))
    return float(np.sqrt(np.square(p - y).mean())) if y.size else float("nan")


def masked_mape(pred: np.ndarray, target: np.ndarray, null_value: NullValue = "nan",
                mask: np.ndarray | None = None, eps: float = NULL_ATOL) -> float:
    """Mean absolute percentage error in percent over observed targets with ``|y| > eps``."""
    keep = observed(target, null_value, mask) & (np.abs(np.nan_to_num(np.asarray(target, float))) > eps)
    p, y = _errors(pred, target, keep)
    return float(PERCENT * np.abs((p - y) / y).mean()) if y.size else float("nan")


def _check_levels(levels: Sequence[float], num_quantiles: int) -> np.ndarray:
    tau = np.asarray(levels, dtype=np.float64)
    if tau.ndim != 1 or tau.size != num_quantiles:
        raise ValueError(f"{tau.size} quantile levels for {num_quantiles} quantile outputs")
    if not ((tau > 0) & (tau < 1)).all() or (np.diff(tau) <= 0).any():
        raise ValueError(f"quantile levels must be strictly increasing in (0, 1), got {tau.tolist()}")
    return tau


def pinball_loss(quantiles: np.ndarray, target: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Elementwise pinball loss ``[..., Q]`` of ``quantiles [..., Q]`` against ``target [...]``."""
    q = np.asarray(quantiles, dtype=np.float64)
    tau = _check_levels(levels, q.shape[-1])
    diff = np.asarray(target, dtype=np.float64)[..., None] - q
    return np.maximum(tau * diff, (tau - 1.0) * diff)


def _pinball_sums(quantiles: np.ndarray, target: np.ndarray, tau: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Per level, the pinball loss summed over observed points; one level at a time so that no
    ``[..., Q]`` loss array is built (a PEMS07 test set of quantiles is already hundreds of MB)."""
    sums = np.empty(tau.size)
    y = np.where(keep, target, 0.0)
    for k, level in enumerate(tau):
        q_k = quantiles[..., k]
        if not np.isfinite(q_k[keep]).all():
            raise ValueError("quantile forecast is NaN or infinite at observed targets")
        diff = y - np.where(keep, q_k, 0.0)
        sums[k] = np.maximum(level * diff, (level - 1.0) * diff).sum()
    return sums


def _prepare(quantiles: np.ndarray, target: np.ndarray, levels: Sequence[float], null_value: NullValue,
             mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    q = np.asarray(quantiles, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if q.shape[:-1] != y.shape:
        raise ValueError(f"quantiles {q.shape} do not match target {y.shape} plus a quantile axis")
    return q, y, _check_levels(levels, q.shape[-1]), observed(y, null_value, mask)


def crps_from_quantiles(quantiles: np.ndarray, target: np.ndarray, levels: Sequence[float],
                        null_value: NullValue = "nan", mask: np.ndarray | None = None) -> float:
    """``2 * mean over levels and observed points of the pinball loss`` (CRPS approximation)."""
    q, y, tau, keep = _prepare(quantiles, target, levels, null_value, mask)
    count = int(keep.sum())
    return float(2.0 * _pinball_sums(q, y, tau, keep).mean() / count) if count else float("nan")


def weighted_quantile_loss(quantiles: np.ndarray, target: np.ndarray, levels: Sequence[float],
                           null_value: NullValue = "nan", mask: np.ndarray | None = None) -> float:
    """Scale-free CRPS: ``mean_tau 2 * sum rho_tau / sum |y|`` over observed points."""
    q, y, tau, keep = _prepare(quantiles, target, levels, null_value, mask)
    scale = float(np.abs(np.where(keep, y, 0.0)).sum())
    return float(2.0 * _pinball_sums(q, y, tau, keep).mean() / scale) if scale > 0 else float("nan")


def interval_coverage(lower: np.ndarray, upper: np.ndarray, target: np.ndarray,
                      null_value: NullValue = "nan", mask: np.ndarray | None = None) -> float:
    """Share of observed targets with ``lower <= y <= upper``."""
    keep = observed(target, null_value, mask)
    y = np.asarray(target, dtype=np.float64)[keep]
    lo = np.asarray(lower, dtype=np.float64)[keep]
    hi = np.asarray(upper, dtype=np.float64)[keep]
    return float(((y >= lo) & (y <= hi)).mean()) if y.size else float("nan")


def _level_index(tau: np.ndarray, level: float) -> int | None:
    hits = np.flatnonzero(np.abs(tau - level) < LEVEL_ATOL)
    return int(hits[0]) if hits.size else None


def evaluate(pred_quantiles: np.ndarray, target: np.ndarray, levels: Sequence[float],
             null_value: NullValue = "nan", mask: np.ndarray | None = None) -> dict[str, Any]:
    """All metrics for ``pred_quantiles [S, H, N, Q]`` against ``target [S, H, N]`` on the original scale.

    Returns ``mae``, ``rmse``, ``mape`` (of the 0.5 quantile, in percent), ``crps``, ``wql``, ``coverage_80`` and
    ``coverage_98`` where the levels allow, ``observed`` (count) and ``per_horizon`` lists of
    mae/rmse/mape, one entry per horizon step (traffic papers report steps 3, 6 and 12).
    """
    q = np.asarray(pred_quantiles, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if q.ndim != 4 or y.ndim != 3 or q.shape[:3] != y.shape:
        raise ValueError(f"expected pred_quantiles [S, H, N, Q] and target [S, H, N], got {q.shape} and {y.shape}")
    tau = _check_levels(levels, q.shape[-1])
    median = _level_index(tau, MEDIAN_LEVEL)
    if median is None:
        raise ValueError(f"levels {tau.tolist()} lack the 0.5 quantile, the point forecast")
    point = q[..., median]
    keep = observed(y, null_value, mask)
    if not np.isfinite(point[keep]).all():
        raise ValueError("prediction is NaN or infinite at observed targets")
    # one pass of elementwise errors, reduced per horizon step and overall
    safe_y = np.where(keep, y, 1.0)
    abs_err = np.where(keep, np.abs(point - safe_y), 0.0)
    keep_pct = keep & (np.abs(safe_y) > NULL_ATOL)
    pct_err = PERCENT * np.divide(abs_err, np.abs(safe_y), out=np.zeros_like(abs_err), where=keep_pct)
    counts = keep.sum(axis=(0, 2)).astype(np.float64)
    pct_counts = keep_pct.sum(axis=(0, 2)).astype(np.float64)
    sums = {"mae": abs_err.sum(axis=(0, 2)), "rmse": np.square(abs_err).sum(axis=(0, 2)),
            "mape": pct_err.sum(axis=(0, 2))}
    with np.errstate(invalid="ignore", divide="ignore"):
        per_h = {"mae": sums["mae"] / counts, "rmse": np.sqrt(sums["rmse"] / counts),
                 "mape": sums["mape"] / pct_counts}
        total, total_pct = counts.sum(), pct_counts.sum()
        overall = {"mae": sums["mae"].sum() / total, "rmse": np.sqrt(sums["rmse"].sum() / total),
                   "mape": sums["mape"].sum() / total_pct}
    pinball = _pinball_sums(q, y, tau, keep)
    scale = float(np.abs(np.where(keep, y, 0.0)).sum())
    result: dict[str, Any] = {
        **{k: float(v) for k, v in overall.items()},
        "crps": float(2.0 * pinball.mean() / total) if total else float("nan"),
        "wql": float(2.0 * pinball.mean() / scale) if scale > 0 else float("nan"),
        "observed": int(total),
    }
    for name, (low, high) in INTERVALS.items():
        lo, hi = _level_index(tau, low), _level_index(tau, high)
        if lo is not None and hi is not None:
            result[name] = interval_coverage(q[..., lo], q[..., hi], y, null_value, keep)
    result["per_horizon"] = {k: [float(x) for x in v] for k, v in per_h.items()}
    return result
