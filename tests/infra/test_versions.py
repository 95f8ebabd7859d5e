"""Dataset versions on the local filesystem: parts, manifest last, invisibility of unfinished writes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pytest

from infra.versions import (
    MANIFEST_NAME,
    VersionNotFoundError,
    VersionWriter,
    find_version,
    iter_batches,
    list_versions,
    open_version,
    read_side_table,
    read_table,
)

SCHEMA = pa.schema([("id", pa.int64()), ("values", pa.large_list(pa.float32()))])


def _table(n: int, offset: int = 0) -> pa.Table:
    return pa.table(
        {
            "id": list(range(offset, offset + n)),
            "values": [[float(i), float(i) / 2] for i in range(offset, offset + n)],
        },
        schema=SCHEMA,
    )


def test_parts_roll_over_and_manifest_records_hashes(tmp_path: Path) -> None:
    writer = VersionWriter(str(tmp_path), "demo", "v1", SCHEMA, part_max_rows=40)
    writer.write(_table(100))
    writer.write_side_table("quarantine", pa.table({"reason": ["too short"]}))
    version = writer.commit(config={"a": 1}, inputs=[{"path": "x", "sha256": "0"}], code_version="abc")

    assert [p["rows"] for p in version.manifest["parts"]] == [40, 40, 20]
    for part in version.manifest["parts"]:
        data = (tmp_path / "demo" / "v1" / part["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == part["sha256"]
        assert len(data) == part["bytes"]
    assert version.num_rows == 100
    assert read_table(version).column("id").to_pylist() == list(range(100))
    assert sum(b.num_rows for b in iter_batches(version, columns=["id"], batch_size=7)) == 100
    assert read_side_table(version, "quarantine").column("reason").to_pylist() == ["too short"]
    assert json.loads((tmp_path / "demo" / "v1" / MANIFEST_NAME).read_text())["config"] == {"a": 1}


def test_unfinished_version_is_invisible_and_cleared_by_next_writer(tmp_path: Path) -> None:
    done = VersionWriter(str(tmp_path), "demo", "v1", SCHEMA)
    done.write(_table(5))
    done.commit(config={}, inputs=[], code_version="c")

    crashed = VersionWriter(str(tmp_path), "demo", "v2", SCHEMA, part_max_rows=2)
    crashed.write(_table(5))  # parts on disk, no manifest: as if the process died here
    assert (tmp_path / "demo" / "v2" / "part-00000.parquet").exists()

    assert [v.version_id for v in list_versions(str(tmp_path), "demo")] == ["v1"]
    assert find_version(str(tmp_path), "demo", "v2") is None
    with pytest.raises(VersionNotFoundError, match="no _manifest.json"):
        open_version(str(tmp_path / "demo" / "v2"))

    retry = VersionWriter(str(tmp_path), "demo", "v2", SCHEMA)
    assert not (tmp_path / "demo" / "v2" / "part-00000.parquet").exists()
    retry.write(_table(3, offset=10))
    v2 = retry.commit(config={}, inputs=[], code_version="c")
    assert read_table(v2).column("id").to_pylist() == [10, 11, 12]
    assert [v.version_id for v in list_versions(str(tmp_path), "demo")] == ["v1", "v2"]


def test_published_version_is_never_overwritten(tmp_path: Path) -> None:
    w = VersionWriter(str(tmp_path), "demo", "v1", SCHEMA)
    w.commit(config={}, inputs=[], code_version="c")
    with pytest.raises(FileExistsError, match="already published"):
        VersionWriter(str(tmp_path), "demo", "v1", SCHEMA)


def test_abort_removes_partial_output(tmp_path: Path) -> None:
    w = VersionWriter(str(tmp_path), "demo", "v9", SCHEMA, part_max_rows=1)
    w.write(_table(3))
    w.abort()
    assert not (tmp_path / "demo" / "v9").exists()
    assert list_versions(str(tmp_path), "demo") == []


def test_empty_version_reads_as_empty_table(tmp_path: Path) -> None:
    w = VersionWriter(str(tmp_path), "demo", "empty", SCHEMA)
    v = w.commit(config={}, inputs=[], code_version="c")
    assert v.num_rows == 0 and v.manifest["parts"] == []
    assert read_table(v).num_rows == 0
