"""Downloads of public sources against a real HTTP server on 127.0.0.1, in the formats the publishers serve.

A .tsf inside a .zip as Zenodo serves it, a ``datasets.save_to_disk`` folder behind a Hub-style API, an M4 csv
pair; a server that drops the connection mid-file, one that serves a corrupted copy the second time, a 404; a
cache under an S3 storage root (moto server); versions that name the URL and its sha256, not the cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
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
    EXTRACTED_FILE,
    ChecksumMismatchError,
    FetchSettings,
    RemoteNotFoundError,
    RemoteStatusError,
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
    return small_tsf(3)


def small_tsf(seed: int) -> str:
    """A small valid .tsf of 12 hourly series, fixed-seed values."""
    rng = np.random.default_rng(seed)
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
    inputs = result.version.manifest["inputs"]  # the hf:// URL as configured, each file under it, its sha256
    written = sorted((tmp_path / "written").iterdir())
    assert [(i["url"], i["file"], i["sha256"]) for i in inputs] == [
        ("hf://datasets/Salesforce/lotsa_data/mini", f"mini/{f.name}", hashlib.sha256(f.read_bytes()).hexdigest())
        for f in written]
    resolve = f"/datasets/Salesforce/lotsa_data/resolve/main/mini/{written[0].name}"
    assert inputs[0]["download_url"] == server.url(resolve)

    arrow = "/datasets/Salesforce/lotsa_data/resolve/main/mini/data-00000-of-00002.arrow"
    (tmp_path / "cache" / "lotsa_mini" / "mini" / "data-00000-of-00002.arrow").unlink()
    server.files[arrow].corrupt_after = 0  # a damaged transfer, while the Hub lists the shard's true sha256
    with pytest.raises(ChecksumMismatchError, match=hashlib.sha256(server.files[arrow].body).hexdigest()):
        fetch_input("hf://datasets/Salesforce/lotsa_data/mini", tmp_path / "cache" / "lotsa_mini", FAST)
    assert not (tmp_path / "cache" / "lotsa_mini" / "mini" / "data-00000-of-00002.arrow").exists()


def test_gated_hub_repository_needs_hf_token_which_is_sent_only_to_the_hub_and_never_kept(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "hf_GATEDTOKEN4711"
    rows = write_arrow_folder(tmp_path / "written")
    for file in sorted((tmp_path / "written").iterdir()):
        server.add(f"/datasets/org/gated/resolve/main/mini/{file.name}", file.read_bytes(),
                   lfs=file.suffix == ".arrow")
    server.token = token
    monkeypatch.setenv("HF_ENDPOINT", server.url("").rstrip("/"))
    source = SourceConfig(name="gated_mini", kind="lotsa", paths=["hf://datasets/org/gated/mini"])
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    with pytest.raises(RemoteStatusError, match=r"HTTP 401 .*\(set HF_TOKEN: the repository is gated or private\)"):
        ingest_source(source, ingest_cfg(tmp_path), str(tmp_path / "root"))
    assert list_versions(str(tmp_path / "root"), "gated_mini") == []

    monkeypatch.setenv("HF_TOKEN", "hf_WRONG")
    with pytest.raises(RemoteStatusError, match=r"HF_TOKEN was refused") as refused:
        fetch_input("hf://datasets/org/gated/mini", tmp_path / "cache" / "gated_mini", FAST)
    assert "hf_WRONG" not in str(refused.value)

    monkeypatch.setenv("HF_TOKEN", token)
    result = ingest_source(source, ingest_cfg(tmp_path), str(tmp_path / "root"))
    assert len(targets(result.version)) == len(rows) == 6
    written = [p for p in (tmp_path / "root").rglob("*") if p.is_file()] + [
        p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.suffix != ".arrow"]
    assert written and not [p for p in written if token.encode() in p.read_bytes()]


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
    rows = fetch_source(source, cfg, str(tmp_path / "root")).files  # first download: its sha256 is recorded
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


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_an_s3_root_holds_the_cache_and_ingest_reads_it_from_there(
    server: FileServer, s3_bucket: tuple[str, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import s3fs

    root, opts = s3_bucket
    monkeypatch.setenv("FACTOST_CACHE", str(tmp_path / "user-cache"))  # where a machine-local cache would go
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # local temporaries of this process only
    (tmp_path / "tmp").mkdir()
    text = small_tsf(11)
    body = zipped("seven.tsf", text)
    url = server.add("/records/7/files/seven.zip", body)
    source = SourceConfig(name="seven", kind="tsf", paths=[url])
    cfg = IngestConfig(fetch=FAST)

    result = ingest_source(source, cfg, root, opts)
    base = f"{root}/downloads/seven"
    fs = s3fs.S3FileSystem(**opts)
    assert fs.cat_file(f"{base}/seven.zip") == body
    assert json.loads(fs.cat_file(f"{base}/{CHECKSUM_FILE}")) == {"seven.zip": sha(body)}
    assert fs.cat_file(f"{base}/seven.zip.d/seven.tsf").decode("latin-1") == text
    assert json.loads(fs.cat_file(f"{base}/seven.zip.d/{EXTRACTED_FILE}")) == {"sha256": sha(body),
                                                                              "members": ["seven.tsf"]}
    assert not [key for key in fs.find(base) if ".part-" in key]  # nothing partial was left on S3
    assert not (tmp_path / "user-cache").exists() and list((tmp_path / "tmp").iterdir()) == []
    got = targets(result.version)
    expected = tsf_rows(text)
    assert len(got) == len(expected) == result.stats["series"]
    for name, values in expected:
        np.testing.assert_array_equal(got[f"seven/{name}"], values.astype(np.float32))
    assert result.version.manifest["inputs"] == [{"url": url, "file": "seven.zip", "bytes": len(body),
                                                  "sha256": sha(body), "path": f"{base}/seven.zip"}]

    s3fs.S3FileSystem.clear_instance_cache()  # another machine: nothing known but what is on S3
    again = fetch_source(source, cfg, root, opts)
    assert [f["status"] for f in again.files] == ["cached"]
    assert again.source.paths == [f"{base}/seven.zip.d/seven.tsf"]
    assert len(server.requests_for("/records/7/files/seven.zip")) == 1  # found and verified, not downloaded
    assert ingest_source(source, cfg, root, opts).version.url == result.version.url


def test_a_download_on_s3_that_fails_its_checksum_leaves_nothing_there(
    server: FileServer, s3_bucket: tuple[str, dict], tmp_path: Path
) -> None:
    import s3fs

    root, opts = s3_bucket
    url = server.add("/records/6/files/six.zip", zipped("six.tsf", small_tsf(6)), corrupt_after=1)
    source = SourceConfig(name="six", kind="tsf", paths=[url])
    cfg = IngestConfig(fetch=FAST)
    recorded = fetch_source(source, cfg, root, opts).files[0]["sha256"]
    fs = s3fs.S3FileSystem(**opts)
    base = f"{root}/downloads/six"
    fs.rm(f"{base}/six.zip")  # the cached copy is lost; the server now serves a damaged one

    with pytest.raises(ChecksumMismatchError, match=rf"{base}/six.zip: sha256 does not match: expected {recorded}"):
        ingest_source(source, cfg, root, opts)
    fs.invalidate_cache()
    assert not fs.exists(f"{base}/six.zip") and not [key for key in fs.find(base) if ".part-" in key]
    assert list_versions(root, "corpus/six", opts) == []


def test_a_version_names_the_url_and_its_id_does_not_depend_on_the_cache(server: FileServer, tmp_path: Path) -> None:
    old = zipped("eight.tsf", small_tsf(8))
    url = server.add("/records/8/files/eight.zip", old)
    source = SourceConfig(name="eight", kind="tsf", paths=[url])
    cfg_a, root_a = ingest_cfg(tmp_path / "a"), str(tmp_path / "a" / "root")

    first = ingest_source(source, cfg_a, root_a)
    second = ingest_source(source, ingest_cfg(tmp_path / "b"), str(tmp_path / "b" / "root"))
    third = ingest_source(source, IngestConfig(fetch=FAST), str(tmp_path / "c" / "root"))  # the cache under the root
    assert first.version.version_id == second.version.version_id == third.version.version_id
    assert (tmp_path / "c" / "root" / "downloads" / "eight" / "eight.zip").read_bytes() == old
    manifest = first.version.manifest
    assert manifest["config"]["source"]["paths"] == [url]
    assert manifest["inputs"] == [{"url": url, "file": "eight.zip", "bytes": len(old), "sha256": sha(old),
                                   "path": str(tmp_path / "a" / "cache" / "eight" / "eight.zip")}]
    assert third.version.manifest["inputs"][0]["path"] == str(tmp_path / "c" / "root" / "downloads" / "eight" /
                                                               "eight.zip")

    new_text = small_tsf(9)
    new = zipped("eight.tsf", new_text)
    server.add("/records/8/files/eight.zip", new)  # the publisher changed the file under the same URL
    kept = ingest_source(source, cfg_a, root_a)  # the verified copy is what the corpus is made of
    assert kept.reused and kept.version.url == first.version.url
    assert len(server.requests_for("/records/8/files/eight.zip")) == 3
    (tmp_path / "a" / "cache" / "eight" / "eight.zip").unlink()
    with pytest.raises(ChecksumMismatchError, match=f"expected {sha(old)}, got {sha(new)}"):
        ingest_source(source, cfg_a, root_a)
    assert [v.version_id for v in list_versions(root_a, "corpus/eight")] == [first.version.version_id]

    refreshed = ingest_source(source, ingest_cfg(tmp_path / "a", refresh=True), root_a)  # the user accepts it
    assert refreshed.version.version_id != first.version.version_id
    assert refreshed.version.manifest["inputs"][0]["sha256"] == sha(new)
    record = json.loads((tmp_path / "a" / "cache" / "eight" / CHECKSUM_FILE).read_text())
    assert record == {"eight.zip": sha(new)}
    got = targets(refreshed.version)  # read from the new archive, unpacked again
    for name, values in tsf_rows(new_text):
        np.testing.assert_array_equal(got[f"eight/{name}"], values.astype(np.float32))
    fresh = ingest_source(source, ingest_cfg(tmp_path / "d"), str(tmp_path / "d" / "root"))
    assert fresh.version.version_id == refreshed.version.version_id  # same URL, same content: same id anywhere


def test_a_refresh_downloads_again_and_keeps_an_unchanged_checksum(server: FileServer, tmp_path: Path) -> None:
    body = zipped("nine.tsf", small_tsf(10))
    url = server.add("/records/10/files/nine.zip", body)
    statuses = [fetch_input(url, tmp_path / "cache", FAST.model_copy(update={"refresh": refresh})).files[0]["status"]
                for refresh in (False, False, True)]
    assert statuses == ["downloaded, checksum recorded", "cached", "downloaded, checksum verified"]
    assert len(server.requests_for("/records/10/files/nine.zip")) == 2
    assert json.loads((tmp_path / "cache" / CHECKSUM_FILE).read_text()) == {"nine.zip": sha(body)}
