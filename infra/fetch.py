"""Downloads of public inputs: retries with backoff, resumed transfers, progress bars, a cache and checksums.

HTTP goes through fsspec's HTTP filesystem (aiohttp). fsspec restarts a failed transfer from byte 0 and does
not retry, so the resume step is here: after a dropped connection the transfer continues with ``Range:
bytes=N-`` (and ``If-Range`` so a changed upstream file restarts instead of mixing bytes), and falls back
to a fresh transfer when the server ignores ranges. Other URLs (``file://``, local paths, ``s3://``) are
copied through their fsspec filesystem.

``hf://datasets/OWNER/REPO[@REVISION]/PATH`` is resolved to the Hub's ``{endpoint}/datasets/OWNER/REPO/
resolve/{revision}/PATH`` URLs, a folder listed through ``{endpoint}/api/datasets/OWNER/REPO/tree/{revision}/
PATH``; the endpoint is ``HF_ENDPOINT`` (default https://huggingface.co). The Hub's LFS sha256 of a file is
its expected checksum.

The cache is a folder addressed by URL through fsspec: a local folder, or a prefix under an S3 storage root
so that every node of a cluster reads the same verified copies. A file appears under its final name only
complete and verified: locally a ``.part-`` name beside it, then an atomic rename; on an object store the
download is verified in a local temporary first, uploaded to a ``.part-`` key beside its final name, then
moved there, so a reader never sees a partial object.

Checksums: a file's sha256 is recorded in its folder's ``.factost-checksums.json`` on first download and
every later download or cached copy must match it (or the upstream checksum when one is known): a changed
upstream file is an error naming the file, the expected and the actual digest, unless ``refresh`` asks to
download again and record what the server serves now.
"""

from __future__ import annotations

import asyncio
import json
import os
import posixpath
import shutil
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from pydantic import Field

from infra.config import StrictModel
from infra.fingerprint import file_fingerprint
from infra.storage import filesystem, is_local, join, read_json, to_url, write_json_atomic

CHECKSUM_FILE = ".factost-checksums.json"
EXTRACTED_FILE = ".factost-extracted.json"  # in an unpacked archive's folder: the archive's sha256 and members
PART_PREFIX = ".part-"
CHUNK_BYTES = 1 << 20
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
HTTP_SCHEMES = ("http://", "https://")
REMOTE_SCHEMES = (*HTTP_SCHEMES, "hf://")


class FetchSettings(StrictModel):
    """How remote inputs are downloaded: where they are cached and how hard a flaky server is tried."""

    cache_dir: str | None = Field(
        None, description="Download cache folder or URL; default: <storage root>/downloads (on S3 as well, so every "
        "node reads the same copies); ~/.cache/factost/downloads (FACTOST_CACHE overrides) without a storage root",
    )
    refresh: bool = Field(False, description="Download every file again and record its sha256 anew, accepting a "
                          "changed upstream file (the Hub's own LFS checksums still hold)")
    retries: int = Field(5, ge=0, description="Retries of one file after a dropped connection, a timeout or a 5xx")
    backoff_seconds: float = Field(1.0, ge=0, description="Wait before the first retry; doubled after each one")
    max_backoff_seconds: float = Field(60.0, ge=0, description="Longest wait between two retries")
    timeout_seconds: float = Field(60.0, gt=0, description="Connect and read timeout (per read, not per file)")
    extract: bool = Field(True, description="Unpack a downloaded .zip (Zenodo serves .tsf inside .zip)")
    progress: bool = Field(True, description="Progress bars on stderr while downloading")


class ChecksumMismatchError(ValueError):
    """A downloaded or cached file whose sha256 differs from the expected one."""


class RemoteNotFoundError(FileNotFoundError):
    """The server answered 404 or 410 for a URL."""


class RemoteStatusError(OSError):
    """The server refused a URL (a 4xx other than 404/410): retrying will not help."""


class RemoteUnavailableError(ConnectionError):
    """The server kept failing (5xx, 429, dropped connections) after every retry."""


