"""Ingestion throughput (points/s) against a plain pyarrow read-and-write of the same data, same process.

The bound: ``pyarrow.csv.read_csv`` (or ``pq.read_table``) of the input plus ``pq.write_table`` of what was read:
the least any ingestion must do. Ours additionally reshapes to one row per series, validates, hashes every series,
deduplicates and writes a manifest. Run: ``.venv/bin/python benchmarks/bench_ingest.py [--points 20000000]``.
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
from corpus.ingest import ingest_source


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


if __name__ == "__main__":
    main()
