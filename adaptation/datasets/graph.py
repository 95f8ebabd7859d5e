"""Sensor graphs: distance files (PEMS edge lists, dense matrices), weight csvs and DCRNN pickles.

Adjacency from distances follows DCRNN (``gen_adj_mx.get_adjacency_matrix``): ``w_ij = exp(-(d_ij / s)^2)``
where ``s`` is the standard deviation of the listed distances between distinct sensors, and weights below
0.1 are set to 0. Pairs not listed have no edge. Two choices the DCRNN script leaves to its input file are
fixed here: the diagonal is a self-loop of weight 1 (DCRNN's METR-LA distance file lists each sensor at distance 0 to
itself, PEMS files do not), and edges keep the direction the file gives (``symmetric=True`` adds the
reverse edge, as some PEMS codebases do).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd

from adaptation.datasets.pickle_safe import load_pickle_restricted
from infra.storage import open_input

KERNEL_THRESHOLD = 0.1
EDGE_FROM_NAMES = ("from", "source", "src", "i")
EDGE_TO_NAMES = ("to", "target", "dst", "j")


def gaussian_kernel_adjacency(
    distances: np.ndarray, threshold: float = KERNEL_THRESHOLD, self_loops: bool = True
) -> np.ndarray:
    """DCRNN thresholded Gaussian kernel of a distance matrix with ``inf`` where there is no edge."""
    dist = np.asarray(distances, dtype=np.float64)
    if dist.ndim != 2 or dist.shape[0] != dist.shape[1]:
        raise ValueError(f"distance matrix must be square, got shape {dist.shape}")
    off_diagonal = ~np.eye(dist.shape[0], dtype=bool)
    finite = dist[np.isfinite(dist) & off_diagonal]
    if (dist[np.isfinite(dist)] < 0).any():
        raise ValueError("distance matrix has negative distances")
    std = float(finite.std()) if finite.size else 0.0
    if std == 0.0:
        std = 1.0  # all listed distances equal (or none): every listed edge gets weight 1
    with np.errstate(over="ignore", under="ignore"):
        adjacency = np.exp(-np.square(dist / std))
    adjacency[~np.isfinite(dist)] = 0.0
    adjacency[adjacency < threshold] = 0.0
    if self_loops:
        np.fill_diagonal(adjacency, 1.0)
    return adjacency.astype(np.float32)


def _read_text(path: str, storage_options: dict[str, Any] | None) -> str:
    with open_input(path, storage_options) as fh:
        return fh.read().decode("utf-8-sig")


def read_id_list(path: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Sensor ids one per line (``PEMS03.txt``): line order is the node order of the npz."""
    ids = [line.strip() for line in _read_text(path, storage_options).splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"{path}: no sensor ids")
    return ids


def _is_edge_list(frame: pd.DataFrame) -> bool:
    cols = [str(c).strip().lower() for c in frame.columns]
    return len(cols) == 3 and cols[0] in EDGE_FROM_NAMES and cols[1] in EDGE_TO_NAMES


