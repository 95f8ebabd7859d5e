"""Ingest as Ray work units: one unit per file, large files in chunks, identical bytes whatever the cut."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from corpus.config import IngestConfig, SourceConfig
from corpus.errors import MalformedInputError
from corpus.ingest import ingest_source, single_stream
from corpus.sources.registry import get_connector
from infra.versions import list_versions

# sha256 of the one part the engine wrote for ``write_tsf(path, 3000)`` with CFG before work units existed
# (one process, one stream): the Ray path must keep producing these bytes.
SINGLE_STREAM_PART_SHA256 = "47c05f64c8d89173795595d9ee1abfbcfd65d29488dd11194f5fe68e6ad01341"
CFG = IngestConfig(min_length=5, part_max_rows=100_000, batch_rows=300)


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> None:
    """One local Ray for the module (ingest would start one itself; this keeps it to one start)."""
    from infra.ray_runtime import ensure_ray

    ensure_ray(num_cpus=4)


def write_tsf(path: Path, n: int, seed: int = 0, bad_line: int | None = None) -> None:
    """A .tsf of ``n`` named series with NaN-only, too-short, overflowing, repeated-content and repeated-id rows."""
    rng = np.random.default_rng(seed)
    lines = ["# synthetic", "@relation demo", "@attribute series_name string", "@attribute start_timestamp date",
             "@frequency hourly", "@missing true", "@data"]
    previous: list[str] = []
    for i in range(n):
        values = [f"{x:.4f}" for x in rng.normal(size=int(rng.integers(2, 60)))]
        if i % 101 == 0:
            values = ["?"] * len(values)
        if i % 103 == 0 and len(values) > 1:
            values[1] = "1e39"
        if i % 50 == 49:
            values = previous
        name = "T7" if i % 211 == 210 else f"T{i}"
        lines.append(f"{name}:2020-01-01 00-00-00:" + ",".join(values))
        previous = values
        if i % 400 == 0:
            lines += ["", "# a comment between rows"]
    if bad_line is not None:
        lines[bad_line - 1] = "T_bad:2020-01-01 00-00-00:1,2,oops,4"
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")


def fingerprint(manifest: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    return [p["sha256"] for p in manifest["parts"]], {k: v["sha256"] for k, v in manifest["side_tables"].items()}


def test_a_source_of_several_files_is_one_unit_per_file(tmp_path: Path) -> None:
    paths = []
    for k in range(3):
        paths.append(tmp_path / f"part{k}.tsf")
        write_tsf(paths[-1], 40, seed=k)
    source = SourceConfig(name="multi", kind="tsf", paths=[str(p) for p in paths])
    connector = get_connector("tsf")
    units = connector.plan(source.paths, connector.parse_options({}), {}, CFG.chunk_bytes)
    assert [u.files for u in units] == [(str(p),) for p in paths]
    assert [u.prefix for u in units] == ["part0/", "part1/", "part2/"]

    result = ingest_source(source, CFG, str(tmp_path / "root"))
    stats = result.stats
    assert stats["units"] == 3 and sum(stats["ray_nodes"].values()) == 3
    assert all(len(node) > 8 for node in stats["ray_nodes"])  # Ray node ids, not placeholders
    assert result.summary()["ray_nodes"] == stats["ray_nodes"]
    assert not [p for p in (tmp_path / "root" / "_work").rglob("*") if p.is_file()]  # unit files removed


def test_a_large_tsf_in_chunks_writes_the_bytes_of_one_stream(tmp_path: Path) -> None:
    path = tmp_path / "big.tsf"
    write_tsf(path, 3000)
    source = SourceConfig(name="big", kind="tsf", paths=[str(path)])
    size = path.stat().st_size
    whole = ingest_source(source, CFG.model_copy(update={"chunk_bytes": size}), str(tmp_path / "whole"))
    chunked = ingest_source(source, CFG.model_copy(update={"chunk_bytes": size // 7}), str(tmp_path / "chunked"))
    assert whole.stats["units"] == 1 and chunked.stats["units"] >= 7
    assert sum(chunked.stats["ray_nodes"].values()) == chunked.stats["units"]
    assert chunked.version.version_id == whole.version.version_id  # chunk size is not part of the identity
    assert fingerprint(chunked.version.manifest) == fingerprint(whole.version.manifest)
    assert fingerprint(whole.version.manifest) == fingerprint(single_stream(source, CFG, str(tmp_path)).manifest)
    assert fingerprint(whole.version.manifest)[0] == [SINGLE_STREAM_PART_SHA256]
    stats = chunked.stats
    assert stats["quarantine_reasons"] == whole.stats["quarantine_reasons"]
    assert {"all values missing (NaN)", "value out of float32 range", "duplicate series id"} <= set(
        stats["quarantine_reasons"]
    )
    assert stats["duplicates"] > 0 and stats["series"] + stats["quarantined"] + stats["duplicates"] == 3000


def test_chunk_boundaries_respect_quoted_newlines_in_wiki_csv(tmp_path: Path) -> None:
    path = tmp_path / "pages.csv"
    rng = np.random.default_rng(1)
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["Page"] + [f"2016-01-{d:02d}" for d in range(1, 15)])
        for i in range(600):
            page = f'Odd "page", no {i}\nsecond line_en.wikipedia.org_all-access_spider' if i % 5 == 0 else f"P{i}"
            out.writerow([page] + ["" if (i + d) % 11 == 0 else str(v) for d, v in enumerate(rng.integers(0, 99, 14))])
    source = SourceConfig(name="pages", kind="wiki", paths=[str(path)])
    size = path.stat().st_size
    whole = ingest_source(source, CFG.model_copy(update={"chunk_bytes": size}), str(tmp_path / "whole"))
    chunked = ingest_source(source, CFG.model_copy(update={"chunk_bytes": 997}), str(tmp_path / "chunked"))
    assert chunked.stats["units"] > 20 and chunked.stats["series"] == whole.stats["series"] == 600
    assert fingerprint(chunked.version.manifest) == fingerprint(whole.version.manifest)


def test_a_malformed_line_in_one_chunk_fails_naming_file_line_and_chunk(tmp_path: Path) -> None:
    path = tmp_path / "broken.tsf"
    write_tsf(path, 2000, bad_line=1500)
    source = SourceConfig(name="broken", kind="tsf", paths=[str(path)])
    root = tmp_path / "root"
    good = tmp_path / "good.tsf"
    write_tsf(good, 50)
    previous = ingest_source(SourceConfig(name="broken", kind="tsf", paths=[str(good)]), CFG, str(root))
    with pytest.raises(MalformedInputError) as info:
        ingest_source(source, CFG.model_copy(update={"chunk_bytes": 20_000}), str(root))
    message = str(info.value)
    assert "broken.tsf" in message and "line 1500" in message and "'oops'" in message
    assert " of " in message and "chunk" in message
    assert [v.url for v in list_versions(str(root), "corpus/broken")] == [previous.version.url]
    assert not [p for p in (root / "_work").rglob("*") if p.is_file()]
