"""Small rendering helpers for summaries: markdown for Prefect artifacts, rich tables for the console."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "_(nothing)_\n"
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def rich_table(rows: Sequence[dict[str, Any]], title: str, columns: Sequence[str] | None = None) -> Table:
    table = Table(title=title)
    columns = list(columns or (rows[0].keys() if rows else []))
    for c in columns:
        table.add_column(c, justify="right" if rows and isinstance(rows[0].get(c), (int, float)) else "left")
    for r in rows:
        table.add_row(*(_fmt(r.get(c, "")) for c in columns))
    return table