@dataclass(frozen=True)
class RemoteFile:
    """One file to download: its URL, its path under the source's cache folder, its upstream sha256 if known."""

    url: str
    relpath: str
    sha256: str | None = None
    size: int | None = None


def is_remote(url: str) -> bool:
    """Inputs that are downloaded into the cache before they are read (https://, http://, hf://)."""
    return str(url).lower().startswith(REMOTE_SCHEMES)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a local file, streamed (the one content hash ingest fingerprints inputs with)."""
    fs, local = filesystem(str(path))
    return file_fingerprint(fs, local)["sha256"]


def default_cache_dir(storage_root: str | None) -> str:
    """``<root>/downloads`` under the storage root, local or remote (intermediate files live under the root, so
    a cluster's nodes all see them); the user cache only where there is no root."""
    if storage_root and "://" in storage_root:
        return join(storage_root.rstrip("/"), "downloads")
    if storage_root:
        return str(Path(storage_root).resolve() / "downloads")
    return str(Path(os.environ.get("FACTOST_CACHE", Path.home() / ".cache" / "factost")) / "downloads")


# --------------------------------------------------------------------------- checksum record


def recorded_checksums(folder: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
                       ) -> dict[str, str]:
    """The sha256 of each file recorded in ``folder`` (a local folder or a URL), by file name."""
    return _read_record(*filesystem(os.fspath(folder), storage_options))


def record_checksum(folder: str | os.PathLike[str], name: str, digest: str,
                    storage_options: dict[str, Any] | None = None) -> None:
    """Add ``name``'s sha256 to the folder's record (written whole to a temporary name, then renamed)."""
    _write_record(*filesystem(os.fspath(folder), storage_options), name, digest)


def _read_record(fs: Any, folder: str) -> dict[str, str]:
    path = posixpath.join(folder, CHECKSUM_FILE)
    if not fs.exists(path):
        return {}
    try:
        return dict(read_json(fs, path))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{to_url(fs, path)}: unreadable checksum record: {exc}") from None


def _write_record(fs: Any, folder: str, name: str, digest: str) -> None:
    fs.makedirs(folder, exist_ok=True)
    write_json_atomic(fs, posixpath.join(folder, CHECKSUM_FILE), _read_record(fs, folder) | {name: digest})


def check_digest(label: str, actual: str, expected: str | None) -> None:
    if expected is not None and actual != expected:
        raise ChecksumMismatchError(f"{label}: sha256 does not match: expected {expected}, got {actual} (the "
                                    "upstream file changed or the transfer was corrupted; nothing was kept)")


# --------------------------------------------------------------------------- hf:// resolution


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_HF_ENDPOINT).rstrip("/")


def auth_headers(url: str) -> dict[str, str]:
    """``HF_TOKEN`` as a bearer token for requests to the Hub (gated or private repositories), else nothing.

    The token is read from the environment at each request and only sent to the Hub's own host (aiohttp drops
    it on a redirect to another host, e.g. the Hub's CDN); it is never stored, logged or put in an error.
    """
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token or not url.startswith(hf_endpoint() + "/"):
        return {}
    return {"Authorization": f"Bearer {token}"}


def parse_hf(url: str) -> tuple[str, str, str]:
    """``hf://datasets/OWNER/REPO[@REV]/PATH`` -> (``OWNER/REPO``, revision, path inside the repository)."""
    rest = url[len("hf://"):]
    parts = rest.split("/")
    if len(parts) < 3 or parts[0] != "datasets" or not parts[1] or not parts[2]:
        raise ValueError(f"{url}: expected hf://datasets/OWNER/REPO[@REVISION]/PATH")
    repo_name, _, revision = parts[2].partition("@")
    return f"{parts[1]}/{repo_name}", unquote(revision) or "main", "/".join(parts[3:]).strip("/")


def hf_resolve_url(repo: str, revision: str, path: str) -> str:
    return f"{hf_endpoint()}/datasets/{repo}/resolve/{quote(revision, safe='')}/{quote(path)}"


