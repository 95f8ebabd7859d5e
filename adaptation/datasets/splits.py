"""Chronological train/val/test splits, the few-shot subset and the train-fitted z-score scaler.

Conventions (docs/design.md, "STA adaptation"; the LTSF and BasicTS public code):

- ratio rules split the time axis in order: ``n_train = floor(T * r_train)``, ``n_test = floor(T * r_test)``,
  ``n_val = T - n_train - n_test`` (the LTSF ``Dataset_Custom`` arithmetic, so the validation part absorbs
  rounding). Traffic uses 6:2:2, Electricity/Weather/Exchange 7:1:2.
- the ETT rule is fixed months of 30 days: 12 months train, 4 validation, 4 test (``12*30*24`` hourly rows
  etc.); rows after the 20 months belong to no split, as in the ETT loaders of the public code.
- the ranges are disjoint step ranges of the targets; a window maker may read context from before a range's
  start (the LTSF convention of starting val/test ``seq_len`` steps early), that is its choice, not ours.
- few-shot training uses the last 10% of the train range (paper, "Few-shot Prediction").
- the z-score is fitted on the train range only, over observed values: zeros in traffic flow/speed are
  missing readings and are left out of the statistics, NaN everywhere.
"""

from __future__ import annotations

import math
import re
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from adaptation.datasets.calendar import steps_per_day

NullValue = Literal["zero", "nan"]
SPLIT_NAMES = ("train", "val", "test")
FEW_SHOT_FRACTION = 0.1
DAYS_PER_MONTH = 30
STD_FLOOR = 1e-5  # a constant node gets this std instead of 0 (same floor as the backbone's instance norm)


class SplitRule(BaseModel):
    """How a dataset's time axis is cut: ``ratio`` (e.g. 6:2:2) or ``months`` (ETT 12/4/4 of 30 days)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["ratio", "months"]
    ratios: tuple[float, float, float] | None = None
    months: tuple[int, int, int] | None = None
    days_per_month: int = Field(DAYS_PER_MONTH, gt=0)

    @model_validator(mode="after")
    def _check(self) -> SplitRule:
        if self.kind == "ratio":
            if self.ratios is None or self.months is not None:
                raise ValueError("a ratio split needs ratios=(train, val, test) and no months")
            if any(r < 0 for r in self.ratios) or not math.isclose(sum(self.ratios), 1.0, abs_tol=1e-6):
                raise ValueError(f"split ratios {self.ratios} must be non-negative and sum to 1")
            if self.ratios[0] <= 0:
                raise ValueError("the train ratio must be positive")
        else:
            if self.months is None or self.ratios is not None:
                raise ValueError("a months split needs months=(train, val, test) and no ratios")
            if any(m < 0 for m in self.months) or self.months[0] <= 0:
                raise ValueError(f"split months {self.months} must be non-negative with a positive train part")
        return self

    def __str__(self) -> str:
        if self.kind == "ratio":
            return ":".join(f"{r * 10:g}" for r in self.ratios or ())
        return "months:" + "/".join(str(m) for m in self.months or ())

    def boundaries(self, num_steps: int, freq: str) -> dict[str, slice]:
        """Disjoint ``train``/``val``/``test`` step ranges for a series of ``num_steps`` at ``freq``."""
        if self.kind == "ratio":
            ratios = self.ratios or (0.0, 0.0, 0.0)
            n_train = int(math.floor(num_steps * ratios[0] + 1e-9))
            n_test = int(math.floor(num_steps * ratios[2] + 1e-9))
            n_val = num_steps - n_train - n_test
        else:
            per_day = steps_per_day(freq)
            if per_day is None:
                raise ValueError(f"a months split needs a frequency that divides a day, got {freq!r}")
            per_month = self.days_per_month * per_day
            n_train, n_val, n_test = (m * per_month for m in self.months or ())
            if n_train + n_val + n_test > num_steps:
                raise ValueError(
                    f"split {self} needs {n_train + n_val + n_test} steps at {freq}, the series has {num_steps}"
                )
        if n_train <= 0:
            raise ValueError(f"split {self} leaves no training steps in a series of {num_steps}")
        return {
            "train": slice(0, n_train),
            "val": slice(n_train, n_train + n_val),
            "test": slice(n_train + n_val, n_train + n_val + n_test),
        }


_RATIO_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[:/,]\s*(\d+(?:\.\d+)?)\s*[:/,]\s*(\d+(?:\.\d+)?)\s*$")


def parse_split(rule: str | SplitRule) -> SplitRule:
    """``"6:2:2"``, ``"7:1:2"``, ``"0.7,0.1,0.2"`` -> ratio rule; ``"months:12/4/4"`` or ``"ett"`` -> months."""
    if isinstance(rule, SplitRule):
        return rule
    text = str(rule).strip().lower()
    if text == "ett":
        text = "months:12/4/4"
    if text.startswith("months:"):
        parts = _RATIO_RE.match(text[len("months:"):])
        if not parts:
            raise ValueError(f"split {rule!r}: expected months:TRAIN/VAL/TEST, e.g. months:12/4/4")
        values = [float(p) for p in parts.groups()]
        if any(v != int(v) for v in values):
            raise ValueError(f"split {rule!r}: months must be whole numbers")
        return SplitRule(kind="months", months=tuple(int(v) for v in values))  # type: ignore[arg-type]
    parts = _RATIO_RE.match(text)
    if not parts:
        raise ValueError(f"split {rule!r}: expected a ratio like 6:2:2 or 0.7,0.1,0.2, or months:12/4/4")
    values = [float(p) for p in parts.groups()]
    total = sum(values)
    if total <= 0:
        raise ValueError(f"split {rule!r}: the parts sum to zero")
    return SplitRule(kind="ratio", ratios=tuple(v / total for v in values))  # type: ignore[arg-type]


def few_shot_slice(train: slice, fraction: float = FEW_SHOT_FRACTION) -> slice:
    """The last ``fraction`` of the train range (at least one step): the paper's few-shot training data."""
    if not 0 < fraction <= 1:
        raise ValueError(f"few-shot fraction must be in (0, 1], got {fraction}")
    start, stop = train.start or 0, train.stop
    count = max(1, int(round((stop - start) * fraction)))
    return slice(stop - count, stop)


