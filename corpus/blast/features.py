"""BLAST's per-series metrics, computed for many series at once.

The definitions are those of the BLAST reference (docs/design.md, "BLAST"): trim to the observed
non-zero span, interpolate gaps, score the first ``window`` points z-normalised, and measure stationarity
(ADF x4 + KPSS x2), trend (Mann-Kendall), seasonality (period-``n//2`` STL, FFT peaks, STL/MSTL strength),
volatility (cv), memory (Hurst R/S), heteroscedasticity (ARCH-LM) and outliers.

Why it is fast (the reference needs ~0.67 CPU-s per 1,024-point series): series of equal scored length are
processed as one matrix. STL runs through :mod:`corpus.blast.stl` (cached LOESS weights + BLAS instead of
recomputing tricube weights per point); each ADF test's whole autolag search is one QR factorisation of the
largest lag matrix (nested regressions share it: the residual sum of squares of every prefix of columns is
read off R), batched over series; KPSS, Hurst, ARCH-LM, cv and outliers are plain array code. The results
agree with the statsmodels calls the reference makes to rounding (a test pins the feature vectors).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, fields

import numpy as np
from scipy.stats import chi2, kendalltau, norm
from statsmodels.tsa.adfvalues import mackinnonp

from corpus.blast.stl import mstl_batch, stl_batch

# --- the metric definitions' constants (BLAST reference) -------------------------------------------------
ALPHA = 0.05  # significance level of every test (ADF p <, KPSS p >, Mann-Kendall, ARCH-LM p <=)
# (regression, autolag criterion, on the differenced series?) of the four ADF tests that must all reject
ADF_TESTS: tuple[tuple[str, str, bool], ...] = (
    ("ct", "aic", False),
    ("ctt", "bic", False),
    ("n", "aic", True),
    ("c", "bic", True),
)
KPSS_REGRESSIONS = ("ct", "c")  # both must not reject
KPSS_CRIT = {"c": (0.347, 0.463, 0.574, 0.739), "ct": (0.119, 0.146, 0.176, 0.216)}  # statsmodels' table
KPSS_PVALS = (0.10, 0.05, 0.025, 0.01)
SEASONAL_TOP_K = 3  # FFT peaks considered
SEASONAL_MIN_BIN = 2  # first FFT bin considered (the reference skips bins 0 and 1)
SEASONAL_POWER_SHARE = 0.2  # a peak counts if its power is at least this share of the strongest kept peak
STRENGTH_JUMP = 5  # trend/seasonal LOESS jump of the strength STL/MSTL ...
STRENGTH_JUMP_MIN_LENGTH = 200  # ... when the scored window is longer than this (else 1)
CV_MIN_MEAN = 1e-5  # cv is 0 when the mean of (x - min x) is below this
HURST_MIN_WINDOW = 10  # R/S window sizes: 10**(1, 1.25, ...) below n - 1, plus n (the `hurst` package)
HURST_LOG_STEP = 0.25
HURST_MIN_LENGTH = 100  # the `hurst` package refuses shorter series; the reference then scores H = 0
ARCH_MAX_LAGS = 10  # ARCH-LM lags: min(10, n // 5)
ARCH_LAG_DIVISOR = 5
OUTLIER_Z = 1.645  # |z| above this is an outlier
ADF_QR_CHUNK = 32  # series per batched QR (bounds the lag-matrix memory: 32 x 2,000 x 30 doubles)


@dataclass
class Metrics:
    """The nine BLAST metrics of a batch of series, one array entry per series."""

    stationarity: np.ndarray  # int8, 1 = all six tests say stationary
    trend: np.ndarray  # int8 in {-1, 0, 1}
    tau: np.ndarray  # float64, Kendall tau of the Mann-Kendall test
    season_count: np.ndarray  # int8 in 0..3
    season_strength: np.ndarray  # float64 in [0, 1]
    cv: np.ndarray  # float64
    hurst: np.ndarray  # float64
    arch: np.ndarray  # int8, 0 = heteroscedastic (ARCH-LM p <= ALPHA), 1 = not
    outliers: np.ndarray  # float64, share of |z| > OUTLIER_Z

    @classmethod
    def empty(cls, n: int) -> Metrics:
        ints = {"stationarity", "trend", "season_count", "arch"}
        return cls(**{f.name: np.zeros(n, np.int8 if f.name in ints else np.float64) for f in fields(cls)})

    def __len__(self) -> int:
        return len(self.tau)

    def set_rows(self, rows: np.ndarray, other: Metrics) -> None:
        for f in fields(self):
            getattr(self, f.name)[rows] = getattr(other, f.name)

    def row(self, i: int) -> dict[str, float]:
        return {f.name: getattr(self, f.name)[i].item() for f in fields(self)}

    @classmethod
    def concat(cls, parts: list[Metrics]) -> Metrics:
        if not parts:
            return cls.empty(0)
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})


def constant_metrics(n: int) -> Metrics:
    """The reference's fixed metrics of a constant series: stationary, no trend/season, no ARCH effect."""
    m = Metrics.empty(n)
    m.stationarity[:] = 1
    m.arch[:] = 1
    return m


