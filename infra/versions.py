"""Versioned datasets: each writer fills its own attempt folder; one create-only ``_manifest.json`` publishes one.

Layout of version ``{root}/{dataset}/{version_id}/``::

    _manifest.json                 written last, create-only: the one publish; names the attempt it publishes
    {attempt}/data/part-*.parquet  the rows, alone in their folder: the version's URL (what stages print)
    {attempt}/README.md            the version's card (schema, counts, lineage, how to load it)
    {attempt}/*.parquet, *.png     side tables (quarantine, duplicates) and files (plots)
    {attempt}/_lease.json          renewed while the writer lives; gone once it publishes

Why this shape: S3 has no atomic rename and no atomic multi-object write, but a single PUT is atomic and can be
made conditional (``If-None-Match``), like ``link`` on a local disk. So every writer writes under an attempt
name of its own (nobody else ever writes or deletes there while it lives), and the first writer whose manifest
lands publishes; a later one finds the manifest, reports the published version and removes its attempt.
A reader of the URL sees only the published attempt's data folder, which holds nothing but parts; an
attempt that was never published has no URL anyone was given, and ``open_version`` says "not published" for it.
A crashed writer's attempt is cleared by the next writer of the version once its lease shows it dead.
Version ids are the fingerprint of (inputs, config, code), which is what makes a re-run with unchanged inputs
a no-op.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from infra.fingerprint import file_fingerprint, git_commit, stable_hash
from infra.ids import timestamped_id
from infra.storage import (
    filesystem,
    is_local,
    join,
    json_bytes,
    read_json,
    to_url,
    write_bytes_atomic,
    write_bytes_create,
    write_json_atomic,
)
from infra.version_card import version_card

MANIFEST_NAME = "_manifest.json"
MANIFEST_FORMAT = 2
DATA_FOLDER = "data"
CARD_NAME = "README.md"
LEASE_NAME = "_lease.json"
LEASE_SECONDS = 600.0  # a writer whose lease is older than this is taken as dead (it renews every quarter)


class VersionNotFoundError(FileNotFoundError):
    """A URL that does not point at a published version (no manifest, or another attempt's folder)."""


class VersionCorruptError(ValueError):
    """A published version whose files differ from what its manifest recorded."""

    def __init__(self, url: str, problems: list[str]) -> None:
        super().__init__(f"{url}: {len(problems)} problem(s): " + "; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class DatasetVersion:
    """A published version: the URL of its data folder (ends with ``/``) and its manifest."""

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
    def attempt_url(self) -> str:
        """The published attempt's folder: card, side tables and files beside the data folder."""
        return parent_url(self.url)

    @property
    def folder_url(self) -> str:
        """``{root}/{dataset}/{version_id}``: where the manifest lives."""
        return parent_url(self.attempt_url)

    @property
    def part_urls(self) -> list[str]:
        return [join(self.url, p["file"]) for p in self.manifest["parts"]]

    @property
    def num_rows(self) -> int:
        return sum(p["rows"] for p in self.manifest["parts"])

    @property
    def card_url(self) -> str:
        return join(self.attempt_url, CARD_NAME)

    def side_table_url(self, name: str) -> str | None:
        entry = self.manifest.get("side_tables", {}).get(name)
        return join(self.attempt_url, entry["file"]) if entry else None

    def file_url(self, name: str) -> str | None:
        """URL of an extra file (a plot) recorded in the manifest, else None."""
        return join(self.attempt_url, name) if name in self.manifest.get("files", {}) else None


def parent_url(url: str) -> str:
    """The folder holding ``url`` (a trailing ``/`` is ignored), keeping any ``scheme://``."""
    scheme, sep, rest = url.rstrip("/").rpartition("://")
    return f"{scheme}{sep}{posixpath.dirname(rest)}" if sep else os.path.dirname(url.rstrip("/"))


def data_url(fs: fsspec.AbstractFileSystem, version_path: str, attempt: str) -> str:
    """The URL readers are given: the attempt's data folder, with a trailing ``/`` (polars needs it on S3)."""
    return to_url(fs, join(version_path, attempt, DATA_FOLDER)) + "/"


def _locate(url: str, storage_options: dict[str, Any] | None) -> tuple[fsspec.AbstractFileSystem, str, str | None]:
    """(fs, version folder path, attempt named by the URL or None) for a version folder or data-folder URL."""
    fs, path = filesystem(url.rstrip("/"), storage_options)
    if posixpath.basename(path) == DATA_FOLDER:
        attempt_path = posixpath.dirname(path)
        return fs, posixpath.dirname(attempt_path), posixpath.basename(attempt_path)
    return fs, path, None


def _read_manifest(fs: fsspec.AbstractFileSystem, version_path: str) -> dict[str, Any] | None:
    manifest_path = join(version_path, MANIFEST_NAME)
    fs.invalidate_cache(version_path)
    try:
        return read_json(fs, manifest_path)
    except FileNotFoundError:
        return None


def open_version(url: str, storage_options: dict[str, Any] | None = None, verify: bool = False) -> DatasetVersion:
    """Open a published version by its URL (the data folder the stages print, or the version folder).

    A folder without a manifest, or an attempt the manifest does not publish (a crashed or losing writer's),
    is "not published". With ``verify``, every part, side table and file is checked against the manifest
    (size and sha256) and a mismatch raises :class:`VersionCorruptError` naming each file.
    """
    fs, version_path, attempt = _locate(url, storage_options)
    manifest = _read_manifest(fs, version_path)
    if manifest is None:
        raise VersionNotFoundError(f"{url}: not published (no {MANIFEST_NAME} in {to_url(fs, version_path)})")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise VersionNotFoundError(
            f"{url}: manifest format {manifest.get('format')} is not {MANIFEST_FORMAT}; rebuild this version"
        )
    published = data_url(fs, version_path, manifest["attempt"])
    if attempt is not None and attempt != manifest["attempt"]:
        raise VersionNotFoundError(f"{url}: not published (an unfinished or abandoned attempt; the published "
                                   f"data of version {manifest['version_id']} is {published})")
    version = DatasetVersion(published, manifest, dict(storage_options or {}))
    if verify:
        problems = verify_version(version)
        if problems:
            raise VersionCorruptError(version.url, problems)
    return version


def list_versions(
    root: str, dataset: str, storage_options: dict[str, Any] | None = None
) -> list[DatasetVersion]:
    """Published versions of ``dataset`` under ``root``, oldest first. Unfinished folders are invisible."""
    fs, path = filesystem(join(root, dataset), storage_options)
    fs.invalidate_cache(path)
    if not fs.exists(path):
        return []
    versions = []
    for entry in fs.ls(path, detail=False):
        manifest = _read_manifest(fs, entry)
        if manifest is not None and manifest.get("format") == MANIFEST_FORMAT:
            url = data_url(fs, entry, manifest["attempt"])
            versions.append(DatasetVersion(url, manifest, dict(storage_options or {})))
    return sorted(versions, key=lambda v: (v.manifest["created_at"], v.version_id))


def find_version(
    root: str, dataset: str, version_id: str, storage_options: dict[str, Any] | None = None
) -> DatasetVersion | None:
    try:
        return open_version(join(root, dataset, version_id), storage_options)
    except VersionNotFoundError:
        return None


def _recorded_files(version: DatasetVersion) -> list[tuple[str, str, dict[str, Any]]]:
    """(name shown in reports, URL, manifest entry) of every file the manifest records a hash for."""
    manifest = version.manifest
    entries = [(p["file"], join(version.url, p["file"]), p) for p in manifest["parts"]]
    entries += [(e["file"], join(version.attempt_url, e["file"]), e) for e in manifest.get("side_tables", {}).values()]
    entries += [(name, join(version.attempt_url, name), e) for name, e in manifest.get("files", {}).items()]
    return entries


def verify_version(version: DatasetVersion) -> list[str]:
    """Every recorded file's size and sha256 against the manifest, and nothing else among the parts.

    Returns one line per problem, each naming the file; an empty list means the version is intact.
    """
    problems = []
    for name, url, entry in _recorded_files(version):
        fs, path = filesystem(url, version.storage_options)
        fs.invalidate_cache(path)  # sizes and ETags cached by an earlier listing would hide a change
        if not fs.exists(path):
            problems.append(f"{name}: missing")
            continue
        actual = file_fingerprint(fs, path)
        if actual["bytes"] != entry["bytes"]:
            problems.append(f"{name}: {actual['bytes']} bytes, the manifest records {entry['bytes']}")
        elif actual["sha256"] != entry["sha256"]:
            problems.append(f"{name}: sha256 {actual['sha256'][:16]}... differs from the manifest's "
                            f"{entry['sha256'][:16]}...")
    fs, data_path = filesystem(version.url.rstrip("/"), version.storage_options)
    fs.invalidate_cache(data_path)
    expected = {p["file"] for p in version.manifest["parts"]}
    present = {posixpath.basename(p) for p in fs.ls(data_path, detail=False)} if fs.exists(data_path) else set()
    problems += [f"{name}: not in the manifest, yet readers of the URL would read it"
                 for name in sorted(present - expected)]
    return problems


def verify_report(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``factost verify`` prints: the version, how many files were checked, and every problem."""
    version = open_version(url, storage_options)
    problems = verify_version(version)
    return {"url": version.url, "dataset": version.dataset, "version_id": version.version_id,
            "files_checked": len(_recorded_files(version)), "ok": not problems, "problems": problems}


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


def _file_entry(data: bytes) -> dict[str, Any]:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def new_attempt_id() -> str:
    """Unique per writer, sortable by start time: ``20250101T120000Z-3f9a1c2e``."""
    return timestamped_id(random_bytes=4)


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks) of ``pid`` from Linux's /proc; None where there is no /proc entry."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return fields[0].decode(), fields[19].decode()
    except (OSError, IndexError):
        return None


def lease_record(attempt: str, lease_seconds: float) -> dict[str, Any]:
    """Who holds an attempt and when it last said so; host, pid and process start tell a reused pid apart."""
    stat = _proc_stat(os.getpid())
    return {"attempt": attempt, "host": socket.gethostname(), "pid": os.getpid(),
            "process_start": stat[1] if stat else None, "renewed_unix": time.time(), "lease_seconds": lease_seconds}


def writer_alive(lease: dict[str, Any], now: float) -> bool:
    """A writer on this host is alive while its process is (a crash is seen at once, a slow writer is never
    taken for dead); one elsewhere while its lease was renewed within ``lease_seconds``."""
    if lease.get("host") == socket.gethostname() and isinstance(lease.get("pid"), int):
        try:
            os.kill(lease["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists, owned by another user
        stat = _proc_stat(lease["pid"])
        if stat is None:
            return True
        return stat[0] != "Z" and lease.get("process_start") in (None, stat[1])
    return now - float(lease.get("renewed_unix", 0)) <= float(lease.get("lease_seconds", LEASE_SECONDS))


def _modified_unix(info: dict[str, Any]) -> float | None:
    """Modification time of a listed entry: ``mtime`` on a local disk, ``LastModified`` on S3."""
    if info.get("mtime") is not None:
        return float(info["mtime"])
    stamp = info.get("LastModified")
    return stamp.timestamp() if isinstance(stamp, datetime) else None


def attempt_abandoned(fs: fsspec.AbstractFileSystem, attempt_path: str, now: float) -> bool:
    """True only when no live writer can own the attempt: its lease says so, or, before a lease exists (a
    writer that just started, or died at once), nothing in it changed for ``LEASE_SECONDS``."""
    try:
        return not writer_alive(read_json(fs, join(attempt_path, LEASE_NAME)), now)
    except (FileNotFoundError, json.JSONDecodeError):
        pass
    infos = [fs.info(attempt_path), *fs.find(attempt_path, withdirs=True, detail=True).values()]
    times = [t for t in map(_modified_unix, infos) if t is not None]
    return bool(times) and now - max(times) > LEASE_SECONDS


def clear_abandoned(fs: fsspec.AbstractFileSystem, version_path: str, keep: set[str]) -> list[str]:
    """Remove the attempts of dead writers under a version folder (never one in ``keep``); returns their names."""
    fs.invalidate_cache(version_path)
    if not fs.exists(version_path):
        return []
    removed = []
    now = time.time()
    for entry in fs.ls(version_path, detail=True):
        name = posixpath.basename(entry["name"].rstrip("/"))
        if entry["type"] == "directory" and name not in keep and attempt_abandoned(fs, entry["name"], now):
            fs.rm(entry["name"], recursive=True)
            removed.append(name)
    return removed


class _Lease:
    """An attempt's ``_lease.json``, renewed by a daemon thread every quarter of ``seconds`` until released."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, attempt: str, seconds: float) -> None:
        self.fs, self.path, self.attempt, self.seconds = fs, path, attempt, seconds
        self._stop = threading.Event()
        try:
            self._renew()
        except FileNotFoundError:  # an aborting writer removed the empty version folder just then
            self._renew()
        self._thread = threading.Thread(target=self._run, name=f"lease-{attempt}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        write_json_atomic(self.fs, self.path, lease_record(self.attempt, self.seconds))

    def _run(self) -> None:
        while not self._stop.wait(self.seconds / 4):
            try:
                self._renew()
            except OSError:  # a network hiccup: the next renewal retries, well within the lease
                continue

    def release(self, remove: bool) -> None:
        self._stop.set()
        self._thread.join()
        if remove:
            try:
                self.fs.rm_file(self.path)
            except FileNotFoundError:
                pass


class VersionWriter:
    """Write one dataset version: parts as they fill up, side tables and files, then the manifest.

    Parts roll over at ``part_max_rows`` rows or ``part_max_bytes`` in-memory bytes, whichever comes first,
    so a reader gets files of a useful size whatever the input's shape. Everything goes under this writer's
    own attempt folder, so writers of the same version never touch each other's files; ``commit`` returns
    the published version, this writer's or (``published`` False) the one another writer published first.
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
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.dataset = dataset
        self.version_id = version_id
        self.schema = schema
        self.storage_options = dict(storage_options or {})
        self.part_max_rows = part_max_rows
        self.part_max_bytes = part_max_bytes
        self.compression = compression
        self.attempt = new_attempt_id()
        self.fs, self.version_path = filesystem(join(root, dataset, version_id), storage_options)
        self.attempt_path = join(self.version_path, self.attempt)
        self.data_path = join(self.attempt_path, DATA_FOLDER)
        self.url = data_url(self.fs, self.version_path, self.attempt)
        self.published = False
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self.parts: list[dict[str, Any]] = []
        self.side_tables: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self._lease: _Lease | None = _Lease(self.fs, join(self.attempt_path, LEASE_NAME), self.attempt, lease_seconds)
        manifest = _read_manifest(self.fs, self.version_path)
        clear_abandoned(self.fs, self.version_path, {self.attempt, manifest["attempt"] if manifest else ""})
        self.fs.makedirs(self.data_path, exist_ok=True)

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

    def _put(self, path: str, data: bytes) -> dict[str, Any]:
        with self.fs.open(path, "wb") as fh:
            fh.write(data)
        return _file_entry(data)

    def _flush(self) -> None:
        if not self._pending_rows:
            return
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        name = f"part-{len(self.parts):05d}.parquet"
        entry = self._put(join(self.data_path, name), _parquet_bytes(table, self.compression))
        self.parts.append({"file": name, "rows": table.num_rows, **entry})
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0

    def write_side_table(self, name: str, table: pa.Table) -> None:
        """A small table beside the data folder (quarantine, duplicates, statistics); not part of the rows."""
        file = f"{name}.parquet"
        entry = self._put(join(self.attempt_path, file), _parquet_bytes(table, self.compression))
        self.side_tables[name] = {"file": file, "rows": table.num_rows, **entry}

    def write_file(self, name: str, data: bytes) -> None:
        """An extra file (a plot, a report) beside the data folder, recorded in the manifest with its hash."""
        self.files[name] = self._put(join(self.attempt_path, name), data)

    def commit(
        self,
        *,
        config: dict[str, Any],
        inputs: list[dict[str, Any]],
        code_version: str,
        stats: dict[str, Any] | None = None,
    ) -> DatasetVersion:
        """Flush the last part, write the card, then publish the manifest, create-only and atomically.

        If another writer published the version first, this attempt is removed and that version returned.
        """
        self._flush()
        manifest = {
            "format": MANIFEST_FORMAT,
            "dataset": self.dataset,
            "version_id": self.version_id,
            "attempt": self.attempt,
            "data": f"{self.attempt}/{DATA_FOLDER}/",
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
        card = version_card(manifest, self.url).encode()
        write_bytes_atomic(self.fs, join(self.attempt_path, CARD_NAME), card)
        manifest["files"] = {**self.files, CARD_NAME: _file_entry(card)}
        if write_bytes_create(self.fs, join(self.version_path, MANIFEST_NAME), json_bytes(manifest)):
            self.published = True
            self._release(remove_lease=True)
            clear_abandoned(self.fs, self.version_path, {self.attempt})
            return DatasetVersion(self.url, manifest, self.storage_options)
        self.abort()
        return open_version(to_url(self.fs, self.version_path), self.storage_options)

    def _release(self, remove_lease: bool) -> None:
        if self._lease is not None:
            self._lease.release(remove_lease)
            self._lease = None

    def abort(self) -> None:
        """Remove this writer's attempt (nothing of it was ever visible); other writers' files are untouched."""
        self._release(remove_lease=False)
        if self.published:
            return
        if self.fs.exists(self.attempt_path):
            self.fs.rm(self.attempt_path, recursive=True)
        if is_local(self.fs):  # S3 has no empty folders; a local one goes when nobody else wrote into it
            with contextlib.suppress(OSError):
                os.rmdir(self.version_path)


def version_fingerprint(identity: Mapping[str, Any]) -> str:
    """A version's id: the fingerprint of what decides its bytes (each stage names its inputs, config and code).

    Stages reuse a published version by this id, so an identity's keys and values are part of the format.
    """
    return stable_hash(dict(identity))


@dataclass(frozen=True)
class VersionRecord:
    """What a stage's writing step states for the manifest once its rows are written."""

    config: dict[str, Any]
    inputs: list[dict[str, Any]]
    code_version: str
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Publication:
    """A published version and whether it was already there (nothing was written)."""

    version: DatasetVersion
    reused: bool


def write_version(
    root: str,
    dataset: str,
    version_id: str,
    schema: pa.Schema,
    write: Callable[[VersionWriter], VersionRecord],
    storage_options: dict[str, Any] | None = None,
    on_abort: Callable[[], None] | None = None,
    **writer_options: Any,
) -> DatasetVersion:
    """Open a writer, let ``write`` fill it, then commit; any failure aborts the attempt (nothing is visible).

    ``on_abort`` runs once the failed attempt is removed (a stage's clean-up of its work files); an abort that
    fails itself raises without it, so its error is the one reported.
    """
    writer = VersionWriter(root, dataset, version_id, schema, storage_options, **writer_options)
    try:
        record = write(writer)
        return writer.commit(config=record.config, inputs=record.inputs, code_version=record.code_version,
                             stats=record.stats)
    except BaseException:
        writer.abort()
        if on_abort is not None:
            on_abort()
        raise


def publish_version(
    root: str,
    dataset: str,
    version_id: str,
    schema: pa.Schema,
    write: Callable[[VersionWriter], VersionRecord],
    storage_options: dict[str, Any] | None = None,
    on_abort: Callable[[], None] | None = None,
    **writer_options: Any,
) -> Publication:
    """The one way a stage publishes: the version with this id if it is published, else ``write_version``.

    ``write`` runs only when the version is missing, so a stage puts all its work in it; ``writer_options``
    go to :class:`VersionWriter` (part sizes, compression).
    """
    existing = find_version(root, dataset, version_id, storage_options)
    if existing is not None:
        return Publication(existing, reused=True)
    version = write_version(root, dataset, version_id, schema, write, storage_options, on_abort, **writer_options)
    return Publication(version, reused=False)
