"""Ingestion to and from a real S3-compatible server (moto server mode, started by the tests on 127.0.0.1)."""

from __future__ import annotations

import csv
import subprocess
import time
from pathlib import Path

import numpy as np
import s3fs
import yaml

from corpus.config import IngestConfig, SourceConfig
from corpus.ingest import ingest_source
from infra.versions import list_versions, read_table
from tests.conftest import real_data
from tests.integration.cli_helpers import FACTOST, last_line, run_factost
from tests.s3_server import NetworkGate, make_bucket, start_moto


def test_tsf_ingested_from_s3_to_s3_equals_local_ingest(s3_bucket, tmp_path: Path) -> None:
    root, opts = s3_bucket
    local_file = real_data("monash", "ausgrid_weekly_sample.tsf")
    fs = s3fs.S3FileSystem(**opts)
    bucket = root.split("/")[2]
    fs.put(str(local_file), f"{bucket}/raw/ausgrid.tsf")

    cfg = IngestConfig()
    remote = ingest_source(SourceConfig(name="ausgrid", kind="tsf", paths=[f"s3://{bucket}/raw/ausgrid.tsf"]),
                           cfg, root, opts)
    local = ingest_source(SourceConfig(name="ausgrid", kind="tsf", paths=[str(local_file)]), cfg, str(tmp_path))
    assert remote.version.url.startswith("s3://")
    remote_table, local_table = read_table(remote.version), read_table(local.version)
    assert remote_table.num_rows == local_table.num_rows == 299
    assert remote_table.equals(local_table)
    assert [v.url for v in list_versions(root, "corpus/ausgrid", opts)] == [remote.version.url]
    again = ingest_source(SourceConfig(name="ausgrid", kind="tsf", paths=[f"s3://{bucket}/raw/ausgrid.tsf"]),
                          cfg, root, opts)
    assert again.reused and again.version.url == remote.version.url


def _long_csv(path: Path, n_series: int, length: int, offset: float) -> None:
    rng = np.random.default_rng(0)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "timestamp", "value"])
        for s in range(n_series):
            values = rng.normal(size=length) + offset
            for t in range(length):
                w.writerow([f"s{s}", f"2024-01-{1 + t // 24:02d} {t % 24:02d}:00:00", f"{values[t]:.5f}"])


def test_killing_the_server_mid_write_leaves_previous_version_and_no_partial_one(tmp_path: Path) -> None:
    server = start_moto(recording=tmp_path / "moto-journal")
    gate = NetworkGate(server.port)  # holds the writer after its first part, so the kill lands mid-write
    try:
        make_bucket(server, "crash")
        profile = tmp_path / "profile.yaml"
        profile.write_text(yaml.safe_dump({
            "storage": {"root": "s3://crash/root", "options": gate.endpoint_options(server)},
            "ingest": {"part_max_rows": 40, "batch_rows": 40},
        }))
        data = tmp_path / "in.csv"
        _long_csv(data, n_series=8, length=48, offset=0.0)
        first = run_factost("ingest", "long", str(data), "--name", "sensors", "--freq", "h", "--profile", str(profile))
        v1_url = last_line(first.stdout)
        v1_id = v1_url.rstrip("/").rsplit("/", 3)[-3]  # .../<version id>/<attempt>/data/

        _long_csv(data, n_series=3000, length=48, offset=1.0)  # changed input: a new version, 75 parts
        held = gate.hold_requests_after(r"PUT \S*/part-", occurrences=2)
        proc = subprocess.Popen(
            [FACTOST, "ingest", "long", str(data), "--name", "sensors", "--freq", "h", "--profile", str(profile)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert held.wait(timeout=180), "the second ingestion never started writing parts"
        fs = s3fs.S3FileSystem(**server.storage_options, skip_instance_cache=True)
        parts_seen: list[str] = []
        deadline = time.monotonic() + 60
        while not parts_seen and time.monotonic() < deadline:  # the first part's PUT was let through whole
            fs.invalidate_cache()
            parts_seen = [p for p in fs.find("crash/root/corpus/sensors") if "/part-" in p and v1_id not in p]
            time.sleep(0.05)
        assert parts_seen, "the first part of the second ingestion never landed"
        server.kill()  # mid-write: parts of the new version exist, its manifest does not
        gate.close()
        _, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 1, stderr
        assert len([line for line in stderr.strip().splitlines() if line.strip()]) == 1, stderr

        # A new server with the killed one's state: every request it had received is replayed.
        server = start_moto(port=server.port, recording=tmp_path / "moto-journal")
        server.replay_recording()
        visible = list_versions("s3://crash/root", "corpus/sensors", server.storage_options)
        assert [v.url for v in visible] == [v1_url]
        assert read_table(visible[0]).num_rows == 8
        fs = s3fs.S3FileSystem(**server.storage_options, skip_instance_cache=True)
        orphan_parts = [p for p in fs.find("crash/root/corpus/sensors") if "/part-" in p and v1_id not in p]
        assert orphan_parts, "the replayed state should hold the orphan parts of the interrupted version"
    finally:
        gate.close()
        server.kill()
