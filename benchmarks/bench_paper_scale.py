"""The corpus stages at the paper's scale on this machine, through the CLI as a user runs them.

- ``synth``: ``factost synth --n 1000000 --length 1024`` (the paper's KernelSynth size), end to end; wall time,
  series per CPU-second of the whole process tree, and the peak RSS of the driver and of the largest Ray
  worker (sampled every 0.5 s over the tree the command starts).
- ``blast``: ``factost balance`` over KernelSynth corpora of ``--small`` and ``--large`` series of length 1024
  (30,000 and 300,000 by default), the two runs side by side: their time ratio (linear scaling is the series
  ratio; the target is within 12x for 10x the series) and how much the driver's peak RSS grows per scored
  series (target: about 100 bytes), with the stage's own timing breakdown (score, project, spill, write).

- ``blast-projection``: BLAST's UMAP projection alone at ``--n`` vectors (synthetic 61-bit BLAST vectors, each
  group's bin drawn from a fixed skewed distribution), one fresh process per size: the fit sample the config
  gives, the distinct vectors, the seconds and peak RSS growth of the fit and of the transform of every
  distinct vector (what the stage's projection task holds).

    .venv/bin/python benchmarks/bench_paper_scale.py synth --doc
    .venv/bin/python benchmarks/bench_paper_scale.py blast --doc
    .venv/bin/python benchmarks/bench_paper_scale.py blast-projection --doc
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from doc_sections import write_doc_section

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks" / "paper_scale.md"
FACTOST = str(Path(sys.executable).parent / "factost")


@dataclass
class TreeSample:
    """Peak RSS per process role and CPU seconds of a command's whole process tree."""

    driver_peak: int = 0
    worker_peak: int = 0
    tree_peak: int = 0
    cpu_seconds: float = 0.0
    _cpu: dict[int, float] = field(default_factory=dict)

    def sample(self, root: psutil.Process) -> None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for p in procs:
            try:
                rss = p.memory_info().rss
                t = p.cpu_times()
                self._cpu[p.pid] = t.user + t.system
                title = " ".join(p.cmdline()[:1])
            except psutil.Error:
                continue
            total += rss
            if p.pid == root.pid:
                self.driver_peak = max(self.driver_peak, rss)
            elif title.startswith("ray::"):
                self.worker_peak = max(self.worker_peak, rss)
        self.tree_peak = max(self.tree_peak, total)
        self.cpu_seconds = sum(self._cpu.values())


