"""Fetching benchmark files, only when a user asks for it (``download=True``), with checksum checks.

A spec carries a public URL and, where it is known with confidence, the file's sha256. Where it is not
known the first download records the sha256 it saw in ``<dest>/.factost-checksums.json`` and later
downloads into that folder must match it: a changed upstream file is then an error, not a silent change
of benchmark. Tests never reach the network; ``file://`` URLs exercise the same code.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
import uuid
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

CHECKSUM_FILE = ".factost-checksums.json"
CHUNK_BYTES = 1 << 20
DEFAULT_TIMEOUT_S = 60.0


class DownloadSpec(BaseModel):
    """One downloadable file: where it comes from and, if known, its sha256 (hex)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    filename: str
    url: str | None = None
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    note: str = ""


class ChecksumMismatchError(ValueError):
    """A downloaded or cached file whose sha256 differs from the expected one."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _recorded(dest_dir: Path) -> dict[str, str]:
    path = dest_dir / CHECKSUM_FILE
    if not path.exists():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: unreadable checksum record: {exc}") from None


def _record(dest_dir: Path, filename: str, digest: str) -> None:
    record = _recorded(dest_dir)
    record[filename] = digest
    tmp = dest_dir / f".tmp-{uuid.uuid4().hex}-{CHECKSUM_FILE}"
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.replace(tmp, dest_dir / CHECKSUM_FILE)


def expected_sha256(spec: DownloadSpec, dest_dir: Path) -> str | None:
    """The spec's checksum, else the one recorded by the first download into ``dest_dir``."""
    return spec.sha256 or _recorded(dest_dir).get(spec.filename)


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
    tmp = dest / f".tmp-{uuid.uuid4().hex}-{spec.filename}"
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(spec.url, timeout=timeout_s) as response, open(tmp, "wb") as out:  # noqa: S310
            for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if expected is not None and actual != expected:
            raise ChecksumMismatchError(
                f"{spec.url}: sha256 {actual} does not match the expected {expected} for {spec.filename}"
            )
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    if spec.sha256 is None:
        _record(dest, spec.filename, actual)
    return target
