"""Fetching benchmark files, only when a user asks for it (``download=True``), with checksum checks.

A spec carries a public URL and, where it is known with confidence, the file's sha256. Where it is not
known the first download records the sha256 it saw in ``<dest>/.factost-checksums.json`` and later
downloads into that folder must match it: a changed upstream file is then an error, not a silent change
of benchmark. The transfer itself (retries, resumed downloads, atomic placement) is :mod:`infra.fetch`'s,
the one download path of the project. Tests never reach the network; ``file://`` URLs exercise the same code.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from infra.fetch import (
    CHECKSUM_FILE,
    ChecksumMismatchError,
    FetchSettings,
    download_to,
    record_checksum,
    recorded_checksums,
    sha256_file,
)

__all__ = ["CHECKSUM_FILE", "ChecksumMismatchError", "DownloadSpec", "download", "expected_sha256", "sha256_file"]

DEFAULT_TIMEOUT_S = 60.0


class DownloadSpec(BaseModel):
    """One downloadable file: where it comes from and, if known, its sha256 (hex)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    filename: str
    url: str | None = None
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    note: str = ""


def expected_sha256(spec: DownloadSpec, dest_dir: Path) -> str | None:
    """The spec's checksum, else the one recorded by the first download into ``dest_dir``."""
    return spec.sha256 or recorded_checksums(dest_dir).get(spec.filename)


def download(spec: DownloadSpec, dest_dir: str | os.PathLike[str], timeout_s: float = DEFAULT_TIMEOUT_S) -> Path:
    """Fetch ``spec`` into ``dest_dir`` (skipped when a verified copy is there) and return its path.

    The file appears atomically (temporary name, then rename) and only after its checksum is verified.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / spec.filename
    expected = expected_sha256(spec, dest)
    if target.exists() and expected is not None and sha256_file(target) == expected:
        return target
    if spec.url is None:
        raise FileNotFoundError(
            f"{spec.filename}: no public direct-download URL is known; fetch it by hand into {dest}. {spec.note}"
        )
    actual = download_to(spec.url, target, expected, FetchSettings(timeout_seconds=timeout_s, progress=False))
    if spec.sha256 is None and expected is None:
        record_checksum(dest, spec.filename, actual)
    return target
