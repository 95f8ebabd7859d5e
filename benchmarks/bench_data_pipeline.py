"""Pretraining data pipeline: CPU cost of the window stream against the plan it replaced, side by side.

``training.data.build_dataset`` streams a run's epochs as one map over ``(epoch, part)`` units. The baseline is
the plan it replaced, rebuilt here: one ``read_parquet`` plus one ``map_batches(crop_windows)`` per epoch, joined
by ``union``, whose scheduler cost grows with the number of epochs a run needs (a small corpus trained for many
steps needs many). Each plan runs in a fresh process with its own local Ray and hands ``--windows`` windows to
one consumer through ``streaming_split`` as Ray Train does; the script reports the CPU seconds of each process
tree (Ray included) and their ratio, at each ``--epochs``.

    .venv/bin/python benchmarks/bench_data_pipeline.py --doc
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_paper_scale import run_measured  # noqa: E402
from doc_sections import doc_command, write_doc_section  # noqa: E402

DOC = ROOT / "docs" / "benchmarks" / "pretrain.md"
PLANS = ("units", "union")


def union_of_epochs(version: Any, cfg: Any, num_epochs: int) -> Any:
    """The previous plan: one read, then one ``map_batches`` per epoch over it, unioned in epoch order."""
    import ray.data
    from ray.data import DataContext

    from infra.ray_runtime import pyarrow_filesystem
    from training.data import REQUIRED_COLUMNS, WindowSpec, crop_windows

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.use_datasource_v2 = False
    fs, _ = pyarrow_filesystem(version.part_urls[0], version.storage_options)
    paths = [pyarrow_filesystem(u, version.storage_options)[1] for u in version.part_urls]
    rows = ray.data.read_parquet(paths, filesystem=fs, columns=list(REQUIRED_COLUMNS))
    spec = WindowSpec.from_config(cfg)
    epochs = [rows.map_batches(crop_windows, fn_kwargs={"epoch": e, "spec": spec}, batch_size=cfg.data.map_batch_rows,
                               batch_format="numpy", zero_copy_batch=True) for e in range(num_epochs)]
    return epochs[0] if len(epochs) == 1 else epochs[0].union(*epochs[1:])


def child(plan: str, corpus: str, epochs: int, windows: int) -> None:
    """Consume ``windows`` windows of ``plan`` through a one-way streaming split; print what was delivered."""
    import ray
    import ray.data

    from training.config import PretrainConfig
    from training.data import build_dataset, open_corpus

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, address="local")
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # as the trainer's ingest runs
    cfg = PretrainConfig(size="minuscule", steps=1, batch_size=64, context_length=512, max_horizon=64)
    version = open_corpus(corpus)
    ds = build_dataset(version, cfg, 0, epochs) if plan == "units" else union_of_epochs(version, cfg, epochs)
    (shard,) = ds.streaming_split(1, equal=True)
    seen: set[int] = set()
    n = 0
    for batch in shard.iter_batches(batch_size=64, batch_format="numpy", prefetch_batches=2):
        n += len(batch["epoch"])
        seen.update(batch["epoch"].tolist())
        if n >= windows:
            break
    print(json.dumps({"windows": n, "epochs_seen": len(seen)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=4000, help="corpus rows (noisy sines of 1,024 points)")
    parser.add_argument("--epochs", type=int, nargs="+", default=[4, 32])
    parser.add_argument("--windows-per-epoch", type=float, default=0.5,
                        help="windows consumed, as a share of the planned epochs' windows")
    parser.add_argument("--doc", action="store_true", help=f"write the table into {DOC.name}")
    parser.add_argument("--child", nargs=4, metavar=("PLAN", "CORPUS", "EPOCHS", "WINDOWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        plan, corpus, epochs, windows = args.child
        child(plan, corpus, int(epochs), int(windows))
        return
    from training.data import write_sine_corpus

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        corpus = write_sine_corpus(tmp, n_series=args.series, length=1024, part_max_rows=1000).url
        for epochs in args.epochs:
            windows = int(epochs * args.series * args.windows_per_epoch)
            cpu = {}
            for plan in PLANS:
                out, _, sample = run_measured([sys.executable, __file__, "--child", plan, corpus, str(epochs),
                                               str(windows)], env={"OMP_WAIT_POLICY": "PASSIVE"})
                cpu[plan] = sample.cpu_seconds
                print(plan, epochs, out, f"{sample.cpu_seconds:.1f} CPU-s", flush=True)
            rows.append((epochs, windows, cpu["units"], cpu["union"]))
    text = ("| epochs planned | windows consumed | CPU-s, one map over (epoch, part) | CPU-s, union of epochs "
            "| ratio |\n|---|---|---|---|---|\n")
    for epochs, windows, units, union in rows:
        text += f"| {epochs} | {windows:,} | {units:.1f} | {union:.1f} | **{units / union:.2f}x** |\n"
    text += ("\nCPU seconds of each plan's whole process tree (a fresh local Ray each, its start-up included), "
             f"{args.series:,}-row corpus in parts of 1,000 rows, windows of 512 + 64 points.\n")
    print(text)
    if args.doc:
        command = doc_command("python benchmarks/bench_data_pipeline.py", sys.argv[1:], {})
        write_doc_section(DOC, "data-pipeline-plan", f"Command: `{command}`\n\n{text}", title="# Pretraining\n")


if __name__ == "__main__":
    main()
