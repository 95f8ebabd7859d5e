"""The BLAST stage's typed configuration (defaults are the reference's values)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from infra.config import StrictModel

# Fields that change how fast or where the stage runs, never what it writes: left out of the fingerprint.
_RUNTIME_ONLY = {"workers", "feature_batch_rows", "score_unit_rows"}
_LIST_OFFSET_LIMIT = 2**31 - 1  # a list<float32> column of one shard must fit int32 offsets
# UMAP's largest fit sample by default; why this value: docs/benchmarks/paper_scale.md (BLAST section)
UMAP_MAX_SAMPLE = 10_000


class BlastConfig(StrictModel):
    """How BLAST scores, projects, balances and writes a training corpus."""


    # scoring
    min_length: int = Field(
        512, ge=32, description="series with a shorter observed non-zero span are quarantined"
    )
    window: int = Field(2039, ge=32, description="points scored per series (the first window of the span)")
    feature_batch_rows: int = Field(256, ge=1, description="series read and scored per batch (memory/speed)")
    score_unit_rows: int = Field(
        2048, ge=1, description="series per scoring task (rounded up to whole batches): the unit spread over cores"
    )
    # projection and grid
    grid_size: int = Field(100, ge=2, le=4096)
    umap_sample_share: float = Field(
        0.1, gt=0.0, le=1.0, description="uniform share of vectors UMAP is fitted on"
    )
    umap_min_sample: int = Field(
        2000,
        ge=10,
        description="fit on at least this many vectors (all when fewer): 10% of a small corpus is too few",
    )
    umap_max_sample: int = Field(
        UMAP_MAX_SAMPLE,
        ge=1,
        description="fit on at most this many vectors (the share applies below it): above it the fit's time "
        "and memory stop growing with the corpus; the transform of every distinct vector still does",
    )
    umap_n_neighbors: int = Field(200, ge=2)
    umap_min_dist: float = Field(0.9, ge=0.0)
    umap_metric: str = "hamming"
    umap_init: Literal["random", "spectral", "pca"] = "random"
    umap_n_epochs: int | None = Field(
        None, ge=1, description="None: umap-learn's default for the sample size"
    )
    # balancing
    longtail_threshold: float = Field(
        0.001, ge=0.0, lt=1.0, description="cumulative share of the rarest cells merged"
    )
    n_samples: int = Field(10_000, ge=1)
    anneal: bool = Field(
        False, description="anneal cell probabilities from uniform (first) to empirical (last)"
    )
    # samples
    sample_length: int = Field(4096, ge=8)
    mixup_rate: float = Field(0.0, ge=0.0, le=1.0, description="share of samples made by grid mixup")
    mixup_max_k: int = Field(3, ge=1, description="a mixup sample mixes k ~ U{1..max_k} balanced draws")
    mixup_alpha: float = Field(1.5, gt=0.0, description="Dirichlet concentration of the mixup weights")
    reproduce_reference_offbyone: bool = Field(
        False, description="drop each series' last observed point when writing samples, as the reference does"
    )
    # execution
    seed: int = Field(0, ge=0)
    workers: int | None = Field(
        None,
        ge=1,
        description="units of each pass run at once (Ray tasks); None: as many as the Ray cluster has CPUs "
        "(results do not depend on it)",
    )
    shard_rows: int = Field(10_000, ge=1, description="samples per output Parquet part")

    @model_validator(mode="after")
    def _check(self) -> BlastConfig:
        if self.umap_max_sample < self.umap_min_sample:
            raise ValueError(
                f"umap_max_sample ({self.umap_max_sample}) must be at least umap_min_sample "
                f"({self.umap_min_sample})"
            )
        if self.shard_rows * self.sample_length > _LIST_OFFSET_LIMIT:
            raise ValueError(
                f"shard_rows * sample_length = {self.shard_rows * self.sample_length} values per shard "
                f"exceeds {_LIST_OFFSET_LIMIT}; lower shard_rows"
            )
        return self

    def fingerprint(self) -> dict[str, Any]:
        """The fields that determine the output (what the version id hashes)."""
        return self.model_dump(mode="json", exclude=_RUNTIME_ONLY)
