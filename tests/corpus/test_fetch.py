"""Downloads of public sources against a real HTTP server on 127.0.0.1, in the formats the publishers serve.

A .tsf inside a .zip as Zenodo serves it, a ``datasets.save_to_disk`` folder behind a Hub-style API, an M4 csv
pair; a server that drops the connection mid-file, one that serves a corrupted copy the second time, a 404.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from corpus.config import IngestConfig, SourceConfig
from corpus.fetch import fetch_source, select_sources
from corpus.ingest import ingest_source
from infra.fetch import (
    CHECKSUM_FILE,
    ChecksumMismatchError,
    FetchSettings,
    RemoteNotFoundError,
    fetch_input,
)
from infra.versions import list_versions, read_table
from pipelines.cli import main
from tests.http_server import FileServer, start_file_server
from tests.real_data import real_data_root

FAST = FetchSettings(retries=3, backoff_seconds=0.05, timeout_seconds=10, progress=False)


@pytest.fixture
def server() -> Iterator[FileServer]:
    state = start_file_server()
    yield state
    state.close()


def tsf_text() -> str:
    """The real Monash M4 hourly file when the optional data is there, else a small valid .tsf written here."""
    real = real_data_root() / "monash" / "m4_hourly_dataset.tsf"
    if real.exists():
        return real.read_text(encoding="latin-1")
    rng = np.random.default_rng(3)
    rows = [f"T{k}:2015-01-01 00-00-00:" + ",".join(f"{v:.3f}" for v in rng.normal(50, 5, 30 + k))
            for k in range(12)]
    header = ["# generated in the Monash layout", "@relation small", "@attribute series_name string",
              "@attribute start_timestamp date", "@frequency hourly", "@horizon 48", "@missing false",
              "@equallength false", "@data"]
    return "\n".join(header + rows) + "\n"


def tsf_rows(text: str) -> list[tuple[str, np.ndarray]]:
    """(name, values) of every data row, parsed here independently of the connector."""
    lines = text.splitlines()
    start = next(k for k, line in enumerate(lines) if line.strip().lower() == "@data") + 1
    rows = [line for line in lines[start:] if line.strip() and not line.startswith("#")]
    return [(r.split(":")[0], np.array(r.rsplit(":", 1)[1].split(","), dtype=np.float64)) for r in rows]


def zipped(name: str, text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, text.encode("latin-1"))
    return buffer.getvalue()


def ingest_cfg(tmp_path: Path, **fetch: object) -> IngestConfig:
    return IngestConfig(fetch=FAST.model_copy(update={"cache_dir": str(tmp_path / "cache"), **fetch}))


def targets(version: object) -> dict[str, np.ndarray]:
    table = read_table(version, ["series_id", "target"])  # type: ignore[arg-type]
    return {sid: np.asarray(t, dtype=np.float64) for sid, t in zip(table["series_id"].to_pylist(),
                                                                     table["target"].to_pylist(), strict=True)}


def test_zenodo_zip_is_fetched_unpacked_and_ingested_from_the_cache(server: FileServer, tmp_path: Path) -> None:
    text = tsf_text()
    url = server.add("/records/4656589/files/m4_hourly_dataset.zip", zipped("m4_hourly_dataset.tsf", text))
    source = SourceConfig(name="m4_hourly_tsf", kind="tsf", paths=[url])
    cfg = ingest_cfg(tmp_path)

    result = ingest_source(source, cfg, str(tmp_path / "root"))
    expected = tsf_rows(text)
    got = targets(result.version)
    assert len(got) == len(expected) == result.stats["series"]
    name, values = expected[0]
    np.testing.assert_allclose(got[f"m4_hourly_tsf/{name}"], values.astype(np.float32), rtol=0, atol=0)
    cached = tmp_path / "cache" / "m4_hourly_tsf"
    record = json.loads((cached / CHECKSUM_FILE).read_text())
    assert record["m4_hourly_dataset.zip"] == hashlib.sha256(server.files[
        "/records/4656589/files/m4_hourly_dataset.zip"].body).hexdigest()
    assert (cached / "m4_hourly_dataset.zip.d" / "m4_hourly_dataset.tsf").read_text(encoding="latin-1") == text

    again = ingest_source(source, cfg, str(tmp_path / "root"))  # verified cache copy: no second transfer
    assert again.reused and again.version.url == result.version.url
    assert [m for m, _ in server.requests_for("/records/4656589/files/m4_hourly_dataset.zip")] == ["GET"]


def write_arrow_folder(folder: Path) -> dict[str, list[float]]:
    """A save_to_disk folder written by the ``datasets`` library, two shards, fixed-seed float32 targets."""
    import datasets

    rng = np.random.default_rng(7)
    rows = {f"item{k}": rng.normal(0, 1, 20 + 3 * k).astype(np.float32).tolist() for k in range(6)}
    features = datasets.Features({"item_id": datasets.Value("string"), "start": datasets.Value("timestamp[s]"),
                                  "freq": datasets.Value("string"),
                                  "target": datasets.Sequence(datasets.Value("float32"))})
    data = {"item_id": list(rows), "start": [np.datetime64("2021-01-01T00:00:00", "s")] * len(rows),
            "freq": ["H"] * len(rows), "target": list(rows.values())}
    datasets.Dataset.from_dict(data, features=features).save_to_disk(str(folder), num_shards=2)
    return rows


def test_hf_dataset_folder_is_listed_through_the_hub_api_and_ingested(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = write_arrow_folder(tmp_path / "written")
    for file in sorted((tmp_path / "written").iterdir()):
        server.add(f"/datasets/Salesforce/lotsa_data/resolve/main/mini/{file.name}", file.read_bytes(),
                   lfs=file.suffix == ".arrow")
    monkeypatch.setenv("HF_ENDPOINT", server.url("").rstrip("/"))
    source = SourceConfig(name="lotsa_mini", kind="lotsa", paths=["hf://datasets/Salesforce/lotsa_data/mini"])

    result = ingest_source(source, ingest_cfg(tmp_path), str(tmp_path / "root"))
    got = targets(result.version)
    assert sorted(got) == sorted(f"lotsa_mini/{k}" for k in rows)
    for key, values in rows.items():
        np.testing.assert_array_equal(got[f"lotsa_mini/{key}"], np.asarray(values, dtype=np.float32))
    shards = sorted(p.name for p in (tmp_path / "cache" / "lotsa_mini" / "mini").glob("*.arrow"))
    assert shards == ["data-00000-of-00002.arrow", "data-00001-of-00002.arrow"]

    arrow = "/datasets/Salesforce/lotsa_data/resolve/main/mini/data-00000-of-00002.arrow"
    (tmp_path / "cache" / "lotsa_mini" / "mini" / "data-00000-of-00002.arrow").unlink()
    server.files[arrow].corrupt_after = 0  # a damaged transfer, while the Hub lists the shard's true sha256
    with pytest.raises(ChecksumMismatchError, match=hashlib.sha256(server.files[arrow].body).hexdigest()):
        fetch_input("hf://datasets/Salesforce/lotsa_data/mini", tmp_path / "cache" / "lotsa_mini", FAST)
    assert not (tmp_path / "cache" / "lotsa_mini" / "mini" / "data-00000-of-00002.arrow").exists()


def test_m4_csv_pair_is_fetched_and_joined(server: FileServer, tmp_path: Path) -> None:
    real = real_data_root() / "m4"
    if (real / "Hourly-train.csv").exists():
        train, test = (real / "Hourly-train.csv").read_bytes(), (real / "Hourly-test.csv").read_bytes()
    else:
        train = b'"V1","V2","V3","V4","V5"\n"H1",1,2,3,""\n"H2",5,6,7,8\n'
        test = b'"V1","V2","V3"\n"H1",10,11\n"H2",12,13\n'
    paths = [server.add("/Dataset/Train/Hourly-train.csv", train), server.add("/Dataset/Test/Hourly-test.csv", test)]
    result = ingest_source(SourceConfig(name="m4_hourly", kind="m4", paths=paths), ingest_cfg(tmp_path),
                           str(tmp_path / "root"))
    first_train = train.decode().splitlines()[1].split(",")
    first_test = test.decode().splitlines()[1].split(",")
    expected = [float(v.strip('"')) for v in first_train[1:] + first_test[1:] if v.strip('"')]
    got = targets(result.version)
    assert len(got) == len(train.decode().splitlines()) - 1
    np.testing.assert_allclose(got[f"m4_hourly/{first_train[0].strip(chr(34))}"], expected, rtol=1e-6)


def test_a_dropped_connection_resumes_with_a_range_request(server: FileServer, tmp_path: Path) -> None:
    body = np.random.default_rng(0).bytes(3_000_000)
    url = server.add("/big.bin", body, drop_first_at=1_234_567)
    fetched = fetch_input(url, tmp_path / "cache", FAST)
    assert Path(fetched.paths[0]).read_bytes() == body
    assert fetched.files[0]["sha256"] == hashlib.sha256(body).hexdigest()
    (first, whole), (second, resumed) = server.requests_for("/big.bin")
    assert (first, whole, second) == ("GET", None, "GET")
    offset = int(resumed.removeprefix("bytes=").removesuffix("-"))  # what had reached the file before the cut
    assert 0 < offset <= 1_234_567
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".part-")]


def test_a_server_without_ranges_is_retried_from_the_start(server: FileServer, tmp_path: Path) -> None:
    server.honour_ranges = False
    body = np.random.default_rng(1).bytes(1_500_000)
    url = server.add("/norange.bin", body, drop_first_at=700_000)
    fetched = fetch_input(url, tmp_path / "cache", FAST)
    assert fetched.files[0]["sha256"] == hashlib.sha256(body).hexdigest()
    assert [m for m, _ in server.requests_for("/norange.bin")] == ["GET", "GET"]


def test_a_corrupted_second_download_is_refused_and_nothing_is_ingested(server: FileServer, tmp_path: Path) -> None:
    text = tsf_text()
    url = server.add("/records/1/files/set.zip", zipped("set.tsf", text), corrupt_after=1)
    source = SourceConfig(name="zen", kind="tsf", paths=[url])
    cfg = ingest_cfg(tmp_path)
    _, rows = fetch_source(source, cfg, str(tmp_path / "root"))  # first download: its sha256 is recorded
    assert rows[0]["status"] == "downloaded, checksum recorded"
    cached = tmp_path / "cache" / "zen" / "set.zip"
    cached.unlink()  # the cache is lost; the server now serves a damaged copy

    with pytest.raises(ChecksumMismatchError) as err:
        ingest_source(source, cfg, str(tmp_path / "root"))
    message = str(err.value)
    assert str(cached) in message and rows[0]["sha256"] in message
    corrupted = server.files["/records/1/files/set.zip"]
    assert hashlib.sha256(bytes([corrupted.body[0] ^ 0xFF]) + corrupted.body[1:]).hexdigest() in message
    assert not cached.exists() and not [p for p in cached.parent.iterdir() if p.name.startswith(".part-")]
    assert list_versions(str(tmp_path / "root"), "corpus/zen") == []


def test_a_404_names_the_url_and_the_status(server: FileServer, tmp_path: Path) -> None:
    url = server.url("/records/9/files/gone.zip")
    with pytest.raises(RemoteNotFoundError, match=rf"GET {url}: HTTP 404"):
        fetch_input(url, tmp_path / "cache", FAST)
    assert [m for m, _ in server.requests_for("/records/9/files/gone.zip")] == ["GET"]  # not retried


@pytest.mark.slow
def test_a_refresh_with_a_404_source_publishes_nothing(server: FileServer, prefect_harness, tmp_path: Path) -> None:
    from pipelines.refresh import corpus_refresh_flow
    from tests.integration.tiny_profile import tiny_profile, write_long_csv

    write_long_csv(tmp_path / "alpha.csv", n_series=3, length=300, seed=0)
    sources = [{"name": "alpha", "kind": "long", "paths": [str(tmp_path / "alpha.csv")], "freq": "h"},
               {"name": "gone", "kind": "tsf", "paths": [server.url("/records/9/files/gone.zip")]}]
    profile = tiny_profile(tmp_path / "root", sources)
    profile["ingest"]["fetch"] = {"cache_dir": str(tmp_path / "cache"), "progress": False}
    with pytest.raises(Exception, match=r"gone.*HTTP 404|HTTP 404.*gone"):
        corpus_refresh_flow(profile)
    assert list_versions(str(tmp_path / "root"), "training_corpus") == []


def write_profile(tmp_path: Path, sources: list[dict]) -> Path:
    path = tmp_path / "test-profile.yaml"
    path.write_text(yaml.safe_dump({"storage": {"root": str(tmp_path / "root")},
                                    "ingest": {"fetch": {"cache_dir": str(tmp_path / "cache"), "progress": False,
                                                         "backoff_seconds": 0.05},
                                               "sources": sources}}))
    return path


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_.value.code or 0), out, err


def test_factost_fetch_only_one_source_end_to_end(server: FileServer, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    url = server.add("/records/2/files/two.zip", zipped("two.tsf", tsf_text()))
    profile = write_profile(tmp_path, [
        {"name": "two", "kind": "tsf", "paths": [url], "origin": {"licence": "CC-BY-4.0", "size_bytes": 10}},
        {"name": "other", "kind": "tsf", "paths": [server.url("/records/3/files/other.zip")]},
    ])
    code, out, _ = run_cli(["fetch", "--profile", str(profile), "--only", "two", "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and [f["status"] for f in doc["files"]] == ["downloaded, checksum recorded"]
    assert doc["sources"][0] | {"bytes": None} == {"source": "two", "licence": "CC-BY-4.0", "expected_bytes": 10,
                                                   "bytes": None, "files": 1,
                                                   "status": "downloaded, checksum recorded"}
    assert doc["files"][0]["sha256"] == hashlib.sha256(server.files["/records/2/files/two.zip"].body).hexdigest()
    assert server.requests_for("/records/3/files/other.zip") == []  # --only: the other source is left alone

    code, out, _ = run_cli(["fetch", "--profile", str(profile), "--only", "two"], capsys)
    assert code == 0 and out.strip() == str(tmp_path / "cache")
    assert len(server.requests_for("/records/2/files/two.zip")) == 1  # the second run found the verified copy

    code, _, err = run_cli(["fetch", "--profile", str(profile), "--only", "nope"], capsys)
    assert code == 2 and "unknown source 'nope'; known: two, other" in err

    code, _, err = run_cli(["fetch", "--profile", str(profile)], capsys)
    assert code == 1 and f"FAILED other: RemoteNotFoundError: GET {server.url('/records/3/files/other.zip')}: " \
                          "HTTP 404" in err


def test_factost_ingest_of_an_http_url(server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tsf_text()
    url = server.add("/records/5/files/five.zip", zipped("five.tsf", text))
    code, out, _ = run_cli(["ingest", "tsf", url, "--out", str(tmp_path / "root"), "--json",
                            "--set", f"ingest.fetch.cache_dir={tmp_path / 'cache'}"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["source"] == "five" and doc["series"] == len(tsf_rows(text))
    assert (tmp_path / "cache" / "five" / "five.zip").exists()


def test_select_sources_keeps_profile_order() -> None:
    sources = [SourceConfig(name=n, kind="tsf", paths=["x.tsf"]) for n in ("a", "b", "c")]
    assert [s.name for s in select_sources(sources, ["c", "a"])] == ["a", "c"]
    with pytest.raises(ValueError, match="unknown source 'z'; known: a, b, c"):
        select_sources(sources, ["z"])
