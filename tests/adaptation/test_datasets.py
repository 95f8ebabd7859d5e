"""Benchmark loaders, registry, restricted unpickler, calendar features, splits and scaler.

Real files from the optional real-data folder (``FACTOST_TEST_DATA``) where present (skipped with the reason
otherwise); every other format is written by the test itself in the exact shape the public files have.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adaptation.datasets import (
    SpatioTemporalDataset,
    UnsafePickleError,
    ZScoreScaler,
    calendar_features,
    feature_vocab,
    gaussian_kernel_adjacency,
    load_pems_npz,
    load_pickle_restricted,
    make_synthetic_benchmark,
    normalize_freq,
    parse_split,
    read_dcrnn_pickle,
    read_distance_matrix,
    resolve_benchmark,
    save_generic,
)
from adaptation.datasets.downloads import ChecksumMismatchError, DownloadSpec, download, sha256_file

# --------------------------------------------------------------------------- real files


def test_etth2_equals_an_independent_pandas_parse(real_data_path) -> None:
    path = real_data_path("ett", "ETTh2.csv")
    dataset = resolve_benchmark("ETTh2", str(path.parent.parent))  # found in the ett/ subfolder
    frame = pd.read_csv(path, parse_dates=["date"])
    np.testing.assert_array_equal(dataset.values, frame.iloc[:, 1:].to_numpy(np.float32))
    np.testing.assert_array_equal(dataset.timestamps, frame["date"].to_numpy().astype("datetime64[ns]"))
    assert dataset.node_ids == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    assert dataset.freq == "h" and dataset.null_value == "nan" and dataset.scaler_per_node
    assert dataset.splits() == {"train": slice(0, 8640), "val": slice(8640, 11520), "test": slice(11520, 14400)}
    assert dataset.calendar_vocab == {"time_of_day": 24, "day_of_week": 7}
    np.testing.assert_array_equal(dataset.calendar["time_of_day"], frame["date"].dt.hour.to_numpy())
    assert dataset.calendar["day_of_week"][0] == 4  # 2016-07-01 was a Friday
    scaler = dataset.fit_scaler()
    train = frame.iloc[:8640, 1:].to_numpy(np.float64)
    np.testing.assert_allclose(scaler.mean, train.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(scaler.std, train.std(axis=0), rtol=1e-9)


def test_los_loop_speed_and_adjacency(real_data_path) -> None:
    folder = real_data_path("los_loop")
    dataset = resolve_benchmark("los-loop", str(folder.parent))
    speed = pd.read_csv(folder / "los_speed.csv")
    adj = pd.read_csv(folder / "los_adj.csv", header=None).to_numpy(np.float32)
    assert dataset.values.shape == (2016, 207) and dataset.timestamps is None
    np.testing.assert_array_equal(dataset.values, speed.to_numpy(np.float32))
    np.testing.assert_array_equal(dataset.adjacency, adj)
    assert dataset.node_ids[:3] == ["773869", "767541", "767542"]
    steps = np.arange(2016)
    np.testing.assert_array_equal(dataset.calendar["time_of_day"], steps % 288)  # index calendar, Monday 00:00
    np.testing.assert_array_equal(dataset.calendar["day_of_week"], (steps // 288) % 7)
    np.testing.assert_array_equal(dataset.calendar["minute_of_hour"], (steps % 12) * 5)
    assert dataset.splits() == {"train": slice(0, 1209), "val": slice(1209, 1613), "test": slice(1613, 2016)}
    assert dataset.few_shot_slice() == slice(1088, 1209)
    direct = resolve_benchmark(str(folder / "los_speed.csv"))  # a path to a known file keeps its conventions
    assert direct.name == "los-loop" and direct.null_value == "zero" and direct.adjacency is not None


def test_pems08_dense_distance_matrix_gaussian_kernel(real_data_path) -> None:
    path = real_data_path("graphs", "PEMS08_distance_matrix.csv")
    dist = read_distance_matrix(str(path), num_nodes=170)
    raw = pd.read_csv(path, index_col=0).to_numpy()
    listed = raw[(raw > 0) & ~np.eye(170, dtype=bool)]
    assert np.isfinite(dist).sum() == listed.size + 170 == 718
    adjacency = gaussian_kernel_adjacency(dist)
    std = listed.std()
    i, j = np.argwhere(raw > 0)[0]
    expected = np.exp(-((raw[i, j] / std) ** 2))
    assert adjacency[i, j] == pytest.approx(expected if expected >= 0.1 else 0.0, rel=1e-6)
    assert np.all(np.diag(adjacency) == 1.0)
    weights = adjacency[adjacency > 0]
    assert weights.min() >= 0.1 and weights.max() <= 1.0
    kept = int((np.exp(-((listed / std) ** 2)) >= 0.1).sum())
    assert (adjacency > 0).sum() == 170 + kept == 440  # self-loops + the listed edges that survive the 0.1 cut


def test_metr_la_pickle_through_the_restricted_unpickler(real_data_path) -> None:
    path = real_data_path("graphs", "metr_la_adj_mx.pkl")
    ids, id_to_ind, adj = read_dcrnn_pickle(str(path))
    with open(path, "rb") as fh:  # the trusted reference: our own copy of the public file
        ref_ids, ref_map, ref_adj = pickle.load(fh, encoding="latin1")
    assert ids == [str(s) for s in ref_ids] and ids[0] == "773869" and len(ids) == 207
    assert id_to_ind == {str(k): v for k, v in ref_map.items()}
    np.testing.assert_array_equal(adj, ref_adj)
    assert adj.dtype == np.float32 and (adj > 0).sum() == 1722


# --------------------------------------------------------------------------- restricted unpickler


class _Evil:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):  # noqa: ANN204 - the attack under test
        return (os.system, (self.command,))


def test_malicious_pickle_is_refused_with_the_file_named(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "adj_mx.pkl"
    bad.write_bytes(pickle.dumps([["1"], {"1": 0}, _Evil(f"touch {marker}")], protocol=2))
    with pytest.raises(UnsafePickleError) as info:
        load_pickle_restricted(str(bad))
    assert str(bad) in str(info.value) and "system" in str(info.value)
    assert not marker.exists()
    evil_eval = tmp_path / "eval.pkl"
    evil_eval.write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(UnsafePickleError, match=r"builtins\.eval"):
        read_dcrnn_pickle(str(evil_eval))


def test_restricted_unpickler_reads_numpy_arrays_of_any_protocol(tmp_path: Path) -> None:
    adj = np.arange(9, dtype=np.float32).reshape(3, 3)
    for protocol in (0, 2, 4, 5):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps([["a", "b", "c"], {"a": 0, "b": 1, "c": np.int64(2)}, adj], protocol=protocol))
        ids, mapping, loaded = read_dcrnn_pickle(str(path))
        assert ids == ["a", "b", "c"] and mapping["c"] == 2
        np.testing.assert_array_equal(loaded, adj)


# --------------------------------------------------------------------------- formats written by the tests


def _write_pems03(folder: Path, steps: int = 576) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(7)
    nodes = 358
    data = rng.uniform(50, 400, size=(steps, nodes, 3)).astype(np.float32)
    data[:5, 0, 0] = 0.0  # missing flow readings
    folder.mkdir(parents=True)
    np.savez_compressed(folder / "PEMS03.npz", data=data)
    sensor_ids = [str(317000 + 7 * i) for i in range(nodes)]
    (folder / "PEMS03.txt").write_text("\n".join(sensor_ids) + "\n")
    edges = ["from,to,distance"] + [f"{sensor_ids[i]},{sensor_ids[i + 1]},{100.0 + i}" for i in range(nodes - 1)]
    (folder / "PEMS03.csv").write_text("\n".join(edges) + "\n")
    return data, sensor_ids


def test_pems03_npz_with_raw_sensor_id_edge_list(tmp_path: Path) -> None:
    data, sensor_ids = _write_pems03(tmp_path / "raw_data" / "PEMS03")
    dataset = resolve_benchmark("PEMS-03", str(tmp_path))
    np.testing.assert_array_equal(dataset.values, data[:, :, 0])
    assert dataset.node_ids == sensor_ids and dataset.null_value == "zero"
    assert not dataset.mask()[:5, 0].any() and dataset.mask()[5:, 0].all()
    assert dataset.timestamps[0] == np.datetime64("2018-09-01T00:00")
    assert dataset.calendar["day_of_week"][0] == 5  # a Saturday
    std = np.std(100.0 + np.arange(357))
    assert dataset.adjacency[0, 1] == pytest.approx(np.exp(-((100.0 / std) ** 2)), rel=1e-6)
    assert dataset.adjacency[1, 0] == 0.0  # the file's direction is kept
    assert dataset.splits()["train"] == slice(0, 345)
    scaler = dataset.fit_scaler()  # global, zeros excluded
    observed = data[:345, :, 0][data[:345, :, 0] != 0]
    assert scaler.mean == [pytest.approx(float(observed.astype(np.float64).mean()), rel=1e-9)]


def test_pems_npz_with_index_edge_list_by_hand(tmp_path: Path) -> None:
    np.savez(tmp_path / "toy.npz", data=np.ones((12, 5, 1), dtype=np.float32))
    (tmp_path / "toy.csv").write_text("from,to,cost\n0,1,100\n1,2,200\n2,3,300\n3,4,1000\n")
    dataset = load_pems_npz(str(tmp_path / "toy.npz"), str(tmp_path / "toy.csv"), symmetric=True)
    std = np.std([100, 200, 300, 1000])
    expected = np.eye(5)
    for i, j, d in ((0, 1, 100), (1, 2, 200), (2, 3, 300)):
        expected[i, j] = expected[j, i] = np.exp(-((d / std) ** 2))
    np.testing.assert_allclose(dataset.adjacency, expected, rtol=1e-6)  # 1000 falls under the 0.1 cut
    (tmp_path / "bad.csv").write_text("from,to,cost\n0,9,100\n")
    with pytest.raises(ValueError, match=r"bad\.csv: line 2: node index out of range"):
        load_pems_npz(str(tmp_path / "toy.npz"), str(tmp_path / "bad.csv"))


def test_metr_la_style_h5_and_pickle(tmp_path: Path) -> None:
    pytest.importorskip("tables", reason="pandas HDF5 needs the 'tables' package")
    rng = np.random.default_rng(11)
    sensors = [700000 + i for i in range(207)]
    index = pd.date_range("2012-03-01", periods=288, freq="5min")
    frame = pd.DataFrame(rng.uniform(20, 70, size=(288, 207)), index=index, columns=sensors)
    frame.iloc[10:20, 3] = 0.0
    folder = tmp_path / "METR-LA"
    folder.mkdir()
    frame.to_hdf(folder / "metr-la.h5", key="df")
    order = [str(s) for s in reversed(sensors)]  # graph order differs from the column order
    adj = rng.uniform(size=(207, 207)).astype(np.float32)
    with open(folder / "adj_mx.pkl", "wb") as fh:
        pickle.dump([order, {s: i for i, s in enumerate(order)}, adj], fh, protocol=2)
    dataset = resolve_benchmark("metr_la", str(tmp_path))
    assert dataset.node_ids == order and dataset.freq == "5min"
    np.testing.assert_array_equal(dataset.values, frame.to_numpy(np.float32)[:, ::-1])
    np.testing.assert_array_equal(dataset.adjacency, adj)
    np.testing.assert_array_equal(dataset.timestamps, index.to_numpy().astype("datetime64[ns]"))
    assert not dataset.mask()[10:20, 206 - 3].any()
    with open(folder / "adj_mx.pkl", "wb") as fh:
        pickle.dump([order[:-1] + ["1"], {s: i for i, s in enumerate(order[:-1] + ["1"])}, adj], fh, protocol=2)
    with pytest.raises(ValueError, match="name different sensors"):
        resolve_benchmark("metr-la", str(tmp_path))


def test_parquet_matrix_and_generic_path_arguments(tmp_path: Path) -> None:
    index = pd.date_range("2023-05-01", periods=240, freq="15min")
    values = np.random.default_rng(5).normal(size=(240, 4))
    frame = pd.DataFrame(values, index=index, columns=["a", "b", "c", "d"])
    frame.to_parquet(tmp_path / "grid.parquet")
    np.savetxt(tmp_path / "grid_adj.csv", np.eye(4) + np.eye(4, k=1), delimiter=",")
    dataset = resolve_benchmark(str(tmp_path / "grid.parquet"), split="6:2:2")
    np.testing.assert_allclose(dataset.values, values.astype(np.float32))
    assert dataset.freq == "15min" and str(dataset.split) == "6:2:2" and dataset.node_ids == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(dataset.adjacency, np.eye(4) + np.eye(4, k=1))
    assert dataset.splits()["train"] == slice(0, 144)
    assert dataset.calendar_vocab == {"minute_of_hour": 60, "time_of_day": 96, "day_of_week": 7}


def test_generic_npz_roundtrip_through_save_generic(tmp_path: Path) -> None:
    source = make_synthetic_benchmark("synthetic-grid", num_nodes=6, num_steps=300, seed=3)
    data_path, adj_path = save_generic(source, str(tmp_path / "demo.npz"))
    assert adj_path == str(tmp_path / "demo_adj.csv")
    loaded = resolve_benchmark(data_path, null_value="nan")
    np.testing.assert_array_equal(loaded.values, source.values)  # NaN gaps included
    np.testing.assert_array_equal(loaded.timestamps, source.timestamps)
    np.testing.assert_allclose(loaded.adjacency, source.adjacency, rtol=1e-7)
    assert loaded.freq == "h" and loaded.node_ids == source.node_ids and str(loaded.split) == "7:1:2"
    np.savez(tmp_path / "raw.npz", data=np.zeros((10, 3, 2)))
    with pytest.raises(ValueError, match="pass freq"):
        resolve_benchmark(str(tmp_path / "raw.npz"))
    assert resolve_benchmark(str(tmp_path / "raw.npz"), freq="D").num_nodes == 3


def test_matrix_csv_needs_freq_and_names_bad_cells(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("n1,n2\n1,2\n3,x\n")
    with pytest.raises(ValueError, match="pass freq"):
        resolve_benchmark(str(tmp_path / "m.csv"))
    with pytest.raises(ValueError, match=r"m\.csv: column 'n2' row 1: non-numeric value 'x'"):
        resolve_benchmark(str(tmp_path / "m.csv"), freq="5min")


def test_ltsf_csv_through_an_fsspec_url() -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    index = pd.date_range("2020-01-01", periods=50, freq="D")
    frame = pd.DataFrame({"date": index.strftime("%Y-%m-%d"), "x": np.arange(50.0), "y": np.arange(50.0) * 2})
    with fs.open("/factost-test/series.csv", "wb") as fh:
        fh.write(frame.to_csv(index=False).encode())
    dataset = resolve_benchmark("memory://factost-test/series.csv")
    assert dataset.freq == "D" and dataset.values.shape == (50, 2)
    assert set(dataset.calendar) == {"day_of_week", "day_of_month", "month_of_year"}
    assert dataset.calendar["month_of_year"][-1] == 1  # 2020-02-19 -> February


def test_missing_files_and_unknown_names_say_what_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"PEMS08\.npz.*" + str(tmp_path)):
        resolve_benchmark("pems08", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="download=True"):
        resolve_benchmark("etth1", str(tmp_path))  # fetchable, but only when asked
    assert not any(tmp_path.iterdir())  # nothing was downloaded
    with pytest.raises(ValueError, match="unknown benchmark 'nope'.*pems03"):
        resolve_benchmark("nope", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such file"):
        resolve_benchmark(str(tmp_path / "absent.npz"))


def test_wrong_node_count_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "PEMS08"
    folder.mkdir()
    np.savez(folder / "PEMS08.npz", data=np.ones((20, 5, 3)))
    with pytest.raises(ValueError, match="5 nodes, but benchmark pems08 has 170"):
        resolve_benchmark("pems08", str(tmp_path))


def test_dataset_validates_its_parts() -> None:
    common = {"name": "t", "freq": "h", "adjacency": None, "null_value": "nan", "split": "7:1:2",
              "timestamps": None}
    with pytest.raises(ValueError, match="2 node ids for 3 nodes"):
        SpatioTemporalDataset(values=np.zeros((4, 3)), node_ids=["a", "b"], **common)
    with pytest.raises(ValueError, match="adjacency"):
        SpatioTemporalDataset(values=np.zeros((4, 2)), node_ids=["a", "b"], **{**common, "adjacency": np.eye(3)})


# --------------------------------------------------------------------------- calendar, splits, scaler


def test_calendar_features_and_vocabularies() -> None:
    stamps = pd.to_datetime(["2024-03-05 13:45", "2024-03-05 13:50", "2024-12-31 23:55"])
    features = calendar_features(stamps, "5min")
    assert features["minute_of_hour"].tolist() == [45, 50, 55]
    assert features["time_of_day"].tolist() == [165, 166, 287]
    assert features["day_of_week"].tolist() == [1, 1, 1]  # Tuesdays
    assert feature_vocab("5min") == {"minute_of_hour": 60, "time_of_day": 288, "day_of_week": 7}
    assert feature_vocab("10min")["time_of_day"] == 144
    assert feature_vocab("h") == {"time_of_day": 24, "day_of_week": 7}
    assert feature_vocab("D") == {"day_of_week": 7, "day_of_month": 31, "month_of_year": 12}
    assert feature_vocab("W") == {"day_of_month": 31, "month_of_year": 12}
    assert feature_vocab("MS") == {"month_of_year": 12}
    daily = calendar_features(pd.to_datetime(["2024-02-29", "2024-12-31"]), "D")
    assert daily["day_of_month"].tolist() == [28, 30] and daily["month_of_year"].tolist() == [1, 11]
    assert normalize_freq("H") == "h" and normalize_freq("5T") == "5min" and normalize_freq("15min") == "15min"
    with pytest.raises(ValueError, match="not a pandas frequency"):
        normalize_freq("fortnightly")


def test_split_rules() -> None:
    assert parse_split("6:2:2").boundaries(100, "5min") == {
        "train": slice(0, 60), "val": slice(60, 80), "test": slice(80, 100)}
    assert parse_split("7:1:2").boundaries(101, "h") == {
        "train": slice(0, 70), "val": slice(70, 81), "test": slice(81, 101)}
    assert parse_split("0.7,0.1,0.2") == parse_split("7:1:2")
    ettm = parse_split("ett").boundaries(69680, "15min")
    assert ettm == {"train": slice(0, 34560), "val": slice(34560, 46080), "test": slice(46080, 57600)}
    with pytest.raises(ValueError, match="needs 14400 steps"):
        parse_split("months:12/4/4").boundaries(1000, "h")
    with pytest.raises(ValueError, match="expected a ratio"):
        parse_split("sixty-forty")


def test_scaler_excludes_nulls_and_inverts() -> None:
    values = np.array([[0.0, 2.0], [4.0, 6.0]])
    scaler = ZScoreScaler.fit(values, "zero")
    assert scaler.mean == [pytest.approx(4.0)] and scaler.std == [pytest.approx(np.sqrt(8 / 3))]
    per_node = ZScoreScaler.fit(np.array([[1.0, np.nan], [3.0, 5.0], [5.0, 7.0]]), "nan", per_node=True)
    assert per_node.mean == pytest.approx([3.0, 6.0]) and per_node.std == pytest.approx([np.sqrt(8 / 3), 1.0])
    quantiles = np.random.default_rng(0).normal(size=(3, 4, 2, 5))  # [S, H, N, Q]
    back = per_node.inverse_transform(per_node.transform(quantiles, node_axis=2), node_axis=2)
    np.testing.assert_allclose(back, quantiles, atol=1e-5)
    scaled = per_node.transform(quantiles, node_axis=2)
    np.testing.assert_allclose(scaled[:, :, 1], (quantiles[:, :, 1] - 6.0) / 1.0, atol=1e-5)


# --------------------------------------------------------------------------- downloads (file:// only)


def test_download_verifies_and_records_checksums(tmp_path: Path) -> None:
    source = tmp_path / "upstream.csv"
    source.write_text("date,a\n2020-01-01,1\n")
    digest = sha256_file(source)
    dest = tmp_path / "data"
    got = download(DownloadSpec(filename="a.csv", url=source.as_uri(), sha256=digest), dest)
    assert got.read_text() == source.read_text()
    with pytest.raises(ChecksumMismatchError, match="does not match"):
        download(DownloadSpec(filename="b.csv", url=source.as_uri(), sha256="0" * 64), dest)
    assert not (dest / "b.csv").exists() and not [p for p in dest.iterdir() if p.name.startswith(".tmp")]
    unknown = DownloadSpec(filename="c.csv", url=source.as_uri())  # no known checksum: the first one is recorded
    download(unknown, dest)
    assert json.loads((dest / ".factost-checksums.json").read_text())["c.csv"] == digest
    source.write_text("date,a\n2020-01-01,2\n")  # upstream changed
    (dest / "c.csv").unlink()
    with pytest.raises(ChecksumMismatchError):
        download(unknown, dest)
    with pytest.raises(FileNotFoundError, match="by hand"):
        download(DownloadSpec(filename="d.h5", note="see the DCRNN README"), dest)


def test_registry_checksums_match_the_real_files_and_download_true_fetches(
    real_data_path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recorded sha256s are the real files'; ``download=True`` fetches (here from file:// copies) and loads."""
    from adaptation.datasets import registry

    folder = real_data_path("los_loop")
    assert registry.BENCHMARKS["etth2"].downloads[0].sha256 == sha256_file(real_data_path("ett", "ETTh2.csv"))
    spec = registry.BENCHMARKS["los-loop"]
    local = tuple(d.model_copy(update={"url": (folder / d.filename).as_uri()}) for d in spec.downloads)
    monkeypatch.setitem(registry.BENCHMARKS, "los-loop", spec.model_copy(update={"downloads": local}))
    with pytest.raises(FileNotFoundError, match="download=True"):
        resolve_benchmark("los-loop", str(tmp_path))
    dataset = resolve_benchmark("los-loop", str(tmp_path), download=True)  # sha256 verified on the way
    assert (tmp_path / "los-loop" / "los_speed.csv").exists() and dataset.values.shape == (2016, 207)


def test_unreadable_or_pickled_npz_is_refused_with_the_file_named(tmp_path: Path) -> None:
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"broken\.npz: not a readable numeric \.npz"):
        resolve_benchmark(str(tmp_path / "broken.npz"), freq="h")
    np.savez(tmp_path / "objects.npz", data=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ValueError, match=r"objects\.npz: holds object arrays"):
        resolve_benchmark(str(tmp_path / "objects.npz"), freq="h")
