"""Public sources brought into the download cache before ingestion: ``factost fetch`` and ingest's first step.

A source whose ``paths`` hold ``https://`` or ``hf://`` URLs is read from the cache, never from the network
while parsing: each URL is downloaded once into ``<cache>/<source name>/`` (verified copies are reused, a
.zip is unpacked) and the connector reads the cached files. The cache lives under the storage root by default,
so with an S3 root it is on S3 and every node of a cluster reads the same copies. The transfer, checksums and
cache rules are :mod:`infra.fetch`'s.

A version names a downloaded input by its URL and the sha256 of what was downloaded (and notes the verified
copy it read); its id depends on those, not on where the cache is: the same URL with the same content gives the
same version id on any machine, a changed upstream file a new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corpus.config import IngestConfig, SourceConfig
from infra.fetch import default_cache_dir, fetch_input, is_remote
from infra.storage import join


@dataclass(frozen=True)
class FetchedSource:
    """A source after its downloads: what to read, what was fetched, and what the version records of it."""

    source: SourceConfig  # its remote inputs replaced by their cached copies
    files: list[dict[str, Any]]  # one row per downloaded file (source, url, file, path, bytes, sha256, status)
    inputs: dict[int, list[dict[str, Any]]]  # per index of a remote entry of the configured paths: its files


def cache_folder(cfg: IngestConfig, root: str | None) -> str:
    """The download cache: the profile's ``ingest.fetch.cache_dir`` (a folder or a URL), else ``<root>/downloads``."""
    configured = cfg.fetch.cache_dir
    if configured is None:
        return default_cache_dir(root)
    return configured.rstrip("/") if "://" in configured else str(Path(configured).expanduser().resolve())


def fetch_source(
    source: SourceConfig,
    cfg: IngestConfig,
    root: str | None,
    storage_options: dict[str, Any] | None = None,
    progress: Any = None,
) -> FetchedSource:
    """Fetch (or find verified in the cache) every remote input of ``source``; local inputs are left as they are."""
    if not any(is_remote(p) for p in source.paths):
        return FetchedSource(source, [], {})
    folder = join(cache_folder(cfg, root), source.name)
    paths: list[str] = []
    rows: list[dict[str, Any]] = []
    inputs: dict[int, list[dict[str, Any]]] = {}
    for index, url in enumerate(source.paths):
        if not is_remote(url):
            paths.append(url)
            continue
        fetched = fetch_input(url, folder, cfg.fetch, progress, storage_options)
        paths.extend(fetched.paths)
        rows.extend({"source": source.name} | row for row in fetched.files)
        inputs[index] = [downloaded_input(url, row) for row in fetched.files]
    return FetchedSource(source.model_copy(update={"paths": paths}), rows, inputs)


def downloaded_input(url: str, row: dict[str, Any]) -> dict[str, Any]:
    """A downloaded file as a version's input: the URL as configured, the file under it, its size and sha256.

    ``download_url`` is the address it came from when that differs (an hf:// file's resolve URL); ``path`` is
    the verified copy that was read. Only ``url``, ``file`` and ``sha256`` make the version's identity.
    """
    record = {"url": url, "file": row["file"], "bytes": row["bytes"], "sha256": row["sha256"], "path": row["path"]}
    return record | ({"download_url": row["url"]} if row["url"] != url else {})


def localized_source(
    source: SourceConfig, cfg: IngestConfig, root: str | None, storage_options: dict[str, Any] | None = None
) -> SourceConfig:
    """What ingestion reads: remote inputs fetched (or found verified in the cache) first."""
    return fetch_source(source, cfg, root, storage_options).source


def select_sources(sources: list[SourceConfig], only: list[str] | None) -> list[SourceConfig]:
    """The sources named in ``only`` (all when empty), in profile order; an unknown name lists the known ones."""
    if not only:
        return list(sources)
    known = [s.name for s in sources]
    unknown = [name for name in only if name not in known]
    if unknown:
        raise ValueError(f"unknown source {unknown[0]!r}; known: {', '.join(known) or '(the profile has none)'}")
    return [s for s in sources if s.name in only]