def _hf_tree(repo: str, revision: str, path: str, settings: FetchSettings) -> list[dict[str, Any]] | None:
    """Every entry under ``path`` (recursive, following the API's pages); None when ``path`` is a file."""
    url: str | None = f"{hf_endpoint()}/api/datasets/{repo}/tree/{quote(revision, safe='')}/{quote(path)}"
    url = f"{url}?recursive=true"
    entries: list[dict[str, Any]] = []
    while url is not None:
        try:
            body, headers = _get_small(url, settings)
        except RemoteNotFoundError:
            if entries or not path:
                raise
            return None  # the tree of a file is a 404: the path names a file
        entries.extend(json.loads(body))
        url = _next_link(headers.get("Link", ""))
    return entries


def _next_link(link: str) -> str | None:
    for part in link.split(","):
        if 'rel="next"' in part and "<" in part:
            return part[part.index("<") + 1 : part.index(">")]
    return None


def resolve_files(url: str, settings: FetchSettings) -> tuple[list[RemoteFile], str | None]:
    """The files one input URL stands for, and the folder they form when it names an hf:// folder.

    A folder's files keep their layout under the folder's own name (``m5/data-00000-of-00001.arrow``).
    """
    if not url.startswith("hf://"):
        name = posixpath.basename(unquote(urlsplit(url).path).rstrip("/")) or "download"
        return [RemoteFile(url, name)], None
    repo, revision, path = parse_hf(url)
    tree = _hf_tree(repo, revision, path, settings)
    if tree is None:
        return [RemoteFile(hf_resolve_url(repo, revision, path), posixpath.basename(path))], None
    files = sorted((e for e in tree if e.get("type") == "file"), key=lambda e: e["path"])
    if not files:
        raise FileNotFoundError(f"{url}: the folder holds no file")
    parent = posixpath.dirname(path)
    cut = len(parent) + 1 if parent else 0
    out = [RemoteFile(hf_resolve_url(repo, revision, e["path"]), e["path"][cut:], _lfs_sha256(e), e.get("size"))
           for e in files]
    return out, posixpath.basename(path) or repo.split("/")[1]


def _lfs_sha256(entry: dict[str, Any]) -> str | None:
    """The Hub's sha256 of an LFS file (its ``lfs.oid``); plain git files carry only a git blob id."""
    lfs = entry.get("lfs") or {}
    oid = lfs.get("oid") or lfs.get("sha256")
    return oid if isinstance(oid, str) and len(oid) == 64 else None


# --------------------------------------------------------------------------- HTTP transfer


def _http_fs(settings: FetchSettings) -> Any:
    """fsspec's HTTP filesystem with the settings' timeouts (one instance per settings, reused)."""
    return _http_fs_cached(settings.timeout_seconds)


_HTTP_FS: dict[float, Any] = {}


def _http_fs_cached(timeout: float) -> Any:
    if timeout not in _HTTP_FS:
        import aiohttp
        import fsspec

        client = {"timeout": aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)}
        _HTTP_FS[timeout] = fsspec.filesystem("http", client_kwargs=client, skip_instance_cache=True)
    return _HTTP_FS[timeout]


def _classify(exc: BaseException, url: str) -> BaseException:
    """An HTTP failure as one of this module's errors: the URL and the status named, retryable or not."""
    import aiohttp

    if isinstance(exc, RemoteNotFoundError | RemoteStatusError | RemoteUnavailableError):
        return exc
    if isinstance(exc, FileNotFoundError):  # fsspec's way of saying 404
        return RemoteNotFoundError(f"GET {url}: HTTP 404 Not Found")
    if isinstance(exc, aiohttp.ClientResponseError):
        text = f"GET {url}: HTTP {exc.status} {exc.message}".rstrip()
        if exc.status in (404, 410):
            return RemoteNotFoundError(text)
        if exc.status in (401, 403) and url.startswith(hf_endpoint() + "/"):
            hint = "HF_TOKEN was refused" if auth_headers(url) else "set HF_TOKEN"
            return RemoteStatusError(f"{text} ({hint}: the repository is gated or private)")
        if exc.status >= 500 or exc.status in (408, 429):
            return RemoteUnavailableError(text)
        return RemoteStatusError(text)
    if isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError | TimeoutError | ConnectionError):
        return RemoteUnavailableError(f"GET {url}: {type(exc).__name__}: {exc}")
    return exc


