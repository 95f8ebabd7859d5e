"""What running stage work on Ray costs: the stage runtime against a plain process pool, side by side.

The same units run twice at equal cores, each after a warm-up that starts its worker processes:
- KernelSynth: ``compute_chunk`` of every chunk (sampling + writing the chunk file);
- BLAST scoring: ``_score_task`` of every row group of a KernelSynth version (the real pass-1 unit),
by ``concurrent.futures.ProcessPoolExecutor`` (spawn, BLAS pinned to one thread) and by
``infra.stage_runtime.run_units`` on an in-process local Ray with ``--cores`` logical CPUs. Reported: series
per CPU-second (series / (wall x cores)) of both and their ratio (Ray / pool; 1.0 is no overhead).

With ``--nodes 3`` the same KernelSynth run also goes through ``synthesize`` on a one-node and a three-node
local Ray cluster (``ray.cluster_utils.Cluster``), and the chunks each node computed are reported. On one
machine the nodes share the cores, so what matters there is the balance, not a speed-up.

    .venv/bin/python benchmarks/bench_stage_runtime.py                       # 4,000 x 1,024 series, 2 cores
    .venv/bin/python benchmarks/bench_stage_runtime.py --nodes 3 --doc       # + node balance, into the docs
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from doc_sections import write_doc_section

from corpus.blast.balance import _score_task, _score_tasks
from corpus.blast.config import BlastConfig
from corpus.kernelsynth import ChunkUnit, KernelSynthConfig, compute_chunk_unit, synthesize
from infra.stage_runtime import StageRun, run_units
from infra.versions import open_version

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "stage_runtime.md"


def _pool_init() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def on_pool(pool: ProcessPoolExecutor, fn: Callable[[Any], Any], units: Sequence[Any]) -> float:
    """Wall seconds of the units on a warm process pool (results consumed in order, like the stages do)."""
    t0 = time.perf_counter()
    for _ in pool.map(fn, units):
        pass
    return time.perf_counter() - t0


def on_ray(fn: Callable[[Any], Any], units: Sequence[Any], cores: int) -> tuple[float, StageRun[Any]]:
    tally: StageRun[Any] = StageRun("bench", len(units))
    t0 = time.perf_counter()
    for _ in run_units(fn, units, stage="bench", max_in_flight=2 * cores, progress=False, tally=tally):
        pass
    return time.perf_counter() - t0, tally


def chunk_units(cfg: KernelSynthConfig, work: str) -> list[ChunkUnit]:
    data = cfg.model_dump(mode="json")
    return [ChunkUnit(data, c, work, None) for c in range(-(-cfg.n_series // cfg.chunk_size))]


def warm(pool: ProcessPoolExecutor, cores: int) -> None:
    """Start every pool worker and import what the units import."""
    list(pool.map(_warm_unit, range(2 * cores)))


def _warm_unit(_x: Any = None) -> int:
    import corpus.blast.features  # noqa: F401
    import corpus.kernelsynth  # noqa: F401

    return os.getpid()


def compare(name: str, n_series: int, cores: int, pool_s: float, ray_s: float) -> dict[str, Any]:
    pool_rate, ray_rate = n_series / (pool_s * cores), n_series / (ray_s * cores)
    row = {"work": name, "series": n_series, "pool": pool_rate, "ray": ray_rate, "ratio": ray_rate / pool_rate}
    print(f"{name}: pool {pool_rate:.1f} vs Ray {ray_rate:.1f} series per CPU-second -> Ray/pool {row['ratio']:.3f}")
    return row


def node_balance(cfg: KernelSynthConfig, nodes: int, cores: int, root: str) -> dict[str, Any]:
    """``synthesize`` on a local cluster of ``nodes`` raylets sharing ``cores`` CPUs; chunks per node."""
    import ray
    from ray.cluster_utils import Cluster

    per_node = max(1, cores // nodes) if nodes > 1 else cores
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": per_node, "include_dashboard": False})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=per_node)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        t0 = time.perf_counter()
        version = synthesize(cfg, root, progress=False)
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
        cluster.shutdown()
    counts = open_version(version.url).manifest["stats"]["ray_nodes"]
    print(f"{nodes} node(s): chunks per node {sorted(counts.values(), reverse=True)}, wall {wall:.1f} s")
    return {"nodes": nodes, "chunks": sorted(counts.values(), reverse=True), "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=4000)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=100, help="series per KernelSynth chunk / BLAST row group")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each side; the best counts")
    parser.add_argument("--nodes", type=int, default=1, help="also compare synthesize on 1 and this many nodes")
    parser.add_argument("--doc", action="store_true", help=f"write the results into {DOC}")
    args = parser.parse_args()
    import ray

    from infra.ray_runtime import ensure_ray

    tmp = Path(tempfile.mkdtemp(prefix="bench-stage-"))
    cfg = KernelSynthConfig(n_series=args.series, length=args.length, seed=0, chunk_size=args.chunk,
                            part_rows=args.chunk)
    rows = []
    try:
        ensure_ray(num_cpus=args.cores)
        list(run_units(_warm_unit, list(range(2 * args.cores)), stage="warm", progress=False))
        with ProcessPoolExecutor(args.cores, mp_context=get_context("spawn"), initializer=_pool_init) as pool:
            warm(pool, args.cores)
            pool_s = ray_s = float("inf")
            for r in range(args.repeats):  # alternate, keep each side's best: the machine's noise hits both
                pool_s = min(pool_s, on_pool(pool, compute_chunk_unit, chunk_units(cfg, str(tmp / f"pool{r}"))))
                ray_s = min(ray_s, on_ray(compute_chunk_unit, chunk_units(cfg, str(tmp / f"ray{r}")), args.cores)[0])
            rows.append(compare("KernelSynth chunks", args.series, args.cores, pool_s, ray_s))
            version = synthesize(cfg, str(tmp / "corpus"), progress=False)
            blast = BlastConfig(min_length=256, window=args.length)
            tasks = _score_tasks([version], blast, {})
            pool_s = ray_s = float("inf")
            for _ in range(args.repeats):
                pool_s = min(pool_s, on_pool(pool, _score_task, tasks))
                ray_s = min(ray_s, on_ray(_score_task, tasks, args.cores)[0])
            rows.append(compare("BLAST scoring (row groups)", args.series, args.cores, pool_s, ray_s))
        ray.shutdown()
        balance = []
        if args.nodes > 1:
            small = cfg.model_copy(update={"n_series": max(args.series // 4, 40 * args.nodes), "chunk_size": 20})
            for n in (1, args.nodes):
                balance.append(node_balance(small, n, args.cores, str(tmp / f"nodes-{n}")))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.doc:
        write_doc(args, rows, balance)


def write_doc(args: argparse.Namespace, rows: list[dict[str, Any]], balance: list[dict[str, Any]]) -> None:
    command = "python benchmarks/bench_stage_runtime.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "doc"
    )
    text = f"Command: `{command}`\n\n"
    text += "| work | series | process pool (series/CPU-s) | Ray (series/CPU-s) | Ray / pool |\n"
    text += "|---|---|---|---|---|\n"
    text += "".join(
        f"| {r['work']} | {r['series']:,} | {r['pool']:.1f} | {r['ray']:.1f} | **{r['ratio']:.3f}** |\n" for r in rows
    )
    if balance:
        text += "\n| Ray nodes | chunks per node | wall (s, shared cores) |\n|---|---|---|\n"
        text += "".join(f"| {b['nodes']} | {b['chunks']} | {b['wall']:.1f} |\n" for b in balance)
    write_doc_section(DOC, "stage-runtime", text, title="# Stage runtime: Ray against a process pool\n")


if __name__ == "__main__":
    main()
