"""LOTSA-style datasets: a Hugging Face ``datasets.save_to_disk`` folder of Arrow shards, or parquet files.

A folder holds ``data-XXXXX-of-NNNNN.arrow`` (Arrow IPC *stream* format as ``datasets`` writes it; the IPC
*file* format is read too) plus ``dataset_info.json`` and ``state.json`` (whose ``_data_files`` gives the shard
order). Rows have ``item_id``, ``start``, ``freq`` and ``target``: a list of floats (one series) or a list of
D lists (multivariate, D x T; each variate becomes its own series ``<item_id>_dim<k>``). Shards are read record
batch by record batch; local shards are memory-mapped, as ``datasets`` itself does. Nothing is downloaded.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from corpus.errors import MalformedInputError
from corpus.schema import RawSeries
from corpus.sources.common import expand_inputs, source_freq
from corpus.sources.registry import IngestUnit, register_units
from infra.config import StrictModel
from infra.storage import filesystem, inner_name, is_local, open_input, to_url

ARROW_FILE_MAGIC = b"ARROW1"
DATA_SUFFIXES = (".arrow", ".parquet")
STATE_FILE = "state.json"


class LotsaOptions(StrictModel):

    item_id_column: str = "item_id"
    target_column: str = "target"
    start_column: str = "start"
    freq_column: str = "freq"
    freq: str | None = Field(None, description="pandas alias for rows without a freq (or to override it)")
    batch_size: int = Field(1024, ge=1, description="rows per record batch when reading parquet")


def plan(
    paths: list[str], options: LotsaOptions, storage_options: dict[str, Any], chunk_bytes: int | None
) -> list[IngestUnit]:
    """One unit per shard; a shard larger than ``chunk_bytes`` in runs of row groups / record batches.

    A run's length is the shard's batch count scaled by ``chunk_bytes`` over the file size (batches are
    about equal in size in what ``datasets`` and parquet writers produce).
    """
    units: list[IngestUnit] = []
    for url in data_files(paths, storage_options):
        unit = IngestUnit(files=(url,))
        count = _batch_count(url, storage_options) if chunk_bytes is not None else None
        fs, path = filesystem(url, storage_options)
        size = int(fs.size(path))
        if count is None or chunk_bytes is None or count < 2 or size <= chunk_bytes:
            units.append(unit)
            continue
        per = max(1, -(-count * chunk_bytes // size))
        starts = range(0, count, per)
        units.extend(
            replace(unit, start=a, stop=min(a + per, count), span="batches", chunk=k, chunks=len(starts))
            for k, a in enumerate(starts)
        )
    return units


def read_unit(unit: IngestUnit, options: LotsaOptions, storage_options: dict[str, Any]) -> Iterator[RawSeries]:
    """The series of one shard, or of one run of its batches."""
    override = source_freq(options.freq) if options.freq else None
    url = unit.files[0]
    for batch in _batches(url, options, storage_options, unit.start, unit.stop):
        yield from _series(batch, url, override, options)


read = register_units(
    "lotsa", LotsaOptions, plan, read_unit,
    "LOTSA / HF save_to_disk arrow shards or parquet: one series per row (per variate when multivariate).",
)


def data_files(paths: list[str], storage_options: dict[str, Any]) -> list[str]:
    """The shard URLs in order: ``state.json``'s ``_data_files`` when a folder has one, else sorted names."""
    out: list[str] = []
    for url in paths:
        fs, path = filesystem(url, storage_options)
        state = posixpath.join(path, STATE_FILE) if fs.isdir(path) else None
        if state is not None and fs.exists(state):
            with fs.open(state, "rb") as fh:
                listed = [entry["filename"] for entry in json.load(fh).get("_data_files", [])]
            if listed:
                out.extend(to_url(fs, posixpath.join(path, name)) for name in listed)
                continue
        out.extend(expand_inputs([url], storage_options, DATA_SUFFIXES))
    return out


def _batch_count(url: str, storage_options: dict[str, Any]) -> int | None:
    """Row groups of a parquet shard, record batches of an Arrow one; None when counting means reading it all.

    An Arrow *stream* has no index: it is counted only when local and memory-mapped (headers only, no copy).
    """
    name = inner_name(url).lower()
    fs, path = filesystem(url, storage_options)
    if name != posixpath.basename(path).lower():  # compressed
        return None
    if name.endswith(".parquet"):
        with fs.open(path, "rb") as fh:
            return pq.ParquetFile(fh).metadata.num_row_groups
    with _open_arrow(url, fs, path, storage_options) as fh:
        try:
            reader = _ipc_reader(fh)
            if isinstance(reader, pa.ipc.RecordBatchFileReader):
                return reader.num_record_batches
            return sum(1 for _ in reader) if is_local(fs) else None
        except pa.ArrowInvalid as exc:
            raise MalformedInputError(url, "arrow stream", f"not a readable Arrow IPC file: {exc}") from None


