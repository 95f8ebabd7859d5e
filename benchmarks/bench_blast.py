"""BLAST throughput: our batched feature extraction against the reference-style slow path, side by side.

Feature extraction (series per CPU-second, ``time.process_time`` of this process, BLAS pinned to one thread):
- slow: the reference way, one series at a time with statsmodels ``STL``/``MSTL``/``adfuller``/``kpss``/
  ``het_arch``, an O(n^2) Mann-Kendall and the `hurst` loops. It is the very implementation the tests pin the
  fast path against (``tests/corpus/test_blast_features.py``, loaded by path), run on the first
  ``--slow-n`` series of the same synthetic mix;
- fast: ``corpus.blast.features`` (prepare + metrics + 61-bit vectors) in batches of ``--batch`` series.
The vectors of the slow subset are compared too (they must be identical).

Sampling (draws per second): the reference's loop (``np.random.choice`` of a cell, then of a member, per draw)
against ``corpus.blast.sampling`` (long-tail merge, cell index, vectorised draws), on random cells.

    .venv/bin/python benchmarks/bench_blast.py                 # 5,000 fast, 12 slow series
    .venv/bin/python benchmarks/bench_blast.py --n 100000      # the fast path at scale
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
from scipy.signal import lfilter
from threadpoolctl import threadpool_limits

from corpus.blast.features import compute_metrics, prepare_series
from corpus.blast.sampling import CellIndex, balanced_draws, longtail_merge
from corpus.blast.vectors import encode, pack, unpack

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's tests.real_data says where the optional real data is
from tests.real_data import real_data_root  # noqa: E402

KINDS = (
    "sine",
    "random_walk",
    "white_noise",
    "trend_noise",
    "ar1",
    "seasonal_trend",
    "heavy_tailed",
    "multi",
)


def load_reference() -> ModuleType:
    """The slow reference implementation that lives with the feature tests."""
    path = ROOT / "tests" / "corpus" / "test_blast_features.py"
    spec = importlib.util.spec_from_file_location("blast_slow_reference", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the slow reference from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_series(i: int, length: int, seed: int) -> np.ndarray:
    """Series ``i`` of a deterministic mix of the kinds BLAST tells apart."""
    rng = np.random.default_rng([seed, i])
    t = np.arange(length)
    kind = KINDS[i % len(KINDS)]
    period = float(rng.choice([7, 12, 24, 48, 96, 168]))
    noise = rng.standard_normal(length)
    if kind == "sine":
        return np.sin(2 * np.pi * t / period + rng.random() * 6) + 0.2 * noise
    if kind == "random_walk":
        return np.cumsum(noise)
    if kind == "white_noise":
        return noise
    if kind == "trend_noise":
        return rng.normal(0, 0.01) * t + noise
    if kind == "ar1":
        return lfilter([1.0], [1.0, -rng.uniform(0.3, 0.95)], noise)
    if kind == "seasonal_trend":
        return 0.005 * t + np.sin(2 * np.pi * t / period) + 0.3 * noise
    if kind == "heavy_tailed":
        return rng.standard_t(2, length)
    return np.sin(2 * np.pi * t / period) + 0.5 * np.sin(2 * np.pi * t / (period * 7)) + 0.2 * noise


def fast_vectors(n: int, length: int, seed: int, batch: int) -> tuple[np.ndarray, float]:
    """Packed vectors and CPU seconds of the fast path (series generated batch by batch, untimed)."""
    out = []
    cpu = 0.0
    for s in range(0, n, batch):
        series = [synthetic_series(i, length, seed) for i in range(s, min(n, s + batch))]
        t0 = time.process_time()
        windows = [prepare_series(x, 512, 2039)[0] for x in series]
        metrics, _ = compute_metrics(windows)
        out.append(pack(encode(metrics)))
        cpu += time.process_time() - t0
    return np.concatenate(out), cpu


def slow_vectors(ref: ModuleType, series: list[np.ndarray]) -> tuple[np.ndarray, float]:
    out = []
    t0 = time.process_time()
    for x in series:
        _, v = ref.reference_features(x)
        out.append(v)
    return pack(np.stack(out)), time.process_time() - t0


def bench_features(n: int, slow_n: int, length: int, batch: int, seed: int) -> None:
    fast_vectors(min(n, 64), length, seed + 1, batch)  # warm imports and the first STL weights, untimed
    fast, fast_cpu = fast_vectors(n, length, seed, batch)
    ref = load_reference()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slow, slow_cpu = slow_vectors(ref, [synthetic_series(i, length, seed) for i in range(slow_n)])
    agree = int((slow == fast[:slow_n]).sum())
    fast_rate, slow_rate = n / fast_cpu, slow_n / slow_cpu
    distinct = len(np.unique(fast))
    print(f"features, length {length}, BLAS 1 thread, CPU seconds of this process")
    print(
        f"  slow reference path : {slow_n:7d} series in {slow_cpu:8.2f} CPU-s = {slow_rate:8.2f} series/CPU-s"
    )
    print(f"  fast batched path   : {n:7d} series in {fast_cpu:8.2f} CPU-s = {fast_rate:8.2f} series/CPU-s")
    print(
        f"  speed-up fast/slow  : {fast_rate / slow_rate:8.1f}x   (vectors identical on {agree}/{slow_n} "
        f"of the slow subset; {distinct} distinct vectors among {n})"
    )
    ones = unpack(fast).sum(axis=1)
    assert (ones == 9).all(), "every vector must have nine ones"


def source_series(source: str, n: int, length: int, data_dir: Path) -> list[np.ndarray]:
    """Up to ``n`` series of one source: the synthetic mix, KernelSynth output, or a real Monash file."""
    if source == "mix":
        return [synthetic_series(i, length, 0) for i in range(n)]
    if source == "kernelsynth":
        from corpus.kernelsynth import KernelSynthConfig, generate_range

        table, _ = generate_range(KernelSynthConfig(n_series=n, length=length, seed=0), 0, n)
        return [np.asarray(v, dtype=np.float32) for v in table["target"].to_pylist()]
    from corpus.sources.registry import get_connector

    connector = get_connector("tsf")
    path = data_dir / "monash" / source
    series = connector.read([str(path)], connector.parse_options({}), {})
    return [np.asarray(s.target, dtype=np.float32) for _, s in zip(range(n), series, strict=False)]


def bench_by_source(n: int, length: int, data_dir: Path) -> None:
    """Scoring rate per source and batch size: where KernelSynth's lower rate comes from."""
    sources = ["mix", "kernelsynth", "m4_hourly_dataset.tsf", "ausgrid_weekly_sample.tsf"]
    print(f"scoring rate by source (series/CPU-s of prepare + metrics; {n} series each, BLAS 1 thread)")
    for source in sources:
        if source.endswith(".tsf") and not (data_dir / "monash" / source).exists():
            print(f"  {source}: skipped ({data_dir / 'monash'} is absent)")
            continue
        series = source_series(source, n, length, data_dir)
        cells = []
        for batch in (64, 256, 1024):
            t0 = time.process_time()
            scored = 0
            for s in range(0, len(series), batch):
                windows = [w for w in (prepare_series(x, 512, 2039)[0] for x in series[s : s + batch]) if w is not None]
                if windows:
                    compute_metrics(windows)
                scored += len(windows)
            cpu = time.process_time() - t0
            cells.append(f"batch {batch}: {scored / cpu if cpu else 0:7.1f}")
        lengths = [len(x) for x in series]
        span = f"lengths {min(lengths)}-{max(lengths)}"
        print(f"  {source:27s} scored {scored}/{len(series)} ({span}): " + ", ".join(cells))


