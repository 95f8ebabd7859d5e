"""A profile small enough for end-to-end tests: every stage real, every size tiny."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def write_long_csv(path: Path, n_series: int, length: int, seed: int) -> None:
    """Noisy daily-cycle series in the generic long layout (id, timestamp, value)."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    lines = ["id,timestamp,value"]
    stamps = [f"2024-01-{1 + h // 24:02d} {h % 24:02d}:00:00" for h in range(length)]
    for s in range(n_series):
        values = 10 + 3 * np.sin(2 * np.pi * (t + rng.integers(24)) / 24) + rng.normal(0, 0.5, length)
        lines += [f"s{s},{stamps[i]},{values[i]:.4f}" for i in range(length)]
    path.write_text("\n".join(lines) + "\n")


def tiny_profile(root: Path, sources: list[dict[str, Any]], benchmarks: list[str] | None = None) -> dict[str, Any]:
    return {
        "name": "tiny",
        "storage": {"root": str(root)},
        "ray": {"num_cpus": 4},
        "ingest": {"sources": sources, "retries": 2, "retry_delay_seconds": 1.0},
        "synth": {"n_series": 240, "length": 256, "seed": 1, "workers": 1, "chunk_size": 120},
        "balance": {"min_length": 128, "window": 256, "umap_min_sample": 200, "umap_n_neighbors": 15,
                    "grid_size": 10, "n_samples": 240, "sample_length": 256, "shard_rows": 120, "mixup_rate": 0.2,
                    "seed": 1},
        "pretrain": {"size": "minuscule", "steps": 12, "batch_size": 16, "context_length": 128, "max_horizon": 32,
                     "num_workers": 2, "checkpoint_every": 6, "log_every": 4, "seed": 1},
        "adapt": {"modes": ["zero", "few"], "max_steps": 8, "max_epochs": 2, "batch_size": 8,
                  "horizons": [[12, 12]], "eval_stride": 6, "max_val_windows": 32, "seed": 1},
        "benchmarks": {"names": benchmarks or ["synthetic-traffic"]},
    }
