"""The Monash .tsf connector: real files against an independent parse, header mapping, errors with line numbers."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from corpus.errors import MalformedInputError
from corpus.sources.tsf import monash_freq

HEADER = """# a comment
@relation demo
@attribute series_name string
@attribute state string
@attribute weight numeric
@attribute start_timestamp date
@frequency {freq}
@horizon 6
@missing true
@equallength false

# comment between header and data
@data
"""


def independent_tsf(path: Path) -> list[tuple[list[str], list[float]]]:
    """Attribute strings and values of every data row, parsed without the connector."""
    rows = []
    seen_data = False
    for line in path.read_bytes().decode("latin-1").splitlines():
        if line.lower().startswith("@data"):
            seen_data = True
        elif seen_data and line.strip() and not line.startswith("#"):
            *attrs, values = line.strip().split(":")
            rows.append((attrs, [math.nan if v == "?" else float(v) for v in values.split(",")]))
    return rows


@pytest.mark.parametrize(
    ("name", "count", "freq", "horizon"),
    [("m4_hourly_dataset.tsf", 414, "h", 48), ("ausgrid_weekly_sample.tsf", 299, "W", 8)],
)
def test_real_monash_files_match_an_independent_parse(read_source, real_data_path, name, count, freq, horizon):
    path = real_data_path("monash", name)
    series = read_source("tsf", [path])
    expected = independent_tsf(path)
    assert len(series) == len(expected) == count
    for got, (attrs, values) in zip(series, expected, strict=True):
        assert got.item_id == attrs[0]
        assert got.start == datetime.strptime(attrs[1], "%Y-%m-%d %H-%M-%S")
        np.testing.assert_array_equal(got.target, np.array(values))
        assert got.freq == freq
        assert got.attributes["horizon"] == horizon and got.attributes["missing"] is False
    assert series[0].input == f"{path}:line {16 if count == 414 else 17}"


def test_m4_hourly_tsf_equals_the_m4_csv_train_plus_test(read_source, real_data_path):
    """Two public copies of M4 hourly: the Monash file is the train csv followed by the test csv."""
    tsf = read_source("tsf", [real_data_path("monash", "m4_hourly_dataset.tsf")])
    m4 = read_source("m4", [real_data_path("m4", "Hourly-train.csv"), real_data_path("m4", "Hourly-test.csv")])
    assert len(tsf) == len(m4) == 414
    for a, b in zip(tsf, m4, strict=True):
        assert a.item_id == "T" + b.item_id[1:]
        np.testing.assert_array_equal(a.target, b.target)


def test_small_file_attributes_missing_values_and_blank_lines(tmp_path, read_source):
    path = tmp_path / "demo.tsf"
    body = "a:NSW:1.5:2020-01-01 00-00-00:1,?,3\n\n\nb:VIC:2:2020-02-01 06-30-00:4.5,5e2\n"
    path.write_text(HEADER.format(freq="daily") + body, encoding="latin-1")
    a, b = read_source("tsf", [path])
    assert (a.item_id, b.item_id) == ("a", "b")
    np.testing.assert_array_equal(a.target, [1.0, np.nan, 3.0])
    np.testing.assert_array_equal(b.target, [4.5, 500.0])
    assert b.start == datetime(2020, 2, 1, 6, 30) and b.freq == "D"
    assert a.attributes == {
        "relation": "demo",
        "frequency": "daily",
        "horizon": 6,
        "missing": True,
        "equallength": False,
        "state": "NSW",
        "weight": 1.5,
    }
    assert b.attributes["weight"] == 2 and isinstance(b.attributes["weight"], int)
    assert b.input == f"{path}:line 17"


def test_latin1_text_and_row_numbers_without_series_name(tmp_path, read_source):
    path = tmp_path / "plain.tsf"
    path.write_bytes(
        "# caf\xe9 \x96 comment\n@relation x\n@attribute city string\n@data\nZ\xfcrich:1,2\nOslo:3\n".encode("latin-1")
    )
    first, second = read_source("tsf", [path])
    assert (first.item_id, second.item_id) == ("1", "2")
    assert first.attributes == {"relation": "x", "city": "Z\xfcrich"}
    assert first.start is None and first.freq is None


@pytest.mark.parametrize("kind", ["gz", "bz2", "zip"])
def test_compressed_files_give_the_same_series(tmp_path, read_source, compress, kind):
    path = tmp_path / "demo.tsf"
    path.write_text(HEADER.format(freq="4_seconds") + "a:x:1:2020-01-01 00-00-00:1,2,3\n", encoding="latin-1")
    plain = read_source("tsf", [path])
    packed = read_source("tsf", [compress(path, kind)])
    assert [s.item_id for s in packed] == ["a"] and packed[0].freq == "4s"
    np.testing.assert_array_equal(packed[0].target, plain[0].target)


def test_several_files_prefix_item_ids_with_the_file_stem(tmp_path, read_source):
    for name in ("one", "two"):
        (tmp_path / f"{name}.tsf").write_text("@attribute series_name string\n@data\nT1:1,2\n")
    series = read_source("tsf", [tmp_path])  # a folder lists its .tsf files in name order
    assert [s.item_id for s in series] == ["one/T1", "two/T1"]


@pytest.mark.parametrize(
    ("monash", "alias"),
    [
        ("yearly", "YS"),
        ("quarterly", "QS"),
        ("monthly", "MS"),
        ("weekly", "W"),
        ("daily", "D"),
        ("hourly", "h"),
        ("half_hourly", "30min"),
        ("minutely", "min"),
        ("10_minutes", "10min"),
        ("4_seconds", "4s"),
        ("15_minutes", "15min"),
        ("Daily", "D"),
    ],
)
def test_monash_frequency_names_map_to_pandas_aliases(monash, alias):
    assert monash_freq(monash, "f.tsf", "line 1") == alias


@pytest.mark.parametrize(
    ("body", "line", "reason"),
    [
        ("@frequency fortnightly\n@data\n", 1, "unknown @frequency 'fortnightly'"),
        ("1:2,3\n@data\n", 1, "data row before @data"),
        ("@data\nT1:x:1,2\n", 2, "expected 1 attribute fields then the values, found 3 fields"),
        ("@data\nT1\n", 2, "expected 1 attribute fields then the values, found 1 fields"),
        ("@data\n# fine\nT1:1,2\nT2:1,abc,3\n", 4, "value 2 is not a number: 'abc'"),
        ("@horizon soon\n@data\n", 1, "@horizon is not a number"),
        ("@missing maybe\n@data\n", 1, "@missing must be true or false"),
    ],
)
def test_malformed_files_name_the_file_line_and_reason(tmp_path, read_source, body, line, reason):
    path = tmp_path / "bad.tsf"
    path.write_text("@attribute series_name string\n" + body)
    with pytest.raises(MalformedInputError, match=reason) as info:
        read_source("tsf", [path])
    assert info.value.file == str(path) and info.value.where == f"line {line + 1}"
    assert str(info.value).startswith(f"{path}: line {line + 1}: ")


def test_bad_date_and_numeric_attributes_are_errors(tmp_path, read_source):
    path = tmp_path / "bad.tsf"
    path.write_text("@attribute start_timestamp date\n@data\n2020/01/01 00-00-00:1\n")
    with pytest.raises(MalformedInputError, match="line 3: attribute start_timestamp: '2020/01/01 00-00-00' is not a"):
        read_source("tsf", [path])
    path.write_text("@attribute start_timestamp date\n@data\n2020-01-01 00:00:00:1\n")  # colons split fields
    with pytest.raises(MalformedInputError, match="line 3: expected 1 attribute fields then the values, found 4"):
        read_source("tsf", [path])
    path.write_text("@attribute weight numeric\n@data\nheavy:1\n")
    with pytest.raises(MalformedInputError, match="line 3: attribute weight is not a number: 'heavy'"):
        read_source("tsf", [path])


def test_freq_option_overrides_even_an_unknown_frequency(tmp_path, read_source):
    path = tmp_path / "odd.tsf"
    path.write_text("@attribute series_name string\n@frequency fortnightly\n@data\nT1:1,2\n")
    (series,) = read_source("tsf", [path], freq="2W")
    assert series.freq == "2W" and series.attributes["frequency"] == "fortnightly"
    with pytest.raises(ValueError, match="frequency: Extra inputs are not permitted"):
        read_source("tsf", [path], frequency="D")
