"""Helpers shared by the connectors: input expansion, item-id prefixes, frequency aliases, number parsing.

Kept here so that every connector names files the same way, accepts the same frequency spellings and
reports unparseable numbers with the same wording.
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

import numpy as np
import pandas as pd

from corpus.errors import MalformedInputError
from corpus.sources.registry import IngestUnit
from infra.freq import FrequencyError, current_freq, guess_freq
from infra.storage import COMPRESSION_BY_SUFFIX, filesystem, inner_name, open_input, to_url

COMPRESSED_SUFFIXES: tuple[str, ...] = (*COMPRESSION_BY_SUFFIX, ".zip")

_MISSING_TOKENS = frozenset({"", "?"})


def expand_inputs(paths: Sequence[str], storage_options: dict[str, Any], suffixes: Iterable[str]) -> list[str]:
    """Resolve each path to file URLs: a folder lists its data files (sorted), a glob is expanded.

    ``suffixes`` are the data-file endings to keep from a folder (compressed variants are kept too); an explicit
    file path is always kept whatever its name, so that users can pass unusual names.
    """
    wanted = tuple(s.lower() for s in suffixes)
    out: list[str] = []
    for url in paths:
        fs, path = filesystem(url, storage_options)
        if any(ch in path for ch in "*?["):
            matches = sorted(fs.glob(path))
            if not matches:
                raise FileNotFoundError(f"{url}: no file matches")
            out.extend(to_url(fs, m) for m in matches if not fs.isdir(m))
        elif fs.isdir(path):
            names = sorted(p for p in fs.find(path) if _has_suffix(p, wanted))
            if not names:
                raise FileNotFoundError(f"{url}: folder holds no {'/'.join(wanted)} file")
            out.extend(to_url(fs, n) for n in names)
        elif fs.exists(path):
            out.append(url)
        else:
            raise FileNotFoundError(f"{url}: no such file or folder")
    return out


def _has_suffix(path: str, wanted: tuple[str, ...]) -> bool:
    name = inner_name(path).lower()
    return not posixpath.basename(path).startswith(".") and name.endswith(wanted)


def file_stem(url: str) -> str:
    """``.../Hourly-train.csv.gz`` -> ``Hourly-train``: the name without compression and format suffixes."""
    name = inner_name(url)
    return name.rsplit(".", 1)[0] if "." in name else name


def item_prefixes(urls: Sequence[str]) -> dict[str, str]:
    """Per file, the prefix for its item ids: none for a single file, ``<stem>/`` when several files are read.

    Several files of one source (e.g. two .tsf files) can each hold an item ``T1``; the prefix keeps the
    ``source/item`` series ids unique. Stems that collide fall back to the full file name.
    """
    if len(urls) <= 1:
        return {u: "" for u in urls}
    stems = [file_stem(u) for u in urls]
    names = [posixpath.basename(u.rstrip("/")) for u in urls]
    keys = stems if len(set(stems)) == len(stems) else names
    if len(set(keys)) != len(keys):
        keys = [u.split("://", 1)[-1].lstrip("/") for u in urls]
    return {u: f"{k}/" for u, k in zip(urls, keys, strict=True)}


def source_freq(freq: str, file: str = "", where: str = "option freq") -> str:
    """A source's frequency in today's pandas spelling (:func:`infra.freq.current_freq`); an unknown one is a
    :class:`MalformedInputError` naming the file and where."""
    try:
        return current_freq(freq)
    except FrequencyError as exc:
        raise MalformedInputError(file or "<options>", where, f"unknown frequency {freq!r} ({exc.reason})") from None


def infer_freq(times: pd.DatetimeIndex | Sequence[Any], file: str, where: str) -> str:
    """Infer the pandas alias of regular timestamps; raise naming ``where`` when they are irregular."""
    index = pd.DatetimeIndex(times)
    if len(index) < 3:
        raise MalformedInputError(file, where, f"cannot infer a frequency from {len(index)} timestamp(s); set freq")
    inferred = guess_freq(index)
    if inferred is None:
        raise MalformedInputError(
            file, where, f"irregular timestamps ({index[0]} ... {index[-1]}): cannot infer a frequency; set freq"
        )
    return inferred


def parse_floats(tokens: Sequence[str], file: str, where: str) -> np.ndarray:
    """Parse number strings to float64; empty and ``?`` cells are NaN. A bad token is named in the error."""
    if any(t in _MISSING_TOKENS for t in tokens):
        tokens = ["nan" if t in _MISSING_TOKENS else t for t in tokens]
    try:
        return np.asarray(tokens, dtype=np.float64)
    except ValueError:
        for k, token in enumerate(tokens):
            try:
                float(token)
            except ValueError:
                raise MalformedInputError(file, where, f"value {k + 1} is not a number: {token[:40]!r}") from None
        raise


@contextmanager
def open_text(url: str, storage_options: dict[str, Any], encoding: str) -> Iterator[IO[str]]:
    """A text stream over any input (compressed or not), decoded with ``encoding``, newlines untranslated.

    ``newline=""`` keeps quoted newlines intact for the csv module and still splits lines on ``\\n``/``\\r\\n``.
    """
    with open_input(url, storage_options, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding=encoding, newline="")
        try:
            yield text
        finally:
            text.detach()


@contextmanager
def open_text_range(
    url: str, storage_options: dict[str, Any], encoding: str, start: int, stop: int | None
) -> Iterator[IO[str]]:
    """A text stream over bytes ``[start, stop)`` of an uncompressed input, decoded like ``open_text``."""
    fs, path = filesystem(url, storage_options)
    with fs.open(path, "rb") as raw:
        raw.seek(start)
        window = io.BufferedReader(_ByteWindow(raw, None if stop is None else stop - start), RANGE_BUFFER_BYTES)
        text = io.TextIOWrapper(window, encoding=encoding, newline="")
        try:
            yield text
        finally:
            text.detach()


RANGE_BUFFER_BYTES = 1 << 20


class _ByteWindow(io.RawIOBase):
    """At most ``limit`` bytes of a binary stream (all of it when ``limit`` is None), as a raw stream."""

    def __init__(self, raw: IO[bytes], limit: int | None) -> None:
        self._raw, self._left = raw, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = len(buffer) if self._left is None else min(len(buffer), self._left)
        data = self._raw.read(want) if want else b""
        buffer[: len(data)] = data
        if self._left is not None:
            self._left -= len(data)
        return len(data)


def file_units(urls: Sequence[str]) -> list[IngestUnit]:
    """One work unit per file, each with its item-id prefix (computed over the whole list, as ``read`` does)."""
    prefixes = item_prefixes(urls)
    return [IngestUnit(files=(url,), prefix=prefixes[url]) for url in urls]


def ascii_compatible(encoding: str) -> bool:
    """Whether newlines, quotes and separators are the same single bytes in ``encoding`` as in ASCII.

    Only then can a file be cut at newline bytes and each piece decoded on its own (not UTF-16, not a BOM codec).
    """
    probe = "\n\r\",:#@ azAZ09"
    try:
        return probe.encode(encoding) == probe.encode("ascii")
    except LookupError:
        return False


def splittable(url: str, storage_options: dict[str, Any], encoding: str, chunk_bytes: int | None) -> bool:
    """A text input worth cutting into byte ranges: uncompressed, ASCII-compatible and larger than one chunk."""
    if chunk_bytes is None or url.lower().endswith(COMPRESSED_SUFFIXES) or not ascii_compatible(encoding):
        return False
    fs, path = filesystem(url, storage_options)
    return int(fs.size(path)) > chunk_bytes


def line_chunks(
    url: str, storage_options: dict[str, Any], skip_lines: int, chunk_bytes: int, quote: bytes | None = None
) -> list[tuple[int, int | None, int]] | None:
    """``(start, stop, lines before start)`` byte ranges of about ``chunk_bytes`` after the first ``skip_lines``.

    Every range starts right after a newline, so each line is read by exactly one range; with ``quote`` a
    newline inside a quoted csv field (odd number of quotes since the data start, RFC 4180 doubling) is not a
    cut. One sequential pass counting bytes (``bytes.count``/``find``, no parsing) gives exact line numbers.
    None when the file cannot be cut this way: a lone ``\\r`` line end (text mode would count it as a line) or
    fewer than ``skip_lines`` lines.
    """
    fs, path = filesystem(url, storage_options)
    scan = _LineScan(skip_lines, chunk_bytes, quote)
    with fs.open(path, "rb") as fh:
        while block := fh.read(SCAN_BLOCK_BYTES):
            if not scan.feed(block):
                return None
    if scan.want is None:
        return None
    cuts = [c for c in scan.cuts if c[0] < scan.offset] or scan.cuts[:1]  # no empty range at the very end
    return [(start, cuts[k + 1][0] if k + 1 < len(cuts) else None, lines) for k, (start, lines) in enumerate(cuts)]


SCAN_BLOCK_BYTES = 16 << 20


class _LineScan:
    """The state of ``line_chunks`` between blocks: lines and quotes counted so far, the cuts found."""

    def __init__(self, skip_lines: int, chunk_bytes: int, quote: bytes | None) -> None:
        self.skip_lines, self.chunk_bytes, self.quote = skip_lines, chunk_bytes, quote
        self.offset = self.lines = self.quotes = 0
        self.want: int | None = None  # a cut may follow the first (unquoted) newline at or after want - 1
        self.cuts: list[tuple[int, int]] = []
        self.pending_cr = False
        if skip_lines == 0:
            self._cut(0)

    def _cut(self, at: int) -> None:
        self.cuts.append((at, self.lines))
        self.want = at + self.chunk_bytes

    def _count(self, block: bytes, start: int, end: int) -> None:
        self.lines += block.count(b"\n", start, end)
        if self.quote is not None and self.want is not None:
            self.quotes += block.count(self.quote, start, end)

    def feed(self, block: bytes) -> bool:
        """Count one block; False when the file has a lone ``\\r`` line end."""
        lone_cr = block.count(b"\r") - block.count(b"\r\n") - block.endswith(b"\r")
        if (self.pending_cr and not block.startswith(b"\n")) or lone_cr > 0:
            return False
        self.pending_cr = block.endswith(b"\r")
        pos = 0
        while self.want is None:  # still in the header
            nl = block.find(b"\n", pos)
            if nl < 0:
                break
            self._count(block, pos, nl + 1)
            pos = nl + 1
            if self.lines == self.skip_lines:
                self._cut(self.offset + pos)
        while self.want is not None:
            nl = block.find(b"\n", max(self.want - 1 - self.offset, pos))
            if nl < 0:
                break
            self._count(block, pos, nl + 1)
            pos = nl + 1
            if self.quotes % 2:  # inside a quoted field: look at the next newline
                self.want = self.offset + pos + 1
            else:
                self._cut(self.offset + pos)
        self._count(block, pos, len(block))
        self.offset += len(block)
        return True
