"""BLAST's 61-dimensional one-hot feature vector, and its 61-bit packed form.

Nine groups, one hot each (so every vector has exactly nine ones), in this order: stationarity (2), trend
direction (3), Kendall tau (20 bins over [-1, 1)), seasonal count (4: 0-3), seasonal strength (10 bins over
[0, 1)), cv (6 bins over [0, 1.2)), Hurst (10 bins over [0, 1)), ARCH flag (2), outlier share (4 bins over
[0, 0.16)). Values below a range go to its first bin, above it to its last. A perfectly monotone series
(|tau| = 1) has its seasonal count and strength set to 0, as in the reference.

Packed form: bit i of a uint64 is dimension i. Ten million series then need 80 MB, which is what lets the
stage keep every series' vector in memory between its two passes.
"""

from __future__ import annotations

import numpy as np

from corpus.blast.features import Metrics

# (name, lower, upper, number of bins) of the binned groups
TAU_BINS = (-1.0, 1.0, 20)
STRENGTH_BINS = (0.0, 1.0, 10)
CV_BINS = (0.0, 1.2, 6)
HURST_BINS = (0.0, 1.0, 10)
OUTLIER_BINS = (0.0, 0.16, 4)
SEASON_COUNTS = 4

GROUPS: tuple[tuple[str, int], ...] = (
    ("stationarity", 2),
    ("trend", 3),
    ("tau", TAU_BINS[2]),
    ("season_count", SEASON_COUNTS),
    ("season_strength", STRENGTH_BINS[2]),
    ("cv", CV_BINS[2]),
    ("hurst", HURST_BINS[2]),
    ("arch", 2),
    ("outliers", OUTLIER_BINS[2]),
)
DIM = sum(size for _, size in GROUPS)  # 61
OFFSETS = dict(
    zip([g for g, _ in GROUPS], np.cumsum([0] + [s for _, s in GROUPS[:-1]]).tolist(), strict=True)
)


def bin_index(values: np.ndarray, lower: float, upper: float, bins: int) -> np.ndarray:
    """Equal-width bin of each value over [lower, upper); out-of-range values clamp to the end bins.

    NaN (never produced by the metrics) goes to the first bin.
    """
    v = np.asarray(values, dtype=np.float64)
    edges = np.linspace(lower, upper, bins + 1)[:-1]
    idx = np.digitize(v, edges) - 1
    idx = np.clip(idx, 0, bins - 1)
    return np.where(np.isnan(v), 0, idx)


def encode(m: Metrics) -> np.ndarray:
    """``(n, 61)`` uint8 one-hot vectors of a batch of metrics."""
    n = len(m)
    tau = np.asarray(m.tau, dtype=np.float64)
    monotone = np.abs(tau) == 1.0
    count = np.where(monotone, 0, np.clip(m.season_count, 0, SEASON_COUNTS - 1))
    strength = np.where(monotone, 0.0, m.season_strength)
    hot = {
        "stationarity": np.where(m.stationarity == 0, 0, 1),
        "trend": np.clip(np.asarray(m.trend, dtype=np.int64) + 1, 0, 2),
        "tau": bin_index(tau, *TAU_BINS),
        "season_count": count,
        "season_strength": bin_index(strength, *STRENGTH_BINS),
        "cv": bin_index(m.cv, *CV_BINS),
        "hurst": bin_index(m.hurst, *HURST_BINS),
        "arch": np.where(m.arch == 0, 0, 1),
        "outliers": bin_index(m.outliers, *OUTLIER_BINS),
    }
    out = np.zeros((n, DIM), dtype=np.uint8)
    rows = np.arange(n)
    for name, _ in GROUPS:
        out[rows, OFFSETS[name] + np.asarray(hot[name], dtype=np.int64)] = 1
    return out


def pack(vectors: np.ndarray) -> np.ndarray:
    """``(n, 61)`` 0/1 -> ``(n,)`` uint64 with bit i = dimension i."""
    v = np.asarray(vectors, dtype=np.uint8)
    padded = np.zeros((v.shape[0], 64), dtype=np.uint8)
    padded[:, :DIM] = v
    return np.packbits(padded, axis=1, bitorder="little").view("<u8")[:, 0].astype(np.uint64)


def unpack(packed: np.ndarray) -> np.ndarray:
    """``(n,)`` uint64 -> ``(n, 61)`` uint8."""
    p = np.ascontiguousarray(np.asarray(packed, dtype="<u8")).reshape(-1, 1)
    return np.unpackbits(p.view(np.uint8), axis=1, bitorder="little")[:, :DIM]
