"""LTSF-style wide csv files (ETT, Electricity, Weather, exchange rate): a ``date`` column, one column per series.

The file is read block by block with pyarrow's streaming csv reader and each numeric column accumulated, since
a series is a whole column. Memory is therefore the numeric data of the file (8 bytes x rows x columns), never
the text: ETTh2 (17k x 7) is 1 MB, Electricity (26k x 321) about 67 MB. Only the first ``infer_rows`` dates
are kept, to give the start and to infer the frequency.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from pydantic import Field

from corpus.errors import MalformedInputError
from corpus.schema import RawSeries
from corpus.sources.common import expand_inputs, file_units, infer_freq, open_text, source_freq
from corpus.sources.registry import IngestUnit, register_units
from infra.config import StrictModel
from infra.storage import open_input

BOM = "\ufeff"
_COLUMN_RE = re.compile(r"CSV column #(\d+)")
_VALUE_RE = re.compile(r"invalid value '(.*)'$")


class LtsfOptions(StrictModel):

    freq: str | None = Field(None, description="pandas alias; inferred from the first dates when absent")
    date_column: str = "date"
    infer_rows: int = Field(1000, ge=3, description="how many leading dates to infer the frequency from")
    block_size: int = Field(4 << 20, ge=1 << 12, description="bytes per csv block read at a time")
    encoding: str = "utf-8"


def plan(
    paths: list[str], options: LtsfOptions, storage_options: dict[str, Any], chunk_bytes: int | None
) -> list[IngestUnit]:
    """One unit per file: a series is a whole column, so a file is not cut by rows."""
    return file_units(expand_inputs(paths, storage_options, [".csv"]))


def read_unit(unit: IngestUnit, options: LtsfOptions, storage_options: dict[str, Any]) -> Iterator[RawSeries]:
    """The columns of one file, as series."""
    override = source_freq(options.freq) if options.freq else None
    yield from _read_file(unit.files[0], unit.prefix, override, options, storage_options)


read = register_units(
    "ltsf", LtsfOptions, plan, read_unit,
    "LTSF wide csv with a date column: one series per other column, id = column name.",
)


def _header(url: str, options: LtsfOptions, storage_options: dict[str, Any]) -> list[str]:
    with open_text(url, storage_options, options.encoding) as fh:
        row = next(csv.reader(fh), None)
    if not row:
        raise MalformedInputError(url, "line 1", "empty file: no header row")
    row[0] = row[0].lstrip(BOM)  # pyarrow skips a UTF-8 byte-order mark itself; the csv module does not
    return row


def _read_file(
    url: str, prefix: str, override: str | None, options: LtsfOptions, storage_options: dict[str, Any]
) -> Iterator[RawSeries]:
    names = _header(url, options, storage_options)
    date_col = options.date_column
    if date_col not in names:
        raise MalformedInputError(url, f"column {date_col}", f"missing date column; columns are {names[:20]}")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise MalformedInputError(url, "line 1", f"duplicate column names {duplicated}")
    series_cols = [n for n in names if n != date_col]
    types = {n: pa.float64() for n in series_cols} | {date_col: pa.string()}
    chunks: dict[str, list[np.ndarray]] = {n: [] for n in series_cols}
    first_dates: list[str] = []
    with open_input(url, storage_options, "rb") as fh:
        try:
            reader = pacsv.open_csv(
                fh,
                read_options=pacsv.ReadOptions(block_size=options.block_size, encoding=options.encoding),
                convert_options=pacsv.ConvertOptions(column_types=types),
            )
            for batch in reader:
                if len(first_dates) < options.infer_rows:
                    dates = batch.column(date_col).slice(0, options.infer_rows - len(first_dates))
                    first_dates.extend(dates.to_pylist())
                for name in series_cols:
                    chunks[name].append(batch.column(name).to_numpy(zero_copy_only=False))
        except pa.ArrowInvalid as exc:
            message = str(exc).splitlines()[0]
            raise MalformedInputError(url, _where(message, names, url, options, storage_options), message) from None
    if not first_dates:
        raise MalformedInputError(url, "line 2", "no data rows")
    if any(d is None for d in first_dates):
        raise MalformedInputError(url, f"column {date_col}", "empty date in the first rows")
    try:
        times = pd.to_datetime(pd.Series(first_dates))
    except (ValueError, TypeError) as exc:
        raise MalformedInputError(url, f"column {date_col}", f"unparseable dates: {exc}") from None
    freq = override or infer_freq(times, url, f"column {date_col} (first {len(times)} rows)")
    start = times.iloc[0].to_pydatetime()
    for name in series_cols:
        yield RawSeries(
            item_id=f"{prefix}{name}",
            target=np.concatenate(chunks.pop(name)),
            start=start,
            freq=freq,
            input=f"{url}:column {name}",
        )


def _where(message: str, names: list[str], url: str, options: LtsfOptions, storage_options: dict[str, Any]) -> str:
    """``column NAME, line N`` from pyarrow's ``In CSV column #3: ... invalid value 'x'`` message.

    The streaming reader does not say which row; on this error path only, the text is scanned again to find it.
    """
    m = _COLUMN_RE.search(message)
    if m is None or int(m[1]) >= len(names):
        return "csv rows"
    index = int(m[1])
    where = f"column {names[index]}"
    bad = _VALUE_RE.search(message)
    if bad is not None:
        with open_text(url, storage_options, options.encoding) as fh:
            reader = csv.reader(fh)
            for row in reader:
                if len(row) > index and row[index] == bad[1] and reader.line_num > 1:
                    return f"{where}, line {reader.line_num}"
    return where
