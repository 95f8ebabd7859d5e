"""Helpers shared by the connectors: input expansion, item-id prefixes, frequency aliases, number parsing.

Kept here so that every connector names files the same way, accepts the same frequency spellings and
reports unparseable numbers with the same wording.
"""

from __future__ import annotations

import io
import posixpath
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from corpus.errors import MalformedInputError
from infra.storage import COMPRESSION_BY_SUFFIX, filesystem, inner_name, open_input, to_url

COMPRESSED_SUFFIXES: tuple[str, ...] = (*COMPRESSION_BY_SUFFIX, ".zip")

# Spellings that pandas < 2.2 accepted and LOTSA / old configs still carry, mapped to today's aliases.
LEGACY_FREQ_UNITS: dict[str, str] = {
    "H": "h",
    "BH": "bh",
    "CBH": "cbh",
    "T": "min",
    "S": "s",
    "L": "ms",
    "U": "us",
    "N": "ns",
    "M": "ME",
    "BM": "BME",
    "SM": "SME",
    "CBM": "CBME",
    "Q": "QE",
    "BQ": "BQE",
    "A": "YE",
    "Y": "YE",
    "BA": "BYE",
    "BY": "BYE",
    "AS": "YS",
    "BAS": "BYS",
}
_FREQ_RE = re.compile(r"^(?P<n>[+-]?\d*)(?P<unit>[A-Za-z]+)(?P<anchor>-[A-Za-z0-9]+)?$")
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


def normalize_freq(freq: str, file: str = "", where: str = "option freq") -> str:
    """Return ``freq`` as a current pandas alias (legacy ``H``/``T``/``M``... are translated); error if invalid."""
    text = freq.strip()
    m = _FREQ_RE.match(text)
    if m is not None and m["unit"] in LEGACY_FREQ_UNITS:
        text = f"{m['n']}{LEGACY_FREQ_UNITS[m['unit']]}{m['anchor'] or ''}"
    try:
        to_offset(text)
    except (ValueError, TypeError) as exc:
        raise MalformedInputError(file or "<options>", where, f"unknown frequency {freq!r} ({exc})") from None
    return text


def infer_freq(times: pd.DatetimeIndex | Sequence[Any], file: str, where: str) -> str:
    """Infer the pandas alias of regular timestamps; raise naming ``where`` when they are irregular."""
    index = pd.DatetimeIndex(times)
    if len(index) < 3:
        raise MalformedInputError(file, where, f"cannot infer a frequency from {len(index)} timestamp(s); set freq")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas 3 warns that infer_freq will return an offset later
        inferred = pd.infer_freq(index)
    if inferred is None:
        raise MalformedInputError(
            file, where, f"irregular timestamps ({index[0]} ... {index[-1]}): cannot infer a frequency; set freq"
        )
    return inferred if isinstance(inferred, str) else inferred.freqstr


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
