"""Fixtures for the corpus tests: run a connector to a list, compress a file, a scratch in-memory filesystem."""

from __future__ import annotations

import bz2
import gzip
import lzma
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from corpus.schema import RawSeries
from corpus.sources.registry import get_connector

ReadSource = Callable[..., list[RawSeries]]


def run_connector(kind: str, paths: list[str], storage_options: dict[str, Any] | None = None, **options: Any):
    """Every series a connector yields for ``paths`` with ``options`` (validated like the ingest engine does)."""
    connector = get_connector(kind)
    return list(connector.read([str(p) for p in paths], connector.parse_options(options), storage_options or {}))


@pytest.fixture
def read_source() -> ReadSource:
    return run_connector


def compress_file(path: Path, kind: str) -> Path:
    """A compressed copy of ``path`` beside it: ``.gz``, ``.bz2``, ``.xz`` or a one-member ``.zip``."""
    data = path.read_bytes()
    out = path.with_name(path.name + "." + kind)
    if kind == "gz":
        out.write_bytes(gzip.compress(data))
    elif kind == "bz2":
        out.write_bytes(bz2.compress(data))
    elif kind == "xz":
        out.write_bytes(lzma.compress(data))
    elif kind == "zip":
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"folder/{path.name}", data)
    else:
        raise ValueError(kind)
    return out


@pytest.fixture
def compress() -> Callable[[Path, str], Path]:
    return compress_file


@pytest.fixture
def memory_root() -> Iterator[str]:
    """A fresh ``memory://`` folder, standing in for a remote bucket (non-local code paths), removed after."""
    root = f"memory://corpus-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)
