"""The ingest engine: connector -> validation -> dedup -> canonical Parquet version.

Connectors only parse. Everything that decides what enters the corpus lives here, once: validation rules,
quarantine with reasons, duplicate detection by content hash, series ids, part sizing, and the
fingerprint that makes re-ingesting unchanged inputs a no-op.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa

from corpus.config import IngestConfig, SourceConfig
from corpus.errors import MalformedInputError
from corpus.schema import CANONICAL_SCHEMA, DUPLICATES_SCHEMA, QUARANTINE_SCHEMA, RawSeries, content_hash
from corpus.sources.registry import get_connector
from infra.fingerprint import code_version, file_fingerprint, stable_hash
from infra.storage import filesystem, to_url
from infra.versions import DatasetVersion, VersionWriter, find_version

log = logging.getLogger(__name__)

CORPUS_PREFIX = "corpus"


@dataclass(frozen=True)
class IngestResult:
    """What one source's ingestion made (or found already made)."""

    source: str
    version: DatasetVersion
    reused: bool

    @property
    def stats(self) -> dict[str, Any]:
        return self.version.manifest["stats"]

    def summary(self) -> dict[str, Any]:
        s = self.stats
        return {
            "source": self.source,
            "series": s["series"],
            "points": s["points"],
            "quarantined": s["quarantined"],
            "duplicates": s["duplicates"],
            "bytes": self.version.manifest["bytes"],
            "reused": self.reused,
            "version": self.version.url,
        }


def dataset_name(source: SourceConfig) -> str:
    return f"{CORPUS_PREFIX}/{source.name}"


