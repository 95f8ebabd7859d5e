"""Versioned datasets: a folder of Parquet parts made visible by one ``_manifest.json`` written last.

Why this shape: on S3 there is no atomic directory rename, but a single PUT is atomic. So the parts go
into the version's folder first and the manifest last; readers only ever list folders whose manifest
exists. A crash mid-write leaves an orphan folder that no reader sees and that the next writer of the
same version clears. Version ids are the fingerprint of (inputs, config, code), which is what makes a
re-run with unchanged inputs a no-op.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from infra.fingerprint import git_commit
from infra.storage import filesystem, join, read_json, to_url, write_json_atomic

MANIFEST_NAME = "_manifest.json"
MANIFEST_FORMAT = 1


class VersionNotFoundError(FileNotFoundError):
    """A URL that does not point at a published version (no manifest)."""


@dataclass(frozen=True)
class DatasetVersion:
    """A published version: its URL and its manifest."""

    url: str
    manifest: dict[str, Any]
    storage_options: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def version_id(self) -> str:
        return self.manifest["version_id"]

    @property
    def dataset(self) -> str:
        return self.manifest["dataset"]

    @property
    def part_urls(self) -> list[str]:
        return [join(self.url, p["file"]) for p in self.manifest["parts"]]

    @property
    def num_rows(self) -> int:
        return sum(p["rows"] for p in self.manifest["parts"])

    def side_table_url(self, name: str) -> str | None:
        entry = self.manifest.get("side_tables", {}).get(name)
        return join(self.url, entry["file"]) if entry else None


def open_version(url: str, storage_options: dict[str, Any] | None = None) -> DatasetVersion:
    """Open a published version by its folder URL; a folder without a manifest is not a version."""
    fs, path = filesystem(url, storage_options)
    manifest_path = join(path, MANIFEST_NAME)
    if not fs.exists(manifest_path):
        raise VersionNotFoundError(f"{url}: not a published dataset version (no {MANIFEST_NAME})")
    return DatasetVersion(to_url(fs, path), read_json(fs, manifest_path), dict(storage_options or {}))


def list_versions(
    root: str, dataset: str, storage_options: dict[str, Any] | None = None
) -> list[DatasetVersion]:
    """Published versions of ``dataset`` under ``root``, oldest first. Unfinished folders are invisible."""
    fs, path = filesystem(join(root, dataset), storage_options)
    if not fs.exists(path):
        return []
    fs.invalidate_cache(path)
    versions = []
    for entry in fs.ls(path, detail=False):
        manifest_path = join(entry, MANIFEST_NAME)
        if fs.exists(manifest_path):
            manifest = read_json(fs, manifest_path)
            versions.append(DatasetVersion(to_url(fs, entry), manifest, dict(storage_options or {})))
    return sorted(versions, key=lambda v: (v.manifest["created_at"], v.version_id))


def find_version(
    root: str, dataset: str, version_id: str, storage_options: dict[str, Any] | None = None
) -> DatasetVersion | None:
    try:
        return open_version(join(root, dataset, version_id), storage_options)
    except VersionNotFoundError:
        return None


def iter_batches(
    version: DatasetVersion, columns: list[str] | None = None, batch_size: int = 4096
) -> Iterator[pa.RecordBatch]:
    """Stream a version's rows part by part, row group by row group (bounded memory)."""
    for url in version.part_urls:
        fs, path = filesystem(url, version.storage_options)
        with fs.open(path, "rb") as fh:
            yield from pq.ParquetFile(fh).iter_batches(batch_size=batch_size, columns=columns)


def read_table(version: DatasetVersion, columns: list[str] | None = None) -> pa.Table:
    batches = list(iter_batches(version, columns))
    if not batches:
        fs, path = filesystem(version.part_urls[0], version.storage_options) if version.part_urls else (None, None)
        schema = pa.schema([])
        if fs is not None:
            with fs.open(path, "rb") as fh:
                schema = pq.read_schema(fh)
        return schema.empty_table() if columns is None else schema.empty_table().select(columns)
    return pa.Table.from_batches(batches)


def read_side_table(version: DatasetVersion, name: str) -> pa.Table | None:
    url = version.side_table_url(name)
    if url is None:
        return None
    fs, path = filesystem(url, version.storage_options)
    with fs.open(path, "rb") as fh:
        return pq.read_table(fh)


def _parquet_bytes(table: pa.Table, compression: str) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=compression, row_group_size=max(1, min(len(table), 16384)))
    return sink.getvalue()


