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
import pyarrow.parquet as pq

from corpus.config import IngestConfig, SourceConfig
from corpus.errors import MalformedInputError
from corpus.fetch import FetchedSource, fetch_source
from corpus.schema import RawSeries, content_hash
from corpus.sources.registry import IngestUnit, get_connector
from infra.fingerprint import code_version, file_fingerprint
from infra.schemas import CANONICAL_SCHEMA, DUPLICATES_SCHEMA, INGEST_QUARANTINE_SCHEMA, INGEST_UNIT_SCHEMA
from infra.stage_runtime import StageRun, StageWorkError, run_units
from infra.storage import filesystem, join, open_atomic, to_url
from infra.versions import (
    DatasetVersion,
    VersionRecord,
    VersionWriter,
    publish_version,
    version_fingerprint,
    write_version,
)

log = logging.getLogger(__name__)

CORPUS_PREFIX = "corpus"
WORK_FOLDER = "_work/ingest"  # under the storage root, so every node of a cluster sees the units' files
UNIT_COMPRESSION = "lz4"


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
            "units": s.get("units"),
            "ray_nodes": s.get("ray_nodes", {}),
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


def source_inputs(source: SourceConfig, fetched: FetchedSource, storage_options: dict[str, Any] | None
                  ) -> list[dict[str, Any]]:
    """A version's inputs in the order of the source's paths: each local file's path, size and sha256; each
    downloaded file's URL, size and sha256 (the fetch verified it, so it is not hashed twice)."""
    records: list[dict[str, Any]] = []
    for index, path in enumerate(source.paths):
        records.extend(fetched.inputs[index] if index in fetched.inputs
                       else input_fingerprints([path], storage_options))
    return records


def ingest_version_id(source: SourceConfig, cfg: IngestConfig, inputs: list[dict[str, Any]]) -> str:
    """A source version's id: its config (with the URLs, not the cache), the validation knobs, the inputs' names
    and contents, the code."""
    return version_fingerprint({
        "source": source.model_dump(exclude={"origin", "benchmark"}),  # notes and declarations change no data
        "validation": cfg.model_dump(include={"min_length", "part_max_rows", "part_max_bytes"}),
        "inputs": [_input_identity(i) for i in inputs],
        "code": code_version("corpus", "infra"),
    })


def _input_identity(record: dict[str, Any]) -> dict[str, Any]:
    """A local file by name and content (a moved folder keeps its id); a download by URL and content (where the
    cache is does not count, a changed upstream file does)."""
    if "url" in record:
        return {"url": record["url"], "file": record["file"], "sha256": record["sha256"]}
    return {"name": record["path"].rsplit("/", 1)[-1], "sha256": record["sha256"]}


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
    """Accumulate rows as columns and hand them over as one Arrow batch (no per-value Python work)."""

    def __init__(self, schema: pa.Schema = CANONICAL_SCHEMA) -> None:
        self.schema = schema
        self.rows: dict[str, list[Any]] = {n: [] for n in schema.names if n != "target"}
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
        for field in self.schema:
            if field.name == "target":
                arrays.append(target)
            else:
                arrays.append(pa.array(self.rows[field.name], type=field.type))
        self.__init__(self.schema)
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