def _retrying(fn: Callable[[], Any], url: str, settings: FetchSettings, on_retry: Callable[[], None] | None = None
              ) -> Any:
    """``fn()`` retried with exponential backoff while it fails in a retryable way (dropped, timed out, 5xx)."""
    delay = settings.backoff_seconds
    for attempt in range(settings.retries + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified just below; the rest is re-raised as it was
            error = _classify(exc, url)
            if not isinstance(error, RemoteUnavailableError) or attempt == settings.retries:
                raise error from (None if error is exc else exc)
            time.sleep(min(delay, settings.max_backoff_seconds))
            delay *= 2
            if on_retry is not None:
                on_retry()
    raise AssertionError("unreachable")


def _get_small(url: str, settings: FetchSettings) -> tuple[bytes, dict[str, str]]:
    """A small document (an API answer) and its headers, with the same retries as a file."""

    def get() -> tuple[bytes, dict[str, str]]:
        with _http_fs(settings).open(url, "rb", block_size=0, size=1, headers=auth_headers(url)) as fh:
            return fh.read(), dict(fh.r.headers)

    return _retrying(get, url, settings)


class _Transfer:
    """One HTTP file being written to its ``.part`` name, resumable after a dropped connection."""

    def __init__(self, url: str, part: Path, settings: FetchSettings, bar: Callable[[int, int | None], None]):
        self.url, self.part, self.settings, self.bar = url, part, settings, bar
        self.done = 0
        self.total: int | None = None
        self.validator: str | None = None  # ETag or Last-Modified of the first answer, for If-Range

    def attempt(self) -> None:
        # byte offsets must be the file's, not a compressed stream's
        headers = {"Accept-Encoding": "identity", **auth_headers(self.url)}
        if self.done and self.validator:
            headers |= {"Range": f"bytes={self.done}-", "If-Range": self.validator}
        with _http_fs(self.settings).open(self.url, "rb", block_size=0, size=1, headers=headers) as fh:
            response = fh.r
            resumed = response.status == 206
            if not resumed:  # first request, or the server ignored the range / the file changed: from byte 0
                self.done = 0
                self.validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
                length = response.headers.get("Content-Length")
                self.total = int(length) if length and length.isdigit() else None
                self.bar(0, self.total)
            with open(self.part, "ab" if resumed else "wb") as out:
                while chunk := fh.read(CHUNK_BYTES):
                    out.write(chunk)
                    self.done += len(chunk)
                    self.bar(self.done, self.total)
        if self.total is not None and self.done < self.total:
            raise RemoteUnavailableError(f"GET {self.url}: connection closed at byte {self.done} of {self.total}")


def _copy_fsspec(url: str, part: Path, bar: Callable[[int, int | None], None]) -> None:
    """A non-HTTP input (file://, a local path, s3://) copied through its fsspec filesystem."""
    fs, path = filesystem(url)
    total = int(fs.size(path) or 0) or None
    done = 0
    with fs.open(path, "rb") as fh, open(part, "wb") as out:
        while chunk := fh.read(CHUNK_BYTES):
            out.write(chunk)
            done += len(chunk)
            bar(done, total)


def download_to(
    url: str,
    target: Path,
    expected_sha256: str | None,
    settings: FetchSettings,
    bar: Callable[[int, int | None], None] = lambda done, total: None,
    label: str | None = None,
) -> str:
    """Download ``url`` to the local ``target`` (complete and verified, or not at all) and return its sha256.

    ``label`` names the file in a checksum error (the cache URL when ``target`` is a temporary before upload).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f"{PART_PREFIX}{uuid.uuid4().hex[:8]}-{target.name}")
    try:
        if url.lower().startswith(HTTP_SCHEMES):
            transfer = _Transfer(url, part, settings, bar)
            _retrying(transfer.attempt, url, settings)
        else:
            _copy_fsspec(url, part, bar)
        actual = sha256_file(part)
        check_digest(label or str(target), actual, expected_sha256)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return actual


# --------------------------------------------------------------------------- cache


def place_download(url: str, fs: Any, path: str, expected_sha256: str | None, settings: FetchSettings,
                   bar: Callable[[int, int | None], None] = lambda done, total: None) -> str:
    """Download ``url`` to ``path`` on ``fs`` (a local folder or an object store), verified; its sha256.

    A local target is written by :func:`download_to`. A remote one is downloaded and verified in a local
    temporary, then uploaded: nothing unverified ever leaves this machine, nothing partial is under ``path``.
    """
    if is_local(fs):
        return download_to(url, Path(path), expected_sha256, settings, bar)
    with tempfile.TemporaryDirectory(prefix="factost-fetch-") as tmp:
        local = Path(tmp) / posixpath.basename(path)
        actual = download_to(url, local, expected_sha256, settings, bar, label=to_url(fs, path))
        upload_file(local, fs, path)
    return actual


def upload_file(local: Path, fs: Any, path: str) -> None:
    """``local`` placed at ``path`` on a remote filesystem: uploaded to a ``.part-`` key beside it, then moved.

    The move is what makes the object appear under its name, whole; a failed upload leaves only the part key,
    which is removed.
    """
    folder, name = posixpath.split(path)
    part = posixpath.join(folder, f"{PART_PREFIX}{uuid.uuid4().hex[:8]}-{name}")
    try:
        fs.put_file(str(local), part)
        fs.mv(part, path)
    finally:
        if fs.exists(part):
            fs.rm(part)


# --------------------------------------------------------------------------- cache


@dataclass
class Fetched:
    """What fetching one input gave: the paths (or URLs) to read and, per downloaded file, its outcome."""

    paths: list[str]
    files: list[dict[str, Any]]


def fetch_input(url: str, folder: str | os.PathLike[str], settings: FetchSettings, progress: Any = None,
                storage_options: dict[str, Any] | None = None) -> Fetched:
    """Bring one input into ``folder`` (verified cache hits are not downloaded again); the paths to read.

    ``folder`` is a local folder or a URL (``s3://bucket/root/downloads/NAME``, reached with
    ``storage_options``). An hf:// folder gives the cached folder (its files keep their layout); a .zip is
    unpacked (when ``settings.extract``) and gives its data file(s).
    """
    fs, base = filesystem(os.fspath(folder), storage_options)
    files, tree = resolve_files(url, settings)
    outcomes = [_fetch_file(f, fs, base, settings, progress) for f in files]
    if tree is not None:
        return Fetched([to_url(fs, posixpath.join(base, tree))], outcomes)
    paths: list[str] = []
    for file, outcome in zip(files, outcomes, strict=True):
        target = posixpath.join(base, file.relpath)
        unpack = settings.extract and target.lower().endswith(".zip")
        paths.extend(_extracted(fs, target, outcome["sha256"]) if unpack else [to_url(fs, target)])
    return Fetched(paths, outcomes)


def _fetch_file(file: RemoteFile, fs: Any, base: str, settings: FetchSettings, progress: Any) -> dict[str, Any]:
    """One file into the cache: a verified copy is kept, anything else is downloaded and held to the record."""
    target = posixpath.join(base, file.relpath)
    folder, name = posixpath.split(target)
    recorded = _read_record(fs, folder).get(name)
    expected = file.sha256 or recorded
    row = {"url": file.url, "file": file.relpath, "path": to_url(fs, target), "bytes": file.size}
    if expected is not None and not settings.refresh and fs.exists(target):
        cached = file_fingerprint(fs, target)
        if cached["sha256"] == expected:
            return row | {"bytes": cached["bytes"], "sha256": expected, "status": "cached"}
        fs.rm(target)  # a damaged cache copy: fetch it again, held to the same checksum
    held = file.sha256 if settings.refresh else expected  # a refresh accepts a new upstream file, not a bad one
    with _bar(progress, name, file.size) as bar:
        actual = place_download(file.url, fs, target, held, settings, bar)
    if file.sha256 is None and actual != recorded:
        _write_record(fs, folder, name, actual)
    return row | {"bytes": fs.size(target), "sha256": actual, "status": _status(recorded, held, actual)}


def _status(recorded: str | None, held: str | None, actual: str) -> str:
    if held is not None or recorded == actual:
        return "downloaded, checksum verified"
    return "downloaded, checksum recorded" if recorded is None else "downloaded, changed checksum recorded"


def _extracted(fs: Any, archive: str, digest: str) -> list[str]:
    """The data files of a verified .zip, unpacked once beside it into ``<name>.d/`` (placed atomically).

    The folder's ``.factost-extracted.json`` names the archive's sha256 and the members: an archive that a
    refresh replaced is unpacked again, and on an object store the record is written last, after the members.
    """
    out = archive + ".d"
    marker = posixpath.join(out, EXTRACTED_FILE)
    if not fs.exists(marker) or read_json(fs, marker).get("sha256") != digest:
        (_unpack_local if is_local(fs) else _unpack_remote)(fs, archive, out, digest)
    return [to_url(fs, posixpath.join(out, m)) for m in read_json(fs, marker)["members"]]


def _unpack_local(fs: Any, archive: str, out: str, digest: str) -> None:
    """Unpack into a ``.part-`` folder beside ``out``, then rename it into place (an old unpacking is removed)."""
    tmp = Path(archive).with_name(f"{PART_PREFIX}{uuid.uuid4().hex[:8]}-{posixpath.basename(out)}")
    try:
        _unpack(Path(archive), tmp, digest, to_url(fs, archive))
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _unpack_remote(fs: Any, archive: str, out: str, digest: str) -> None:
    """Unpack a local copy of the archive, upload each member whole, then the record that makes them count."""
    with tempfile.TemporaryDirectory(prefix="factost-unpack-") as tmp:
        local = Path(tmp) / posixpath.basename(archive)
        fs.get_file(archive, str(local))
        members = _unpack(local, Path(tmp) / "d", digest, to_url(fs, archive))
        if fs.exists(out):
            fs.rm(out, recursive=True)  # an unpacking of an older archive: none of its files may stay
        for member in members:
            upload_file(Path(tmp) / "d" / member, fs, posixpath.join(out, member))
        write_json_atomic(fs, posixpath.join(out, EXTRACTED_FILE), {"sha256": digest, "members": members})


def _unpack(archive: Path, dest: Path, digest: str, label: str) -> list[str]:
    """Extract ``archive`` into ``dest`` with its record; the data members (relative, sorted)."""
    with zipfile.ZipFile(archive) as zf:
        _safe_extract(zf, dest, label)
    members = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()
                     and not p.name.startswith(".") and "__MACOSX" not in p.parts)
    if not members:
        raise ValueError(f"{label}: the archive holds no data file")
    (dest / EXTRACTED_FILE).write_text(json.dumps({"sha256": digest, "members": members}, indent=2))
    return members


def _safe_extract(zf: zipfile.ZipFile, dest: Path, label: str) -> None:
    """Unpack refusing members that would land outside ``dest`` (absolute paths, ``..``)."""
    root = dest.resolve()
    for member in zf.infolist():
        path = (dest / member.filename).resolve()
        if root not in path.parents and path != root:
            raise ValueError(f"{label}: member {member.filename!r} would be written outside the folder")
    zf.extractall(dest)


# --------------------------------------------------------------------------- progress


@contextmanager
def progress_bars(enabled: bool) -> Iterator[Any]:
    """A rich progress display on stderr for a batch of downloads (None when disabled)."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        yield progress


@contextmanager
def _bar(progress: Any, name: str, size: int | None) -> Iterator[Callable[[int, int | None], None]]:
    if progress is None:
        with nullcontext():
            yield lambda done, total: None
        return
    task = progress.add_task(name, total=size)

    def update(done: int, total: int | None) -> None:
        progress.update(task, completed=done, total=total if total is not None else size)

    try:
        yield update
    finally:
        progress.remove_task(task)
