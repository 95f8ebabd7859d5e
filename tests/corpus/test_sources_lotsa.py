"""The LOTSA connector on folders written like ``datasets.save_to_disk`` (Arrow stream shards), files, parquet."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpus.errors import MalformedInputError

UNI = pa.schema(
    [
        ("item_id", pa.string()),
        ("start", pa.timestamp("s")),
        ("freq", pa.string()),
        ("target", pa.list_(pa.float32())),
    ],
    metadata={"huggingface": json.dumps({"info": {"features": {}}})},
)
MULTI = pa.schema(
    [
        ("item_id", pa.string()),
        ("start", pa.timestamp("s")),
        ("freq", pa.string()),
        ("target", pa.list_(pa.list_(pa.float32()))),
        ("past_feat_dynamic_real", pa.list_(pa.list_(pa.float32()))),
    ]
)


def random_rows(n: int, seed: int, dims: int = 0) -> list[dict]:
    """Rows with fixed-seed float32 targets of varying length, some values null."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        length = int(rng.integers(5, 40))
        shape = (dims, length) if dims else (length,)
        values = rng.normal(size=shape).astype(np.float32)
        target = values.tolist()
        if not dims:
            target[1] = None  # a missing observation
        row = {"item_id": f"s{seed}_{k}", "start": datetime(2020, 1, 1 + k), "freq": "H", "target": target}
        if dims:
            row["past_feat_dynamic_real"] = [[0.0] * length]
        rows.append(row)
    return rows


def write_hf_folder(folder: Path | str, shards: list[list[dict]], schema: pa.Schema, batch_rows: int = 3) -> None:
    """Shards as Arrow IPC streams plus dataset_info.json and state.json, as ``save_to_disk`` lays them out."""
    fs, root = fsspec.core.url_to_fs(str(folder))
    fs.makedirs(root, exist_ok=True)
    names = [f"data-{k:05d}-of-{len(shards):05d}.arrow" for k in range(len(shards))]
    for name, rows in zip(names, shards, strict=True):
        table = pa.Table.from_pylist(rows, schema=schema)
        with fs.open(f"{root}/{name}", "wb") as fh, pa.ipc.new_stream(fh, schema) as writer:
            for batch in table.to_batches(max_chunksize=batch_rows):
                writer.write_batch(batch)
    with fs.open(f"{root}/state.json", "w") as fh:
        json.dump({"_data_files": [{"filename": n} for n in names], "_fingerprint": "x", "_split": None}, fh)
    with fs.open(f"{root}/dataset_info.json", "w") as fh:
        json.dump({"features": {name: {} for name in schema.names}}, fh)


def expected_values(target: list) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in target], dtype=np.float32)


def test_univariate_hf_folder_with_two_stream_shards(tmp_path, read_source):
    shards = [random_rows(7, seed=1), random_rows(4, seed=2)]
    write_hf_folder(tmp_path / "ds", shards, UNI)
    series = read_source("lotsa", [tmp_path / "ds"])
    rows = shards[0] + shards[1]
    assert [s.item_id for s in series] == [r["item_id"] for r in rows]
    for s, row in zip(series, rows, strict=True):
        assert s.target.dtype == np.float32
        np.testing.assert_array_equal(s.target, expected_values(row["target"]))
        assert (s.start, s.freq, s.attributes) == (row["start"], "h", {})
    assert np.isnan(series[0].target[1])
    assert series[8].input == f"{tmp_path / 'ds' / 'data-00001-of-00002.arrow'}:item s2_1"