# --- preprocessing ---------------------------------------------------------------------------------------
def prepare_series(values: np.ndarray, min_length: int, window: int) -> tuple[np.ndarray | None, str | None]:
    """The window BLAST scores for one raw series, or ``(None, reason)`` when it cannot be scored.

    Trim to the first..last point that is observed (finite) and non-zero; refuse spans shorter than
    ``min_length``; interpolate NaN/inf linearly; keep the first ``window`` points.
    """
    x = np.array(values, dtype=np.float64)
    x[~np.isfinite(x)] = np.nan
    valid = np.flatnonzero(~np.isnan(x) & (x != 0))
    if valid.size == 0:
        return None, "no observed non-zero value (all missing or zero)"
    span = x[valid[0] : valid[-1] + 1]
    if span.size < min_length:
        return None, (
            f"too short: {span.size} points from the first to the last observed non-zero value, "
            f"min_length is {min_length}"
        )
    gaps = np.isnan(span)
    if gaps.any():
        pos = np.arange(span.size)
        span[gaps] = np.interp(pos[gaps], pos[~gaps], span[~gaps])
    return span[:window], None


def znorm(x: np.ndarray) -> np.ndarray:
    """Row-wise z-score (population std; a zero std divides by 1, like the reference)."""
    mean = x.mean(axis=1, keepdims=True)
    std = x.std(axis=1, keepdims=True)
    return (x - mean) / np.where(std == 0, 1.0, std)


# --- stationarity ----------------------------------------------------------------------------------------
def _trend_columns(nobs: int, regression: str) -> np.ndarray:
    """Deterministic regressors of an ADF regression; t is scaled (same column space, better conditioning)."""
    t = np.arange(1, nobs + 1, dtype=np.float64) / nobs
    cols = {"n": [], "c": [np.ones(nobs)], "ct": [np.ones(nobs), t], "ctt": [np.ones(nobs), t, t * t]}[
        regression
    ]
    return np.stack(cols, axis=1) if cols else np.zeros((nobs, 0))


def _adf_level_tstat(x: np.ndarray, xdiff: np.ndarray, lag: int, regression: str) -> np.ndarray:
    """t-statistic of the lagged level in the ADF regression with ``lag`` lags, for every row."""
    rows, n = x.shape
    nobs = n - 1 - lag
    det = _trend_columns(nobs, regression)
    k = det.shape[1] + lag + 1
    a = np.empty((rows, nobs, k + 1))
    a[:, :, : det.shape[1]] = det[None]
    for i in range(1, lag + 1):
        a[:, :, det.shape[1] + i - 1] = xdiff[:, lag - i : n - 1 - i]
    a[:, :, k - 1] = x[:, lag : n - 1]  # the level, last, so its coefficient is read off R
    a[:, :, k] = xdiff[:, lag:]
    r = np.linalg.qr(a, mode="r")
    ssr = r[:, k, k] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.sqrt(ssr / (nobs - k))
        return r[:, k - 1, k] * np.sign(r[:, k - 1, k - 1]) / s