def run_measured(args: list[str], env: dict[str, str] | None = None) -> tuple[str, float, TreeSample]:
    """Run a command, sampling its process tree; returns its last stdout line, wall seconds and the sample."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, text=True)
    sample = TreeSample()
    root = psutil.Process(proc.pid)
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            sample.sample(root)
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, _ = proc.communicate()
    stop.set()
    watcher.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {proc.returncode}")
    return out.strip().splitlines()[-1], time.perf_counter() - t0, sample


def manifest(url: str) -> dict[str, Any]:
    from infra.versions import open_version

    return open_version(url).manifest


def mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


def bench_synth(args: argparse.Namespace, tmp: Path) -> str:
    cmd = [FACTOST, "synth", "--n", str(args.n), "--length", "1024", "--out", str(tmp / "store")]
    url, wall, s = run_measured(cmd)
    stats = manifest(url)["stats"]
    rate = args.n / s.cpu_seconds if s.cpu_seconds else float("nan")
    line = (
        f"| `factost synth --n {args.n:,} --length 1024` | {wall / 60:.1f} min | {rate:.0f} | "
        f"{mb(s.driver_peak)} | {mb(s.worker_peak)} | {len(stats['ray_nodes'])} | {stats['chunks']:,} |\n"
    )
    print(line)
    return (
        "| command | wall | series per CPU-s (whole tree) | driver peak RSS | largest worker peak RSS | Ray nodes "
        "| chunks |\n|---|---|---|---|---|---|---|\n" + line
    )


def bench_blast(args: argparse.Namespace, tmp: Path) -> str:
    rows = []
    for n in (args.small, args.large):
        store = tmp / f"store-{n}"
        corpus, _, _ = run_measured([FACTOST, "synth", "--n", str(n), "--length", "1024", "--out", str(store)])
        url, wall, s = run_measured(
            [FACTOST, "balance", "--corpus", corpus, "--samples", str(args.samples), "--out", str(store)]
        )
        stats = manifest(url)["stats"]
        rows.append({"n": n, "wall": wall, "cpu": s.cpu_seconds, "driver": s.driver_peak, "worker": s.worker_peak,
                     "stats": stats})
        print(json.dumps({"n": n, "wall": wall, "cpu_s": s.cpu_seconds, "driver_peak": s.driver_peak,
                          "timings": stats["timings_s"]}), flush=True)
        shutil.rmtree(store, ignore_errors=True)
    small, large = rows
    ratio, cpu_ratio = large["wall"] / small["wall"], large["cpu"] / small["cpu"]
    growth = (large["driver"] - small["driver"]) / (large["stats"]["series_scored"] - small["stats"]["series_scored"])
    text = ("| series | wall | CPU-s (whole tree) | score | project | samples + shards | driver peak RSS "
            "| largest worker peak RSS |\n|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        t = r["stats"]["timings_s"]
        text += (
            f"| {r['n']:,} | {r['wall']:.0f} s | {r['cpu']:,.0f} | {t['score_s']:.0f} s | {t['project_s']:.0f} s | "
            f"{t['spill_s'] + t['write_s']:.0f} s | {mb(r['driver'])} | {mb(r['worker'])} |\n"
        )
    text += (
        f"\nFor {large['n'] // small['n']}x the series: wall time **{ratio:.2f}x**, CPU seconds **{cpu_ratio:.2f}x** "
        f"(target within 12x; the CPU ratio is the one other jobs on a shared machine do not move); driver peak RSS "
        f"growth **{growth:.0f} B per scored series** (target about 100 B).\n"
    )
    print(text)
    return text


def projection_child(n: int) -> None:
    """Fit and transform as the stage's projection task does, measuring each step (run in a fresh process)."""
    import resource
    import warnings

    import numpy as np

    from corpus.blast.config import BlastConfig
    from corpus.blast.projection import _fit_umap, sample_indices
    from corpus.blast.vectors import DIM, GROUPS, pack, unpack

    rng = np.random.default_rng(0)
    hot, off = np.zeros((n, DIM), np.uint8), 0
    for _, size in GROUPS:  # a skewed but fixed distribution per group, as real corpora are
        hot[np.arange(n), off + rng.choice(size, n, p=rng.dirichlet(np.full(size, 0.7)))] = 1
        off += size
    packed, cfg = pack(hot), BlastConfig()
    del hot
    import umap  # noqa: F401  (imported before the baseline: its import is not what grows)

    def peak() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    base, distinct = psutil.Process().memory_info().rss, np.unique(packed)
    idx = sample_indices(n, cfg, np.random.default_rng([cfg.seed, 1]))
    t0 = time.perf_counter()
    model = _fit_umap(unpack(packed[idx]).astype(np.float32), cfg)
    fit_s, fit_peak = time.perf_counter() - t0, peak() - base
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.transform(unpack(distinct).astype(np.float32))
    print(json.dumps({"n": n, "sample": len(idx), "distinct": len(distinct), "fit_s": fit_s, "fit_peak": fit_peak,
                      "transform_s": time.perf_counter() - t0, "peak": peak() - base}))


def bench_projection(args: argparse.Namespace, _tmp: Path) -> str:
    text = "| vectors | fit sample | distinct | fit | fit peak RSS growth | transform | peak RSS growth "
    text += "| per distinct |\n"
    text += "|---|---|---|---|---|---|---|---|\n"
    for n in args.n:
        out = subprocess.run([sys.executable, __file__, "projection-child", str(n)], cwd=ROOT, check=True,
                             stdout=subprocess.PIPE, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(r))
        text += (
            f"| {n:,} | {r['sample']:,} | {r['distinct']:,} | {r['fit_s']:.0f} s | {mb(r['fit_peak'])} | "
            f"{r['transform_s']:.0f} s | {mb(r['peak'])} | {r['peak'] / r['distinct'] / 1024:.1f} KB |\n"
        )
    print(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("synth")
    s.add_argument("--n", type=int, default=1_000_000)
    b = sub.add_parser("blast")
    b.add_argument("--small", type=int, default=30_000)
    b.add_argument("--large", type=int, default=300_000)
    b.add_argument("--samples", type=int, default=10_000)
    pr = sub.add_parser("blast-projection")
    pr.add_argument("--n", type=int, nargs="+", default=[20_000, 100_000, 300_000])
    for p in (s, b, pr):
        p.add_argument("--doc", action="store_true", help=f"write the results into {DOC}")
    child = sub.add_parser("projection-child")
    child.add_argument("size", type=int)
    args = parser.parse_args()
    if args.what == "projection-child":
        projection_child(args.size)
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-paper-scale-", dir=os.environ.get("BENCH_TMP")))
    try:
        bench = {"synth": bench_synth, "blast": bench_blast, "blast-projection": bench_projection}[args.what]
        text = bench(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.doc:
        opts = " ".join(
            f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if k not in ("doc", "what")
        )
        command = f"python benchmarks/bench_paper_scale.py {args.what} {opts}".strip()
        write_doc_section(DOC, f"paper-scale-{args.what}", f"Command: `{command}`\n\n{text}",
                          title="# The corpus stages at paper scale\n")


if __name__ == "__main__":
    main()