def input_fingerprints(paths: list[str], storage_options: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Content fingerprints of every input file (a folder input contributes each file inside it)."""
    prints = []
    for url in paths:
        fs, path = filesystem(url, storage_options)
        if not fs.exists(path):
            raise FileNotFoundError(f"{url}: input not found")
        files = sorted(fs.find(path)) if fs.isdir(path) else [path]
        for file in files:
            fp = file_fingerprint(fs, file)
            fp["path"] = to_url(fs, file)
            prints.append(fp)
    return prints


def version_id_for(source: SourceConfig, cfg: IngestConfig, inputs: list[dict[str, Any]]) -> str:
    identity = {
        "source": source.model_dump(),
        "validation": cfg.model_dump(include={"min_length", "part_max_rows", "part_max_bytes"}),
        "inputs": [{"name": i["path"].rsplit("/", 1)[-1], "sha256": i["sha256"]} for i in inputs],
        "code": code_version("corpus", "infra"),
    }
    return stable_hash(identity)


@lru_cache(maxsize=256)
def check_freq(freq: str) -> str:
    from pandas.tseries.frequencies import to_offset

    try:
        to_offset(freq)
    except ValueError:
        raise ValueError(f"frequency {freq!r} is not a pandas offset alias") from None
    return freq


def validate_series(values: np.ndarray, min_length: int) -> str | None:
    """The reason a series cannot enter the corpus, or None when it is good."""
    n = len(values)
    if n == 0:
        return "empty series"
    finite = np.isfinite(values)
    if not finite.all():
        inf_at = np.flatnonzero(np.isinf(values))
        if inf_at.size:
            return f"non-finite value {values[inf_at[0]]} at index {int(inf_at[0])}"
        if not finite.any():
            return "all values missing (NaN)"
    if n < min_length:
        return f"too short: {n} points < min_length {min_length}"
    return None


class _ColumnBuffer:
    """Accumulate series as columns and hand them over as one Arrow batch (no per-value Python work)."""

    def __init__(self) -> None:
        self.rows: dict[str, list[Any]] = {n: [] for n in CANONICAL_SCHEMA.names if n != "target"}
        self.targets: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.targets)

    def add(self, target: np.ndarray, **columns: Any) -> None:
        self.targets.append(target)
        for name, value in columns.items():
            self.rows[name].append(value)

    def to_batch(self) -> pa.RecordBatch:
        lengths = np.fromiter((len(t) for t in self.targets), dtype=np.int64, count=len(self.targets))
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.concatenate(self.targets) if self.targets else np.zeros(0, np.float32)
        target = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.float32()))
        arrays = []
        for field in CANONICAL_SCHEMA:
            if field.name == "target":
                arrays.append(target)
            else:
                arrays.append(pa.array(self.rows[field.name], type=field.type))
        self.__init__()
        return pa.RecordBatch.from_arrays(arrays, schema=CANONICAL_SCHEMA)


def _quarantine_row(series_id: str, raw: RawSeries, reason: str, values: np.ndarray) -> dict[str, Any]:
    return {"series_id": series_id, "input": raw.input, "reason": reason, "length": len(values), "target": values}


def canonical_rows(
    series: Iterator[RawSeries], source: SourceConfig, cfg: IngestConfig, stats: dict[str, Any],
    quarantine: list[dict[str, Any]], duplicates: list[dict[str, Any]],
) -> Iterator[pa.RecordBatch]:
    """Validate, dedupe and convert a connector's series into canonical batches; bad ones go to ``quarantine``."""
    seen_hashes: dict[str, str] = {}
    seen_ids: set[str] = set()
    buffer = _ColumnBuffer()
    for raw in series:
        series_id = f"{source.name}/{raw.item_id}"
        values = np.asarray(raw.target, dtype=np.float32)
        if values.ndim != 1:
            raise MalformedInputError(raw.input, f"item {raw.item_id}", f"target has shape {values.shape}, not 1-D")
        raw_values = np.asarray(raw.target, dtype=np.float64)
        reason = validate_series(raw_values, cfg.min_length)
        if reason is None and np.isinf(values).any():  # finite float64 that overflows float32
            reason = "value out of float32 range"
        if reason is None and series_id in seen_ids:
            reason = "duplicate series id"
        if reason is not None:
            quarantine.append(_quarantine_row(series_id, raw, reason, values))
            continue
        seen_ids.add(series_id)
        digest = content_hash(values)
        if digest in seen_hashes:
            duplicates.append({"series_id": series_id, "duplicate_of": seen_hashes[digest], "content_hash": digest})
            continue
        seen_hashes[digest] = series_id
        freq = source.freq or raw.freq
        if freq is not None:
            try:
                check_freq(freq)
            except ValueError as exc:
                raise MalformedInputError(raw.input, f"item {raw.item_id}", str(exc)) from None
        start = raw.start
        if start is not None and not isinstance(start, datetime):
            raise MalformedInputError(raw.input, f"item {raw.item_id}", f"start {start!r} is not a timestamp")
        buffer.add(
            values,
            series_id=series_id,
            source=source.name,
            domain=source.domain,
            freq=freq,
            start=start,
            length=len(values),
            content_hash=digest,
            attributes=json.dumps(raw.attributes, sort_keys=True, default=str) if raw.attributes else None,
        )
        stats["series"] += 1
        stats["points"] += len(values)
        stats["missing_points"] += int(np.isnan(values).sum())
        if len(buffer) >= cfg.batch_rows:
            yield buffer.to_batch()
    if len(buffer):
        yield buffer.to_batch()


def ingest_source(
    source: SourceConfig,
    cfg: IngestConfig,
    root: str,
    storage_options: dict[str, Any] | None = None,
    on_progress: Any = None,
) -> IngestResult:
    """Ingest one source into a new version under ``root``, or return the existing one if nothing changed.

    ``on_progress(series, points)`` is called after every batch, for progress bars.
    """
    connector = get_connector(source.kind)
    raw_options = dict(source.options)
    if source.freq and "freq" in connector.options_model.model_fields and "freq" not in raw_options:
        raw_options["freq"] = source.freq  # so connectors that check dates against a grid use the user's freq
    options = connector.parse_options(raw_options)
    inputs = input_fingerprints(source.paths, storage_options)
    version_id = version_id_for(source, cfg, inputs)
    existing = find_version(root, dataset_name(source), version_id, storage_options)
    if existing is not None:
        log.info("source %s unchanged: reusing %s", source.name, existing.url)
        return IngestResult(source.name, existing, reused=True)

    writer = VersionWriter(
        root, dataset_name(source), version_id, CANONICAL_SCHEMA, storage_options,
        part_max_rows=cfg.part_max_rows, part_max_bytes=cfg.part_max_bytes,
    )
    stats: dict[str, Any] = {"series": 0, "points": 0, "missing_points": 0}
    quarantine: list[dict[str, Any]] = []
    duplicates: list[dict[str, Any]] = []
    try:
        series = connector.read(source.paths, options, dict(storage_options or {}))
        for batch in canonical_rows(series, source, cfg, stats, quarantine, duplicates):
            writer.write(batch)
            if on_progress is not None:
                on_progress(stats["series"], stats["points"])
        writer.write_side_table("quarantine", pa.Table.from_pylist(quarantine, schema=QUARANTINE_SCHEMA))
        writer.write_side_table("duplicates", pa.Table.from_pylist(duplicates, schema=DUPLICATES_SCHEMA))
        stats["quarantined"] = len(quarantine)
        stats["duplicates"] = len(duplicates)
        stats["quarantine_reasons"] = _count_reasons(quarantine)
        version = writer.commit(
            config={"source": source.model_dump(), "ingest": cfg.model_dump(exclude={"sources"})},
            inputs=inputs,
            code_version=code_version("corpus", "infra"),
            stats=stats,
        )
    except BaseException:
        writer.abort()
        raise
    if quarantine:
        log.warning("source %s: %d series quarantined (%s)", source.name, len(quarantine), stats["quarantine_reasons"])
    return IngestResult(source.name, version, reused=False)


def _count_reasons(quarantine: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in quarantine:
        key = row["reason"].split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    return counts
