"""Ingestion throughput (points/s) against a plain pyarrow read-and-write of the same data, same process.

The bound: ``pyarrow.csv.read_csv`` (or ``pq.read_table``) of the input plus ``pq.write_table`` of what was read:
the least any ingestion must do. Ours additionally reshapes to one row per series, validates, hashes every series,
deduplicates and writes a manifest. Run: ``.venv/bin/python benchmarks/bench_ingest.py [--points 20000000]``.

A last line measures what running the work units as Ray tasks costs: a source of several .tsf files ingested by
``ingest_source`` (one Ray task per file, unit files under the root, admission in the driver) against the same
source as one in-process stream (``single_stream``), same process, Ray already started, same output bytes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from corpus.config import IngestConfig, SourceConfig
from corpus.ingest import ingest_source, single_stream
from infra.ray_runtime import ensure_ray


def make_ltsf_csv(path: Path, rows: int, cols: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, cols)).astype(np.float32), columns=[f"n{i}" for i in range(cols)])
    frame.insert(0, "date", pd.date_range("2020-01-01", periods=rows, freq="h").strftime("%Y-%m-%d %H:%M:%S"))
    frame.to_csv(path, index=False, float_format="%.6g")


def make_long_parquet(path: Path, series: int, length: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.array([f"s{i}" for i in range(series)]), length)
    ts = np.tile(pd.date_range("2020-01-01", periods=length, freq="h").values, series)
    pq.write_table(pa.table({"id": ids, "timestamp": ts, "value": rng.normal(size=series * length)}), path)


def make_tsf_files(folder: Path, files: int, series: int, length: int, seed: int = 0) -> list[str]:
    """``files`` Monash .tsf files of ``series`` named series of ``length`` points each."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in range(files):
        rows = (f"T{i}:2020-01-01 00-00-00:" + ",".join(f"{v:.4f}" for v in rng.normal(size=length))
                for i in range(series))
        header = "@relation bench\n@attribute series_name string\n@attribute start_timestamp date\n"
        path = folder / f"file{f}.tsf"
        path.write_text(header + "@frequency hourly\n@data\n" + "\n".join(rows) + "\n")
        paths.append(str(path))
    return paths


def ray_overhead(work: Path, points: int, repeats: int) -> None:
    """Series per second of the Ray path against one in-process stream on a multi-file source."""
    files, length = 8, 500
    series = max(1, points // (files * length))
    source = SourceConfig(name="multi", kind="tsf", paths=make_tsf_files(work / "tsf", files, series, length))
    counter = iter(range(10**6))
    parts: dict[str, list[str]] = {}

    def ray_path() -> None:
        version = ingest_source(source, IngestConfig(), str(work / f"ray{next(counter)}")).version
        parts["ray"] = [p["sha256"] for p in version.manifest["parts"]]

    def one_stream() -> None:
        version = single_stream(source, IngestConfig(), str(work / f"single{next(counter)}"))
        parts["single"] = [p["sha256"] for p in version.manifest["parts"]]

    ray_path()  # warm: Ray's worker processes started and imports done, as in a long-running flow
    t_single, t_ray = timed(one_stream, repeats), timed(ray_path, repeats)
    assert parts["ray"] == parts["single"], "the Ray path must write the bytes of one stream"
    total = files * series
    print(f"{'ray vs one stream':<16} {total * length:>12,} {'series/s one: ':>15}{total / t_single:,.0f} "
          f"ray: {total / t_ray:,.0f}  ray/one time {t_ray / t_single:.2f} ({files} files, "
          f"{int(ray_cpus())} Ray CPUs)")


def ray_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 0))


def baseline_csv(src: Path, dst: Path) -> None:
    pq.write_table(pacsv.read_csv(src), dst, compression="zstd")


def baseline_parquet(src: Path, dst: Path) -> None:
    pq.write_table(pq.read_table(src), dst, compression="zstd")


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=5_000_000, help="points per dataset")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side; the best is kept")
    args = parser.parse_args()
    cols = 100
    rows = args.points // cols
    ensure_ray()  # started once, as in a flow's process: its start-up is not what is measured
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_ltsf_csv(work / "wide.csv", rows, cols)
        make_long_parquet(work / "long.parquet", series=cols * 10, length=rows // 10)
        cases = [
            ("ltsf wide csv", SourceConfig(name="wide", kind="ltsf", paths=[str(work / "wide.csv")]),
             lambda: baseline_csv(work / "wide.csv", work / "base.parquet")),
            ("long parquet", SourceConfig(name="long", kind="long", paths=[str(work / "long.parquet")], freq="h"),
             lambda: baseline_parquet(work / "long.parquet", work / "base.parquet")),
        ]
        print(f"{'case':<16} {'points':>12} {'pyarrow pts/s':>15} {'factost pts/s':>15} {'ratio':>7}")
        counter = iter(range(10**6))

        for label, source, baseline in cases:
            def ours(source: SourceConfig = source) -> None:
                # A fresh root each run: the benchmark measures real ingestion, not the idempotent no-op.
                ingest_source(source, IngestConfig(), str(work / f"root{next(counter)}"))

            t_base = timed(baseline, args.repeats)
            t_ours = timed(ours, args.repeats)
            points = rows * cols
            print(f"{label:<16} {points:>12,} {points / t_base:>15,.0f} {points / t_ours:>15,.0f} "
                  f"{t_base / t_ours:>7.2f}")
        ray_overhead(work, args.points, args.repeats)


if __name__ == "__main__":
    main()
