"""The LTSF wide-csv connector: real ETTh2 and exchange-rate files against pandas, inferred frequency, errors."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from corpus.errors import MalformedInputError


@pytest.mark.parametrize(
    ("folder", "name", "columns", "rows", "freq", "start"),
    [
        ("ett", "ETTh2.csv", ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"], 17420, "h", datetime(2016, 7, 1)),
        ("exchange_rate", "exchange_rate.csv", [*"0123456", "OT"], 7588, "D", datetime(1990, 1, 1)),
    ],
)
def test_real_files_match_pandas(read_source, real_data_path, folder, name, columns, rows, freq, start):
    path = real_data_path(folder, name)
    frame = pd.read_csv(path, float_precision="round_trip")  # correctly rounded like ours (pandas 2 default: not)
    series = read_source("ltsf", [path], block_size=64 << 10)  # small blocks: many record batches per file
    assert [s.item_id for s in series] == columns == list(frame.columns[1:])
    for s in series:
        assert s.target.shape == (rows,)
        np.testing.assert_array_equal(s.target, frame[s.item_id].to_numpy(dtype=np.float64))
        assert (s.freq, s.start, s.input) == (freq, start, f"{path}:column {s.item_id}")


def test_compressed_file_empty_cells_and_freq_override(tmp_path, read_source, compress):
    path = tmp_path / "weather.csv"
    path.write_text("date,p (mbar),T (degC)\n2020-01-01 00:10:00,1008.9,\n2020-01-01 00:20:00,NaN,0.5\n")
    for kind in ("bz2", "zip"):
        (p, t) = read_source("ltsf", [compress(path, kind)], freq="10T")  # legacy alias, normalised
        assert (p.item_id, t.item_id, p.freq) == ("p (mbar)", "T (degC)", "10min")
        np.testing.assert_array_equal(p.target, [1008.9, np.nan])
        np.testing.assert_array_equal(t.target, [np.nan, 0.5])
        assert p.start == datetime(2020, 1, 1, 0, 10)


def test_byte_order_mark_before_the_date_header(tmp_path, read_source):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffdate,a\n2020-01-01,1\n2020-01-02,2\n2020-01-03,3\n".encode())
    (series,) = read_source("ltsf", [path])
    assert series.item_id == "a" and series.freq == "D"
    np.testing.assert_array_equal(series.target, [1.0, 2.0, 3.0])


def test_several_files_prefix_column_names(tmp_path, read_source):
    body = "date,OT\n2020-01-01,1\n2020-01-02,2\n2020-01-03,3\n"
    for name in ("ETTh1.csv", "ETTh2.csv"):
        (tmp_path / name).write_text(body)
    series = read_source("ltsf", [tmp_path / "ETTh1.csv", tmp_path / "ETTh2.csv"])
    assert [s.item_id for s in series] == ["ETTh1/OT", "ETTh2/OT"] and series[0].freq == "D"


def test_missing_date_column_is_named(tmp_path, read_source):
    path = tmp_path / "nodate.csv"
    path.write_text("time,a\n2020-01-01,1\n")
    with pytest.raises(MalformedInputError, match=r"nodate.csv: column date: missing date column; columns are"):
        read_source("ltsf", [path])


def test_non_numeric_cell_names_the_column(tmp_path, read_source):
    path = tmp_path / "bad.csv"
    path.write_text("date,a,b\n2020-01-01,1,2\n2020-01-02,3,oops\n")
    with pytest.raises(MalformedInputError, match=r"bad.csv: column b, line 3: .*invalid value 'oops'"):
        read_source("ltsf", [path])


def test_irregular_dates_need_a_freq(tmp_path, read_source):
    path = tmp_path / "gaps.csv"
    path.write_text("date,a\n2020-01-01,1\n2020-01-02,2\n2020-01-05,3\n2020-01-06,4\n")
    with pytest.raises(MalformedInputError, match=r"gaps.csv: column date \(first 4 rows\): irregular timestamps"):
        read_source("ltsf", [path])
    (series,) = read_source("ltsf", [path], freq="D")
    assert series.freq == "D"
    with pytest.raises(MalformedInputError, match="unknown frequency 'fortnight'"):
        read_source("ltsf", [path], freq="fortnight")
