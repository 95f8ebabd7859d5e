"""Frequencies: one table of legacy spellings, one check, one canonical name, one guess from timestamps.

pandas 3 rejects the upper-case aliases that older configs, LOTSA and papers carry (``H``, ``5T``, ``M``,
``A-DEC``); they are translated to today's aliases here, for every stage.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

import pandas as pd
from pandas.tseries.frequencies import to_offset

# Spellings that pandas < 2.2 accepted, mapped to today's aliases.
LEGACY_FREQ_UNITS: dict[str, str] = {
    "H": "h",
    "BH": "bh",
    "CBH": "cbh",
    "T": "min",
    "S": "s",
    "L": "ms",
    "U": "us",
    "N": "ns",
    "M": "ME",
    "BM": "BME",
    "SM": "SME",
    "CBM": "CBME",
    "Q": "QE",
    "BQ": "BQE",
    "A": "YE",
    "Y": "YE",
    "BA": "BYE",
    "BY": "BYE",
    "AS": "YS",
    "BAS": "BYS",
}
_FREQ_RE = re.compile(r"^(?P<n>[+-]?\d*)(?P<unit>[A-Za-z]+)(?P<anchor>-[A-Za-z0-9]+)?$")


class FrequencyError(ValueError):
    """A string that is no pandas frequency alias, even after translating legacy spellings."""

    def __init__(self, freq: str, reason: str) -> None:
        self.freq, self.reason = freq, reason
        super().__init__(f"frequency {freq!r} is not a pandas frequency alias: {reason}")


def current_freq(freq: str) -> str:
    """``freq`` in today's spelling (``H`` -> ``h``, ``15T`` -> ``15min``, ``A-DEC`` -> ``YE-DEC``), else as
    written (``W`` stays ``W``); :class:`FrequencyError` when pandas does not know it."""
    text = str(freq).strip()
    m = _FREQ_RE.match(text)
    if m is not None and m["unit"] in LEGACY_FREQ_UNITS:
        text = f"{m['n']}{LEGACY_FREQ_UNITS[m['unit']]}{m['anchor'] or ''}"
    try:
        to_offset(text)
    except (ValueError, TypeError) as exc:
        raise FrequencyError(freq, str(exc)) from None
    return text


def normalize_freq(freq: str) -> str:
    """The offset's own name for ``freq`` (``H`` -> ``h``, ``5T`` -> ``5min``, ``W`` -> ``W-SUN``)."""
    return to_offset(current_freq(freq)).freqstr


def guess_freq(times: pd.DatetimeIndex | Sequence[Any]) -> str | None:
    """pandas' guess of the alias of regular timestamps; None when they are irregular or fewer than three."""
    index = pd.DatetimeIndex(times)
    if len(index) < 3:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas 3 warns that infer_freq will return an offset later
        inferred = pd.infer_freq(index)
    if inferred is None:
        return None
    return inferred if isinstance(inferred, str) else inferred.freqstr
