"""URL handling, transparent decompression and atomic writes on the local filesystem."""

from __future__ import annotations

import bz2
import gzip
import zipfile
from pathlib import Path

import pytest

from infra.storage import (
    filesystem,
    inner_name,
    join,
    open_input,
    polars_storage_options,
    write_bytes_atomic,
    write_bytes_create,
)
from infra.transient import is_transient


@pytest.mark.parametrize("suffix", ["", ".gz", ".bz2", ".zip"])
def test_open_input_decompresses_by_suffix(tmp_path: Path, suffix: str) -> None:
    payload = b"a,b\n1,2\n"
    path = tmp_path / f"data.csv{suffix}"
    if suffix == ".gz":
        path.write_bytes(gzip.compress(payload))
    elif suffix == ".bz2":
        path.write_bytes(bz2.compress(payload))
    elif suffix == ".zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("inner/data.csv", payload)
    else:
        path.write_bytes(payload)
    with open_input(str(path)) as fh:
        assert fh.read() == payload
    assert inner_name(str(path)) == "data.csv"


def test_zip_with_several_members_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "two.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.csv", "1")
        zf.writestr("b.csv", "2")
    with pytest.raises(ValueError, match="two.zip: a .zip input must hold exactly one data file, found 2"):
        with open_input(str(path)):
            pass


def test_join_keeps_scheme_and_local_paths_are_absolute(tmp_path: Path) -> None:
    assert join("s3://bucket/prefix", "corpus", "v1") == "s3://bucket/prefix/corpus/v1"
    fs, path = filesystem(f"file://{tmp_path}")
    assert path == str(tmp_path)


def test_atomic_write_leaves_no_temporary(tmp_path: Path) -> None:
    fs, path = filesystem(str(tmp_path / "out" / "m.json"))
    write_bytes_atomic(fs, path, b"{}")
    write_bytes_atomic(fs, path, b'{"a": 1}')
    assert Path(path).read_bytes() == b'{"a": 1}'
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["m.json"]


def test_transient_errors_are_told_apart_from_bad_input() -> None:
    assert is_transient(ConnectionResetError("reset"))
    assert is_transient(TimeoutError())
    assert not is_transient(FileNotFoundError("gone"))
    assert not is_transient(ValueError("bad csv"))
    wrapped = RuntimeError("upload failed")
    wrapped.__cause__ = ConnectionError("refused")
    assert is_transient(wrapped)


def test_create_only_write_lets_exactly_one_writer_in(tmp_path: Path) -> None:
    fs, path = filesystem(str(tmp_path / "m.json"))
    assert write_bytes_create(fs, path, b"first") is True
    assert write_bytes_create(fs, path, b"second") is False
    assert (tmp_path / "m.json").read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temporary left behind


def test_create_only_write_on_s3_is_a_conditional_put(s3_bucket) -> None:
    root, opts = s3_bucket
    fs, path = filesystem(join(root, "m.json"), opts)
    assert write_bytes_create(fs, path, b"first") and not write_bytes_create(fs, path, b"second")
    assert fs.cat_file(path) == b"first"


def test_polars_gets_its_own_s3_option_names() -> None:
    options = {"key": "k", "secret": "s", "endpoint_url": "http://127.0.0.1:9000",
               "client_kwargs": {"region_name": "eu-west-1"}}
    assert polars_storage_options(options) == {
        "aws_access_key_id": "k", "aws_secret_access_key": "s", "aws_endpoint_url": "http://127.0.0.1:9000",
        "aws_allow_http": "true", "aws_region": "eu-west-1"}
    assert polars_storage_options({}) == {}
