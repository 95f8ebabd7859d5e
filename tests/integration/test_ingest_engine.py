"""The ingest engine end to end: validation, quarantine, duplicates, idempotency, the CLI contract."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from corpus.config import IngestConfig, SourceConfig
from corpus.errors import MalformedInputError
from corpus.ingest import ingest_source
from infra.versions import list_versions, open_version, read_side_table, read_table
from tests.conftest import real_data
from tests.integration.cli_helpers import last_line, run_factost


def _write_long_csv(path: Path, series: dict[str, list[str]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "timestamp", "value"])
        for sid, values in series.items():
            for t, v in enumerate(values):
                w.writerow([sid, f"2024-01-01 {t // 60:02d}:{t % 60:02d}:00", v])


def test_bad_series_go_to_quarantine_and_duplicates_are_kept_once(tmp_path: Path) -> None:
    good = [str(float(i)) for i in range(20)]
    _write_long_csv(
        tmp_path / "in.csv",
        {
            "good": good,
            "copy": good,  # same content as "good"
            "gappy": ["1.5", "", "2.5"] + [str(i) for i in range(17)],
            "nan_only": [""] * 20,
            "short": ["1", "2", "3"],
            "inf": ["1", "inf"] + ["2"] * 18,
        },
    )
    source = SourceConfig(name="demo", kind="long", paths=[str(tmp_path / "in.csv")], freq="min")
    result = ingest_source(source, IngestConfig(min_length=10), str(tmp_path / "root"))

    table = read_table(result.version)
    assert table.column("series_id").to_pylist() == ["demo/good", "demo/gappy"]
    gappy = np.asarray(table.column("target")[1].as_py(), dtype=np.float32)
    assert gappy[0] == np.float32(1.5) and math.isnan(gappy[1]) and gappy[2] == np.float32(2.5)
    assert table.column("length").to_pylist() == [20, 20]
    assert set(table.column("freq").to_pylist()) == {"min"}

    quarantine = read_side_table(result.version, "quarantine").to_pylist()
    reasons = {row["series_id"]: row["reason"] for row in quarantine}
    assert reasons["demo/nan_only"] == "all values missing (NaN)"
    assert reasons["demo/short"] == "too short: 3 points < min_length 10"
    assert reasons["demo/inf"] == "non-finite value inf at index 1"
    assert all("in.csv" in row["input"] for row in quarantine)
    short_row = next(r for r in quarantine if r["series_id"] == "demo/short")
    assert short_row["target"] == [1.0, 2.0, 3.0]  # nothing is lost, even in quarantine

    dups = read_side_table(result.version, "duplicates").to_pylist()
    assert [(d["series_id"], d["duplicate_of"]) for d in dups] == [("demo/copy", "demo/good")]
    stats = result.version.manifest["stats"]
    assert (stats["series"], stats["quarantined"], stats["duplicates"], stats["points"]) == (2, 3, 1, 40)
    assert stats["missing_points"] == 1


def test_holdout_keeps_each_series_last_points_out_and_evaluation_still_scores_them(tmp_path: Path) -> None:
    from training.evaluate import read_source

    _write_long_csv(tmp_path / "in.csv", {"long": [str(float(i)) for i in range(30)], "edge": ["7"] * 14})
    source = SourceConfig(name="demo", kind="long", paths=[str(tmp_path / "in.csv")], freq="min", holdout=5)
    result = ingest_source(source, IngestConfig(min_length=10), str(tmp_path / "root"))

    table = read_table(result.version)
    assert table.column("series_id").to_pylist() == ["demo/long"]
    assert table.column("target")[0].as_py() == [float(i) for i in range(25)]  # the last 5 never stored
    quarantine = read_side_table(result.version, "quarantine").to_pylist()
    assert [(r["series_id"], r["reason"], r["length"]) for r in quarantine] == [
        ("demo/edge", "too short: 9 points < min_length 10 (after holding out the last 5)", 9)]
    without = ingest_source(source.model_copy(update={"holdout": 0}), IngestConfig(min_length=10),
                            str(tmp_path / "root"))
    assert without.version.version_id != result.version.version_id  # the holdout is part of the version id
    scored = read_source(source)  # evaluation reads the whole series, the held-out window included
    assert [len(s) for s in scored.series] == [30, 14]


def test_reingest_unchanged_is_a_noop_and_a_changed_input_makes_a_new_version(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    _write_long_csv(path, {"a": [str(i) for i in range(12)]})
    source = SourceConfig(name="demo", kind="long", paths=[str(path)], freq="min")
    cfg = IngestConfig()
    first = ingest_source(source, cfg, str(tmp_path / "root"))
    manifest = Path(first.version.folder_url) / "_manifest.json"
    mtime = manifest.stat().st_mtime_ns
    second = ingest_source(source, cfg, str(tmp_path / "root"))
    assert second.reused and second.version.url == first.version.url
    assert manifest.stat().st_mtime_ns == mtime

    _write_long_csv(path, {"a": [str(i) for i in range(13)]})
    third = ingest_source(source, cfg, str(tmp_path / "root"))
    assert not third.reused and third.version.url != first.version.url
    assert len(list_versions(str(tmp_path / "root"), "corpus/demo")) == 2


def test_malformed_file_error_names_file_item_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "bad.tsf"
    path.write_text("@relation x\n@attribute series_name string\n@frequency daily\n@data\nT1:1,2,oops,4\n")
    source = SourceConfig(name="bad", kind="tsf", paths=[str(path)])
    with pytest.raises(MalformedInputError) as info:
        ingest_source(source, IngestConfig(), str(tmp_path / "root"))
    msg = str(info.value)
    assert "bad.tsf" in msg and "line 5" in msg and "oops" in msg
    assert list_versions(str(tmp_path / "root"), "corpus/bad") == []  # nothing half-written is visible
    leftovers = tmp_path / "root" / "corpus" / "bad"
    assert not leftovers.exists() or not any(leftovers.iterdir())


def test_m4_through_the_cli_matches_an_independent_parse_and_is_idempotent(tmp_path: Path) -> None:
    train, test = real_data("m4", "Hourly-train.csv"), real_data("m4", "Hourly-test.csv")
    root = tmp_path / "root"
    first = run_factost("ingest", "m4", str(train), str(test), "--out", str(root), "--name", "m4_hourly")
    url = last_line(first.stdout)
    version = open_version(url)
    assert version.manifest["stats"]["series"] == 414

    expected: dict[str, list[float]] = {}
    for file in (train, test):
        with open(file, newline="") as fh:
            rows = csv.reader(fh)
            next(rows)
            for row in rows:
                expected.setdefault(row[0].strip(), []).extend(float(c) for c in row[1:] if c.strip())
    table = read_table(version)
    got = dict(zip(table.column("series_id").to_pylist(), table.column("target").to_pylist(), strict=True))
    assert len(got) == len(expected)
    for item, values in expected.items():
        np.testing.assert_array_equal(np.asarray(got[f"m4_hourly/{item}"], np.float32), np.asarray(values, np.float32))
    assert set(table.column("freq").to_pylist()) == {"h"}

    files_before = sorted(str(p) for p in root.rglob("*"))
    second = run_factost("ingest", "m4", str(train), str(test), "--out", str(root), "--name", "m4_hourly")
    assert last_line(second.stdout) == url
    assert sorted(str(p) for p in root.rglob("*")) == files_before
    assert json.loads((Path(version.folder_url) / "_manifest.json").read_text())["version_id"] == version.version_id


def test_cli_fails_with_one_line_reason(tmp_path: Path) -> None:
    proc = run_factost("ingest", "m4", str(tmp_path / "missing.csv"), "--out", str(tmp_path), check=False)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "missing.csv" in lines[0] and "not found" in lines[0]
    proc = run_factost("ingest", "xls", str(tmp_path), check=False)
    assert proc.returncode != 0 and "unknown connector 'xls'" in proc.stderr
    assert os.path.exists(tmp_path)
