"""The corpus refresh keeps the evaluation benchmarks' series out of the training corpus.

The corpus holds real ETTh2 and los-loop series under other names: whole files that are the benchmarks'
datasets (by file name, by a declared ``benchmark:``), and single series renamed, cut at an odd offset,
truncated and written beside ordinary series in other files. Everything else must be kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from corpus.blast.sampling import MIXUP_CELL, normalized_span
from corpus.leakage import LeakageError
from infra.versions import list_versions, open_version, read_side_table, read_table
from pipelines.refresh import RefreshResult, corpus_refresh_flow, refresh_markdown
from tests.conftest import real_data
from tests.integration.tiny_profile import tiny_profile

ETT_COLUMNS = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]


def _write_sources(tmp: Path, ett: pd.DataFrame, los: pd.DataFrame) -> dict[str, np.ndarray]:
    """The test's input files; returns every series as ingest will see it (float32), by series id."""
    rng = np.random.default_rng(11)
    series: dict[str, np.ndarray] = {}
    # a wide archive: two ETTh2 variables renamed, shifted and cut, beside two ordinary plants
    grid = pd.DataFrame({"date": pd.date_range("2020-01-01", periods=3000, freq="h").strftime("%Y-%m-%d %H:%M:%S"),
                         "plant_a": np.cumsum(rng.standard_normal(3000)) + 40,
                         "feeder_7": ett["OT"].to_numpy()[500:3500],
                         "plant_b": 20 + 5 * np.sin(np.arange(3000) * 2 * np.pi / 24) + rng.normal(0, 1, 3000),
                         "feeder_9": ett["MUFL"].to_numpy()[1001:4001]})
    grid.to_csv(tmp / "grid_archive.csv", index=False, float_format="%.10g")
    series |= {f"grid_archive/{c}": grid[c].to_numpy(np.float32) for c in grid.columns[1:]}
    # a long file of road sensors: two los-loop sensors renamed (one cut from step 101 to 901) and two others
    roads = {"road_1": los.iloc[101:901, 0].to_numpy(), "road_3": 60 + np.cumsum(rng.normal(0, 0.3, 2016)),
             "road_2": los.iloc[:, 5].to_numpy(), "road_4": np.clip(65 + rng.normal(0, 4, 1500), 0, None)}
    _write_long(tmp / "city_sensors.csv", roads, "5min")
    series |= {f"city_sensors/{k}": np.asarray(v, np.float32) for k, v in roads.items()}
    # a source declared to be the los-loop dataset
    loops = {"a": los.iloc[:, 10].to_numpy(), "b": los.iloc[:, 11].to_numpy()}
    _write_long(tmp / "loops.csv", loops, "5min")
    series |= {f"loops/{k}": np.asarray(v, np.float32) for k, v in loops.items()}
    series |= {f"transformers/{c}": ett[c].to_numpy(np.float32) for c in ETT_COLUMNS}
    return series


def _write_long(path: Path, columns: dict[str, np.ndarray], freq: str) -> None:
    frames = [pd.DataFrame({"id": name, "timestamp": pd.date_range("2021-03-01", periods=len(v), freq=freq),
                            "value": v}) for name, v in columns.items()]
    pd.concat(frames).to_csv(path, index=False, float_format="%.7g")


IDENTITY = {**{f"transformers/{c}": "etth2" for c in ETT_COLUMNS}, "loops/a": "los-loop", "loops/b": "los-loop"}
CONTENT = {"grid_archive/feeder_7": "etth2", "grid_archive/feeder_9": "etth2", "city_sensors/road_1": "los-loop",
           "city_sensors/road_2": "los-loop"}
ORDINARY = ["grid_archive/plant_a", "grid_archive/plant_b", "city_sensors/road_3", "city_sensors/road_4"]


def _excluded(result: RefreshResult) -> dict[str, tuple[str, str]]:
    entries = result.training_corpus["leakage_excluded"]["series"]
    return {e["series_id"]: (e["benchmark"], e["matched_by"]) for e in entries}


