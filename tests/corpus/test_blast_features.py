"""BLAST metrics and feature vectors: known properties, and the fast path against a slow direct reference.

The slow reference below is written the way the BLAST reference code computes each metric: one series at a
time with statsmodels' ``STL``/``MSTL``/``adfuller``/``kpss``/``OLS``/``het_arch``, an O(n^2) Mann-Kendall
S, the `hurst` package's R/S loops, and bins from ``np.arange`` edges. ``benchmarks/bench_blast.py`` loads
this module by path to time it against the fast path.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from corpus.blast.features import Metrics, compute_metrics, prepare_series
from corpus.blast.vectors import DIM, encode, pack, unpack

# ------------------------------------------------------------------------------------------------------
# slow reference implementation (one series at a time, direct library calls)
# ------------------------------------------------------------------------------------------------------


# A constant window has no spread to measure: stationary, no trend, no season, no ARCH effect (the definitions'
# degenerate values, shared by the reference and the expectation for the fast path).
CONSTANT_WINDOW_METRICS: dict[str, float] = dict(
    stationarity=1, trend=0, tau=0.0, season_count=0, season_strength=0.0, cv=0.0, hurst=0.0, arch=1, outliers=0.0
)


def reference_prepare(values: np.ndarray, min_length: int = 512, window: int = 2039) -> np.ndarray | None:
    """Trim to the first..last observed non-zero point, refuse short spans, interpolate, first window."""
    from scipy.interpolate import interp1d

    x = np.asarray(values, dtype=np.float64)
    keep = [i for i in range(len(x)) if not np.isnan(x[i]) and np.isfinite(x[i]) and x[i] != 0]
    if not keep:
        return None
    x = x[keep[0] : keep[-1] + 1]
    if len(x) < min_length:
        return None
    x = np.where(np.isinf(x), np.nan, x)
    ok = np.isfinite(x)
    x = interp1d(np.where(ok)[0], x[ok], kind="linear", fill_value="extrapolate")(np.arange(len(x)))
    return x[:window]


def _ref_stationarity(x: np.ndarray) -> int:
    import statsmodels.tsa.stattools as ts

    if np.std(x) == 0:
        return 1
    try:
        d = np.diff(x)
        p = [
            ts.adfuller(x, regression="ct", autolag="AIC", result_object=False)[1],
            ts.adfuller(x, regression="ctt", autolag="BIC", result_object=False)[1],
            ts.adfuller(d, regression="n", autolag="AIC", result_object=False)[1],
            ts.adfuller(d, regression="c", autolag="BIC", result_object=False)[1],
        ]
        k = [
            ts.kpss(x, regression="ct", result_object=False)[1],
            ts.kpss(x, regression="c", result_object=False)[1],
        ]
        return int(all(v < 0.05 for v in p) and all(v > 0.05 for v in k))
    except Exception:
        return 0


def _ref_mann_kendall(x: np.ndarray) -> tuple[int, float]:
    from scipy.stats import norm

    n = len(x)
    s = 0.0
    for k in range(n - 1):
        s += np.sum(x[k + 1 :] > x[k]) - np.sum(x[k + 1 :] < x[k])
    _, tp = np.unique(x, return_counts=True)
    var_s = (n * (n - 1) * (2 * n + 5) - np.sum(tp * (tp - 1) * (2 * tp + 5))) / 18
    z = (s - 1) / np.sqrt(var_s) if s > 0 else (s + 1) / np.sqrt(var_s) if s < 0 else 0.0
    h = abs(z) > norm.ppf(1 - 0.05 / 2)
    trend = 1 if (z > 0 and h) else -1 if (z < 0 and h) else 0
    return trend, s / (0.5 * n * (n - 1))


def _ref_seasonality(x: np.ndarray) -> tuple[int, float]:
    from statsmodels.tsa.seasonal import STL
    from statsmodels.tsa.stl.mstl import MSTL

    n = len(x)
    half = n // 2
    seasonal = np.asarray(STL(x, period=half).fit().seasonal)
    spectrum = np.abs(np.fft.fft(seasonal))
    freqs = np.fft.fftfreq(n)
    cand = [(float(spectrum[b]), -b, b) for b in range(2, n // 2)]
    cand.sort(reverse=True)  # strongest first; equal power: lower frequency first
    periods: list[int] = []
    powers: list[float] = []
    for power, _, b in cand[:3]:
        p = int(np.round(1 / freqs[b]))
        if p not in periods:
            periods.append(p)
            powers.append(power)
    kept = [(p, w) for p, w in zip(periods, powers, strict=True) if p < half - 1]
    if not kept:
        return 0, 0.0
    top = max(w for _, w in kept)
    kept = [(p, w) for p, w in kept if w >= 0.2 * top]
    jump = 5 if n > 200 else 1
    if len(kept) == 1:
        res = STL(x, period=kept[0][0], trend_jump=jump, seasonal_jump=jump).fit()
        s, r = np.asarray(res.seasonal), np.asarray(res.resid)
    else:
        res = MSTL(
            x, periods=[p for p, _ in kept], stl_kwargs={"trend_jump": jump, "seasonal_jump": jump}
        ).fit()
        s, r = np.sum(np.asarray(res.seasonal), axis=1), np.asarray(res.resid)
    return len(kept), max(0.0, 1 - np.var(r) / np.var(s + r))


def _ref_hurst(x: np.ndarray) -> float:
    """``hurst.compute_Hc(x, kind='change', simplified=False)`` (package 0.0.5), 0 on its errors."""
    n = len(x)
    if n < 100:
        return 0.0
    sizes = [int(10**e) for e in np.arange(math.log10(10), math.log10(n - 1), 0.25)] + [n]
    rs_means = []
    old = np.seterr(all="raise")
    try:
        for w in sizes:
            rs = []
            for start in range(0, n, w):
                if start + w > n:
                    break
                incs = x[start : start + w]
                z = np.cumsum(incs - np.sum(incs) / len(incs))
                r, sd = max(z) - min(z), np.std(incs, ddof=1)
                if r != 0 and sd != 0:
                    rs.append(r / sd)
            rs_means.append(np.mean(rs))
        a = np.vstack([np.log10(sizes), np.ones(len(rs_means))]).T
        return float(np.linalg.lstsq(a, np.log10(rs_means), rcond=-1)[0][0])
    except (FloatingPointError, ValueError, np.linalg.LinAlgError):
        return 0.0
    finally:
        np.seterr(**old)


def _ref_arch(x: np.ndarray) -> int:
    import statsmodels.api as sm
    from statsmodels.stats.diagnostic import het_arch

    resid = sm.OLS(x, sm.add_constant(np.arange(len(x)))).fit().resid
    try:
        p = het_arch(resid, result_object=False)[1]
    except Exception:
        p = 0.0
    return 0 if p <= 0.05 else 1


def reference_metrics(window: np.ndarray) -> dict[str, float]:
    """The nine metrics of one prepared window, straight from the definitions."""
    x = np.asarray(window, dtype=np.float64)
    std = np.std(x)
    x = (x - np.mean(x)) / (std if std != 0 else 1.0)
    if np.all(x == x[0]):
        return dict(CONSTANT_WINDOW_METRICS)
    trend, tau = _ref_mann_kendall(x)
    count, strength = _ref_seasonality(x)
    y = x - np.min(x)
    cv = np.std(y) / np.mean(y) if np.mean(y) >= 1e-5 else 0.0
    z = (x - np.mean(x)) / np.std(x)
    return dict(
        stationarity=_ref_stationarity(x),
        trend=trend,
        tau=tau,
        season_count=count,
        season_strength=strength,
        cv=cv,
        hurst=_ref_hurst(x),
        arch=_ref_arch(x),
        outliers=np.sum(np.abs(z) > 1.645) / len(z),
    )


def _ref_bin(value: float, lo: float, hi: float, step: float) -> np.ndarray:
    bins = np.arange(lo, hi, step)
    idx = 0 if value < lo else len(bins) - 1 if value > hi else np.digitize(value, bins) - 1
    v = np.zeros(len(bins))
    v[idx] = 1
    return v


def reference_vector(m: dict[str, float]) -> np.ndarray:
    """The 61-dim one-hot vector of one series' metrics (the reference's construction)."""
    count, strength = m["season_count"], m["season_strength"]
    if abs(m["tau"]) == 1:
        count, strength = 0, 0.0
    parts = [
        np.eye(2)[0 if m["stationarity"] == 0 else 1],
        np.eye(3)[int(m["trend"]) + 1],
        _ref_bin(m["tau"], -1, 1, 0.1),
        np.eye(4)[int(count)],
        _ref_bin(strength, 0, 1, 0.1),
        _ref_bin(m["cv"], 0, 1.2, 0.2),
        _ref_bin(m["hurst"], 0, 1, 0.1),
        np.eye(2)[0 if m["arch"] == 0 else 1],
        _ref_bin(m["outliers"], 0, 0.16, 0.04),
    ]
    return np.concatenate(parts).astype(np.uint8)


def reference_features(values: np.ndarray) -> tuple[dict[str, float], np.ndarray] | None:
    import statsmodels.api  # noqa: F401  - imported first: it installs "always" filters for its own warnings

    window = reference_prepare(values)
    if window is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = reference_metrics(window)
    return m, reference_vector(m)


# ------------------------------------------------------------------------------------------------------
# fixtures: series with known character
# ------------------------------------------------------------------------------------------------------


def pinned_series() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20240611)
    t = np.arange(1024)
    ar = np.zeros(700)
    e = rng.standard_normal(700)
    for i in range(1, 700):
        ar[i] = 0.7 * ar[i - 1] + e[i]
    gaps = 2.0 * np.sin(2 * np.pi * np.arange(1500) / 24) + 0.3 * rng.standard_normal(1500) + 5.0
    gaps[rng.choice(1500, 150, replace=False)] = np.nan
    gaps[:20] = np.nan
    return {
        "sine": np.sin(2 * np.pi * t / 32) + 0.05 * rng.standard_normal(1024),
        "random_walk": np.cumsum(rng.standard_normal(1024)),
        "white_noise": rng.standard_normal(1024),
        "trend_noise": 0.01 * t + rng.standard_normal(1024),
        "ar1": ar,
        "constant": np.full(800, 3.5),
        "nan_gaps": gaps,
        "heavy_tailed": rng.standard_t(2, 2500),
    }


def fast_features(series: dict[str, np.ndarray]) -> tuple[Metrics, np.ndarray]:
    windows = []
    for name, values in series.items():
        w, reason = prepare_series(values, 512, 2039)
        assert reason is None, f"{name}: {reason}"
        windows.append(w)
    metrics, errors = compute_metrics(windows)
    assert errors == [None] * len(windows)
    return metrics, encode(metrics)


@pytest.fixture(scope="module", autouse=True)
def _one_blas_thread():
    """Both paths single-threaded: the machine is shared, and oversubscribed BLAS threads crawl."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def pinned() -> dict[str, np.ndarray]:
    return pinned_series()


