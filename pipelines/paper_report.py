"""A run's STA results in the layout of the paper's Tables VII (few-shot), VIII (full-shot) and IX (zero-shot).

Per table: one row per benchmark and horizon (the paper's benchmarks in its order, then any others the run has),
our MAE / RMSE / MAPE (percent) beside the paper's FactoST-v2 numbers, which come from the packaged
``pipelines/data/paper_tables.csv`` (each line cites the paper's table, row and column). A cell the paper lacks
(its tables give no MAPE; Table IX has no ETTh2, Electricity or Weather) or the run lacks is empty.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

PAPER_TABLES: dict[str, str] = {"VII": "few", "VIII": "full", "IX": "zero"}
TABLE_TITLES: dict[str, str] = {
    "VII": "Table VII: few-shot (last 10% of the training split)",
    "VIII": "Table VIII: full-shot (whole training split)",
    "IX": "Table IX: zero-shot (no parameter update)",
}
PAPER_HORIZONS = ("12->12", "96->96")
OUR_METHOD = "factost"
DATA_FILE = "paper_tables.csv"
DATA_COLUMNS = ("table", "mode", "horizon", "benchmark", "paper_column", "paper_row", "model", "mae", "rmse", "mape",
                "ablation")
METRICS = ("mae", "rmse", "mape")
COLUMNS = ("benchmark", "horizon", "MAE", "MAE paper", "RMSE", "RMSE paper", "MAPE %", "MAPE % paper", "note")


@dataclass(frozen=True)
class PaperNumber:
    """One line of the data file: the paper's MAE/RMSE/MAPE of one (table, benchmark, horizon)."""

    table: str
    mode: str
    horizon: str
    benchmark: str
    paper_column: str
    paper_row: str
    model: str
    mae: float | None
    rmse: float | None
    mape: float | None
    ablation: str

    @property
    def source(self) -> str:
        return f"Table {self.table}, row {self.paper_row!r}, column {self.paper_column!r}"


def _number(text: str, where: str) -> float | None:
    if not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not a number") from None


def parse_paper_numbers(text: str, name: str = DATA_FILE) -> list[PaperNumber]:
    """The data file's lines; a missing column, an unknown table or a non-number names the file and line."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in DATA_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}")
    rows = []
    for line, rec in enumerate(reader, start=2):
        where = f"{name} line {line}"
        if rec["table"] not in (*PAPER_TABLES, "X"):
            raise ValueError(f"{where}: unknown table {rec['table']!r}")
        metrics = {m: _number(rec[m] or "", f"{where} {m}") for m in METRICS}
        rows.append(PaperNumber(**{c: rec[c] or "" for c in DATA_COLUMNS if c not in METRICS}, **metrics))
    return rows


def paper_numbers() -> list[PaperNumber]:
    """The packaged transcription of the paper's FactoST-v2 numbers."""
    return parse_paper_numbers(resources.files("pipelines").joinpath("data", DATA_FILE).read_text("utf-8"))


def harness_mape_scale() -> float:
    """Factor that turns the harness's ``mape`` into percent: 1 when it already reports percent, else 100."""
    import numpy as np

    from adaptation.metrics import masked_mape

    return 1.0 if masked_mape(np.array([2.0]), np.array([1.0])) > 1.5 else 100.0


def _float(value: Any) -> float | None:
    """A metric from a typed row or a CSV cell; empty, non-numeric and NaN are None."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out else None


def _mape_percent(row: dict[str, Any], scale: float) -> float | None:
    if "mape_pct" in row:
        return _float(row["mape_pct"])
    unit = str(row.get("mape_unit") or "")
    value = _float(row.get("mape"))
    factor = {"percent": 1.0, "fraction": 100.0}.get(unit, scale)
    return None if value is None else value * factor


def _note(row: dict[str, Any] | None) -> str:
    """Why our cell needs a second look: not adapted (the step-0 weights kept), failed, or another status."""
    if row is None:
        return ""
    if str(row.get("adapted", "")).lower() == "false":
        return "not adapted: the step-0 weights scored best"
    status = str(row.get("status") or "ok")
    if status == "failed":
        return f"failed: {row.get('error') or ''}".strip()
    return "" if status == "ok" else status


def _ours(rows: Sequence[dict[str, Any]], mode: str) -> tuple[dict[tuple[str, str], dict], dict[str, dict]]:
    """Our rows of ``mode`` by (benchmark, horizon), and the mode's failure rows by benchmark."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    failed: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.get("mode") != mode:
            continue
        if row.get("status") == "failed" and row.get("method") in (OUR_METHOD, "-"):
            failed.setdefault(str(row["benchmark"]), row)
        elif row.get("method") == OUR_METHOD:
            found.setdefault((str(row["benchmark"]), str(row["horizon"])), row)
    return found, failed


