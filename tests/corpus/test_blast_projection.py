"""BLAST's projection: the bounded UMAP fit sample, its config checks, and the fit running off the driver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from corpus.blast.config import UMAP_MAX_SAMPLE, BlastConfig
from corpus.blast.projection import sample_indices
from tests.corpus.test_blast_balance import write_canonical

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("n", "share", "low", "high", "expected"),
    [
        (1_500, 0.1, 2_000, UMAP_MAX_SAMPLE, 1_500),  # fewer vectors than the floor: all of them
        (5_000, 0.1, 2_000, UMAP_MAX_SAMPLE, 2_000),  # 10 % is 500: the floor
        (30_000, 0.1, 2_000, UMAP_MAX_SAMPLE, 3_000),  # the share
        (100_000, 0.1, 2_000, UMAP_MAX_SAMPLE, 10_000),  # the share, exactly the default bound
        (300_000, 0.1, 2_000, UMAP_MAX_SAMPLE, 10_000),  # 30,000 by the share: the bound
        (300_000, 0.1, 2_000, 4_000, 4_000),
        (50, 0.5, 10, 10, 10),  # floor == bound
    ],
)
def test_fit_sample_is_the_share_between_floor_and_bound(
    n: int, share: float, low: int, high: int, expected: int
) -> None:
    cfg = BlastConfig(umap_sample_share=share, umap_min_sample=low, umap_max_sample=high)
    idx = sample_indices(n, cfg, np.random.default_rng([0, 1]))
    assert len(idx) == expected
    assert np.all(np.diff(idx) > 0) and idx[0] >= 0 and idx[-1] < n  # sorted, distinct, in range
    assert np.array_equal(idx, sample_indices(n, cfg, np.random.default_rng([0, 1])))


def test_default_bound_keeps_small_samples_as_before() -> None:
    """Below the bound the sample is the one the unbounded rule draws (same size, same generator calls)."""
    cfg = BlastConfig()
    for n in (300, 20_000, 100_000):
        rng = np.random.default_rng([7, 1])
        unbounded = np.sort(rng.choice(n, size=min(n, max(int(n * 0.1), 2_000)), replace=False))
        assert np.array_equal(sample_indices(n, cfg, np.random.default_rng([7, 1])), unbounded)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"umap_max_sample": 1_000}, r"umap_max_sample \(1000\) must be at least umap_min_sample \(2000\)"),
        ({"umap_min_sample": 50, "umap_max_sample": 49}, r"umap_max_sample \(49\) must be at least"),
        ({"umap_max_sample": 0}, r"umap_max_sample\n.*greater than or equal to 1"),
        ({"umap_max_sample": -5}, r"umap_max_sample\n.*greater than or equal to 1"),
    ],
)
def test_bad_bounds_are_clear_errors(fields: dict[str, int], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        BlastConfig(**fields)


def _varied_corpus(n: int, seed: int = 3) -> dict[str, np.ndarray]:
    """Six kinds of series (walks, noise, trends, heavy tails, seasonal, exponential): many distinct vectors."""
    rng = np.random.default_rng(seed)
    t = np.arange(700)
    out = {}
    for i in range(n):
        e = rng.standard_normal(700)
        kind = [
            np.cumsum(e),
            e,
            rng.random() * 0.05 * t + e,
            rng.standard_t(2, 700),
            np.sin(2 * np.pi * t / rng.integers(5, 40)) * rng.random() * 4 + e,
            np.exp(np.cumsum(0.01 * e)),
        ]
        out[f"k{i % 6}/{i}"] = kind[i % 6]
    return out


_BALANCE = textwrap.dedent(
    """
    import json, sys
    from corpus.blast.balance import balance
    from corpus.blast.config import BlastConfig
    cfg = BlastConfig(min_length=256, n_samples=60, sample_length=128, shard_rows=60, seed=2,
                      umap_sample_share=0.5, umap_min_sample=10, umap_max_sample=40, umap_n_epochs=50)
    version = balance([{url!r}], cfg, {out!r}, progress=False)
    loaded = sorted(m for m in ("umap", "pynndescent", "numba") if m in sys.modules)
    print(json.dumps({{"stats": version.manifest["stats"], "driver_modules": loaded}}))
    """
)


@pytest.mark.slow
def test_projection_runs_as_a_ray_task_on_the_bounded_sample(tmp_path: Path) -> None:
    """A balance run fits UMAP on ``umap_max_sample`` vectors in a Ray task: the driver never imports UMAP."""
    v = write_canonical(str(tmp_path / "in"), "varied", _varied_corpus(120), part_rows=40)
    code = _BALANCE.format(url=v.url, out=str(tmp_path / "out"))
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    stats = result["stats"]
    assert stats["series_scored"] == 120
    assert stats["umap_sample_size"] == 40  # 50 % of 120 is 60: the bound
    assert stats["projection"] == "umap"
    assert stats["units"]["blast-project"] == 1
    assert sum(stats["ray_nodes"].values()) == sum(stats["units"].values())
    assert result["driver_modules"] == []  # neither UMAP, its NN index nor their compiler ran in the driver