@pytest.fixture(scope="module")
def fast(pinned: dict[str, np.ndarray]) -> tuple[Metrics, np.ndarray]:
    return fast_features(pinned)


# ------------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------------


def test_pinned_vectors_match_slow_reference(
    pinned: dict[str, np.ndarray], fast: tuple[Metrics, np.ndarray]
) -> None:
    metrics, vectors = fast
    assert vectors.shape == (len(pinned), DIM) and (vectors.sum(axis=1) == 9).all()
    for i, (name, values) in enumerate(pinned.items()):
        ref = reference_features(values)
        assert ref is not None, name
        ref_m, ref_v = ref
        got = metrics.row(i)
        for key in ("stationarity", "trend", "season_count", "arch"):
            assert got[key] == ref_m[key], f"{name}: {key} fast {got[key]} != reference {ref_m[key]}"
        for key in ("tau", "season_strength", "cv", "hurst", "outliers"):
            assert got[key] == pytest.approx(ref_m[key], rel=1e-7, abs=1e-9), f"{name}: {key}"
        np.testing.assert_array_equal(vectors[i], ref_v, err_msg=name)


def test_known_properties(fast: tuple[Metrics, np.ndarray], pinned: dict[str, np.ndarray]) -> None:
    metrics, _ = fast
    row = {name: metrics.row(i) for i, name in enumerate(pinned)}
    sine, walk, noise = row["sine"], row["random_walk"], row["white_noise"]
    assert sine["season_count"] >= 1 and sine["season_strength"] > 0.9
    assert walk["stationarity"] == 0 and walk["hurst"] > 0.8
    assert noise["stationarity"] == 1 and noise["season_strength"] < 0.5 and abs(noise["hurst"] - 0.5) < 0.15
    assert noise["trend"] == 0 and abs(noise["tau"]) < 0.05
    assert row["trend_noise"]["trend"] == 1 and row["trend_noise"]["stationarity"] == 0
    assert row["constant"] == CONSTANT_WINDOW_METRICS
    # N(0, 1) has 10% of |z| > 1.645; a t(2) sample's huge std leaves far fewer, and its deep minimum a low cv
    assert 0.07 < noise["outliers"] < 0.13 and row["heavy_tailed"]["outliers"] < 0.06
    assert row["heavy_tailed"]["cv"] < 0.1 < noise["cv"]
    assert row["nan_gaps"]["season_count"] >= 1 and row["nan_gaps"]["season_strength"] > 0.8


