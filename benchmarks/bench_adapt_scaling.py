"""STA cost versus node count: adaptation steps and inference time and peak memory for N = 100, 400, 1600.

The claim (paper Table III, Sec. III-C): nodes are a batch dimension of the backbone and the adapter's only
cross-node term goes through M prototypes, so time and memory grow linearly in N: the ratio
time(1600) / time(100) should be near 16 (within 20%), and so should the memory ratio.

Each (N, phase) runs in a fresh subprocess, so peak memory is that workload's own: on CUDA
``torch.cuda.max_memory_allocated``; on the CPU the growth of the process's peak RSS over its RSS just before
the workload (model and inputs already built, warm-up included). Time is the median of ``--repeats`` runs
after a warm-up; on the CPU it is the process's CPU time (all threads), robust to other jobs on the machine.
The bare backbone (adapter modules off) runs beside the adapter as the baseline, so the adapter's own
overhead is printed too.

    .venv/bin/python benchmarks/bench_adapt_scaling.py                # N = 100, 400, 1600
    .venv/bin/python benchmarks/bench_adapt_scaling.py --nodes 50,200 --batch 2
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adaptation.config import AdaptConfig  # noqa: E402
from benchmarks.doc_sections import write_doc_section  # noqa: E402

DOC = ROOT / "docs" / "benchmarks" / "adapt.md"
PHASES = ("adapt", "infer", "infer_bare")
VOCAB = {"minute_of_hour": 60, "time_of_day": 288, "day_of_week": 7}


def _rss_bytes() -> int:
    """Current resident set size (Linux /proc), for the pre-workload baseline."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")


def saved_activation_bytes(model: Any, loss_fn: Callable[[], Any]) -> int:
    """Bytes autograd keeps for the backward pass of ``loss_fn()`` (distinct storages, parameters excluded).

    This is the node-dependent part of training memory, counted exactly; peak RSS adds the allocator's
    caching and fixed buffers on top, which makes its ratios look sub-linear at small N.
    """
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn()
    loss.backward()
    return sum(storages.values())


