"""Batched STL and MSTL that reproduce statsmodels' (non-robust) decomposition, many series at once.

Why: BLAST scores every series with an STL of period ``n // 2`` (trend window about ``n``, five inner loops)
and then an STL/MSTL for the seasonal strength; statsmodels spends about 0.2 s per 1,024-point series there,
almost all of it recomputing the same LOESS tricube weights at every point of every inner loop.

Without robustness weights every LOESS smoother in STL is a *linear* operator whose weights depend only on
the geometry ``(n, window, degree, jump)``, never on the data. So we compute each smoother's weights once
(an exact vectorised replica of the netlib/statsmodels ``est``), cache them, and apply them to a whole batch
of same-length series with BLAS: the rows whose window is pinned to the left or right edge become one matrix
product each, the translation-invariant interior rows become one FFT convolution. The STL loop itself
(cycle-subseries smoothing, the three moving averages, low-pass, trend) follows ``statsmodels.tsa.stl._stl``
step by step, so results agree with statsmodels to rounding (about 1e-12 relative).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve

# Plans (precomputed LOESS weights) are cached per process up to this many bytes: a 2,039-point trend
# smoother of window ~2,000 holds ~32 MB of weights, small ones a few KB.
PLAN_CACHE_BYTES = 256 * 1024 * 1024
# Weights are computed this many at a time (each temporary of the computation is 8 bytes per element).
BUILD_CHUNK_ELEMENTS = 1 << 20
# Interior rows are applied as an FFT convolution when the window is at least this wide (below it a
# gathered dot product is as fast and exact to the last bit of the direct sum).
CONV_MIN_WIDTH = 48
# Interior rows share one kernel only up to rounding of the linear-fit correction; beyond this relative
# difference (never seen) a plan falls back to per-row weights.
KERNEL_SHARE_RTOL = 1e-9


@dataclass(frozen=True)
class _Block:
    """Rows whose windows start at the same column: ``values = Y[:, start:start+width] @ weights.T``."""

    rows: np.ndarray  # indices into the plan's evaluation points
    start: int
    weights: np.ndarray  # (len(rows), width)


@dataclass(frozen=True)
class LoessPlan:
    """Weights of one STL LOESS smoother (``ess``) on series of length ``n``, ready to apply to a batch.

    ``eval_idx`` are the 0-based points where LOESS is evaluated (every ``jump``-th point plus the last);
    the others are linearly interpolated exactly as statsmodels does.
    """

    n: int
    width: int
    jump: int
    eval_idx: np.ndarray
    blocks: tuple[_Block, ...]
    conv_rows: np.ndarray  # evaluation rows computed by convolution with ``kernel``
    conv_starts: np.ndarray  # window start column of each convolution row
    kernel: np.ndarray
    gather_rows: np.ndarray  # remaining rows: per-row weights, gathered
    gather_starts: np.ndarray
    gather_weights: np.ndarray
    fallback_rows: np.ndarray  # rows whose weights sum to zero: statsmodels keeps the input value
    tail_from: int  # statsmodels' tail: evaluation point k (1-based) before n, or 0 when none

    @property
    def nbytes(self) -> int:
        return int(
            sum(b.weights.nbytes for b in self.blocks)
            + self.kernel.nbytes
            + self.gather_weights.nbytes
            + self.eval_idx.nbytes
        )


def _est_weights(
    n: int, len_: int, ideg: int, xs: np.ndarray, nleft: np.ndarray, nright: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised replica of statsmodels' ``STL._est``: LOESS weights for points ``xs`` (1-based).

    Returns ``(weights (m, width), ok (m,))``; ``ok`` is False where the weights sum to zero (statsmodels
    returns NaN there and the caller substitutes a fallback value).
    """
    xs = np.asarray(xs, dtype=np.float64)
    nleft = np.asarray(nleft, dtype=np.int64)
    nright = np.asarray(nright, dtype=np.int64)
    width = int(nright[0] - nleft[0] + 1)
    if np.any(nright - nleft + 1 != width):
        raise AssertionError("LOESS windows of one smoother must share a width")
    rng = n - 1.0
    h = np.maximum(xs - nleft, nright - xs).astype(np.float64)
    if len_ > n:
        h = h + float((len_ - n) // 2)
    h9 = 0.999 * h
    h1 = 0.001 * h
    # positions local to each window (translation does not change the fit, and keeps sums small)
    jl = np.arange(width, dtype=np.float64)
    xl = xs - nleft
    r = np.abs(jl[None, :] - xl[:, None])
    with np.errstate(divide="ignore", invalid="ignore"):
        w = r / h[:, None]
    np.multiply(w, w * w, out=w)
    np.subtract(1.0, w, out=w)
    np.multiply(w, w * w, out=w)  # tricube (1 - (r/h)^3)^3
    w *= r <= h9[:, None]
    np.putmask(w, r <= h1[:, None], 1.0)
    del r
    a = w.sum(axis=1)
    ok = a > 0
    w /= np.where(ok, a, 1.0)[:, None]
    if ideg > 0:
        a1 = w @ jl
        b = xl - a1
        c = w @ (jl * jl) - a1 * a1
        lin = ok & (h > 0) & (np.sqrt(np.maximum(c, 0.0)) > 0.001 * rng)
        with np.errstate(divide="ignore", invalid="ignore"):
            bc = np.where(lin, b / np.where(lin, c, 1.0), 0.0)
        # w * (bc (j - a1) + 1) = w + w * bc * (j - a1); rows without the linear term keep w (bc = 0)
        w += w * (bc[:, None] * (jl[None, :] - a1[:, None]))
    return w, ok


def _ess_geometry(n: int, len_: int, njump: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Evaluation points and windows of statsmodels' ``_ess`` (1-based windows), and its tail evaluation."""
    newnj = min(njump, n - 1)
    if len_ >= n:
        idx = np.arange(0, n, newnj)
        nleft = np.ones_like(idx)
        nright = np.full_like(idx, n)
    elif newnj == 1:
        nsh = (len_ + 2) // 2
        idx = np.arange(n)
        nleft = 1 + np.clip(idx + 1 - nsh, 0, n - len_)
        nright = nleft + len_ - 1
    else:
        nsh = (len_ + 1) // 2
        idx = np.arange(0, n, newnj)
        x1 = idx + 1
        nleft = np.where(x1 < nsh, 1, np.where(x1 >= n - nsh + 1, n - len_ + 1, x1 - nsh + 1))
        nright = nleft + len_ - 1
    tail = 0
    if newnj > 1:
        k = ((n - 1) // newnj) * newnj + 1
        if k != n:
            tail = k
            # statsmodels evaluates the last point with the window left over from its loop (point k's)
            idx = np.append(idx, n - 1)
            nleft = np.append(nleft, nleft[-1])
            nright = np.append(nright, nright[-1])
    return idx, nleft, nright, newnj, tail


def _build_plan(n: int, len_: int, ideg: int, njump: int) -> LoessPlan:
    idx, nleft, nright, newnj, tail = _ess_geometry(n, len_, njump)
    width = int(nright[0] - nleft[0] + 1)
    w = np.empty((len(idx), width))
    ok = np.empty(len(idx), dtype=bool)
    step = max(1, BUILD_CHUNK_ELEMENTS // width)  # bounds the temporaries of the weight computation
    for s in range(0, len(idx), step):
        sl = slice(s, s + step)
        w[sl], ok[sl] = _est_weights(n, len_, ideg, idx[sl] + 1, nleft[sl], nright[sl])
    width = w.shape[1]
    starts = nleft - 1
    rows = np.arange(len(idx))
    fallback = rows[~ok]
    good = ok
    blocks = []
    left = rows[good & (starts == 0)]
    if left.size:
        blocks.append(_Block(left, 0, np.ascontiguousarray(w[left])))
    right_start = n - width
    right = rows[good & (starts == right_start) & (right_start != 0)]
    if right.size:
        blocks.append(_Block(right, right_start, np.ascontiguousarray(w[right])))
    mid = rows[good & (starts != 0) & (starts != right_start)]
    conv_rows = gather_rows = np.zeros(0, dtype=np.int64)
    kernel = np.zeros(0)
    gather_w = np.zeros((0, width))
    if mid.size:
        ref = w[mid[len(mid) // 2]]
        shared = np.allclose(
            w[mid], ref[None, :], rtol=KERNEL_SHARE_RTOL, atol=KERNEL_SHARE_RTOL * np.abs(ref).max()
        )
        if shared and width >= CONV_MIN_WIDTH:
            conv_rows, kernel = mid, ref.copy()
        else:
            gather_rows, gather_w = mid, np.ascontiguousarray(w[mid])
    return LoessPlan(
        n=n,
        width=width,
        jump=newnj,
        eval_idx=idx,
        blocks=tuple(blocks),
        conv_rows=conv_rows,
        conv_starts=starts[conv_rows],
        kernel=kernel,
        gather_rows=gather_rows,
        gather_starts=starts[gather_rows],
        gather_weights=gather_w,
        fallback_rows=fallback,
        tail_from=tail,
    )


class _PlanCache:
    """A byte-bounded LRU of plans, one per process (thread-safe: the stage may score in threads)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._plans: OrderedDict[tuple[int, int, int, int], LoessPlan] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, n: int, len_: int, ideg: int, njump: int) -> LoessPlan:
        key = (n, len_, ideg, njump)
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
                return plan
        plan = _build_plan(n, len_, ideg, njump)
        with self._lock:
            if key not in self._plans:
                self._plans[key] = plan
                self._bytes += plan.nbytes
                while self._bytes > self.max_bytes and len(self._plans) > 1:
                    _, old = self._plans.popitem(last=False)
                    self._bytes -= old.nbytes
        return plan


_PLANS = _PlanCache(PLAN_CACHE_BYTES)


def loess_plan(n: int, len_: int, ideg: int, njump: int) -> LoessPlan:
    """The (cached) plan of statsmodels' ``_ess(y, n, len_, ideg, njump)`` without robustness weights."""
    return _PLANS.get(n, len_, ideg, njump)


def apply_plan(plan: LoessPlan, y: np.ndarray) -> np.ndarray:
    """Smooth every row of ``y`` (``(rows, n)``) as statsmodels' ``_ess`` does, with the plan's weights."""
    y = np.ascontiguousarray(y, dtype=np.float64)
    rows, n = y.shape
    if n != plan.n:
        raise ValueError(f"plan is for length {plan.n}, got rows of length {n}")
    if n < 2:
        return y.copy()
    vals = np.empty((rows, len(plan.eval_idx)))
    for block in plan.blocks:
        vals[:, block.rows] = y[:, block.start : block.start + plan.width] @ block.weights.T
    if plan.conv_rows.size:
        # correlation with the shared kernel at every window start, then pick the rows' starts
        full = fftconvolve(y, plan.kernel[::-1][None, :], mode="valid", axes=1)
        vals[:, plan.conv_rows] = full[:, plan.conv_starts]
    if plan.gather_rows.size:
        windows = np.lib.stride_tricks.sliding_window_view(y, plan.width, axis=1)
        chunk = max(1, int(4_000_000 // max(1, rows * plan.width)))
        for s in range(0, plan.gather_rows.size, chunk):
            sel = slice(s, s + chunk)
            gathered = windows[:, plan.gather_starts[sel], :]
            vals[:, plan.gather_rows[sel]] = np.einsum("rmw,mw->rm", gathered, plan.gather_weights[sel])
    if plan.fallback_rows.size:
        vals[:, plan.fallback_rows] = y[:, plan.eval_idx[plan.fallback_rows]]
    if plan.jump == 1:
        return vals
    return _interpolate(plan, vals, n)


def _interpolate(plan: LoessPlan, vals: np.ndarray, n: int) -> np.ndarray:
    """statsmodels' linear interpolation between evaluation points, with its exact arithmetic order."""
    nj = plan.jump
    out = np.empty((vals.shape[0], n))
    n_grid = len(plan.eval_idx) - (1 if plan.tail_from else 0)
    grid_vals = vals[:, :n_grid]
    last_grid = (n_grid - 1) * nj
    if n_grid > 1:
        left = grid_vals[:, :-1]
        delta = (grid_vals[:, 1:] - left) / nj
        offs = np.arange(nj, dtype=np.float64)
        block = left[:, :, None] + delta[:, :, None] * offs[None, None, :]
        out[:, : (n_grid - 1) * nj] = block.reshape(vals.shape[0], -1)
    out[:, last_grid] = grid_vals[:, -1]
    if plan.tail_from:
        k = plan.tail_from
        out[:, n - 1] = vals[:, -1]
        if k != n - 1:
            # like statsmodels, this loop also rewrites the last point (to the same value up to rounding)
            delta = (out[:, n - 1] - out[:, k - 1]) / (n - k)
            steps = (np.arange(k, n) + 1 - k).astype(np.float64)
            out[:, k:n] = out[:, k - 1 : k] + delta[:, None] * steps[None, :]
    return out


@dataclass(frozen=True)
class _SubseriesPlan:
    """Cycle-subseries smoothing of subseries of length ``k``: interior plan plus the two extrapolations."""

    inner: LoessPlan | None  # None for one-point subseries (statsmodels copies the point)
    first: np.ndarray  # weights of the extrapolation to position 0 over columns [0, width0)
    first_ok: bool
    last: np.ndarray  # weights of the extrapolation to position k+1 over the last columns
    last_ok: bool


_SUB_CACHE: dict[tuple[int, int, int, int], _SubseriesPlan] = {}


def _subseries_plan(k: int, ns: int, isdeg: int, nsjump: int) -> _SubseriesPlan:
    key = (k, ns, isdeg, nsjump)
    plan = _SUB_CACHE.get(key)
    if plan is None:
        inner = loess_plan(k, ns, isdeg, nsjump) if k >= 2 else None
        nright = min(ns, k)
        w0, ok0 = _est_weights(k, ns, isdeg, np.array([0]), np.array([1]), np.array([nright]))
        nleft = max(1, k - ns + 1)
        w1, ok1 = _est_weights(k, ns, isdeg, np.array([k + 1]), np.array([nleft]), np.array([k]))
        plan = _SubseriesPlan(inner, w0[0], bool(ok0[0]), w1[0], bool(ok1[0]))
        if len(_SUB_CACHE) > 4096:
            _SUB_CACHE.clear()
        _SUB_CACHE[key] = plan
    return plan


def _smooth_subseries(z: np.ndarray, ns: int, isdeg: int, nsjump: int) -> np.ndarray:
    """``z`` (rows, k) -> (rows, k + 2): smoothed subseries with one extrapolated point at each end."""
    rows, k = z.shape
    plan = _subseries_plan(k, ns, isdeg, nsjump)
    out = np.empty((rows, k + 2))
    out[:, 1 : k + 1] = apply_plan(plan.inner, z) if plan.inner is not None else z
    w0 = plan.first
    out[:, 0] = z[:, : w0.size] @ w0 if plan.first_ok else out[:, 1]
    w1 = plan.last
    out[:, k + 1] = z[:, k - w1.size :] @ w1 if plan.last_ok else out[:, k]
    return out


def _cycle_subseries(d: np.ndarray, period: int, ns: int, isdeg: int, nsjump: int) -> np.ndarray:
    """statsmodels' ``_ss``: smooth each cycle-subseries; the result is extended by a period at each end."""
    rows, n = d.shape
    q, r = divmod(n, period)
    out = np.zeros((rows, q + 3, period))
    if r:
        padded = np.zeros((rows, (q + 1) * period))
        padded[:, :n] = d
        za = padded.reshape(rows, q + 1, period)[:, :, :r].transpose(0, 2, 1).reshape(rows * r, q + 1)
        sa = _smooth_subseries(za, ns, isdeg, nsjump).reshape(rows, r, q + 3)
        out[:, :, :r] = sa.transpose(0, 2, 1)
    if period - r:
        zb = (
            d[:, : q * period]
            .reshape(rows, q, period)[:, :, r:]
            .transpose(0, 2, 1)
            .reshape(rows * (period - r), q)
        )
        sb = _smooth_subseries(zb, ns, isdeg, nsjump).reshape(rows, period - r, q + 2)
        out[:, : q + 2, r:] = sb.transpose(0, 2, 1)
    return out.reshape(rows, -1)[:, : n + 2 * period]


def _moving_average(x: np.ndarray, length: int) -> np.ndarray:
    """statsmodels' ``_ma``: a running sum updated point by point (sequential, like the Cython loop)."""
    first = np.add.accumulate(x[:, :length], axis=1)[:, -1:]
    steps = x[:, length:] - x[:, :-length]
    return np.add.accumulate(np.concatenate([first, steps], axis=1), axis=1) / float(length)


def _odd_default_trend(period: int, seasonal: int) -> int:
    trend = int(np.ceil(1.5 * period / (1 - 1.5 / seasonal)))
    return trend + ((trend % 2) == 0)


def stl_batch(
    y: np.ndarray,
    period: int,
    seasonal: int = 7,
    trend: int | None = None,
    low_pass: int | None = None,
    seasonal_deg: int = 1,
    trend_deg: int = 1,
    low_pass_deg: int = 1,
    seasonal_jump: int = 1,
    trend_jump: int = 1,
    low_pass_jump: int = 1,
    inner_iter: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """Seasonal and trend of ``STL(row, period, ...).fit()`` (non-robust) for every row of ``y``.

    Same parameters and defaults as ``statsmodels.tsa.seasonal.STL`` (``inner_iter`` 5 as its non-robust
    default); returns ``(seasonal, trend)`` arrays shaped like ``y``.
    """
    y = np.ascontiguousarray(np.atleast_2d(y), dtype=np.float64)
    rows, n = y.shape
    if period < 2:
        raise ValueError("period must be a positive integer >= 2")
    if seasonal < 3 or seasonal % 2 == 0:
        raise ValueError("seasonal must be an odd positive integer >= 3")
    trend = _odd_default_trend(period, seasonal) if trend is None else trend
    if trend < 3 or trend % 2 == 0 or trend <= period:
        raise ValueError("trend must be an odd positive integer >= 3 where trend > period")
    if low_pass is None:
        low_pass = period + 1
        low_pass += (low_pass % 2) == 0
    trend_plan = loess_plan(n, trend, trend_deg, trend_jump)
    low_plan = loess_plan(n, low_pass, low_pass_deg, low_pass_jump)
    trend_arr = np.zeros((rows, n))
    season = np.zeros((rows, n))
    for _ in range(inner_iter):
        c = _cycle_subseries(y - trend_arr, period, seasonal, seasonal_deg, seasonal_jump)
        low = _moving_average(_moving_average(_moving_average(c, period), period), 3)
        low = apply_plan(low_plan, low)
        season = c[:, period : period + n] - low
        trend_arr = apply_plan(trend_plan, y - season)
    return season, trend_arr


def mstl_batch(
    y: np.ndarray,
    periods: Sequence[int],
    iterate: int = 2,
    trend_jump: int = 1,
    seasonal_jump: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``MSTL(row, periods=periods, stl_kwargs={trend_jump, seasonal_jump}).fit()`` for every row of ``y``.

    Follows statsmodels: periods sorted ascending, seasonal windows 7 + 4i (i = 1..k), periods at or above
    half the length dropped, ``iterate`` passes when several periods remain (one otherwise). Returns
    ``(seasonal summed over periods, trend, resid)``.
    """
    y = np.ascontiguousarray(np.atleast_2d(y), dtype=np.float64)
    rows, n = y.shape
    windows = tuple(7 + 4 * i for i in range(1, len(periods) + 1))
    ps = sorted(int(p) for p in periods)
    ps = [p for p in ps if p < n / 2]
    windows = windows[: len(ps)]
    if not ps:
        raise ValueError(f"MSTL: no period below half the series length {n}")
    seasonals = np.zeros((len(ps), rows, n))
    deseas = y
    trend = np.zeros_like(y)
    for _ in range(1 if len(ps) == 1 else iterate):
        for i, (p, w) in enumerate(zip(ps, windows, strict=True)):
            deseas = deseas + seasonals[i]
            s, trend = stl_batch(deseas, p, seasonal=w, trend_jump=trend_jump, seasonal_jump=seasonal_jump)
            seasonals[i] = s
            deseas = deseas - s
    return seasonals.sum(axis=0), trend, deseas - trend
