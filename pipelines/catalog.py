"""What the store holds: every dataset with its versions, and one version's card with its lineage.

Everything here is read from the version manifests (through :mod:`infra.versions`) and from the run records
(``runs/<id>/run.json`` of one-click runs, ``runs/pretrain/<name>/config.json`` of pretraining runs), so the
catalog needs no database: a store copied to another bucket lists the same.

Lineage: a version's manifest names its inputs (files with their sha256 for an ingested source, version URLs
for a balanced training corpus). *Up* is those inputs; *down* is every version whose inputs name this one,
every pretraining run trained on it and every one-click run whose corpus record holds it.
"""

from __future__ import annotations

import posixpath
from typing import Any

from infra.storage import filesystem, join, read_json, to_url
from infra.versions import MANIFEST_NAME, DatasetVersion, list_versions, open_version

# Folders under the root that hold run outputs, not datasets (reruns hold whole copies of a store).
NOT_DATASETS = frozenset({"runs", "checkpoints", "reruns"})


def dataset_names(root: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Every dataset path under ``root`` (``corpus/m4_hourly``, ``training_corpus``...): parents of versions."""
    fs, base = filesystem(root, storage_options)
    if not fs.exists(base):
        return []
    found: set[str] = set()
    for folder, dirs, files in fs.walk(base):
        rel = folder[len(base):].strip("/")
        if MANIFEST_NAME in files:
            dirs[:] = []  # a version folder: its parts are not datasets
            if "/" in rel:
                found.add(rel.rsplit("/", 1)[0])
            continue
        dirs[:] = [d for d in dirs if not d.startswith((".", "_")) and (rel or d not in NOT_DATASETS)]
    return sorted(found)


def version_row(version: DatasetVersion) -> dict[str, Any]:
    """A version as one listing row: id, creation time, size and what it was made from."""
    manifest = version.manifest
    return {
        "dataset": version.dataset,
        "version_id": version.version_id,
        "created": manifest.get("created_at", ""),
        "rows": version.num_rows,
        "bytes": manifest.get("bytes", 0),
        "inputs": [input_label(i) for i in manifest.get("inputs", [])],
        "url": version.url,
    }


def input_label(item: dict[str, Any]) -> str:
    """An input as a short label: a version's ``dataset@id``, a file's URL."""
    if "version_id" in item:
        return f"{item.get('dataset', '?')}@{item['version_id']}"
    return str(item.get("url") or item.get("path") or item)


def list_datasets(root: str, storage_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every dataset under ``root`` with its published versions, oldest first."""
    return [
        {"dataset": name, "versions": [version_row(v) for v in list_versions(root, name, storage_options)]}
        for name in dataset_names(root, storage_options)
    ]


def _runs_made_from(version: DatasetVersion, root: str, storage_options: dict[str, Any] | None) -> list[dict]:
    """Pretraining runs trained on ``version`` and one-click runs whose corpus record holds it."""
    from pipelines.runs import list_runs
    from training.paths import RunPaths, runs_root

    made = []
    fs, runs_path = filesystem(runs_root(root), storage_options)
    if fs.exists(runs_path):
        for entry in sorted(fs.ls(runs_path, detail=False)):
            paths = RunPaths.make(root, posixpath.basename(entry.rstrip("/")))
            cfs, config = filesystem(paths.config_url, storage_options)
            if cfs.exists(config) and read_json(cfs, config).get("corpus_version") == version.version_id:
                made.append({"kind": "pretrain", "run": paths.run_name, "url": to_url(fs, entry)})
    for run in list_runs(root, storage_options):
        corpus = run.get("corpus") or {}
        records = [corpus.get("training_corpus"), corpus.get("kernelsynth"), *(corpus.get("sources") or {}).values()]
        if any(r and r.get("version_id") == version.version_id and r.get("url") == version.url for r in records):
            made.append({"kind": run.get("kind", "run"), "run": run["run_id"], "status": run.get("status", "?")})
    return made


def lineage(version: DatasetVersion, root: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``version`` was made from (up) and what was made from it (down: versions and runs)."""
    up = [{"input": input_label(i), **({"sha256": i["sha256"]} if "sha256" in i else {})}
          for i in version.manifest.get("inputs", [])]
    down = []
    for name in dataset_names(root, storage_options):
        for other in list_versions(root, name, storage_options):
            if any(i.get("version_id") == version.version_id and i.get("dataset") == version.dataset
                   for i in other.manifest.get("inputs", [])):
                down.append({"kind": "version", "version": f"{other.dataset}@{other.version_id}", "url": other.url})
    down += _runs_made_from(version, root, storage_options)
    return {"up": up, "down": down}


def version_card(url: str, root: str | None = None, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """A version's card: identity, schema, stats, quarantine count and lineage.

    ``root`` is where to look for what was made from the version; by default the store the version sits in
    (the folder above its dataset path).
    """
    version = open_version(url, storage_options)
    manifest = version.manifest
    folder = version.folder_url.rstrip("/")  # {store}/{dataset}/{version_id}
    store = root or folder[: -len(join(version.dataset, version.version_id))].rstrip("/") or "."
    quarantine = manifest.get("side_tables", {}).get("quarantine")
    return {
        **version_row(version),
        "code_version": manifest.get("code_version"),
        "git_commit": manifest.get("git_commit"),
        "parts": len(manifest.get("parts", [])),
        "schema": manifest.get("schema", []),
        "stats": manifest.get("stats", {}),
        "quarantined": quarantine["rows"] if quarantine else 0,
        "files": sorted(manifest.get("files", {})),
        "lineage": lineage(version, store, storage_options),
    }
