"""Dataset versions on the local filesystem: attempt folders, create-only manifest, card, verification."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from infra.versions import (
    CARD_NAME,
    LEASE_NAME,
    MANIFEST_NAME,
    VersionCorruptError,
    VersionNotFoundError,
    VersionWriter,
    find_version,
    iter_batches,
    list_versions,
    open_version,
    read_side_table,
    read_table,
    verify_report,
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


def _publish(root: Path, version_id: str = "v1", rows: int = 100, part_rows: int = 40):
    writer = VersionWriter(str(root), "demo", version_id, SCHEMA, part_max_rows=part_rows)
    writer.write(_table(rows))
    writer.write_side_table("quarantine", pa.table({"reason": ["too short"]}))
    writer.write_file("plot.png", b"\x89PNG not really")
    return writer.commit(config={"a": 1}, inputs=[{"path": "x", "bytes": 1, "sha256": "0"}], code_version="abc")


def test_parts_roll_over_and_manifest_records_hashes(tmp_path: Path) -> None:
    version = _publish(tmp_path)
    assert [p["rows"] for p in version.manifest["parts"]] == [40, 40, 20]
    data = Path(version.url)
    assert version.url.endswith("/data/") and data.parent.parent == tmp_path / "demo" / "v1"
    assert sorted(os.listdir(data)) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    for part in version.manifest["parts"]:
        blob = (data / part["file"]).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == part["sha256"]
        assert len(blob) == part["bytes"]
    assert version.num_rows == 100
    assert read_table(version).column("id").to_pylist() == list(range(100))
    assert sum(b.num_rows for b in iter_batches(version, columns=["id"], batch_size=7)) == 100
    assert read_side_table(version, "quarantine").column("reason").to_pylist() == ["too short"]
    assert json.loads((tmp_path / "demo" / "v1" / MANIFEST_NAME).read_text())["config"] == {"a": 1}
    assert not (data.parent / LEASE_NAME).exists()  # a published attempt needs no lease
    assert open_version(str(tmp_path / "demo" / "v1")).url == version.url == open_version(version.url).url


def test_card_describes_the_version_and_how_to_load_it(tmp_path: Path) -> None:
    version = _publish(tmp_path)
    card = Path(version.card_url).read_text()
    assert card.startswith("# demo version v1\n")
    assert "100 rows in 3 Parquet part(s)" in card and "| `values` | `large_list<item: float>` |" in card
    for tool in ("pl.scan_parquet", "ds.dataset", "pd.read_parquet", "ray.data.read_parquet", "read_parquet('",
                 "load_dataset(\"parquet\"", "open_version("):
        assert tool in card
    assert f"pl.scan_parquet({version.url!r})" in card and "sha256 `0`" in card
    assert version.manifest["files"][CARD_NAME]["sha256"] == hashlib.sha256(card.encode()).hexdigest()


def test_unfinished_attempt_is_invisible_and_not_published(tmp_path: Path) -> None:
    _publish(tmp_path, "v1", rows=5)
    crashed = VersionWriter(str(tmp_path), "demo", "v2", SCHEMA, part_max_rows=2)
    crashed.write(_table(5))  # parts on disk, no manifest: as if the process died here
    assert (Path(crashed.url) / "part-00000.parquet").exists()

    assert [v.version_id for v in list_versions(str(tmp_path), "demo")] == ["v1"]
    assert find_version(str(tmp_path), "demo", "v2") is None
    for url in (crashed.url, str(tmp_path / "demo" / "v2")):
        with pytest.raises(VersionNotFoundError, match="not published"):
            open_version(url)
    crashed.abort()


def test_live_writers_attempt_survives_a_second_writer_and_one_publishes(tmp_path: Path) -> None:
    first = VersionWriter(str(tmp_path), "demo", "v1", SCHEMA, part_max_rows=2)
    first.write(_table(5, offset=100))
    second = VersionWriter(str(tmp_path), "demo", "v1", SCHEMA, part_max_rows=2)  # must not clear `first`
    second.write(_table(5, offset=100))
    assert (Path(first.url) / "part-00001.parquet").exists()
    won = first.commit(config={}, inputs=[], code_version="c")
    lost = second.commit(config={}, inputs=[], code_version="c")
    assert first.published and not second.published
    assert lost.url == won.url and lost.manifest == won.manifest
    assert not Path(second.url).parent.exists()  # the losing attempt is gone, the winner intact
    assert verify_report(won.url)["ok"]
    assert read_table(open_version(won.url)).column("id").to_pylist() == list(range(100, 105))


def test_crashed_writers_attempt_is_cleared_once_it_is_dead(tmp_path: Path) -> None:
    script = (
        "import sys, pyarrow as pa; sys.path.insert(0, sys.argv[2])\n"
        "from infra.versions import VersionWriter\n"
        "w = VersionWriter(sys.argv[1], 'demo', 'v1', pa.schema([('id', pa.int64())]), part_max_rows=1)\n"
        "w.write(pa.table({'id': [1, 2]}))\nprint(w.url)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path), str(Path(__file__).parents[2])],
                         capture_output=True, text=True, check=True)
    orphan = Path(out.stdout.strip()).parent  # its process exited without commit or abort: a crash
    assert (orphan / LEASE_NAME).exists() and (orphan / "data" / "part-00001.parquet").exists()
    retry = VersionWriter(str(tmp_path), "demo", "v1", pa.schema([("id", pa.int64())]))
    assert not orphan.exists()
    retry.write(pa.table({"id": [7]}))
    assert read_table(retry.commit(config={}, inputs=[], code_version="c")).column("id").to_pylist() == [7]


def test_abort_removes_only_its_own_attempt(tmp_path: Path) -> None:
    other = VersionWriter(str(tmp_path), "demo", "v9", SCHEMA, part_max_rows=1)
    other.write(_table(2))
    w = VersionWriter(str(tmp_path), "demo", "v9", SCHEMA, part_max_rows=1)
    w.write(_table(3))
    w.abort()
    assert not Path(w.url).parent.exists() and (Path(other.url) / "part-00001.parquet").exists()
    assert list_versions(str(tmp_path), "demo") == []
    other.abort()


def test_empty_version_reads_as_empty_table(tmp_path: Path) -> None:
    w = VersionWriter(str(tmp_path), "demo", "empty", SCHEMA)
    v = w.commit(config={}, inputs=[], code_version="c")
    assert v.num_rows == 0 and v.manifest["parts"] == []
    assert read_table(v).num_rows == 0


def test_verify_names_every_altered_missing_or_extra_file(tmp_path: Path) -> None:
    version = _publish(tmp_path)
    data = Path(version.url)
    assert verify_report(version.url) == {"url": version.url, "dataset": "demo", "version_id": "v1",
                                          "files_checked": 6, "ok": True, "problems": []}
    blob = bytearray((data / "part-00001.parquet").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (data / "part-00001.parquet").write_bytes(bytes(blob))  # same size, other bytes
    (data / "part-00002.parquet").write_bytes(b"short")
    (data.parent / "quarantine.parquet").unlink()
    (data / "stray.parquet").write_bytes(b"x")
    problems = verify_report(version.url)["problems"]
    assert problems[0].startswith("part-00001.parquet: sha256 ") and "differs from the manifest's" in problems[0]
    assert problems[1] == f"part-00002.parquet: 5 bytes, the manifest records {version.manifest['parts'][2]['bytes']}"
    assert problems[2:] == ["quarantine.parquet: missing",
                            "stray.parquet: not in the manifest, yet readers of the URL would read it"]
    with pytest.raises(VersionCorruptError, match="4 problem.*part-00001.parquet"):
        open_version(version.url, verify=True)
