"""Versions on a real S3-compatible server (moto server mode on 127.0.0.1)."""

from __future__ import annotations

import pyarrow as pa
import pytest
import s3fs

from infra.versions import VersionNotFoundError, VersionWriter, list_versions, open_version, read_table, verify_report

SCHEMA = pa.schema([("id", pa.int64())])


def test_version_round_trip_on_s3(s3_bucket) -> None:
    root, opts = s3_bucket
    w = VersionWriter(root, "demo", "v1", SCHEMA, storage_options=opts, part_max_rows=3)
    w.write(pa.table({"id": list(range(7))}, schema=SCHEMA))
    v = w.commit(config={"k": "v"}, inputs=[], code_version="c")
    assert v.url.startswith("s3://")
    assert [p["rows"] for p in v.manifest["parts"]] == [3, 3, 1]
    again = open_version(v.url, opts)
    assert read_table(again).column("id").to_pylist() == list(range(7))
    assert [x.version_id for x in list_versions(root, "demo", opts)] == ["v1"]


def test_unfinished_version_on_s3_is_not_listed(s3_bucket) -> None:
    root, opts = s3_bucket
    w = VersionWriter(root, "demo", "v1", SCHEMA, storage_options=opts, part_max_rows=2)
    w.write(pa.table({"id": list(range(5))}, schema=SCHEMA))  # parts written, no manifest
    assert list_versions(root, "demo", opts) == []


def test_two_writers_on_s3_one_publishes_and_verify_names_an_altered_part(s3_bucket) -> None:
    root, opts = s3_bucket
    first = VersionWriter(root, "demo", "v2", SCHEMA, storage_options=opts, part_max_rows=3)
    second = VersionWriter(root, "demo", "v2", SCHEMA, storage_options=opts, part_max_rows=3)
    for w in (first, second):
        w.write(pa.table({"id": list(range(7))}, schema=SCHEMA))
    with pytest.raises(VersionNotFoundError, match="not published"):
        open_version(second.url, opts)
    won = second.commit(config={}, inputs=[], code_version="c")
    lost = first.commit(config={}, inputs=[], code_version="c")
    assert second.published and not first.published and lost.url == won.url
    assert verify_report(won.url, opts)["ok"]
    fs = s3fs.S3FileSystem(**opts, skip_instance_cache=True)
    fs.pipe_file(won.part_urls[1].removeprefix("s3://"), b"not parquet")
    assert verify_report(won.url, opts)["problems"] == [
        f"part-00001.parquet: 11 bytes, the manifest records {won.manifest['parts'][1]['bytes']}"
    ]
