"""`factost verify`: every part against the manifest; each mismatch named, exit 1; "not published" otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from infra.versions import VersionWriter
from tests.integration.cli_helpers import last_line, run_factost


def _version(root: Path) -> str:
    writer = VersionWriter(str(root), "demo", "v1", pa.schema([("id", pa.int64())]), part_max_rows=4)
    writer.write(pa.table({"id": list(range(10))}))
    return writer.commit(config={}, inputs=[], code_version="c").url


def test_verify_passes_then_names_the_altered_part(tmp_path: Path) -> None:
    url = _version(tmp_path)
    ok = run_factost("verify", url)
    assert last_line(ok.stdout) == f"{url}: all 4 files match the manifest"
    part = Path(url) / "part-00001.parquet"
    blob = bytearray(part.read_bytes())
    blob[-20] ^= 0x01
    part.write_bytes(bytes(blob))
    bad = run_factost("verify", url, check=False)
    assert bad.returncode == 1
    assert "FAILED part-00001.parquet: sha256 " in bad.stderr and "part-00000" not in bad.stderr
    doc = json.loads(run_factost("verify", url, "--json", check=False).stdout)
    assert doc["ok"] is False and doc["files_checked"] == 4 and len(doc["problems"]) == 1


def test_verify_of_an_unpublished_folder_says_not_published(tmp_path: Path) -> None:
    writer = VersionWriter(str(tmp_path), "demo", "v2", pa.schema([("id", pa.int64())]))
    writer.write(pa.table({"id": [1]}))
    missing = run_factost("verify", writer.url, check=False)
    assert missing.returncode == 1 and "not published" in missing.stderr
    writer.abort()