@pytest.mark.parametrize("fixed_size", [False, True], ids=["list-of-lists", "fixed-size-list-of-lists"])
def test_multivariate_rows_split_into_one_series_per_variate(tmp_path, read_source, fixed_size):
    rows = random_rows(3, seed=3, dims=4)
    schema = MULTI
    if fixed_size:  # datasets' Sequence(Sequence(float32), length=D)
        schema = MULTI.set(3, pa.field("target", pa.list_(pa.list_(pa.float32()), 4)))
    write_hf_folder(tmp_path / "mv", [rows], schema)
    series = read_source("lotsa", [tmp_path / "mv" / "data-00000-of-00001.arrow"])  # one shard file
    assert [s.item_id for s in series] == [f"s3_{k}_dim{d}" for k in range(3) for d in range(4)]
    for s in series:
        k, d = (int(x) for x in s.item_id.removeprefix("s3_").split("_dim"))
        np.testing.assert_array_equal(s.target, np.array(rows[k]["target"][d], dtype=np.float32))
        assert s.attributes == {
            "ignored_columns": ["past_feat_dynamic_real"],
            "parent_item_id": f"s3_{k}",
            "variate": d,
            "n_variates": 4,
        }


def test_arrow_file_format_and_parquet(tmp_path, read_source):
    rows = random_rows(5, seed=4)
    table = pa.Table.from_pylist(rows, schema=UNI)
    with pa.OSFile(str(tmp_path / "shard.arrow"), "wb") as sink, pa.ipc.new_file(sink, UNI) as writer:
        writer.write_table(table, max_chunksize=2)
    pq.write_table(table, tmp_path / "shard.parquet", row_group_size=2)
    from_file = read_source("lotsa", [tmp_path / "shard.arrow"])
    from_parquet = read_source("lotsa", [tmp_path / "shard.parquet"], batch_size=2)
    for a, b, row in zip(from_file, from_parquet, rows, strict=True):
        assert a.item_id == b.item_id == row["item_id"] and a.start == b.start == row["start"]
        np.testing.assert_array_equal(a.target, expected_values(row["target"]))
        np.testing.assert_array_equal(b.target, expected_values(row["target"]))


def test_remote_folder_through_fsspec(memory_root, read_source):
    rows = random_rows(4, seed=5)
    write_hf_folder(f"{memory_root}/lotsa/ds", [rows[:2], rows[2:]], UNI)
    series = read_source("lotsa", [f"{memory_root}/lotsa/ds"])
    assert [s.item_id for s in series] == [r["item_id"] for r in rows]
    np.testing.assert_array_equal(series[3].target, expected_values(rows[3]["target"]))


def test_null_target_and_freq_override(tmp_path, read_source):
    rows = random_rows(2, seed=6)
    rows[1]["target"] = None
    rows[0]["freq"] = None
    write_hf_folder(tmp_path / "ds", [rows], UNI)
    first, second = read_source("lotsa", [tmp_path / "ds"])
    assert first.freq is None and second.target.size == 0  # validation quarantines the empty series later
    assert {s.freq for s in read_source("lotsa", [tmp_path / "ds"], freq="15T")} == {"15min"}


def test_missing_target_column_and_bad_types_are_named(tmp_path, read_source):
    table = pa.table({"item_id": ["a"], "values": [[1.0]]})
    pq.write_table(table, tmp_path / "x.parquet")
    with pytest.raises(MalformedInputError, match=r"x.parquet: column target: missing column; columns are"):
        read_source("lotsa", [tmp_path / "x.parquet"])
    pq.write_table(pa.table({"item_id": ["a"], "target": [["1"]]}), tmp_path / "y.parquet")
    with pytest.raises(MalformedInputError, match=r"y.parquet: column target: expected list<float>"):
        read_source("lotsa", [tmp_path / "y.parquet"])


def test_unknown_freq_names_the_item(tmp_path, read_source):
    rows = random_rows(1, seed=8)
    rows[0]["freq"] = "fortnightly"
    write_hf_folder(tmp_path / "ds", [rows], UNI)
    with pytest.raises(MalformedInputError, match=r"data-00000-of-00001.arrow: item s8_0 freq: unknown frequency"):
        read_source("lotsa", [tmp_path / "ds"])


def test_not_arrow_is_an_error(tmp_path, read_source):
    (tmp_path / "data-00000-of-00001.arrow").write_bytes(b"this is not arrow at all")
    with pytest.raises(MalformedInputError, match="not a readable Arrow IPC file"):
        read_source("lotsa", [tmp_path])