def observed_mask(values: np.ndarray, null_value: NullValue) -> np.ndarray:
    """True where a value is observed: finite, and non-zero when zeros mean missing (traffic)."""
    if null_value not in ("zero", "nan"):
        raise ValueError(f"null_value must be 'zero' or 'nan', got {null_value!r}")
    mask = np.isfinite(values)
    if null_value == "zero":
        mask &= values != 0
    return mask


class ZScoreScaler(BaseModel):
    """z-score with statistics from the train part only; ``per_node`` keeps one mean/std per node.

    Traffic benchmarks use one global mean/std (BasicTS ``norm_each_channel=False``), LTSF ones one per
    variable (their ``StandardScaler``); the registry says which.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: list[float]
    std: list[float]
    per_node: bool

    @classmethod
    def fit(cls, values: np.ndarray, null_value: NullValue, per_node: bool = False) -> ZScoreScaler:
        """Fit on ``values [T, N]`` (already the train part), ignoring unobserved points."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2:
            raise ValueError(f"scaler expects values [T, N], got shape {values.shape}")
        mask = observed_mask(values, null_value)
        if per_node:
            counts = mask.sum(axis=0)
            if (counts == 0).any():
                bad = np.flatnonzero(counts == 0)[:5].tolist()
                raise ValueError(f"nodes {bad} have no observed value in the train part; cannot fit a scaler")
            filled = np.where(mask, values, 0.0)
            mean = filled.sum(axis=0) / counts
            var = (np.where(mask, values - mean, 0.0) ** 2).sum(axis=0) / counts
            std = np.sqrt(var)
        else:
            observed = values[mask]
            if observed.size == 0:
                raise ValueError("the train part has no observed value; cannot fit a scaler")
            mean, std = np.array([observed.mean()]), np.array([observed.std()])
        std = np.where(std < STD_FLOOR, STD_FLOOR, std)
        return cls(mean=mean.tolist(), std=std.tolist(), per_node=per_node)

    def _stats(self, ndim: int, node_axis: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean/std shaped to broadcast against an array of ``ndim`` dims whose nodes lie on ``node_axis``."""
        mean, std = np.asarray(self.mean, dtype=np.float64), np.asarray(self.std, dtype=np.float64)
        if self.per_node and ndim > 0:
            shape = [1] * ndim
            shape[node_axis] = -1
            mean, std = mean.reshape(shape), std.reshape(shape)
        return mean, std

    def transform(self, values: np.ndarray, node_axis: int = -1) -> np.ndarray:
        """``(x - mean) / std`` with nodes on ``node_axis``; NaN stays NaN."""
        array = np.asarray(values, dtype=np.float64)
        mean, std = self._stats(array.ndim, node_axis)
        return ((array - mean) / std).astype(np.float32)

    def inverse_transform(self, values: np.ndarray, node_axis: int = -1) -> np.ndarray:
        """Back to the original scale (metrics are computed there); e.g. ``node_axis=2`` for ``[S, H, N, Q]``."""
        array = np.asarray(values, dtype=np.float64)
        mean, std = self._stats(array.ndim, node_axis)
        return (array * std + mean).astype(np.float32)