def reference_draws(cells: dict[int, list[int]], n: int, seed: int) -> list[int]:
    """The reference's sampling loop: per draw, a uniform cell, then a uniform member."""
    rs = np.random.RandomState(seed)
    keys = list(cells)
    prob = np.full(len(keys), 1.0 / len(keys))
    out = []
    for _ in range(n):
        g = keys[rs.choice(len(keys), p=prob)]
        out.append(cells[g][rs.choice(len(cells[g]))])
    return out


def bench_sampling(n_series: int, n_draws: int, slow_draws: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # an imbalanced occupancy: a few crowded cells and a long tail
    crowded = rng.integers(0, 100 * 100, 20)
    cells = np.where(
        rng.random(n_series) < 0.8, rng.choice(crowded, n_series), rng.integers(0, 10_000, n_series)
    )
    t0 = time.process_time()
    tail = longtail_merge(cells, 100, 0.001)
    index = CellIndex.build(tail.cells)
    draws = balanced_draws(index, n_draws, np.random.default_rng(seed))
    fast_cpu = time.process_time() - t0
    members: dict[int, list[int]] = {}
    for i, c in enumerate(tail.cells.tolist()):
        members.setdefault(c, []).append(i)
    t0 = time.process_time()
    reference_draws(members, slow_draws, seed)
    slow_cpu = time.process_time() - t0
    fast_rate, slow_rate = n_draws / fast_cpu, slow_draws / slow_cpu
    print(f"sampling, {n_series} series over {len(index.cell_ids)} merged cells")
    print(
        f"  reference loop      : {slow_draws:9d} draws in {slow_cpu:7.2f} CPU-s "
        f"= {slow_rate:12.0f} draws/CPU-s"
    )
    print(
        f"  vectorised          : {n_draws:9d} draws in {fast_cpu:7.2f} CPU-s "
        f"= {fast_rate:12.0f} draws/CPU-s "
        f"(incl. long-tail merge and cell index)"
    )
    print(
        f"  speed-up            : {fast_rate / slow_rate:8.1f}x   "
        f"({len(np.unique(draws))} distinct series drawn)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="series for the fast path")
    ap.add_argument("--slow-n", type=int, default=12, help="series for the slow reference path")
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument(
        "--batch", type=int, default=256, help="series per fast batch (the stage's feature_batch_rows)"
    )
    ap.add_argument("--draws", type=int, default=2_000_000, help="balanced draws for the vectorised sampler")
    ap.add_argument("--slow-draws", type=int, default=50_000, help="draws for the reference sampling loop")
    ap.add_argument("--sampling-series", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-features", action="store_true")
    ap.add_argument("--by-source", type=int, default=0, help="also score this many series of each source")
    ap.add_argument("--data-dir", type=Path, default=real_data_root(),
                    help="folder of the real Monash files (default: $FACTOST_TEST_DATA)")
    args = ap.parse_args()
    with threadpool_limits(limits=1):
        if args.by_source:
            bench_by_source(args.by_source, args.length, args.data_dir)
        if not args.skip_features:
            bench_features(args.n, min(args.slow_n, args.n), args.length, args.batch, args.seed)
        bench_sampling(args.sampling_series, args.draws, args.slow_draws, args.seed)


if __name__ == "__main__":
    main()
