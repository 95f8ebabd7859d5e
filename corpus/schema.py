"""What connectors yield (:class:`RawSeries`) and the content hash that finds duplicates.

The tables the stages write are in :mod:`infra.schemas`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np


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
