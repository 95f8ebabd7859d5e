"""Fingerprints of inputs, configs and code: what makes reruns reproducible and refreshes idempotent."""

from __future__ import annotations

import hashlib
import json
import subprocess
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import fsspec

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HASH_CHUNK_BYTES = 8 * 1024 * 1024


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hash a JSON-able object independent of key order."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def file_fingerprint(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, Any]:
    """Content hash (sha256) and size of one file, streamed so large inputs stay bounded in memory."""
    digest = hashlib.sha256()
    size = 0
    with fs.open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return {"path": path, "bytes": size, "sha256": digest.hexdigest()}


@cache
def code_version(*packages: str) -> str:
    """Hash of the source of the given top-level packages (all of them when none are named).

    A source hash rather than a git commit: it changes exactly when the code that made an output changes,
    and it works in an installed copy without ``.git``.
    """
    names = packages or ("corpus", "training", "adaptation", "infra", "pipelines")
    digest = hashlib.sha256()
    for name in sorted(names):
        for file in sorted((PROJECT_ROOT / name).rglob("*.py")):
            digest.update(str(file.relative_to(PROJECT_ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