def test_prepare_trims_interpolates_and_refuses() -> None:
    x = np.r_[np.zeros(5), np.nan, np.arange(1.0, 601.0), np.zeros(3)]
    x[100] = np.nan
    x[200] = np.inf
    w, reason = prepare_series(x, 512, 2039)
    assert reason is None and len(w) == 600 and w[0] == 1.0 and w[-1] == 600.0
    np.testing.assert_allclose(w, np.arange(1.0, 601.0))  # the gaps are on a line: interpolation is exact
    w, reason = prepare_series(np.r_[np.zeros(100), np.ones(300)], 512, 2039)
    assert w is None and "too short: 300 points" in reason
    w, reason = prepare_series(np.full(1000, np.nan), 512, 2039)
    assert w is None and "no observed non-zero" in reason
    w, _ = prepare_series(np.arange(1.0, 5001.0), 512, 2039)
    assert len(w) == 2039 and w[-1] == 2039.0


def test_monotone_series_drop_seasonality_and_pack_roundtrip() -> None:
    m = Metrics.empty(3)
    m.tau[:] = [1.0, -1.0, 0.3]
    m.season_count[:] = 2
    m.season_strength[:] = 0.95
    m.cv[:] = [5.0, -1.0, 0.5]  # beyond the range -> end bins
    v = encode(m)
    assert (v.sum(axis=1) == 9).all()
    count_dims = slice(2 + 3 + 20, 2 + 3 + 20 + 4)
    assert v[0, count_dims].tolist() == [1, 0, 0, 0] and v[2, count_dims].tolist() == [0, 0, 1, 0]
    cv_dims = slice(2 + 3 + 20 + 4 + 10, 2 + 3 + 20 + 4 + 10 + 6)
    assert v[0, cv_dims].tolist() == [0, 0, 0, 0, 0, 1] and v[1, cv_dims].tolist() == [1, 0, 0, 0, 0, 0]
    packed = pack(v)
    assert packed.dtype == np.uint64
    np.testing.assert_array_equal(unpack(packed), v)


def test_batched_equals_one_by_one(pinned: dict[str, np.ndarray], fast: tuple[Metrics, np.ndarray]) -> None:
    """Batch composition must not change a series' vector (determinism across chunkings and workers)."""
    _, vectors = fast
    names = list(pinned)
    for i in (0, 2, 4):
        _, v = fast_features({names[i]: pinned[names[i]]})
        np.testing.assert_array_equal(v[0], vectors[i])
