"""Sliding windows over a benchmark: ``[S, T_in, N]`` inputs -> ``[S, T_out, N]`` targets, with the calendar.

Windows are start indices into one array, never materialised all at once (PEMS07's test split alone would be
gigabytes). Conventions:

- a training window lies entirely inside its step range (the few-shot slice holds the whole window: context
  and target), so few-shot training sees nothing outside the last 10% of the train split;
- a validation or test window has its *target* inside the range and may read its context from just before
  it (the LTSF convention of starting val/test ``seq_len`` steps early), so every target step is forecast;
- the model is fed values z-scored with the train statistics, missing points (zeros in traffic, NaN) as
  NaN; targets keep the original scale for the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from adaptation.datasets import SpatioTemporalDataset, ZScoreScaler
from adaptation.datasets.calendar import hour_of_day


@dataclass
class SeriesArrays:
    """A benchmark prepared for windowing: normalised model inputs, original targets, mask and calendar."""

    normalized: np.ndarray  # [T, N] float32, NaN where unobserved
    original: np.ndarray  # [T, N] float32, as loaded (zeros stay zeros for traffic)
    observed: np.ndarray  # [T, N] bool
    calendar: np.ndarray  # [T, F] int64
    calendar_vocab: dict[str, int]
    scaler: ZScoreScaler

    @classmethod
    def from_dataset(cls, dataset: SpatioTemporalDataset, time_of_day: str = "step") -> SeriesArrays:
        """``time_of_day``: "step" (the step within the day) or "hour" (24 values, the paper's form)."""
        scaler = dataset.fit_scaler()
        observed = dataset.mask()
        normalized = scaler.transform(dataset.values, node_axis=-1)
        normalized = np.where(observed, normalized, np.nan).astype(np.float32)
        features, vocab = dataset.calendar, dataset.calendar_vocab
        if time_of_day == "hour":
            features, vocab = hour_of_day(features, vocab)
        elif time_of_day != "step":
            raise ValueError(f"time_of_day must be 'step' or 'hour', got {time_of_day!r}")
        if vocab:
            calendar = np.stack([features[name] for name in vocab], axis=1).astype(np.int64)
        else:
            calendar = np.zeros((dataset.num_steps, 0), dtype=np.int64)
        return cls(normalized, dataset.values, observed, calendar, vocab, scaler)

    @property
    def num_nodes(self) -> int:
        return int(self.normalized.shape[1])


@dataclass
class WindowBatch:
    """One batch: ``x`` [B, T_in, N] normalised, ``y`` [B, T_out, N] normalised (NaN where unobserved),
    ``calendar`` [B, T_in + T_out, F], ``starts`` [B] (first input step of each window)."""

    x: Tensor
    y: Tensor
    calendar: Tensor
    starts: np.ndarray

    def to(self, device: torch.device) -> WindowBatch:
        return WindowBatch(self.x.to(device), self.y.to(device), self.calendar.to(device), self.starts)


class WindowSet:
    """Windows with given start indices over ``arrays``; ``batch(idx)`` gathers them on demand."""

    def __init__(self, arrays: SeriesArrays, starts: np.ndarray, input_len: int, output_len: int) -> None:
        self.arrays = arrays
        self.starts = np.asarray(starts, dtype=np.int64)
        self.input_len = input_len
        self.output_len = output_len
        total = arrays.normalized.shape[0]
        if self.starts.size and (self.starts.min() < 0 or self.starts.max() + input_len + output_len > total):
            raise ValueError(f"window starts out of range for a series of {total} steps")

    def __len__(self) -> int:
        return int(self.starts.size)

    def _offsets(self, idx: np.ndarray, length: int, shift: int = 0) -> np.ndarray:
        return self.starts[idx][:, None] + shift + np.arange(length)[None, :]

    def batch(self, idx: np.ndarray | list[int] | slice, nodes: np.ndarray | None = None) -> WindowBatch:
        """Windows ``idx`` (optionally only the columns ``nodes``)."""
        idx = np.arange(len(self))[idx] if isinstance(idx, slice) else np.asarray(idx, dtype=np.int64)
        rows_x = self._offsets(idx, self.input_len)
        rows_y = self._offsets(idx, self.output_len, self.input_len)
        rows_c = self._offsets(idx, self.input_len + self.output_len)
        data = self.arrays.normalized
        if nodes is not None:
            data = data[:, nodes]
        return WindowBatch(
            x=torch.from_numpy(np.ascontiguousarray(data[rows_x])),
            y=torch.from_numpy(np.ascontiguousarray(data[rows_y])),
            calendar=torch.from_numpy(np.ascontiguousarray(self.arrays.calendar[rows_c])),
            starts=self.starts[idx],
        )

    def targets_original(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Original-scale targets [B, T_out, N] and their observed mask, for the metrics."""
        rows = self._offsets(np.asarray(idx, dtype=np.int64), self.output_len, self.input_len)
        return self.arrays.original[rows], self.arrays.observed[rows]

    def subset(self, idx: np.ndarray) -> WindowSet:
        return WindowSet(self.arrays, self.starts[idx], self.input_len, self.output_len)

    def evenly_spaced(self, count: int | None) -> WindowSet:
        """At most ``count`` windows spread evenly over the set (all of them when ``count`` is None)."""
        if count is None or len(self) <= count:
            return self
        picks = np.unique(np.linspace(0, len(self) - 1, count).round().astype(np.int64))
        return self.subset(picks)


def training_starts(steps: slice, input_len: int, output_len: int, stride: int = 1) -> np.ndarray:
    """Starts of windows lying entirely inside ``steps`` (context and target)."""
    first, stop = steps.start or 0, steps.stop
    last = stop - input_len - output_len
    return (
        np.arange(first, last + 1, stride, dtype=np.int64) if last >= first else np.zeros(0, dtype=np.int64)
    )


def evaluation_starts(steps: slice, input_len: int, output_len: int, stride: int = 1) -> np.ndarray:
    """Starts of windows whose target lies inside ``steps``; context may start before it (not before 0)."""
    first_target, stop = steps.start or 0, steps.stop
    first = max(first_target - input_len, 0)
    last = stop - input_len - output_len
    return (
        np.arange(first, last + 1, stride, dtype=np.int64) if last >= first else np.zeros(0, dtype=np.int64)
    )


def make_windows(
    arrays: SeriesArrays,
    steps: slice,
    input_len: int,
    output_len: int,
    kind: str,
    stride: int = 1,
    name: str = "benchmark",
) -> WindowSet:
    """Training (``kind="train"``) or evaluation (``"val"``/``"test"``) windows over ``steps``."""
    if kind == "train":
        starts = training_starts(steps, input_len, output_len, stride)
    elif kind in ("val", "test"):
        starts = evaluation_starts(steps, input_len, output_len, stride)
    else:
        raise ValueError(f"window kind must be train, val or test, got {kind!r}")
    if starts.size == 0:
        needed = input_len + output_len if kind == "train" else output_len
        raise ValueError(
            f"{name}: the {kind} range [{steps.start}, {steps.stop}) is too short for "
            f"{input_len}->{output_len} windows (needs {needed} steps)"
        )
    return WindowSet(arrays, starts, input_len, output_len)
