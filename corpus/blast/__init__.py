"""BLAST: balanced sampling of a time-series corpus into training shards (score, project, balance, write).

Public API: :func:`balance` (the stage), :class:`BlastConfig`, and the building blocks other stages or
notebooks may reuse: :func:`prepare_series` / :func:`compute_metrics` (per-series metrics), :func:`encode` /
:func:`pack` / :func:`unpack` (61-dim vectors), :func:`project` (UMAP + grid), the sampling helpers, and
:func:`stl_batch` / :func:`mstl_batch` (statsmodels-exact batched STL/MSTL).
"""

from corpus.blast.balance import DATASET, balance, blast_version_id
from corpus.blast.config import BlastConfig
from corpus.blast.features import Metrics, compute_metrics, prepare_series
from corpus.blast.projection import grid_cells, project
from corpus.blast.sampling import (
    CATCH_ALL_CELL,
    MIXUP_CELL,
    CellIndex,
    balanced_draws,
    longtail_merge,
    mixup,
    normalized_span,
    plan_samples,
)
from corpus.blast.stl import mstl_batch, stl_batch
from corpus.blast.vectors import DIM, encode, pack, unpack

__all__ = [
    "CATCH_ALL_CELL",
    "DATASET",
    "DIM",
    "MIXUP_CELL",
    "BlastConfig",
    "CellIndex",
    "Metrics",
    "balance",
    "blast_version_id",
    "balanced_draws",
    "compute_metrics",
    "encode",
    "grid_cells",
    "longtail_merge",
    "mixup",
    "mstl_batch",
    "normalized_span",
    "pack",
    "plan_samples",
    "prepare_series",
    "project",
    "stl_batch",
    "unpack",
]