def worker(
    nodes: int,
    phase: str,
    batch: int,
    length: int,
    horizon: int,
    steps: int,
    repeats: int,
    threads: int,
) -> dict:
    """Run one (N, phase) workload in this process; returns its time and peak memory."""
    import torch

    from adaptation.adapter import STAModel
    from training.model import BackboneConfig, FactoSTBackbone

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        # One intra-op thread: torch parallelises large ops but not small ones, so with more threads the CPU
        # time of a large N would include a second thread's work that a small N never gets.
        torch.set_num_threads(threads)
    cfg = AdaptConfig() if phase != "infer_bare" else AdaptConfig().without_modules()
    model = STAModel(FactoSTBackbone(BackboneConfig.from_size("minuscule")), cfg, nodes, VOCAB).to(device)
    x = torch.randn(batch, length, nodes, device=device)
    steps_idx = (
        torch.arange(length + horizon, device=device)[None, :]
        + 1000 * torch.arange(batch, device=device)[:, None]
    )
    calendar = torch.stack([steps_idx % 12 * 5, steps_idx % 288, (steps_idx // 288) % 7], dim=-1)
    y = torch.randn(batch, horizon, nodes, device=device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def adapt_steps() -> None:
        model.train()
        for _ in range(steps):
            out = model(x, horizon, calendar)
            loss = (out.median - y).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def infer() -> None:
        model.eval()
        with torch.inference_mode():
            model(x, horizon, calendar)

    work = adapt_steps if phase == "adapt" else infer
    # Memory baseline before the first run (model and inputs built); the warm-up run counts toward the peak
    # because the CPU allocator may keep what it took then, so later runs would show no growth.
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    work()  # warm-up (allocator, lazy init, AdamW state)
    # CPU: process CPU time (all threads), which other jobs on a shared machine do not inflate the way they
    # inflate wall time; CUDA: wall time after synchronising.
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    times = []
    for _ in range(repeats):
        tic = clock()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(clock() - tic)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    activations = 0
    if phase == "adapt":
        model.train()
        activations = saved_activation_bytes(model, lambda: (model(x, horizon, calendar).median - y).abs().mean())
    return {
        "nodes": nodes,
        "phase": phase,
        "time_s": statistics.median(times),
        "peak_bytes": max(peak, 0),
        "activation_bytes": activations,
        "device": device.type,
        "series": batch * nodes,
    }


def run_in_subprocess(args: argparse.Namespace, nodes: int, phase: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--_worker",
        str(nodes),
        phase,
        "--batch",
        str(args.batch if phase == "adapt" else args.infer_batch),
        "--length",
        str(args.length),
        "--horizon",
        str(args.horizon),
        "--steps",
        str(args.steps),
        "--repeats",
        str(args.repeats),
        "--threads",
        str(args.threads),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"worker N={nodes} {phase} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", default="100,400,1600", help="comma list of node counts")
    parser.add_argument("--batch", type=int, default=4, help="windows per adaptation step (each has all N nodes)")
    parser.add_argument(
        "--infer-batch",
        type=int,
        default=AdaptConfig().eval_batch_size,
        help="windows per inference call (default: the harness's eval_batch_size)",
    )
    parser.add_argument("--length", type=int, default=12)
    parser.add_argument("--horizon", type=int, default=12)
    parser.add_argument("--steps", type=int, default=2, help="adaptation steps per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on the CPU")
    parser.add_argument("--doc", action="store_true", help="write the table into docs/benchmarks/adapt.md")
    parser.add_argument("--_worker", nargs=2, metavar=("N", "PHASE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        nodes, phase = int(args._worker[0]), args._worker[1]
        result = worker(
            nodes, phase, args.batch, args.length, args.horizon, args.steps, args.repeats, args.threads
        )
        print(json.dumps(result))
        return
    node_counts = [int(n) for n in args.nodes.split(",")]
    results: dict[tuple[int, str], dict] = {}
    for nodes in node_counts:
        for phase in PHASES:
            results[(nodes, phase)] = r = run_in_subprocess(args, nodes, phase)
            print(
                f"N={nodes:5d} {phase:10s} time {r['time_s'] * 1e3:9.1f} ms   "
                f"peak +{r['peak_bytes'] / 2**20:8.1f} MiB   ({r['series']} series, {r['device']})"
                + (f"   activations {r['activation_bytes'] / 2**20:.1f} MiB" if phase == "adapt" else ""),
                flush=True,
            )
    lo, hi = node_counts[0], node_counts[-1]
    ideal = hi / lo
    device = results[(lo, "adapt")]["device"]
    lines = [
        f"Ratios N={hi} vs N={lo} (ideal linear: {ideal:g}); {args.length}->{args.horizon}, {args.batch} "
        f"windows per adaptation step, {args.infer_batch} per inference call (the harness's evaluation "
        f"batch), backbone passes of at most {AdaptConfig().series_per_pass} series, minuscule backbone, "
        f"all STA modules on, {device} "
        f"({'wall time' if device == 'cuda' else f'process CPU time, {args.threads} thread(s)'}), median of "
        f"{args.repeats} runs; adapt = {args.steps} training steps.",
        "",
        "| phase | time ratio | time ratio / ideal | memory ratio | memory ratio / ideal |",
        "|---|---|---|---|---|",
    ]
    for phase in PHASES:
        a, b = results[(lo, phase)], results[(hi, phase)]
        t_ratio = b["time_s"] / a["time_s"]
        m_ratio = b["peak_bytes"] / a["peak_bytes"] if a["peak_bytes"] else float("nan")
        lines.append(
            f"| {phase} | {t_ratio:.1f} | {t_ratio / ideal:.2f} | {m_ratio:.1f} | {m_ratio / ideal:.2f} |"
        )
    a, b = results[(lo, "adapt")], results[(hi, "adapt")]
    act_ratio = b["activation_bytes"] / a["activation_bytes"]
    lines += [
        "",
        f"Training activation memory (bytes autograd saves for backward, exact): N={lo}: "
        f"{a['activation_bytes'] / 2**20:.1f} MiB, N={hi}: {b['activation_bytes'] / 2**20:.1f} MiB, ratio "
        f"{act_ratio:.2f} ({act_ratio / ideal:.2f} of ideal). Peak RSS above adds fixed costs (optimizer state, "
        f"allocator caches); inference runs the backbone in passes of bounded size, so its peak grows with the "
        f"output only.",
    ]
    if len(node_counts) >= 3:
        # Increments cancel the fixed per-call cost (Python, kernel launches, allocator, library buffers)
        # that makes plain ratios look sub-linear at small N.
        n0, n1, n2 = node_counts[0], node_counts[-2], node_counts[-1]
        inc_ideal = (n2 - n1) / (n1 - n0)
        lines += [
            "",
            f"Increments (x({n2}) - x({n1})) / (x({n1}) - x({n0})), ideal linear {inc_ideal:g}, quadratic "
            f"{(n2**2 - n1**2) / (n1**2 - n0**2):g}:",
            "",
            "| phase | time increment ratio | memory increment ratio |",
            "|---|---|---|",
        ]
        for phase in PHASES:
            r0, r1, r2 = (results[(n, phase)] for n in (n0, n1, n2))
            dt = (r2["time_s"] - r1["time_s"]) / (r1["time_s"] - r0["time_s"])
            dm = (r2["peak_bytes"] - r1["peak_bytes"]) / max(r1["peak_bytes"] - r0["peak_bytes"], 1)
            lines.append(f"| {phase} | {dt:.2f} | {dm:.2f} |")
    lines += [
        "",
        "Adapter overhead over the bare backbone (inference time at the same N): "
        + ", ".join(
            f"N={n}: {results[(n, 'infer')]['time_s'] / results[(n, 'infer_bare')]['time_s']:.2f}x"
            for n in node_counts
        ),
    ]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.doc:
        command = "benchmarks/bench_adapt_scaling.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_doc_section(DOC, "scaling", f"Command: `.venv/bin/python {command}`\n\n" + text)


if __name__ == "__main__":
    main()
