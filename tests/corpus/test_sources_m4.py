"""The M4 wide-csv connector: real hourly train + test joined per id, padding, header, errors naming the id."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from corpus.errors import MalformedInputError
from corpus.sources.m4 import freq_from_name


def independent_m4(path: Path) -> dict[str, list[float]]:
    """Id -> values (trailing empty cells dropped), read with the csv module directly."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    return {row[0]: [float(v) for v in row[1:] if v != ""] for row in rows}


def test_real_hourly_train_and_test_join_per_id(read_source, real_data_path):
    train, test = real_data_path("m4", "Hourly-train.csv"), real_data_path("m4", "Hourly-test.csv")
    series = read_source("m4", [test, train])  # order of the two paths does not matter
    expected_train, expected_test = independent_m4(train), independent_m4(test)
    assert [s.item_id for s in series] == list(expected_train) and len(series) == 414
    for s in series:
        expected = expected_train[s.item_id] + expected_test[s.item_id]
        np.testing.assert_array_equal(s.target, np.array(expected))
        assert s.freq == "h" and s.start is None
        assert s.attributes == {"train_length": len(expected_train[s.item_id]), "test_length": 48}
    lengths = sorted(s.attributes["train_length"] for s in series)
    assert (lengths[0], lengths[-1]) == (700, 960)


def test_real_train_file_alone(read_source, real_data_path):
    train = real_data_path("m4", "Hourly-train.csv")
    series = read_source("m4", [train], freq="2h")
    expected = independent_m4(train)
    assert len(series) == 414 and series[0].freq == "2h" and series[0].attributes == {}
    for s in series:
        np.testing.assert_array_equal(s.target, np.array(expected[s.item_id]))


def write(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as fh:
        csv.writer(fh, quoting=csv.QUOTE_ALL).writerows(rows)
    return path


def test_padding_middle_gaps_and_compressed_pair(tmp_path, read_source, compress):
    train = write(
        tmp_path / "Weekly-train.csv",
        [["V1", "V2", "V3", "V4", "V5"], ["W1", "1", "", "3", ""], ["W2", "4", "5", "", ""]],
    )
    test = write(tmp_path / "Weekly-test.csv", [["V1", "V2", "V3"], ["W2", "7", "8"], ["W1", "9", ""]])
    series = read_source("m4", [compress(train, "gz"), compress(test, "bz2")])
    assert [s.item_id for s in series] == ["W1", "W2"]
    np.testing.assert_array_equal(series[0].target, [1.0, np.nan, 3.0, 9.0])
    np.testing.assert_array_equal(series[1].target, [4.0, 5.0, 7.0, 8.0])
    assert series[0].freq == "W" and series[0].input.endswith("Weekly-train.csv.gz:line 2")


@pytest.mark.parametrize(
    ("name", "freq"),
    [
        ("Hourly-train.csv", "h"),
        ("Daily-test.csv.gz", "D"),
        ("Weekly-train.csv", "W"),
        ("Monthly-train.csv", "MS"),
        ("s3://bucket/m4/Quarterly-test.csv", "QS"),
        ("Yearly-train.csv.zip", "YS"),
        ("series.csv", None),
    ],
)
def test_frequency_from_the_file_name(name, freq):
    assert freq_from_name(name) == freq


def test_an_id_missing_from_the_test_file_is_named(tmp_path, read_source):
    train = write(tmp_path / "Daily-train.csv", [["V1", "V2"], ["D1", "1"], ["D2", "2"]])
    test = write(tmp_path / "Daily-test.csv", [["V1", "V2"], ["D1", "3"]])
    with pytest.raises(MalformedInputError, match=r"Daily-test.csv: item D2: id missing in the test file"):
        read_source("m4", [train, test])


def test_an_id_missing_from_the_train_file_is_named(tmp_path, read_source):
    train = write(tmp_path / "Daily-train.csv", [["V1", "V2"], ["D1", "1"]])
    test = write(tmp_path / "Daily-test.csv", [["V1", "V2"], ["D1", "3"], ["D9", "4"]])
    with pytest.raises(MalformedInputError, match=r"Daily-train.csv: item D9: id missing in the train file"):
        read_source("m4", [train, test])


def test_bad_values_and_duplicates_name_line_and_item(tmp_path, read_source):
    path = write(tmp_path / "Monthly-train.csv", [["V1", "V2", "V3"], ["M1", "1", "2"], ["M2", "1", "x"]])
    with pytest.raises(MalformedInputError, match=r"Monthly-train.csv: line 3 \(item M2\): value 2 is not a number"):
        read_source("m4", [path])
    path = write(tmp_path / "Monthly-train.csv", [["V1", "V2"], ["M1", "1"], ["M1", "2"]])
    with pytest.raises(MalformedInputError, match=r"item M1: duplicate id \(again at line 3\)"):
        read_source("m4", [path])


def test_two_train_files_of_one_set_are_refused(tmp_path, read_source):
    a = write(tmp_path / "Daily-train.csv", [["V1", "V2"], ["D1", "1"]])
    b = tmp_path / "Daily-train.csv.gz"
    b.write_bytes(b"")
    with pytest.raises(ValueError, match="cannot pair"):
        read_source("m4", [a, b])
