"""Storage addressed by URL through fsspec: a local folder by default, any S3-compatible endpoint on a cluster.

Every stage reads and writes through these helpers so that the same code runs on a laptop folder and on
``s3://bucket/prefix``; nothing else in the project builds filesystem objects by hand.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import fsspec
from fsspec.core import url_to_fs

COMPRESSION_BY_SUFFIX = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz"}


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return the filesystem and the protocol-less path for ``url`` (plain paths are local).

    Storage options belong to the remote store of a profile; a local path ignores them, so one profile's
    options can be passed along with any URL.
    """
    fs, path = url_to_fs(str(url), **storage_options_for(str(url), storage_options))
    if is_local(fs):
        path = os.path.abspath(path)
    return fs, path


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def join(base: str, *parts: str) -> str:
    """Join URL or path segments with forward slashes, keeping any ``scheme://`` prefix intact."""
    if "://" in base:
        scheme, rest = base.split("://", 1)
        return f"{scheme}://" + posixpath.join(rest, *parts)
    return os.path.join(base, *parts)


def to_url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The URL a user can paste back into the CLI for ``path`` on ``fs``."""
    if is_local(fs):
        return path
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return f"{protocol}://{path}"


def storage_options_for(url: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """Local paths take no options; remote ones get the profile's storage options."""
    return {} if "://" not in url or url.startswith("file://") else dict(options or {})


@contextmanager
def open_input(url: str, storage_options: dict[str, Any] | None = None, mode: str = "rb") -> Iterator[IO]:
    """Open an input file, decompressing ``.gz``, ``.bz2``, ``.xz`` and single-member ``.zip`` transparently.

    Streaming: nothing is read into memory up front, so large inputs stay bounded.
    """
    fs, path = filesystem(url, storage_options)
    lower = path.lower()
    if lower.endswith(".zip"):
        import zipfile

        with fs.open(path, "rb") as raw, zipfile.ZipFile(raw) as zf:
            members = [m for m in zf.namelist() if not m.endswith("/") and not m.startswith("__MACOSX")]
            if len(members) != 1:
                raise ValueError(f"{url}: a .zip input must hold exactly one data file, found {len(members)}")
            with zf.open(members[0]) as member:
                yield io.TextIOWrapper(member, encoding="latin-1", newline="") if "b" not in mode else member
        return
    compression = next((c for s, c in COMPRESSION_BY_SUFFIX.items() if lower.endswith(s)), None)
    with fs.open(path, mode, compression=compression) as fh:
        yield fh


def inner_name(url: str) -> str:
    """The file name without compression suffixes, e.g. ``Hourly-train.csv.gz`` -> ``Hourly-train.csv``."""
    name = posixpath.basename(url.rstrip("/"))
    for suffix in (*COMPRESSION_BY_SUFFIX, ".zip"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def write_bytes_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Make ``path`` appear with ``data`` all at once, or not at all.

    Local: write a hidden temporary beside it, fsync, then ``os.replace`` (atomic on POSIX).
    S3: a single PUT is atomic (readers see the old object or the whole new one), so write directly.
    """
    if is_local(fs):
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return
    with fs.open(path, "wb") as fh:
        fh.write(data)


def write_json_atomic(fs: fsspec.AbstractFileSystem, path: str, obj: Any) -> None:
    write_bytes_atomic(fs, path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def read_json(fs: fsspec.AbstractFileSystem, path: str) -> Any:
    with fs.open(path, "rb") as fh:
        return json.loads(fh.read())
