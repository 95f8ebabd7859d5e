"""Rendering of results for people and programs: console tables, markdown, JSON, and Prefect artifacts.

One rule for values that do not apply (the validation loss of seasonal naive, a failed benchmark's MAE): they
are ``None``/NaN in the rows, an empty cell in tables, ``-`` when NaN, and ``null`` in JSON; never ``nan``.
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Sequence
from typing import Any

from rich.table import Table


def json_safe(obj: Any) -> Any:
    """A strict-JSON copy: NaN/inf -> None, numpy scalars/arrays and tuples -> Python values and lists."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy scalars and arrays
        return json_safe(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def json_document(obj: Any) -> str:
    """The one JSON document a ``--json`` command prints."""
    return json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False, default=str)


def fmt(value: Any) -> str:
    """A table cell: floats to 4 significant digits, ints with separators, not-applicable values as - or empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    return str(value).replace("|", "/").replace("\n", " ")


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "_(nothing)_\n"
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def rich_table(rows: Sequence[dict[str, Any]], title: str, columns: Sequence[str] | None = None) -> Table:
    table = Table(title=title)
    columns = list(columns or (rows[0].keys() if rows else []))
    for c in columns:
        numeric = any(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) for r in rows)
        table.add_column(c, justify="right" if numeric else "left")
    for r in rows:
        table.add_row(*(fmt(r.get(c)) for c in columns))
    return table


def table_artifact(key: str, rows: Sequence[dict[str, Any]], columns: Sequence[str], description: str) -> None:
    """Rows as a Prefect table artifact (sortable in the UI); columns a row lacks are left empty."""
    from prefect.artifacts import create_table_artifact

    table = [{c: json_safe(r.get(c)) for c in columns} for r in rows]
    create_table_artifact(table=table, key=key, description=description)


def link_artifact(key: str, url: str, text: str, description: str) -> None:
    """A Prefect link artifact; a local path becomes a ``file://`` URL so the UI renders it as a link."""
    from prefect.artifacts import create_link_artifact

    link = url if "://" in url else "file://" + os.path.abspath(url)
    create_link_artifact(link=link, link_text=text, key=key, description=description)


def image_markdown(plots: Sequence[str], report_url: str, inline: bool = False,
                   storage_options: dict[str, Any] | None = None) -> list[str]:
    """Markdown image lines for ``plots`` as seen from the report at ``report_url``.

    A report file links its images by relative path (they render in any viewer of the run folder, local or
    synced from a bucket); ``inline`` embeds them as data URIs instead, for a view that has no access to the
    files (the Prefect UI's artifact page).
    """
    from infra.storage import filesystem

    base = report_url.rsplit("/", 1)[0]
    lines = []
    for plot in plots:
        label = plot.rstrip("/").rsplit("/", 2)[-2]
        if inline:
            fs, path = filesystem(plot, storage_options)
            with fs.open(path, "rb") as fh:
                target = "data:image/png;base64," + base64.b64encode(fh.read()).decode()
        else:
            target = _relative(plot, base)
        lines.append(f"![{label}]({target})")
    return lines


def _relative(url: str, base: str) -> str:
    """``url`` relative to folder ``base`` when both are on the same store, else ``url`` unchanged."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme != (base.split("://", 1)[0] if "://" in base else ""):
        return url
    strip = len(scheme) + 3 if scheme else 0
    import posixpath

    return posixpath.relpath(url[strip:], base[strip:])


def leakage_rows(check: dict[str, Any] | None, excluded: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per evaluation benchmark: how the corpus was checked against it and what was excluded."""
    if not check:
        return []
    series = (excluded or {}).get("series", [])
    rows = []
    for b in check["benchmarks"]:
        mine = [s for s in series if s["benchmark"] == b["benchmark"]]
        rows.append({
            "benchmark": b["benchmark"],
            "content check": b["content"] + (f" ({b['reason']})" if b.get("reason") else ""),
            "windows": b.get("windows"),
            "identity sources": ", ".join(b.get("identity_sources", [])) or "-",
            "excluded by identity": sum(s["matched_by"] == "identity" for s in mine),
            "excluded by content": sum(s["matched_by"] == "content" for s in mine),
        })
    return rows


def leakage_markdown(check: dict[str, Any] | None, excluded: dict[str, Any] | None, listed: int = 20) -> str:
    """The leakage check of a training corpus in words and a table (``stats.leakage_check`` / ``_excluded``)."""
    if not check:
        return "No leakage check is recorded for this training corpus (built without an evaluation benchmark list).\n"
    count = (excluded or {}).get("count", 0)
    names = ", ".join(b["benchmark"] for b in check["benchmarks"]) or "none"
    text = (f"Checked against the evaluation benchmarks ({names}) by declared identity and by content "
            f"(windows of {check['window']} values, {check['mantissa_bits']} significant bits): "
            f"**{count} series excluded**.\n\n" + markdown_table(leakage_rows(check, excluded)))
    series = (excluded or {}).get("series", [])
    if series:
        text += "\n" + markdown_table(series[:listed], ["series_id", "benchmark", "matched_by"])
        if len(series) > listed:
            text += f"\n... and {len(series) - listed} more (the training corpus manifest lists all).\n"
    unchecked = [b["benchmark"] for b in check["benchmarks"] if b["content"] != "checked"]
    if unchecked:
        text += f"\n**Content not checked** for {', '.join(unchecked)} (identity only; reasons above).\n"
    return text
