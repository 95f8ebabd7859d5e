"""Run manifests: what a one-click run used and made, so that it can be listed and rerun months later."""

from __future__ import annotations

import importlib.metadata
import platform
import secrets
from datetime import UTC, datetime
from typing import Any

from infra.fingerprint import code_version, git_commit
from infra.storage import filesystem, join, read_json, to_url, write_json_atomic

RUNS_DIR = "runs"
RUN_MANIFEST = "run.json"
TRACKED_LIBRARIES = ("torch", "ray", "prefect", "deepspeed", "numpy", "polars", "pyarrow", "scipy", "statsmodels",
                     "umap-learn", "scikit-learn", "fsspec", "s3fs", "pydantic")


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


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


def headline(run: dict[str, Any]) -> dict[str, Any]:
    """One row per run for `factost runs`: status and the first benchmark's main metrics."""
    row: dict[str, Any] = {"run_id": run["run_id"], "kind": run.get("kind", "?"), "status": run.get("status", "?"),
                           "started": run.get("started_at", "")[:19]}
    results = run.get("results") or []
    ours = [r for r in results if r.get("model") == "factost" and r.get("status", "ok") == "ok"]
    if ours:
        first = ours[0]
        row.update({"benchmark": first.get("benchmark"), "mode": first.get("mode"),
                    "mae": first.get("mae"), "rmse": first.get("rmse"), "crps": first.get("crps")})
    return row
