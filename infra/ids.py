"""Identifiers that sort by the time they were made: runs, rerun records, writers' attempts."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime


def timestamped_id(tag: str | None = None, random_bytes: int = 3) -> str:
    """``20250101T120000Z-3f9a1c``: UTC start time, then ``tag`` (what the thing is) or ``random_bytes`` of hex."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{tag if tag is not None else secrets.token_hex(random_bytes)}"
