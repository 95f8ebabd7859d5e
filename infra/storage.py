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


# Secret storage options of the profiles loaded in this process, by URL protocol (``s3`` -> {"key": ...}).
# They are merged in where a filesystem is built, so no argument, manifest or log line ever carries them.
_SECRET_OPTIONS: dict[str, dict[str, Any]] = {}


def register_secret_options(protocol: str, secrets: dict[str, Any]) -> None:
    """Make a profile's secret options (plain values) known to this process for ``protocol`` URLs."""
    if secrets:
        _SECRET_OPTIONS[protocol] = deep_merge_options(_SECRET_OPTIONS.get(protocol, {}), secrets)


def deep_merge_options(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` laid over it, nested dicts (``client_kwargs``) merged key by key."""
    merged = dict(base)
    for key, value in extra.items():
        both_dicts = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = deep_merge_options(merged[key], value) if both_dicts else value
    return merged


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return the filesystem and the protocol-less path for ``url`` (plain paths are local).

    Storage options belong to the remote store of a profile; a local path ignores them, so one profile's
    options can be passed along with any URL. Secret options registered for the URL's protocol are added
    here, at the point of use, under the options given.
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
    """Local paths take no options; remote ones get the profile's storage options over its registered secrets."""
    if "://" not in url or url.startswith("file://"):
        return {}
    return deep_merge_options(_SECRET_OPTIONS.get(url.split("://", 1)[0].lower(), {}), dict(options or {}))


def polars_storage_options(storage_options: dict[str, Any] | None) -> dict[str, str]:
    """s3fs-style options (``key``, ``endpoint_url``, ``client_kwargs``...) as polars' own S3 keys.

    polars reads S3 through object_store, which ignores s3fs' names; without this it would silently fall back
    to the environment. Credentials are left to the standard chain unless the options name them.
    """
    so = dict(storage_options or {})
    client = dict(so.get("client_kwargs") or {})
    names = {"key": "aws_access_key_id", "secret": "aws_secret_access_key", "token": "aws_session_token"}
    out = {target: str(so[name]) for name, target in names.items() if so.get(name)}
    endpoint = so.get("endpoint_url") or client.get("endpoint_url")
    if endpoint:
        out["aws_endpoint_url"] = str(endpoint)
        if str(endpoint).startswith("http://"):
            out["aws_allow_http"] = "true"
    region = client.get("region_name") or so.get("region_name")
    if region:
        out["aws_region"] = str(region)
    return out


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


def _temp_beside(path: str) -> str:
    """A hidden, unique temporary name in ``path``'s folder (created if needed): same disk, so renames are atomic."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    return os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")


def _local_temp_copy(path: str, data: bytes) -> str:
    """``data`` written and synced to a hidden temporary beside ``path``; returns the temporary's path."""
    tmp = _temp_beside(path)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return tmp


@contextmanager
def open_atomic(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[IO[bytes]]:
    """A binary stream whose file appears at ``path`` all at once when the block ends, or not at all.

    Local: a hidden temporary beside it, fsynced, then ``os.replace`` (atomic on POSIX); an error removes it.
    S3: an upload (single PUT or multipart) becomes visible only when it completes, so write directly.
    Streaming, so a large file never has to be held in memory.
    """
    if not is_local(fs):
        with fs.open(path, "wb") as fh:
            yield fh
        return
    tmp = _temp_beside(path)
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Make ``path`` appear with ``data`` all at once, or not at all."""
    with open_atomic(fs, path) as fh:
        fh.write(data)


def write_bytes_create(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """Create ``path`` with ``data`` only if nothing is there yet; ``False`` when another writer got there first.

    Local: a complete temporary file is hard-linked into place (``link`` fails on an existing name, atomically).
    S3: a conditional PUT (``If-None-Match: *``), which AWS S3, MinIO and moto honour.
    """
    if not is_local(fs):
        try:
            fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        return True
    tmp = _local_temp_copy(path, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    return True


def json_bytes(obj: Any) -> bytes:
    """The project's one JSON encoding of manifests and records: indented, keys sorted."""
    return json.dumps(obj, indent=2, sort_keys=True, default=str).encode()


def write_json_atomic(fs: fsspec.AbstractFileSystem, path: str, obj: Any) -> None:
    write_bytes_atomic(fs, path, json_bytes(obj))


def read_json(fs: fsspec.AbstractFileSystem, path: str) -> Any:
    with fs.open(path, "rb") as fh:
        return json.loads(fh.read())
