"""Public sources brought into the download cache before ingestion: ``factost fetch`` and ingest's first step.

A source whose ``paths`` hold ``https://`` or ``hf://`` URLs is read from the cache, never from the network
while parsing: each URL is downloaded once into ``<cache>/<source name>/`` (verified copies are reused, a
.zip is unpacked) and the connector reads the local files. The transfer, checksums and cache rules are
:mod:`infra.fetch`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from corpus.config import IngestConfig, SourceConfig
from infra.fetch import default_cache_dir, fetch_input, is_remote


def cache_folder(cfg: IngestConfig, root: str | None) -> Path:
    """The download cache: the profile's ``ingest.fetch.cache_dir``, else the default beside the storage root."""
    return Path(cfg.fetch.cache_dir).expanduser().resolve() if cfg.fetch.cache_dir else default_cache_dir(root)


def fetch_source(
    source: SourceConfig, cfg: IngestConfig, root: str | None, progress: Any = None
) -> tuple[SourceConfig, list[dict[str, Any]]]:
    """The source with its remote inputs replaced by their cached local copies, and one row per file fetched."""
    if not any(is_remote(p) for p in source.paths):
        return source, []
    folder = cache_folder(cfg, root) / source.name
    paths: list[str] = []
    rows: list[dict[str, Any]] = []
    for url in source.paths:
        if not is_remote(url):
            paths.append(url)
            continue
        fetched = fetch_input(url, folder, cfg.fetch, progress)
        paths.extend(fetched.paths)
        rows.extend({"source": source.name} | row for row in fetched.files)
    return source.model_copy(update={"paths": paths}), rows


def localized_source(source: SourceConfig, cfg: IngestConfig, root: str | None) -> SourceConfig:
    """What ingestion reads: remote inputs fetched (or found verified in the cache) first."""
    return fetch_source(source, cfg, root)[0]


def select_sources(sources: list[SourceConfig], only: list[str] | None) -> list[SourceConfig]:
    """The sources named in ``only`` (all when empty), in profile order; an unknown name lists the known ones."""
    if not only:
        return list(sources)
    known = [s.name for s in sources]
    unknown = [name for name in only if name not in known]
    if unknown:
        raise ValueError(f"unknown source {unknown[0]!r}; known: {', '.join(known) or '(the profile has none)'}")
    return [s for s in sources if s.name in only]
