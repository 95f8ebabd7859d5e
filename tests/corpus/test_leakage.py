"""The leakage check's parts: the window matcher on numbers, the identity table, the filter's fingerprint."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from corpus.blast.balance import blast_version_id
from corpus.blast.config import BlastConfig
from corpus.config import SourceConfig
from corpus.leakage import (
    FingerprintIndex,
    LeakageConfig,
    LeakageError,
    benchmark_windows,
    build_filter,
    identity_of,
    quantize,
    source_identity,
    window_hashes,
)
from infra.config import ConfigError, validate_config
from infra.versions import DatasetVersion

CFG = LeakageConfig()  # window 64, 12 bits, 8 distinct values


def _index(bench: np.ndarray) -> FingerprintIndex:
    return FingerprintIndex.build({"walks": benchmark_windows(bench, CFG)}, CFG.window, CFG.mantissa_bits)


@pytest.fixture(scope="module")
def bench() -> np.ndarray:
    """Three random walks of 5,000 steps (float32, around 50) and one near-constant column."""
    rng = np.random.default_rng(0)
    walks = np.cumsum(rng.standard_normal((5000, 3)), axis=0) + 50
    flat = 7.0 + 1e-6 * rng.standard_normal(5000)  # varies only below the kept bits
    return np.column_stack([walks, flat]).astype(np.float32)


def test_benchmark_windows_are_aligned_and_skip_near_constant_ones(bench: np.ndarray) -> None:
    # 5000 // 64 = 78 aligned windows per column; the near-constant column rounds to one value: none of its
    hashes = benchmark_windows(bench, CFG)
    assert len(hashes) == 3 * 78
    assert len(np.unique(hashes)) == 3 * 78
    keys, ok = quantize(bench[:, 3], CFG.mantissa_bits)
    assert ok.all() and len(np.unique(keys)) <= 2


def test_a_copy_at_an_odd_offset_is_found_and_counted(bench: np.ndarray) -> None:
    index = _index(bench)
    rng = np.random.default_rng(1)
    col = bench[:, 1].astype(np.float64)  # the copy is float64, the benchmark float32
    # 1000 values from offset 1237: aligned windows start at 1280, 1344, ..., 2112 -> 14 inside the copy
    host = np.concatenate([rng.standard_normal(333), col[1237:2237], rng.standard_normal(50)])
    assert index.matches(host).tolist() == [14]
    assert index.match(host) == "walks"
    # 2L - 1 = 127 values hold one aligned window wherever they start; 126 from 1281 hold none
    assert index.matches(col[1281:1408]).tolist() == [1]
    assert index.matches(col[1281:1407]).tolist() == [0]
    # printed with 7 significant digits and read back: rounding below the kept bits changes nothing here
    reprinted = np.array([float(f"{v:.7g}") for v in col[1237:2237]])
    assert index.matches(reprinted).tolist() == [14]


def test_constant_near_constant_and_unrelated_series_do_not_match(bench: np.ndarray) -> None:
    index = _index(bench)
    rng = np.random.default_rng(2)
    assert index.matches(np.full(5000, 50.0)).tolist() == [0]
    assert index.matches(bench[:, 3]).tolist() == [0]  # the benchmark's own near-constant column
    walk = np.cumsum(rng.standard_normal(200_000)) + 50  # the same kind of data, not the same data
    assert index.matches(walk).tolist() == [0]
    gappy = bench[1000:2000, 0].copy()
    gappy[::50] = np.nan  # every window holds a NaN: nothing to match
    assert index.matches(gappy).tolist() == [0]


def test_hashes_do_not_depend_on_offset_or_chunking() -> None:
    rng = np.random.default_rng(3)
    x = np.cumsum(rng.standard_normal((1 << 20) + 500)).astype(np.float32)
    h = window_hashes(x, 64, 12)
    assert len(h) == len(x) - 63
    assert (window_hashes(x[777:5000], 64, 12) == h[777 : 5000 - 63]).all()
    edge = (1 << 20) - 10  # windows straddling the first chunk's end hash as they do alone
    assert (window_hashes(x[edge : edge + 100], 64, 12) == h[edge : edge + 37]).all()
    assert len(np.unique(h)) == len(h)


# --- identity --------------------------------------------------------------------------------------------
def _source(name: str, paths: list[str], **extra: object) -> SourceConfig:
    return SourceConfig(name=name, kind="long", paths=paths, **extra)


def test_sources_that_are_a_benchmark_dataset() -> None:
    ids = [identity_of(n) for n in ("los-loop", "pems08", "weather", "synthetic-traffic")]
    assert source_identity(_source("traffic", ["hf://datasets/Salesforce/lotsa_data/PEMS08"]), ids) == "pems08"
    assert source_identity(_source("LOS_LOOP", ["s3://b/x/data-00000-of-00001.arrow"]), ids) == "los-loop"
    assert source_identity(_source("speeds", ["/d/los_speed.csv.gz"]), ids) == "los-loop"
    assert source_identity(_source("mine", ["/d/a.csv"], benchmark="LOS-LOOP"), ids) == "los-loop"
    assert source_identity(_source("mine", ["/d/a.csv"], benchmark="etth2"), ids) is None  # not evaluated
    # Monash's and LOTSA's "weather" is another dataset than the LTSF weather.csv benchmark
    assert source_identity(_source("weather", ["hf://datasets/Salesforce/lotsa_data/weather"]), ids) is None
    assert source_identity(_source("w", ["/d/weather.csv"]), ids) == "weather"
    assert source_identity(_source("kernel", ["/d/synthetic-traffic.csv"]), ids) is None


def test_a_source_only_partly_a_benchmark_dataset_is_an_error_naming_the_paths() -> None:
    ids = [identity_of("pems08")]
    mixed = _source("lotsa", ["/lotsa/PEMS08", "/lotsa/HZMETRO"])
    with pytest.raises(LeakageError, match=r"source lotsa: paths /lotsa/PEMS08 \(pems08\) .* own"):
        source_identity(mixed, ids)


def test_an_unknown_declared_benchmark_lists_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match=r"benchmark: Value error, unknown benchmark 'pems9'; known: pems03"):
        validate_config(SourceConfig, {"name": "a", "kind": "long", "paths": ["/a"], "benchmark": "pems9"})


# --- the filter -------------------------------------------------------------------------------------------
def test_a_benchmark_without_data_fails_naming_it_unless_skipped(tmp_path) -> None:
    with pytest.raises(LeakageError, match=r"benchmark 'pems08' has no data here .* leakage.unchecked: \{pems08"):
        build_filter(CFG, ["synthetic-grid", "PEMS08"], [], str(tmp_path), data_dir=str(tmp_path / "none"))
    with pytest.raises(LeakageError, match=r"'etth2' .*; get ETTh2.csv from https://raw.githubusercontent.com/"):
        build_filter(CFG, ["etth2"], [], str(tmp_path), data_dir=str(tmp_path / "none"))
    cfg = LeakageConfig(unchecked={"PEMS08": "files not licensed for this cluster"})
    leak = build_filter(cfg, ["synthetic-grid", "PEMS08"], [_source("PEMS08", ["/x"])], str(tmp_path),
                        data_dir=str(tmp_path / "none"))
    record = leak.record()
    assert record["benchmarks"] == [
        {"benchmark": "pems08", "content": "not checked", "identity_sources": ["corpus/PEMS08"],
         "reason": "files not licensed for this cluster"},
        # 20 nodes x 3360 hourly steps: 52 windows of 64 per node, 24 of which hold one of its NaN gaps
        {"benchmark": "synthetic-grid", "content": "checked", "identity_sources": [], "windows": 1040 - 24},
    ]
    assert record["window"] == 64 and record["mantissa_bits"] == 12
    assert leak.identity_of("corpus/PEMS08") == "pems08" and leak.index_url is not None


def test_the_benchmark_list_is_part_of_the_training_corpus_fingerprint(tmp_path) -> None:
    versions = [DatasetVersion("file:///r/corpus/a/v1/data/", {"dataset": "corpus/a", "version_id": "v1"})]
    one = build_filter(CFG, ["synthetic-traffic"], [], str(tmp_path))
    again = build_filter(CFG, ["synthetic-traffic"], [], str(tmp_path))
    two = build_filter(CFG, ["synthetic-traffic", "synthetic-grid"], [], str(tmp_path))
    coarse = build_filter(LeakageConfig(mantissa_bits=10), ["synthetic-traffic"], [], str(tmp_path))
    cfg = BlastConfig()
    ids = {blast_version_id(versions, cfg, f) for f in (one, again)}
    assert len(ids) == 1 and one.index_sha256 == again.index_sha256
    assert len({*ids, blast_version_id(versions, cfg, two), blast_version_id(versions, cfg, coarse)}) == 3


# --- in the scoring units ----------------------------------------------------------------------------------
def _write_version(root: str, dataset: str, series: dict[str, np.ndarray]) -> DatasetVersion:
    from corpus.schema import content_hash
    from infra.schemas import CANONICAL_SCHEMA
    from infra.versions import VersionWriter

    vals = [np.asarray(v, dtype=np.float32) for v in series.values()]
    n = len(vals)
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in vals])]).astype(np.int64)
    table = pa.Table.from_arrays(
        [pa.array(list(series)), pa.array(["s"] * n), pa.array(["test"] * n), pa.array(["h"] * n),
         pa.array([None] * n, pa.timestamp("us")),
         pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(vals))),
         pa.array([len(v) for v in vals], pa.int64()), pa.array([content_hash(v) for v in vals]),
         pa.array([None] * n, pa.string())],
        schema=CANONICAL_SCHEMA,
    )
    writer = VersionWriter(root, dataset, "v1", CANONICAL_SCHEMA, part_max_rows=16)
    writer.write(table)
    return writer.commit(config={}, inputs=[], code_version="test")


def test_scoring_units_exclude_the_same_series_however_the_work_is_cut(tmp_path) -> None:
    from dataclasses import replace

    from adaptation.datasets import resolve_benchmark
    from corpus.blast.balance import _score_task, _score_tasks

    traffic = resolve_benchmark("synthetic-traffic").values
    rng = np.random.default_rng(4)
    series = {f"s/{i}": np.cumsum(rng.standard_normal(300)) for i in range(40)}  # short: quarantined, not scored
    for i, (node, start) in {5: (3, 1001), 17: (39, 7), 33: (0, 4000)}.items():
        series[f"s/{i}"] = np.concatenate([rng.standard_normal(50), traffic[start : start + 250, node]])
    version = _write_version(str(tmp_path / "in"), "corpus/mixed", series)
    leak = build_filter(CFG, ["synthetic-traffic"], [], str(tmp_path))

    def excluded(cfg: BlastConfig, flt) -> list[tuple[str, str, str]]:
        tasks = _score_tasks([version], cfg, {}, flt)
        return [e for t in tasks for e in _score_task(t).excluded], len(tasks)

    small, n_small = excluded(BlastConfig(score_unit_rows=4, feature_batch_rows=2), leak)
    large, n_large = excluded(BlastConfig(), leak)
    assert n_small == 10 > n_large == 3  # parts of 16, 16 and 8 rows: 4 + 4 + 2 units, or one per part
    assert small == large == [(f"s/{i}", "synthetic-traffic", "content") for i in (5, 17, 33)]
    declared = replace(leak, identity=(("corpus/mixed", "synthetic-traffic"),))
    everything, _ = excluded(BlastConfig(score_unit_rows=4, feature_batch_rows=2), declared)
    assert everything == [(sid, "synthetic-traffic", "identity") for sid in series]


def test_the_run_report_states_the_check_and_names_unchecked_benchmarks(tmp_path) -> None:
    from pipelines.one_click import leakage_section
    from pipelines.profile import Profile

    leak = build_filter(CFG, ["synthetic-grid"], [], str(tmp_path))
    excluded = {"count": 1, "series": [{"series_id": "a/x", "benchmark": "synthetic-grid", "matched_by": "content"}]}
    corpus = {"leakage": {"check": leak.record(), "excluded": excluded}}
    prof = Profile(benchmarks={"names": ["synthetic-grid", "ETTh2"]})
    text = "\n".join(leakage_section(prof, corpus))
    assert "**1 series excluded**" in text and "| a/x | synthetic-grid | content |" in text
    assert "| synthetic-grid | checked | 1,016 | - | 0 | 1 |" in text
    assert "not checked against ETTh2" in text
    quiet = "\n".join(leakage_section(Profile(benchmarks={"names": ["synthetic-grid"]}), corpus))
    assert "Warning" not in quiet
