"""Wikipedia web-traffic csv (Kaggle ``train_1.csv`` layout), streamed row by row with the csv module.

Header ``Page,2015-07-01,2015-07-02,...``; one row per page, empty cells where the count is missing. Page names
hold commas and quotes, hence the csv module rather than a split.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from corpus.errors import MalformedInputError
from corpus.schema import RawSeries
from corpus.sources.common import expand_inputs, infer_freq, item_prefixes, normalize_freq, open_text, parse_floats
from corpus.sources.registry import register

DATE_FORMAT = "%Y-%m-%d"
BOM = "\ufeff"
# ``2NE1_zh.wikipedia.org_all-access_spider``: the last three ``_`` fields are project, access and agent.
PAGE_FIELDS = ("project", "access", "agent")


class WikiOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id_column: str = Field("Page", description="name of the first column, the page")
    freq: str | None = Field(None, description="pandas alias; by default inferred from the header dates (D)")
    encoding: str = "utf-8"


@register("wiki", WikiOptions)
def read(paths: list[str], options: WikiOptions, storage_options: dict[str, Any]) -> Iterator[RawSeries]:
    """Wikipedia traffic csv: one series per page row, id = the page, start = the first header date."""
    urls = expand_inputs(paths, storage_options, [".csv"])
    prefixes = item_prefixes(urls)
    override = normalize_freq(options.freq) if options.freq else None
    for url in urls:
        yield from _read_file(url, prefixes[url], override, options, storage_options)


def _read_file(
    url: str, prefix: str, override: str | None, options: WikiOptions, storage_options: dict[str, Any]
) -> Iterator[RawSeries]:
    with open_text(url, storage_options, options.encoding) as fh:
        reader = csv.reader(fh)
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
        freq = override or infer_freq(dates, url, "line 1 (header dates)")
        start = dates.iloc[0].to_pydatetime()
        width = len(header)
        for row in reader:
            where = f"line {reader.line_num}"
            if not row:
                continue
            if len(row) != width:
                raise MalformedInputError(url, where, f"expected {width} fields like the header, found {len(row)}")
            page = row[0]
            if not page:
                raise MalformedInputError(url, where, "empty page name")
            parts = page.rsplit("_", len(PAGE_FIELDS))
            attributes = dict(zip(PAGE_FIELDS, parts[1:], strict=True)) if len(parts) == 4 else {}
            yield RawSeries(
                item_id=f"{prefix}{page}",
                target=parse_floats([c.strip() for c in row[1:]], url, f"{where} (item {page})"),
                start=start,
                freq=freq,
                attributes=attributes,
                input=f"{url}:{where}",
            )
