"""The in-memory spatio-temporal benchmark every loader returns and the STA stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adaptation.datasets.calendar import calendar_features, feature_vocab, index_calendar
from adaptation.datasets.splits import (
    FEW_SHOT_FRACTION,
    NullValue,
    SplitRule,
    ZScoreScaler,
    few_shot_slice,
    observed_mask,
    parse_split,
)
from infra.freq import normalize_freq


@dataclass
class SpatioTemporalDataset:
    """One benchmark: the target channel ``values [T, N]`` on a sensor graph, with its conventions.

    ``null_value`` says which values are missing ("zero": traffic flow/speed readings of 0; "nan": NaN).
    ``calendar`` is computed from ``timestamps`` (or from the step index when there are none) unless given.
    ``scaler_per_node`` records the benchmark's z-score convention (see :class:`ZScoreScaler`).
    """

    name: str
    values: np.ndarray
    timestamps: np.ndarray | None
    freq: str
    adjacency: np.ndarray | None
    node_ids: list[str]
    null_value: NullValue
    split: SplitRule
    calendar: dict[str, np.ndarray] = field(default_factory=dict)
    scaler_per_node: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        if self.values.ndim != 2:
            raise ValueError(f"{self.name}: values must be [T, N], got shape {self.values.shape}")
        steps, nodes = self.values.shape
        if steps == 0 or nodes == 0:
            raise ValueError(f"{self.name}: empty values of shape {self.values.shape}")
        self.freq = normalize_freq(self.freq)
        self.split = parse_split(self.split)
        if self.null_value not in ("zero", "nan"):
            raise ValueError(f"{self.name}: null_value must be 'zero' or 'nan', got {self.null_value!r}")
        if self.timestamps is not None:
            self.timestamps = np.asarray(self.timestamps).astype("datetime64[ns]")
            if self.timestamps.shape != (steps,):
                raise ValueError(f"{self.name}: {self.timestamps.shape[0]} timestamps for {steps} steps")
            if steps > 1 and not (np.diff(self.timestamps) > np.timedelta64(0, "ns")).all():
                raise ValueError(f"{self.name}: timestamps are not strictly increasing")
        self.node_ids = [str(n) for n in self.node_ids]
        if len(self.node_ids) != nodes:
            raise ValueError(f"{self.name}: {len(self.node_ids)} node ids for {nodes} nodes")
        if len(set(self.node_ids)) != nodes:
            raise ValueError(f"{self.name}: node ids are not unique")
        if self.adjacency is not None:
            self.adjacency = np.asarray(self.adjacency, dtype=np.float32)
            if self.adjacency.shape != (nodes, nodes):
                raise ValueError(f"{self.name}: adjacency {self.adjacency.shape} does not match {nodes} nodes")
            if not np.isfinite(self.adjacency).all():
                raise ValueError(f"{self.name}: adjacency has non-finite entries")
        if not self.calendar:
            self.calendar = (
                calendar_features(self.timestamps, self.freq)
                if self.timestamps is not None
                else index_calendar(steps, self.freq)
            )
        for key, feature in self.calendar.items():
            if np.asarray(feature).shape != (steps,):
                raise ValueError(f"{self.name}: calendar feature {key} has shape {np.shape(feature)}, not ({steps},)")
        self.calendar = {k: np.asarray(v, dtype=np.int64) for k, v in self.calendar.items()}

    @property
    def num_steps(self) -> int:
        return int(self.values.shape[0])

    @property
    def num_nodes(self) -> int:
        return int(self.values.shape[1])

    @property
    def calendar_vocab(self) -> dict[str, int]:
        """Vocabulary size of each calendar feature (the size of its embedding table)."""
        vocab = feature_vocab(self.freq)
        return {name: vocab.get(name, int(self.calendar[name].max()) + 1) for name in self.calendar}

    def splits(self) -> dict[str, slice]:
        """Disjoint ``train``/``val``/``test`` step ranges under this dataset's split rule."""
        return self.split.boundaries(self.num_steps, self.freq)

    def few_shot_slice(self, fraction: float = FEW_SHOT_FRACTION) -> slice:
        """The last ``fraction`` (10%) of the train range, used for few-shot adaptation."""
        return few_shot_slice(self.splits()["train"], fraction)

    def mask(self) -> np.ndarray:
        """Observed mask ``[T, N]`` (bool) under the dataset's null convention."""
        return observed_mask(self.values, self.null_value)

    def fit_scaler(self) -> ZScoreScaler:
        """z-score fitted on the train range, over observed values only."""
        return ZScoreScaler.fit(self.values[self.splits()["train"]], self.null_value, self.scaler_per_node)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description for run records and reports."""
        mask = self.mask()
        return {
            "name": self.name,
            "num_steps": self.num_steps,
            "num_nodes": self.num_nodes,
            "freq": self.freq,
            "start": str(self.timestamps[0]) if self.timestamps is not None else None,
            "null_value": self.null_value,
            "missing_fraction": float(1.0 - mask.mean()),
            "split": str(self.split),
            "splits": {k: [v.start, v.stop] for k, v in self.splits().items()},
            "calendar_vocab": self.calendar_vocab,
            "has_adjacency": self.adjacency is not None,
            "edges": int((self.adjacency > 0).sum()) if self.adjacency is not None else 0,
        }