class VersionWriter:
    """Write one dataset version: parts as they fill up, side tables and files, then the manifest.

    Parts roll over at ``part_max_rows`` rows or ``part_max_bytes`` in-memory bytes, whichever comes first,
    so a reader gets files of a useful size whatever the input's shape.
    """

    def __init__(
        self,
        root: str,
        dataset: str,
        version_id: str,
        schema: pa.Schema,
        storage_options: dict[str, Any] | None = None,
        part_max_rows: int = 100_000,
        part_max_bytes: int = 128 * 1024 * 1024,
        compression: str = "zstd",
    ) -> None:
        self.url = join(root, dataset, version_id)
        self.dataset = dataset
        self.version_id = version_id
        self.schema = schema
        self.storage_options = dict(storage_options or {})
        self.part_max_rows = part_max_rows
        self.part_max_bytes = part_max_bytes
        self.compression = compression
        self.fs, self.path = filesystem(self.url, storage_options)
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self.parts: list[dict[str, Any]] = []
        self.side_tables: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, Any]] = {}
        if self.fs.exists(join(self.path, MANIFEST_NAME)):
            raise FileExistsError(f"{self.url}: version already published; refusing to overwrite it")
        if self.fs.exists(self.path):  # an orphan of a crashed writer: invisible, safe to clear
            self.fs.rm(self.path, recursive=True)
        self.fs.makedirs(self.path, exist_ok=True)

    def write(self, data: pa.RecordBatch | pa.Table) -> None:
        batches = data.to_batches() if isinstance(data, pa.Table) else [data]
        for batch in batches:
            if batch.num_rows == 0:
                continue
            if batch.schema != self.schema:
                batch = pa.RecordBatch.from_arrays(
                    [batch.column(n).cast(self.schema.field(n).type) for n in self.schema.names], schema=self.schema
                )
            offset = 0
            while offset < batch.num_rows:
                room = self.part_max_rows - self._pending_rows
                piece = batch.slice(offset, room)
                self._pending.append(piece)
                self._pending_rows += piece.num_rows
                self._pending_bytes += piece.nbytes
                offset += piece.num_rows
                if self._pending_rows >= self.part_max_rows or self._pending_bytes >= self.part_max_bytes:
                    self._flush()

    def _flush(self) -> None:
        if not self._pending_rows:
            return
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        data = _parquet_bytes(table, self.compression)
        name = f"part-{len(self.parts):05d}.parquet"
        with self.fs.open(join(self.path, name), "wb") as fh:
            fh.write(data)
        self.parts.append(
            {"file": name, "rows": table.num_rows, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        )
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0

    def write_side_table(self, name: str, table: pa.Table) -> None:
        """A small table beside the parts (quarantine, duplicates, statistics); not part of the data."""
        data = _parquet_bytes(table, self.compression)
        file = f"_{name}.parquet"
        with self.fs.open(join(self.path, file), "wb") as fh:
            fh.write(data)
        self.side_tables[name] = {
            "file": file, "rows": table.num_rows, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()
        }

    def write_file(self, name: str, data: bytes) -> None:
        """An extra file (a plot, a report) recorded in the manifest with its hash."""
        with self.fs.open(join(self.path, name), "wb") as fh:
            fh.write(data)
        self.files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def commit(
        self,
        *,
        config: dict[str, Any],
        inputs: list[dict[str, Any]],
        code_version: str,
        stats: dict[str, Any] | None = None,
    ) -> DatasetVersion:
        """Flush the last part and publish the manifest, last and atomically."""
        self._flush()
        manifest = {
            "format": MANIFEST_FORMAT,
            "dataset": self.dataset,
            "version_id": self.version_id,
            "created_at": datetime.now(UTC).isoformat(),
            "created_unix": time.time(),
            "schema": [{"name": f.name, "type": str(f.type)} for f in self.schema],
            "parts": self.parts,
            "rows": sum(p["rows"] for p in self.parts),
            "bytes": sum(p["bytes"] for p in self.parts),
            "side_tables": self.side_tables,
            "files": self.files,
            "config": config,
            "inputs": inputs,
            "code_version": code_version,
            "git_commit": git_commit(),
            "stats": stats or {},
        }
        write_json_atomic(self.fs, join(self.path, MANIFEST_NAME), manifest)
        return DatasetVersion(to_url(self.fs, self.path), manifest, self.storage_options)

    def abort(self) -> None:
        """Remove what was written; nothing was ever visible to readers."""
        if self.fs.exists(self.path) and not self.fs.exists(join(self.path, MANIFEST_NAME)):
            self.fs.rm(self.path, recursive=True)
