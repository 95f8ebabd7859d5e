"""The Wikipedia web-traffic connector on small files in the Kaggle ``train_1.csv`` layout."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from corpus.errors import MalformedInputError

PAGES = [
    "2NE1_zh.wikipedia.org_all-access_spider",
    'Dr. "Who", the series_en.wikipedia.org_desktop_all-agents',
    "Main_Page_commons.wikimedia.org_mobile-web_user",
    "Москва_ru.wikipedia.org_all-access_all-agents",
    "not-a-page-name",
]


def write_wiki(path: Path, days: int = 6, rows: list[list[str]] | None = None) -> tuple[Path, np.ndarray]:
    """A train_1.csv-style file with a fixed-seed value matrix, some cells left empty."""
    rng = np.random.default_rng(7)
    values = rng.integers(0, 5000, size=(len(PAGES), days)).astype(float)
    values[rng.random(values.shape) < 0.2] = np.nan
    header = ["Page", *pd.date_range("2015-07-01", periods=days, freq="D").strftime("%Y-%m-%d")]
    body = rows or [
        [p, *("" if np.isnan(v) else str(int(v)) for v in row)] for p, row in zip(PAGES, values, strict=True)
    ]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, *body])
    return path, values


def test_rows_become_daily_series_with_nan_for_empty_cells(tmp_path, read_source):
    path, values = write_wiki(tmp_path / "train_1.csv")
    series = read_source("wiki", [path])
    assert [s.item_id for s in series] == PAGES
    for s, expected in zip(series, values, strict=True):
        np.testing.assert_array_equal(s.target, expected)
        assert s.start == datetime(2015, 7, 1) and s.freq == "D"
    assert np.isnan(values).any()  # the fixture really has missing cells
    assert series[1].attributes == {"project": "en.wikipedia.org", "access": "desktop", "agent": "all-agents"}
    assert series[4].attributes == {}
    assert series[2].input == f"{path}:line 4"


@pytest.mark.parametrize("kind", ["zip", "gz"])
def test_compressed_wiki_files(tmp_path, read_source, compress, kind):
    path, values = write_wiki(tmp_path / "train_2.csv")
    series = read_source("wiki", [compress(path, kind)])
    assert [s.item_id for s in series] == PAGES
    np.testing.assert_array_equal(np.stack([s.target for s in series]), values)


def test_byte_order_mark_is_ignored(tmp_path, read_source):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffPage,2015-07-01,2015-07-02,2015-07-03\nx_en.wikipedia.org_desktop_user,1,,3\n".encode())
    (series,) = read_source("wiki", [path])
    assert series.item_id == "x_en.wikipedia.org_desktop_user"
    np.testing.assert_array_equal(series.target, [1.0, np.nan, 3.0])


def test_short_row_names_the_line(tmp_path, read_source):
    path, _ = write_wiki(tmp_path / "train_1.csv", rows=[["a_b_c_d", "1"] + [""] * 5, ["short", "1", "2"]])
    with pytest.raises(MalformedInputError, match=r"train_1.csv: line 3: expected 7 fields like the header, found 3"):
        read_source("wiki", [path])


def test_bad_value_names_line_and_page(tmp_path, read_source):
    path, _ = write_wiki(tmp_path / "train_1.csv", rows=[["p1", "1", "2", "3", "x", "5", "6"]])
    with pytest.raises(MalformedInputError, match=r"line 2 \(item p1\): value 4 is not a number: 'x'"):
        read_source("wiki", [path])


def test_header_must_be_page_then_consecutive_dates(tmp_path, read_source):
    path = tmp_path / "w.csv"
    path.write_text("Name,2015-07-01\nx,1\n")
    with pytest.raises(MalformedInputError, match=r"w.csv: line 1: header must start with 'Page', found 'Name'"):
        read_source("wiki", [path])
    path.write_text("Page,2015-07-01,July 2\nx,1,2\n")
    with pytest.raises(MalformedInputError, match=r"w.csv: line 1: header dates must be %Y-%m-%d"):
        read_source("wiki", [path])
    path.write_text("Page,2015-07-01,2015-07-02,2015-07-04,2015-07-05\nx,1,2,3,4\n")
    with pytest.raises(MalformedInputError, match=r"line 1 \(header dates\): irregular timestamps"):
        read_source("wiki", [path])
