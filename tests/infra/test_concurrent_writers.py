"""Real processes publishing the same version at the same time, on a local disk and on S3 (moto's server).

Every round: exactly one process publishes, every other reports that same version, the published version
verifies (every part present with its recorded size and sha256) and reads back exactly, and no losing attempt
is left behind. A writer killed mid-write never harms the one that publishes, and its attempt is cleared once
it is dead. How often the writers really overlapped in time is measured and printed.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from infra.storage import filesystem, join
from infra.versions import LEASE_NAME, VersionWriter, clear_abandoned, open_version, read_table, verify_report
from tests.infra.version_writer_worker import SCHEMA, expected_ids

PROJECT_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def start_writer(root: str, version_id: str, start_delay: float, part_delay: float,
                 options: dict[str, Any] | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tests.infra.version_writer_worker", root, version_id, f"{start_delay:.3f}",
           f"{part_delay:.3f}", json.dumps(options or {})]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> dict[str, Any]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def overlapped(reports: list[dict[str, Any]]) -> bool:
    """True when at least two writers were inside their writer at the same moment."""
    spans = sorted((r["start"], r["end"]) for r in reports)
    return any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))


def attempts(root: str, version_id: str, options: dict[str, Any] | None) -> list[str]:
    fs, path = filesystem(join(root, "concurrent", version_id), options)
    fs.invalidate_cache(path)
    return sorted(os.path.basename(p.rstrip("/")) for p in fs.ls(path, detail=False) if not p.endswith(".json"))


def run_rounds(root: str, options: dict[str, Any] | None, writers: int, rounds: int, seed: int) -> int:
    """``rounds`` races of ``writers`` processes; returns in how many of them the writers overlapped."""
    rng = random.Random(seed)
    hits = 0
    for r in range(rounds):
        version_id = f"w{writers}-r{r}"
        procs = [start_writer(root, version_id, rng.uniform(0, 0.6), 0.05, options) for _ in range(writers)]
        reports = [finish(p) for p in procs]
        hits += overlapped(reports)
        assert sum(r["published"] for r in reports) == 1, reports
        assert len({r["url"] for r in reports}) == 1, reports
        url = reports[0]["url"]
        assert verify_report(url, options)["ok"], verify_report(url, options)["problems"]
        version = open_version(url, options, verify=True)
        assert read_table(version).column("id").to_pylist() == expected_ids()
        assert attempts(root, version_id, options) == [version.manifest["attempt"]]  # losers removed theirs
    return hits


def race(root: str, options: dict[str, Any] | None, label: str) -> None:
    for writers, rounds in ((2, 2), (4, 1)):
        hits = run_rounds(root, options, writers, rounds, seed=writers)
        print(f"{label}: {writers} writers overlapped in {hits} of {rounds} rounds")
        assert hits >= 1, "the writers never overlapped: the test did not test a race"


def killed_overlapping_writer(root: str, options: dict[str, Any] | None) -> None:
    """The second writer starts while the first runs and is killed as the first publishes (a crash)."""
    first = start_writer(root, "killed", 0.0, 0.15, options)
    second = start_writer(root, "killed", 0.4, 0.6, options)  # slower: still mid-write when the first publishes
    orphan = json.loads(second.stdout.readline())["attempt"]
    report = finish(first)
    second.kill()
    second.wait(timeout=30)
    assert report["published"]
    assert verify_report(report["url"], options)["ok"]
    assert read_table(open_version(report["url"], options)).column("id").to_pylist() == expected_ids()
    fs, version_path = filesystem(join(root, "concurrent", "killed"), options)
    fs.invalidate_cache(version_path)
    assert fs.exists(join(version_path, orphan, LEASE_NAME))  # the crash left its attempt behind
    live = VersionWriter(root, "concurrent", "killed", SCHEMA, options)  # a live writer beside the orphan
    published = open_version(report["url"], options).manifest["attempt"]
    assert attempts(root, "killed", options) == sorted([published, live.attempt])  # dead one cleared
    assert clear_abandoned(fs, version_path, set()) == []  # never the live writer, never the published attempt
    live.abort()
    assert attempts(root, "killed", options) == [published]


def test_racing_writers_on_a_local_disk(tmp_path: Path) -> None:
    start = time.monotonic()
    race(str(tmp_path), None, "local")
    killed_overlapping_writer(str(tmp_path), None)
    print(f"local races took {time.monotonic() - start:.0f} s")


def test_racing_writers_on_s3(s3_bucket) -> None:
    root, options = s3_bucket
    race(root, options, "s3")
    killed_overlapping_writer(root, options)