def _ipc_reader(fh: Any) -> pa.ipc.RecordBatchFileReader | pa.ipc.RecordBatchStreamReader:
    """The IPC *file* reader when the shard starts with the file magic, else the *stream* reader."""
    magic = fh.read(len(ARROW_FILE_MAGIC))
    fh.seek(0)
    return pa.ipc.open_file(fh) if magic == ARROW_FILE_MAGIC else pa.ipc.open_stream(fh)


def _open_arrow(url: str, fs: Any, path: str, storage_options: dict[str, Any]) -> Any:
    """Local plain shards are memory-mapped, as ``datasets`` itself does; others are streamed."""
    local_plain = is_local(fs) and inner_name(url).lower() == posixpath.basename(path).lower()
    return pa.memory_map(path, "r") if local_plain else open_input(url, storage_options, "rb")


def _batches(
    url: str, options: LotsaOptions, storage_options: dict[str, Any], start: int = 0, stop: int | None = None
) -> Iterator[pa.RecordBatch]:
    """Record batches ``start`` to ``stop`` (row groups for parquet) of one shard; all of them by default."""
    name = inner_name(url).lower()
    fs, path = filesystem(url, storage_options)
    if name.endswith(".parquet"):
        with open_input(url, storage_options, "rb") as fh:
            pf = pq.ParquetFile(fh)
            groups = None if stop is None else list(range(start, stop))
            yield from pf.iter_batches(batch_size=options.batch_size, row_groups=groups)
        return
    with _open_arrow(url, fs, path, storage_options) as fh:
        try:
            reader = _ipc_reader(fh)
            if isinstance(reader, pa.ipc.RecordBatchFileReader):
                for k in range(start, reader.num_record_batches if stop is None else stop):
                    yield reader.get_batch(k)
            else:
                for k, batch in enumerate(reader):
                    if stop is not None and k >= stop:
                        break
                    if k >= start:
                        yield batch
        except pa.ArrowInvalid as exc:
            raise MalformedInputError(url, "arrow stream", f"not a readable Arrow IPC file: {exc}") from None


def _series(batch: pa.RecordBatch, url: str, override: str | None, options: LotsaOptions) -> Iterator[RawSeries]:
    schema = batch.schema
    for column in (options.item_id_column, options.target_column):
        if schema.get_field_index(column) < 0:
            raise MalformedInputError(url, f"column {column}", f"missing column; columns are {schema.names}")
    target_type = schema.field(options.target_column).type
    multivariate = _is_list(target_type) and _is_list(target_type.value_type)
    value_type = target_type.value_type.value_type if multivariate else getattr(target_type, "value_type", None)
    if not _is_list(target_type) or not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
        raise MalformedInputError(
            url, f"column {options.target_column}", f"expected list<float> or list<list<float>>, found {target_type}"
        )
    used = {options.item_id_column, options.target_column, options.start_column, options.freq_column}
    ignored = [n for n in schema.names if n not in used]
    ids = batch.column(options.item_id_column).to_pylist()
    targets = batch.column(options.target_column)
    starts = _column_or_none(batch, options.start_column)
    freqs = _column_or_none(batch, options.freq_column)
    freq_cache: dict[str, str] = {}
    for row, raw_id in enumerate(ids):
        if raw_id is None:
            raise MalformedInputError(url, f"row {row} of a batch", f"null {options.item_id_column}")
        item_id = str(raw_id)
        where = f"item {item_id}"
        freq = override or _freq(freqs[row], freq_cache, url, where)
        base: dict[str, Any] = {"ignored_columns": ignored} if ignored else {}
        start = _start(starts[row])
        scalar = targets[row]
        if not multivariate:
            yield RawSeries(item_id, _values(scalar), start, freq, base, f"{url}:{where}")
            continue
        variates = scalar.values if scalar.is_valid else pa.array([], type=target_type.value_type)
        for k in range(len(variates)):
            attributes = base | {"parent_item_id": item_id, "variate": k, "n_variates": len(variates)}
            yield RawSeries(f"{item_id}_dim{k}", _values(variates[k]), start, freq, attributes, f"{url}:{where}")


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _column_or_none(batch: pa.RecordBatch, name: str) -> list[Any]:
    index = batch.schema.get_field_index(name)
    return batch.column(index).to_pylist() if index >= 0 else [None] * batch.num_rows


def _values(scalar: pa.Scalar) -> np.ndarray:
    """A list scalar as an owned float array (nulls -> NaN); a null list is an empty series for validation."""
    if not scalar.is_valid:
        return np.empty(0, dtype=np.float32)
    values = scalar.values.to_numpy(zero_copy_only=False)
    if values.dtype.kind != "f":
        values = values.astype(np.float64)
    return np.array(values, copy=True)


def _start(value: Any) -> datetime | None:
    """Timestamps as naive UTC datetimes (``datasets`` writes timestamp[s]; tz-aware ones are converted)."""
    if value is None:
        return None
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if not isinstance(value, datetime):  # a date column
        return datetime(value.year, value.month, value.day)
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _freq(value: Any, cache: dict[str, str], url: str, where: str) -> str | None:
    if value is None or value == "":
        return None
    text = str(value)
    if text not in cache:
        cache[text] = source_freq(text, url, f"{where} freq")
    return cache[text]