def prepared_batches(series: Iterator[RawSeries], source: SourceConfig, cfg: IngestConfig) -> Iterator[pa.RecordBatch]:
    """The per-series half of ingestion, which needs no other series: validate, convert, hash.

    Each row is either a candidate (``reason`` null) or bound for quarantine with its reason; rows keep the
    connector's order, so the order-dependent half (:class:`_Admission`) sees exactly the stream it would
    have seen in one process. This is what a work unit's task runs.
    """
    buffer = _ColumnBuffer(INGEST_UNIT_SCHEMA)
    for raw in series:
        # the evaluation window a holdout names never reaches validation, hashing or the parts
        target = raw.target[: max(len(raw.target) - source.holdout, 0)] if source.holdout else raw.target
        with np.errstate(over="ignore"):  # an overflow to inf is found below and quarantined with its reason
            values = np.asarray(target, dtype=np.float32)
        if values.ndim != 1:
            raise MalformedInputError(raw.input, f"item {raw.item_id}", f"target has shape {values.shape}, not 1-D")
        reason = validate_series(np.asarray(target, dtype=np.float64), cfg.min_length)
        if reason is not None and source.holdout:
            reason = f"{reason} (after holding out the last {source.holdout})"
        if reason is None and np.isinf(values).any():  # finite float64 that overflows float32
            reason = "value out of float32 range"
        row: dict[str, Any] = {"series_id": f"{source.name}/{raw.item_id}", "input": raw.input, "reason": reason,
                               "length": len(values), "source": source.name, "domain": source.domain,
                               "freq": None, "start": None, "content_hash": None, "attributes": None, "missing": 0}
        if reason is None:
            start = raw.start
            if start is not None and not isinstance(start, datetime):
                raise MalformedInputError(raw.input, f"item {raw.item_id}", f"start {start!r} is not a timestamp")
            row.update(
                freq=source.freq or raw.freq,
                start=start,
                content_hash=content_hash(values),
                attributes=json.dumps(raw.attributes, sort_keys=True, default=str) if raw.attributes else None,
                missing=int(np.isnan(values).sum()),
            )
        buffer.add(values, **row)
        if len(buffer) >= cfg.batch_rows:
            yield buffer.to_batch()
    if len(buffer):
        yield buffer.to_batch()


_ADMITTED = [f.name for f in CANONICAL_SCHEMA if f.name != "target"]


