"""Run manifests: what a one-click run used and made, so that it can be listed and rerun months later."""

from __future__ import annotations

import importlib.metadata
import platform
from typing import Any

from infra.fingerprint import code_version, git_commit
from infra.ids import timestamped_id
from infra.storage import filesystem, join, read_json, to_url, write_json_atomic

RUNS_DIR = "runs"
RUN_MANIFEST = "run.json"
TRACKED_LIBRARIES = ("torch", "ray", "prefect", "deepspeed", "numpy", "polars", "pyarrow", "scipy", "statsmodels",
                     "umap-learn", "scikit-learn", "fsspec", "s3fs", "pydantic")


def new_run_id() -> str:
    """A one-click run's (or a rerun's) id: its start time and random hex."""
    return timestamped_id()


def run_url(root: str, run_id: str) -> str:
    return join(root, RUNS_DIR, run_id)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def environment_record() -> dict[str, Any]:
    return {"code_version": code_version(), "git_commit": git_commit(), "libraries": library_versions(),
            "platform": platform.platform()}


def write_run_manifest(root: str, run_id: str, manifest: dict[str, Any],
                       storage_options: dict[str, Any] | None = None) -> str:
    """(Re)write the run's manifest atomically; returns its URL."""
    fs, path = filesystem(join(run_url(root, run_id), RUN_MANIFEST), storage_options)
    write_json_atomic(fs, path, manifest)
    return to_url(fs, path)


def read_run_manifest(root: str, run_id: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    fs, path = filesystem(join(run_url(root, run_id), RUN_MANIFEST), storage_options)
    if not fs.exists(path):
        known = ", ".join(r["run_id"] for r in list_runs(root, storage_options)[-5:]) or "none"
        raise FileNotFoundError(f"run {run_id!r} not found under {run_url(root, '')} (latest: {known})")
    return read_json(fs, path)


def list_runs(root: str, storage_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every recorded run, oldest first (run ids start with their UTC start time)."""
    fs, path = filesystem(join(root, RUNS_DIR), storage_options)
    if not fs.exists(path):
        return []
    runs = []
    for entry in sorted(fs.ls(path, detail=False)):
        manifest_path = join(entry, RUN_MANIFEST)
        if fs.exists(manifest_path):
            runs.append(read_json(fs, manifest_path))
    return runs


BASELINE_METRICS = ("mae", "rmse", "crps")
OUR_METHOD = "factost"


def _ok(row: dict[str, Any]) -> bool:
    """A row that produced metrics: "ok", or a result flagged as not adapted (a fact, not a failure)."""
    return row.get("status", "ok") != "failed"


def best_baseline(rows: list[dict[str, Any]], benchmark: str, horizon: str) -> dict[str, Any] | None:
    """The baseline row (any method but ours) with the lowest MAE on ``benchmark`` at ``horizon``."""
    candidates = [r for r in rows if _ok(r) and r.get("method") != OUR_METHOD and r.get("benchmark") == benchmark
                  and r.get("horizon") == horizon and isinstance(r.get("mae"), (int, float))]
    return min(candidates, key=lambda r: r["mae"]) if candidates else None


def headline_metrics(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Our method's MAE/RMSE/CRPS per benchmark, horizon and mode, each with the best baseline beside it."""
    lines = []
    for row in rows:
        if row.get("method") != OUR_METHOD or not _ok(row):
            continue
        line = {k: row.get(k) for k in ("benchmark", "horizon", "mode", "adapted", *BASELINE_METRICS)}
        base = best_baseline(rows, row["benchmark"], row["horizon"])
        line["baseline"] = None if base is None else {
            "method": base["method"], "mode": base.get("mode"), **{k: base.get(k) for k in BASELINE_METRICS}}
        lines.append(line)
    return lines


def headline(run: dict[str, Any]) -> dict[str, Any]:
    """A run for `factost runs`: id, kind, status, start, duration, failures and its headline metrics."""
    rows = run.get("results") or []
    return {
        "run_id": run["run_id"],
        "kind": run.get("kind", "?"),
        "status": run.get("status", "?"),
        "started": run.get("started_at", ""),
        "duration_s": run.get("duration_s"),
        "failed": sorted({str(r.get("benchmark")) for r in rows if not _ok(r)}),
        "metrics": headline_metrics(rows),
        "report": run.get("report"),
        "error": run.get("error"),
    }


def headline_table(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The headlines flattened for a console table: one line per run and (benchmark, horizon, mode)."""
    table = []
    for run in runs:
        base = {"run_id": run["run_id"], "status": run["status"], "started": run["started"][:19],
                "duration_s": run["duration_s"]}
        if not run["metrics"]:
            table.append({**base, "benchmark": run["error"] or "-"})
        for m in run["metrics"]:
            b = m["baseline"] or {}
            table.append({**base, "benchmark": m["benchmark"], "horizon": m["horizon"], "mode": m["mode"],
                          **{k: m[k] for k in BASELINE_METRICS},
                          "best baseline": f"{b['method']} {b['mode']}".replace(" -", "") if b else None,
                          **{f"baseline {k}": b.get(k) for k in BASELINE_METRICS}})
            base = {"run_id": "", "status": "", "started": "", "duration_s": None}
    return table


ADAPT_RUNS = ("runs", "adapt")


def _csv_rows(fs: Any, path: str) -> list[dict[str, Any]]:
    """An adapt run's ``results.csv``: empty cells as None, the rest as written (metrics parse later)."""
    import csv
    import io

    with fs.open(path, "rb") as fh:
        return [{k: (v if v != "" else None) for k, v in row.items()}
                for row in csv.DictReader(io.StringIO(fh.read().decode()))]


def run_results(root: str, run_id: str,
                storage_options: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], str]:
    """A run's result rows and the folder its reports go in: a one-click run (``runs/ID/run.json``) or an adapt
    run (``runs/adapt/ID/results.csv``); an unknown id names the latest of both."""
    fs, manifest = filesystem(join(run_url(root, run_id), RUN_MANIFEST), storage_options)
    if fs.exists(manifest):
        run = read_json(fs, manifest)
        if run.get("results"):
            return list(run["results"]), run_url(root, run_id)
    adapt_dir = join(root, *ADAPT_RUNS, run_id)
    fs, table = filesystem(join(adapt_dir, "results.csv"), storage_options)
    if fs.exists(table):
        return _csv_rows(fs, table), adapt_dir
    fs, adapt_root = filesystem(join(root, *ADAPT_RUNS), storage_options)
    adapt_ids = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(adapt_root, detail=False)) \
        if fs.exists(adapt_root) else []
    known = [r["run_id"] for r in list_runs(root, storage_options)][-5:] + adapt_ids[-5:]
    raise FileNotFoundError(f"run {run_id!r} has no results under {join(root, RUNS_DIR)} "
                            f"(latest: {', '.join(known) or 'none'})")
