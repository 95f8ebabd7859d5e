"""Typed settings of corpus ingestion: which sources, how to validate, how to size parts."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from infra.config import StrictModel
from infra.fetch import FetchSettings


class SourceOrigin(StrictModel):
    """Where a public source comes from: what a user needs to know before downloading it."""

    licence: str | None = Field(None, description="Licence the upstream publisher states for the files")
    size_bytes: int | None = Field(None, ge=0, description="Expected download size (all files), when known")
    homepage: str | None = Field(None, description="Landing page of the record or dataset card")
    note: str = Field("", description="What the source holds and any caveat (overlap, missing values)")


class SourceConfig(StrictModel):
    """One input source of the corpus: a connector kind, its input URLs and its options."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.\-]+$", description="Dataset name (series ids are name/item)")
    kind: str = Field(..., description="Connector: tsf, m4, ltsf, wiki, lotsa, long")
    paths: list[str] = Field(
        ..., min_length=1,
        description="Input URLs: local paths, s3://..., or https:// and hf://datasets/OWNER/REPO/PATH (downloaded "
        "into the cache and verified before they are read)",
    )
    domain: str = Field("other", description="Domain label stored per series (energy, traffic, web, ...)")
    freq: str | None = Field(None, description="Pandas offset alias; overrides what the connector infers")
    options: dict[str, Any] = Field(default_factory=dict, description="Connector-specific options")
    origin: SourceOrigin | None = Field(None, description="Licence, size and landing page of a public source")
    holdout: int = Field(
        0, ge=0, description="Points cut from the end of every series before it is validated and stored: a "
        "forecast of this dataset's last `holdout` points (its evaluation window) is then never trained on",
    )
    benchmark: str | None = Field(
        None, description="The evaluation benchmark whose dataset this source is (registry name): its series never "
        "enter the training corpus while that benchmark is evaluated",
    )

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        from corpus.sources.registry import CONNECTORS, load_builtin_connectors

        load_builtin_connectors()
        if kind not in CONNECTORS:
            raise ValueError(f"unknown connector {kind!r}; known: {', '.join(sorted(CONNECTORS))}")
        return kind

    @field_validator("benchmark")
    @classmethod
    def _known_benchmark(cls, benchmark: str | None) -> str | None:
        from adaptation.datasets.registry import get_benchmark

        return None if benchmark is None else get_benchmark(benchmark).name  # unknown: lists the registered ones


class IngestConfig(StrictModel):
    """Validation and part sizing shared by every source."""

    min_length: int = Field(8, ge=1, description="Series shorter than this go to quarantine")
    part_max_rows: int = Field(100_000, ge=1, description="Rows per Parquet part at most")
    part_max_bytes: int = Field(128 * 1024 * 1024, ge=1024, description="In-memory bytes per part at most")
    batch_rows: int = Field(2048, ge=1, description="Series buffered before they are converted to Arrow")
    chunk_bytes: int = Field(
        64 * 1024 * 1024, ge=1,
        description="Large uncompressed text inputs are cut into work units of about this many bytes (LOTSA shards "
        "into runs of batches); an execution setting: it changes neither the version id nor the output",
    )
    retries: int = Field(2, ge=0, description="Retries of a source task on transient I/O errors")
    retry_delay_seconds: float = Field(2.0, ge=0)
    fetch: FetchSettings = Field(default_factory=FetchSettings, description="Downloads of https:// and hf:// inputs")
    sources: list[SourceConfig] = Field(default_factory=list)
