"""The BLAST stage end to end: balance an imbalanced corpus, quarantine, shards, reruns, memory.

UMAP's numba compilation costs ~20 s the first time in a process, so one module-scoped run is shared by
the tests here; the rerun tests reuse the compiled code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from corpus.blast.balance import DATASET, balance
from corpus.blast.config import BlastConfig
from corpus.blast.sampling import CATCH_ALL_CELL, MIXUP_CELL, normalized_span
from corpus.schema import content_hash
from infra.schemas import CANONICAL_SCHEMA, TRAINING_CORPUS_SCHEMA
from infra.versions import DatasetVersion, VersionWriter, read_side_table, read_table

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def write_canonical(
    root: str, version_id: str, series: dict[str, np.ndarray], part_rows: int, compression: str = "zstd"
) -> DatasetVersion:
    """A published canonical corpus version holding ``series`` (id -> values)."""
    ids = list(series)
    vals = [np.asarray(series[i], dtype=np.float32) for i in ids]
    n = len(ids)
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in vals])]).astype(np.int64)
    target = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(vals)))
    table = pa.Table.from_arrays(
        [
            pa.array(ids),
            pa.array(["synthetic"] * n),
            pa.array(["test"] * n),
            pa.array(["h"] * n),
            pa.array([None] * n, pa.timestamp("us")),
            target,
            pa.array([len(v) for v in vals], pa.int64()),
            pa.array([content_hash(v) for v in vals]),
            pa.array([None] * n, pa.string()),
        ],
        schema=CANONICAL_SCHEMA,
    )
    writer = VersionWriter(
        root, "canonical", version_id, CANONICAL_SCHEMA, part_max_rows=part_rows, compression=compression
    )
    writer.write(table)
    return writer.commit(config={}, inputs=[], code_version="test")


def imbalanced_corpus(seed: int = 5) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, str]]:
    """90% near-identical sines, 10% a mix of other kinds, and a few series that cannot be scored."""
    rng = np.random.default_rng(seed)
    t = np.arange(1024)
    sines = {
        f"sine/{i}": np.sin(2 * np.pi * t / 32 + rng.random() * 6) + 0.05 * rng.standard_normal(1024)
        for i in range(270)
    }
    others: dict[str, np.ndarray] = {}
    for i in range(30):
        kind = i % 6
        n = 1024 if i < 24 else int(rng.integers(300, 400))  # a few shorter than the samples: padded
        noise = rng.standard_normal(n)
        x = [
            np.cumsum(noise),
            noise,
            0.02 * np.arange(n) + noise,
            rng.standard_t(2, n),
            np.sin(2 * np.pi * np.arange(n) / 7) + 0.01 * np.arange(n),
            np.exp(np.cumsum(0.01 * noise)),
        ][kind]
        if i % 5 == 0:
            x = x.copy()
            x[rng.choice(n, n // 20, replace=False)] = np.nan  # gaps stay NaN in the samples
        others[f"other/{i}"] = x
    bad = {
        "bad/short": "too short",
        "bad/nan": "no observed non-zero",
        "bad/zero": "no observed non-zero",
        "bad/tiny-span": "too short",
    }
    others["bad/short"] = rng.standard_normal(100)
    others["bad/nan"] = np.full(600, np.nan)
    others["bad/zero"] = np.zeros(700)
    tiny = np.zeros(900)
    tiny[400:450] = 1.0
    others["bad/tiny-span"] = tiny
    return sines, others, bad


CFG = BlastConfig(
    min_length=256,
    n_samples=600,
    sample_length=512,
    shard_rows=128,
    mixup_rate=0.25,
    seed=7,
    feature_batch_rows=64,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("blast")
    sines, others, bad = imbalanced_corpus()
    v1 = write_canonical(str(root / "in"), "sines", sines, part_rows=100)
    v2 = write_canonical(str(root / "in"), "others", others, part_rows=16)
    out_root = str(root / "out")
    t0 = time.perf_counter()
    version = balance([v1.url, v2.url], CFG, out_root, progress=False)
    seconds = time.perf_counter() - t0
    return dict(
        version=version,
        inputs=[v1.url, v2.url],
        out_root=out_root,
        series={**sines, **others},
        bad=bad,
        seconds=seconds,
    )


def test_balancing_raises_occupancy_entropy(run: dict) -> None:
    stats = run["version"].manifest["stats"]
    before, after = stats["occupancy_entropy_before_bits"], stats["occupancy_entropy_after_bits"]
    print(
        f"\noccupancy entropy before {before:.3f} bits, after {after:.3f} bits; "
        f"{stats['cells_occupied_before']} cells, stage {run['seconds']:.1f} s"
    )
    assert after > before + 1.5
    assert after > 0.8 * np.log2(stats["cells_after_merge"])
    table = read_table(run["version"])
    plain = table.filter(pa.compute.not_equal(table["grid_cell"], MIXUP_CELL))
    sources = [ids[0] for ids in plain["source_series_ids"].to_pylist()]
    sine_share = np.mean([s.startswith("sine/") for s in sources])
    assert sine_share < 0.6, f"sines were 90% of the input and are {sine_share:.0%} of the samples"


def test_shards_schema_and_manifest(run: dict) -> None:
    version = run["version"]
    m = version.manifest
    assert m["dataset"] == DATASET and [p["rows"] for p in m["parts"]] == [128, 128, 128, 128, 88]
    table = read_table(version)
    assert table.schema.equals(TRAINING_CORPUS_SCHEMA)
    assert table["sample_id"].to_pylist() == list(range(600))
    lengths = pa.compute.list_value_length(table["values"]).to_numpy()
    assert (lengths == 512).all()
    cells = table["grid_cell"].to_numpy()
    n_ids = pa.compute.list_value_length(table["source_series_ids"]).to_numpy()
    assert (cells == MIXUP_CELL).sum() == 150 == m["stats"]["mixup_samples"]
    assert (n_ids[cells != MIXUP_CELL] == 1).all() and set(n_ids[cells == MIXUP_CELL]) <= {1, 2, 3}
    assert ((cells >= 0) | (cells == CATCH_ALL_CELL) | (cells == MIXUP_CELL)).all()
    assert cells.max() < CFG.grid_size**2
    stats = m["stats"]
    assert stats["series_in"] == 304 and stats["series_scored"] == 300 and stats["series_quarantined"] == 4
    assert stats["draws"] == int(n_ids.sum())
    png = m["files"]["balance_map.png"]
    assert png["bytes"] > 1000
    with open(version.file_url("balance_map.png"), "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert m["inputs"][0]["version_id"] == "sines" and m["config"]["seed"] == 7


def test_quarantine_side_table(run: dict) -> None:
    q = read_side_table(run["version"], "quarantine").to_pydict()
    got = dict(zip(q["series_id"], q["reason"], strict=True))
    assert set(got) == set(run["bad"])
    for sid, fragment in run["bad"].items():
        assert fragment in got[sid], (sid, got[sid])
    assert all(u.endswith(".parquet") for u in q["input"])


def test_samples_are_zscored_windows_of_their_source(run: dict) -> None:
    table = read_table(run["version"]).to_pydict()
    checked_pad = checked_window = 0
    for ids, cell, values in zip(
        table["source_series_ids"], table["grid_cell"], table["values"], strict=True
    ):
        if cell == MIXUP_CELL:
            continue
        span = normalized_span(np.asarray(run["series"][ids[0]], dtype=np.float32)).astype(np.float32)
        v = np.asarray(values, dtype=np.float32)
        if len(span) <= 512:
            np.testing.assert_array_equal(v[: len(span)], span)
            assert np.isnan(v[len(span) :]).all()
            checked_pad += 1
        elif checked_window < 40:
            windows = np.lib.stride_tricks.sliding_window_view(span, 512)
            same = np.all((windows == v) | (np.isnan(windows) & np.isnan(v)), axis=1)
            assert same.any(), f"sample of {ids[0]} is not a window of its z-scored span"
            checked_window += 1
    assert checked_pad > 0 and checked_window > 0


def test_existing_version_is_returned_without_work(run: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    stage = importlib.import_module("corpus.blast.balance")  # the package re-exports balance(), shadowing it

    def fail(*_a: object, **_k: object) -> None:
        raise AssertionError("the existing version must be reused")

    monkeypatch.setattr(stage, "_score_tasks", fail)
    again = balance(run["inputs"], CFG, run["out_root"], progress=False)
    assert again.url == run["version"].url and again.manifest == run["version"].manifest


def test_rerun_after_clearing_is_byte_identical_with_two_workers(run: dict) -> None:
    version = run["version"]
    shas = [p["sha256"] for p in version.manifest["parts"]]
    quarantine_sha = version.manifest["side_tables"]["quarantine"]["sha256"]
    shutil.rmtree(version.folder_url)
    # two tasks at a time and scoring units of one 8-series batch: other units, other nodes, the same bytes
    cfg = CFG.model_copy(update={"workers": 2, "feature_batch_rows": 8, "score_unit_rows": 5})
    again = balance(run["inputs"], cfg, run["out_root"], progress=False)
    assert again.manifest["stats"]["units"]["blast-score"] > version.manifest["stats"]["units"]["blast-score"]
    assert again.version_id == version.version_id
    assert [p["sha256"] for p in again.manifest["parts"]] == shas
    assert again.manifest["side_tables"]["quarantine"]["sha256"] == quarantine_sha
    png = "balance_map.png"
    assert again.manifest["files"][png]["sha256"] == version.manifest["files"][png]["sha256"]


def test_no_scoreable_series_is_a_clear_error(tmp_path: Path) -> None:
    v = write_canonical(str(tmp_path), "bad", {"a": np.zeros(600), "b": np.ones(10)}, part_rows=10)
    with pytest.raises(ValueError, match="no series of .* could be scored"):
        balance([v.url], CFG, str(tmp_path / "out"), progress=False)


# --- memory: peak RSS must not grow with the corpus -------------------------------------------------------
_DRIVER = textwrap.dedent(
    """
    import json, subprocess, sys, resource
    child = subprocess.run([sys.executable, "-c", sys.argv[1]], capture_output=True, text=True)
    if child.returncode:
        sys.stderr.write(child.stderr)
        sys.exit(child.returncode)
    stats = json.loads(child.stdout.strip().splitlines()[-1])
    print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "stats": stats}))
    """
)
_BALANCE = textwrap.dedent(
    """
    from corpus.blast.balance import balance
    from corpus.blast.config import BlastConfig
    cfg = BlastConfig(n_samples=200, sample_length=1024, shard_rows=100, seed=1)
    version = balance([{url!r}], cfg, {out!r}, progress=False)
    import json
    print(json.dumps(version.manifest["stats"]))
    """
)


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_corpus_size(tmp_path: Path) -> None:
    """N and 4N long series (4N holds 0.26 GB of float32 values): the peak RSS of a balance run barely moves.

    The series open with one constant window (the scored part, so every series gets the same vector and the
    run skips UMAP, whose memory depends on its sample size, not on the corpus) and go on as random walks
    of 400,000 points that the sample writer cuts windows from. What is measured is the two streaming passes.
    """
    rng = np.random.default_rng(0)
    length, head = 400_000, 2039
    runs = {}
    for name, n in (("n", 40), ("4n", 160)):
        series = {}
        for i in range(n):
            x = np.cumsum(rng.standard_normal(length)).astype(np.float32)
            x[:head] = 1.0 + i
            series[f"s/{i}"] = x
        v = write_canonical(str(tmp_path / "in"), name, series, part_rows=8, compression="none")
        del series
        code = _BALANCE.format(url=v.url, out=str(tmp_path / f"out-{name}"))
        env = {
            **os.environ,
            "PYTHONPATH": str(PROJECT_ROOT),
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
        }
        runs[name] = subprocess.Popen(
            [sys.executable, "-c", _DRIVER, code],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    peaks = {}
    for name, proc in runs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        result = json.loads(out.strip().splitlines()[-1])
        peaks[name] = result["maxrss_kb"] / 1024
        assert result["stats"]["series_scored"] == (40 if name == "n" else 160)
    print(f"\npeak RSS: N={peaks['n']:.0f} MB, 4N={peaks['4n']:.0f} MB, ratio {peaks['4n'] / peaks['n']:.2f}")
    # holding the 4N corpus' values would add >= 0.26 GB (0.5 GB as float64) to a ~0.4 GB process
    assert peaks["4n"] < 1.3 * peaks["n"]
