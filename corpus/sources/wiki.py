"""Wikipedia web-traffic csv (Kaggle ``train_1.csv`` layout), streamed row by row with the csv module.

Header ``Page,2015-07-01,2015-07-02,...``; one row per page, empty cells where the count is missing. Page names
hold commas and quotes, hence the csv module rather than a split.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from pydantic import Field

from corpus.errors import MalformedInputError
from corpus.schema import RawSeries
from corpus.sources.common import (
    expand_inputs,
    file_units,
    infer_freq,
    line_chunks,
    open_text,
    open_text_range,
    parse_floats,
    source_freq,
    splittable,
)
from corpus.sources.registry import IngestUnit, register_units
from infra.config import StrictModel

DATE_FORMAT = "%Y-%m-%d"
BOM = "\ufeff"
# ``2NE1_zh.wikipedia.org_all-access_spider``: the last three ``_`` fields are project, access and agent.
PAGE_FIELDS = ("project", "access", "agent")


class WikiOptions(StrictModel):

    id_column: str = Field("Page", description="name of the first column, the page")
    freq: str | None = Field(None, description="pandas alias; by default inferred from the header dates (D)")
    encoding: str = "utf-8"


@dataclass(frozen=True)
class WikiHeader:
    """What the header row says, parsed once per file and handed to every chunk of it."""

    freq: str
    start: datetime
    width: int
    lines: int  # physical lines of the header row


def plan(
    paths: list[str], options: WikiOptions, storage_options: dict[str, Any], chunk_bytes: int | None
) -> list[IngestUnit]:
    """One unit per file; a large uncompressed file in byte-range chunks cut between rows (quotes respected)."""
    units: list[IngestUnit] = []
    for unit in file_units(expand_inputs(paths, storage_options, [".csv"])):
        url = unit.files[0]
        if not splittable(url, storage_options, options.encoding, chunk_bytes):
            units.append(unit)
            continue
        with open_text(url, storage_options, options.encoding) as fh:
            header = _parse_header(csv.reader(fh), url, options)
        ranges = line_chunks(url, storage_options, header.lines, chunk_bytes, quote=b'"')
        units.extend(unit.split(ranges, header))
    return units


def read_unit(unit: IngestUnit, options: WikiOptions, storage_options: dict[str, Any]) -> Iterator[RawSeries]:
    """The pages of one file, or of one chunk of it (rows of the chunk's byte range, the header given)."""
    url = unit.files[0]
    if unit.context is None:
        with open_text(url, storage_options, options.encoding) as fh:
            reader = csv.reader(fh)
            header = _parse_header(reader, url, options)
            yield from _pages(reader, 0, header, url, unit.prefix)
        return
    with open_text_range(url, storage_options, options.encoding, unit.start, unit.stop) as fh:
        yield from _pages(csv.reader(fh), unit.line_base, unit.context, url, unit.prefix)


def _parse_header(reader: Any, url: str, options: WikiOptions) -> WikiHeader:
    """Read the header row: the id column, then one date per column (regular: they give the frequency)."""
    header = next(reader, None)
    if header:
        header[0] = header[0].lstrip(BOM)
    if not header or header[0].strip() != options.id_column:
        found = header[0] if header else "nothing"
        raise MalformedInputError(url, "line 1", f"header must start with {options.id_column!r}, found {found!r}")
    try:
        dates = pd.to_datetime(pd.Series(header[1:]), format=DATE_FORMAT)
    except ValueError as exc:
        raise MalformedInputError(url, "line 1", f"header dates must be {DATE_FORMAT}: {exc}") from None
    override = source_freq(options.freq) if options.freq else None
    freq = override or infer_freq(dates, url, "line 1 (header dates)")
    return WikiHeader(freq, dates.iloc[0].to_pydatetime(), len(header), reader.line_num)


def _pages(reader: Any, line_base: int, header: WikiHeader, url: str, prefix: str) -> Iterator[RawSeries]:
    """One series per page row; line numbers are ``line_base`` plus the reader's own count."""
    for row in reader:
        where = f"line {line_base + reader.line_num}"
        if not row:
            continue
        if len(row) != header.width:
            raise MalformedInputError(url, where, f"expected {header.width} fields like the header, found {len(row)}")
        page = row[0]
        if not page:
            raise MalformedInputError(url, where, "empty page name")
        parts = page.rsplit("_", len(PAGE_FIELDS))
        attributes = dict(zip(PAGE_FIELDS, parts[1:], strict=True)) if len(parts) == 4 else {}
        yield RawSeries(
            item_id=f"{prefix}{page}",
            target=parse_floats([c.strip() for c in row[1:]], url, f"{where} (item {page})"),
            start=header.start,
            freq=header.freq,
            attributes=attributes,
            input=f"{url}:{where}",
        )


read = register_units(
    "wiki", WikiOptions, plan, read_unit,
    "Wikipedia traffic csv: one series per page row, id = the page, start = the first header date.",
)
