"""The canonical series table: one row per univariate series, whatever source it came from."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

CANONICAL_SCHEMA = pa.schema(
    [
        pa.field("series_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("domain", pa.string(), nullable=False),
        pa.field("freq", pa.string()),
        pa.field("start", pa.timestamp("us")),
        pa.field("target", pa.large_list(pa.float32()), nullable=False),
        pa.field("length", pa.int64(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("attributes", pa.string()),  # JSON of source-specific attributes (tsf header columns, kernel)
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("series_id", pa.string()),
        pa.field("input", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("length", pa.int64()),
        pa.field("target", pa.large_list(pa.float32())),
    ]
)

DUPLICATES_SCHEMA = pa.schema(
    [
        pa.field("series_id", pa.string()),
        pa.field("duplicate_of", pa.string()),
        pa.field("content_hash", pa.string()),
    ]
)


@dataclass
class RawSeries:
    """What a connector yields: one univariate series and what it knows about it."""

    item_id: str
    target: np.ndarray
    start: datetime | None = None
    freq: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    input: str = ""  # the file (and member/line) it came from, for error messages and quarantine


def content_hash(values: np.ndarray) -> str:
    """Hash of the float32 values with every NaN made canonical, so equal series hash equally."""
    v = np.ascontiguousarray(values, dtype=np.float32)
    if np.isnan(v).any():
        v = np.where(np.isnan(v), np.float32(np.nan), v)
    return hashlib.blake2b(v.tobytes(), digest_size=16).hexdigest()
