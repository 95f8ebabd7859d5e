"""Pretraining throughput: the full Ray Train + DeepSpeed path against a bare single-process PyTorch loop.

Both train the same backbone on the same windows (noisy sines cut by the same ``crop_windows``) with the same
global batch and the same step code, at equal core count: the bare loop gets all cores as torch threads, the
distributed run one worker per core with one thread each. Printed side by side: steady-state tokens/s of both
(first ``--skip`` steps excluded: they hold compilation and pipeline start-up), the distributed path's overhead
(target <= 15%), its start-up cost against the bare loop's, and the Ray Data pipeline's own samples/s against
the rate the model consumes them.

``--gpu``: CUDA, NCCL, bf16 autocast, ZeRO-2, one worker per GPU, sizes ``--sizes`` (tiny and base), reporting
tokens/s and model FLOPs utilisation (MFU) for both paths. It refuses to run without CUDA.

    .venv/bin/python benchmarks/bench_pretrain.py                 # CPU, minuscule, 2 workers
    .venv/bin/python benchmarks/bench_pretrain.py --gpu --sizes tiny,base --steps 60
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Must precede the OpenMP runtime's start (torch import): on a shared machine, spinning OpenMP threads make a
# 2-thread torch 3-9x slower than 1 thread (measured here); passive waiting removes that artefact.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.config import PretrainConfig  # noqa: E402
from training.data import (  # noqa: E402
    WindowSpec,
    build_dataset,
    corpus_rows,
    crop_windows,
    open_corpus,
    write_sine_corpus,
)
from training.loop import StepResult, train_local, windows_to_batches  # noqa: E402
from training.metrics import read_metrics, step_records  # noqa: E402
from training.model import FactoSTBackbone  # noqa: E402
from training.trainer import RunPaths, pretrain  # noqa: E402

# Dense bf16 peak of known accelerators (TFLOP/s), for MFU; pass --peak-tflops for others.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def model_flops_per_token(cfg: PretrainConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 N for the weights (forward + backward) plus 12 L d T for attention scores."""
    bb = cfg.backbone_config()
    return 6.0 * bb.expected_num_parameters() + 12.0 * bb.num_layers * bb.d_model * seq_len


def steady_rate(records: list[dict[str, Any]], skip: int) -> dict[str, float]:
    """Tokens/s and samples/s over the steps after the first ``skip`` (sum of work / sum of step time)."""
    steady = records[skip:]
    if not steady:
        raise SystemExit(f"only {len(records)} steps: raise --steps above --skip={skip}")
    secs = sum(r["step_time_s"] for r in steady)
    tokens = sum(r["tokens_per_s"] * r["step_time_s"] for r in steady)
    samples = sum(r["samples_per_s"] * r["step_time_s"] for r in steady)
    wait = sum(r.get("data_wait_s", 0.0) for r in steady)
    return {"tokens_per_s": tokens / secs, "samples_per_s": samples / secs, "data_wait_share": wait / secs,
            "seconds": secs}


def make_windows(corpus_url: str, cfg: PretrainConfig) -> dict[str, np.ndarray]:
    """The windows of the first epochs of the corpus, built in-process as the Ray Data map builds them."""
    from infra.versions import read_table

    version = open_corpus(corpus_url)
    table = read_table(version, ["sample_id", "values"])
    rows = corpus_rows(table)
    spec = WindowSpec.from_config(cfg)
    need, epochs, epoch = cfg.steps * cfg.batch_size, [], 0
    while sum(len(e["sample_id"]) for e in epochs) < need:
        epochs.append(crop_windows(rows, epoch, spec))
        epoch += 1
    return {k: np.concatenate([e[k] for e in epochs]) for k in epochs[0]}


def bare_run(cfg: PretrainConfig, windows: dict[str, np.ndarray], threads: int, device: str) -> tuple[
    list[dict[str, Any]], float]:
    """Single-process PyTorch (TorchBackend, same step function); returns step records and wall seconds."""
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    model = FactoSTBackbone(cfg.backbone_config())
    results: list[StepResult] = train_local(
        model, cfg, windows_to_batches(windows, cfg.batch_size), device=torch.device(device)
    )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return [r.record() for r in results], time.perf_counter() - t0


def distributed_run(corpus_url: str, cfg: PretrainConfig, out: str, name: str) -> tuple[list[dict[str, Any]], float]:
    t0 = time.perf_counter()
    pretrain(corpus_url, cfg, out, run_name=name, progress=False)
    wall = time.perf_counter() - t0
    return step_records(read_metrics(RunPaths.make(out, name).metrics_url)), wall


