"""Every dataset kind, locally and on S3 (moto's server), read at its printed URL by the tools users reach for.

Each reader gets the URL unchanged (``DatasetVersion.url``, the line the stage commands print) and must return
exactly the version's rows: the manifest, card, side tables and plots sit outside the data folder, and an
attempt that was never published is not under that URL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from corpus.blast.balance import balance
from corpus.blast.config import BlastConfig
from corpus.config import IngestConfig, SourceConfig
from corpus.ingest import ingest_source
from corpus.kernelsynth import KernelSynthConfig, synthesize
from infra.storage import polars_storage_options
from infra.versions import DatasetVersion, VersionNotFoundError, VersionWriter, open_version, read_table
from tests.integration.tiny_profile import tiny_profile, write_long_csv

pytestmark = pytest.mark.slow
KEY_COLUMN = {"corpus/tiny": "series_id", "kernelsynth": "series_id", "training_corpus": "sample_id"}


def build_kinds(tmp: Path, root: str, options: dict[str, Any] | None) -> dict[str, DatasetVersion]:
    """One version of each kind, made by the stages themselves: an ingested source, KernelSynth, BLAST."""
    prof = tiny_profile(tmp, [])
    csv_path = tmp / "tiny.csv"
    write_long_csv(csv_path, n_series=12, length=300, seed=3)
    source = ingest_source(SourceConfig(name="tiny", kind="long", paths=[str(csv_path)], freq="h"),
                           IngestConfig(), root, options).version
    synth = synthesize(KernelSynthConfig(**{**prof["synth"], "n_series": 60}), root, options, progress=False)
    corpus = balance([source.url, synth.url], BlastConfig(**{**prof["balance"], "n_samples": 60, "shard_rows": 25}),
                     root, options, progress=False)
    assert corpus.manifest["files"]["balance_map.png"] and source.manifest["side_tables"]["quarantine"]
    return {"corpus/tiny": source, "kernelsynth": synth, "training_corpus": corpus}


def readers(options: dict[str, Any] | None, cache: Path) -> dict[str, Any]:
    """tool -> function(URL) -> a pyarrow table, each tool called the way its own docs show."""
    import datasets
    import duckdb
    import pandas as pd
    import polars as pl
    import pyarrow.dataset as pads
    import ray

    from infra.ray_runtime import pyarrow_filesystem

    remote = options is not None

    def with_duckdb(url: str) -> pa.Table:
        con = duckdb.connect()
        if remote:
            import s3fs

            con.register_filesystem(s3fs.S3FileSystem(**options, skip_instance_cache=True))
        return con.sql(f"SELECT * FROM read_parquet('{url}*.parquet')").to_arrow_table()

    def with_ray(url: str) -> pa.Table:
        fs, path = pyarrow_filesystem(url, options) if remote else (None, url)
        return pa.concat_tables(ray.get(ray.data.read_parquet(path, filesystem=fs).to_arrow_refs()))

    def with_hf(url: str) -> pa.Table:
        # a copy: datasets adds its own keys to the storage options it is given
        where = {"data_files": url + "*.parquet", "storage_options": dict(options)} if remote else {"data_dir": url}
        return datasets.load_dataset("parquet", split="train", cache_dir=str(cache), **where).data.table

    return {
        "polars": lambda url: pl.scan_parquet(url, storage_options=polars_storage_options(options) or None)
        .collect().to_arrow(),
        "pyarrow": lambda url: pads.dataset(url, format="parquet").to_table(),
        "pandas": lambda url: pa.Table.from_pandas(pd.read_parquet(url, storage_options=options)),
        "ray": with_ray,
        "duckdb": with_duckdb,
        "datasets": with_hf,
    }


def check_every_reader(versions: dict[str, DatasetVersion], options: dict[str, Any] | None, cache: Path) -> None:
    for kind, version in versions.items():
        key = KEY_COLUMN[kind]
        expected = sorted(read_table(version, [key]).column(key).to_pylist())
        assert len(expected) == version.manifest["rows"] > 0
        for tool, read in readers(options, cache).items():
            table = read(version.url)
            assert table.num_rows == version.manifest["rows"], f"{tool} on {kind}"
            assert sorted(table.column(key).to_pylist()) == expected, f"{tool} on {kind}"
            assert {c["name"] for c in version.manifest["schema"]} <= set(table.column_names), f"{tool} on {kind}"


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """No hub look-ups for local files, for this test only (datasets' offline mode also refuses remote data
    files, so not on S3). datasets reads the variable once, at import: its config flag is patched as well."""
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def test_every_kind_reads_at_its_url_locally(tmp_path: Path, offline_hub) -> None:
    versions = build_kinds(tmp_path, str(tmp_path / "store"), None)
    corpus = versions["training_corpus"]
    crashed = VersionWriter(str(tmp_path / "store"), "training_corpus", corpus.version_id,
                            pa.schema([("sample_id", pa.int64())]))
    crashed.write(pa.table({"sample_id": [999_999]}))  # a second writer's attempt beside the published one
    check_every_reader(versions, None, tmp_path / "hf")
    with pytest.raises(VersionNotFoundError, match="not published"):
        open_version(crashed.url)
    crashed.abort()
    Path(corpus.folder_url, "_manifest.json").unlink()
    with pytest.raises(VersionNotFoundError, match="not published"):
        open_version(corpus.url)


def test_every_kind_reads_at_its_url_on_s3(s3_bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, options = s3_bucket
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", options["key"])  # pyarrow's own S3 client reads the standard chain
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", options["secret"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", options["endpoint_url"])
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    versions = build_kinds(tmp_path, root, options)
    assert all(v.url.startswith("s3://") and v.url.endswith("/data/") for v in versions.values())
    check_every_reader(versions, options, tmp_path / "hf")