def read_distance_matrix(
    path: str,
    num_nodes: int | None = None,
    node_ids: list[str] | None = None,
    symmetric: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> np.ndarray:
    """Distances ``[N, N]`` (``inf`` = no edge) from an edge list ``from,to,cost`` or a dense matrix csv.

    Edge list: ids are node indices ``0..N-1`` unless ``node_ids`` maps raw sensor ids (PEMS03) to positions.
    Dense matrix (optionally with an index column, like ``PEMS08_distance_matrix.csv``): off-diagonal zeros
    mean "no edge", since a zero road distance between two distinct sensors does not occur in these files.
    """
    text = _read_text(path, storage_options)
    frame = pd.read_csv(io.StringIO(text))
    if _is_edge_list(frame):
        if num_nodes is None and node_ids is None:
            raise ValueError(f"{path}: an edge list needs the node count (or the id list) to size the matrix")
        size = len(node_ids) if node_ids is not None else int(num_nodes or 0)
        dist = np.full((size, size), np.inf)
        position = {str(s): i for i, s in enumerate(node_ids)} if node_ids is not None else None
        for row_number, (src, dst, cost) in enumerate(frame.itertuples(index=False, name=None), start=2):
            try:
                if position is not None:
                    i, j = position[id_text(src)], position[id_text(dst)]
                else:
                    i, j = int(src), int(dst)
                value = float(cost)
            except (KeyError, ValueError) as exc:
                raise ValueError(f"{path}: line {row_number}: bad edge {src},{dst},{cost}: {exc!r}") from None
            if not (0 <= i < size and 0 <= j < size):
                raise ValueError(
                    f"{path}: line {row_number}: node index out of range 0..{size - 1}: {src},{dst} "
                    "(an edge list of raw sensor ids needs the id list file, e.g. PEMS03.txt)"
                )
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{path}: line {row_number}: distance {cost} is not a non-negative number")
            dist[i, j] = value
            if symmetric:
                dist[j, i] = value
        return dist
    matrix = _dense_matrix(frame, path)
    if num_nodes is not None and matrix.shape[0] != num_nodes:
        raise ValueError(f"{path}: distance matrix has {matrix.shape[0]} nodes, expected {num_nodes}")
    dist = np.where(matrix > 0, matrix, np.inf)
    np.fill_diagonal(dist, np.where(np.diag(matrix) > 0, np.diag(matrix), 0.0))
    if symmetric:
        dist = np.minimum(dist, dist.T)
    return dist


def id_text(value: Any) -> str:
    """A sensor id as text: ``400001.0`` (pandas read an int column as float) and ``400001`` are one sensor."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bytes):
        return value.decode("latin1")
    return str(value).strip()


def _dense_matrix(frame: pd.DataFrame, path: str) -> np.ndarray:
    """A square numeric matrix, dropping a leading index column when the frame is N x (N + 1)."""
    rows, cols = frame.shape
    if cols == rows + 1:
        frame = frame.iloc[:, 1:]
    elif cols != rows:
        raise ValueError(f"{path}: expected a square matrix (optionally with an index column), got {rows}x{cols}")
    try:
        matrix = frame.to_numpy(dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: matrix has non-numeric entries: {exc}") from None
    if not np.isfinite(matrix).all():
        raise ValueError(f"{path}: matrix has missing or non-finite entries")
    return matrix


def read_weight_matrix(
    path: str, num_nodes: int | None = None, storage_options: dict[str, Any] | None = None
) -> np.ndarray:
    """A dense adjacency of weights (``los_adj.csv``, ``<stem>_adj.csv``), with or without a header row."""
    text = _read_text(path, storage_options)
    frame = pd.read_csv(io.StringIO(text), header=None)
    first = frame.iloc[0].tolist() if len(frame) else []
    if any(pd.isna(v) or not _is_number(str(v)) for v in first):
        frame = pd.read_csv(io.StringIO(text))  # a header row of node ids (and maybe an index column)
    elif frame.shape[0] == frame.shape[1] + 1:
        frame = frame.iloc[1:]  # a header row of numeric node ids
    matrix = _dense_matrix(frame, path)
    if num_nodes is not None and matrix.shape[0] != num_nodes:
        raise ValueError(f"{path}: adjacency has {matrix.shape[0]} nodes, the data has {num_nodes}")
    if (matrix < 0).any():
        raise ValueError(f"{path}: adjacency has negative weights")
    return matrix.astype(np.float32)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_dcrnn_pickle(
    path: str, storage_options: dict[str, Any] | None = None
) -> tuple[list[str], dict[str, int], np.ndarray]:
    """``[sensor_ids, sensor_id_to_ind, adj_mx]`` from a DCRNN ``adj_mx.pkl`` via the restricted unpickler."""
    obj = load_pickle_restricted(path, storage_options)
    if not isinstance(obj, (list, tuple)) or len(obj) != 3:
        raise ValueError(f"{path}: expected [sensor_ids, sensor_id_to_ind, adj_mx], got {type(obj).__name__}")
    sensor_ids, id_to_ind, adj = obj
    if not isinstance(sensor_ids, (list, tuple)) or not isinstance(id_to_ind, dict):
        raise ValueError(f"{path}: sensor_ids must be a list and sensor_id_to_ind a dict")
    adj = np.asarray(adj, dtype=np.float32)
    ids = [_decode(s) for s in sensor_ids]
    mapping = {_decode(k): int(v) for k, v in id_to_ind.items()}
    if adj.shape != (len(ids), len(ids)):
        raise ValueError(f"{path}: adj_mx has shape {adj.shape} for {len(ids)} sensor ids")
    if sorted(mapping.values()) != list(range(len(ids))) or any(mapping.get(s) is None for s in ids):
        raise ValueError(f"{path}: sensor_id_to_ind is not a bijection onto 0..{len(ids) - 1} over sensor_ids")
    return ids, mapping, adj


def _decode(value: Any) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)