def _assert_no_excluded_window_in_shards(version_url: str, series: dict[str, np.ndarray], excluded: set) -> None:
    """No sample comes from an excluded series, and no sample's values are a window of one (z-scored as written)."""
    table = read_table(open_version(version_url))
    sources = {s for ids in table["source_series_ids"].to_pylist() for s in ids}
    assert not sources & excluded
    probe = 16  # every 16-value run of every excluded series' written form
    runs = set()
    for sid in excluded:
        span = normalized_span(series[sid]).astype(np.float32)
        runs |= {w.tobytes() for w in np.lib.stride_tricks.sliding_window_view(span, probe)}
    plain = table.filter(pa.compute.not_equal(table["grid_cell"], MIXUP_CELL))
    values = np.asarray(plain["values"].to_pylist(), dtype=np.float32)
    assert len(values) > 100
    for start in (0, 100, 240):
        assert not any(v[start : start + probe].tobytes() in runs for v in values)


@pytest.mark.slow
def test_refresh_excludes_benchmark_series_by_identity_and_content(prefect_harness, tmp_path: Path) -> None:
    ett = pd.read_csv(real_data("ett", "ETTh2.csv"))
    los = pd.read_csv(real_data("los_loop", "los_speed.csv"))
    series = _write_sources(tmp_path, ett, los)
    sources = [
        {"name": "grid_archive", "kind": "ltsf", "paths": [str(tmp_path / "grid_archive.csv")]},
        {"name": "city_sensors", "kind": "long", "paths": [str(tmp_path / "city_sensors.csv")], "freq": "5min"},
        {"name": "loops", "kind": "long", "paths": [str(tmp_path / "loops.csv")], "freq": "5min",
         "benchmark": "los-loop"},
        {"name": "transformers", "kind": "ltsf", "paths": [str(real_data("ett", "ETTh2.csv"))]},  # by file name
    ]
    profile = tiny_profile(tmp_path / "root", sources, ["ETTh2", "los-loop"])
    profile["benchmarks"]["data_dir"] = str(real_data("ett", "ETTh2.csv").parent.parent)

    first = corpus_refresh_flow(profile)
    corpus = first.training_corpus
    got = _excluded(first)
    assert got == {k: (b, "identity") for k, b in IDENTITY.items()} | {k: (b, "content") for k, b in CONTENT.items()}
    assert corpus["leakage_excluded"]["count"] == 13
    stats = open_version(corpus["version"]).manifest["stats"]
    assert stats["leakage_excluded"] == corpus["leakage_excluded"]
    assert stats["series_in"] == 4 + 4 + 2 + 7 + 240 == stats["series_scored"] + stats["series_quarantined"] + 13
    quarantined = set(read_side_table(open_version(corpus["version"]), "quarantine")["series_id"].to_pylist())
    assert not quarantined & set(ORDINARY)  # every ordinary series was scored, so it can be drawn
    checks = {b["benchmark"]: b for b in stats["leakage_check"]["benchmarks"]}
    assert checks["etth2"]["content"] == checks["los-loop"]["content"] == "checked"
    assert checks["etth2"]["identity_sources"] == ["corpus/transformers"]
    assert checks["los-loop"]["identity_sources"] == ["corpus/loops"]
    # 7 x 272 aligned windows, less those too flat to fingerprint; 207 x 31 for los-loop
    assert 1700 < checks["etth2"]["windows"] <= 7 * 272 and 6000 < checks["los-loop"]["windows"] <= 207 * 31
    _assert_no_excluded_window_in_shards(corpus["version"], series, set(got))
    report = refresh_markdown(first.sources, first.kernelsynth, corpus)
    assert "## Benchmark leakage" in report and "**13 series excluded**" in report
    assert "| city_sensors/road_1 | los-loop | content |" in report

    again = corpus_refresh_flow(profile)  # the same benchmark list: the same version, no work
    assert again.training_corpus["reused"] and again.training_corpus["version"] == corpus["version"]

    profile["benchmarks"]["names"] = ["etth2"]  # another list: another corpus, los-loop's series now kept
    third = corpus_refresh_flow(profile)
    assert not third.training_corpus["reused"] and third.training_corpus["version"] != corpus["version"]
    assert _excluded(third) == {k: v for k, v in got.items() if v[0] == "etth2"}

    profile["benchmarks"]["names"] = ["etth2", "pems08"]  # no PEMS08 data here: the refresh stops first
    before = [v.url for v in list_versions(str(tmp_path / "root"), "training_corpus")]
    with pytest.raises(LeakageError, match=r"benchmark 'pems08' has no data here .*leakage.unchecked"):
        corpus_refresh_flow(profile)
    assert [v.url for v in list_versions(str(tmp_path / "root"), "training_corpus")] == before