def loader_rate(corpus_url: str, cfg: PretrainConfig, epochs: int = 2) -> float:
    """Windows/s the Ray Data pipeline alone delivers to one consumer (``epochs`` epochs, after the first batch)."""
    from infra.ray_runtime import ensure_ray, shutdown_ray

    handle = ensure_ray(None, log_to_driver=False)
    try:
        ds = build_dataset(open_corpus(corpus_url), cfg, 0, epochs)
        t0, n = None, 0
        for batch in ds.iter_torch_batches(batch_size=cfg.per_worker_batch, prefetch_batches=cfg.data.prefetch_batches):
            if t0 is None:
                t0 = time.perf_counter()
                continue
            n += int(batch["context"].shape[0])
        return n / (time.perf_counter() - t0) if t0 else 0.0
    finally:
        shutdown_ray(handle)


def peak_tflops(arg: float | None) -> float:
    if arg:
        return arg
    name = torch.cuda.get_device_name(0)
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    raise SystemExit(f"unknown GPU {name!r}: pass --peak-tflops for MFU")


def cpu_pair(args: argparse.Namespace, tmp: Path, corpus: str, workers: int, cores: int) -> dict[str, Any]:
    """One comparison at equal cores: bare loop with ``cores`` threads vs ``workers`` Ray workers."""
    cfg = PretrainConfig(
        size=args.size, steps=args.steps, batch_size=args.batch_size, context_length=args.context,
        max_horizon=args.horizon, num_workers=workers, cpus_per_worker=max(1, cores // workers),
        zero_stage=args.zero_stage, warmup_steps=min(5, args.steps // 4), checkpoint_every=args.steps,
        log_every=10, dropout=0.0, data={"windows_per_sample": 4},
    )
    windows = make_windows(corpus, cfg)
    # The bare loop runs before and after the distributed run and its better rate counts: background load on a
    # shared machine then biases the comparison against the distributed path, never in its favour.
    bare, bare_wall = bare_run(cfg, windows, threads=cores, device="cpu")
    dist, dist_wall = distributed_run(corpus, cfg, str(tmp / f"out-{workers}-{cores}"), "bench")
    bare2, bare_wall2 = bare_run(cfg, windows, threads=cores, device="cpu")
    b = max(steady_rate(bare, args.skip), steady_rate(bare2, args.skip), key=lambda r: r["tokens_per_s"])
    bare_wall = min(bare_wall, bare_wall2)
    d = steady_rate(dist, args.skip)
    row = {
        "cores": cores, "workers": workers, "bare_tokens_per_s": b["tokens_per_s"],
        "ray_ds_tokens_per_s": d["tokens_per_s"], "overhead": 1 - d["tokens_per_s"] / b["tokens_per_s"],
        "wall_ratio": dist_wall / bare_wall, "model_samples_per_s": d["samples_per_s"],
        "data_wait_share": d["data_wait_share"],
    }
    print(f"\n{cores} core(s): bare PyTorch 1 process x {cores} thread(s) vs Ray Train + DeepSpeed ZeRO-"
          f"{args.zero_stage}, {workers} worker(s) x {cores // workers} thread(s)")
    print(f"  bare PyTorch            : {b['tokens_per_s']:10.0f} tokens/s")
    print(f"  Ray Train + DeepSpeed   : {d['tokens_per_s']:10.0f} tokens/s")
    print(f"  overhead                : {100 * row['overhead']:9.1f} %  (target <= 15 %)")
    print(f"  whole run incl. start-up: {row['wall_ratio']:9.1f} x the bare loop's wall time")
    print(f"  data wait               : {100 * d['data_wait_share']:9.1f} % of step time")
    return row


def run_cpu(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    pairs = [(1, 1)] + ([(args.workers or cores, cores)] if cores > 1 else [])
    print(f"CPU ({cores} cores), {args.size}, global batch {args.batch_size}, context {args.context}, "
          f"{args.steps} steps (first {args.skip} excluded from rates)")
    corpus = write_sine_corpus(str(tmp / "store"), n_series=args.series, length=args.context + 512, seed=0).url
    rows = [cpu_pair(args, tmp, corpus, w, c) for w, c in pairs]
    probe = PretrainConfig(size=args.size, steps=args.steps, batch_size=args.batch_size, context_length=args.context,
                           max_horizon=args.horizon, num_workers=pairs[-1][0], warmup_steps=0,
                           data={"windows_per_sample": 4})
    loader = loader_rate(corpus, probe)
    consumed = rows[-1]["model_samples_per_s"]
    print(f"\nRay Data loader alone: {loader:.1f} samples/s vs the model's consumption {consumed:.1f} samples/s "
          f"-> loader/model = {loader / consumed:.1f}x")
    return {"device": f"cpu x{cores}", "size": args.size, "batch": args.batch_size, "context": args.context,
            "steps": args.steps, "skip": args.skip, "pairs": rows, "loader_samples_per_s": loader,
            "loader_over_model": loader / consumed}


def run_gpu(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    if not torch.cuda.is_available():
        raise SystemExit(
            "--gpu needs CUDA, and torch.cuda.is_available() is False here (CPU-only torch build or no GPU). "
            "Run it on a GPU machine with a CUDA torch; no GPU run of this benchmark has happened yet."
        )
    n_gpu = torch.cuda.device_count()
    peak = peak_tflops(args.peak_tflops) * 1e12
    results = []
    for size in args.sizes.split(","):
        cfg = PretrainConfig(
            size=size, steps=args.steps, batch_size=args.gpu_batch_size, context_length=args.gpu_context,
            num_workers=n_gpu, use_gpu=True, precision="bf16", zero_stage=2, cpus_per_worker=2,
            warmup_steps=min(5, args.steps // 4), checkpoint_every=args.steps, log_every=10,
            data={"windows_per_sample": 4},
        )
        corpus = write_sine_corpus(str(tmp / "store"), n_series=args.series, length=args.gpu_context + 512).url
        windows = make_windows(corpus, cfg)
        bare, _ = bare_run(cfg, windows, threads=os.cpu_count() or 1, device="cuda")
        dist, _ = distributed_run(corpus, cfg, str(tmp / f"out-{size}"), f"bench-{size}")
        b, d = steady_rate(bare, args.skip), steady_rate(dist, args.skip)
        mean_future = float(np.mean([r["future_patches"] for r in dist]))
        flops_tok = model_flops_per_token(cfg, cfg.context_length // 16 + 1 + int(mean_future))
        row = {
            "device": f"{n_gpu} x {torch.cuda.get_device_name(0)}", "size": size, "batch": cfg.batch_size,
            "context": cfg.context_length, "bare_1gpu_tokens_per_s": b["tokens_per_s"],
            "ray_ds_tokens_per_s": d["tokens_per_s"],
            "mfu_bare_1gpu": b["tokens_per_s"] * flops_tok / peak,
            "mfu_ray_ds": d["tokens_per_s"] * flops_tok / (peak * n_gpu),
            "data_wait_share": d["data_wait_share"],
        }
        results.append(row)
        print(f"\nGPU {row['device']}, {size}, batch {cfg.batch_size}, context {cfg.context_length}, bf16, ZeRO-2")
        print(f"  bare PyTorch, 1 GPU            : {b['tokens_per_s']:12.0f} tokens/s  "
              f"MFU {100 * row['mfu_bare_1gpu']:.1f}%")
        print(f"  Ray Train + DeepSpeed, {n_gpu} GPU(s): {d['tokens_per_s']:12.0f} tokens/s  "
              f"MFU {100 * row['mfu_ray_ds']:.1f}%  (data wait {100 * d['data_wait_share']:.1f}%)")
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="minuscule", help="backbone size for the CPU run")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--skip", type=int, default=5, help="first steps left out of the steady-state rate")
    p.add_argument("--batch-size", type=int, default=32, help="global batch (CPU)")
    p.add_argument("--context", type=int, default=512, help="context points (CPU)")
    p.add_argument("--horizon", type=int, default=256)
    p.add_argument("--workers", type=int, default=None, help="Ray Train workers (default: one per core)")
    p.add_argument("--zero-stage", type=int, default=1)
    p.add_argument("--series", type=int, default=256, help="series in the synthetic corpus")
    p.add_argument("--loader-batches", type=int, default=40, help="batches timed for the loader-alone rate")
    p.add_argument("--gpu", action="store_true", help="the CUDA path (refuses without a GPU)")
    p.add_argument("--sizes", default="tiny,base", help="sizes for --gpu")
    p.add_argument("--gpu-batch-size", type=int, default=512)
    p.add_argument("--gpu-context", type=int, default=2048)
    p.add_argument("--peak-tflops", type=float, default=None, help="bf16 peak per GPU for MFU")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-pretrain-") as tmp:
        result = run_gpu(args, Path(tmp)) if args.gpu else run_cpu(args, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