def table_rows(rows: Sequence[dict[str, Any]], table: str, numbers: Sequence[PaperNumber],
               mape_scale: float) -> list[dict[str, Any]]:
    """One table in the paper's layout: benchmarks (paper's order, then the run's others) x horizons."""
    mode = PAPER_TABLES[table]
    paper = {(n.benchmark, n.horizon): n for n in numbers if n.table == table}
    ours, failed = _ours(rows, mode)
    benchmarks = list(dict.fromkeys([b for b, _ in paper] + [b for b, _ in ours] + list(failed)))
    out = []
    for bench in benchmarks:
        horizons = [h for h in PAPER_HORIZONS if (bench, h) in paper or (bench, h) in ours or bench in failed]
        horizons += [h for b, h in ours if b == bench and h not in horizons]
        for horizon in horizons:
            mine, theirs = ours.get((bench, horizon)), paper.get((bench, horizon))
            out.append({
                "benchmark": bench, "horizon": horizon,
                "MAE": _float(mine.get("mae")) if mine else None, "MAE paper": theirs.mae if theirs else None,
                "RMSE": _float(mine.get("rmse")) if mine else None, "RMSE paper": theirs.rmse if theirs else None,
                "MAPE %": _mape_percent(mine, mape_scale) if mine else None,
                "MAPE % paper": theirs.mape if theirs else None,
                "note": _note(mine if mine else failed.get(bench)),
            })
    return out


def paper_tables(rows: Sequence[dict[str, Any]], numbers: Sequence[PaperNumber] | None = None,
                 mape_scale: float | None = None) -> dict[str, list[dict[str, Any]]]:
    """Tables VII, VIII and IX of a run's result rows (``benchmark, method, mode, horizon, mae, rmse, mape``)."""
    numbers = paper_numbers() if numbers is None else numbers
    scale = harness_mape_scale() if mape_scale is None else mape_scale
    return {table: table_rows(rows, table, numbers, scale) for table in PAPER_TABLES}


def tables_markdown(run_id: str, tables: dict[str, list[dict[str, Any]]]) -> str:
    """The report file: one section per table, then where the paper's numbers come from."""
    from pipelines.reporting import markdown_table

    parts = [f"# Run {run_id} beside the FactoST-v2 paper", "",
             "Ours: the run's FactoST rows (original scale; MAPE in percent). Paper: its FactoST-v2 numbers "
             f"(packaged `pipelines/data/{DATA_FILE}`, which cites table, row and column for each). An empty cell: "
             "the run or the paper has no such number (the paper's tables give MAE and RMSE only).", ""]
    for table, rows in tables.items():
        parts += [f"## {TABLE_TITLES[table]}", "", markdown_table(rows, COLUMNS)]
    return "\n".join(parts)


def tables_csv(tables: dict[str, list[dict[str, Any]]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["table", "mode", *COLUMNS])
    writer.writeheader()
    for table, rows in tables.items():
        for row in rows:
            writer.writerow({"table": table, "mode": PAPER_TABLES[table],
                             **{k: "" if v is None else v for k, v in row.items()}})
    return buffer.getvalue()


def write_paper_report(run_id: str, rows: Sequence[dict[str, Any]], folder: str,
                       storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``paper_tables.md`` and ``paper_tables.csv`` into ``folder``; returns their URLs and the tables."""
    from infra.storage import filesystem, join, write_bytes_atomic

    tables = paper_tables(rows)
    urls = {"markdown": join(folder, "paper_tables.md"), "csv": join(folder, "paper_tables.csv")}
    for key, text in (("markdown", tables_markdown(run_id, tables)), ("csv", tables_csv(tables))):
        fs, path = filesystem(urls[key], storage_options)
        write_bytes_atomic(fs, path, text.encode())
    return {"run_id": run_id, "files": urls, "tables": tables}
