"""The generic long-format connector: unordered rows grouped per id, frequency per id, errors naming id/column."""

from __future__ import annotations

from datetime import datetime

import fsspec
import numpy as np
import pandas as pd
import pytest

from corpus.errors import MalformedInputError


def long_frame(seed: int = 0) -> tuple[pd.DataFrame, dict[str, pd.Series]]:
    """Three ids at different frequencies, rows shuffled; the expected series per id in time order."""
    rng = np.random.default_rng(seed)
    spec = {
        "hourly": ("2021-03-01 05:00", "h", 30),
        "daily": ("2020-01-01", "D", 12),
        "monthly": ("2019-01-01", "MS", 8),
    }
    parts, expected = [], {}
    for item, (start, freq, n) in spec.items():
        index = pd.date_range(start, periods=n, freq=freq)
        values = pd.Series(rng.normal(size=n).round(6), index=index)
        expected[item] = values
        parts.append(pd.DataFrame({"id": item, "timestamp": index, "value": values.to_numpy()}))
    frame = pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return frame, expected


def check(series, expected: dict[str, pd.Series], freqs: dict[str, str]) -> None:
    assert sorted(s.item_id for s in series) == sorted(expected)
    for s in series:
        want = expected[s.item_id]
        np.testing.assert_array_equal(s.target, want.to_numpy())
        assert s.start == want.index[0].to_pydatetime() and s.freq == freqs[s.item_id]


FREQS = {"hourly": "h", "daily": "D", "monthly": "MS"}


def test_unordered_csv_and_parquet(tmp_path, read_source):
    frame, expected = long_frame()
    frame.to_csv(tmp_path / "rows.csv", index=False)
    frame.to_parquet(tmp_path / "rows.parquet", index=False)
    from_csv = read_source("long", [tmp_path / "rows.csv"])
    from_parquet = read_source("long", [tmp_path / "rows.parquet"])
    check(from_csv, expected, FREQS)
    check(from_parquet, expected, FREQS)
    first_seen = list(dict.fromkeys(frame["id"]))
    assert [s.item_id for s in from_csv] == [s.item_id for s in from_parquet] == first_seen  # deterministic order


def test_custom_columns_gzip_and_remote(tmp_path, memory_root, read_source, compress):
    frame, expected = long_frame(seed=1)
    frame = frame.rename(columns={"id": "sensor", "timestamp": "time", "value": "reading"})
    frame.to_csv(tmp_path / "rows.csv", index=False)
    names = {"id_column": "sensor", "timestamp_column": "time", "value_column": "reading"}
    check(read_source("long", [compress(tmp_path / "rows.csv", "gz")], **names), expected, FREQS)
    with fsspec.open(f"{memory_root}/long/rows.parquet", "wb") as fh:
        frame.to_parquet(fh, index=False)
    check(read_source("long", [f"{memory_root}/long"], **names), expected, FREQS)  # a remote folder


def test_rows_split_over_files_are_pooled(tmp_path, read_source):
    frame, expected = long_frame(seed=2)
    frame.iloc[::2].to_csv(tmp_path / "part-0.csv", index=False)
    frame.iloc[1::2].to_parquet(tmp_path / "part-1.parquet", index=False)
    check(read_source("long", [tmp_path]), expected, FREQS)


def test_given_freq_puts_gaps_on_the_grid_as_nan(tmp_path, read_source):
    path = tmp_path / "gappy.csv"
    path.write_text("id,timestamp,value\na,2020-01-05,5\na,2020-01-01,1\na,2020-01-02,\nb,2020-01-03,3\n")
    a, b = read_source("long", [path], freq="D")
    np.testing.assert_array_equal(a.target, [1.0, np.nan, np.nan, np.nan, 5.0])
    assert (a.start, a.freq) == (datetime(2020, 1, 1), "D")
    np.testing.assert_array_equal(b.target, [3.0])
    with pytest.raises(MalformedInputError, match=r"gappy.csv: item a: irregular timestamps"):
        read_source("long", [path])


def test_off_grid_and_duplicate_timestamps_name_the_id(tmp_path, read_source):
    path = tmp_path / "odd.csv"
    path.write_text("id,timestamp,value\nx,2020-01-01 00:00,1\nx,2020-01-01 01:30,2\n")
    with pytest.raises(MalformedInputError, match=r"odd.csv: item x: timestamp 2020-01-01 01:30:00 is not on the h"):
        read_source("long", [path], freq="h")
    path.write_text("id,timestamp,value\nx,2020-01-01,1\nx,2020-01-01,2\ny,2020-01-01,2\n")
    with pytest.raises(MalformedInputError, match=r"odd.csv: item x: duplicate timestamp 2020-01-01"):
        read_source("long", [path])


def test_missing_column_names_column_and_file(tmp_path, read_source):
    path = tmp_path / "cols.csv"
    path.write_text("id,time,value\na,2020-01-01,1\n")
    with pytest.raises(MalformedInputError, match=r"cols.csv: column timestamp: missing column; columns are"):
        read_source("long", [path])


def test_unparseable_cells_name_the_id(tmp_path, read_source):
    path = tmp_path / "bad.csv"
    path.write_text("id,timestamp,value\na,2020-01-01,1\nb,2020-01-01,many\n")
    with pytest.raises(MalformedInputError, match=r"bad.csv: item b: column value: cannot parse 'many'"):
        read_source("long", [path])
    path.write_text("id,timestamp,value\na,2020-01-01,1\nb,someday,2\n")
    with pytest.raises(MalformedInputError, match=r"bad.csv: item b: column timestamp: cannot parse 'someday'"):
        read_source("long", [path])
    path.write_text("id,timestamp,value\na,2020-01-01,1\nc,,2\n")
    with pytest.raises(MalformedInputError, match=r"bad.csv: item c: empty timestamp"):
        read_source("long", [path])
    path.write_text("id,timestamp,value\na,2020-01-01,1\n,2020-01-02,2\n")
    with pytest.raises(MalformedInputError, match=r"bad.csv: column id: 1 rows have an empty id"):
        read_source("long", [path])


def test_short_series_without_freq_keep_freq_unknown(tmp_path, read_source):
    path = tmp_path / "short.csv"
    path.write_text("id,timestamp,value\na,2020-01-01,1\na,2020-01-03,2\n")
    (a,) = read_source("long", [path])
    assert a.freq is None and a.start == datetime(2020, 1, 1)
    np.testing.assert_array_equal(a.target, [1.0, 2.0])
