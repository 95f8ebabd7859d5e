"""Calendar features (the STMF temporal identifiers) from timestamps or, without them, from the step index.

Every feature is a 0-based integer array ``[T]`` with a known vocabulary size, so that the adapter can size
one embedding table per feature (the public STA code: one table of width 32 per calendar feature). Which features a
dataset gets depends on its frequency:

- finer than an hour (5 min, 10 min, 15 min): ``minute_of_hour`` (60), ``time_of_day`` (steps per day),
  ``day_of_week`` (7);
- hourly up to (not including) daily: ``time_of_day`` (steps per day, 24 for hourly), ``day_of_week``;
  minute_of_hour is constant there and carries nothing;
- daily: ``day_of_week``, ``day_of_month`` (31), ``month_of_year`` (12);
- weekly: ``day_of_month``, ``month_of_year``; monthly and coarser: ``month_of_year``.

``time_of_day`` is the index of the step within the day (``steps_per_day`` values), which for hourly data
is the paper's ``time_of_day (24)``. A dataset without timestamps (los-loop, PEMS npz with no known start)
gets the same features computed on a synthetic clock that starts at :data:`INDEX_CALENDAR_START`, a Monday
at midnight, so day_of_week is right only if the real data started on a Monday at midnight.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from infra.freq import normalize_freq

INDEX_CALENDAR_START = pd.Timestamp("2024-01-01 00:00:00")  # a Monday, midnight
SECONDS_PER_DAY = 86_400
SECONDS_PER_HOUR = 3_600

FEATURE_VOCAB_FIXED = {"minute_of_hour": 60, "day_of_week": 7, "day_of_month": 31, "month_of_year": 12}


def step_seconds(freq: str) -> float | None:
    """Length of one step in seconds for fixed frequencies; ``None`` for calendar ones (weeks, months, years)."""
    offset = to_offset(normalize_freq(freq))
    try:
        return pd.Timedelta(offset).total_seconds()
    except ValueError:
        return None


def steps_per_day(freq: str) -> int | None:
    """Steps in a day for frequencies that divide a day evenly (5 min -> 288, hourly -> 24); else ``None``."""
    seconds = step_seconds(freq)
    if seconds is None or seconds <= 0 or seconds > SECONDS_PER_DAY:
        return None
    count = SECONDS_PER_DAY / seconds
    return int(round(count)) if abs(count - round(count)) < 1e-9 else None


def _granularity(freq: str) -> str:
    seconds = step_seconds(freq)
    if seconds is None:
        offset = to_offset(normalize_freq(freq))
        return "weekly" if offset.rule_code.startswith("W") else "monthly"
    if seconds < SECONDS_PER_HOUR:
        return "subhourly"
    if seconds < SECONDS_PER_DAY:
        return "hourly"
    if seconds < 7 * SECONDS_PER_DAY:
        return "daily"
    return "weekly" if seconds < 28 * SECONDS_PER_DAY else "monthly"


def feature_vocab(freq: str) -> dict[str, int]:
    """Name -> vocabulary size of the calendar features a series at ``freq`` gets (see module docstring)."""
    granularity = _granularity(freq)
    if granularity in ("subhourly", "hourly"):
        per_day = steps_per_day(freq)
        if per_day is None:
            raise ValueError(f"frequency {freq!r} does not divide a day into whole steps; time_of_day is undefined")
        vocab = {"time_of_day": per_day, "day_of_week": 7}
        if granularity == "subhourly":
            vocab = {"minute_of_hour": 60, **vocab}
        return vocab
    if granularity == "daily":
        return {"day_of_week": 7, "day_of_month": 31, "month_of_year": 12}
    if granularity == "weekly":
        return {"day_of_month": 31, "month_of_year": 12}
    return {"month_of_year": 12}


def calendar_features(timestamps: np.ndarray | pd.DatetimeIndex, freq: str) -> dict[str, np.ndarray]:
    """Integer features ``[T]`` (int64, 0-based) for ``timestamps`` at ``freq``; keys as :func:`feature_vocab`."""
    index = pd.DatetimeIndex(timestamps)
    if index.tz is not None:  # local wall-clock time is what the daily cycle follows
        index = index.tz_localize(None)
    vocab = feature_vocab(freq)
    out: dict[str, np.ndarray] = {}
    for name in vocab:
        if name == "minute_of_hour":
            values = index.minute.to_numpy()
        elif name == "time_of_day":
            seconds = (index.hour.to_numpy() * 3600 + index.minute.to_numpy() * 60 + index.second.to_numpy())
            values = seconds // int(step_seconds(freq) or 1)
        elif name == "day_of_week":
            values = index.day_of_week.to_numpy()  # Monday = 0
        elif name == "day_of_month":
            values = index.day.to_numpy() - 1
        else:  # month_of_year
            values = index.month.to_numpy() - 1
        values = np.asarray(values, dtype=np.int64)
        if len(values) and (values.min() < 0 or values.max() >= vocab[name]):
            raise ValueError(f"calendar feature {name} out of range [0, {vocab[name]}) for frequency {freq!r}")
        out[name] = values
    return out


def index_timestamps(num_steps: int, freq: str, start: str | pd.Timestamp | None = None) -> np.ndarray:
    """``num_steps`` timestamps (datetime64[ns]) at ``freq`` from ``start`` (default: a Monday midnight)."""
    begin = pd.Timestamp(start) if start is not None else INDEX_CALENDAR_START
    index = pd.date_range(begin, periods=num_steps, freq=normalize_freq(freq))
    return index.to_numpy().astype("datetime64[ns]")


def index_calendar(num_steps: int, freq: str) -> dict[str, np.ndarray]:
    """Calendar of a dataset without timestamps: features of a clock starting Monday midnight."""
    return calendar_features(index_timestamps(num_steps, freq), freq)


HOURS_PER_DAY = 24


def hour_of_day(
    calendar: dict[str, np.ndarray], vocab: dict[str, int]
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The same features with ``time_of_day`` counted in hours (24 values), the paper's granularity.

    ``time_of_day`` is the step within the day (``vocab["time_of_day"]`` steps); a step maps to the hour it
    starts in. Features without ``time_of_day`` come back unchanged.
    """
    if "time_of_day" not in vocab:
        return calendar, vocab
    per_day = int(vocab["time_of_day"])
    hours = (np.asarray(calendar["time_of_day"], dtype=np.int64) * HOURS_PER_DAY) // per_day
    return {**calendar, "time_of_day": hours}, {**vocab, "time_of_day": HOURS_PER_DAY}
