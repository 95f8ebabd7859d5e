"""Monash Forecasting Archive ``.tsf`` files, read line by line (also ``.gz``/``.bz2``/``.xz``/``.zip``).

Layout: ``#`` comments and blank lines anywhere, ``@`` header lines (``@relation``, ``@attribute NAME TYPE`` in
column order, ``@frequency``, ``@horizon``, ``@missing``, ``@equallength``), then ``@data`` and one row per
series ``attr1:attr2:...:v1,v2,...`` with ``?`` for a missing value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from pydantic import Field

from corpus.errors import MalformedInputError
from corpus.schema import RawSeries
from corpus.sources.common import (
    expand_inputs,
    file_units,
    line_chunks,
    open_text,
    open_text_range,
    parse_floats,
    source_freq,
    splittable,
)
from corpus.sources.registry import IngestUnit, register_units
from infra.config import StrictModel

# Monash frequency names -> pandas aliases; ``N_seconds``/``N_minutes``/``N_hours`` are handled by a pattern.
MONASH_FREQUENCIES: dict[str, str] = {
    "yearly": "YS",
    "quarterly": "QS",
    "monthly": "MS",
    "weekly": "W",
    "daily": "D",
    "hourly": "h",
    "half_hourly": "30min",
    "minutely": "min",
    "secondly": "s",
}
MONASH_UNITS: dict[str, str] = {"seconds": "s", "minutes": "min", "hours": "h", "days": "D"}
_N_UNITS_RE = re.compile(r"^(\d+)_(seconds|minutes|hours|days)$")
TSF_DATE_FORMAT = "%Y-%m-%d %H-%M-%S"
ATTRIBUTE_TYPES = ("numeric", "string", "date")
# Attributes that become the item id and the start rather than plain attributes.
ID_ATTRIBUTE = "series_name"
START_ATTRIBUTE = "start_timestamp"
READ_DOC = "Monash .tsf files: one series per data row, id = series_name (or row number), start = start_timestamp."


class TsfOptions(StrictModel):

    freq: str | None = Field(None, description="override the file's @frequency (a pandas alias)")
    encoding: str = Field("latin-1", description="Monash files are latin-1/cp1252; latin-1 never fails to decode")


def monash_freq(name: str, file: str, where: str) -> str:
    """Map a Monash ``@frequency`` value to a pandas alias; an unknown name is an error naming the line."""
    key = name.strip().lower()
    if key in MONASH_FREQUENCIES:
        return MONASH_FREQUENCIES[key]
    m = _N_UNITS_RE.match(key)
    if m is not None:
        return f"{int(m[1])}{MONASH_UNITS[m[2]]}"
    raise MalformedInputError(file, where, f"unknown @frequency {name!r}")


@dataclass(frozen=True)
class TsfHeader:
    """What the ``@`` lines say, parsed once per file and handed to every chunk of it."""

    columns: tuple[tuple[str, str], ...]
    attributes: dict[str, Any]
    freq: str | None  # the option's override, else the file's @frequency
    lines: int  # physical lines up to and including @data


def plan(
    paths: list[str], options: TsfOptions, storage_options: dict[str, Any], chunk_bytes: int | None
) -> list[IngestUnit]:
    """One unit per file; a large uncompressed file whose rows are named (series_name) in byte-range chunks.

    Unnamed rows take their row number as id, which a chunk cannot know, so such files stay whole.
    """
    units: list[IngestUnit] = []
    for unit in file_units(expand_inputs(paths, storage_options, [".tsf"])):
        url = unit.files[0]
        if not splittable(url, storage_options, options.encoding, chunk_bytes):
            units.append(unit)
            continue
        with open_text(url, storage_options, options.encoding) as fh:
            header = _parse_header(enumerate(fh, start=1), url, _override(options))
        names = {name for name, _ in header.columns}
        ranges = line_chunks(url, storage_options, header.lines, chunk_bytes) if ID_ATTRIBUTE in names else None
        units.extend(unit.split(ranges, header))
    return units


def read_unit(unit: IngestUnit, options: TsfOptions, storage_options: dict[str, Any]) -> Iterator[RawSeries]:
    """The series of one file, or of one chunk of it (rows of the chunk's byte range, the header given)."""
    url = unit.files[0]
    if unit.context is None:
        with open_text(url, storage_options, options.encoding) as fh:
            lines = enumerate(fh, start=1)
            header = _parse_header(lines, url, _override(options))
            yield from _rows(lines, header, url, unit.prefix)
        return
    with open_text_range(url, storage_options, options.encoding, unit.start, unit.stop) as fh:
        yield from _rows(enumerate(fh, start=unit.line_base + 1), unit.context, url, unit.prefix)


def _override(options: TsfOptions) -> str | None:
    return source_freq(options.freq) if options.freq else None


def _parse_header(lines: Iterator[tuple[int, str]], url: str, freq_override: str | None) -> TsfHeader:
    """Consume the lines up to and including ``@data``; blank and ``#`` lines may sit anywhere."""
    columns: list[tuple[str, str]] = []
    header: dict[str, Any] = {}
    freq: str | None = None
    for line_no, raw_line in lines:
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"line {line_no}"
        if not line.startswith("@"):
            raise MalformedInputError(url, where, "data row before @data")
        keyword, _, value = line[1:].partition(" ")
        keyword, value = keyword.lower(), value.strip()
        if keyword == "data":
            if not columns:
                raise MalformedInputError(url, where, "@data before any @attribute")
            return TsfHeader(tuple(columns), header, freq_override or freq, line_no)
        if keyword == "attribute":
            columns.append(_parse_attribute(value, url, where))
        elif keyword == "frequency":
            # With an override the file's own name need not be known.
            freq = freq_override or monash_freq(value, url, where)
            header["frequency"] = value
        elif keyword in ("missing", "equallength"):
            if value.lower() not in ("true", "false"):
                raise MalformedInputError(url, where, f"@{keyword} must be true or false, got {value!r}")
            header[keyword] = value.lower() == "true"
        elif keyword == "horizon":
            header["horizon"] = _parse_number(value, url, where, "@horizon")
        elif keyword == "relation":
            header["relation"] = value
        else:
            raise MalformedInputError(url, where, f"unknown header @{keyword}")
    raise MalformedInputError(url, "end of file", "no @data line")


def _rows(lines: Iterator[tuple[int, str]], header: TsfHeader, url: str, prefix: str) -> Iterator[RawSeries]:
    """One series per data line; ``row`` (the id of unnamed rows) counts from the first line given."""
    row = 0
    for line_no, raw_line in lines:
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        row += 1
        yield _parse_row(line, header, url, f"line {line_no}", prefix, row)


read = register_units("tsf", TsfOptions, plan, read_unit, READ_DOC)


def _parse_attribute(value: str, file: str, where: str) -> tuple[str, str]:
    parts = value.split()
    if len(parts) != 2 or parts[1].lower() not in ATTRIBUTE_TYPES:
        raise MalformedInputError(file, where, f"@attribute needs 'NAME numeric|string|date', got {value!r}")
    return parts[0], parts[1].lower()


def _parse_number(text: str, file: str, where: str, what: str) -> int | float:
    try:
        number = float(text)
    except ValueError:
        raise MalformedInputError(file, where, f"{what} is not a number: {text!r}") from None
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


def _parse_row(line: str, header: TsfHeader, file: str, where: str, prefix: str, row: int) -> RawSeries:
    columns = header.columns
    fields = line.split(":")
    if len(fields) != len(columns) + 1:
        raise MalformedInputError(
            file, where, f"expected {len(columns)} attribute fields then the values, found {len(fields)} fields"
        )
    attributes: dict[str, Any] = dict(header.attributes)
    item_id = str(row)
    start: datetime | None = None
    for (name, kind), text in zip(columns, fields[:-1], strict=True):
        value: Any
        if kind == "numeric":
            value = _parse_number(text, file, where, f"attribute {name}")
        elif kind == "date":
            try:
                value = datetime.strptime(text.strip(), TSF_DATE_FORMAT)
            except ValueError:
                raise MalformedInputError(
                    file, where, f"attribute {name}: {text!r} is not a date like 2015-07-01 12-00-00"
                ) from None
        else:
            value = text
        if name == ID_ATTRIBUTE:
            item_id = str(value)
        elif name == START_ATTRIBUTE and isinstance(value, datetime):
            start = value
        else:
            attributes[name] = value.isoformat(sep=" ") if isinstance(value, datetime) else value
    values = fields[-1].strip()
    target = parse_floats(values.split(","), file, where) if values else np.empty(0, dtype=np.float64)
    return RawSeries(
        item_id=f"{prefix}{item_id}",
        target=target,
        start=start,
        freq=header.freq,
        attributes=attributes,
        input=f"{file}:{where}",
    )
