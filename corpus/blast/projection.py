"""UMAP projection of the feature vectors and the grid of cells BLAST balances over.

As the reference: UMAP (2 components, Hamming metric, random init) is fitted on a uniform sample of the
vectors, the embedding is min-max scaled on that sample, every vector is transformed and scaled the same way
(clipped into [0, 1]), and lands in cell ``(int((g - 1) x), int((g - 1) y))`` of a g x g grid; the stage
stores the cell as ``gx * g + gy``.

One deliberate difference: vectors are binary with nine ones out of 61, so a large corpus holds far fewer
distinct vectors than series. We transform each distinct vector once and give every series the cell of its
vector: identical features always share a cell, and ten million series cost one transform of their distinct
vectors rather than ten million.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from corpus.blast.config import BlastConfig
from corpus.blast.vectors import unpack

# Fewer distinct vectors than this (in the corpus or in the UMAP sample) cannot be embedded meaningfully:
# the distinct vectors are then spread over the grid diagonal instead.
MIN_DISTINCT_FOR_UMAP = 4


@dataclass
class Projection:
    """The cell of every series plus what the manifest and the plot report."""

    cells: np.ndarray  # int32 per series, gx * grid_size + gy
    coords: np.ndarray  # (n_distinct, 2) scaled coordinates of the distinct vectors
    n_distinct: int
    sample_size: int
    method: str


def sample_indices(n: int, cfg: BlastConfig, rng: np.random.Generator) -> np.ndarray:
    """Uniform sample (without replacement) of the vectors UMAP is fitted on, sorted.

    ``umap_sample_share`` of the vectors, at least ``umap_min_sample`` and at most ``umap_max_sample``.
    """
    share = min(max(int(n * cfg.umap_sample_share), cfg.umap_min_sample), cfg.umap_max_sample)
    size = min(n, share)
    return np.sort(rng.choice(n, size=size, replace=False))


def grid_cells(coords: np.ndarray, grid_size: int) -> np.ndarray:
    """``gx * grid_size + gy`` with ``g = int((grid_size - 1) * x)`` on coordinates in [0, 1]."""
    c = np.clip(np.asarray(coords, dtype=np.float64), 0.0, 1.0)
    g = ((grid_size - 1) * c).astype(np.int64)
    return (g[:, 0] * grid_size + g[:, 1]).astype(np.int32)


def _fit_umap(sample: np.ndarray, cfg: BlastConfig) -> object:
    import umap

    model = umap.UMAP(
        n_components=2,
        n_neighbors=min(cfg.umap_n_neighbors, max(2, sample.shape[0] - 1)),
        min_dist=cfg.umap_min_dist,
        metric=cfg.umap_metric,
        init=cfg.umap_init,
        n_epochs=cfg.umap_n_epochs,
        random_state=cfg.seed,
        low_memory=False,
        verbose=False,
    )
    with warnings.catch_warnings():
        # umap-learn warns that random_state forces one thread and that Hamming has no inverse transform
        warnings.simplefilter("ignore")
        model.fit(sample)
    return model


def project(packed: np.ndarray, cfg: BlastConfig, rng: np.random.Generator) -> Projection:
    """Cells of every series from its packed vector (the UMAP stage of BLAST)."""
    packed = np.asarray(packed, dtype=np.uint64)
    distinct, inverse = np.unique(packed, return_inverse=True)
    idx = sample_indices(len(packed), cfg, rng)
    if len(distinct) < MIN_DISTINCT_FOR_UMAP or len(np.unique(packed[idx])) < MIN_DISTINCT_FOR_UMAP:
        coords = np.repeat(np.linspace(0.0, 1.0, len(distinct))[:, None], 2, axis=1)
        return Projection(
            grid_cells(coords, cfg.grid_size)[inverse], coords, len(distinct), len(idx), "diagonal"
        )
    sample = unpack(packed[idx]).astype(np.float32)
    model = _fit_umap(sample, cfg)
    emb = np.asarray(model.embedding_, dtype=np.float64)
    lo, hi = emb.min(axis=0), emb.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = np.asarray(model.transform(unpack(distinct).astype(np.float32)), dtype=np.float64)
    coords = np.clip((raw - lo) / span, 0.0, 1.0)
    return Projection(grid_cells(coords, cfg.grid_size)[inverse], coords, len(distinct), len(idx), "umap")