def adf_pvalues(x: np.ndarray, regression: str, autolag: str) -> np.ndarray:
    """``adfuller(row, regression=regression, autolag=autolag)[1]`` for every row of ``x`` (NaN on failure).

    The autolag search fits ``maxlag + 1`` nested OLS regressions on the same sample; their residual sums of
    squares all come from one QR of the full lag matrix (the tail of R's last column), batched over rows.
    """
    rows, n = x.shape
    ntrend = 0 if regression == "n" else len(regression)
    maxlag = min(n // 2 - ntrend - 1, int(np.ceil(12.0 * np.power(n / 100.0, 1 / 4.0))))
    out = np.full(rows, np.nan)
    if maxlag < 0:
        return out
    const = np.ptp(x, axis=1) == 0  # statsmodels raises on a constant input
    xdiff = np.diff(x, axis=1)
    nobs = n - 1 - maxlag
    det = _trend_columns(nobs, regression)
    nd = det.shape[1]
    k_full = nd + 1 + maxlag
    best = np.zeros(rows, dtype=np.int64)
    for s in range(0, rows, ADF_QR_CHUNK):
        sel = slice(s, s + ADF_QR_CHUNK)
        xs, ds = x[sel], xdiff[sel]
        a = np.empty((xs.shape[0], nobs, k_full + 1))
        a[:, :, :nd] = det[None]
        a[:, :, nd] = xs[:, maxlag : n - 1]
        for i in range(1, maxlag + 1):
            a[:, :, nd + i] = ds[:, maxlag - i : n - 1 - i]
        a[:, :, k_full] = ds[:, maxlag:]
        r = np.linalg.qr(a, mode="r")
        tail = r[:, :, k_full] ** 2  # (rows, k_full + 1)
        ssr_from = np.cumsum(tail[:, ::-1], axis=1)[:, ::-1]  # ssr_from[:, k] = SSR using the first k columns
        ks = np.arange(nd + 1, k_full + 1)
        ssr = ssr_from[:, ks]
        with np.errstate(divide="ignore", invalid="ignore"):
            llf = -nobs / 2.0 * (np.log(2 * np.pi) + np.log(ssr / nobs) + 1.0)
        penalty = 2.0 * ks if autolag == "aic" else np.log(nobs) * ks
        ic = -2.0 * llf + penalty[None, :]
        ic = np.where(np.isnan(ic), np.inf, ic)
        best[sel] = np.argmin(ic, axis=1)  # first minimum = fewest lags, like min() over (ic, lag) tuples
    tstat = np.full(rows, np.nan)
    for lag in np.unique(best):
        idx = np.flatnonzero(best == lag)
        for s in range(0, idx.size, ADF_QR_CHUNK):
            sub = idx[s : s + ADF_QR_CHUNK]
            tstat[sub] = _adf_level_tstat(x[sub], xdiff[sub], int(lag), regression)
    for i in range(rows):
        if not const[i] and np.isfinite(tstat[i]):
            out[i] = mackinnonp(float(tstat[i]), regression=regression, N=1)
    return out


def _autocov_sums(e: np.ndarray, max_lag: int) -> np.ndarray:
    """``g[:, i] = dot(e[i:], e[:n-i])`` for i = 0..max_lag, by FFT (all lags at once)."""
    rows, n = e.shape
    size = 1 << int(math.ceil(math.log2(2 * n)))
    f = np.fft.rfft(e, size, axis=1)
    return np.fft.irfft(f * np.conj(f), size, axis=1)[:, : max_lag + 1]


def kpss_pvalues(x: np.ndarray, regression: str) -> np.ndarray:
    """``kpss(row, regression=regression, nlags="auto")[1]`` for every row (Hobijn et al. autolag)."""
    rows, n = x.shape
    if regression == "ct":
        t = np.arange(1, n + 1, dtype=np.float64)
        tc = t - t.mean()
        xc = x - x.mean(axis=1, keepdims=True)
        beta = xc @ tc / (tc @ tc)
        e = xc - beta[:, None] * tc[None, :]
    else:
        e = x - x.mean(axis=1, keepdims=True)
    g = _autocov_sums(e, n - 1)
    g[:, 0] = np.sum(e * e, axis=1)
    covlags = int(np.power(n, 2.0 / 9.0))
    i = np.arange(1, covlags + 1)
    prods = g[:, 1 : covlags + 1] / (n / 2.0)
    s0 = g[:, 0] / n + prods.sum(axis=1)
    s1 = (i[None, :] * prods).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s_hat = s1 / s0
        gamma = 1.1447 * np.power(s_hat * s_hat, 1.0 / 3.0)
    pvals = np.full(rows, np.nan)
    eta = np.sum(np.cumsum(e, axis=1) ** 2, axis=1) / (n**2)
    crit = KPSS_CRIT[regression]
    for r in range(rows):
        if not np.isfinite(gamma[r]):
            continue
        nlags = min(int(gamma[r] * np.power(n, 1.0 / 3.0)), n - 1)
        lags = np.arange(1, nlags + 1)
        sig = (g[r, 0] + np.sum(2.0 * g[r, 1 : nlags + 1] * (1.0 - lags / (nlags + 1.0)))) / n
        with np.errstate(divide="ignore", invalid="ignore"):
            stat = eta[r] / sig
        pvals[r] = np.interp(stat, crit, KPSS_PVALS)
    return pvals


def stationarity(x: np.ndarray) -> np.ndarray:
    """1 where all six tests agree on stationarity, else 0 (a failed test counts as 'not stationary')."""
    ok = np.ones(x.shape[0], dtype=bool)
    dx = np.diff(x, axis=1)
    for regression, autolag, on_diff in ADF_TESTS:
        p = adf_pvalues(dx if on_diff else x, regression, autolag)
        ok &= p < ALPHA  # NaN (the reference's exception path) compares False
    for regression in KPSS_REGRESSIONS:
        ok &= kpss_pvalues(x, regression) > ALPHA
    return ok.astype(np.int8)


# --- trend -----------------------------------------------------------------------------------------------
def mann_kendall(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pymannkendall ``original_test`` (alpha 0.05): direction in {-1, 0, 1} and Kendall tau, per row.

    S comes from scipy's O(n log n) ``kendalltau`` against time (tau_b with no ties in time gives
    S = tau_b * sqrt(n0 * (n0 - ties in x)) exactly, up to rounding to the integer it is).
    """
    rows, n = x.shape
    t = np.arange(n)
    n0 = n * (n - 1) / 2.0
    z_crit = norm.ppf(1 - ALPHA / 2)
    trend = np.zeros(rows, dtype=np.int8)
    tau = np.zeros(rows)
    for r in range(rows):
        _, counts = np.unique(x[r], return_counts=True)
        ties = float(np.sum(counts * (counts - 1) / 2.0))
        tb = kendalltau(t, x[r]).statistic
        if not np.isfinite(tb):
            continue
        s = float(np.round(tb * math.sqrt(n0 * (n0 - ties))))
        var_s = (n * (n - 1) * (2 * n + 5) - float(np.sum(counts * (counts - 1.0) * (2 * counts + 5)))) / 18.0
        if s > 0:
            z = (s - 1) / math.sqrt(var_s)
        elif s < 0:
            z = (s + 1) / math.sqrt(var_s)
        else:
            z = 0.0
        if abs(z) > z_crit:
            trend[r] = 1 if z > 0 else -1
        tau[r] = s / n0
    return trend, tau


# --- seasonality -----------------------------------------------------------------------------------------
def seasonal_periods(seasonal: np.ndarray) -> list[list[int]]:
    """Periods kept from the top FFT peaks of each row's seasonal component (the reference's rule).

    Top ``SEASONAL_TOP_K`` magnitudes among bins 2..n/2-1 (ties: lower frequency first), periods
    ``round(1/f)`` deduplicated keeping the stronger peak, kept if below ``n // 2 - 1`` and with power at
    least ``SEASONAL_POWER_SHARE`` of the strongest kept one.
    """
    rows, n = seasonal.shape
    freqs = np.fft.fftfreq(n)[SEASONAL_MIN_BIN : n // 2]
    power = np.abs(np.fft.rfft(seasonal, axis=1))[:, SEASONAL_MIN_BIN : n // 2]
    limit = n // 2 - 1
    out: list[list[int]] = []
    if power.shape[1] == 0:
        return [[] for _ in range(rows)]
    top = np.argsort(-power, axis=1, kind="stable")[:, :SEASONAL_TOP_K]
    for r in range(rows):
        periods: list[int] = []
        powers: list[float] = []
        for b in top[r]:
            p = int(np.round(1.0 / freqs[b]))
            if p in periods:
                continue
            periods.append(p)
            powers.append(float(power[r, b]))
        kept = [(p, w) for p, w in zip(periods, powers, strict=True) if p < limit]
        if kept:
            thr = SEASONAL_POWER_SHARE * max(w for _, w in kept)
            kept = [(p, w) for p, w in kept if w >= thr]
        out.append([p for p, _ in kept])
    return out


def _strength(seasonal: np.ndarray, resid: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        s = 1.0 - np.var(resid, axis=1) / np.var(seasonal + resid, axis=1)
    return np.where(np.isfinite(s), np.maximum(0.0, s), 0.0)


def seasonality(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Seasonal peak count (0-3) and strength per row (STL for one period, MSTL for several)."""
    rows, n = x.shape
    count = np.zeros(rows, dtype=np.int8)
    strength = np.zeros(rows)
    if n // 2 < 2:
        return count, strength
    seasonal, _ = stl_batch(x, n // 2)
    periods = seasonal_periods(seasonal)
    jump = STRENGTH_JUMP if n > STRENGTH_JUMP_MIN_LENGTH else 1
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for r, ps in enumerate(periods):
        count[r] = len(ps)
        if ps:
            groups[tuple(sorted(ps)) if len(ps) > 1 else (ps[0],)].append(r)
    for key in sorted(groups):
        idx = np.array(groups[key])
        xs = x[idx]
        if len(key) == 1:
            s, t = stl_batch(xs, key[0], trend_jump=jump, seasonal_jump=jump)
            strength[idx] = _strength(s, xs - s - t)
        else:
            s, _, resid = mstl_batch(xs, key, trend_jump=jump, seasonal_jump=jump)
            strength[idx] = _strength(s, resid)
    return count, strength


# --- volatility, memory, heteroscedasticity, outliers ----------------------------------------------------
def coefficient_of_variation(x: np.ndarray) -> np.ndarray:
    y = x - x.min(axis=1, keepdims=True)
    mean = y.mean(axis=1)
    std = y.std(axis=1)
    return np.where(mean >= CV_MIN_MEAN, std / np.where(mean >= CV_MIN_MEAN, mean, 1.0), 0.0)


def hurst_window_sizes(n: int) -> list[int]:
    """The `hurst` package's window sizes for a series of length ``n``."""
    sizes = [int(10**e) for e in np.arange(math.log10(HURST_MIN_WINDOW), math.log10(n - 1), HURST_LOG_STEP)]
    return sizes + [n]


def hurst(x: np.ndarray) -> np.ndarray:
    """Hurst exponent by rescaled range, ``hurst.compute_Hc(row, kind="change", simplified=False)``.

    For each window size: mean R/S over the non-overlapping windows (R/S = range of the cumulated deviations
    from the window mean over the sample std; windows with R or S zero skipped); H is the least-squares
    slope of log10 R/S on log10 size. A size with no usable window is the package's error: H = 0.
    """
    rows, n = x.shape
    if n < HURST_MIN_LENGTH:
        return np.zeros(rows)
    sizes = hurst_window_sizes(n)
    log_rs = np.empty((rows, len(sizes)))
    usable = np.ones(rows, dtype=bool)
    for j, w in enumerate(sizes):
        k = n // w
        blocks = x[:, : k * w].reshape(rows, k, w)
        dev = blocks - (blocks.sum(axis=2, keepdims=True) / w)
        z = np.cumsum(dev, axis=2)
        rng = z.max(axis=2) - z.min(axis=2)
        sd = blocks.std(axis=2, ddof=1)
        good = (rng != 0) & (sd != 0)
        rs = np.where(good, rng / np.where(good, sd, 1.0), 0.0)
        cnt = good.sum(axis=1)
        usable &= cnt > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            log_rs[:, j] = np.log10(rs.sum(axis=1) / cnt)
    lw = np.log10(np.asarray(sizes, dtype=np.float64))
    lwc = lw - lw.mean()
    slope = (log_rs - log_rs.mean(axis=1, keepdims=True)) @ lwc / (lwc @ lwc)
    return np.where(usable & np.isfinite(slope), slope, 0.0)


def arch_flag(x: np.ndarray) -> np.ndarray:
    """ARCH-LM on the residuals of an OLS of x on [1, t]: 0 if p <= ALPHA (heteroscedastic), else 1."""
    rows, n = x.shape
    t = np.arange(n, dtype=np.float64)
    tc = t - t.mean()
    xc = x - x.mean(axis=1, keepdims=True)
    e = xc - (xc @ tc / (tc @ tc))[:, None] * tc[None, :]
    u = e * e
    lags = min(ARCH_MAX_LAGS, n // ARCH_LAG_DIVISOR)
    nobs = n - lags
    a = np.empty((rows, nobs, lags + 2))
    a[:, :, 0] = 1.0
    for i in range(1, lags + 1):
        a[:, :, i] = u[:, lags - i : n - i]
    y = u[:, lags:]
    a[:, :, lags + 1] = y
    flag = np.ones(rows, dtype=np.int8)
    for s in range(0, rows, ADF_QR_CHUNK):
        sel = slice(s, s + ADF_QR_CHUNK)
        r = np.linalg.qr(a[sel], mode="r")
        ssr = r[:, lags + 1, lags + 1] ** 2
        yc = y[sel] - y[sel].mean(axis=1, keepdims=True)
        tss = np.sum(yc * yc, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            lm = nobs * (1.0 - ssr / tss)
        p = chi2.sf(lm, lags)
        flag[sel] = np.where(p <= ALPHA, 0, 1)  # NaN p -> 1, like the reference's comparison
    return flag


def outlier_share(x: np.ndarray) -> np.ndarray:
    std = x.std(axis=1, keepdims=True)
    z = (x - x.mean(axis=1, keepdims=True)) / np.where(std == 0, 1.0, std)
    share = np.mean(np.abs(z) > OUTLIER_Z, axis=1)
    return np.where(std[:, 0] == 0, 0.0, share)


# --- driver ----------------------------------------------------------------------------------------------
def metrics_equal_length(windows: np.ndarray) -> Metrics:
    """All metrics for a ``(rows, n)`` matrix of prepared windows of one length."""
    windows = np.asarray(windows, dtype=np.float64)
    rows = windows.shape[0]
    out = constant_metrics(rows)
    live = np.flatnonzero(np.ptp(windows, axis=1) > 0)
    if live.size == 0:
        return out
    x = znorm(windows[live])
    m = Metrics.empty(live.size)
    m.stationarity = stationarity(x)
    m.trend, m.tau = mann_kendall(x)
    m.season_count, m.season_strength = seasonality(x)
    m.cv = coefficient_of_variation(x)
    m.hurst = hurst(x)
    m.arch = arch_flag(x)
    m.outliers = outlier_share(x)
    out.set_rows(live, m)
    return out


def compute_metrics(windows: list[np.ndarray]) -> tuple[Metrics, list[str | None]]:
    """Metrics of prepared windows of any lengths, grouped by length; also a failure reason per window.

    A group whose batched computation raises is retried one series at a time, so one bad series only
    fails itself (its reason is returned; its metrics row is left at zero).
    """
    out = Metrics.empty(len(windows))
    errors: list[str | None] = [None] * len(windows)
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, w in enumerate(windows):
        by_len[len(w)].append(i)
    for n in sorted(by_len):
        idx = np.array(by_len[n])
        try:
            out.set_rows(idx, metrics_equal_length(np.stack([windows[i] for i in idx])))
        except Exception:  # isolate the offender(s)
            for i in idx:
                try:
                    out.set_rows(np.array([i]), metrics_equal_length(windows[i][None, :]))
                except Exception as exc:  # noqa: BLE001 - the reason goes to the quarantine table
                    errors[i] = f"metric computation failed: {type(exc).__name__}: {exc}"
    return out, errors
