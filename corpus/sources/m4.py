"""M4 competition wide csv files (``Hourly-train.csv``...), streamed row by row with the csv module.

Each row is ``id, v1, v2, ...`` padded on the right with empty cells up to the longest series of the file; a
header row of column names (``"V1","V2",...``) comes first. A train file and its test file (same name with
``-test``) are joined per id so that the series is the whole history: train values then test values.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
from pydantic import Field

from corpus.errors import MalformedInputError
from corpus.schema import RawSeries
from corpus.sources.common import expand_inputs, file_stem, open_text, parse_floats, source_freq
from corpus.sources.registry import IngestUnit, register_units
from infra.config import StrictModel

# The M4 file names carry the frequency; M4 gives no real timestamps, so anchored aliases are conventions.
M4_FREQUENCIES: dict[str, str] = {
    "hourly": "h",
    "daily": "D",
    "weekly": "W",
    "monthly": "MS",
    "quarterly": "QS",
    "yearly": "YS",
}
BOM = "\ufeff"
_SPLIT_RE = re.compile(r"[-_ ]?(train|test)$", re.IGNORECASE)


class M4Options(StrictModel):

    freq: str | None = Field(None, description="pandas alias; default from the file name (Hourly -> h, ...)")
    encoding: str = "utf-8"


def freq_from_name(url: str) -> str | None:
    """``Hourly-train.csv`` -> ``h``; None when the name carries no M4 frequency word."""
    stem = file_stem(url).lower()
    return next((alias for word, alias in M4_FREQUENCIES.items() if word in stem), None)


def _split_of(url: str) -> tuple[str, str]:
    """(group key, role) with role ``train``, ``test`` or ``single`` (a name with neither)."""
    stem = file_stem(url)
    m = _SPLIT_RE.search(stem)
    if m is None:
        return stem, "single"
    return stem[: m.start()], m[1].lower()


def plan(
    paths: list[str], options: M4Options, storage_options: dict[str, Any], chunk_bytes: int | None
) -> list[IngestUnit]:
    """One unit per train/test pair (or lone file): the join needs the whole test file, the id check the train's.

    ``chunk_bytes`` is not used: a pair is read whole (M4's largest train file is about 100 MB).
    """
    urls = expand_inputs(paths, storage_options, [".csv"])
    groups: dict[str, dict[str, str]] = {}
    for url in urls:
        key, role = _split_of(url)
        group = groups.setdefault(key, {})
        if role in group or "single" in group or (role == "single" and group):
            raise ValueError(f"m4: cannot pair {url} with {', '.join(group.values())}: give one train + one test")
        group[role] = url
    return [
        IngestUnit(files=(group["train"], group["test"]) if len(group) == 2 else tuple(group.values()))
        for group in groups.values()
    ]


def read_unit(unit: IngestUnit, options: M4Options, storage_options: dict[str, Any]) -> Iterator[RawSeries]:
    """A train file joined with its test file, or a lone file as it is."""
    override = source_freq(options.freq) if options.freq else None
    if len(unit.files) == 2:
        yield from _read_joined(unit.files[0], unit.files[1], override, options, storage_options)
    else:
        yield from _read_single(unit.files[0], override, options, storage_options)


read = register_units(
    "m4", M4Options, plan, read_unit,
    "M4 wide csv; a train file and its test file are joined per id (train values then test values).",
)


def _rows(url: str, options: M4Options, storage_options: dict[str, Any]) -> Iterator[tuple[str, np.ndarray, str]]:
    """(id, values, where) per data row; the header row is skipped, trailing padding dropped."""
    seen: set[str] = set()
    with open_text(url, storage_options, options.encoding) as fh:
        reader = csv.reader(fh)
        first = True
        for row in reader:
            where = f"line {reader.line_num}"
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if first:
                first = False
                row[0] = row[0].lstrip(BOM)
                if _is_header(row):
                    continue
            item_id = row[0].strip()
            if not item_id:
                raise MalformedInputError(url, where, "empty id in the first column")
            if item_id in seen:
                raise MalformedInputError(url, f"item {item_id}", f"duplicate id (again at {where})")
            seen.add(item_id)
            cells = row[1:]
            end = len(cells)
            while end and not cells[end - 1].strip():
                end -= 1
            yield item_id, parse_floats([c.strip() for c in cells[:end]], url, f"{where} (item {item_id})"), where


def _is_header(row: list[str]) -> bool:
    """The first row is a header when a non-empty value cell is not a number (``V2``, ``V3``...)."""
    for cell in row[1:]:
        if cell.strip():
            try:
                float(cell)
            except ValueError:
                return True
            return False
    return False


def _read_single(
    url: str, override: str | None, options: M4Options, storage_options: dict[str, Any]
) -> Iterator[RawSeries]:
    freq = override or freq_from_name(url)
    for item_id, values, where in _rows(url, options, storage_options):
        yield RawSeries(item_id=item_id, target=values, freq=freq, input=f"{url}:{where}")


def _read_joined(
    train_url: str, test_url: str, override: str | None, options: M4Options, storage_options: dict[str, Any]
) -> Iterator[RawSeries]:
    """Stream the train file, appending each id's test values; the test file (horizon-sized rows) is held."""
    freq = override or freq_from_name(train_url)
    test = {item_id: values for item_id, values, _ in _rows(test_url, options, storage_options)}
    for item_id, values, where in _rows(train_url, options, storage_options):
        tail = test.pop(item_id, None)
        if tail is None:
            raise MalformedInputError(test_url, f"item {item_id}", f"id missing in the test file ({train_url})")
        yield RawSeries(
            item_id=item_id,
            target=np.concatenate([values, tail]),
            freq=freq,
            attributes={"train_length": int(values.size), "test_length": int(tail.size)},
            input=f"{train_url}:{where}",
        )
    if test:
        first = next(iter(test))
        raise MalformedInputError(
            train_url, f"item {first}", f"id missing in the train file ({len(test)} test ids unmatched)"
        )
