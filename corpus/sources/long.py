"""Generic long-format tables (csv or parquet): one row per (id, timestamp, value), in any order.

Rows are grouped per id and sorted by time with polars. Local uncompressed files are scanned lazily (polars reads
only the three columns); remote or compressed files are read through ``infra.storage.open_input`` into memory
first. Grouping needs all rows of an id together, so peak memory is about the size of the three columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import pandas as pd
import polars as pl
from pydantic import Field

from corpus.errors import MalformedInputError
from corpus.schema import RawSeries
from corpus.sources.common import COMPRESSED_SUFFIXES, expand_inputs, infer_freq, source_freq
from corpus.sources.registry import register
from infra.config import StrictModel
from infra.storage import filesystem, inner_name, is_local, open_input

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_NULLS = ["", "NA", "NaN", "nan", "null", "?"]


class LongOptions(StrictModel):

    id_column: str = "id"
    timestamp_column: str = "timestamp"
    value_column: str = "value"
    freq: str | None = Field(
        None, description="pandas alias; given, gaps on its grid become NaN; absent, it is inferred per id"
    )
    format: Literal["auto", "csv", "parquet"] = Field("auto", description="auto: from the file name")


@register("long", LongOptions)
def read(paths: list[str], options: LongOptions, storage_options: dict[str, Any]) -> Iterator[RawSeries]:
    """Long csv/parquet (id, timestamp, value): one series per id, rows of all files pooled."""
    urls = expand_inputs(paths, storage_options, [".csv", *PARQUET_SUFFIXES])
    freq = source_freq(options.freq) if options.freq else None
    frames = [_load(url, options, storage_options) for url in urls]
    label = urls[0] if len(urls) == 1 else f"{urls[0]} (+{len(urls) - 1} files)"
    grouped = (
        pl.concat(frames, how="vertical_relaxed")
        .group_by("id", maintain_order=True)
        .agg(pl.col("ts").sort_by("ts"), pl.col("value").sort_by("ts"))
    )
    times, values = grouped["ts"], grouped["value"]
    for k, item_id in enumerate(grouped["id"].to_list()):
        yield _series(item_id, times[k].to_numpy(), values[k].to_numpy(), freq, label)


def _format(url: str, options: LongOptions) -> str:
    if options.format != "auto":
        return options.format
    return "parquet" if inner_name(url).lower().endswith(PARQUET_SUFFIXES) else "csv"


def _load(url: str, options: LongOptions, storage_options: dict[str, Any]) -> pl.DataFrame:
    """The file's three columns as ``id`` (string), ``ts`` (naive datetime) and ``value`` (float64).

    One pass over the file; a row whose timestamp or value does not parse is an error naming its id.
    """
    fs, path = filesystem(url, storage_options)
    fmt = _format(url, options)
    if is_local(fs) and not url.lower().endswith(COMPRESSED_SUFFIXES):
        raw = pl.scan_parquet(path) if fmt == "parquet" else pl.scan_csv(path, null_values=CSV_NULLS)
    else:
        with open_input(url, storage_options, "rb") as fh:
            data = fh.read()
        raw = (pl.read_parquet(data) if fmt == "parquet" else pl.read_csv(data, null_values=CSV_NULLS)).lazy()
    schema = raw.collect_schema()
    id_col, ts_col, value_col = options.id_column, options.timestamp_column, options.value_column
    for column in (id_col, ts_col, value_col):
        if column not in schema.names():
            raise MalformedInputError(url, f"column {column}", f"missing column; columns are {schema.names()[:20]}")
    ts_type = schema[ts_col]
    if ts_type == pl.String:
        # UTC: offset-aware text is converted to UTC, naive text is kept as it is written.
        ts = pl.col(ts_col).str.to_datetime(strict=False, time_zone="UTC")
    elif ts_type == pl.Date:
        ts = pl.col(ts_col).cast(pl.Datetime("us"))
    elif isinstance(ts_type, pl.Datetime):
        ts = pl.col(ts_col)
    else:
        raise MalformedInputError(url, f"column {ts_col}", f"timestamps must be datetimes or text, found {ts_type}")
    value = pl.col(value_col)
    if schema[value_col] == pl.String:
        value = value.str.strip_chars().cast(pl.Float64, strict=False)
    df = raw.select(
        pl.col(id_col).cast(pl.String).alias("id"),
        ts.alias("ts"),
        value.cast(pl.Float64).alias("value"),
        (ts.is_null() & pl.col(ts_col).is_not_null()).alias("bad_ts"),
        (value.is_null() & pl.col(value_col).is_not_null()).alias("bad_value"),
        pl.col(ts_col).is_null().alias("no_ts"),
    ).collect()
    if df["id"].null_count():
        raise MalformedInputError(url, f"column {id_col}", f"{df['id'].null_count()} rows have an empty id")
    for flag, column in (("bad_ts", ts_col), ("bad_value", value_col), ("no_ts", ts_col)):
        if df[flag].any():
            item = df.filter(pl.col(flag))["id"][0]
            text = raw.filter(pl.col(id_col).cast(pl.String) == item).select(pl.col(column).cast(pl.String))
            sample = text.filter(pl.col(column).is_not_null()).head(1).collect() if flag != "no_ts" else None
            reason = f"empty {column}" if sample is None else f"column {column}: cannot parse {sample.item()!r}"
            raise MalformedInputError(url, f"item {item}", reason)
    if isinstance(df.schema["ts"], pl.Datetime) and df.schema["ts"].time_zone is not None:
        df = df.with_columns(pl.col("ts").dt.convert_time_zone("UTC").dt.replace_time_zone(None))
    return df.select("id", pl.col("ts").cast(pl.Datetime("us")), "value")


def _series(item_id: str, times: np.ndarray, values: np.ndarray, freq: str | None, label: str) -> RawSeries:
    """Place one id's sorted values on its time grid; duplicated or off-grid timestamps are errors."""
    where = f"item {item_id}"
    index = pd.DatetimeIndex(times)
    target = np.asarray(values, dtype=np.float64)  # polars gives NaN for null values
    if index.has_duplicates:
        raise MalformedInputError(label, where, f"duplicate timestamp {index[index.duplicated()][0]}")
    if freq is None:
        inferred = infer_freq(index, label, where) if len(index) >= 3 else None
        start = index[0].to_pydatetime() if len(index) else None
        return RawSeries(item_id, target, start, inferred, {}, f"{label}:{where}")
    grid = pd.date_range(index[0], index[-1], freq=freq)
    positions = grid.get_indexer(index)
    if (positions < 0).any():
        off = index[positions < 0][0]
        raise MalformedInputError(label, where, f"timestamp {off} is not on the {freq} grid from {index[0]}")
    full = np.full(len(grid), np.nan)
    full[positions] = target
    return RawSeries(item_id, full, index[0].to_pydatetime(), freq, {}, f"{label}:{where}")
