"""Readers for every benchmark file format, each returning a :class:`SpatioTemporalDataset`.

Formats (the shapes they take in the wild):

- PEMS03/04/07/08: ``.npz`` with ``data [T, N, C]`` (flow is channel 0) + a distance file, either the edge
  list ``from,to,cost`` (PEMS03 names raw sensor ids, mapped through ``PEMS03.txt``) or a dense matrix;
- METR-LA / PEMS-BAY: pandas HDF5 (key ``df`` / ``speed``, DatetimeIndex, one column per sensor) + the DCRNN
  pickle ``[sensor_ids, sensor_id_to_ind, adj_mx]`` read with the restricted unpickler;
- LTSF csv (ETT, Electricity, Weather, Exchange): a ``date`` column then one column per node;
- a plain matrix csv (``los_speed.csv``): a header row of node ids, no timestamps;
- generic ``.npz`` (``data [T, N]`` or ``[T, N, C]``, optional ``timestamps``/``node_ids``) and parquet
  matrices, each with an optional dense ``<stem>_adj.csv`` beside it (what :func:`save_generic` writes).

Every path may be an fsspec URL. Bad input raises ``ValueError`` naming the file and the reason.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from adaptation.datasets.calendar import index_timestamps, step_seconds
from adaptation.datasets.dataset import SpatioTemporalDataset
from adaptation.datasets.graph import (
    gaussian_kernel_adjacency,
    id_text,
    read_dcrnn_pickle,
    read_distance_matrix,
    read_id_list,
    read_weight_matrix,
)
from adaptation.datasets.splits import NullValue, SplitRule, parse_split
from infra.freq import guess_freq, normalize_freq
from infra.storage import filesystem, is_local, open_input

log = logging.getLogger(__name__)

TIME_COLUMNS = ("date", "datetime", "timestamp", "time")
DEFAULT_GENERIC_SPLIT = "7:1:2"
ADJ_SUFFIX = "_adj.csv"


def _readable(path: str, storage_options: dict[str, Any] | None) -> str | io.BytesIO:
    """A local path as is (numpy/pandas read it without a copy), else the remote or compressed bytes."""
    fs, fpath = filesystem(path, storage_options)
    if is_local(fs) and not fpath.lower().endswith((".gz", ".bz2", ".xz", ".zip")):
        if not os.path.isfile(fpath):
            raise FileNotFoundError(f"{path}: no such file")
        return fpath
    with open_input(path, storage_options) as fh:
        return io.BytesIO(fh.read())


@contextmanager
def _open_npz(path: str, storage_options: dict[str, Any] | None) -> Iterator[Any]:
    """``np.load`` without pickle; an unreadable archive or an object array is an error naming the file."""
    try:
        archive = np.load(_readable(path, storage_options), allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable numeric .npz file: {exc}") from None
    if not hasattr(archive, "files"):
        raise ValueError(f"{path}: a .npy array, not an .npz archive")
    try:
        yield archive
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ValueError(f"{path}: holds object arrays (pickled Python objects); refused") from None
        raise
    finally:
        archive.close()


def _read_csv(path: str, storage_options: dict[str, Any] | None, **kwargs: Any) -> pd.DataFrame:
    try:
        return pd.read_csv(_readable(path, storage_options), **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable csv: {exc}") from None


def _exists(path: str, storage_options: dict[str, Any] | None = None) -> bool:
    fs, fpath = filesystem(path, storage_options)
    return bool(fs.exists(fpath))


def _stem_path(path: str) -> str:
    base, _ = posixpath.splitext(path) if "://" in path else os.path.splitext(path)
    return base


def _infer_freq(path: str, index: pd.DatetimeIndex, freq: str | None) -> str:
    """The declared frequency, or the one the timestamps show (pandas' guess, else the median step)."""
    if freq is not None:
        return normalize_freq(freq)
    if len(index) < 3:
        raise ValueError(f"{path}: too few timestamps to infer the frequency; pass freq")
    steps = np.diff(index.to_numpy().astype("datetime64[ns]"))
    if (steps == steps[0]).all() and steps[0] > np.timedelta64(0, "ns"):  # a fixed step: no guessing needed
        return _freq_of_step(pd.Timedelta(steps[0]))
    guess = guess_freq(index)
    if guess is None:  # gaps: take the typical step
        return _freq_of_step(pd.Timedelta(np.median(steps.astype(np.int64)), unit="ns"))
    return normalize_freq(guess)


def _freq_of_step(step: pd.Timedelta) -> str:
    """Alias of a fixed step; whole days are ``D`` (pandas would say ``24h``)."""
    if step % pd.Timedelta(days=1) == pd.Timedelta(0):
        days = step // pd.Timedelta(days=1)
        return "D" if days == 1 else f"{days}D"
    return normalize_freq(to_offset(step).freqstr)


def _check_regular(path: str, index: pd.DatetimeIndex, freq: str) -> int:
    """Count steps whose spacing differs from ``freq`` (gaps, duplicates); they are reported, not repaired."""
    seconds = step_seconds(freq)
    if seconds is None or len(index) < 2:
        return 0
    diffs = np.diff(index.to_numpy().astype("datetime64[ns]").astype(np.int64)) / 1e9
    irregular = int((np.abs(diffs - seconds) > 1e-6).sum())
    if irregular:
        log.warning("%s: %d of %d steps are not %s apart (gaps or duplicates)", path, irregular, len(diffs), freq)
    return irregular


def _numeric(frame: pd.DataFrame, path: str) -> np.ndarray:
    """Float matrix of ``frame``; a non-numeric cell names its column. Empty cells become NaN."""
    try:
        return frame.to_numpy(dtype=np.float64)
    except (ValueError, TypeError):
        for column in frame.columns:
            converted = pd.to_numeric(frame[column], errors="coerce")
            bad = converted.isna() & frame[column].notna()
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise ValueError(
                    f"{path}: column {column!r} row {row}: non-numeric value {frame[column].iloc[row]!r}"
                ) from None
        raise


def _build(
    name: str,
    values: np.ndarray,
    timestamps: np.ndarray | None,
    freq: str,
    adjacency: np.ndarray | None,
    node_ids: list[str],
    null_value: NullValue,
    split: str | SplitRule,
    scaler_per_node: bool,
    metadata: dict[str, Any],
) -> SpatioTemporalDataset:
    return SpatioTemporalDataset(
        name=name,
        values=values.astype(np.float32),
        timestamps=timestamps,
        freq=freq,
        adjacency=adjacency,
        node_ids=node_ids,
        null_value=null_value,
        split=parse_split(split),
        scaler_per_node=scaler_per_node,
        metadata=metadata,
    )


def load_pems_npz(
    data_path: str,
    distance_path: str | None = None,
    id_list_path: str | None = None,
    *,
    name: str | None = None,
    freq: str = "5min",
    start: str | None = None,
    channel: int = 0,
    null_value: NullValue = "zero",
    split: str | SplitRule = "6:2:2",
    scaler_per_node: bool = False,
    symmetric: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> SpatioTemporalDataset:
    """PEMS0X: ``data [T, N, C]`` channel ``channel`` (0 = flow), adjacency from the distance file (kernel)."""
    values = _read_npz_array(data_path, storage_options)
    values = _select_channel(values, channel, data_path)
    nodes = values.shape[1]
    node_ids = read_id_list(id_list_path, storage_options) if id_list_path else None
    if node_ids is not None and len(node_ids) != nodes:
        raise ValueError(f"{id_list_path}: {len(node_ids)} sensor ids, but {data_path} has {nodes} nodes")
    adjacency = None
    if distance_path:
        dist = read_distance_matrix(distance_path, num_nodes=nodes, node_ids=node_ids, symmetric=symmetric,
                                    storage_options=storage_options)
        if dist.shape[0] != nodes:
            raise ValueError(f"{distance_path}: {dist.shape[0]} nodes, but {data_path} has {nodes}")
        adjacency = gaussian_kernel_adjacency(dist)
    timestamps = index_timestamps(values.shape[0], freq, start) if start else None
    return _build(
        name or _basename(data_path), values, timestamps, freq, adjacency,
        node_ids or [str(i) for i in range(nodes)], null_value, split, scaler_per_node,
        {"source": data_path, "graph": distance_path, "channel": channel},
    )


def _basename(path: str) -> str:
    return posixpath.basename(_stem_path(path).rstrip("/"))


def _read_npz_array(path: str, storage_options: dict[str, Any] | None, key: str = "data") -> np.ndarray:
    with _open_npz(path, storage_options) as archive:
        if key in archive.files:
            return np.asarray(archive[key])
        if len(archive.files) == 1:
            return np.asarray(archive[archive.files[0]])
        raise ValueError(f"{path}: no array {key!r} in the npz (it holds {archive.files})")


def _select_channel(values: np.ndarray, channel: int, path: str) -> np.ndarray:
    if values.ndim == 3:
        if not 0 <= channel < values.shape[2]:
            raise ValueError(f"{path}: channel {channel} out of range, the data has {values.shape[2]} channels")
        values = values[:, :, channel]
    if values.ndim != 2:
        raise ValueError(f"{path}: expected data [T, N] or [T, N, C], got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"{path}: data has non-numeric dtype {values.dtype}")
    return values.astype(np.float32)


def _local_copy(path: str, storage_options: dict[str, Any] | None, tmpdir: str) -> str:
    """HDF5 needs a real file: remote inputs are copied into ``tmpdir`` first."""
    fs, fpath = filesystem(path, storage_options)
    if is_local(fs):
        return fpath
    local = os.path.join(tmpdir, posixpath.basename(fpath))
    fs.get(fpath, local)
    return local


def load_dcrnn_h5(
    data_path: str,
    graph_path: str | None = None,
    *,
    key: str | None = None,
    name: str | None = None,
    freq: str | None = None,
    null_value: NullValue = "zero",
    split: str | SplitRule = "6:2:2",
    scaler_per_node: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> SpatioTemporalDataset:
    """METR-LA / PEMS-BAY: HDF5 frame (time x sensors) + optional DCRNN ``adj_mx.pkl`` fixing node order."""
    with tempfile.TemporaryDirectory(prefix="factost-h5-") as tmpdir:
        local = _local_copy(data_path, storage_options, tmpdir)
        try:
            with pd.HDFStore(local, mode="r") as store:
                keys = [k.lstrip("/") for k in store.keys()]
                if key is None:
                    if len(keys) != 1:
                        raise ValueError(f"{data_path}: pass key=; the file holds {keys}")
                    key = keys[0]
                if key not in keys:
                    raise ValueError(f"{data_path}: no key {key!r} in the HDF5 file (it holds {keys})")
                frame = store[key]
        except ImportError as exc:
            raise ImportError(f"{data_path}: reading HDF5 needs the 'tables' package: {exc}") from exc
        except (OSError, TypeError) as exc:
            raise ValueError(f"{data_path}: not a readable pandas HDF5 file: {exc}") from exc
    if not isinstance(frame, pd.DataFrame) or not isinstance(frame.index, pd.DatetimeIndex):
        raise ValueError(f"{data_path}: key {key!r} must be a DataFrame with a DatetimeIndex")
    columns = [id_text(c) for c in frame.columns]
    values = _numeric(frame, data_path)
    adjacency = None
    metadata: dict[str, Any] = {"source": data_path, "graph": graph_path, "key": key}
    if graph_path:
        ids, id_to_ind, adjacency = read_dcrnn_pickle(graph_path, storage_options)
        if set(ids) != set(columns):
            missing = sorted(set(ids) - set(columns))[:5]
            extra = sorted(set(columns) - set(ids))[:5]
            raise ValueError(
                f"{data_path} and {graph_path} name different sensors: in the pickle only {missing}, "
                f"in the data only {extra}"
            )
        order = sorted(ids, key=lambda s: id_to_ind[s])  # graph row i is sensor order[i]
        position = {c: i for i, c in enumerate(columns)}
        values = values[:, [position[s] for s in order]]
        columns = order
    index = frame.index
    freq = _infer_freq(data_path, index, freq)
    metadata["irregular_steps"] = _check_regular(data_path, index, freq)
    return _build(name or _basename(data_path), values, index.to_numpy(), freq, adjacency, columns,
                  null_value, split, scaler_per_node, metadata)


def load_ltsf_csv(
    data_path: str,
    adjacency_path: str | None = None,
    *,
    name: str | None = None,
    freq: str | None = None,
    null_value: NullValue = "nan",
    split: str | SplitRule = "7:1:2",
    scaler_per_node: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> SpatioTemporalDataset:
    """LTSF csv: a ``date`` column, then one column per node (every column is a node, "M" setting)."""
    frame = _read_csv(data_path, storage_options)
    if frame.shape[1] < 2 or str(frame.columns[0]).strip().lower() not in TIME_COLUMNS:
        raise ValueError(f"{data_path}: an LTSF csv starts with a 'date' column, got {list(frame.columns[:3])}")
    try:
        index = pd.DatetimeIndex(pd.to_datetime(frame.iloc[:, 0]))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{data_path}: column {frame.columns[0]!r} is not parseable as timestamps: {exc}") from None
    values = _numeric(frame.iloc[:, 1:], data_path)
    node_ids = [str(c) for c in frame.columns[1:]]
    freq = _infer_freq(data_path, index, freq)
    adjacency = read_weight_matrix(adjacency_path, len(node_ids), storage_options) if adjacency_path else None
    metadata = {"source": data_path, "graph": adjacency_path,
                "irregular_steps": _check_regular(data_path, index, freq)}
    return _build(name or _basename(data_path), values, index.to_numpy(), freq, adjacency, node_ids,
                  null_value, split, scaler_per_node, metadata)


def load_matrix_csv(
    data_path: str,
    adjacency_path: str | None = None,
    *,
    freq: str,
    name: str | None = None,
    start: str | None = None,
    null_value: NullValue = "nan",
    split: str | SplitRule = DEFAULT_GENERIC_SPLIT,
    scaler_per_node: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> SpatioTemporalDataset:
    """A time x nodes csv with a header row of node ids and no timestamps (``los_speed.csv``)."""
    frame = _read_csv(data_path, storage_options)
    if frame.empty:
        raise ValueError(f"{data_path}: no rows")
    values = _numeric(frame, data_path)
    node_ids = [str(c) for c in frame.columns]
    adjacency = read_weight_matrix(adjacency_path, len(node_ids), storage_options) if adjacency_path else None
    timestamps = index_timestamps(values.shape[0], freq, start) if start else None
    return _build(name or _basename(data_path), values, timestamps, freq, adjacency, node_ids, null_value,
                  split, scaler_per_node, {"source": data_path, "graph": adjacency_path})


def load_generic_npz(
    data_path: str,
    adjacency_path: str | None = None,
    *,
    freq: str | None = None,
    name: str | None = None,
    channel: int = 0,
    null_value: NullValue = "nan",
    split: str | SplitRule = DEFAULT_GENERIC_SPLIT,
    scaler_per_node: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> SpatioTemporalDataset:
    """``data [T, N]`` / ``[T, N, C]``; optional ``timestamps`` (int64 ns), ``node_ids``, ``freq`` arrays."""
    with _open_npz(data_path, storage_options) as archive:
        files = set(archive.files)
        if "data" not in files:
            if len(files) != 1:
                raise ValueError(f"{data_path}: no 'data' array in the npz (it holds {sorted(files)})")
            data = archive[next(iter(files))]
        else:
            data = archive["data"]
        stamps = archive["timestamps"] if "timestamps" in files else None
        ids = archive["node_ids"] if "node_ids" in files else None
        stored_freq = str(archive["freq"]) if "freq" in files else None
    values = _select_channel(np.asarray(data), channel, data_path)
    timestamps = None
    if stamps is not None:
        timestamps = np.asarray(stamps).astype("datetime64[ns]")
        if timestamps.shape != (values.shape[0],):
            raise ValueError(f"{data_path}: {timestamps.shape} timestamps for {values.shape[0]} steps")
    node_ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(values.shape[1])]
    freq = freq or stored_freq
    if freq is None:
        if timestamps is None:
            raise ValueError(f"{data_path}: no timestamps and no stored frequency in the npz; pass freq")
        freq = _infer_freq(data_path, pd.DatetimeIndex(timestamps), None)
    adjacency = read_weight_matrix(adjacency_path, values.shape[1], storage_options) if adjacency_path else None
    return _build(name or _basename(data_path), values, timestamps, freq, adjacency, node_ids, null_value,
                  split, scaler_per_node, {"source": data_path, "graph": adjacency_path})


def load_parquet_matrix(
    data_path: str,
    adjacency_path: str | None = None,
    *,
    freq: str | None = None,
    name: str | None = None,
    null_value: NullValue = "nan",
    split: str | SplitRule = DEFAULT_GENERIC_SPLIT,
    scaler_per_node: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> SpatioTemporalDataset:
    """A parquet table time x nodes; timestamps from a DatetimeIndex or a ``date``/``timestamp`` column."""
    try:
        frame = pd.read_parquet(_readable(data_path, storage_options))
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise ValueError(f"{data_path}: not a readable parquet file: {exc}") from exc
    index: pd.DatetimeIndex | None = frame.index if isinstance(frame.index, pd.DatetimeIndex) else None
    time_cols = [c for c in frame.columns if str(c).strip().lower() in TIME_COLUMNS]
    if index is None and time_cols:
        index = pd.DatetimeIndex(pd.to_datetime(frame[time_cols[0]]))
    frame = frame.drop(columns=time_cols)
    if frame.shape[1] == 0 or frame.shape[0] == 0:
        raise ValueError(f"{data_path}: no node columns or no rows")
    values = _numeric(frame, data_path)
    node_ids = [str(c) for c in frame.columns]
    if freq is None:
        if index is None:
            raise ValueError(f"{data_path}: no timestamps in the parquet file; pass freq")
        freq = _infer_freq(data_path, index, None)
    adjacency = read_weight_matrix(adjacency_path, len(node_ids), storage_options) if adjacency_path else None
    timestamps = index.to_numpy() if index is not None else None
    return _build(name or _basename(data_path), values, timestamps, freq, adjacency, node_ids, null_value,
                  split, scaler_per_node, {"source": data_path, "graph": adjacency_path})


def sibling_adjacency(data_path: str, storage_options: dict[str, Any] | None = None) -> str | None:
    """``<stem>_adj.csv`` beside a generic data file, if present."""
    candidate = _stem_path(data_path) + ADJ_SUFFIX
    return candidate if _exists(candidate, storage_options) else None


def load_generic(
    data_path: str,
    *,
    freq: str | None = None,
    split: str | SplitRule | None = None,
    null_value: NullValue | None = None,
    name: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> SpatioTemporalDataset:
    """Any single data file by extension: ``.npz``, ``.parquet``, ``.csv`` (LTSF if it starts with ``date``,
    else a matrix), ``.h5`` (pandas HDF5, zeros missing unless ``null_value`` says otherwise); a
    ``<stem>_adj.csv`` beside it is the adjacency. Other files default to NaN-missing and a 7:1:2 split."""
    if not _exists(data_path, storage_options):
        raise FileNotFoundError(f"{data_path}: no such file")
    lower = data_path.lower()
    adjacency_path = sibling_adjacency(data_path, storage_options)
    common: dict[str, Any] = {
        "name": name,
        "null_value": null_value or "nan",
        "split": split or DEFAULT_GENERIC_SPLIT,
        "storage_options": storage_options,
    }
    if lower.endswith(".npz"):
        return load_generic_npz(data_path, adjacency_path, freq=freq, **common)
    if lower.endswith((".parquet", ".pq")):
        return load_parquet_matrix(data_path, adjacency_path, freq=freq, **common)
    if lower.endswith((".h5", ".hdf5")):
        common.pop("null_value")
        return load_dcrnn_h5(data_path, None, freq=freq, null_value=null_value or "zero", **common)
    if lower.endswith((".csv", ".csv.gz")):
        with open_input(data_path, storage_options) as fh:
            header = fh.readline().decode("utf-8-sig").split(",")
        if header and header[0].strip().lower() in TIME_COLUMNS:
            return load_ltsf_csv(data_path, adjacency_path, freq=freq, **common)
        if freq is None:
            raise ValueError(f"{data_path}: a matrix csv has no timestamps; pass freq")
        return load_matrix_csv(data_path, adjacency_path, freq=freq, **common)
    raise ValueError(f"{data_path}: unknown data file type (expected .npz, .parquet, .csv or .h5)")


def save_generic(dataset: SpatioTemporalDataset, data_path: str) -> tuple[str, str | None]:
    """Write ``data [T, N]`` (+ timestamps, node ids, freq) as npz and the adjacency as ``<stem>_adj.csv``.

    The pair reads back with :func:`load_generic`; no pickle is involved (``allow_pickle=False`` on read).
    """
    if not data_path.lower().endswith(".npz"):
        raise ValueError(f"{data_path}: save_generic writes an .npz file")
    fs, fpath = filesystem(data_path)
    fs.makedirs(posixpath.dirname(fpath) if not is_local(fs) else os.path.dirname(fpath), exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "data": dataset.values,
        "node_ids": np.asarray(dataset.node_ids, dtype=str),
        "freq": np.asarray(dataset.freq),
    }
    if dataset.timestamps is not None:
        arrays["timestamps"] = dataset.timestamps.astype("datetime64[ns]").astype(np.int64)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    with fs.open(fpath, "wb") as fh:
        fh.write(buffer.getvalue())
    adj_path = None
    if dataset.adjacency is not None:
        adj_path = _stem_path(data_path) + ADJ_SUFFIX
        text = io.StringIO()
        np.savetxt(text, dataset.adjacency, delimiter=",", fmt="%.8g")
        afs, apath = filesystem(adj_path)
        with afs.open(apath, "wb") as fh:
            fh.write(text.getvalue().encode())
    return data_path, adj_path