class _Admission:
    """The order-dependent half of ingestion, run once in the driver over every unit's rows in unit order.

    Duplicate series ids are quarantined, repeated contents recorded as duplicates of their first series, and
    admitted rows rebuilt into batches of ``batch_rows`` exactly as a single stream would have made them, so
    the parts' bytes do not depend on how the input was cut into units.
    """

    def __init__(self, source: SourceConfig, cfg: IngestConfig) -> None:
        self.source, self.cfg = source, cfg
        self.stats: dict[str, Any] = {"series": 0, "points": 0, "missing_points": 0}
        self.quarantine: list[dict[str, Any]] = []
        self.duplicates: list[dict[str, Any]] = []
        self.seen_hashes: dict[str, str] = {}
        self.seen_ids: set[str] = set()
        self.buffer = _ColumnBuffer()

    def admit(self, batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        """Take one batch of prepared rows; yield every canonical batch that fills up."""
        cols = {name: batch.column(name).to_pylist() for name in (*_ADMITTED, "reason", "input", "missing")}
        target = batch.column("target")
        offsets = target.offsets.to_numpy()
        flat = target.values.to_numpy(zero_copy_only=False)
        for i, series_id in enumerate(cols["series_id"]):
            values = flat[offsets[i] : offsets[i + 1]]
            reason = cols["reason"][i] or ("duplicate series id" if series_id in self.seen_ids else None)
            if reason is not None:
                self.quarantine.append({"series_id": series_id, "input": cols["input"][i], "reason": reason,
                                        "length": len(values), "target": values})
                continue
            self.seen_ids.add(series_id)
            digest = cols["content_hash"][i]
            if digest in self.seen_hashes:
                self.duplicates.append(
                    {"series_id": series_id, "duplicate_of": self.seen_hashes[digest], "content_hash": digest}
                )
                continue
            self.seen_hashes[digest] = series_id
            self._check_freq(cols["freq"][i], cols["input"][i], series_id)
            self.buffer.add(values, **{name: cols[name][i] for name in _ADMITTED})
            self.stats["series"] += 1
            self.stats["points"] += len(values)
            self.stats["missing_points"] += cols["missing"][i]
            if len(self.buffer) >= self.cfg.batch_rows:
                yield self.buffer.to_batch()

    def finish(self) -> Iterator[pa.RecordBatch]:
        """The last, partly filled batch."""
        if len(self.buffer):
            yield self.buffer.to_batch()

    def _check_freq(self, freq: str | None, where: str, series_id: str) -> None:
        if freq is None:
            return
        try:
            check_freq(freq)
        except ValueError as exc:
            item = series_id.split("/", 1)[1]
            raise MalformedInputError(where, f"item {item}", str(exc)) from None

    def side_tables(self) -> dict[str, pa.Table]:
        return {
            "quarantine": pa.Table.from_pylist(self.quarantine, schema=INGEST_QUARANTINE_SCHEMA),
            "duplicates": pa.Table.from_pylist(self.duplicates, schema=DUPLICATES_SCHEMA),
        }

    def final_stats(self) -> dict[str, Any]:
        return {
            **self.stats,
            "quarantined": len(self.quarantine),
            "duplicates": len(self.duplicates),
            "quarantine_reasons": _count_reasons(self.quarantine),
        }


def canonical_rows(
    series: Iterator[RawSeries], source: SourceConfig, cfg: IngestConfig, admission: _Admission
) -> Iterator[pa.RecordBatch]:
    """Both halves over one in-process stream: the canonical batches a single process would write."""
    for batch in prepared_batches(series, source, cfg):
        yield from admission.admit(batch)
    yield from admission.finish()


def single_stream(
    source: SourceConfig, cfg: IngestConfig, root: str, storage_options: dict[str, Any] | None = None
) -> DatasetVersion:
    """The whole source in this process as one stream (no Ray, no unit files), published as ``single``.

    The reference the Ray path is held to: tests compare its parts' bytes, the benchmark its speed.
    """
    connector = get_connector(source.kind)
    options = connector.parse_options(source.options)
    admission = _Admission(source, cfg)

    def write(writer: VersionWriter) -> VersionRecord:
        series = connector.read(source.paths, options, dict(storage_options or {}))
        for batch in canonical_rows(series, source, cfg, admission):
            writer.write(batch)
        for name, table in admission.side_tables().items():
            writer.write_side_table(name, table)
        return VersionRecord({}, [], code_version("corpus", "infra"), admission.final_stats())

    return write_version(root, dataset_name(source), "single", CANONICAL_SCHEMA, write, storage_options,
                         part_max_rows=cfg.part_max_rows, part_max_bytes=cfg.part_max_bytes)


@dataclass(frozen=True)
class UnitJob:
    """What one Ray task needs to turn a work unit into its prepared-rows file (all of it picklable)."""

    unit: IngestUnit
    kind: str
    options: Any
    source: SourceConfig
    cfg: IngestConfig
    url: str  # the unit's file under {root}/_work/ingest/...
    storage_options: dict[str, Any]


def run_unit(job: UnitJob) -> int:
    """A Ray task: read one unit, prepare its rows, write them to ``job.url`` atomically; returns the rows.

    Idempotent (a re-run after a lost node rewrites the same file), and bounded in memory: rows stream
    through in batches of ``batch_rows``.
    """
    connector = get_connector(job.kind)
    fs, path = filesystem(job.url, job.storage_options)
    series = connector.read_unit(job.unit, job.options, job.storage_options)
    rows = 0
    try:
        with open_atomic(fs, path) as fh, pq.ParquetWriter(fh, INGEST_UNIT_SCHEMA, compression=UNIT_COMPRESSION) as out:
            for batch in prepared_batches(series, job.source, job.cfg):
                out.write_batch(batch)
                rows += batch.num_rows
    except MalformedInputError as exc:
        if job.unit.chunks == 1:
            raise
        chunk = f"chunk {job.unit.chunk + 1} of {job.unit.chunks}"
        raise MalformedInputError(exc.file, f"{exc.where} ({chunk})", exc.reason) from None
    return rows


def ingest_source(
    source: SourceConfig,
    cfg: IngestConfig,
    root: str,
    storage_options: dict[str, Any] | None = None,
    on_progress: Any = None,
) -> IngestResult:
    """Ingest one source into a new version under ``root``, or return the existing one if nothing changed.

    The connector's work units (files, chunks of large files) run as Ray tasks, each writing its prepared rows
    under ``{root}/_work/ingest/``; the driver then admits them in unit order and writes the version, so the
    parts are the same bytes however many units, nodes or processes did the work. ``on_progress(series,
    points)`` is called after every batch, for progress bars. Remote inputs (https://, hf://) are read from the
    download cache (under ``root`` unless configured elsewhere), fetched and verified first; the version's id
    and recorded source name their URLs and sha256, not where the cache is.
    """
    fetched = fetch_source(source, cfg, root, storage_options)
    connector = get_connector(source.kind)
    raw_options = dict(source.options)
    if source.freq and "freq" in connector.options_model.model_fields and "freq" not in raw_options:
        raw_options["freq"] = source.freq  # so connectors that check dates against a grid use the user's freq
    options = connector.parse_options(raw_options)
    inputs = source_inputs(source, fetched, storage_options)
    version_id = ingest_version_id(source, cfg, inputs)
    storage = dict(storage_options or {})
    work = join(root, WORK_FOLDER, dataset_name(source), version_id)

    def write(writer: VersionWriter) -> VersionRecord:
        stats = _write_source(writer, options, fetched.source, cfg, work, storage, on_progress)
        return VersionRecord({"source": source.model_dump(), "ingest": cfg.model_dump(exclude={"sources"})}, inputs,
                             code_version("corpus", "infra"), stats)

    published = publish_version(
        root, dataset_name(source), version_id, CANONICAL_SCHEMA, write, storage_options,
        # never hide why the ingestion failed behind a failed clean-up
        on_abort=lambda: _clear(work, storage, quiet=True),
        part_max_rows=cfg.part_max_rows, part_max_bytes=cfg.part_max_bytes,
    )
    if published.reused:
        log.info("source %s unchanged: reusing %s", source.name, published.version.url)
    else:
        _clear(work, storage)
    return IngestResult(source.name, published.version, reused=published.reused)


def _write_source(
    writer: VersionWriter,
    options: Any,
    source: SourceConfig,
    cfg: IngestConfig,
    work: str,
    storage: dict[str, Any],
    on_progress: Any,
) -> dict[str, Any]:
    """Run the source's units on Ray (their files under ``work``) and write the admitted rows and side tables;
    the stats. ``source`` is the one to read: its remote inputs already replaced by their cached copies."""
    units = get_connector(source.kind).plan(source.paths, options, storage, cfg.chunk_bytes)
    jobs = [UnitJob(u, source.kind, options, source, cfg, join(work, f"unit-{i:05d}.parquet"), storage)
            for i, u in enumerate(units)]
    admission = _Admission(source, cfg)
    tally: StageRun[int] = StageRun(f"ingest {source.name}", len(jobs))
    _clear(work, storage)  # what a crashed run of this version left
    for batch in _admitted(jobs, admission, tally):
        writer.write(batch)
        if on_progress is not None:
            on_progress(admission.stats["series"], admission.stats["points"])
    for name, table in admission.side_tables().items():
        writer.write_side_table(name, table)
    stats = admission.final_stats() | {"units": len(units), "ray_nodes": tally.node_counts()}
    if admission.quarantine:
        log.warning("source %s: %d series quarantined (%s)", source.name, len(admission.quarantine),
                    stats["quarantine_reasons"])
    return stats


def _admitted(jobs: list[UnitJob], admission: _Admission, tally: StageRun[int]) -> Iterator[pa.RecordBatch]:
    """Run the units on Ray and stream each unit's file through ``admission`` in unit order, then drop it.

    A unit that fails for bad input fails the source with the connector's own error (file, line, reason,
    and the chunk when the file was cut); any other lasting failure is the runtime's error naming the unit.
    """
    results = run_units(
        run_unit, jobs, stage=tally.stage, describe=lambda _i, job: job.unit.label(), progress=False, tally=tally
    )
    try:
        for job, _rows in zip(jobs, results, strict=True):
            fs, path = filesystem(job.url, job.storage_options)
            with fs.open(path, "rb") as fh:
                for batch in pq.ParquetFile(fh).iter_batches(batch_size=admission.cfg.batch_rows):
                    yield from admission.admit(batch)
            fs.rm(path)
    except StageWorkError as exc:
        cause = getattr(exc.__cause__, "cause", None)
        if isinstance(cause, MalformedInputError):  # bad input stays bad input: file, line and reason
            raise MalformedInputError(cause.file, cause.where, cause.reason) from None
        raise
    yield from admission.finish()


def _clear(url: str, storage_options: dict[str, Any], quiet: bool = False) -> None:
    """Remove a work folder (its files are only ever read by this run); ``quiet``: log a failure, do not raise."""
    try:
        fs, path = filesystem(url, storage_options)
        if fs.exists(path):
            fs.rm(path, recursive=True)
    except Exception as exc:
        if not quiet:
            raise
        log.warning("could not remove the work folder %s: %s", url, exc)


def _count_reasons(quarantine: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in quarantine:
        key = row["reason"].split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    return counts
